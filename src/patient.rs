//! The patient, the person-facing client: books a slot at the center over
//! TCP, then asks the assigned doctor for a quote over UDP.
//!
//! This module owns a visit's three phases and their phase messages, the
//! choice of a slot (a person at a prompt, a scripted index, or a strategy
//! for `simulate`), the outcome of a visit with its exit status, and the
//! `patient` subcommand's visit (its flags are `cli::patient`'s). The
//! conversations themselves (framing, bounded waits and retries) are
//! `client`'s, the reading of answers `protocol`'s.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{
    Conversation, DoctorLink, DoctorOverrides, DoctorReply, Failed, Loss, NoAnswer, Retries, Watch,
};
use crate::console::Console;
use crate::data::{Patient, Source};
use crate::net;
use crate::protocol::{
    self, AuthAnswer, Framing, Listing, QuoteAnswer, Request, SelectionAnswer, SlotsAnswer,
};
use crate::rng::SplitMix64;

/// How a visit ended. Each kind has its own exit status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    /// Booked and quoted.
    Quoted,
    /// The center answered `failure`.
    AuthFailed,
    /// The center had no free slot.
    NoSlots,
    /// Someone reserved the chosen slot first.
    Taken,
    /// The doctor did not answer within the retries.
    DoctorSilent,
    /// The doctor answered with an empty datagram.
    DoctorEmpty,
    /// The person closed the prompt (end of input) without choosing.
    Cancelled,
    /// The center or the doctor answered something the protocol does not
    /// allow here, or `error ...`.
    Protocol(String),
    /// The connection could not be made or broke.
    Connection(String),
}

impl Outcome {
    /// The process exit status for this outcome (README, "Exit statuses").
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Quoted => 0,
            Outcome::AuthFailed => 3,
            Outcome::NoSlots | Outcome::Taken => 4,
            Outcome::DoctorSilent => 5,
            Outcome::DoctorEmpty => 6,
            Outcome::Protocol(_) | Outcome::Connection(_) => 6,
            Outcome::Cancelled => 7,
        }
    }

    /// A short name for reports read by programs (JSON).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Quoted => "quoted",
            Outcome::AuthFailed => "auth_failed",
            Outcome::NoSlots => "no_slots",
            Outcome::Taken => "taken",
            Outcome::DoctorSilent => "doctor_silent",
            Outcome::DoctorEmpty => "doctor_empty",
            Outcome::Cancelled => "cancelled",
            Outcome::Protocol(_) => "protocol_error",
            Outcome::Connection(_) => "connection_error",
        }
    }

    /// A short name for reports read by people.
    pub fn words(&self) -> &'static str {
        match self {
            Outcome::Quoted => "quoted",
            Outcome::AuthFailed => "login failed",
            Outcome::NoSlots => "no slots",
            Outcome::Taken => "taken",
            Outcome::DoctorSilent => "doctor silent",
            Outcome::DoctorEmpty => "doctor empty",
            Outcome::Cancelled => "cancelled",
            Outcome::Protocol(_) => "protocol error",
            Outcome::Connection(_) => "connection error",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Quoted => f.write_str("booked and quoted"),
            Outcome::AuthFailed => f.write_str("authentication failed"),
            Outcome::NoSlots => f.write_str("no appointment is available"),
            Outcome::Taken => f.write_str("the chosen appointment was taken"),
            Outcome::DoctorSilent => f.write_str("the doctor did not answer"),
            Outcome::DoctorEmpty => f.write_str("the doctor answered with an empty message"),
            Outcome::Cancelled => f.write_str("no appointment was chosen"),
            Outcome::Protocol(what) => write!(f, "protocol error: {what}"),
            Outcome::Connection(what) => write!(f, "connection error: {what}"),
        }
    }
}

/// What a visit achieved, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Visit {
    pub outcome: Outcome,
    /// The slot the patient asked for.
    #[serde(default)]
    pub chosen: Option<u64>,
    /// The slot the center reserved.
    pub slot: Option<u64>,
    pub doctor: Option<String>,
    pub doctor_port: Option<u16>,
    pub cost: Option<u64>,
    /// Quote requests sent beyond the first.
    pub retries: u32,
    /// How long each exchange took, for the run's table per phase.
    #[serde(skip)]
    pub phases: PhaseTimes,
}

/// The exchanges of a visit, as load reports name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Connecting and `authenticate`, to its answer.
    Login,
    /// `available`, to the list.
    List,
    /// `selection N`, to the grant or refusal.
    Selection,
    /// The plan to the doctor, to its cost (retries included).
    Quote,
}

impl Phase {
    /// Every phase, in the order of a visit.
    pub const ALL: [Phase; 4] = [Phase::Login, Phase::List, Phase::Selection, Phase::Quote];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Login => "login",
            Phase::List => "list",
            Phase::Selection => "selection",
            Phase::Quote => "quote",
        }
    }
}

/// How long each phase of one visit took (from its request to its answer,
/// whatever the answer said) and the last phase it began: a visit that did
/// not end quoted failed in that one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Microseconds, by [`Phase`] in [`Phase::ALL`] order; `None` for a
    /// phase not begun or never answered.
    pub answered_us: [Option<u64>; 4],
    pub last_begun: Option<Phase>,
}

impl PhaseTimes {
    fn begin(&mut self, phase: Phase) -> (Phase, Instant) {
        self.last_begun = Some(phase);
        (phase, Instant::now())
    }

    fn answered(&mut self, (phase, since): (Phase, Instant)) {
        self.answered_us[phase as usize] = Some(since.elapsed().as_micros() as u64);
    }
}

impl Visit {
    fn new() -> Visit {
        Visit {
            outcome: Outcome::Cancelled,
            chosen: None,
            slot: None,
            doctor: None,
            doctor_port: None,
            cost: None,
            retries: 0,
            phases: PhaseTimes::default(),
        }
    }

    fn ended(mut self, outcome: Outcome) -> Visit {
        self.outcome = outcome;
        self
    }
}

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

/// Picks one of the listed slots.
pub trait Chooser {
    /// The index to send, or `None` to give up.
    ///
    /// # Errors
    ///
    /// The chooser's own input failed.
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>>;
}

/// Always this index, listed or not: the center has the last word (a
/// scripted `--select`, or `simulate --choice same`).
pub struct Fixed(pub u64);

impl Chooser for Fixed {
    fn choose(&mut self, _listings: &[Listing]) -> io::Result<Option<u64>> {
        Ok(Some(self.0))
    }
}

/// The lowest listed index.
pub struct First;

impl Chooser for First {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        Ok(listings.iter().map(|l| l.index).min())
    }
}

/// A listed index picked at random.
pub struct Random(pub SplitMix64);

impl Chooser for Random {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        if listings.is_empty() {
            return Ok(None);
        }
        let at = self.0.below(listings.len() as u64) as usize;
        Ok(Some(listings[at].index))
    }
}

/// The prompt PROTOCOL.md prints before reading a choice.
pub const PROMPT: &str = "Please enter the preferred appointment index and press enter:";

/// A person at a terminal: prompts, and asks again on a choice that is not
/// a listed index. Nothing is sent for an invalid choice.
pub struct Prompt<R, W> {
    pub input: R,
    pub output: W,
    /// Print the list before the prompt (when phase messages are off).
    pub show_list: bool,
    /// Said once when the person has been at the prompt this long: the
    /// center will not wait for ever.
    pub reminder: Option<Reminder>,
}

/// A word to a person who has been at the prompt a while.
pub struct Reminder {
    pub after: Duration,
    pub say: Box<dyn Fn() + Send>,
}

/// When to remind a person at the prompt that a medsim center waits 5
/// minutes (its `--idle-timeout` default) for the next message.
const REMIND_AFTER: Duration = Duration::from_secs(240);

impl<R: BufRead, W: Write> Chooser for Prompt<R, W> {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        if self.show_list {
            for listing in listings {
                writeln!(self.output, "{listing}")?;
            }
        }
        // The reminder waits on its own thread; answering drops `_answered`
        // and so cancels it.
        let (_answered, cancelled) = crossbeam_channel::bounded::<()>(0);
        if let Some(reminder) = self.reminder.take() {
            std::thread::spawn(move || {
                if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    cancelled.recv_timeout(reminder.after)
                {
                    (reminder.say)();
                }
            });
        }
        loop {
            writeln!(self.output, "{PROMPT}")?;
            self.output.flush()?;
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let answer = line.trim();
            match protocol::parse_index(answer) {
                Ok(index) if listings.iter().any(|l| l.index == index) => {
                    return Ok(Some(index));
                }
                _ => writeln!(
                    self.output,
                    "'{}' is not one of the listed indexes; please choose again.",
                    protocol::shorten(answer)
                )?,
            }
        }
    }
}

impl From<NoAnswer> for Outcome {
    fn from(why: NoAnswer) -> Outcome {
        match why {
            NoAnswer::Ended => Outcome::Connection(why.to_string()),
            NoAnswer::TimedOut => Outcome::Connection("the center did not answer in time".into()),
            NoAnswer::TooLong => Outcome::Protocol("the center's answer is too long".into()),
            NoAnswer::Failed(e) => Outcome::Connection(format!("reading from the center: {e}")),
        }
    }
}

impl From<Failed> for Outcome {
    fn from(why: Failed) -> Outcome {
        match why {
            Failed::Send(e) => Outcome::Connection(format!("sending to the center: {e}")),
            Failed::NoAnswer(why) => why.into(),
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
