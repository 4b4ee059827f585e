//! `medsim check`: named conformance and race cases run against a live
//! system (medsim's own or any other implementation of PROTOCOL.md), each
//! reported PASS, FAIL or SKIP with its evidence: what was sent and what
//! came back.
//!
//! This module owns the cases, their order, the slots they need, and the
//! report. The cases hold the center to PROTOCOL.md's exact words (a
//! capitalised `Success` fails here, though medsim's patient tolerates it).
//! Connections and framing are the patient's ([`CenterLink`]); the doctors
//! are asked over plain UDP here, since a case wants to see a wrong answer
//! rather than retry past it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::data::{Fixtures, Patient, Source};
use crate::patient::{CenterLink, Framing, NoAnswer};
use crate::protocol::{self, Dialect, words};

/// A plan no doctor should know.
pub const UNKNOWN_PLAN: &str = "medsim-check-no-such-plan";
/// An index no center should have.
const MISSING_INDEX: u64 = 999_999_999;
/// How long a closed-after-failure connection may take to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not run: what it needs is not there (e.g. no free slot left).
    Skip,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        })
    }
}

/// One case's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub verdict: Verdict,
    /// What was sent and what came back, or why it was skipped.
    pub evidence: String,
}

/// What to check, and how to reach it.
#[derive(Debug, Clone)]
pub struct Config {
    pub center: SocketAddr,
    /// The host the center's `DOCTOR PORT` answers refer to.
    pub doctor_host: String,
    pub dialect: Dialect,
    pub classic_buffer: Option<usize>,
    pub username: String,
    pub password: String,
    /// The plan the doctors are asked about.
    pub plan: String,
    /// Clients racing for one slot.
    pub race: usize,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// The doctors to ask, by name, and the cost each should quote for
    /// `plan` when the data says.
    pub doctors: Vec<DoctorTarget>,
}

/// A doctor the checker asks for quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorTarget {
    pub name: String,
    pub addr: SocketAddr,
    /// The cost its table gives for the plan, when known.
    pub expected: Option<u64>,
}

/// Slots the cases reserve, by case: the checker needs no more free slots
/// than these add up to.
pub const RESERVES: [(&str, usize); 2] = [("booking", 1), ("race", 1)];

/// Everything a check found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Findings {
    /// Free slots the center listed before any case reserved one.
    pub listed_free: usize,
    pub cases: Vec<CaseResult>,
}

impl Findings {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.cases.iter().filter(|c| c.verdict == verdict).count()
    }
}

/// One conversation with the center, in the configured dialect.
struct Conversation {
    link: CenterLink,
    /// What was sent and received so far, for evidence.
    log: Vec<String>,
}

impl Conversation {
    fn open(config: &Config) -> Result<Conversation, String> {
        CenterLink::connect(
            config.center,
            config.dialect,
            config.classic_buffer,
            config.timeout,
        )
        .map(|link| Conversation {
            link,
            log: Vec::new(),
        })
        .map_err(|e| format!("cannot connect to {}: {e}", config.center))
    }

    /// Sends `text` framed, and returns the answer (or why none came).
    fn ask(&mut self, text: &str) -> Result<String, String> {
        self.log.push(format!("sent '{}'", shown(text)));
        if let Err(e) = self.link.send_text(text) {
            self.log.push(format!("send failed: {e}"));
            return Err(self.evidence());
        }
        self.receive()
    }

    /// Sends raw bytes, unframed, and returns the answer.
    fn ask_bytes(&mut self, what: &str, bytes: &[u8]) -> Result<String, String> {
        self.log.push(format!("sent {what}"));
        if let Err(e) = self.link.send_bytes(bytes) {
            self.log.push(format!("send failed: {e}"));
            return Err(self.evidence());
        }
        self.receive()
    }

    fn receive(&mut self) -> Result<String, String> {
        match self.link.answer() {
            Ok(answer) => {
                self.log.push(format!("got '{}'", quote(&answer)));
                Ok(answer)
            }
            Err(why) => {
                self.log.push(describe(&why));
                Err(self.evidence())
            }
        }
    }

    /// Logs in with the configured credentials; the answer must be exactly
    /// `success`.
    fn log_in(&mut self, config: &Config) -> Result<(), String> {
        let answer = self.ask(&format!(
            "authenticate {} {}",
            config.username, config.password
        ))?;
        if answer != words::SUCCESS {
            self.log.push("expected 'success'".into());
            return Err(self.evidence());
        }
        Ok(())
    }

    /// Logs in and lists; the listed indexes, empty for `notavailable`.
    fn list(&mut self, config: &Config) -> Result<Vec<u64>, String> {
        self.log_in(config)?;
        let answer = self.ask("available")?;
        if answer == words::NOT_AVAILABLE {
            return Ok(Vec::new());
        }
        strict_listing(&answer).map_err(|why| {
            self.log.push(why);
            self.evidence()
        })
    }

    /// Waits for the center to close; true if it did within [`CLOSE_WAIT`].
    fn closes(&mut self) -> bool {
        if self.link.set_answer_timeout(CLOSE_WAIT).is_err() {
            return false;
        }
        let started = Instant::now();
        while started.elapsed() < CLOSE_WAIT {
            match self.link.answer() {
                Err(NoAnswer::Closed | NoAnswer::Failed(_)) => return true,
                Err(NoAnswer::TimedOut) => return false,
                // A stray answer: keep waiting for the close.
                Ok(_) | Err(NoAnswer::TooLong) => {}
            }
        }
        false
    }

    /// Everything sent and received: the evidence of a failure.
    fn evidence(&self) -> String {
        self.log.join(", ")
    }

    /// The last message sent and what came of it: enough for a pass.
    fn last_exchange(&self) -> String {
        self.log[self.log.len().saturating_sub(2)..].join(", ")
    }
}

fn describe(why: &NoAnswer) -> String {
    match why {
        NoAnswer::Closed => "the center closed the connection without answering".into(),
        NoAnswer::TimedOut => "no answer in time".into(),
        NoAnswer::TooLong => "an answer too long to be one".into(),
        NoAnswer::Failed(e) => format!("reading failed: {e}"),
    }
}

/// Text as evidence shows it: passwords masked, long text shortened.
fn shown(text: &str) -> String {
    quote(&crate::trace::mask_password(text))
}

/// Peer text as evidence quotes it: one line, long enough to read.
fn quote(text: &str) -> String {
    protocol::shorten_to(text, 48)
}

/// PROTOCOL.md's list exactly: `INDEX DAY TIME` triples separated by single
/// spaces, indexes positive and rising. Returns the indexes.
fn strict_listing(answer: &str) -> Result<Vec<u64>, String> {
    let words: Vec<&str> = answer.split(' ').collect();
    if words.iter().any(|w| w.is_empty()) || !words.len().is_multiple_of(3) {
        return Err(format!(
            "expected 'INDEX DAY TIME' triples separated by single spaces ({} words)",
            words.len()
        ));
    }
    let mut indexes = Vec::with_capacity(words.len() / 3);
    for triple in words.chunks_exact(3) {
        let index = protocol::parse_index(triple[0])
            .map_err(|_| format!("'{}' is not a slot index", quote(triple[0])))?;
        if indexes.last().is_some_and(|&last| last >= index) {
            return Err(format!("index {index} is out of order"));
        }
        indexes.push(index);
    }
    Ok(indexes)
}

/// `DOCTOR PORT` exactly; returns both.
fn strict_assignment(answer: &str) -> Option<(String, u16)> {
    let (doctor, port) = answer.split_once(' ')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!doctor.is_empty() && !doctor.contains(' ')).then(|| (doctor.to_owned(), port))
}

/// Collects results as the cases run.
struct Run<'a> {
    config: &'a Config,
    cases: Vec<CaseResult>,
}

impl Run<'_> {
    fn record(&mut self, name: impl Into<String>, verdict: Verdict, evidence: impl Into<String>) {
        self.cases.push(CaseResult {
            name: name.into(),
            verdict,
            evidence: evidence.into(),
        });
    }

    fn pass_or_fail(&mut self, name: &str, outcome: Result<String, String>) {
        match outcome {
            Ok(evidence) => self.record(name, Verdict::Pass, evidence),
            Err(evidence) => self.record(name, Verdict::Fail, evidence),
        }
    }
}

/// Runs every case, in an order that keeps the slots they reserve apart.
pub fn check(config: &Config) -> Findings {
    let mut run = Run {
        config,
        cases: Vec::new(),
    };
    auth_success(&mut run);
    auth_failure(&mut run);
    let listed = list_format(&mut run);
    let booked = booking(&mut run, &listed);
    taken_slot(&mut run, booked.as_ref());
    race(&mut run);
    unauthenticated(&mut run);
    malformed(&mut run);
    still_serves(&mut run);
    doctors(&mut run, booked.as_ref());
    Findings {
        listed_free: listed.len(),
        cases: run.cases,
    }
}

fn auth_success(run: &mut Run) {
    let outcome = Conversation::open(run.config).and_then(|mut c| {
        c.log_in(run.config)?;
        Ok(c.last_exchange())
    });
    run.pass_or_fail("auth-success", outcome);
}

fn auth_failure(run: &mut Run) {
    let config = run.config;
    let outcome = Conversation::open(config).and_then(|mut c| {
        let wrong = format!("{}-wrong", config.password);
        let answer = c.ask(&format!("authenticate {} {wrong}", config.username))?;
        if answer != words::FAILURE {
            c.log.push("expected 'failure'".into());
            return Err(c.evidence());
        }
        if !c.closes() {
            c.log.push(format!(
                "the connection was still open {CLOSE_WAIT:?} after 'failure'"
            ));
            return Err(c.evidence());
        }
        c.log.push("then the center closed".into());
        Ok(c.last_exchange())
    });
    run.pass_or_fail("auth-failure", outcome);
}

/// The list's format; returns the free indexes listed.
fn list_format(run: &mut Run) -> Vec<u64> {
    let mut listed = Vec::new();
    let outcome = Conversation::open(run.config).and_then(|mut c| {
        listed = c.list(run.config)?;
        if listed.is_empty() {
            c.log
                .push("(no free slot: 'notavailable' is the right answer)".into());
        }
        Ok(c.last_exchange())
    });
    run.pass_or_fail("list-format", outcome);
    listed
}

/// Books the lowest listed slot; returns it with its assignment.
fn booking(run: &mut Run, listed: &[u64]) -> Option<(u64, String, u16)> {
    let Some(&index) = listed.first() else {
        run.record("booking", Verdict::Skip, "no free slot listed to book");
        return None;
    };
    let mut booked = None;
    let outcome = Conversation::open(run.config).and_then(|mut c| {
        c.list(run.config)?;
        let answer = c.ask(&format!("selection {index}"))?;
        match strict_assignment(&answer) {
            Some((doctor, port)) => {
                booked = Some((index, doctor, port));
                Ok(c.last_exchange())
            }
            None => {
                c.log.push("expected 'DOCTOR PORT'".into());
                Err(c.evidence())
            }
        }
    });
    run.pass_or_fail("booking (reserves 1 slot)", outcome);
    booked
}

/// The slot just booked is no longer listed, and selecting it again is
/// `notavailable`.
fn taken_slot(run: &mut Run, booked: Option<&(u64, String, u16)>) {
    let Some(&(index, _, _)) = booked else {
        run.record("taken-slot", Verdict::Skip, "no slot was booked");
        return;
    };
    let outcome = Conversation::open(run.config).and_then(|mut c| {
        let listed = c.list(run.config)?;
        if listed.contains(&index) {
            c.log.push(format!("slot {index}, booked, is still listed"));
            return Err(c.evidence());
        }
        let answer = c.ask(&format!("selection {index}"))?;
        if answer != words::NOT_AVAILABLE {
            c.log.push(format!("expected '{}'", words::NOT_AVAILABLE));
            return Err(c.evidence());
        }
        Ok(c.last_exchange())
    });
    run.pass_or_fail("taken-slot", outcome);
}

/// What one racer got for its selection.
enum RaceResult {
    Won(String),
    Lost,
    Other(String),
}

/// K clients log in and list, then all select one free slot at once:
/// exactly one may get `DOCTOR PORT`.
fn race(run: &mut Run) {
    let config = run.config;
    let name = format!(
        "race of {} clients for one slot (reserves 1 slot)",
        config.race
    );
    let target = Conversation::open(config).and_then(|mut c| c.list(config));
    let index = match target {
        Ok(listed) => match listed.first() {
            Some(&index) => index,
            None => return run.record(name, Verdict::Skip, "no free slot left to race for"),
        },
        Err(evidence) => return run.record(name, Verdict::Fail, evidence),
    };
    let barrier = Barrier::new(config.race);
    let results: Vec<RaceResult> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..config.race)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let ready = Conversation::open(config).and_then(|mut c| {
                        c.list(config)?;
                        Ok(c)
                    });
                    // Everyone waits at the barrier, ready or not, so no
                    // racer is left waiting for one that failed.
                    barrier.wait();
                    let mut c = match ready {
                        Ok(c) => c,
                        Err(evidence) => return RaceResult::Other(evidence),
                    };
                    match c.ask(&format!("selection {index}")) {
                        Ok(answer) if strict_assignment(&answer).is_some() => {
                            RaceResult::Won(answer)
                        }
                        Ok(answer) if answer == words::NOT_AVAILABLE => RaceResult::Lost,
                        Ok(answer) => RaceResult::Other(format!("got '{}'", shown(&answer))),
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
            RaceResult::Won(answer) => winners.push(format!("client {} got '{answer}'", k + 1)),
            RaceResult::Lost => losers += 1,
            RaceResult::Other(what) => others.push(format!("client {}: {what}", k + 1)),
        }
    }
    let mut evidence = format!(
        "slot {index}: {} got 'DOCTOR PORT', {losers} got '{}'",
        winners.len(),
        words::NOT_AVAILABLE
    );
    if winners.len() > 1 {
        evidence = format!(
            "DOUBLE BOOKING: slot {index} given to {} clients ({}); {losers} got '{}'",
            winners.len(),
            winners.join(", "),
            words::NOT_AVAILABLE
        );
    }
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
    let ok = winners.len() == 1 && losers == config.race - 1;
    run.record(
        name,
        if ok { Verdict::Pass } else { Verdict::Fail },
        evidence,
    );
}

/// `available` and `selection` before logging in get `error`, and nothing
/// is reserved for such a session.
fn unauthenticated(run: &mut Run) {
    let config = run.config;
    let free = Conversation::open(config)
        .and_then(|mut c| c.list(config))
        .unwrap_or_default();
    let outcome = Conversation::open(config).and_then(|mut c| {
        let answer = c.ask("available")?;
        expect_error(&mut c, &answer)?;
        Ok(c.last_exchange())
    });
    run.pass_or_fail("before login: available", outcome);

    let target = free.last().copied().unwrap_or(1);
    let outcome = Conversation::open(config).and_then(|mut c| {
        let answer = c.ask(&format!("selection {target}"))?;
        expect_error(&mut c, &answer)?;
        if free.contains(&target) {
            let after = Conversation::open(config)
                .and_then(|mut c| c.list(config))
                .unwrap_or_default();
            if !after.contains(&target) {
                c.log.push(format!(
                    "slot {target} was free before and is no longer listed: reserved without login"
                ));
                return Err(c.evidence());
            }
            c.log.push(format!("slot {target} is still listed"));
        }
        Ok(c.last_exchange())
    });
    run.pass_or_fail("before login: selection", outcome);
}

/// The answer must be `error ...`.
fn expect_error(c: &mut Conversation, answer: &str) -> Result<(), String> {
    let is_error = answer == "error" || answer.starts_with("error ");
    if !is_error {
        c.log.push("expected 'error ...'".into());
        return Err(c.evidence());
    }
    Ok(())
}

/// A malformed message, and how far its session gets before sending it.
struct Malformed {
    name: &'static str,
    after: Stage,
    bad: Bad,
}

/// How far a session goes, correctly, before its malformed message.
#[derive(Clone, Copy)]
enum Stage {
    Connected,
    LoggedIn,
    Listed,
}

enum Bad {
    /// Text framed in the session's dialect.
    Text(String),
    /// The configured login again.
    LoginAgain,
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
    let case = |name, after, text: &str| Malformed {
        name,
        after,
        bad: Bad::Text(text.to_owned()),
    };
    vec![
        case("empty message", Stage::Connected, ""),
        case("unknown command", Stage::Connected, "hello"),
        case(
            "authenticate with no arguments",
            Stage::Connected,
            "authenticate",
        ),
        case(
            "authenticate with 1 argument",
            Stage::Connected,
            "authenticate someone",
        ),
        case(
            "authenticate with 3 arguments",
            Stage::Connected,
            "authenticate a b c",
        ),
        Malformed {
            name: "a second authenticate",
            after: Stage::LoggedIn,
            bad: Bad::LoginAgain,
        },
        case("selection abc", Stage::Listed, "selection abc"),
        case("selection 0", Stage::Listed, "selection 0"),
        case("selection -1", Stage::Listed, "selection -1"),
        case(
            "selection past 64 bits",
            Stage::Listed,
            "selection 99999999999999999999",
        ),
        Malformed {
            name: "selection of an index that does not exist",
            after: Stage::Listed,
            bad: Bad::Text(format!("selection {MISSING_INDEX}")),
        },
        Malformed {
            name: "64 KiB message",
            after: Stage::Connected,
            bad: Bad::Bytes("64 KiB of 'a'", long),
        },
        Malformed {
            name: "bytes that are not UTF-8",
            after: Stage::Connected,
            bad: Bad::Bytes("'authenticate \\xff\\xfe x'", not_utf8),
        },
    ]
}

/// Each malformed message, in a session of its own, gets `error ...`.
fn malformed(run: &mut Run) {
    let config = run.config;
    let login = format!("authenticate {} {}", config.username, config.password);
    for case in malformed_messages(config.dialect) {
        let outcome = Conversation::open(config).and_then(|mut c| {
            match case.after {
                Stage::Connected => {}
                Stage::LoggedIn => c.log_in(config)?,
                Stage::Listed => {
                    c.list(config)?;
                }
            }
            let answer = match &case.bad {
                Bad::Text(text) => c.ask(text)?,
                Bad::LoginAgain => c.ask(&login)?,
                Bad::Bytes(what, bytes) => c.ask_bytes(what, bytes)?,
            };
            expect_error(&mut c, &answer)?;
            Ok(c.last_exchange())
        });
        run.pass_or_fail(&format!("malformed: {}", case.name), outcome);
    }
}

/// After everything above, a normal session still logs in and lists.
fn still_serves(run: &mut Run) {
    let outcome = Conversation::open(run.config).and_then(|mut c| {
        c.list(run.config)?;
        Ok(c.last_exchange())
    });
    run.pass_or_fail("still serves a normal session", outcome);
}

/// Each doctor quotes the plan (its table's cost, when known) and does not
/// answer an unknown plan with a cost.
fn doctors(run: &mut Run, booked: Option<&(u64, String, u16)>) {
    let config = run.config;
    let mut targets = config.doctors.clone();
    // The doctor the center assigned is asked too, at the port it gave.
    if let Some((_, name, port)) = booked
        && !targets.iter().any(|t| &t.name == name)
        && let Ok(addr) = crate::resolve(&crate::doctor::host_port(&config.doctor_host, *port))
    {
        targets.push(DoctorTarget {
            name: name.clone(),
            addr,
            expected: None,
        });
    }
    if targets.is_empty() {
        run.record("doctor quotes", Verdict::Skip, "no doctor to ask");
        return;
    }
    for target in &targets {
        let outcome = match ask_doctor(config, target.addr, &config.plan) {
            Ok(Some(answer)) => match (protocol::parse_quote_answer(&answer), target.expected) {
                (Ok(protocol::QuoteAnswer::Cost(cost)), Some(expected)) if cost != expected => {
                    Err(format!(
                        "sent '{}', got '{answer}', expected {expected} from its table",
                        config.plan
                    ))
                }
                (Ok(protocol::QuoteAnswer::Cost(_)), _)
                    if answer.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    Ok(format!("sent '{}', got '{answer}'", config.plan))
                }
                _ => Err(format!(
                    "sent '{}', got '{}', expected a whole number",
                    config.plan,
                    quote(&answer)
                )),
            },
            Ok(None) => Err(format!(
                "sent '{}' to {} three times, no answer",
                config.plan, target.addr
            )),
            Err(e) => Err(format!("asking {}: {e}", target.addr)),
        };
        run.pass_or_fail(&format!("{} quotes {}", target.name, config.plan), outcome);

        let outcome = match ask_doctor(config, target.addr, UNKNOWN_PLAN) {
            Ok(Some(answer)) => match protocol::parse_quote_answer(&answer) {
                Ok(protocol::QuoteAnswer::Cost(_)) => {
                    Err(format!("sent '{UNKNOWN_PLAN}', got a cost: '{answer}'"))
                }
                _ => Ok(format!("sent '{UNKNOWN_PLAN}', got '{}'", quote(&answer))),
            },
            Ok(None) => Ok(format!("sent '{UNKNOWN_PLAN}', no answer (dropped)")),
            Err(e) => Err(format!("asking {}: {e}", target.addr)),
        };
        run.pass_or_fail(&format!("{} refuses an unknown plan", target.name), outcome);
    }
}

/// Sends `plan` up to three times; the first answer, cut at its NUL or
/// final newline, or `None` after silence.
fn ask_doctor(config: &Config, doctor: SocketAddr, plan: &str) -> io::Result<Option<String>> {
    let socket = crate::connected_udp(doctor)?;
    let request = match config.dialect {
        Dialect::Line => protocol::encode(Dialect::Line, plan),
        Dialect::Classic => protocol::encode_classic_request(plan, config.classic_buffer),
    };
    let wait = (config.timeout / 3).max(Duration::from_millis(100));
    socket.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        // A refused send is a lost datagram; the next try covers it.
        let _ = socket.send(&request);
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = match protocol::decode_datagram(&buf[..n], buf.len()) {
                    Ok((text, _)) => text.to_owned(),
                    Err(e) => format!("(undecodable: {e})"),
                };
                return Ok(Some(text));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    std::thread::sleep(wait);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Formats the findings for people: the slots note, one line per case,
/// then the summary.
pub fn render(config: &Config, findings: &Findings) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "medsim check: center {} ({} dialect), user {}, doctors at {}",
        config.center, config.dialect, config.username, config.doctor_host
    );
    let needed: usize = RESERVES.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        out,
        "slots: the cases reserve {needed} ({}); the center listed {} free",
        RESERVES
            .iter()
            .map(|(case, n)| format!("{case} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        findings.listed_free
    );
    let width = findings
        .cases
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for case in &findings.cases {
        let _ = writeln!(
            out,
            "{} {:<width$}  {}",
            case.verdict, case.name, case.evidence
        );
    }
    let _ = writeln!(
        out,
        "summary: {} passed, {} failed, {} skipped",
        findings.count(Verdict::Pass),
        findings.count(Verdict::Fail),
        findings.count(Verdict::Skip)
    );
    out
}

/// Check a running system against the protocol: authentication, the
/// list's format, booking, a taken slot, a race for one slot, malformed
/// input, and each doctor's quotes. Exits 1 if any case fails.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The center's address.
    #[arg(long, default_value = "127.0.0.1:21720", value_name = "ADDR")]
    pub center: String,
    /// Host the center's `DOCTOR PORT` refers to, and where the doctors
    /// are asked [default: the center's host].
    #[arg(long, value_name = "HOST")]
    pub doctor_host: Option<String>,
    #[command(flatten)]
    pub framing: Framing,
    /// User to log in as [default: patient1 of the data].
    #[arg(long, value_name = "U", requires = "password")]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, value_name = "P", requires = "user")]
    pub password: Option<String>,
    /// Plan to ask the doctors about [default: the user's plan in the data,
    /// or insurance1].
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<String>,
    /// Clients racing for one slot.
    #[arg(long, default_value_t = 50, value_name = "K")]
    pub race: usize,
    /// A doctor to ask, NAME=PORT at the doctor host or NAME=HOST:PORT
    /// (repeatable) [default: every doctor of the data, at its port].
    #[arg(long = "doctor", value_name = "NAME=ADDR")]
    pub doctors: Vec<String>,
    /// Directory of data files: the default user, the doctors and their
    /// fee tables [default: the built-in copies of fixtures/].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub timeout: f64,
    /// Print the findings as one JSON document.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// The configuration these flags describe.
    ///
    /// # Errors
    ///
    /// Bad data files, an address that does not resolve, a malformed
    /// `--doctor`.
    pub fn config(&self) -> anyhow::Result<Config> {
        let source = Source::from_option(self.fixtures.as_deref());
        let fixtures = Fixtures::load(&source)?;
        let center = crate::resolve(&self.center)?;
        let doctor_host = self
            .doctor_host
            .clone()
            .unwrap_or_else(|| center.ip().to_string());
        let (username, password, data_plan) = match (&self.user, &self.password) {
            (Some(user), Some(password)) => (
                user.clone(),
                password.clone(),
                Patient::load(&source, user).ok().map(|p| p.plan),
            ),
            _ => {
                let p = Patient::load(&source, "patient1")?;
                (p.username, p.password, Some(p.plan))
            }
        };
        let plan = self
            .plan
            .clone()
            .or(data_plan)
            .unwrap_or_else(|| "insurance1".into());
        let mut ports: BTreeMap<String, String> = fixtures
            .doctors
            .iter()
            .map(|d| (d.name.clone(), d.port.to_string()))
            .collect();
        if !self.doctors.is_empty() {
            ports.clear();
        }
        for spec in &self.doctors {
            let (name, addr) = spec
                .split_once('=')
                .with_context(|| format!("--doctor '{spec}' is not NAME=PORT or NAME=HOST:PORT"))?;
            ports.insert(name.to_owned(), addr.to_owned());
        }
        let mut doctors = Vec::new();
        for (name, addr) in ports {
            let addr = if addr.bytes().all(|b| b.is_ascii_digit()) {
                let port: u16 = addr
                    .parse()
                    .with_context(|| format!("doctor {name}: '{addr}' is not a port"))?;
                crate::doctor::host_port(&doctor_host, port)
            } else {
                addr
            };
            doctors.push(DoctorTarget {
                expected: fixtures.doctor(&name).and_then(|d| d.fees.cost(&plan)),
                addr: crate::resolve(&addr).with_context(|| format!("doctor {name}"))?,
                name,
            });
        }
        anyhow::ensure!(self.race >= 2, "--race needs at least 2 clients");
        Ok(Config {
            center,
            doctor_host,
            dialect: self.framing.dialect,
            classic_buffer: self.framing.classic_buffer,
            username,
            password,
            plan,
            race: self.race,
            timeout: crate::seconds("--timeout", self.timeout)?,
            doctors,
        })
    }
}

/// The `check` subcommand: 0 when no case failed, 1 otherwise.
///
/// # Errors
///
/// Bad flags or data files.
pub fn run(args: &Args) -> anyhow::Result<u8> {
    let config = args.config()?;
    let findings = check(&config);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        print!("{}", render(&config, &findings));
    }
    Ok(if findings.count(Verdict::Fail) == 0 {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_must_be_exact() {
        assert_eq!(strict_listing("1 Tue 01pm 2 Mon 03pm"), Ok(vec![1, 2]));
        assert!(strict_listing("1 Tue 01pm  2 Mon 03pm").is_err());
        assert!(strict_listing("1 Tue 01pm 2 Mon").is_err());
        assert!(strict_listing("2 Tue 01pm 1 Mon 03pm").is_err());
        assert!(strict_listing("x Tue 01pm").is_err());
        assert!(strict_listing("").is_err());
    }

    #[test]
    fn the_assignment_must_be_doctor_and_port() {
        assert_eq!(
            strict_assignment("doc1 41720"),
            Some(("doc1".into(), 41720))
        );
        assert_eq!(strict_assignment("41720"), None);
        assert_eq!(strict_assignment("doc1 0"), None);
        assert_eq!(strict_assignment("doc1  41720"), None);
    }

    #[test]
    fn evidence_masks_the_password() {
        assert_eq!(shown("authenticate u secret"), "authenticate u ***");
        assert_eq!(shown("available"), "available");
    }
}
