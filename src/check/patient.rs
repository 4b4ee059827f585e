//! `check --patient-cmd`: a patient program judged by what it does on the
//! wire against medsim's own center and doctors.
//!
//! Each run starts medsim's doctors and center in this process (through
//! `system`), puts a recording proxy ([`super::proxy`]) at the addresses
//! the program expects (`--center`, and each doctor at its data's port or
//! `--doctor NAME=ADDR`), and starts the program with its stdin scripted:
//! an index that is not listed, then a listed one. The center names each
//! doctor's port minus `--patient-port-offset` (the seed patient adds 720).
//! Three runs: a booking; credentials that fail (the center knows no
//! user); no free slot. The program also finds the addresses in its
//! environment: `MEDSIM_CENTER` (`HOST:PORT`) and `MEDSIM_DOCTOR_<NAME>`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::launch::{Program, Ready};
use super::proxy::{Link, Passed, Proxies};
use super::{CaseResult, Findings, Options, Verdict};
use crate::console::Console;
use crate::data::{Fixtures, Slot, Users};
use crate::system::{self, System};

/// The index typed first: listed by no center of the data.
const INVALID_CHOICE: u64 = 9;

/// What the patient check needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub program: Program,
    pub fixtures: Fixtures,
    /// Where the program expects the center.
    pub center: String,
    /// Where the program expects each doctor: name and address to listen
    /// on.
    pub doctors: Vec<(String, String)>,
    /// The center names each doctor's port minus this.
    pub offset: u16,
    /// How long each run of the program may take.
    pub timeout: Duration,
}

impl Plan {
    /// The plan the options describe for the program `command`.
    ///
    /// # Errors
    ///
    /// Bad data files.
    pub fn from_options(options: &Options, command: &str) -> anyhow::Result<Plan> {
        let fixtures = Fixtures::load(&options.source)?;
        let center = options
            .centers
            .first()
            .cloned()
            .context("--center is needed")?;
        let host = center
            .rsplit_once(':')
            .map_or("127.0.0.1", |(host, _)| host)
            .to_owned();
        let routes = options.doctors.routes(&host);
        let doctors = fixtures
            .doctors
            .iter()
            .map(|d| (d.name.clone(), routes.address(Some(&d.name), d.port)))
            .collect();
        Ok(Plan {
            program: Program {
                what: "the patient".into(),
                command: command.to_owned(),
                dir: options.dir.clone(),
                ready: Ready::Started,
            },
            fixtures,
            center,
            doctors,
            offset: options.patient_port_offset,
            timeout: options.patient_timeout,
        })
    }
}

/// Which run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Book,
    BadCredentials,
    NoneFree,
}

/// What one run of the program did.
struct Observed {
    /// Each message it sent the center, in order, with its connection.
    requests: Vec<(usize, String)>,
    /// The center's answers, in order.
    answers: Vec<String>,
    /// Every datagram it sent a doctor: the doctor and the text.
    datagrams: Vec<(String, String)>,
    /// How it ended, and after how long; `None` if it did not.
    ended: Option<(String, bool, Duration)>,
    /// Where each doctor's proxy listened, and the port the center named.
    doctors: Vec<(String, SocketAddr, u16)>,
    tail: String,
    /// The index typed second, a listed one.
    valid: u64,
}

/// The messages in a chunk: the text before a NUL, or each line.
fn messages(bytes: &[u8]) -> Vec<String> {
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        return vec![String::from_utf8_lossy(&bytes[..nul]).trim().to_owned()];
    }
    String::from_utf8_lossy(bytes)
        .split('\n')
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

fn run_once(plan: &Plan, scenario: Scenario) -> anyhow::Result<Observed> {
    // The doctors, on free ports; the center's system serves no doctor.
    let mut options = system::Options::from_fixtures(&plan.fixtures);
    options.console = Console::silent();
    let doctors_system = System::start(options).context("starting medsim's doctors")?;
    let mut proxies = Proxies::new();
    let mut doctors = Vec::new();
    for (name, listen) in &plan.doctors {
        let upstream = doctors_system
            .doctor(name)
            .with_context(|| format!("medsim has no doctor {name}"))?;
        let addr = proxies.udp(name, listen, upstream)?;
        doctors.push((name.clone(), addr, addr.port().saturating_sub(plan.offset)));
    }
    let slots: Vec<Slot> = plan
        .fixtures
        .slots
        .iter()
        .map(|slot| Slot {
            port: doctors
                .iter()
                .find(|(name, _, _)| *name == slot.doctor)
                .map_or(slot.port, |(_, _, named)| *named),
            ..slot.clone()
        })
        .collect();
    let mut options = system::Options::from_fixtures(&plan.fixtures);
    options.console = Console::silent();
    options.doctors = Vec::new();
    options.slots = system::Slots::Given(slots.clone());
    match scenario {
        Scenario::Book => {}
        Scenario::BadCredentials => options.users = Users::from_pairs([]),
        Scenario::NoneFree => {
            options.holders = slots
                .iter()
                .map(|s| (s.index, "medsim-check".to_owned()))
                .collect();
        }
    }
    let center_system = System::start(options).context("starting medsim's center")?;
    let center = proxies.tcp(&plan.center, center_system.center())?;

    let mut env = vec![("MEDSIM_CENTER".to_owned(), center.to_string())];
    for (name, addr, _) in &doctors {
        env.push((
            format!("MEDSIM_DOCTOR_{}", name.to_ascii_uppercase()),
            addr.to_string(),
        ));
    }
    let valid = plan
        .fixtures
        .slots
        .get(1)
        .or(plan.fixtures.slots.first())
        .map_or(1, |s| s.index);
    let started = Instant::now();
    let mut program = plan.program.start(&env).map_err(anyhow::Error::msg)?;
    if let Some(stdin) = program.stdin.as_mut() {
        // Kept open afterwards: a classic patient spins on end of input.
        let _ = write!(stdin, "{INVALID_CHOICE}\n{valid}\n");
        let _ = stdin.flush();
    }
    let ended = program.wait_for_exit(plan.timeout).map(|how| {
        let ok = program.status().is_some_and(|s| s.success());
        (how, ok, started.elapsed())
    });
    let tail = program.tail();
    program.kill();
    let passed = proxies.record.passed();
    drop(proxies);
    let _ = center_system.stop();
    let _ = doctors_system.stop();

    let mut requests = Vec::new();
    let mut answers = Vec::new();
    let mut datagrams = Vec::new();
    for Passed {
        link,
        to_server,
        bytes,
    } in passed
    {
        match (link, to_server) {
            (Link::Center(k), true) => {
                requests.extend(messages(&bytes).into_iter().map(|m| (k, m)));
            }
            (Link::Center(_), false) => answers.extend(messages(&bytes)),
            (Link::Doctor(name), true) => {
                let text = messages(&bytes).into_iter().next().unwrap_or_default();
                datagrams.push((name, text));
            }
            (Link::Doctor(_), false) => {}
        }
    }
    Ok(Observed {
        requests,
        answers,
        datagrams,
        ended,
        doctors,
        tail,
        valid,
    })
}

/// The id of every case of a patient check, in the order they are
/// judged.
pub const CASE_IDS: [&str; 8] = [
    "patient/authenticate",
    "patient/available",
    "patient/invalid-choice",
    "patient/selection",
    "patient/doctor",
    "patient/exit",
    "patient/stops-after-failure",
    "patient/stops-after-notavailable",
];

/// The ids of a check of `programs` patient programs: [`CASE_IDS`], each
/// under `patientK/` when there are several.
pub fn case_ids(programs: usize) -> Vec<String> {
    if programs <= 1 {
        return CASE_IDS.iter().map(|id| (*id).to_owned()).collect();
    }
    (1..=programs)
        .flat_map(|k| CASE_IDS.iter().map(move |id| format!("patient{k}/{id}")))
        .collect()
}

fn outcome(id: &str, name: &str, verdict: Verdict, evidence: String) -> CaseResult {
    CaseResult {
        id: id.into(),
        name: name.into(),
        verdict,
        evidence,
        seconds: 0.0,
    }
}

/// Runs the program for `scenario` and judges it into `cases`; the run's
/// time is shared by the cases judged from it, so the cases' times add up
/// to the check's.
fn run_and_judge(
    plan: &Plan,
    scenario: Scenario,
    cases: &mut Vec<CaseResult>,
    judge: impl FnOnce(&Observed, &mut Vec<CaseResult>),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let observed = run_once(plan, scenario)?;
    let first = cases.len();
    judge(&observed, cases);
    let judged = &mut cases[first..];
    let share = started.elapsed().as_secs_f64() / judged.len().max(1) as f64;
    for case in judged {
        case.seconds = share;
    }
    Ok(())
}

/// What the requests were, for evidence.
fn sent(observed: &Observed) -> String {
    if observed.requests.is_empty() {
        return "it sent the center nothing".into();
    }
    format!(
        "it sent {}",
        observed
            .requests
            .iter()
            .map(|(_, m)| format!("'{}'", super::session::shown(m)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// How the program ended, judged: exited within the time allowed.
fn exit_verdict(observed: &Observed, timeout: Duration) -> (Verdict, String) {
    match &observed.ended {
        Some((how, _, after)) if how.starts_with("died") => (
            Verdict::Fail,
            format!(
                "it {how} after {:.1}s{}",
                after.as_secs_f64(),
                observed.tail
            ),
        ),
        Some((how, _, after)) => (
            Verdict::Pass,
            format!("it {how} after {:.1}s", after.as_secs_f64()),
        ),
        None => (
            Verdict::Fail,
            format!(
                "it was still running {}s after it started (killed){}",
                timeout.as_secs_f64(),
                observed.tail
            ),
        ),
    }
}

fn judge_booking(plan: &Plan, o: &Observed, cases: &mut Vec<CaseResult>) {
    let first = o.requests.first().map(|(_, m)| m.as_str());
    let words: Vec<&str> = first.unwrap_or("").split_whitespace().collect();
    let (verdict, evidence) = match words[..] {
        ["authenticate", _, _] => (
            Verdict::Pass,
            format!(
                "sent '{}', got '{}'",
                super::session::shown(first.unwrap_or("")),
                o.answers.first().map_or("nothing", String::as_str)
            ),
        ),
        _ => (
            Verdict::Fail,
            format!("expected 'authenticate USER PASS' first; {}", sent(o)),
        ),
    };
    cases.push(outcome(
        "patient/authenticate",
        "patient: sends 'authenticate USER PASS'",
        verdict,
        evidence,
    ));

    let second = o.requests.get(1).map(|(_, m)| m.as_str());
    cases.push(if second == Some("available") {
        outcome(
            "patient/available",
            "patient: then 'available'",
            Verdict::Pass,
            "sent 'available'".into(),
        )
    } else {
        outcome(
            "patient/available",
            "patient: then 'available'",
            Verdict::Fail,
            format!("expected 'available' second; {}", sent(o)),
        )
    });

    let invalid = format!("selection {INVALID_CHOICE}");
    let bare = INVALID_CHOICE.to_string();
    cases.push(
        if o.requests.iter().any(|(_, m)| *m == invalid || *m == bare) {
            outcome(
                "patient/invalid-choice",
                "patient: sends nothing for an invalid choice",
                Verdict::Fail,
                format!("typed {INVALID_CHOICE} (not listed); {}", sent(o)),
            )
        } else {
            outcome(
                "patient/invalid-choice",
                "patient: sends nothing for an invalid choice",
                Verdict::Pass,
                format!("typed {INVALID_CHOICE} (not listed): nothing sent for it"),
            )
        },
    );

    let wanted = format!("selection {}", o.valid);
    cases.push(if o.requests.iter().any(|(_, m)| *m == wanted) {
        outcome(
            "patient/selection",
            "patient: sends 'selection N' for the choice",
            Verdict::Pass,
            format!(
                "typed {} and sent '{wanted}', got '{}'",
                o.valid,
                o.answers.get(2).map_or("nothing", String::as_str)
            ),
        )
    } else {
        outcome(
            "patient/selection",
            "patient: sends 'selection N' for the choice",
            Verdict::Fail,
            format!("typed {}, expected '{wanted}'; {}", o.valid, sent(o)),
        )
    });

    let doctor = plan
        .fixtures
        .slots
        .iter()
        .find(|s| s.index == o.valid)
        .map(|s| s.doctor.clone())
        .unwrap_or_default();
    let named = o.doctors.iter().find(|(name, _, _)| *name == doctor);
    let (verdict, evidence) = match (named, o.datagrams.first()) {
        (Some((_, addr, port)), Some((to, text))) if *to == doctor && !text.is_empty() => (
            Verdict::Pass,
            format!(
                "sent '{text}' to {doctor} at {addr} (the center named port {port}{})",
                offset_note(plan.offset)
            ),
        ),
        (Some((_, addr, port)), Some((to, text))) => (
            Verdict::Fail,
            format!(
                "sent '{text}' to {to}, but the center named {doctor}, port {port}{} ({addr})",
                offset_note(plan.offset)
            ),
        ),
        (Some((_, addr, port)), None) => (
            Verdict::Fail,
            format!(
                "no datagram reached {doctor} at {addr}: the center named port {port}{}; {}",
                offset_note(plan.offset),
                if plan.offset == 0 {
                    "a patient that adds to the port it is given (the seed adds 720) needs \
                     --patient-port-offset with that number"
                } else {
                    "a program that adds another number sends elsewhere: set \
                     --patient-port-offset to it"
                }
            ),
        ),
        (None, _) => (
            Verdict::Skip,
            format!("slot {} has no doctor medsim runs", o.valid),
        ),
    };
    cases.push(outcome(
        "patient/doctor",
        "patient: asks the doctor the center named",
        verdict,
        evidence,
    ));

    let (verdict, evidence) = exit_verdict(o, plan.timeout);
    cases.push(outcome(
        "patient/exit",
        "patient: exits after its visit",
        verdict,
        evidence,
    ));
}

fn offset_note(offset: u16) -> String {
    if offset == 0 {
        String::new()
    } else {
        format!(", + offset {offset}")
    }
}

/// After `failure` (or `notavailable`), nothing more is sent, and the
/// program exits.
fn judge_stop(
    plan: &Plan,
    o: &Observed,
    id: &str,
    name: &str,
    answered: &str,
    allowed: usize,
    cases: &mut Vec<CaseResult>,
) {
    let (mut verdict, mut evidence) = if o.requests.len() > allowed {
        (
            Verdict::Fail,
            format!(
                "after '{answered}' it sent '{}'; {}",
                super::session::shown(&o.requests[allowed].1),
                sent(o)
            ),
        )
    } else if o.requests.len() < allowed {
        (
            Verdict::Fail,
            format!(
                "expected {allowed} messages before '{answered}'; {}",
                sent(o)
            ),
        )
    } else {
        (
            Verdict::Pass,
            format!("{}; got '{answered}' and sent nothing more", sent(o)),
        )
    };
    let (exit, how) = exit_verdict(o, plan.timeout);
    if exit == Verdict::Fail {
        verdict = Verdict::Fail;
    }
    evidence.push_str(&format!("; {how}"));
    cases.push(outcome(id, name, verdict, evidence));
}

/// Runs the program three times (a booking, failing credentials, no free
/// slot) and judges each.
///
/// # Errors
///
/// medsim's servers or the proxies could not start, or the program could
/// not be started.
pub fn check_patient(plan: &Plan) -> anyhow::Result<Findings> {
    let mut cases = Vec::new();
    run_and_judge(plan, Scenario::Book, &mut cases, |observed, cases| {
        judge_booking(plan, observed, cases);
    })?;
    run_and_judge(
        plan,
        Scenario::BadCredentials,
        &mut cases,
        |observed, cases| {
            judge_stop(
                plan,
                observed,
                "patient/stops-after-failure",
                "patient: stops after 'failure'",
                "failure",
                1,
                cases,
            );
        },
    )?;
    run_and_judge(plan, Scenario::NoneFree, &mut cases, |observed, cases| {
        judge_stop(
            plan,
            observed,
            "patient/stops-after-notavailable",
            "patient: stops after 'notavailable'",
            "notavailable",
            2,
            cases,
        );
    })?;
    debug_assert!(cases.iter().all(|c| CASE_IDS.contains(&c.id.as_str())));
    Ok(Findings {
        listed_free: None,
        cases,
    })
}
