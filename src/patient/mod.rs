//! The patient, the person-facing client: books a slot at the center over
//! TCP, then asks the assigned doctor for a quote over UDP.
//!
//! This module owns a visit's three phases and their phase messages, and
//! the `patient` subcommand's visit (its flags are `cli::patient`'s); the
//! choice of a slot (a person at a prompt, a scripted index, or a strategy
//! for `simulate`) is [`choose`]'s, the outcome of a visit with its exit
//! status [`outcome`]'s. The
//! conversations themselves (framing, bounded waits and retries) are
//! `client`'s, the reading of answers `protocol`'s.

mod choose;
mod outcome;

pub use choose::*;
pub use outcome::*;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::client::{
    Conversation, DoctorLink, DoctorOverrides, DoctorReply, Failed, Loss, Retries, Watch,
};
use crate::console::Console;
use crate::data::{Patient, Source};
use crate::net;
use crate::protocol::{
    self, AuthAnswer, Framing, QuoteAnswer, Request, SelectionAnswer, SlotsAnswer,
};

/// How a patient reaches the servers and how long it waits.
#[derive(Clone)]
pub struct Settings {
    pub center: String,
    /// Where the doctors are: the host the center's ports refer to and
    /// overrides by name.
    pub doctors: DoctorOverrides,
    pub framing: Framing,
    /// How long to wait for the center to connect and for each answer.
    pub answer_timeout: Duration,
    /// How long to wait for each quote, and how many requests in all.
    pub quote: Retries,
    /// Shown in phase messages, e.g. `Patient 1`.
    pub label: String,
    /// Show the password in phase messages.
    pub show_password: bool,
    pub loss: Option<Loss>,
    /// Who watches every message (a diagram, a pace), and this patient's
    /// name there.
    pub watch: Option<Watch>,
}

impl Settings {
    pub fn new(center: impl Into<String>) -> Settings {
        Settings {
            center: center.into(),
            doctors: DoctorOverrides::default(),
            framing: Framing::default(),
            answer_timeout: Duration::from_secs(10),
            quote: Retries {
                wait: Duration::from_secs(1),
                attempts: 4,
            },
            label: "Patient".into(),
            show_password: false,
            loss: None,
            watch: None,
        }
    }
}

/// Runs one whole visit: phases 1 to 3. Phase messages go to `console`.
pub fn visit(
    settings: &mut Settings,
    patient: &Patient,
    chooser: &mut dyn Chooser,
    console: &Console,
) -> Visit {
    let say = |line: std::fmt::Arguments<'_>| {
        if !console.is_quiet() {
            console.phases(&format!("{line}\n"));
        }
    };
    let label = settings.label.clone();
    let mut visit = Visit::new();

    // Phase 1: authenticate.
    let login = visit.phases.begin(Phase::Login);
    let center_addr = match net::resolve(&settings.center) {
        Ok(addr) => addr,
        Err(e) => return visit.ended(Outcome::Connection(format!("{e:#}"))),
    };
    let mut center =
        match Conversation::connect(center_addr, settings.framing, settings.answer_timeout) {
            Ok(center) => center.watched(settings.watch.clone()),
            Err(e) => {
                return visit.ended(Outcome::Connection(format!(
                    "cannot reach the center at {center_addr}: {e}"
                )));
            }
        };
    if let Ok(local) = center.local_addr() {
        say(format_args!(
            "Phase 1: {label} has TCP port number {} and IP address {}.",
            local.port(),
            local.ip()
        ));
    }
    let phases = &mut visit.phases;
    let mut chosen = None;
    let mut granted = None;
    let outcome = (|| -> Result<(), Outcome> {
        let auth = Request::Authenticate {
            username: patient.username.clone(),
            password: patient.password.clone(),
        };
        let shown = if settings.show_password {
            format!(" and password {}", patient.password)
        } else {
            String::new()
        };
        // Said just before it goes, so on a shared console it comes before
        // the center's line about receiving it.
        say(format_args!(
            "Phase 1: Authentication request from {label} with username {}{shown} has been sent to the Health Center Server.",
            patient.username
        ));
        center.send(&auth.to_string()).map_err(Failed::Send)?;
        let mut answer = center.receive()?;
        if protocol::parse_auth_answer(&answer).is_err() {
            // Some classic centers greet first (a port number, a welcome):
            // shown, and the answer to `authenticate` follows it.
            say(format_args!(
                "Phase 1: The Health Center Server greeted {label} with '{}'.",
                protocol::shorten(&answer)
            ));
            answer = center.receive()?;
        }
        phases.answered(login);
        match protocol::parse_auth_answer(&answer).map_err(protocol_error)? {
            AuthAnswer::Success => {
                say(format_args!(
                    "Phase 1: {label} authentication result: success."
                ));
                say(format_args!("Phase 1: End of Phase 1 for {label}."));
            }
            AuthAnswer::Failure => {
                say(format_args!(
                    "Phase 1: {label} authentication result: failure."
                ));
                say(format_args!("Phase 1: End of Phase 1 for {label}."));
                return Err(Outcome::AuthFailed);
            }
            AuthAnswer::Error(reason) => return Err(center_error(&reason)),
        }

        // Phase 2: list and reserve.
        let list = phases.begin(Phase::List);
        let answer = center.ask(&Request::Available.to_string())?;
        phases.answered(list);
        let listings = match protocol::parse_slots_answer(&answer).map_err(protocol_error)? {
            SlotsAnswer::Slots(listings) => listings,
            SlotsAnswer::NotAvailable => {
                say(format_args!(
                    "Phase 2: No appointment is available for {label}. Exiting..."
                ));
                return Err(Outcome::NoSlots);
            }
            SlotsAnswer::Error(reason) => return Err(center_error(&reason)),
        };
        if !console.is_quiet() {
            let mut text =
                format!("Phase 2: The following appointments are available for {label}:\n");
            for listing in &listings {
                text.push_str(&format!("{listing}\n"));
            }
            console.phases(&text);
        }
        let index = match chooser.choose(&listings) {
            Ok(Some(index)) => index,
            Ok(None) => return Err(Outcome::Cancelled),
            Err(e) => return Err(Outcome::Connection(format!("reading the choice: {e}"))),
        };
        chosen = Some(index);
        let selection = phases.begin(Phase::Selection);
        let answer = center.ask(&Request::Selection(index).to_string())?;
        phases.answered(selection);
        match protocol::parse_selection_answer(&answer).map_err(protocol_error)? {
            SelectionAnswer::Assigned { doctor, port } => {
                granted = Some((index, doctor, port));
                say(format_args!(
                    "Phase 2: The requested appointment is available and reserved to {label}. The assigned doctor port number is {port}."
                ));
                Ok(())
            }
            SelectionAnswer::NotAvailable => {
                say(format_args!(
                    "Phase 2: The requested appointment from {label} is not available. Exiting..."
                ));
                Err(Outcome::Taken)
            }
            SelectionAnswer::Error(reason) => Err(center_error(&reason)),
        }
    })();
    // Classic servers may never close: we do, before phase 3.
    drop(center);
    visit.chosen = chosen;
    if let Some((index, doctor, port)) = granted {
        visit.slot = Some(index);
        visit.doctor = doctor;
        visit.doctor_port = Some(port);
    }
    if let Err(outcome) = outcome {
        return visit.ended(outcome);
    }
    say(format_args!("Phase 2: End of Phase 2 for {label}."));

    // Phase 3: the quote.
    let Some(port) = visit.doctor_port else {
        return visit.ended(Outcome::Protocol("no doctor port".into()));
    };
    let routes = settings.doctors.routes(&center_addr.ip().to_string());
    let doctor_addr = match net::resolve(&routes.address(visit.doctor.as_deref(), port)) {
        Ok(addr) => addr,
        Err(e) => return visit.ended(Outcome::Connection(format!("{e:#}"))),
    };
    let outcome = quote(settings, patient, doctor_addr, &mut visit, console);
    visit.ended(outcome)
}

fn protocol_error(e: protocol::ProtocolError) -> Outcome {
    Outcome::Protocol(format!("the center's answer: {e}"))
}

fn center_error(reason: &str) -> Outcome {
    Outcome::Protocol(format!("the center says: {reason}"))
}

/// Phase 3: sends the plan and waits, sending again on silence.
fn quote(
    settings: &mut Settings,
    patient: &Patient,
    doctor: SocketAddr,
    visit: &mut Visit,
    console: &Console,
) -> Outcome {
    let label = settings.label.clone();
    let say = |line: std::fmt::Arguments<'_>| {
        if !console.is_quiet() {
            console.phases(&format!("{line}\n"));
        }
    };
    let doctor_name = visit
        .doctor
        .clone()
        .unwrap_or_else(|| format!("doctor:{}", doctor.port()));
    let begun = visit.phases.begin(Phase::Quote);
    // Connected, so only the doctor's own datagrams are received.
    let link = match DoctorLink::open(doctor) {
        Ok(link) => link.watched(settings.watch.clone(), &doctor_name),
        Err(e) => return Outcome::Connection(format!("opening a UDP socket to {doctor}: {e}")),
    };
    if let Ok(local) = link.local_addr() {
        say(format_args!(
            "Phase 3: {label} has a dynamic UDP port number {} and IP address {}.",
            local.port(),
            local.ip()
        ));
    }
    let quoted = link.quote(
        &patient.plan,
        settings.framing,
        settings.quote,
        settings.loss.as_mut(),
        &mut || {
            say(format_args!(
                "Phase 3: The cost estimation request from {label} with insurance plan {} has been sent to the doctor with port number {} and IP address {}.",
                patient.plan,
                doctor.port(),
                doctor.ip()
            ));
        },
    );
    let quoted = match quoted {
        Ok(quoted) => quoted,
        Err(e) => return Outcome::Connection(format!("waiting for the doctor at {doctor}: {e}")),
    };
    visit.retries = quoted.retries;
    if !matches!(quoted.reply, DoctorReply::Silent) {
        visit.phases.answered(begun);
    }
    let text = match quoted.reply {
        DoctorReply::Text(text) => text,
        DoctorReply::Empty => return Outcome::DoctorEmpty,
        DoctorReply::Undecodable(e) => {
            return Outcome::Protocol(format!("the doctor's answer: {e}"));
        }
        DoctorReply::Silent => return Outcome::DoctorSilent,
    };
    match protocol::parse_quote_answer(&text) {
        Ok(QuoteAnswer::Cost(cost)) => {
            visit.cost = Some(cost);
            let name = visit.doctor.as_deref().unwrap_or("unknown");
            say(format_args!(
                "Phase 3: {label} receives {cost}$ estimation cost from doctor with port number {} and name {name}.",
                doctor.port()
            ));
            say(format_args!("Phase 3: End of Phase 3 for {label}."));
            Outcome::Quoted
        }
        Ok(QuoteAnswer::Error(reason)) => Outcome::Protocol(format!("the doctor says: {reason}")),
        Err(e) => Outcome::Protocol(format!("the doctor's answer: {e}")),
    }
}

/// Who visits: a patient of the data, by name (`patient1` reads
/// `patient1.txt` and `patient1insurance.txt`), or one given whole.
#[derive(Debug, Clone)]
pub enum Who {
    Named(String),
    Given(Patient),
}

/// What the `patient` subcommand does: who visits which center, how the
/// slot is chosen, and how long each wait is.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the data files are.
    pub source: Source,
    pub who: Who,
    /// The center's address.
    pub center: String,
    /// Where the doctors are, when not where the center says.
    pub doctors: DoctorOverrides,
    /// The slot to ask for without prompting; `None` asks the person.
    pub select: Option<u64>,
    pub framing: Framing,
    /// How long to wait for the center to connect and for each answer.
    pub timeout: Duration,
    /// How long to wait for each quote before sending the plan again.
    pub quote_timeout: Duration,
    /// Quote requests to send in all.
    pub quote_attempts: u32,
    /// No phase messages; the list and the prompt still show when asking,
    /// and a quote is printed alone.
    pub quiet: bool,
    /// The password shown in the phase messages.
    pub show_passwords: bool,
}

/// The `patient` subcommand: one visit, prompting for the slot unless one
/// is selected. Returns the exit status of the visit.
///
/// # Errors
///
/// Bad flags or data files; a visit's own failures are outcomes instead.
pub fn run(options: &Options) -> anyhow::Result<u8> {
    let (patient, label) = match &options.who {
        Who::Named(name) => (Patient::load(&options.source, name)?, patient_label(name)),
        Who::Given(patient) => (patient.clone(), patient_label(&patient.username)),
    };
    let mut settings = Settings {
        doctors: options.doctors.clone(),
        framing: options.framing.checked()?,
        answer_timeout: options.timeout,
        quote: Retries {
            wait: options.quote_timeout,
            attempts: options.quote_attempts,
        },
        label,
        show_password: options.show_passwords,
        ..Settings::new(&options.center)
    };
    let console = Console::standard(options.quiet);
    let visit = match options.select {
        Some(index) => self::visit(&mut settings, &patient, &mut Fixed(index), &console),
        None => {
            let stdin = io::stdin();
            let mut prompt = Prompt {
                input: stdin.lock(),
                output: io::stdout(),
                show_list: options.quiet,
                reminder: Some(Reminder {
                    after: REMIND_AFTER,
                    say: Box::new(|| {
                        eprintln!(
                            "Still choosing? A medsim center closes a session after 5 minutes without a message (its --idle-timeout); choose within a minute."
                        );
                    }),
                }),
            };
            self::visit(&mut settings, &patient, &mut prompt, &console)
        }
    };
    if visit.outcome == Outcome::Quoted {
        if options.quiet {
            crate::console::out(&format!("{}\n", visit.cost.unwrap_or_default()))?;
        }
    } else {
        eprintln!("medsim patient: {}", visit.outcome);
    }
    Ok(visit.outcome.exit_code())
}

/// `patient1` → `Patient 1` (and a second visit `patient1.2` → `Patient
/// 1.2`), as the classic phase messages name patients.
pub fn patient_label(name: &str) -> String {
    match name.strip_prefix("patient") {
        Some(n) if n.starts_with(|c: char| c.is_ascii_digit()) => format!("Patient {n}"),
        _ => format!("Patient {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    use crate::protocol::Listing;
    use crate::rng::SplitMix64;

    fn listings(indexes: &[u64]) -> Vec<Listing> {
        indexes
            .iter()
            .map(|&index| Listing {
                index,
                day: "Mon".into(),
                time: "10am".into(),
            })
            .collect()
    }

    #[test]
    fn prompt_asks_again_until_a_listed_index() {
        let mut output = Vec::new();
        let mut prompt = Prompt {
            input: &b"9\nabc\n\n2\n"[..],
            output: &mut output,
            show_list: false,
            reminder: None,
        };
        assert_eq!(prompt.choose(&listings(&[1, 2])).unwrap(), Some(2));
        let text = String::from_utf8(output).unwrap();
        assert_eq!(text.matches(PROMPT).count(), 4);
        assert!(text.contains("'9' is not one of the listed indexes"));
        assert!(text.contains("'abc' is not one of the listed indexes"));
    }

    #[test]
    fn prompt_gives_up_at_end_of_input() {
        let mut prompt = Prompt {
            input: &b"7\n"[..],
            output: Vec::new(),
            show_list: true,
            reminder: None,
        };
        assert_eq!(prompt.choose(&listings(&[1])).unwrap(), None);
        assert!(
            String::from_utf8(prompt.output)
                .unwrap()
                .starts_with("1 Mon 10am\n")
        );
    }

    #[test]
    fn a_person_slow_to_choose_is_reminded_once_and_a_quick_one_never() {
        let remind = |tx: crossbeam_channel::Sender<()>| Reminder {
            after: Duration::from_millis(30),
            say: Box::new(move || {
                let _ = tx.send(());
            }),
        };
        // Slow: the answer comes only after the reminder was said.
        let (said_tx, said) = crossbeam_channel::unbounded();
        let (input, mut typing) = std::io::pipe().unwrap();
        let person = std::thread::spawn(move || {
            let mut prompt = Prompt {
                input: io::BufReader::new(input),
                output: Vec::new(),
                show_list: false,
                reminder: Some(remind(said_tx)),
            };
            prompt.choose(&listings(&[1, 2])).unwrap()
        });
        said.recv_timeout(Duration::from_secs(10))
            .expect("the reminder is said");
        typing.write_all(b"2\n").unwrap();
        assert_eq!(person.join().unwrap(), Some(2));
        // Quick: answered at once, never reminded.
        let (said_tx, said) = crossbeam_channel::unbounded();
        let mut prompt = Prompt {
            input: &b"1\n"[..],
            output: Vec::new(),
            show_list: false,
            reminder: Some(remind(said_tx)),
        };
        assert_eq!(prompt.choose(&listings(&[1])).unwrap(), Some(1));
        assert_eq!(
            said.recv_timeout(Duration::from_millis(100)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected),
            "the reminder was cancelled"
        );
    }

    #[test]
    fn strategies_pick_from_the_list() {
        let list = listings(&[4, 2, 9]);
        assert_eq!(First.choose(&list).unwrap(), Some(2));
        assert_eq!(Fixed(5).choose(&list).unwrap(), Some(5));
        let mut random = Random(SplitMix64::new(1));
        for _ in 0..20 {
            let pick = random.choose(&list).unwrap().unwrap();
            assert!([4, 2, 9].contains(&pick));
        }
        assert_eq!(Random(SplitMix64::new(1)).choose(&[]).unwrap(), None);
    }

    #[test]
    fn exit_codes_are_distinct_per_kind() {
        let codes = [
            Outcome::Quoted.exit_code(),
            Outcome::AuthFailed.exit_code(),
            Outcome::Taken.exit_code(),
            Outcome::DoctorSilent.exit_code(),
            Outcome::Connection(String::new()).exit_code(),
            Outcome::Cancelled.exit_code(),
        ];
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len());
        assert_eq!(Outcome::NoSlots.exit_code(), Outcome::Taken.exit_code());
        assert_eq!(
            Outcome::Protocol(String::new()).exit_code(),
            Outcome::Connection(String::new()).exit_code()
        );
    }

    #[test]
    fn labels_follow_the_classic_naming() {
        assert_eq!(patient_label("patient1"), "Patient 1");
        assert_eq!(patient_label("patient1.2"), "Patient 1.2");
        assert_eq!(patient_label("alice"), "Patient alice");
    }
}
