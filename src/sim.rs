//! `simulate`: the center, every doctor and N patients as threads of one
//! process, over real loopback sockets on ephemeral ports; or, with
//! `--center`, N patients against a system running elsewhere (any
//! implementation of PROTOCOL.md).
//!
//! This module owns the wiring (binding port 0 so it runs beside anything
//! holding the default ports), the generated patients and slots, the patient
//! threads, the progress bar, the classroom extras (`--pace`, `--diagram`),
//! and the report: per-patient rows, counts, latency percentiles, and the
//! invariants it checks on itself (no slot given twice, every quote matching
//! the doctor's table, every patient reaching an outcome). The parties
//! themselves are their modules'.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::center::{self, Center, Limits};
use crate::console::Console;
use crate::data::{Fixtures, Patient, Slot, Source, Users};
use crate::doctor::{self, Doctor};
use crate::patient::{self, Chooser, Loss, Outcome, Settings, Visit};
use crate::protocol::{Dialect, Listing};
use crate::rng::SplitMix64;
use crate::shutdown::Shutdown;
use crate::slots::{DEFAULT_LIST_CAP, SlotBook};
use crate::trace::Trace;

/// How simulated patients pick a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
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

/// Salts that give choices and losses independent streams.
const CHOICE_SALT: u64 = 1;
const LOSS_SALT: u64 = 2;

/// Run the center, the doctors and N patients in one process over loopback
/// sockets, and report what happened.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many patients visit.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub patients: usize,
    /// Generate M slots instead of the data's (doctors taken in turn).
    #[arg(long, value_name = "M")]
    pub slots: Option<u64>,
    /// How patients choose a slot.
    #[arg(long, value_enum, default_value_t = Choice::Random)]
    pub choice: Choice,
    /// Seed for choices and datagram loss [default: from the clock, and
    /// printed so the run can be repeated].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Patients running at once [default: N, at most 64].
    #[arg(long, value_name = "C")]
    pub concurrency: Option<usize>,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Directory of data files [default: the built-in copies of fixtures/].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Fraction of doctor datagrams dropped, each way (0 to 1), to show
    /// the patients' retries.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub udp_loss: f64,
    /// Milliseconds a patient waits for a quote before sending again.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub quote_timeout_ms: u64,
    /// Quote requests a patient sends in all before giving up.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub quote_attempts: u32,
    /// Most free slots the center lists in one answer.
    #[arg(long, default_value_t = DEFAULT_LIST_CAP, value_name = "N")]
    pub list_cap: usize,
    /// Framing the patients speak.
    #[arg(long, default_value = "line", value_parser = crate::parse_dialect)]
    pub dialect: Dialect,
    /// Classic dialect only: pad every message to this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub classic_buffer: Option<usize>,
    /// Run the patients against the center at ADDR (any implementation of
    /// the protocol) and start no servers. Credentials come from --users or
    /// the data's users.txt, reused in turn when patients outnumber them.
    #[arg(long, value_name = "ADDR")]
    pub center: Option<String>,
    /// With --center: the host the center's `DOCTOR PORT` answers refer to
    /// [default: the center's host].
    #[arg(long, value_name = "HOST", requires = "center")]
    pub doctor_host: Option<String>,
    /// With --center: the users to log in as, one `USERNAME PASSWORD` a line
    /// [default: the data's users.txt].
    #[arg(long, value_name = "FILE", requires = "center")]
    pub users: Option<PathBuf>,
    /// Write a Mermaid sequence diagram of every message exchanged (TCP and
    /// UDP, passwords masked) to FILE. For runs of at most 20 patients.
    #[arg(long, value_name = "FILE")]
    pub diagram: Option<PathBuf>,
    /// Wait MS milliseconds before every message a patient sends, and print
    /// every party's phase messages, so a live audience can follow.
    #[arg(long, value_name = "MS")]
    pub pace: Option<u64>,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            patients: 2,
            slots: None,
            choice: Choice::Random,
            seed: Some(1),
            concurrency: None,
            json: false,
            fixtures: None,
            udp_loss: 0.0,
            quote_timeout_ms: 100,
            quote_attempts: 20,
            list_cap: DEFAULT_LIST_CAP,
            dialect: Dialect::Line,
            classic_buffer: None,
            center: None,
            doctor_host: None,
            users: None,
            diagram: None,
            pace: None,
        }
    }
}

/// One patient's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PatientRow {
    /// How the patient is named in phase messages and diagrams.
    pub label: String,
    pub user: String,
    pub plan: String,
    #[serde(flatten)]
    pub visit: Visit,
    pub latency_ms: f64,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One self-check of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Invariant {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// What a simulation did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub patients: usize,
    /// The slots of the table, when the center ran in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
    pub choice: Choice,
    pub seed: u64,
    pub concurrency: usize,
    pub udp_loss: f64,
    pub wall_seconds: f64,
    pub patients_per_second: f64,
    /// This process's peak resident memory (Linux's VmHWM), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
    pub outcomes: BTreeMap<&'static str, usize>,
    pub bookings: usize,
    pub quote_retries: u64,
    pub latency: Latency,
    /// The center's own counts, when it ran in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub center: Option<center::Summary>,
    /// The address of the center visited, when it ran elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_center: Option<String>,
    pub invariants: Vec<Invariant>,
    /// Every patient's row, for runs of at most [`TABLE_LIMIT`] patients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<PatientRow>>,
}

impl Report {
    /// True when every invariant holds.
    pub fn ok(&self) -> bool {
        self.invariants.iter().all(|i| i.ok)
    }
}

/// The patients of a run: the data's users (with their plan files where
/// they exist), then generated ones, `patientK` with `passwordKKK`.
fn patients(fixtures: &Fixtures, source: &Source, count: usize) -> Vec<Patient> {
    let plans = plans(fixtures);
    let plan_for = |k: usize| plans[(k - 1) % plans.len()].clone();
    (1..=count)
        .map(|k| {
            let name = format!("patient{k}");
            if let Some(password) = fixtures.users.password(&name) {
                let plan = Patient::load(source, &name).map_or_else(|_| plan_for(k), |p| p.plan);
                Patient {
                    username: name,
                    password: password.to_owned(),
                    plan,
                }
            } else {
                Patient {
                    password: format!("password{}", k.to_string().repeat(3)),
                    username: name,
                    plan: plan_for(k),
                }
            }
        })
        .collect()
}

/// `count` slots, days and times in turn, doctors in turn.
fn generated_slots(count: u64, doctors: &[(String, u16)]) -> Vec<Slot> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const TIMES: [&str; 8] = [
        "09am", "10am", "11am", "12pm", "01pm", "02pm", "03pm", "04pm",
    ];
    (1..=count)
        .map(|index| {
            let i = (index - 1) as usize;
            let (doctor, port) = &doctors[i % doctors.len()];
            Slot {
                index,
                day: DAYS[i % DAYS.len()].to_owned(),
                time: TIMES[(i / DAYS.len()) % TIMES.len()].to_owned(),
                doctor: doctor.clone(),
                port: *port,
            }
        })
        .collect()
}

/// Runs a simulation and builds its report.
///
/// # Errors
///
/// Bad data files or flags, a socket that cannot be bound on loopback, or
/// a diagram that cannot be written.
pub fn simulate(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.udp_loss),
        "--udp-loss must be from 0 up to (not including) 1, not {}",
        args.udp_loss
    );
    anyhow::ensure!(
        args.diagram.is_none() || args.patients <= DIAGRAM_LIMIT,
        "--diagram draws at most {DIAGRAM_LIMIT} patients, not {}",
        args.patients
    );
    let source = Source::from_option(args.fixtures.as_deref());
    let fixtures = Fixtures::load(&source)?;
    anyhow::ensure!(
        !fixtures.doctors.is_empty(),
        "the availabilities name no doctor"
    );
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let concurrency = args.concurrency.unwrap_or(args.patients.min(64)).max(1);
    // Paced runs are for an audience: every party says what it does.
    let console = match (args.pace, args.json) {
        (None, _) => Console::silent(),
        (Some(_), false) => Console::standard(false),
        (Some(_), true) => Console::phases_on_stderr(),
    };
    let crowd = Crowd {
        args,
        seed,
        concurrency,
        trace: args.diagram.is_some().then(Trace::new),
        console,
    };
    let report = match &args.center {
        Some(center) => crowd.visit_elsewhere(&fixtures, &source, center)?,
        None => crowd.visit_in_process(&fixtures, &source)?,
    };
    if let (Some(path), Some(trace)) = (&args.diagram, &crowd.trace) {
        let labels: Vec<String> = report
            .rows
            .iter()
            .flatten()
            .map(|r| r.label.clone())
            .collect();
        let doctors: Vec<String> = fixtures.doctors.iter().map(|d| d.name.clone()).collect();
        std::fs::write(path, trace.mermaid(&labels, &doctors))
            .with_context(|| format!("writing the diagram to {}", path.display()))?;
    }
    Ok(report)
}

/// A patient of a run and how it is named in messages and diagrams.
struct Visitor {
    patient: Patient,
    label: String,
}

/// What every patient thread of a run shares.
struct Crowd<'a> {
    args: &'a Args,
    seed: u64,
    concurrency: usize,
    trace: Option<Trace>,
    console: Console,
}

impl Crowd<'_> {
    /// The center and every doctor on ephemeral loopback ports, then the
    /// patients; the center's own table is checked afterwards too.
    fn visit_in_process(&self, fixtures: &Fixtures, source: &Source) -> anyhow::Result<Report> {
        let args = self.args;
        // Every server on an ephemeral loopback port: never the defaults.
        let listener = center::bind("127.0.0.1:0")?;
        let center_addr = listener.local_addr()?;
        let mut doctor_sockets: Vec<(Doctor, UdpSocket)> = Vec::new();
        let mut doctor_ports = Vec::new();
        for d in &fixtures.doctors {
            let socket = doctor::bind(&d.name, "127.0.0.1:0")?;
            doctor_ports.push((d.name.clone(), socket.local_addr()?.port()));
            doctor_sockets.push((
                Doctor::new(&d.name, d.fees.clone(), self.console.clone()),
                socket,
            ));
        }
        let port_of: HashMap<&str, u16> =
            doctor_ports.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        let slots = match args.slots {
            Some(count) => generated_slots(count, &doctor_ports),
            None => fixtures
                .slots
                .iter()
                .map(|s| Slot {
                    port: port_of.get(s.doctor.as_str()).copied().unwrap_or(s.port),
                    ..s.clone()
                })
                .collect(),
        };
        let visitors: Vec<Visitor> = patients(fixtures, source, args.patients)
            .into_iter()
            .map(|patient| Visitor {
                label: patient.username.clone(),
                patient,
            })
            .collect();
        let users = Users::from_pairs(
            visitors
                .iter()
                .map(|v| (v.patient.username.clone(), v.patient.password.clone())),
        );
        let book = SlotBook::new(&slots, args.list_cap);
        let limits = Limits {
            max_sessions: Limits::default().max_sessions.max(self.concurrency * 2),
            ..Limits::default()
        };
        let center = Arc::new(Center::new(
            users,
            book.clone(),
            limits,
            self.console.clone(),
        ));
        let same_target = slots.iter().map(|s| s.index).min().unwrap_or(1);
        let shutdown = Shutdown::new();
        let (rows, wall) = std::thread::scope(|scope| -> anyhow::Result<_> {
            let center_thread = scope.spawn(|| center.serve(listener, &shutdown));
            let doctor_threads: Vec<_> = doctor_sockets
                .iter()
                .map(|(doctor, socket)| scope.spawn(|| doctor.serve(socket, &shutdown)))
                .collect();
            let visited = self.visit(&visitors, &center_addr.to_string(), None, same_target);
            shutdown.trigger();
            center_thread
                .join()
                .map_err(|_| anyhow::anyhow!("the center thread panicked"))?
                .context("serving the center")?;
            for handle in doctor_threads {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a doctor thread panicked"))?
                    .context("serving a doctor")?;
            }
            Ok(visited)
        })?;
        Ok(self.report(
            fixtures,
            &slots,
            rows,
            wall,
            Some(&book),
            Target::InProcess(center.summary()),
        ))
    }

    /// The patients against a center running elsewhere, logging in as the
    /// users given, reused in turn.
    fn visit_elsewhere(
        &self,
        fixtures: &Fixtures,
        source: &Source,
        center: &str,
    ) -> anyhow::Result<Report> {
        let args = self.args;
        let users = match &args.users {
            Some(path) => Users::load(path)?,
            None => fixtures.users.clone(),
        };
        let visitors = visitors_for(&users, fixtures, source, args.patients)?;
        let same_target = match args.choice {
            Choice::Same => self.lowest_listed(&visitors[0].patient, center)?,
            Choice::First | Choice::Random => 0,
        };
        let (rows, wall) = self.visit(&visitors, center, args.doctor_host.as_deref(), same_target);
        Ok(self.report(
            fixtures,
            &fixtures.slots,
            rows,
            wall,
            None,
            Target::Elsewhere(center.to_owned()),
        ))
    }

    /// The lowest index a center lists now, found by a visit that lists
    /// and leaves without choosing: the slot `--choice same` races for.
    fn lowest_listed(&self, patient: &Patient, center: &str) -> anyhow::Result<u64> {
        struct Lowest(Option<u64>);
        impl Chooser for Lowest {
            fn choose(&mut self, listings: &[Listing]) -> std::io::Result<Option<u64>> {
                self.0 = listings.iter().map(|l| l.index).min();
                Ok(None)
            }
        }
        let mut settings = self.settings(center, None, patient.username.clone());
        settings.trace = None;
        settings.pace = None;
        let mut lowest = Lowest(None);
        let visit = patient::visit(&mut settings, patient, &mut lowest, &Console::silent());
        lowest.0.with_context(|| {
            format!(
                "--choice same needs a free slot to race for; listing at {center} as {}: {}",
                patient.username, visit.outcome
            )
        })
    }

    fn settings(&self, center: &str, doctor_host: Option<&str>, label: String) -> Settings {
        let args = self.args;
        Settings {
            doctor_host: doctor_host.map(str::to_owned),
            dialect: args.dialect,
            classic_buffer: args.classic_buffer,
            quote_timeout: Duration::from_millis(args.quote_timeout_ms.max(1)),
            quote_attempts: args.quote_attempts.max(1),
            label,
            trace: self.trace.clone(),
            pace: args.pace.map(Duration::from_millis),
            ..Settings::new(center)
        }
    }

    /// Every visitor visits, `concurrency` at a time; rows come back in
    /// the visitors' order, `None` for a patient thread that never reported.
    fn visit(
        &self,
        visitors: &[Visitor],
        center: &str,
        doctor_host: Option<&str>,
        same_target: u64,
    ) -> (Vec<Option<PatientRow>>, Duration) {
        let progress = if !self.args.json && std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(visitors.len() as u64).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} patients {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let started = Instant::now();
        let mut rows: Vec<Option<PatientRow>> = vec![None; visitors.len()];
        std::thread::scope(|scope| {
            let (work_tx, work_rx) = crossbeam_channel::unbounded::<usize>();
            let (row_tx, row_rx) = crossbeam_channel::unbounded::<(usize, PatientRow)>();
            for k in 0..visitors.len() {
                // Unbounded and its receivers alive: cannot fail.
                let _ = work_tx.send(k);
            }
            drop(work_tx);
            for _ in 0..self.concurrency {
                let (work_rx, row_tx) = (work_rx.clone(), row_tx.clone());
                scope.spawn(move || {
                    while let Ok(k) = work_rx.recv() {
                        let row =
                            self.run_patient(k, &visitors[k], center, doctor_host, same_target);
                        if row_tx.send((k, row)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(row_tx);
            for (k, row) in row_rx {
                rows[k] = Some(row);
                progress.inc(1);
            }
        });
        progress.finish_and_clear();
        (rows, started.elapsed())
    }

    fn run_patient(
        &self,
        k: usize,
        visitor: &Visitor,
        center: &str,
        doctor_host: Option<&str>,
        same_target: u64,
    ) -> PatientRow {
        let seed = self.seed;
        let mut chooser: Box<dyn Chooser> = match self.args.choice {
            Choice::First => Box::new(patient::First),
            Choice::Random => Box::new(patient::Random(SplitMix64::for_item(
                seed,
                CHOICE_SALT,
                k as u64,
            ))),
            Choice::Same => Box::new(patient::Fixed(same_target)),
        };
        let mut settings = self.settings(center, doctor_host, visitor.label.clone());
        settings.loss = (self.args.udp_loss > 0.0).then(|| Loss {
            rate: self.args.udp_loss,
            rng: SplitMix64::for_item(seed, LOSS_SALT, k as u64),
        });
        let started = Instant::now();
        let patient = &visitor.patient;
        let visit = patient::visit(&mut settings, patient, chooser.as_mut(), &self.console);
        PatientRow {
            label: visitor.label.clone(),
            user: patient.username.clone(),
            plan: patient.plan.clone(),
            visit,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        }
    }

    fn report(
        &self,
        fixtures: &Fixtures,
        slots: &[Slot],
        rows: Vec<Option<PatientRow>>,
        wall: Duration,
        book: Option<&SlotBook>,
        target: Target,
    ) -> Report {
        let patients = rows.len();
        let missing = rows.iter().filter(|r| r.is_none()).count();
        let rows: Vec<PatientRow> = rows.into_iter().flatten().collect();
        let mut outcomes = BTreeMap::new();
        for row in &rows {
            *outcomes.entry(row.visit.outcome.label()).or_insert(0) += 1;
        }
        let mut latencies: Vec<f64> = rows.iter().map(|r| r.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        let percentile = |p: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
            latencies[rank - 1]
        };
        let latency = Latency {
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
            max_ms: latencies.last().copied().unwrap_or(0.0),
        };
        let invariants = check_invariants(fixtures, slots, &rows, missing, book);
        let bookings = rows.iter().filter(|r| r.visit.slot.is_some()).count();
        let (center, external_center) = match target {
            Target::InProcess(summary) => (Some(summary), None),
            Target::Elsewhere(addr) => (None, Some(addr)),
        };
        Report {
            patients,
            slots: book.is_some().then_some(slots.len()),
            choice: self.args.choice,
            seed: self.seed,
            concurrency: self.concurrency,
            udp_loss: self.args.udp_loss,
            wall_seconds: wall.as_secs_f64(),
            patients_per_second: rows.len() as f64 / wall.as_secs_f64().max(1e-9),
            peak_rss_kib: peak_rss_kib(),
            outcomes,
            bookings,
            quote_retries: rows.iter().map(|r| u64::from(r.visit.retries)).sum(),
            latency,
            center,
            external_center,
            invariants,
            rows: (patients <= TABLE_LIMIT).then_some(rows),
        }
    }
}

/// This process's peak resident set, from `/proc/self/status`; `None`
/// where there is no such file.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Where the center of a run was.
enum Target {
    /// In this process, with its counts.
    InProcess(center::Summary),
    /// Elsewhere, at this address.
    Elsewhere(String),
}

/// `count` visitors logging in as `users` in turn (in name order), each
/// with the plan of its `NAMEinsurance.txt` when the data has one, the
/// data's plans in turn otherwise. A user who visits more than once is
/// labelled `USER.K`, K counting its visits from 1.
fn visitors_for(
    users: &Users,
    fixtures: &Fixtures,
    source: &Source,
    count: usize,
) -> anyhow::Result<Vec<Visitor>> {
    let credentials = users.pairs();
    anyhow::ensure!(!credentials.is_empty(), "no users to log in as");
    let plans = plans(fixtures);
    Ok((0..count)
        .map(|k| {
            let (username, password) = credentials[k % credentials.len()];
            let plan = Patient::load(source, username)
                .map(|p| p.plan)
                .unwrap_or_else(|_| plans[k % plans.len()].clone());
            let label = if count > credentials.len() {
                format!("{username}.{}", k / credentials.len() + 1)
            } else {
                username.to_owned()
            };
            Visitor {
                patient: Patient {
                    username: username.to_owned(),
                    password: password.to_owned(),
                    plan,
                },
                label,
            }
        })
        .collect())
}

/// Every plan some doctor quotes, in order; `insurance1` when none does.
fn plans(fixtures: &Fixtures) -> Vec<String> {
    let mut all: Vec<String> = fixtures
        .doctors
        .iter()
        .flat_map(|d| d.fees.plans().map(str::to_owned))
        .collect();
    all.sort();
    all.dedup();
    if all.is_empty() {
        all.push("insurance1".to_owned());
    }
    all
}

fn check_invariants(
    fixtures: &Fixtures,
    slots: &[Slot],
    rows: &[PatientRow],
    missing: usize,
    book: Option<&SlotBook>,
) -> Vec<Invariant> {
    let mut invariants = Vec::new();

    // No slot given twice: by the patients' own accounts, and as the
    // center's table records it when the center ran here.
    let mut given: HashMap<u64, Vec<&str>> = HashMap::new();
    for row in rows {
        if let Some(slot) = row.visit.slot {
            given.entry(slot).or_default().push(&row.label);
        }
    }
    let mut twice: Vec<String> = given
        .iter()
        .filter(|(_, users)| users.len() > 1)
        .map(|(slot, users)| format!("slot {slot} to {}", users.join(", ")))
        .collect();
    twice.sort();
    let (mismatched, recorded_here) = match book {
        Some(book) => {
            let holders = book.holders();
            let mut mismatched: Vec<String> = holders
                .iter()
                .filter(|(slot, holder)| {
                    given
                        .get(slot)
                        .is_none_or(|users| users != &[holder.as_str()])
                })
                .map(|(slot, holder)| format!("the center holds slot {slot} for {holder}"))
                .collect();
            if holders.len() != given.len() {
                mismatched.push(format!(
                    "the center holds {} slots, the patients report {}",
                    holders.len(),
                    given.len()
                ));
            }
            (mismatched, true)
        }
        None => (Vec::new(), false),
    };
    let ok = twice.is_empty() && mismatched.is_empty();
    invariants.push(Invariant {
        name: "no slot reserved twice",
        ok,
        detail: if ok {
            format!(
                "{} slots booked, each once, {}",
                given.len(),
                if recorded_here {
                    "as the center records"
                } else {
                    "as the patients report"
                }
            )
        } else {
            twice
                .into_iter()
                .chain(mismatched)
                .collect::<Vec<_>>()
                .join("; ")
        },
    });

    // Every quote is the doctor's fee for the patient's plan. The doctor is
    // the one the center named, or (for a port alone) the slot's in the data.
    let slot_doctor: HashMap<u64, &str> =
        slots.iter().map(|s| (s.index, s.doctor.as_str())).collect();
    let mut wrong = Vec::new();
    let mut unknown_doctors = std::collections::BTreeSet::new();
    let mut checked = 0;
    for row in rows {
        let Some(cost) = row.visit.cost else {
            continue;
        };
        let doctor = row
            .visit
            .doctor
            .as_deref()
            .or_else(|| row.visit.slot.and_then(|s| slot_doctor.get(&s).copied()));
        let Some(table) = doctor.and_then(|d| fixtures.doctor(d)) else {
            unknown_doctors.insert(doctor.unwrap_or("unnamed").to_owned());
            continue;
        };
        checked += 1;
        let expected = table.fees.cost(&row.plan);
        if expected != Some(cost) {
            wrong.push(format!(
                "{} was quoted {cost} by {}, expected {}",
                row.label,
                table.name,
                expected.map_or("no cost (unknown plan)".to_owned(), |c| c.to_string())
            ));
        }
    }
    let mut detail = if wrong.is_empty() {
        format!("{checked} quotes checked")
    } else {
        wrong.join("; ")
    };
    if !unknown_doctors.is_empty() {
        detail.push_str(&format!(
            "; not checked: no fee table in the data for {}",
            unknown_doctors.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    invariants.push(Invariant {
        name: "every quote matches the doctor's table",
        ok: wrong.is_empty(),
        detail,
    });

    // Every patient reached an outcome, and every booked one its quote.
    invariants.push(Invariant {
        name: "every patient reached an outcome",
        ok: missing == 0,
        detail: format!("{} of {} patients", rows.len(), rows.len() + missing),
    });
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| {
            matches!(
                r.visit.outcome,
                Outcome::Protocol(_)
                    | Outcome::Connection(_)
                    | Outcome::DoctorSilent
                    | Outcome::Cancelled
            )
        })
        .take(5)
        .map(|r| format!("{}: {}", r.user, r.visit.outcome))
        .collect();
    invariants.push(Invariant {
        name: "no visit failed (every booked patient was quoted)",
        ok: failed.is_empty(),
        detail: if failed.is_empty() {
            "every visit ended in a quote, a refusal or a lost race".into()
        } else {
            failed.join("; ")
        },
    });
    invariants
}

/// Formats the report for people.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let place = match (&report.external_center, report.slots) {
        (Some(center), _) => format!("against the center at {center}"),
        (None, Some(slots)) => format!("{slots} slots"),
        (None, None) => String::new(),
    };
    let _ = writeln!(
        out,
        "medsim simulate: {} patients, {place}, choice {}, seed {}, concurrency {}{}",
        report.patients,
        serde_json::to_value(report.choice)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        report.seed,
        report.concurrency,
        if report.udp_loss > 0.0 {
            format!(", udp loss {}", report.udp_loss)
        } else {
            String::new()
        }
    );
    if let Some(rows) = &report.rows {
        let _ = writeln!(
            out,
            "\n{:<12} {:>5} {:<7} {:>5} {:<16} {:>10}",
            "user", "slot", "doctor", "cost", "outcome", "latency"
        );
        let dash = "-";
        for row in rows {
            let v = &row.visit;
            let _ = writeln!(
                out,
                "{:<12} {:>5} {:<7} {:>5} {:<16} {:>7.1} ms",
                row.label,
                v.slot.map_or(dash.to_owned(), |s| s.to_string()),
                v.doctor.as_deref().unwrap_or(dash),
                v.cost.map_or(dash.to_owned(), |c| format!("{c}$")),
                v.outcome.label(),
                row.latency_ms
            );
        }
    }
    let outcomes: Vec<String> = report
        .outcomes
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(out, "\noutcomes:    {}", outcomes.join(", "));
    let _ = writeln!(out, "bookings:    {}", report.bookings);
    let _ = writeln!(
        out,
        "throughput:  {:.0} patients/s ({} in {:.3} s)",
        report.patients_per_second, report.patients, report.wall_seconds
    );
    let _ = writeln!(
        out,
        "latency:     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.latency.p50_ms, report.latency.p99_ms, report.latency.max_ms
    );
    let _ = writeln!(
        out,
        "retries:     {} quote requests sent again",
        report.quote_retries
    );
    let _ = writeln!(out, "invariants:");
    for inv in &report.invariants {
        let _ = writeln!(
            out,
            "  {} {} ({})",
            if inv.ok { "ok  " } else { "FAIL" },
            inv.name,
            inv.detail
        );
    }
    out
}

/// The `simulate` subcommand. Returns 0 when every invariant holds, 1
/// otherwise.
///
/// # Errors
///
/// As [`simulate`], or a report that cannot be written.
pub fn run(args: &Args) -> anyhow::Result<u8> {
    let report = simulate(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.ok() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_patients_follow_the_classic_pattern() {
        let source = Source::built_in();
        let fixtures = Fixtures::load(&source).unwrap();
        let all = patients(&fixtures, &source, 5);
        let summary: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|p| (p.username.as_str(), p.password.as_str(), p.plan.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("patient1", "password111", "insurance1"),
                ("patient2", "password222", "insurance2"),
                ("patient3", "password333", "insurance3"),
                ("patient4", "password444", "insurance1"),
                ("patient5", "password555", "insurance2"),
            ]
        );
    }

    #[test]
    fn generated_slots_take_doctors_in_turn() {
        let doctors = [("doc1".to_owned(), 1000), ("doc2".to_owned(), 2000)];
        let slots = generated_slots(9, &doctors);
        assert_eq!(slots.len(), 9);
        assert_eq!(
            (slots[0].index, slots[0].doctor.as_str(), slots[0].port),
            (1, "doc1", 1000)
        );
        assert_eq!((slots[1].doctor.as_str(), slots[1].port), ("doc2", 2000));
        assert_eq!(
            (slots[7].day.as_str(), slots[7].time.as_str()),
            ("Mon", "10am")
        );
    }
}
