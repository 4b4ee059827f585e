//! The cases of `medsim check`, in the order they run, and the
//! conversation each opens with the center: what is sent and received is
//! kept as the case's evidence.

use std::net::SocketAddr;
use std::sync::Barrier;
use std::time::Duration;

use super::{CaseResult, Config, DoctorTarget, Findings, UNKNOWN_PLAN, Verdict};
use crate::client::{self, Closing, DoctorLink, DoctorReply, Retries};
use crate::net;
use crate::protocol::{self, Dialect, strict_assignment, strict_listing, words};

/// An index no center should have.
const MISSING_INDEX: u64 = 999_999_999;
/// How long a closed-after-failure connection may take to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One conversation with the center, in the configured dialect.
pub(super) struct Conversation {
    link: client::Conversation,
    /// What was sent and received so far, for evidence.
    log: Vec<String>,
}

impl Conversation {
    pub(super) fn open(config: &Config) -> Result<Conversation, String> {
        client::Conversation::connect(config.center, config.framing, config.timeout)
            .map(|link| Conversation {
                link,
                log: Vec::new(),
            })
            .map_err(|e| format!("cannot connect to {}: {e}", config.center))
    }

    /// Sends `text` framed, and returns the answer (or why none came).
    fn ask(&mut self, text: &str) -> Result<String, String> {
        self.log.push(format!("sent '{}'", shown(text)));
        if let Err(e) = self.link.send(text) {
            self.log.push(format!("send failed: {e}"));
            return Err(self.evidence());
        }
        self.receive()
    }

    /// Sends raw bytes, unframed, and returns the answer.
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
                self.log.push(format!("got '{}'", quote(&answer)));
                Ok(answer)
            }
            Err(why) => {
                self.log.push(why.to_string());
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
        // A classic list follows every triple with a space (PROTOCOL.md).
        let exact = match config.framing.dialect {
            Dialect::Classic => answer.strip_suffix(' ').unwrap_or("\u{0}"),
            Dialect::Line => &answer,
        };
        strict_listing(exact).map_err(|why| {
            self.log.push(why);
            self.evidence()
        })
    }

    /// Waits for the center to close; true if it did within [`CLOSE_WAIT`].
    fn closes(&mut self) -> bool {
        self.link.wait_for_close(CLOSE_WAIT) == Closing::Closed
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

/// Text as evidence shows it: passwords masked, long text shortened.
pub(super) fn shown(text: &str) -> String {
    quote(&crate::trace::mask_password(text))
}

/// Peer text as evidence quotes it: one line, long enough to read.
fn quote(text: &str) -> String {
    protocol::shorten_to(text, 48)
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
    for case in malformed_messages(config.framing.dialect) {
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
        && let Ok(addr) = net::resolve(&net::host_port(&config.doctor_host, *port))
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
