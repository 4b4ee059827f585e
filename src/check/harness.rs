//! The harness of `medsim check`: cases, their outcomes, the run's state,
//! the order cases run in, and the watch on the servers between them.
//!
//! The watch never talks to a server: a server check started is alive
//! while its process lives and holds its socket, one on this machine while
//! its socket is there (both seen in `/proc`); only a server elsewhere is
//! asked (a TCP connect, a quote in the chosen dialect). A probe that logs
//! in, or even connects, is an input: it can kill a center (the seed dies
//! of a connect-and-close) or change what the next case sees (a login kept
//! in a global buffer). When a server dies, the case it died in is blamed,
//! naming the input: the message it got no answer to, or the close of its
//! connection after its answers. One input is blamed once; a server check
//! started is restarted with fresh state and the cases go on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::cases::{ask_doctor, center_cases, doctor_cases, doctor_cases_for};
use super::launch::{self, Running};
use super::session::{Session, Shared, quote};
use super::sockets::{self, Transport};
use super::wording::wording_cases;
use super::{CaseResult, Config, Findings, Settings, Verdict};

/// How a case ended.
pub(super) struct Outcome {
    pub(super) verdict: Verdict,
    pub(super) evidence: String,
}

pub(super) fn pass(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Pass,
        evidence: evidence.into(),
    }
}

pub(super) fn warn(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Warn,
        evidence: evidence.into(),
    }
}

pub(super) fn fail(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Fail,
        evidence: evidence.into(),
    }
}

pub(super) fn skip(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Skip,
        evidence: evidence.into(),
    }
}

/// Could not run for want of what the center should provide (a free
/// slot): the check is incomplete, and says so in every report.
pub(super) fn not_run(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Blocked,
        evidence: format!("not run: {}", evidence.into()),
    }
}

/// `Ok` passes, `Err` fails.
pub(super) fn judged(outcome: Result<String, String>) -> Outcome {
    match outcome {
        Ok(evidence) => pass(evidence),
        Err(evidence) => fail(evidence),
    }
}

/// What a case needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Need {
    Center,
    Doctor(String),
    Nothing,
}

pub(super) type CaseFn<'a> = Box<dyn Fn(&mut Run) -> Outcome + 'a>;

/// A case: its id, its name, what it needs, what it does.
pub(super) struct Case<'a> {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) need: Need,
    pub(super) run: CaseFn<'a>,
}

pub(super) fn case<'a>(
    id: impl Into<String>,
    name: impl Into<String>,
    need: Need,
    run: impl Fn(&mut Run) -> Outcome + 'a,
) -> Case<'a> {
    Case {
        id: id.into(),
        name: name.into(),
        need,
        run: Box::new(run),
    }
}

/// A slot booked by the booking case.
#[derive(Debug, Clone)]
pub(super) struct Booked {
    pub(super) index: u64,
    pub(super) answer: String,
    /// The doctor and port named, when the answer names both.
    pub(super) doctor: Option<(String, u16)>,
}

/// A server under check, and how check knows it is still there.
pub(super) struct Server {
    /// `the center`, `the doctors`, `doctor doc1`.
    what: String,
    transport: Transport,
    addrs: Vec<SocketAddr>,
    /// How it is watched.
    watch: Watch,
    /// Why it cannot be asked any more.
    pub(super) down: Option<String>,
    /// The inputs already blamed for its deaths.
    blamed: Vec<String>,
}

enum Watch {
    /// Check started it: its process and socket are watched, and it is
    /// restarted when it dies.
    Started(launch::Program, Option<Box<Running>>),
    /// It runs on this machine, started by someone else: its socket is
    /// watched.
    Local,
    /// It runs elsewhere: it is asked.
    Remote,
}

/// How a server went away during a case.
struct Gone {
    /// `died with SIGSEGV`, `closed its listening socket`.
    how: String,
    /// Its output's tail and what the restart did.
    after: String,
}

impl Server {
    /// Starts the server when check runs it, or notes how it is watched.
    fn new(
        what: String,
        transport: Transport,
        addrs: Vec<SocketAddr>,
        program: Option<&launch::Program>,
    ) -> Server {
        let mut server = Server {
            what,
            transport,
            watch: Watch::Remote,
            addrs,
            down: None,
            blamed: Vec::new(),
        };
        server.watch = match program {
            Some(program) => match program.start(&[]) {
                Ok(running) => Watch::Started(program.clone(), Some(Box::new(running))),
                Err(why) => {
                    server.down = Some(why);
                    Watch::Started(program.clone(), None)
                }
            },
            None if server.addrs.iter().all(|&a| sockets::served(transport, a)) => Watch::Local,
            None => Watch::Remote,
        };
        server
    }

    /// Whether check started it and its process has ended.
    fn started_and_dead(&mut self) -> bool {
        match &mut self.watch {
            // Its sockets close a moment before it can be reaped.
            Watch::Started(_, Some(running)) => {
                running.wait_for_exit(Duration::from_millis(300)).is_some()
            }
            _ => false,
        }
    }

    /// Whether check started it and its process ends within `grace`.
    fn died_within(&mut self, grace: Duration) -> bool {
        match &mut self.watch {
            Watch::Started(_, Some(running)) => running.wait_for_exit(grace).is_some(),
            _ => false,
        }
    }

    /// Whether it went away, waiting up to `grace` for a death already on
    /// its way (a crash on the close of a case's connection comes a moment
    /// after it); restarts a server check started.
    fn gone(&mut self, grace: Duration, still_answers: impl Fn() -> bool) -> Option<Gone> {
        if self.down.is_some() {
            return None;
        }
        let (how, tail) = match &mut self.watch {
            Watch::Started(_, None) => return None,
            Watch::Started(_, Some(running)) => {
                let how = match running.wait_for_exit(grace) {
                    Some(death) => death,
                    None => running.gone()?,
                };
                running.kill();
                (how, running.tail())
            }
            Watch::Local => {
                let (transport, addrs) = (self.transport, &self.addrs);
                if addrs.iter().all(|&a| sockets::served(transport, a)) {
                    return None;
                }
                let held = match transport {
                    Transport::Tcp => "listens at",
                    Transport::Udp => "holds",
                };
                let addrs = addrs.iter().map(ToString::to_string).collect::<Vec<_>>();
                (
                    format!("is gone (nothing {held} {} any more)", addrs.join(", ")),
                    String::new(),
                )
            }
            Watch::Remote => {
                if still_answers() {
                    return None;
                }
                ("stopped answering".to_owned(), String::new())
            }
        };
        let after = match &mut self.watch {
            Watch::Started(program, running) => match program.start(&[]) {
                Ok(fresh) => {
                    *running = Some(Box::new(fresh));
                    format!("{tail}; restarted it with fresh state")
                }
                Err(why) => {
                    *running = None;
                    self.down = Some(format!("{} could not be restarted: {why}", self.what));
                    format!("{tail}; restarting it failed: {why}")
                }
            },
            _ => {
                self.down = Some(format!(
                    "{} {how} (check did not start it, so cannot restart it: give --{}-cmd)",
                    self.what,
                    if self.transport == Transport::Tcp {
                        "center"
                    } else {
                        "doctor"
                    }
                ));
                format!("{tail}; check did not start it, so the cases after this one cannot run")
            }
        };
        Some(Gone { how, after })
    }

    /// The case's outcome once the server went away during it: FAIL
    /// naming the input, unless that input was blamed before (then the
    /// case keeps its own verdict, and says what happened).
    fn blame(&mut self, outcome: Outcome, gone: Gone, input: String) -> Outcome {
        let note = format!("{} {} on {input}{}", self.what, gone.how, gone.after);
        if self.blamed.contains(&input) {
            let then = format!("; then {note} (blamed before)");
            // Twice in one case (its list, then its booking) is said once.
            let evidence = if outcome.evidence.ends_with(&then) {
                outcome.evidence
            } else {
                outcome.evidence + &then
            };
            return Outcome {
                verdict: outcome.verdict,
                evidence,
            };
        }
        self.blamed.push(input);
        fail(format!("{note}; the case: {}", outcome.evidence))
    }
}

/// The state of a run as the cases go.
pub(super) struct Run<'a> {
    pub(super) shared: &'a Shared<'a>,
    pub(super) settings: &'a Settings,
    pub(super) centers: Vec<SocketAddr>,
    /// The first list seen.
    pub(super) listed: Option<Vec<u64>>,
    pub(super) booked: Option<Booked>,
    /// The center was restarted (fresh state) since the booking.
    pub(super) restarted: bool,
    /// The center lists the data's slots, so grants are held to the data.
    pub(super) data_fits: bool,
    pub(super) center: Server,
    /// The doctors by name: one server for all when check starts them
    /// (one program), one each otherwise.
    pub(super) doctors: Vec<(Vec<String>, Server)>,
    /// Doctors that answered their quote case, so that silence to an
    /// unknown plan means a drop.
    pub(super) quoted: Vec<String>,
    /// Each time the center died during the running case and was
    /// restarted for it to go on: how, how many of the case's messages had
    /// gone unanswered by then, and the input blamed.
    died_during_case: Vec<(Gone, usize, String)>,
    /// Sessions closed when the center was last seen alive after a close.
    settled_closes: u64,
    pub(super) results: Vec<CaseResult>,
}

impl<'a> Run<'a> {
    pub(super) fn config(&self) -> &'a Config {
        self.shared.config
    }

    /// A new session with the (first) center. When the center check
    /// started has died during this case, it is restarted first (the death
    /// is blamed when the case ends), so a case can go on past the input
    /// that killed it.
    pub(super) fn open(&mut self) -> Result<Session<'a>, String> {
        self.open_in(self.shared.framing())
    }

    /// As [`Run::open`], the session sending in `framing`.
    pub(super) fn open_in(
        &mut self,
        framing: crate::protocol::Framing,
    ) -> Result<Session<'a>, String> {
        self.settle();
        match Session::open_in(self.shared, self.centers[0], framing) {
            Err(why) if self.center.started_and_dead() => {
                self.restart_mid_case(None);
                Session::open_in(self.shared, self.centers[0], framing)
                    .map_err(|again| format!("{why}; after a restart: {again}"))
            }
            opened => opened,
        }
    }

    /// After a session closed, gives the center check started the moment
    /// a crash on that close takes, before anything else is sent: what
    /// comes next must not be blamed for it (nor meet a dying center).
    pub(super) fn settle(&mut self) {
        let closes = self.shared.closes();
        if closes == self.settled_closes || !matches!(self.center.watch, Watch::Started(..)) {
            return;
        }
        self.settled_closes = closes;
        if self.center.died_within(DEATH_GRACE) {
            // A message whose connection the center ended unanswered came
            // first: the close after it only found the center dying.
            let blame_close = self.shared.unanswered().is_empty();
            self.restart_mid_case(blame_close.then(|| self.shared.last_close()));
        }
    }

    /// Restarts the center check started, which died during this case, so
    /// the case can go on; the death is blamed on `input` (or on what the
    /// case sent unanswered) when the case ends.
    fn restart_mid_case(&mut self, input: Option<String>) {
        let unanswered = self.shared.unanswered();
        // Only what went unanswered since the last death can be this one's.
        let since = self.died_during_case.last().map_or(0, |death| death.1);
        let fresh = &unanswered[since.min(unanswered.len())..];
        if let Some(gone) = self.center.gone(Duration::ZERO, || true) {
            let input = input.unwrap_or_else(|| blamed_input(self.shared, fresh));
            self.died_during_case.push((gone, unanswered.len(), input));
        }
    }

    /// Whether the center check started has died (and not yet been
    /// restarted): what a case saw last may be its death, not its answer.
    pub(super) fn center_dead(&mut self) -> bool {
        self.center.started_and_dead()
    }

    /// Whether the center check started died a moment ago (of what the
    /// case just did), without restarting it: waits as long as a crash on
    /// a close takes.
    pub(super) fn center_died_just_now(&mut self) -> bool {
        self.center.died_within(DEATH_GRACE)
    }

    /// The server of doctor `name`.
    pub(super) fn doctor(&mut self, name: &str) -> Option<&mut Server> {
        self.doctors
            .iter_mut()
            .find(|(names, _)| names.iter().any(|n| n == name))
            .map(|(_, server)| server)
    }

    /// The free slots now, listed by a session of its own.
    pub(super) fn free_now(&mut self) -> Result<Option<Vec<u64>>, String> {
        self.open()?.list()
    }
}

/// Runs every case against the configured system with default settings.
pub fn check(config: &Config) -> Findings {
    check_with(config, &Settings::default())
}

/// Runs the selected cases, starting (and restarting) the programs the
/// settings name. A program that cannot start leaves its cases NOT RUN,
/// saying why; the others still run.
pub fn check_with(config: &Config, settings: &Settings) -> Findings {
    let doctors = match &settings.doctor_cmd {
        Some(program) => vec![(
            config.doctors.iter().map(|d| d.name.clone()).collect(),
            Server::new(
                "the doctors".into(),
                Transport::Udp,
                config.doctors.iter().map(|d| d.addr).collect(),
                Some(program),
            ),
        )],
        None => config
            .doctors
            .iter()
            .map(|d| {
                let what = format!("doctor {}", d.name);
                let server = Server::new(what, Transport::Udp, vec![d.addr], None);
                (vec![d.name.clone()], server)
            })
            .collect(),
    };
    let center = Server::new(
        "the center".into(),
        Transport::Tcp,
        std::iter::once(config.center)
            .chain(settings.more_centers.iter().copied())
            .collect(),
        settings.center_cmd.as_ref(),
    );
    let shared = Shared::new(config);
    let mut run = Run {
        shared: &shared,
        settings,
        centers: std::iter::once(config.center)
            .chain(settings.more_centers.iter().copied())
            .collect(),
        listed: None,
        booked: None,
        restarted: false,
        data_fits: true,
        center,
        doctors,
        quoted: Vec::new(),
        died_during_case: Vec::new(),
        settled_closes: 0,
        results: Vec::new(),
    };
    let cases = center_cases(config);
    run_cases(&mut run, &cases);
    run_cases(&mut run, &wording_cases());
    let doctor_cases = doctor_cases(&run);
    run_cases(&mut run, &doctor_cases);
    Findings {
        listed_free: run.listed.as_ref().map(Vec::len),
        cases: run.results,
    }
}

/// The id of every case a check of `config` has, in the order they run,
/// for `--cases`, `--skip` and `--weights` to be held to before anything
/// runs. (A doctor the center names that `config` does not know adds its
/// own cases during the run.)
pub(super) fn case_ids(config: &Config) -> Vec<String> {
    center_cases(config)
        .into_iter()
        .chain(wording_cases())
        .chain(doctor_cases_for(config.doctors.clone(), &config.plan))
        .map(|case| case.id)
        .collect()
}

/// Whether a center that answered nothing in lowercase answers a good
/// login as `Authenticate`: then every later request is capitalised, and
/// what that departure is, in words.
fn capitalised_form(run: &mut Run) -> Option<String> {
    use std::sync::atomic::Ordering;
    let shared = run.shared;
    shared.capitalised.store(true, Ordering::Relaxed);
    // Twice: a center that dies of the silent session's close (as one
    // real center does) is restarted by the second attempt's open.
    let mut found = Err(String::new());
    for _ in 0..2 {
        found = run
            .open()
            .and_then(|mut c| c.log_in().map(|()| c.last_exchange()));
        if found.is_ok() {
            break;
        }
    }
    match found {
        Ok(exchange) => Some(format!(
            "the center answers nothing to PROTOCOL.md's lowercase commands, but {exchange}: \
             check goes on with capitalised commands ('Authenticate', 'Available', 'Selection')"
        )),
        Err(_) => {
            shared.capitalised.store(false, Ordering::Relaxed);
            None
        }
    }
}

/// The input a center's death during a case is blamed on: the first
/// message whose connection it ended instead of answering, else the last
/// close of a session (or a connection closed without a word).
fn blamed_input(shared: &Shared, unanswered: &[String]) -> String {
    match unanswered.first() {
        Some(sent) => format!("'{}'", quote(sent)),
        None if !shared.sent_any() => super::session::NO_WORD_CLOSE.into(),
        None => shared.last_close(),
    }
}

/// How long a server may take to die of a case's last input.
const DEATH_GRACE: Duration = Duration::from_millis(60);

pub(super) fn run_cases(run: &mut Run, cases: &[Case]) {
    for case in cases {
        if !run.settings.selects(&case.id) {
            continue;
        }
        let blocked = match &case.need {
            Need::Center => run.center.down.clone(),
            Need::Doctor(name) => run.doctor(name).and_then(|d| d.down.clone()),
            Need::Nothing => None,
        };
        if let Some(why) = blocked {
            run.results.push(CaseResult {
                id: case.id.clone(),
                name: case.name.clone(),
                verdict: Verdict::Blocked,
                evidence: format!("not run: {why}"),
                seconds: 0.0,
            });
            continue;
        }
        // The case's time runs to the end of the look at the servers
        // after it: a death it caused is judged on its time.
        let started = Instant::now();
        run.shared.begin_case(&case.name);
        let mut outcome = (case.run)(run);
        let unanswered = run.shared.unanswered();
        outcome = match &case.need {
            Need::Center => {
                let (shared, centers) = (run.shared, run.centers.clone());
                let still_answers = || {
                    centers
                        .iter()
                        .all(|&c| super::accepts(c, shared.config.timeout))
                };
                // Silence, not a death: a center that ended the connection
                // of the case's first message (dying of it) answered
                // nothing either. (One silent to a message may still die of
                // the close after it.)
                let answered = |run: &Run| {
                    run.shared
                        .answered
                        .load(std::sync::atomic::Ordering::Relaxed)
                };
                let silent = !answered(run)
                    && run.shared.sent_any()
                    && run.center.down.is_none()
                    && !(!unanswered.is_empty()
                        && (!run.died_during_case.is_empty() || run.center_died_just_now()));
                if silent {
                    if let Some(form) = capitalised_form(run) {
                        outcome = warn(format!("{form}; the case: {}", outcome.evidence));
                    } else if !answered(run) {
                        // Nothing has ever come back (not even to the look
                        // for capitalised commands): every later case would
                        // only wait out its timeout. Otherwise the center is
                        // silent to what the case sent (a wrong password),
                        // and the case's verdict stands.
                        run.center.down = Some(format!(
                            "the center accepts connections but answered nothing (case '{}')",
                            case.name
                        ));
                        outcome = fail(format!(
                            "the center accepts connections but answered nothing: {}",
                            outcome.evidence
                        ));
                    }
                }
                // Died mid-case (and restarted for the case to go on),
                // then perhaps again after the restart, of a later input.
                let earlier = std::mem::take(&mut run.died_during_case);
                let later = run.center.gone(DEATH_GRACE, still_answers);
                let since = earlier.last().map_or(0, |death| death.1);
                let after = &unanswered[since.min(unanswered.len())..];
                let mut deaths: Vec<(Gone, String)> = earlier
                    .into_iter()
                    .map(|(gone, _, input)| (gone, input))
                    .collect();
                deaths.extend(later.map(|g| (g, blamed_input(run.shared, after))));
                for (gone, input) in deaths {
                    run.restarted = true;
                    outcome = run.center.blame(outcome, gone, input);
                }
                outcome
            }
            Need::Doctor(name) => {
                let config = run.config();
                let framing = run.shared.doctor_framing();
                let still_answers = || {
                    config.doctors.iter().filter(|d| &d.name == name).all(|d| {
                        matches!(
                            ask_doctor(config, framing, d.addr, &config.plan),
                            Ok(Some(_))
                        )
                    })
                };
                let doctor = run.doctor(name);
                match doctor.and_then(|d| d.gone(DEATH_GRACE, still_answers).map(|g| (d, g))) {
                    Some((doctor, gone)) => {
                        // One doctor's death is not another's: the input
                        // names whom it went to.
                        let input = match unanswered.last() {
                            Some(sent) => format!("the datagram '{}' to {name}", quote(sent)),
                            None => format!("this case ({name})"),
                        };
                        doctor.blame(outcome, gone, input)
                    }
                    None => outcome,
                }
            }
            Need::Nothing => outcome,
        };
        run.results.push(CaseResult {
            id: case.id.clone(),
            name: case.name.clone(),
            verdict: outcome.verdict,
            evidence: outcome.evidence,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
}
