//! `medsim check`: named conformance, security and race cases run against
//! a live system (medsim's own or any other implementation of
//! PROTOCOL.md), each reported with its evidence: what was sent and what
//! came back.
//!
//! Two levels of finding, as conformance suites have them: FAIL for what
//! breaks the system's promise (a slot given twice, a list or a booking
//! without valid credentials, a crash or hang, a wrong cost), WARN for
//! wording and form (`Success`, `not available`, a port alone, list
//! separators, a greeting, not closing). Answers are read tolerantly, as
//! medsim's classic client reads them, so every semantic case runs
//! whatever the wording; each departure in wording is reported once, in a
//! `wording/...` case of its own. `--strict` makes a WARN fail.
//!
//! After every case check asks whether the center still accepts and
//! answers and whether each doctor still quotes; a case that killed a
//! server fails, and the cases after it are not run, unless check started
//! the server itself (`--center-cmd`, `--doctor-cmd`, [`launch`]): then it
//! names how it died, restarts it and goes on. `--patient-cmd` judges a
//! patient program instead ([`patient`]).
//!
//! This module owns the options, the configuration and the findings (its
//! flags are `cli/check.rs`'s); the cases are [`cases`]'s, the reports
//! [`report`]'s. Every conversation with a server goes through `client`.

mod cases;
mod harness;
pub mod launch;
pub mod patient;
mod proxy;
mod report;
mod session;
pub mod sockets;
mod wording;

pub use harness::{check, check_with};
pub use report::{Target, TargetDoctor, gradescope, json, junit, render};

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::client::DoctorOverrides;
use crate::data::{Fixtures, Patient, Slot, Source};
use crate::net;
use crate::protocol::Framing;
use sockets::Transport;

/// A plan no doctor should know.
pub const UNKNOWN_PLAN: &str = "medsim-check-no-such-plan";

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// A departure in wording or form: the promise holds (fails with
    /// `--strict`).
    Warn,
    /// The system's promise is broken.
    Fail,
    /// Nothing to judge (no answer of that kind came): neither passes nor
    /// fails.
    Skip,
    /// Could not run: a server it needs is gone, or the center had no free
    /// slot for it. The check is incomplete, and fails.
    Blocked,
}

impl Verdict {
    /// Whether a case with this verdict makes the run fail: a FAIL, a
    /// case that could not run (the check is incomplete), or a WARN when
    /// `strict`. Console, exit status, JUnit and Gradescope all ask this.
    pub fn fails(self, strict: bool) -> bool {
        match self {
            Verdict::Fail | Verdict::Blocked => true,
            Verdict::Warn => strict,
            Verdict::Pass | Verdict::Skip => false,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
            Verdict::Blocked => "NOT RUN",
        })
    }
}

/// One case's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    /// Stable id (`auth/bad-password`, `race/one-slot`), for `--cases`,
    /// `--skip` and graders.
    pub id: String,
    /// What the case checks, in words.
    pub name: String,
    pub verdict: Verdict,
    /// What was sent and what came back, or why it was not run.
    pub evidence: String,
    /// How long the case took, in seconds (0 for a case not run).
    pub seconds: f64,
}

/// What to check, and how to reach it.
#[derive(Debug, Clone)]
pub struct Config {
    pub center: SocketAddr,
    /// The host the center's `DOCTOR PORT` answers refer to.
    pub doctor_host: String,
    pub framing: Framing,
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
    /// The slots of the data: every grant is held to its slot's doctor
    /// and port, when the center lists the same slots.
    pub slots: Vec<Slot>,
}

/// A doctor the checker asks for quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorTarget {
    pub name: String,
    pub addr: SocketAddr,
    /// The cost its table gives for the plan, when known.
    pub expected: Option<u64>,
}

/// How a run goes beyond what to reach: which cases, how strict, other
/// centers sharing the store, and the programs check starts itself.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Other centers sharing the first one's store: the race spreads its
    /// clients over all of them.
    pub more_centers: Vec<SocketAddr>,
    /// Run only the cases whose id is or starts with one of these (all
    /// when empty).
    pub cases: Vec<String>,
    /// Leave out the cases whose id is or starts with one of these.
    pub skip: Vec<String>,
    /// The center program check starts, watches and restarts.
    pub center_cmd: Option<launch::Program>,
    /// The doctors program check starts, watches and restarts.
    pub doctor_cmd: Option<launch::Program>,
}

impl Settings {
    /// Whether the case `id` is selected.
    pub fn selects(&self, id: &str) -> bool {
        let matches = |pattern: &String| names(pattern, id);
        (self.cases.is_empty() || self.cases.iter().any(matches)) && !self.skip.iter().any(matches)
    }
}

/// How `--cases`, `--skip` and `--weights` name cases, the one rule for
/// all three: a pattern names the ids it begins at whole parts (`auth` is
/// every `auth/...` case, `doctor/doc1` doc1's cases and not doc10's,
/// `wording/` every wording case), and may cut short an id's last part
/// (`race/one` is `race/one-slot`, `malformed/selection` every
/// `malformed/selection-...` case). Only the last part may be cut: a
/// doctor's or a program's name is a part in the middle, never taken for
/// another's that begins the same.
pub fn names(pattern: &str, id: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    let Some(rest) = id.strip_prefix(pattern) else {
        return false;
    };
    rest.is_empty() || pattern.ends_with('/') || rest.starts_with('/') || !rest.contains('/')
}

/// The patterns of `flag` that name no case of `catalog`, each as the line
/// that refuses it.
pub fn unknown_patterns<'p>(
    flag: &str,
    patterns: impl IntoIterator<Item = &'p str>,
    catalog: &[String],
) -> Vec<String> {
    patterns
        .into_iter()
        .filter(|pattern| !catalog.iter().any(|id| names(pattern, id)))
        .map(|pattern| {
            format!(
                "{flag} {pattern}: no case id is or begins with '{pattern}': {}",
                ids_hint(catalog)
            )
        })
        .collect()
}

/// What ids look like, for a refusal: a few of `catalog`'s.
fn ids_hint(catalog: &[String]) -> String {
    let examples: Vec<&str> = ["auth/bad-password", "race/one-slot", "malformed/empty"]
        .into_iter()
        .filter(|id| catalog.iter().any(|c| c == id))
        .collect();
    let examples = if examples.is_empty() {
        catalog.iter().take(3).map(String::as_str).collect()
    } else {
        examples
    };
    format!(
        "ids are like {} (a beginning of one names every id it begins at a '/', or in the last part; --json lists them all)",
        examples.join(", ")
    )
}

/// Slots the cases reserve, by case: the checker needs no more free slots
/// than these add up to.
pub const RESERVES: [(&str, usize); 2] = [("booking", 1), ("race", 1)];

/// Everything a check found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Findings {
    /// Free slots the center listed before any case reserved one, when a
    /// list was seen at all.
    pub listed_free: Option<usize>,
    pub cases: Vec<CaseResult>,
}

impl Findings {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.cases.iter().filter(|c| c.verdict == verdict).count()
    }

    /// Whether the run failed: any FAIL, any case NOT RUN (the check is
    /// incomplete), or any WARN when `strict`.
    pub fn failed(&self, strict: bool) -> bool {
        self.cases.iter().any(|c| c.verdict.fails(strict))
    }

    /// The counts and the verdict, as every report and the exit status
    /// give them.
    pub fn summary(&self, strict: bool) -> Summary {
        let warned = self.count(Verdict::Warn);
        let failed = self.failed(strict);
        Summary {
            passed: self.count(Verdict::Pass),
            warned,
            failed: self.count(Verdict::Fail),
            not_run: self.count(Verdict::Blocked),
            skipped: self.count(Verdict::Skip),
            strict,
            warnings_counted_as_failures: if strict { warned } else { 0 },
            verdict: if failed { "fail" } else { "pass" },
            exit_code: u8::from(failed),
        }
    }
}

/// A run's counts per verdict and its verdict: what the summary line says,
/// the JSON's `summary`, and the exit status agree because they are this.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub passed: usize,
    pub warned: usize,
    /// Cases that FAILed (WARNs that `--strict` fails are counted in
    /// `warnings_counted_as_failures`, not here).
    pub failed: usize,
    pub not_run: usize,
    pub skipped: usize,
    pub strict: bool,
    /// With `--strict`, every WARN: each fails the run.
    pub warnings_counted_as_failures: usize,
    /// `pass` or `fail`.
    pub verdict: &'static str,
    /// 0 or 1, as check exits.
    pub exit_code: u8,
}

/// What a check is asked: what to reach and log in as, which cases, how
/// strict, the programs check starts itself, and where the findings go.
/// [`Options::config`] and [`Options::settings`] resolve it (data files
/// read, addresses looked up) into what the cases run with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The center's address, and more for several centers sharing one
    /// store (the race spreads over all of them). With `patient_cmds`:
    /// where medsim's center listens for the program.
    pub centers: Vec<String>,
    /// Where the doctors are, when not where the center says.
    pub doctors: DoctorOverrides,
    pub framing: Framing,
    /// Username and password to log in with; patient1 of the data when
    /// `None`.
    pub login: Option<(String, String)>,
    /// Plan to ask the doctors about; the user's plan in the data, or
    /// insurance1, when `None`.
    pub plan: Option<String>,
    /// Clients racing for one slot (at least 2).
    pub race: usize,
    /// Where the data files are.
    pub source: Source,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// Every WARN fails the run.
    pub strict: bool,
    /// Run only the cases these name (all when empty), as [`names`] reads
    /// them.
    pub cases: Vec<String>,
    /// Leave out the cases these name.
    pub skip: Vec<String>,
    /// The center under test, started with `sh -c`, watched and
    /// restarted.
    pub center_cmd: Option<String>,
    /// The doctors under test, started as `center_cmd`.
    pub doctor_cmd: Option<String>,
    /// Patient programs to judge (each with `sh -c`) against medsim's own
    /// servers, in turn; when any is given, no center or doctor is
    /// checked.
    pub patient_cmds: Vec<String>,
    /// The center names each doctor's port minus this to a patient
    /// program.
    pub patient_port_offset: u16,
    /// How long a patient program may take, each run.
    pub patient_timeout: Duration,
    /// Where the programs run; the current directory when `None`.
    pub dir: Option<PathBuf>,
    /// Run the whole check in a private network namespace with only
    /// loopback.
    pub netns: bool,
    /// Where to write the findings as JUnit XML.
    pub junit: Option<PathBuf>,
    /// Where to write the findings as a Gradescope results.json.
    pub gradescope: Option<PathBuf>,
    /// Points by case pattern for the Gradescope results: the last that
    /// names a case gives its points (1 a case when none does).
    pub weights: Vec<(String, f64)>,
    /// Print the findings as one JSON document.
    pub json: bool,
}

impl Options {
    /// The configuration these options describe.
    ///
    /// # Errors
    ///
    /// Bad data files, an address that does not resolve, a malformed
    /// `--doctor`.
    pub fn config(&self) -> anyhow::Result<Config> {
        let source = &self.source;
        let fixtures = Fixtures::load(source)?;
        let first = self.centers.first().context("--center is needed")?;
        let center = net::resolve(first)?;
        let routes = self.doctors.routes(&center.ip().to_string());
        let (username, password, data_plan) = match &self.login {
            Some((user, password)) => (
                user.clone(),
                password.clone(),
                Patient::load(source, user).ok().map(|p| p.plan),
            ),
            None => {
                let p = Patient::load(source, "patient1")?;
                (p.username, p.password, Some(p.plan))
            }
        };
        let plan = self
            .plan
            .clone()
            .or(data_plan)
            .unwrap_or_else(|| "insurance1".into());
        // Every doctor of the data at its port, unless --doctor names them.
        let mut addresses: Vec<(String, String)> = if routes.by_name.is_empty() {
            fixtures
                .doctors
                .iter()
                .map(|d| (d.name.clone(), routes.address(None, d.port)))
                .collect()
        } else {
            Vec::new()
        };
        addresses.extend(routes.by_name.clone());
        let mut doctors = Vec::new();
        for (name, addr) in addresses {
            doctors.push(DoctorTarget {
                expected: fixtures.doctor(&name).and_then(|d| d.fees.cost(&plan)),
                addr: net::resolve(&addr).with_context(|| format!("doctor {name}"))?,
                name,
            });
        }
        anyhow::ensure!(self.race >= 2, "--race needs at least 2 clients");
        Ok(Config {
            center,
            doctor_host: routes.host,
            framing: self.framing.checked()?,
            username,
            password,
            plan,
            race: self.race,
            timeout: self.timeout,
            doctors,
            slots: fixtures.slots,
        })
    }

    /// The run's settings these options describe.
    ///
    /// # Errors
    ///
    /// A --center that does not resolve.
    pub fn settings(&self, config: &Config) -> anyhow::Result<Settings> {
        let mut more_centers = Vec::new();
        for addr in self.centers.iter().skip(1) {
            more_centers.push(net::resolve(addr)?);
        }
        let program = |cmd: &Option<String>, what: &str, ready: launch::Ready| {
            cmd.as_ref().map(|cmd| launch::Program {
                what: what.to_owned(),
                command: cmd.clone(),
                dir: self.dir.clone(),
                ready,
            })
        };
        Ok(Settings {
            more_centers,
            cases: self.cases.clone(),
            skip: self.skip.clone(),
            center_cmd: program(
                &self.center_cmd,
                "the center",
                launch::Ready::Serves(Transport::Tcp, vec![config.center]),
            ),
            doctor_cmd: program(
                &self.doctor_cmd,
                "the doctors",
                launch::Ready::Serves(
                    Transport::Udp,
                    config.doctors.iter().map(|d| d.addr).collect(),
                ),
            ),
        })
    }
}

/// Whether something accepts TCP connections at `addr` within `timeout`.
pub(crate) fn accepts(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// The `check` subcommand: 0 when no case failed, 1 otherwise, 2 when
/// nothing accepts connections at the center.
///
/// # Errors
///
/// Bad options or data files, a report that cannot be written.
pub fn run(options: &Options) -> anyhow::Result<u8> {
    if options.netns && !launch::in_private_netns() {
        return launch::rerun_in_private_netns();
    }
    let config = options.config()?;
    // Ctrl-C or SIGTERM: the programs check started go with it.
    let stop = crate::shutdown::Shutdown::new();
    stop.stop_on_signals()?;
    stop.on_trigger(|| {
        launch::stop_all();
        std::process::exit(130);
    });
    let catalog = if options.patient_cmds.is_empty() {
        harness::case_ids(&config)
    } else {
        patient::case_ids(options.patient_cmds.len())
    };
    if let Err(refusals) = check_selection(options, &catalog) {
        for refusal in refusals {
            eprintln!("{refusal}");
        }
        return Ok(2);
    }
    let started = Instant::now();
    let findings;
    let target;
    let mut more_centers = Vec::new();
    if !options.patient_cmds.is_empty() {
        let selection = Settings {
            cases: options.cases.clone(),
            skip: options.skip.clone(),
            ..Settings::default()
        };
        let mut all = Findings {
            listed_free: None,
            cases: Vec::new(),
        };
        let mut doctors = Vec::new();
        for (k, cmd) in options.patient_cmds.iter().enumerate() {
            let plan = patient::Plan::from_options(options, cmd)?;
            doctors.clone_from(&plan.doctors);
            let mut findings = patient::check_patient(&plan)?;
            if options.patient_cmds.len() > 1 {
                for case in &mut findings.cases {
                    case.id = format!("patient{}/{}", k + 1, case.id);
                    case.name = format!("{}: {}", cmd, case.name);
                }
            }
            all.cases.append(&mut findings.cases);
        }
        all.cases.retain(|case| selection.selects(&case.id));
        findings = all;
        target = report::Target {
            centers: options.centers.clone(),
            dialect: None,
            user: None,
            doctor_host: None,
            doctors: doctors
                .into_iter()
                .map(|(name, addr)| report::TargetDoctor { name, addr })
                .collect(),
            center_cmd: None,
            doctor_cmd: None,
            patient_cmds: options.patient_cmds.clone(),
        };
    } else {
        let settings = options.settings(&config)?;
        let centers: Vec<SocketAddr> = std::iter::once(config.center)
            .chain(settings.more_centers.iter().copied())
            .collect();
        if settings.center_cmd.is_none() {
            for &addr in &centers {
                if !accepts(addr, config.timeout) {
                    eprintln!("nothing accepts connections at {addr}: is the center running?");
                    return Ok(2);
                }
            }
        }
        findings = check_with(&config, &settings);
        more_centers = settings.more_centers;
        target = report::Target {
            centers: centers.iter().map(SocketAddr::to_string).collect(),
            dialect: Some(config.framing.dialect.to_string()),
            user: Some(config.username.clone()),
            doctor_host: Some(config.doctor_host.clone()),
            doctors: config
                .doctors
                .iter()
                .map(|d| report::TargetDoctor {
                    name: d.name.clone(),
                    addr: d.addr.to_string(),
                })
                .collect(),
            center_cmd: options.center_cmd.clone(),
            doctor_cmd: options.doctor_cmd.clone(),
            patient_cmds: Vec::new(),
        };
    }
    let summary = findings.summary(options.strict);
    if options.json {
        crate::console::out(&report::json(&target, &findings, &summary))?;
    } else if !options.patient_cmds.is_empty() {
        crate::console::out(&report::render_patient(options, &findings))?;
    } else {
        crate::console::out(&render(&config, &more_centers, &findings, options.strict))?;
    }
    if let Some(path) = &options.junit {
        std::fs::write(path, junit(&findings, options.strict, started.elapsed()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &options.gradescope {
        std::fs::write(
            path,
            gradescope(&findings, options.strict, &options.weights),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary.exit_code)
}

/// Refuses, before anything runs, a `--cases`, `--skip` or `--weights`
/// name that is no case's, and a selection that leaves no case: each
/// refusal as a line.
fn check_selection(options: &Options, catalog: &[String]) -> Result<(), Vec<String>> {
    let mut refusals =
        unknown_patterns("--cases", options.cases.iter().map(String::as_str), catalog);
    refusals.extend(unknown_patterns(
        "--skip",
        options.skip.iter().map(String::as_str),
        catalog,
    ));
    refusals.extend(unknown_patterns(
        "--weights",
        options.weights.iter().map(|(id, _)| id.as_str()),
        catalog,
    ));
    let selection = Settings {
        cases: options.cases.clone(),
        skip: options.skip.clone(),
        ..Settings::default()
    };
    if refusals.is_empty() && !catalog.iter().any(|id| selection.selects(id)) {
        refusals.push(format!(
            "no case is selected by --cases {} --skip {}: {}",
            options.cases.join(","),
            options.skip.join(","),
            ids_hint(catalog)
        ));
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals)
    }
}

#[cfg(test)]
mod tests {
    use super::session::shown;
    use super::{Settings, names, unknown_patterns};

    #[test]
    fn evidence_masks_the_password() {
        assert_eq!(shown("authenticate u secret"), "authenticate u ***");
        assert_eq!(shown("available"), "available");
    }

    #[test]
    fn cases_are_chosen_by_id_or_prefix() {
        let settings = Settings {
            cases: vec!["auth".into(), "race/one-slot".into()],
            skip: vec!["auth/shared-flag".into()],
            ..Settings::default()
        };
        assert!(settings.selects("auth/success"));
        assert!(settings.selects("race/one-slot"));
        assert!(!settings.selects("auth/shared-flag"));
        assert!(!settings.selects("authx/y"));
        assert!(!settings.selects("malformed/empty"));
        assert!(Settings::default().selects("anything/at-all"));
    }

    #[test]
    fn a_name_is_whole_parts_and_may_cut_short_only_the_last() {
        // Whole parts, with or without the closing '/'.
        assert!(names("auth", "auth/after-login/empty"));
        assert!(names("auth/", "auth/success"));
        assert!(names("doctor/doc1", "doctor/doc1/quote"));
        assert!(names("race/one-slot", "race/one-slot"));
        // The last part cut short.
        assert!(names("race/one", "race/one-slot"));
        assert!(names("malformed/selection", "malformed/selection-abc"));
        assert!(names(
            "auth/after-login/authenticate",
            "auth/after-login/authenticate-1-arg"
        ));
        // A part in the middle is never cut: doc1 is not doc10, patient
        // not patient1, and a closing '/' asks for whole parts only.
        assert!(!names("doctor/doc1", "doctor/doc10/quote"));
        assert!(!names("patient", "patient1/patient/doctor"));
        assert!(!names("auth", "authx/y"));
        assert!(!names("race/one/", "race/one-slot"));
        assert!(!names("", "auth/success"));
        assert!(!names("race/one-slot-x", "race/one-slot"));
    }

    #[test]
    fn a_name_that_is_no_case_is_refused_naming_its_flag() {
        let catalog: Vec<String> = ["auth/bad-password", "race/one-slot", "malformed/empty"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            unknown_patterns("--weights", ["race", "nosuch", "race/one"], &catalog),
            [
                "--weights nosuch: no case id is or begins with 'nosuch': ids are like \
                 auth/bad-password, race/one-slot, malformed/empty (a beginning of one names \
                 every id it begins at a '/', or in the last part; --json lists them all)"
            ]
        );
        assert!(unknown_patterns("--cases", ["auth", "race/one"], &catalog).is_empty());
    }
}
