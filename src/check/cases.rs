//! The cases of `medsim check`, in the order they run, the tolerant
//! conversation each opens with the center, and the liveness checks
//! between them.
//!
//! Answers are read as medsim's classic client reads them (`Success`,
//! `not available`, a list one slot a line, a port alone all understood),
//! so each case judges meaning; how an answer departs from PROTOCOL.md's
//! exact words is noted once per kind and reported by the `wording/...`
//! cases at the end of the center's cases.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::launch::{self, Running};
use super::{CaseResult, Config, DoctorTarget, Findings, Settings, UNKNOWN_PLAN, Verdict};
use crate::client::{self, Closing, DoctorLink, DoctorReply, Retries};
use crate::net;
use crate::protocol::{
    self, AuthAnswer, Dialect, SelectionAnswer, SlotsAnswer, strict_assignment, strict_listing_for,
    words,
};

/// An index no center should have.
const MISSING_INDEX: u64 = 999_999_999;
/// How long a closed-after-failure connection may take to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long to wait for a greeting on the first connection.
const GREETING_WAIT: Duration = Duration::from_millis(300);

/// A kind of wording the protocol fixes, noted as answers come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Word {
    Success,
    Failure,
    NotAvailable,
    List,
    Grant,
    Greeting,
    Close,
}

impl Word {
    const ALL: [Word; 7] = [
        Word::Success,
        Word::Failure,
        Word::NotAvailable,
        Word::List,
        Word::Grant,
        Word::Greeting,
        Word::Close,
    ];

    fn id(self) -> &'static str {
        match self {
            Word::Success => "wording/success",
            Word::Failure => "wording/failure",
            Word::NotAvailable => "wording/notavailable",
            Word::List => "wording/list",
            Word::Grant => "wording/grant",
            Word::Greeting => "wording/greeting",
            Word::Close => "wording/close-after-failure",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Word::Success => "wording: 'success'",
            Word::Failure => "wording: 'failure'",
            Word::NotAvailable => "wording: 'notavailable'",
            Word::List => "wording: the list's form",
            Word::Grant => "wording: 'DOCTOR PORT'",
            Word::Greeting => "wording: no greeting",
            Word::Close => "wording: closes after 'failure'",
        }
    }

    /// What PROTOCOL.md says, for the evidence.
    fn rule(self) -> &'static str {
        match self {
            Word::Success => "PROTOCOL.md's word is 'success'",
            Word::Failure => "PROTOCOL.md's word is 'failure'",
            Word::NotAvailable => "PROTOCOL.md's word is 'notavailable'",
            Word::List => "PROTOCOL.md: 'INDEX DAY TIME' triples separated by single spaces",
            Word::Grant => "PROTOCOL.md: 'DOCTOR PORT'",
            Word::Greeting => "PROTOCOL.md: the center reads 'authenticate' first",
            Word::Close => "PROTOCOL.md: 'failure' and closes",
        }
    }
}

/// What was seen of one kind of wording.
#[derive(Debug, Default)]
struct Seen {
    conforming: usize,
    /// The first departure: its evidence and the case it came in.
    departure: Option<(String, String)>,
    departures: usize,
}

/// What a whole run shares, race threads included.
struct Shared<'a> {
    config: &'a Config,
    wording: Mutex<BTreeMap<Word, Seen>>,
    /// The center sends a message before reading `authenticate`.
    greets: AtomicBool,
    /// Some answer came from the center at all.
    answered: AtomicBool,
    /// The name of the case running, for the wording's evidence.
    case: Mutex<String>,
}

impl Shared<'_> {
    fn note(&self, word: Word, conforming: bool, evidence: impl FnOnce() -> String) {
        let mut wording = self.wording.lock();
        let seen = wording.entry(word).or_default();
        if conforming {
            seen.conforming += 1;
        } else {
            seen.departures += 1;
            if seen.departure.is_none() {
                seen.departure = Some((evidence(), self.case.lock().clone()));
            }
        }
    }
}

/// How an answer reads, whatever its wording.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    Success,
    Failure,
    List(Vec<u64>),
    NotAvailable,
    Grant,
    Error,
    Other,
}

fn read(answer: &str) -> Reading {
    if let Ok(AuthAnswer::Error(_)) = protocol::parse_auth_answer(answer) {
        return Reading::Error;
    }
    match protocol::parse_auth_answer(answer) {
        Ok(AuthAnswer::Success) => return Reading::Success,
        Ok(AuthAnswer::Failure) => return Reading::Failure,
        _ => {}
    }
    match protocol::parse_slots_answer(answer) {
        Ok(SlotsAnswer::NotAvailable) => return Reading::NotAvailable,
        Ok(SlotsAnswer::Slots(listings)) => {
            return Reading::List(listings.iter().map(|l| l.index).collect());
        }
        _ => {}
    }
    match protocol::parse_selection_answer(answer) {
        Ok(SelectionAnswer::Assigned { .. }) => Reading::Grant,
        _ => Reading::Other,
    }
}

/// One tolerant conversation with a center, its exchanges kept as
/// evidence.
struct Session<'s> {
    shared: &'s Shared<'s>,
    link: client::Conversation,
    log: Vec<String>,
}

impl<'s> Session<'s> {
    fn open(shared: &'s Shared<'s>, center: SocketAddr) -> Result<Session<'s>, String> {
        let config = shared.config;
        let link = client::Conversation::connect(center, config.framing, config.timeout)
            .map_err(|e| format!("cannot connect to {center}: {e}"))?;
        let mut session = Session {
            shared,
            link,
            log: Vec::new(),
        };
        if shared.greets.load(Ordering::Relaxed) {
            // Read and drop the greeting, as a classic client must.
            match session.link.receive() {
                Ok(greeting) => session
                    .log
                    .push(format!("greeted with '{}'", quote(&greeting))),
                Err(why) => session.log.push(format!("no greeting this time ({why})")),
            }
        }
        Ok(session)
    }

    /// On a first connection: waits briefly for a message the center
    /// sends unasked, and notes it.
    fn detect_greeting(&mut self) {
        let _ = self.link.set_answer_timeout(GREETING_WAIT);
        let greeting = self.link.receive();
        let _ = self.link.set_answer_timeout(self.shared.config.timeout);
        match greeting {
            Ok(text) => {
                self.shared.greets.store(true, Ordering::Relaxed);
                self.shared.answered.store(true, Ordering::Relaxed);
                self.log.push(format!(
                    "greeted with '{}' before any request",
                    quote(&text)
                ));
                self.shared.note(Word::Greeting, false, || {
                    format!("the center sent '{}' before any request", quote(&text))
                });
            }
            Err(_) => self.shared.note(Word::Greeting, true, String::new),
        }
    }

    fn ask(&mut self, text: &str) -> Result<String, String> {
        self.log.push(format!("sent '{}'", shown(text)));
        if let Err(e) = self.link.send(text) {
            self.log.push(format!("send failed: {e}"));
            return Err(self.evidence());
        }
        self.receive()
    }

    fn ask_bytes(&mut self, what: &str, bytes: &[u8]) -> Result<String, String> {
        self.log.push(format!("sent {what}"));
        if let Err(e) = self.link.send_raw(bytes) {
            self.log.push(format!("send failed: {e}"));
            return Err(self.evidence());
        }
        self.receive()
    }

    fn receive(&mut self) -> Result<String, String> {
        match self.link.receive() {
            Ok(answer) => {
                self.shared.answered.store(true, Ordering::Relaxed);
                self.log.push(format!("got '{}'", quote(&answer)));
                Ok(answer)
            }
            Err(why) => {
                self.log.push(why.to_string());
                Err(self.evidence())
            }
        }
    }

    /// Sends `authenticate USER PASS`; how the answer reads, its wording
    /// noted.
    fn authenticate(&mut self, user: &str, password: &str) -> Result<(Reading, String), String> {
        let answer = self.ask(&format!("authenticate {user} {password}"))?;
        let reading = read(&answer);
        match reading {
            Reading::Success => self
                .shared
                .note(Word::Success, answer == words::SUCCESS, || {
                    format!("got '{}' for a good login", quote(&answer))
                }),
            Reading::Failure => self
                .shared
                .note(Word::Failure, answer == words::FAILURE, || {
                    format!("got '{}' for a bad login", quote(&answer))
                }),
            _ => {}
        }
        Ok((reading, answer))
    }

    /// Logs in with the configured credentials (any word for success).
    fn log_in(&mut self) -> Result<(), String> {
        let config = self.shared.config;
        let (reading, _) = self.authenticate(&config.username, &config.password)?;
        if reading != Reading::Success {
            self.log.push("expected 'success'".into());
            return Err(self.evidence());
        }
        Ok(())
    }

    /// Sends `available`; the indexes listed, `None` for `notavailable`.
    fn available(&mut self) -> Result<Option<Vec<u64>>, String> {
        let answer = self.ask("available")?;
        match read(&answer) {
            Reading::List(indexes) => {
                let strict = strict_listing_for(self.shared.config.framing.dialect, &answer);
                self.shared.note(Word::List, strict.is_ok(), || {
                    format!(
                        "got '{}': {}",
                        quote(&answer),
                        strict.err().unwrap_or_default()
                    )
                });
                Ok(Some(indexes))
            }
            Reading::NotAvailable => {
                self.note_not_available(&answer);
                Ok(None)
            }
            _ => {
                self.log
                    .push("expected a list of 'INDEX DAY TIME' slots or 'notavailable'".into());
                Err(self.evidence())
            }
        }
    }

    /// Logs in and lists.
    fn list(&mut self) -> Result<Option<Vec<u64>>, String> {
        self.log_in()?;
        self.available()
    }

    /// Sends `selection INDEX`; the answer and how it reads, its wording
    /// noted.
    fn select(&mut self, index: u64) -> Result<(Reading, String), String> {
        let answer = self.ask(&format!("selection {index}"))?;
        let reading = read(&answer);
        match reading {
            Reading::Grant => {
                self.shared
                    .note(Word::Grant, strict_assignment(&answer).is_some(), || {
                        format!("got '{}' for a slot granted", quote(&answer))
                    });
            }
            Reading::NotAvailable => self.note_not_available(&answer),
            _ => {}
        }
        Ok((reading, answer))
    }

    fn note_not_available(&self, answer: &str) {
        self.shared
            .note(Word::NotAvailable, answer == words::NOT_AVAILABLE, || {
                format!("got '{}'", quote(answer))
            });
    }

    fn closes(&mut self) -> bool {
        self.link.wait_for_close(CLOSE_WAIT) == Closing::Closed
    }

    fn evidence(&self) -> String {
        self.log.join(", ")
    }

    fn last_exchange(&self) -> String {
        self.log[self.log.len().saturating_sub(2)..].join(", ")
    }
}

/// Text as evidence shows it: passwords masked, long text shortened.
pub(super) fn shown(text: &str) -> String {
    quote(&crate::trace::mask_password(text))
}

/// Peer text as evidence quotes it: one line, long enough to read.
fn quote(text: &str) -> String {
    protocol::shorten_to(text, 48)
}

/// How a case ended.
struct Outcome {
    verdict: Verdict,
    evidence: String,
}

fn pass(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Pass,
        evidence: evidence.into(),
    }
}

fn warn(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Warn,
        evidence: evidence.into(),
    }
}

fn fail(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Fail,
        evidence: evidence.into(),
    }
}

fn skip(evidence: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Skip,
        evidence: evidence.into(),
    }
}

/// `Ok` passes, `Err` fails.
fn judged(outcome: Result<String, String>) -> Outcome {
    match outcome {
        Ok(evidence) => pass(evidence),
        Err(evidence) => fail(evidence),
    }
}

/// What a case needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    Center,
    Doctor(String),
    Nothing,
}

type CaseFn<'a> = Box<dyn Fn(&mut Run) -> Outcome + 'a>;

/// A case: its id, its name, what it needs, what it does.
struct Case<'a> {
    id: String,
    name: String,
    need: Need,
    run: CaseFn<'a>,
}

fn case<'a>(
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
struct Booked {
    index: u64,
    answer: String,
    /// The doctor and port named, when the answer names both.
    doctor: Option<(String, u16)>,
}

/// The state of a run as the cases go.
struct Run<'a> {
    shared: &'a Shared<'a>,
    settings: &'a Settings,
    centers: Vec<SocketAddr>,
    /// The first list seen.
    listed: Option<Vec<u64>>,
    booked: Option<Booked>,
    /// The center was restarted (fresh state) since the booking.
    restarted: bool,
    center_proc: Option<Running>,
    doctor_proc: Option<Running>,
    /// Why the center cannot be asked any more.
    center_down: Option<String>,
    /// Doctors that answered at the start and must keep answering.
    doctors_alive: Vec<String>,
    /// Doctors that stopped, with why.
    doctors_down: BTreeMap<String, String>,
    results: Vec<CaseResult>,
}

impl<'a> Run<'a> {
    fn config(&self) -> &'a Config {
        self.shared.config
    }

    fn open(&self) -> Result<Session<'a>, String> {
        Session::open(self.shared, self.centers[0])
    }

    /// The lowest free slot now, listed by a session of its own.
    fn free_now(&self) -> Result<Option<Vec<u64>>, String> {
        self.open()?.list()
    }
}

/// Runs every case against the configured system with default settings.
pub fn check(config: &Config) -> Findings {
    // Without programs to start, nothing can fail before the cases.
    check_with(config, &Settings::default()).unwrap_or_else(|e| Findings {
        listed_free: None,
        cases: vec![CaseResult {
            id: "start".into(),
            name: "start".into(),
            verdict: Verdict::Fail,
            evidence: format!("{e:#}"),
        }],
    })
}

/// Runs the selected cases, starting (and restarting) the programs the
/// settings name.
///
/// # Errors
///
/// A program to start could not start or was not ready in time.
pub fn check_with(config: &Config, settings: &Settings) -> anyhow::Result<Findings> {
    let doctor_proc = match &settings.doctor_cmd {
        Some(program) => Some(program.start(&[]).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let center_proc = match &settings.center_cmd {
        Some(program) => Some(program.start(&[]).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let shared = Shared {
        config,
        wording: Mutex::new(BTreeMap::new()),
        greets: AtomicBool::new(false),
        answered: AtomicBool::new(false),
        case: Mutex::new(String::new()),
    };
    let doctors_alive = config
        .doctors
        .iter()
        .filter(|d| launch::answers(d.addr, &config.plan))
        .map(|d| d.name.clone())
        .collect();
    let mut run = Run {
        shared: &shared,
        settings,
        centers: std::iter::once(config.center)
            .chain(settings.more_centers.iter().copied())
            .collect(),
        listed: None,
        booked: None,
        restarted: false,
        center_proc,
        doctor_proc,
        center_down: None,
        doctors_alive,
        doctors_down: BTreeMap::new(),
        results: Vec::new(),
    };
    let cases = center_cases(config);
    run_cases(&mut run, &cases);
    run_cases(&mut run, &wording_cases());
    let doctor_cases = doctor_cases(&run);
    run_cases(&mut run, &doctor_cases);
    Ok(Findings {
        listed_free: run.listed.as_ref().map(Vec::len),
        cases: run.results,
    })
}

fn run_cases(run: &mut Run, cases: &[Case]) {
    for case in cases {
        if !run.settings.selects(&case.id) {
            continue;
        }
        let blocked = match &case.need {
            Need::Center => run.center_down.clone(),
            Need::Doctor(name) => run.doctors_down.get(name).cloned(),
            Need::Nothing => None,
        };
        if let Some(why) = blocked {
            run.results.push(CaseResult {
                id: case.id.clone(),
                name: case.name.clone(),
                verdict: Verdict::Blocked,
                evidence: format!("not run: {why}"),
            });
            continue;
        }
        *run.shared.case.lock() = case.name.clone();
        let mut outcome = (case.run)(run);
        if case.need != Need::Nothing {
            if let Some(death) = center_liveness(run, &case.name) {
                outcome = fail(format!("{death}; the case: {}", outcome.evidence));
            }
            if let Some(death) = doctor_liveness(run, &case.name) {
                outcome = fail(format!("{death}; the case: {}", outcome.evidence));
            }
        }
        run.results.push(CaseResult {
            id: case.id.clone(),
            name: case.name.clone(),
            verdict: outcome.verdict,
            evidence: outcome.evidence,
        });
    }
}

/// Whether each center still accepts and answers; when not, what happened
/// (and the restart, when check runs the center).
fn center_liveness(run: &mut Run, case: &str) -> Option<String> {
    if run.center_down.is_some() {
        return None;
    }
    let mut dead = None;
    for &center in &run.centers {
        if let Err(why) = probe_center(run.shared, center) {
            dead = Some(why);
            break;
        }
    }
    let why = dead?;
    let Some(proc) = run.center_proc.as_mut() else {
        let what = if run.shared.answered.load(Ordering::Relaxed) {
            "the center stopped answering after this case"
        } else {
            "the center accepts connections but answered nothing"
        };
        run.center_down = Some(format!("{what} (case '{case}')"));
        return Some(format!("{what}: {why}"));
    };
    // A dying process closes its sockets before it is reaped: give it a
    // moment to be seen dead.
    let death = match proc.wait_for_exit(Duration::from_secs(1)) {
        Some(death) => format!("the center {death} on case '{case}'"),
        None => {
            proc.kill();
            format!("the center stopped answering on case '{case}' ({why}; killed it)")
        }
    };
    let tail = proc.tail();
    let program = run
        .settings
        .center_cmd
        .clone()
        .expect("a running center has its program");
    run.restarted = true;
    match program.start(&[]) {
        Ok(fresh) => {
            run.center_proc = Some(fresh);
            Some(format!("{death}{tail}; restarted it with fresh state"))
        }
        Err(e) => {
            run.center_down = Some(format!("the center could not be restarted: {e}"));
            Some(format!("{death}{tail}; restarting it failed: {e}"))
        }
    }
}

/// A center is alive when it accepts a connection and answers a login
/// with a wrong password (a good one would let a shared "authenticated"
/// flag through later cases) with anything at all.
fn probe_center(shared: &Shared, center: SocketAddr) -> Result<(), String> {
    let mut session = Session::open(shared, center)?;
    let config = shared.config;
    session.ask(&format!(
        "authenticate {} {}-probe",
        config.username, config.password
    ))?;
    Ok(())
}

/// Whether each doctor that answered at the start still does.
fn doctor_liveness(run: &mut Run, case: &str) -> Option<String> {
    let config = run.config();
    let mut dead = Vec::new();
    for target in &config.doctors {
        if !run.doctors_alive.contains(&target.name) || run.doctors_down.contains_key(&target.name)
        {
            continue;
        }
        if !still_quotes(config, target.addr) {
            dead.push(target.name.clone());
        }
    }
    if dead.is_empty() {
        return None;
    }
    let names = dead.join(" and ");
    let Some(proc) = run.doctor_proc.as_mut() else {
        for name in &dead {
            run.doctors_down.insert(
                name.clone(),
                format!("doctor {name} stopped answering after case '{case}'"),
            );
        }
        return Some(format!(
            "doctor {names} stopped answering after this case (sent '{}' to it {} times)",
            config.plan, 3
        ));
    };
    let death = match proc.wait_for_exit(Duration::from_secs(1)) {
        Some(death) => format!("the doctors ({names}) {death} on case '{case}'"),
        None => {
            proc.kill();
            format!("doctor {names} stopped answering on case '{case}' (killed the doctors)")
        }
    };
    let tail = proc.tail();
    let program = run
        .settings
        .doctor_cmd
        .clone()
        .expect("running doctors have their program");
    match program.start(&[]) {
        Ok(fresh) => {
            run.doctor_proc = Some(fresh);
            Some(format!("{death}{tail}; restarted them"))
        }
        Err(e) => {
            for name in &dead {
                run.doctors_down.insert(
                    name.clone(),
                    format!("the doctors could not be restarted: {e}"),
                );
            }
            Some(format!("{death}{tail}; restarting them failed: {e}"))
        }
    }
}

fn still_quotes(config: &Config, doctor: SocketAddr) -> bool {
    matches!(ask_doctor(config, doctor, &config.plan), Ok(Some(_)))
}

// ---------------------------------------------------------------- cases

fn center_cases(config: &Config) -> Vec<Case<'static>> {
    let mut cases = vec![
        case("auth/bad-password", "auth-failure", Need::Center, |run| {
            bad_password(run)
        }),
        case(
            "auth/unknown-user",
            "auth-failure: unknown user",
            Need::Center,
            unknown_user,
        ),
        case(
            "auth/list-after-failure",
            "after failure: available",
            Need::Center,
            list_after_failure,
        ),
        case(
            "auth/select-after-failure",
            "after failure: selection",
            Need::Center,
            select_after_failure,
        ),
        case("auth/success", "auth-success", Need::Center, |run| {
            judged(run.open().and_then(|mut c| {
                c.log_in()?;
                Ok(c.last_exchange())
            }))
        }),
        case(
            "auth/shared-flag",
            "bad credentials right after another login",
            Need::Center,
            shared_flag,
        ),
        case(
            "auth/second-authenticate",
            "malformed: a second authenticate",
            Need::Center,
            second_authenticate,
        ),
        case("list/format", "list-format", Need::Center, list_format),
        case(
            "book/first",
            "booking (reserves 1 slot)",
            Need::Center,
            booking,
        ),
        case("book/taken", "taken-slot", Need::Center, taken_slot),
        case(
            "race/one-slot",
            format!(
                "race of {} clients for one slot (reserves 1 slot)",
                config.race
            ),
            Need::Center,
            race,
        ),
        case(
            "login/available",
            "before login: available",
            Need::Center,
            before_login_available,
        ),
        case(
            "login/selection",
            "before login: selection",
            Need::Center,
            before_login_selection,
        ),
    ];
    for m in malformed_messages(config.framing.dialect) {
        let (id, name) = (
            format!("malformed/{}", m.id),
            format!("malformed: {}", m.name),
        );
        cases.push(case(id, name, Need::Center, move |run| malformed(run, &m)));
    }
    cases.push(case(
        "session/normal",
        "still serves a normal session",
        Need::Center,
        |run| {
            judged(run.open().and_then(|mut c| {
                c.list()?;
                Ok(c.last_exchange())
            }))
        },
    ));
    cases
}

/// A wrong password gets a refusal (any word), and the center closes.
fn bad_password(run: &mut Run) -> Outcome {
    let config = run.config();
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    c.detect_greeting();
    let wrong = format!("{}-wrong", config.password);
    let (reading, _) = match c.authenticate(&config.username, &wrong) {
        Ok(answer) => answer,
        Err(e) => return fail(e),
    };
    match reading {
        Reading::Failure | Reading::Error => {}
        Reading::Success => {
            c.log.push("a wrong password was let in".into());
            return fail(c.evidence());
        }
        _ => {
            c.log.push("expected 'failure'".into());
            return warn(c.evidence());
        }
    }
    if c.closes() {
        run.shared.note(Word::Close, true, String::new);
        c.log.push("then the center closed".into());
    } else {
        run.shared.note(Word::Close, false, || {
            format!("the connection was still open {CLOSE_WAIT:?} after 'failure'")
        });
        c.log.push(format!(
            "the connection was still open {CLOSE_WAIT:?} after 'failure'"
        ));
    }
    pass(c.last_exchange())
}

fn unknown_user(run: &mut Run) -> Outcome {
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.authenticate("medsim-check-nobody", "nothing") {
        Ok((Reading::Failure | Reading::Error, _)) => pass(c.last_exchange()),
        Ok((Reading::Success, _)) => {
            c.log.push("an unknown user was let in".into());
            fail(c.evidence())
        }
        Ok(_) => {
            c.log.push("expected 'failure'".into());
            warn(c.evidence())
        }
        Err(e) => fail(e),
    }
}

/// After `failure`, a center that did not close lists nothing.
fn list_after_failure(run: &mut Run) -> Outcome {
    let config = run.config();
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let wrong = format!("{}-wrong", config.password);
    match c.authenticate(&config.username, &wrong) {
        Ok((Reading::Success, _)) => {
            c.log.push("a wrong password was let in".into());
            return fail(c.evidence());
        }
        Ok(_) => {}
        Err(e) => return fail(e),
    }
    match c.ask("available") {
        Ok(answer) => match read(&answer) {
            Reading::List(_) => {
                c.log
                    .push("slots listed to a session whose login failed".into());
                fail(c.evidence())
            }
            Reading::Error | Reading::Failure | Reading::NotAvailable => pass(c.last_exchange()),
            _ => warn(format!("{}, expected 'error ...'", c.evidence())),
        },
        // Closed or silent: nothing listed.
        Err(_) => pass(c.evidence()),
    }
}

/// After `failure`, a center that did not close books nothing.
fn select_after_failure(run: &mut Run) -> Outcome {
    let config = run.config();
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let wrong = format!("{}-wrong", config.password);
    match c.authenticate(&config.username, &wrong) {
        Ok((Reading::Success, _)) => {
            c.log.push("a wrong password was let in".into());
            return fail(c.evidence());
        }
        Ok(_) => {}
        Err(e) => return fail(e),
    }
    // Ask for the list, as a client would; a list names a slot to try.
    let target = match c.ask("available") {
        Ok(answer) => match read(&answer) {
            Reading::List(indexes) => indexes.last().copied().unwrap_or(1),
            _ => 1,
        },
        Err(_) => {
            c.log
                .push("so nothing can be selected in a session whose login failed".into());
            return pass(c.evidence());
        }
    };
    match c.select(target) {
        Ok((Reading::Grant, _)) => {
            c.log.push(format!(
                "slot {target} booked by a session whose login failed"
            ));
            fail(c.evidence())
        }
        Ok(_) | Err(_) => pass(c.evidence()),
    }
}

/// Bad credentials in a new session, while another session is logged in,
/// are refused: no "authenticated" flag shared across sessions.
fn shared_flag(run: &mut Run) -> Outcome {
    let config = run.config();
    let mut good = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = good.log_in() {
        return fail(format!("the first session: {e}"));
    }
    let mut bad = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let wrong = format!("{}-wrong", config.password);
    let outcome = match bad.authenticate("medsim-check-nobody", &wrong) {
        Ok((Reading::Success, _)) => {
            bad.log.push(
                "an unknown user was let in while another session was logged in \
                 (an 'authenticated' flag shared by all sessions?)"
                    .into(),
            );
            fail(bad.evidence())
        }
        Ok(_) => match bad.ask("available") {
            Ok(answer) if matches!(read(&answer), Reading::List(_)) => {
                bad.log.push(
                    "slots listed to a session whose login failed, while another \
                     session was logged in"
                        .into(),
                );
                fail(bad.evidence())
            }
            _ => pass(format!(
                "another session logged in; {}",
                bad.log[..2.min(bad.log.len())].join(", ")
            )),
        },
        Err(e) => fail(e),
    };
    drop(good);
    outcome
}

fn second_authenticate(run: &mut Run) -> Outcome {
    let config = run.config();
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = c.log_in() {
        return fail(e);
    }
    match c.ask(&format!(
        "authenticate {} {}",
        config.username, config.password
    )) {
        Ok(answer) if read(&answer) == Reading::Error => pass(c.last_exchange()),
        Ok(_) | Err(_) => warn(format!("{}, expected 'error ...'", c.evidence())),
    }
}

fn list_format(run: &mut Run) -> Outcome {
    let outcome = run.open().and_then(|mut c| {
        let listed = c.list()?;
        if listed.is_none() {
            c.log
                .push("(no free slot: 'notavailable' is the right answer)".into());
        }
        Ok((listed, c.last_exchange()))
    });
    match outcome {
        Ok((listed, evidence)) => {
            run.listed = Some(listed.unwrap_or_default());
            pass(evidence)
        }
        Err(e) => fail(e),
    }
}

/// Books the lowest listed slot.
fn booking(run: &mut Run) -> Outcome {
    let index = match run.free_now() {
        Ok(Some(listed)) if !listed.is_empty() => listed[0],
        Ok(_) => return skip("no free slot listed to book"),
        Err(e) => return fail(e),
    };
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = c.list() {
        return fail(e);
    }
    match c.select(index) {
        Ok((Reading::Grant, answer)) => {
            run.booked = Some(Booked {
                index,
                doctor: strict_assignment(&answer).or_else(
                    || match protocol::parse_selection_answer(&answer) {
                        Ok(SelectionAnswer::Assigned {
                            doctor: Some(d),
                            port,
                        }) => Some((d, port)),
                        _ => None,
                    },
                ),
                answer,
            });
            run.restarted = false;
            pass(c.last_exchange())
        }
        Ok((Reading::NotAvailable, _)) => {
            c.log.push("a listed slot was refused".into());
            fail(c.evidence())
        }
        Ok(_) => {
            c.log.push("expected 'DOCTOR PORT'".into());
            fail(c.evidence())
        }
        Err(e) => fail(e),
    }
}

/// The booked slot is not listed again, and nobody else gets it.
fn taken_slot(run: &mut Run) -> Outcome {
    let Some(booked) = run.booked.clone() else {
        return skip("no slot was booked");
    };
    if run.restarted {
        return skip("the center was restarted (fresh state) since the booking");
    }
    let index = booked.index;
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.list() {
        Ok(Some(listed)) if listed.contains(&index) => {
            c.log
                .push(format!("slot {index}, reserved, is listed again"));
            return fail(c.evidence());
        }
        Ok(Some(_)) => {}
        // Nothing free: the session is over, and the slot was not listed.
        Ok(None) => return pass(format!("{}; slot {index} not listed", c.last_exchange())),
        Err(e) => return fail(e),
    }
    match c.select(index) {
        Ok((Reading::Grant, answer)) => fail(format!(
            "DOUBLE BOOKING: slot {index} given to 2 clients (the booking got '{}', \
             a later session got '{}')",
            quote(&booked.answer),
            quote(&answer)
        )),
        Ok((Reading::NotAvailable, _)) => pass(c.last_exchange()),
        Ok(_) => warn(format!("{}, expected 'notavailable'", c.evidence())),
        Err(e) => warn(format!("{e}, expected 'notavailable'")),
    }
}

/// What one racer got for its selection.
enum RaceResult {
    Won(String),
    Lost,
    Other(String),
}

/// K clients log in and list (spread over every center given), then all
/// select one free slot at once: exactly one may be granted it, by any
/// reading of a grant.
fn race(run: &mut Run) -> Outcome {
    let config = run.config();
    let index = match run.free_now() {
        Ok(Some(listed)) if !listed.is_empty() => listed[0],
        Ok(_) => return skip("no free slot left to race for"),
        Err(e) => return fail(e),
    };
    let barrier = Barrier::new(config.race);
    let (shared, centers) = (run.shared, &run.centers);
    let results: Vec<RaceResult> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..config.race)
            .map(|k| {
                let barrier = &barrier;
                let center = centers[k % centers.len()];
                scope.spawn(move || {
                    let ready = Session::open(shared, center).and_then(|mut c| {
                        c.list()?;
                        Ok(c)
                    });
                    // Everyone waits at the barrier, ready or not, so no
                    // racer is left waiting for one that failed.
                    barrier.wait();
                    let mut c = match ready {
                        Ok(c) => c,
                        Err(evidence) => return RaceResult::Other(evidence),
                    };
                    match c.select(index) {
                        Ok((Reading::Grant, answer)) => RaceResult::Won(answer),
                        Ok((Reading::NotAvailable, _)) => RaceResult::Lost,
                        Ok((_, answer)) => RaceResult::Other(format!("got '{}'", shown(&answer))),
                        Err(evidence) => RaceResult::Other(evidence),
                    }
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| RaceResult::Other("the racer thread panicked".into()))
            })
            .collect()
    });
    let (mut winners, mut losers, mut others) = (Vec::new(), 0, Vec::new());
    for (k, result) in results.iter().enumerate() {
        match result {
            RaceResult::Won(answer) => {
                winners.push(format!("client {} got '{}'", k + 1, quote(answer)));
            }
            RaceResult::Lost => losers += 1,
            RaceResult::Other(what) => others.push(format!("client {}: {what}", k + 1)),
        }
    }
    let mut evidence = if winners.len() > 1 {
        format!(
            "DOUBLE BOOKING: slot {index} given to {} clients ({}); {losers} got 'notavailable'",
            winners.len(),
            winners.join(", "),
        )
    } else {
        format!(
            "slot {index}: {} granted ({}), {losers} got 'notavailable'",
            winners.len(),
            winners.join(", ")
        )
    };
    if !others.is_empty() {
        evidence.push_str(&format!(
            "; {} other: {}",
            others.len(),
            others
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if winners.len() == 1 && others.is_empty() {
        pass(evidence)
    } else if winners.len() == 1 {
        warn(evidence)
    } else {
        fail(evidence)
    }
}

fn before_login_available(run: &mut Run) -> Outcome {
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.ask("available") {
        Ok(answer) => match read(&answer) {
            Reading::Error => pass(c.last_exchange()),
            Reading::List(_) => {
                c.log
                    .push("slots listed on a connection that never logged in".into());
                fail(c.evidence())
            }
            _ => warn(format!("{}, expected 'error ...'", c.evidence())),
        },
        Err(e) => warn(format!("{e}, expected 'error ...'")),
    }
}

fn before_login_selection(run: &mut Run) -> Outcome {
    let free = run.free_now().ok().flatten().unwrap_or_default();
    let target = free.last().copied().unwrap_or(1);
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.select(target) {
        Ok((Reading::Grant, _)) => {
            c.log.push(format!(
                "slot {target} booked on a connection that never logged in"
            ));
            fail(c.evidence())
        }
        Ok((Reading::Error, _)) => {
            if free.contains(&target) {
                let after = run.free_now().ok().flatten().unwrap_or_default();
                if !after.contains(&target) {
                    c.log.push(format!(
                        "slot {target} was free before and is no longer listed: reserved without login"
                    ));
                    return fail(c.evidence());
                }
                c.log.push(format!("slot {target} is still listed"));
            }
            pass(c.last_exchange())
        }
        Ok(_) => warn(format!("{}, expected 'error ...'", c.evidence())),
        Err(e) => warn(format!("{e}, expected 'error ...'")),
    }
}

/// A malformed message, and how far its session gets before sending it.
struct Malformed {
    id: &'static str,
    name: &'static str,
    after: Stage,
    bad: Bad,
}

/// How far a session goes, correctly, before its malformed message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connected,
    Listed,
}

enum Bad {
    /// Text framed in the session's dialect.
    Text(String),
    /// Bytes sent as they are, with a name for the evidence.
    Bytes(&'static str, Vec<u8>),
}

fn malformed_messages(dialect: Dialect) -> Vec<Malformed> {
    let terminator: &[u8] = match dialect {
        Dialect::Line => b"\n",
        Dialect::Classic => b"\0",
    };
    let mut long = vec![b'a'; 64 * 1024];
    long.extend_from_slice(terminator);
    let mut not_utf8 = b"authenticate \xff\xfe x".to_vec();
    not_utf8.extend_from_slice(terminator);
    let text = |id, name, after, text: &str| Malformed {
        id,
        name,
        after,
        bad: Bad::Text(text.to_owned()),
    };
    vec![
        text("empty", "empty message", Stage::Connected, ""),
        text(
            "unknown-command",
            "unknown command",
            Stage::Connected,
            "hello",
        ),
        text(
            "authenticate-0-args",
            "authenticate with no arguments",
            Stage::Connected,
            "authenticate",
        ),
        text(
            "authenticate-1-arg",
            "authenticate with 1 argument",
            Stage::Connected,
            "authenticate someone",
        ),
        text(
            "authenticate-3-args",
            "authenticate with 3 arguments",
            Stage::Connected,
            "authenticate a b c",
        ),
        text(
            "selection-abc",
            "selection abc",
            Stage::Listed,
            "selection abc",
        ),
        text("selection-0", "selection 0", Stage::Listed, "selection 0"),
        text(
            "selection-negative",
            "selection -1",
            Stage::Listed,
            "selection -1",
        ),
        text(
            "selection-64-bits",
            "selection past 64 bits",
            Stage::Listed,
            "selection 99999999999999999999",
        ),
        Malformed {
            id: "selection-missing",
            name: "selection of an index that does not exist",
            after: Stage::Listed,
            bad: Bad::Text(format!("selection {MISSING_INDEX}")),
        },
        Malformed {
            id: "64k",
            name: "64 KiB message",
            after: Stage::Connected,
            bad: Bad::Bytes("64 KiB of 'a'", long),
        },
        Malformed {
            id: "not-utf8",
            name: "bytes that are not UTF-8",
            after: Stage::Connected,
            bad: Bad::Bytes("'authenticate \\xff\\xfe x'", not_utf8),
        },
    ]
}

/// A malformed message, in a session of its own, gets `error ...`; a
/// login, a list or a grant for it fails, any other answer warns.
fn malformed(run: &mut Run, case: &Malformed) -> Outcome {
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if case.after == Stage::Listed {
        match c.list() {
            Ok(Some(listed)) if !listed.is_empty() => {}
            Ok(_) => {
                return skip(
                    "no free slot: the center answers 'notavailable' and closes, \
                     so no selection can follow",
                );
            }
            Err(e) => return fail(e),
        }
    }
    let answer = match &case.bad {
        Bad::Text(text) => c.ask(text),
        Bad::Bytes(what, bytes) => c.ask_bytes(what, bytes),
    };
    match answer {
        Ok(answer) => match read(&answer) {
            Reading::Error => pass(c.last_exchange()),
            Reading::Success if case.after == Stage::Connected => {
                c.log.push("let in without valid credentials".into());
                fail(c.evidence())
            }
            Reading::List(_) if case.after == Stage::Connected => {
                c.log
                    .push("slots listed on a connection that never logged in".into());
                fail(c.evidence())
            }
            Reading::Grant => {
                c.log.push("a slot granted for it".into());
                fail(c.evidence())
            }
            _ => warn(format!("{}, expected 'error ...'", c.evidence())),
        },
        Err(e) => warn(format!("{e}, expected 'error ...'")),
    }
}

/// One case per kind of wording: PASS when every answer of that kind had
/// PROTOCOL.md's words, WARN with the first departure, SKIP when none came.
fn wording_cases() -> Vec<Case<'static>> {
    Word::ALL
        .into_iter()
        .map(|word| {
            case(word.id(), word.name(), Need::Nothing, move |run| {
                let wording = run.shared.wording.lock();
                match wording.get(&word) {
                    Some(Seen {
                        departure: Some((evidence, case)),
                        departures,
                        ..
                    }) => warn(format!(
                        "{evidence} (first in case '{case}'; {departures} such answers); {}",
                        word.rule()
                    )),
                    Some(seen) => pass(format!("as PROTOCOL.md says ({} seen)", seen.conforming)),
                    None => skip("no such answer was seen"),
                }
            })
        })
        .collect()
}

/// Each doctor quotes the plan (its table's cost, when known) and does not
/// answer an unknown plan with a cost.
fn doctor_cases(run: &Run) -> Vec<Case<'static>> {
    let config = run.config();
    let mut targets = config.doctors.clone();
    // The doctor the center assigned is asked too, at the port it gave.
    if let Some(Booked {
        doctor: Some((name, port)),
        ..
    }) = &run.booked
        && !targets.iter().any(|t| &t.name == name)
        && let Ok(addr) = net::resolve(&net::host_port(&config.doctor_host, *port))
    {
        targets.push(DoctorTarget {
            name: name.clone(),
            addr,
            expected: None,
        });
    }
    let mut cases = Vec::new();
    for target in targets {
        let plan = config.plan.clone();
        let quoted = target.clone();
        cases.push(case(
            format!("doctor/{}/quote", target.name),
            format!("{} quotes {plan}", target.name),
            Need::Doctor(target.name.clone()),
            move |run| quote_case(run.config(), &quoted),
        ));
        let refused = target.clone();
        cases.push(case(
            format!("doctor/{}/unknown-plan", target.name),
            format!("{} refuses an unknown plan", target.name),
            Need::Doctor(target.name.clone()),
            move |run| unknown_plan_case(run, &refused),
        ));
    }
    cases
}

fn quote_case(config: &Config, target: &DoctorTarget) -> Outcome {
    let plan = &config.plan;
    match ask_doctor(config, target.addr, plan) {
        Ok(Some(answer)) => match (protocol::parse_quote_answer(&answer), target.expected) {
            (Ok(protocol::QuoteAnswer::Cost(cost)), Some(expected)) if cost != expected => fail(
                format!("sent '{plan}', got '{answer}', expected {expected} from its table"),
            ),
            (Ok(protocol::QuoteAnswer::Cost(_)), _)
                if answer.bytes().all(|b| b.is_ascii_digit()) =>
            {
                pass(format!("sent '{plan}', got '{answer}'"))
            }
            (Ok(protocol::QuoteAnswer::Cost(_)), _) => warn(format!(
                "sent '{plan}', got '{}': a cost, but PROTOCOL.md's is a whole number alone",
                quote(&answer)
            )),
            _ => fail(format!(
                "sent '{plan}', got '{}', expected a cost",
                quote(&answer)
            )),
        },
        Ok(None) => fail(format!(
            "sent '{plan}' to {} three times, no answer",
            target.addr
        )),
        Err(e) => fail(format!("asking {}: {e}", target.addr)),
    }
}

fn unknown_plan_case(run: &Run, target: &DoctorTarget) -> Outcome {
    let config = run.config();
    if !run.doctors_alive.contains(&target.name) {
        return skip(format!(
            "{} did not answer '{}' at the start, so silence here would prove nothing",
            target.name, config.plan
        ));
    }
    match ask_doctor(config, target.addr, UNKNOWN_PLAN) {
        Ok(Some(answer)) => match protocol::parse_quote_answer(&answer) {
            Ok(protocol::QuoteAnswer::Cost(_)) => fail(format!(
                "sent '{UNKNOWN_PLAN}', got a cost: '{}'",
                quote(&answer)
            )),
            Ok(protocol::QuoteAnswer::Error(_)) => {
                pass(format!("sent '{UNKNOWN_PLAN}', got '{}'", quote(&answer)))
            }
            Err(_) => warn(format!(
                "sent '{UNKNOWN_PLAN}', got '{}', expected 'error ...' or silence",
                quote(&answer)
            )),
        },
        // The liveness check after this case tells a drop from a death.
        Ok(None) => pass(format!("sent '{UNKNOWN_PLAN}', no answer (dropped)")),
        Err(e) => fail(format!("asking {}: {e}", target.addr)),
    }
}

/// Sends `plan` up to three times; the first answer, cut at its NUL or
/// final newline, or `None` after silence.
fn ask_doctor(config: &Config, doctor: SocketAddr, plan: &str) -> std::io::Result<Option<String>> {
    let retries = Retries {
        wait: (config.timeout / 3).max(Duration::from_millis(100)),
        attempts: 3,
    };
    let quoted =
        DoctorLink::open(doctor)?.quote(plan, config.framing, retries, None, &mut || {})?;
    Ok(match quoted.reply {
        DoctorReply::Text(text) => Some(text),
        DoctorReply::Empty => Some(String::new()),
        DoctorReply::Undecodable(e) => Some(format!("(undecodable: {e})")),
        DoctorReply::Silent => None,
    })
}
