//! `simulate`: the center, every doctor and N patients as threads of one
//! process, over real loopback sockets on ephemeral ports; or, with
//! `--center`, N patients against a system running elsewhere (any
//! implementation of PROTOCOL.md).
//!
//! This module owns the run's plain [`Options`] and their checks, and the
//! report's shape (the flags are `cli::simulate`'s); who visits is
//! [`roster`]'s, running the patients [`crowd`]'s, what the report keeps of
//! each visit and the invariants [`tally`]'s, and the text for people
//! [`report`]'s. The servers come from `system`, the patients from
//! `patient`.

mod classroom;
mod crowd;
mod report;
mod roster;
mod tally;

pub use report::render;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::client::DoctorOverrides;
use crate::data::{Fixtures, Source};
use crate::patient::Visit;
use crate::protocol::Framing;
use crate::store::StoreUrl;
use crate::system::{CenterSummary, DEFAULT_LIST_CAP};

/// How simulated patients pick a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// The lowest listed index.
    First,
    /// A listed index at random (seeded).
    Random,
    /// Everyone asks for the same slot (the lowest index of the table), a
    /// race with exactly one winner.
    Same,
}

/// At most this many patients get a row each in the report.
pub const TABLE_LIMIT: usize = 20;

/// At most this many patients may be drawn in one `--diagram`: past it a
/// sequence diagram is too long to read or to render.
pub const DIAGRAM_LIMIT: usize = 20;

/// The longest `--pace` taken: a longer one is surely a slip of the unit.
const PACE_LIMIT: Duration = Duration::from_secs(60);

/// What a simulation runs and reports: how many patients, how they choose,
/// against which servers, and what is written beside the report.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many patients visit (at least 1).
    pub patients: usize,
    /// Generated slots instead of the data's (doctors taken in turn).
    pub slots: Option<u64>,
    /// How patients choose a slot.
    pub choice: Choice,
    /// Seed for choices and datagram loss; `None` takes one from the clock.
    pub seed: Option<u64>,
    /// Patients running at once; `None` for all of them, at most 64 (1 in
    /// a paced or stepped run).
    pub concurrency: Option<usize>,
    /// The report as one JSON document.
    pub json: bool,
    /// Where the data files are.
    pub source: Source,
    /// Fraction of doctor datagrams dropped each way, in `[0, 1)`.
    pub udp_loss: f64,
    /// How long a patient waits for a quote before sending again.
    pub quote_timeout: Duration,
    /// Quote requests a patient sends in all.
    pub quote_attempts: u32,
    /// Most free slots a center lists in one answer.
    pub list_cap: usize,
    /// Centers started here, all on `store`.
    pub centers: usize,
    /// Where the centers started here keep the slot table.
    pub store: StoreUrl,
    /// How the patients frame their messages.
    pub framing: Framing,
    /// A center elsewhere to visit, instead of starting servers here.
    pub center: Option<String>,
    /// With `center`: where its doctors are.
    pub doctors: DoctorOverrides,
    /// With `center`: the users to log in as [default: the data's].
    pub users: Option<PathBuf>,
    /// Where the sequence diagram goes (`-` for stdout), when one is drawn.
    pub diagram: Option<PathBuf>,
    /// A wait before every message a patient sends, for an audience.
    pub pace: Option<Duration>,
    /// Where the live view serves, when it does.
    pub live: Option<String>,
    /// Every message held until a person steps it on.
    pub step: bool,
    /// Where the HTML report goes, when one is written.
    pub report: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            patients: 2,
            slots: None,
            choice: Choice::Random,
            seed: Some(1),
            concurrency: None,
            json: false,
            source: Source::built_in(),
            udp_loss: 0.0,
            quote_timeout: Duration::from_millis(100),
            quote_attempts: 20,
            list_cap: DEFAULT_LIST_CAP,
            centers: 1,
            store: StoreUrl::Memory,
            framing: Framing::default(),
            center: None,
            doctors: DoctorOverrides::default(),
            users: None,
            diagram: None,
            pace: None,
            live: None,
            step: false,
            report: None,
        }
    }
}

impl Options {
    /// Refuses options that make no run, or contradict each other (named
    /// by their flags: that is where a person sets them).
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.patients >= 1, "--patients must be at least 1");
        anyhow::ensure!(self.slots != Some(0), "--slots must be at least 1");
        anyhow::ensure!(self.centers >= 1, "--centers must be at least 1");
        anyhow::ensure!(
            self.center.is_none() || (self.centers == 1 && self.store == StoreUrl::Memory),
            "--centers and --store start centers here; --center runs against one elsewhere"
        );
        anyhow::ensure!(
            self.concurrency != Some(0),
            "--concurrency must be at least 1"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.udp_loss),
            "--udp-loss must be from 0 up to, not including, 1 (a loss of 1 would drop every datagram), not {}",
            self.udp_loss
        );
        anyhow::ensure!(
            !(self.step && self.json),
            "--step reads Enter from the terminal and prints phase messages; it does not mix with --json"
        );
        anyhow::ensure!(
            self.diagram.is_none() || self.patients <= DIAGRAM_LIMIT,
            "--diagram draws at most {DIAGRAM_LIMIT} patients, not {}",
            self.patients
        );
        anyhow::ensure!(
            self.center.is_some()
                || (self.doctors.host.is_none() && self.doctors.by_name.is_empty()),
            "--doctor-host and --doctor point at the doctors of a center elsewhere: add --center ADDR"
        );
        if let Some(pace) = self.pace {
            anyhow::ensure!(
                pace <= PACE_LIMIT,
                "--pace {} is more than a minute a message; did you mean {}ms?",
                crate::duration::show_duration(pace),
                pace.as_secs()
            );
        }
        self.framing.checked()?;
        anyhow::ensure!(
            !self.step || self.live.is_some() || std::io::stdin().is_terminal(),
            "--step reads Enter from a terminal, and stdin is not one (</dev/null, nohup, a pipe): add --live to step from the page"
        );
        Ok(())
    }

    /// Refuses, before the run, a --report or --diagram path that cannot
    /// be written: found after the run, it would lose the run's report.
    fn check_outputs(&self) -> anyhow::Result<()> {
        let files = [("--report", &self.report), ("--diagram", &self.diagram)];
        for (flag, path) in files {
            let Some(path) = path.as_deref().filter(|p| p.as_os_str() != "-") else {
                continue;
            };
            let existed = path.exists();
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .with_context(|| format!("{flag} {}: cannot write there", path.display()))?;
            if !existed {
                // Made only to try; the run writes it whole at its end.
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }
}

/// One patient's line in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatientRow {
    /// How the patient is named in diagrams and rows.
    pub label: String,
    pub user: String,
    pub plan: String,
    #[serde(flatten)]
    pub visit: Visit,
    pub latency_ms: f64,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One phase of the visits over the run (as load tools report them: k6's
/// summary, locust's statistics table). Latencies run from each request to
/// its answer, whatever the answer said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRow {
    pub phase: crate::patient::Phase,
    /// Visits that began this phase.
    pub count: u64,
    /// Visits that ended in this phase without a quote.
    pub failures: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// `count` over the run's wall time.
    pub per_second: f64,
}

/// One self-check of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invariant {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What a simulation did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub patients: usize,
    /// The slots of the table, when the center ran in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
    pub choice: Choice,
    pub seed: u64,
    pub concurrency: usize,
    pub udp_loss: f64,
    pub wall_seconds: f64,
    pub patients_per_second: f64,
    /// This process's peak resident memory (Linux's VmHWM), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
    /// How many visits ended each way, by [`crate::patient::Outcome::label`].
    pub outcomes: BTreeMap<String, usize>,
    pub bookings: usize,
    pub quote_retries: u64,
    pub latency: Latency,
    /// One row per phase: login, list, selection, quote.
    #[serde(default)]
    pub phases: Vec<PhaseRow>,
    /// The center's own counts, when it ran in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<CenterSummary>,
    /// Reservations the store already held before the run (a store that
    /// outlives runs): left out of the run's counts and checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_before: Option<usize>,
    /// How many centers ran here, on which store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The address of the center visited, when it ran elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_center: Option<String>,
    pub invariants: Vec<Invariant>,
    /// Every patient's row, for runs of at most [`TABLE_LIMIT`] patients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<PatientRow>>,
    /// Where the diagram went, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagram: Option<String>,
    /// Where the HTML report went, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl Report {
    /// True when every invariant holds.
    pub fn ok(&self) -> bool {
        self.invariants.iter().all(|i| i.ok)
    }
}

/// Runs a simulation and builds its report; a diagram or an HTML report
/// asked for is written (a diagram to stdout for `-`). A live view stops
/// with the run.
///
/// # Errors
///
/// Bad data files or flags, a socket that cannot be bound on loopback, or
/// a diagram that cannot be written.
pub fn simulate(options: &Options) -> anyhow::Result<Report> {
    let (report, room) = simulate_watched(options, None)?;
    room.stop();
    Ok(report)
}

/// As [`simulate`], calling `audience` with the live view's address once
/// it serves and before any patient goes (with `--live`): the bench's
/// watched case brings its browsers first, so they watch the whole run.
///
/// # Errors
///
/// As [`simulate`].
pub fn simulate_watched_by(
    options: &Options,
    audience: &dyn Fn(std::net::SocketAddr),
) -> anyhow::Result<Report> {
    let (report, room) = simulate_watched(options, Some(audience))?;
    room.stop();
    Ok(report)
}

/// As [`simulate`], handing back the classroom, so a live view can stay
/// up after the report is out.
fn simulate_watched(
    options: &Options,
    audience: Option<&dyn Fn(std::net::SocketAddr)>,
) -> anyhow::Result<(Report, classroom::Classroom)> {
    options.check()?;
    options.check_outputs()?;
    let source = &options.source;
    let fixtures = Fixtures::load(source)?;
    anyhow::ensure!(
        !fixtures.doctors.is_empty(),
        "the availabilities name no doctor"
    );
    let crowd = crowd::Crowd::new(options)?;
    if let (Some(audience), Some(addr)) = (audience, crowd.live_addr()) {
        audience(addr);
    }
    let mut report = match &options.center {
        Some(center) => crowd.visit_elsewhere(&fixtures, source, center)?,
        None => crowd.visit_in_process(&fixtures, source)?,
    };
    if let (Some(path), Some(diagram)) = (&options.diagram, crowd.diagram(&report, &fixtures)) {
        if path.as_os_str() == "-" {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(diagram.as_bytes())
                .context("writing the diagram to stdout")?;
            report.diagram = Some("stdout".into());
        } else {
            std::fs::write(path, diagram)
                .with_context(|| format!("writing the diagram to {}", path.display()))?;
            report.diagram = Some(path.display().to_string());
        }
    }
    let (room, slots, ends) = crowd.into_parts();
    if room.hub().is_some() {
        room.show_finished(classroom::run_summary(&report, &ends));
    }
    if let Some(path) = &options.report {
        classroom::write_report(path, &report, slots, room.trace(), &ends, &fixtures)?;
        report.html = Some(path.display().to_string());
    }
    Ok((report, room))
}

/// The `simulate` subcommand. Returns 0 when every invariant holds, 1
/// otherwise.
///
/// # Errors
///
/// As [`simulate`], or a report that cannot be written.
pub fn run(options: &Options) -> anyhow::Result<u8> {
    let (report, room) = simulate_watched(options, None)?;
    let text = if options.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        render(&report)
    };
    // With the diagram on stdout, the report steps aside to stderr.
    if options
        .diagram
        .as_deref()
        .is_some_and(|p| p.as_os_str() == "-")
    {
        eprint!("{text}");
    } else {
        crate::console::out(&text)?;
    }
    room.finish()?;
    Ok(if report.ok() { 0 } else { 1 })
}
