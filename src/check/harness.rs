//! The harness of `medsim check`: cases, their outcomes, the run's state,
//! the order cases run in, and the liveness checks between them (which
//! restart the programs check started when one died).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::cases::{ask_doctor, center_cases, doctor_cases};
use super::launch::{self, Running};
use super::session::{Session, Shared};
use super::wording::{Wording, wording_cases};
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
    pub(super) center_proc: Option<Running>,
    pub(super) doctor_proc: Option<Running>,
    /// Why the center cannot be asked any more.
    pub(super) center_down: Option<String>,
    /// Doctors that answered at the start and must keep answering.
    pub(super) doctors_alive: Vec<String>,
    /// Doctors that stopped, with why.
    pub(super) doctors_down: BTreeMap<String, String>,
    pub(super) results: Vec<CaseResult>,
}

impl<'a> Run<'a> {
    pub(super) fn config(&self) -> &'a Config {
        self.shared.config
    }

    pub(super) fn open(&self) -> Result<Session<'a>, String> {
        Session::open(self.shared, self.centers[0])
    }

    /// The lowest free slot now, listed by a session of its own.
    pub(super) fn free_now(&self) -> Result<Option<Vec<u64>>, String> {
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
        wording: Wording::default(),
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

pub(super) fn run_cases(run: &mut Run, cases: &[Case]) {
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
pub(super) fn center_liveness(run: &mut Run, case: &str) -> Option<String> {
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
pub(super) fn probe_center(shared: &Shared, center: SocketAddr) -> Result<(), String> {
    let mut session = Session::open(shared, center)?;
    let config = shared.config;
    session.ask(&format!(
        "authenticate {} {}-probe",
        config.username, config.password
    ))?;
    Ok(())
}

/// Whether each doctor that answered at the start still does.
pub(super) fn doctor_liveness(run: &mut Run, case: &str) -> Option<String> {
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

pub(super) fn still_quotes(config: &Config, doctor: SocketAddr) -> bool {
    matches!(ask_doctor(config, doctor, &config.plan), Ok(Some(_)))
}
