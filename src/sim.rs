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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use crate::patient::{self, Chooser, Framing, Loss, Outcome, Settings, Visit};
use crate::protocol::Listing;
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
    /// Patients running at once [default: N, at most 64; 1 with --pace].
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
    /// How the patients frame their messages.
    #[command(flatten)]
    pub framing: Framing,
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
            framing: Framing::default(),
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

/// Who visits. The k-th visitor is made when its turn comes, so a run of a
/// hundred thousand patients keeps no list of them.
struct Roster {
    /// Logins in turn; `None` for in-process runs, whose patients are the
    /// data's users by name (`patientK`), then generated ones.
    logins: Option<Vec<(String, String)>>,
    /// The data's users, for in-process runs.
    data_users: Users,
    /// Plans of the data's `NAMEinsurance.txt` files.
    data_plans: HashMap<String, String>,
    /// Every plan some doctor quotes, taken in turn by the others.
    plans: Vec<String>,
    count: usize,
}

impl Roster {
    /// The data's users, then `patientK` with `passwordKKK`.
    fn in_process(fixtures: &Fixtures, source: &Source, count: usize) -> Roster {
        Roster {
            logins: None,
            data_users: fixtures.users.clone(),
            data_plans: data_plans(fixtures.users.pairs().into_iter().map(|(u, _)| u), source),
            plans: plans(fixtures),
            count,
        }
    }

    /// `users` in turn (shorter names first, then in name order).
    fn cycling(
        users: &Users,
        fixtures: &Fixtures,
        source: &Source,
        count: usize,
    ) -> anyhow::Result<Roster> {
        let logins: Vec<(String, String)> = users
            .pairs()
            .into_iter()
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
            .collect();
        anyhow::ensure!(!logins.is_empty(), "no users to log in as");
        Ok(Roster {
            data_plans: data_plans(logins.iter().map(|(u, _)| u.as_str()), source),
            logins: Some(logins),
            data_users: Users::default(),
            plans: plans(fixtures),
            count,
        })
    }

    /// Visitor `k` (from 0): its credentials, its plan (its own plan file
    /// when the data has one, the plans in turn otherwise) and its label. A
    /// login used more than once is labelled `USER.K`, K counting its visits.
    fn visitor(&self, k: usize) -> Visitor {
        let plan_in_turn = || self.plans[k % self.plans.len()].clone();
        let (username, password, label) = match &self.logins {
            Some(logins) => {
                let (username, password) = &logins[k % logins.len()];
                let label = if self.count > logins.len() {
                    format!("{username}.{}", k / logins.len() + 1)
                } else {
                    username.clone()
                };
                (username.clone(), password.clone(), label)
            }
            None => {
                let username = format!("patient{}", k + 1);
                let password = match self.data_users.password(&username) {
                    Some(password) => password.to_owned(),
                    None => format!("password{}", (k + 1).to_string().repeat(3)),
                };
                (username.clone(), password, username)
            }
        };
        let plan = self
            .data_plans
            .get(&username)
            .cloned()
            .unwrap_or_else(plan_in_turn);
        Visitor {
            patient: Patient {
                username,
                password,
                plan,
            },
            label,
        }
    }

    /// Every visitor's credentials, for a center of this process.
    fn users(&self) -> Users {
        Users::from_pairs((0..self.count).map(|k| {
            let patient = self.visitor(k).patient;
            (patient.username, patient.password)
        }))
    }
}

/// The plans of the `NAMEinsurance.txt` files the data has for `names`.
fn data_plans<'a>(
    names: impl Iterator<Item = &'a str>,
    source: &Source,
) -> HashMap<String, String> {
    names
        .filter_map(|name| {
            Patient::load(source, name)
                .ok()
                .map(|p| (name.to_owned(), p.plan))
        })
        .collect()
}

/// `count` slots, days and times in turn, doctors in turn.
fn generated_slots(count: u64, doctors: &[(String, u16)]) -> impl Iterator<Item = Slot> + '_ {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const TIMES: [&str; 8] = [
        "09am", "10am", "11am", "12pm", "01pm", "02pm", "03pm", "04pm",
    ];
    (1..=count).map(|index| {
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
    // A paced run is a demo: one patient at a time, so a seed replays it
    // message for message (concurrent patients race differently each run).
    let default_concurrency = if args.pace.is_some() {
        1
    } else {
        args.patients.min(64)
    };
    let concurrency = args.concurrency.unwrap_or(default_concurrency).max(1);
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
        let (book, slot_count, same_target) = match args.slots {
            // Straight into the table: a large generated list is never held.
            Some(count) => (
                SlotBook::from_slots(generated_slots(count, &doctor_ports), args.list_cap),
                count as usize,
                1,
            ),
            None => {
                let slots: Vec<Slot> = fixtures
                    .slots
                    .iter()
                    .map(|s| Slot {
                        port: port_of.get(s.doctor.as_str()).copied().unwrap_or(s.port),
                        ..s.clone()
                    })
                    .collect();
                let lowest = slots.iter().map(|s| s.index).min().unwrap_or(1);
                (SlotBook::new(&slots, args.list_cap), slots.len(), lowest)
            }
        };
        let roster = Roster::in_process(fixtures, source, args.patients);
        let limits = Limits {
            max_sessions: Limits::default().max_sessions.max(self.concurrency * 2),
            ..Limits::default()
        };
        let center = Arc::new(Center::new(
            roster.users(),
            book.clone(),
            limits,
            self.console.clone(),
        ));
        let shutdown = Shutdown::new();
        let (tally, wall) = std::thread::scope(|scope| -> anyhow::Result<_> {
            let center_thread = scope.spawn(|| center.serve(listener, &shutdown));
            let doctor_threads: Vec<_> = doctor_sockets
                .iter()
                .map(|(doctor, socket)| scope.spawn(|| doctor.serve(socket, &shutdown)))
                .collect();
            let visited = self.visit(
                fixtures,
                &roster,
                &center_addr.to_string(),
                None,
                same_target,
            );
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
            &roster,
            tally,
            wall,
            Some(&book),
            Target::InProcess {
                summary: center.summary(),
                slots: slot_count,
            },
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
        let roster = Roster::cycling(&users, fixtures, source, args.patients)?;
        let same_target = match args.choice {
            Choice::Same => self.lowest_listed(&roster.visitor(0).patient, center)?,
            Choice::First | Choice::Random => 0,
        };
        let (tally, wall) = self.visit(
            fixtures,
            &roster,
            center,
            args.doctor_host.as_deref(),
            same_target,
        );
        Ok(self.report(
            &roster,
            tally,
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
            dialect: args.framing.dialect,
            classic_buffer: args.framing.classic_buffer,
            quote_timeout: Duration::from_millis(args.quote_timeout_ms.max(1)),
            quote_attempts: args.quote_attempts.max(1),
            label,
            trace: self.trace.clone(),
            pace: args.pace.map(Duration::from_millis),
            ..Settings::new(center)
        }
    }

    /// Every visitor of `roster` visits, `concurrency` at a time; each visit
    /// is tallied as it ends.
    fn visit<'f>(
        &self,
        fixtures: &'f Fixtures,
        roster: &Roster,
        center: &str,
        doctor_host: Option<&str>,
        same_target: u64,
    ) -> (Tally<'f>, Duration) {
        let progress = if !self.args.json && std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(roster.count as u64).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} patients {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut tally = Tally::new(fixtures, roster.count);
        let started = Instant::now();
        // Patients are numbered, not listed: each thread takes the next.
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let (row_tx, row_rx) = crossbeam_channel::bounded::<(usize, PatientRow)>(1024);
            for _ in 0..self.concurrency {
                let (next, row_tx) = (&next, row_tx.clone());
                scope.spawn(move || {
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= roster.count {
                            return;
                        }
                        let row = self.run_patient(
                            k,
                            &roster.visitor(k),
                            center,
                            doctor_host,
                            same_target,
                        );
                        if row_tx.send((k, row)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(row_tx);
            for (k, row) in row_rx {
                tally.add(k, row);
                progress.inc(1);
            }
        });
        progress.finish_and_clear();
        (tally, started.elapsed())
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
        roster: &Roster,
        mut tally: Tally,
        wall: Duration,
        book: Option<&SlotBook>,
        target: Target,
    ) -> Report {
        let patients = roster.count;
        let mut latencies = std::mem::take(&mut tally.latencies);
        latencies.sort_by(f64::total_cmp);
        let percentile = |p: f64| crate::nearest_rank(&latencies, p).unwrap_or(0.0);
        let latency = Latency {
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
            max_ms: latencies.last().copied().unwrap_or(0.0),
        };
        let invariants = tally.invariants(roster, book);
        let (center, slots, external_center) = match target {
            Target::InProcess { summary, slots } => (Some(summary), Some(slots), None),
            Target::Elsewhere(addr) => (None, None, Some(addr)),
        };
        Report {
            patients,
            slots,
            choice: self.args.choice,
            seed: self.seed,
            concurrency: self.concurrency,
            udp_loss: self.args.udp_loss,
            wall_seconds: wall.as_secs_f64(),
            patients_per_second: tally.reached as f64 / wall.as_secs_f64().max(1e-9),
            peak_rss_kib: peak_rss_kib(),
            outcomes: tally.outcomes,
            bookings: tally.given.len(),
            quote_retries: tally.retries,
            latency,
            center,
            external_center,
            invariants,
            rows: tally.rows.map(|rows| rows.into_iter().flatten().collect()),
        }
    }
}

/// This process's peak resident set, from `/proc/self/status`; `None`
/// where there is no such file.
fn peak_rss_kib() -> Option<u64> {
    crate::proc_status("self", "VmHWM:")
}

/// Where the center of a run was.
enum Target {
    /// In this process, with its counts and its number of slots.
    InProcess {
        summary: center::Summary,
        slots: usize,
    },
    /// Elsewhere, at this address.
    Elsewhere(String),
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

/// What the report keeps of each visit as it ends: counts, latencies and
/// what the invariants need. Whole rows are kept only for the table (at most
/// [`TABLE_LIMIT`] patients), so memory per patient stays a few bytes.
struct Tally<'a> {
    fixtures: &'a Fixtures,
    /// The data's slots' doctors, for answers that name only a port.
    slot_doctor: HashMap<u64, &'a str>,
    reached: usize,
    outcomes: BTreeMap<&'static str, usize>,
    latencies: Vec<f64>,
    retries: u64,
    /// (slot, visitor) for every reservation a patient reported.
    given: Vec<(u64, usize)>,
    quotes_checked: usize,
    wrong_quotes: Vec<String>,
    unknown_doctors: BTreeSet<String>,
    /// The first few visits that failed, and how many did.
    failed: Vec<String>,
    failed_count: usize,
    rows: Option<Vec<Option<PatientRow>>>,
}

/// Where the center's table (`holders`, in index order) and the patients'
/// accounts (`given`, sorted) disagree: one walk over both.
fn held_as_reported(
    holders: &[(u64, String)],
    given: &[(u64, usize)],
    roster: &Roster,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut runs = given.chunk_by(|a, b| a.0 == b.0).peekable();
    for (slot, holder) in holders {
        while let Some(run) = runs.next_if(|run| run[0].0 < *slot) {
            problems.push(format!(
                "patients report slot {} but the center holds it for no one",
                run[0].0
            ));
        }
        match runs.next_if(|run| run[0].0 == *slot) {
            Some([(_, k)]) if roster.visitor(*k).patient.username == *holder => {}
            _ => problems.push(format!("the center holds slot {slot} for {holder}")),
        }
    }
    for run in runs {
        problems.push(format!(
            "patients report slot {} but the center holds it for no one",
            run[0].0
        ));
    }
    problems
}

/// At most this many failures or wrong quotes are quoted in a report.
const QUOTED_PROBLEMS: usize = 5;

impl<'a> Tally<'a> {
    fn new(fixtures: &'a Fixtures, patients: usize) -> Tally<'a> {
        Tally {
            fixtures,
            slot_doctor: fixtures
                .slots
                .iter()
                .map(|s| (s.index, s.doctor.as_str()))
                .collect(),
            reached: 0,
            outcomes: BTreeMap::new(),
            latencies: Vec::with_capacity(patients),
            retries: 0,
            given: Vec::new(),
            quotes_checked: 0,
            wrong_quotes: Vec::new(),
            unknown_doctors: BTreeSet::new(),
            failed: Vec::new(),
            failed_count: 0,
            rows: (patients <= TABLE_LIMIT).then(|| vec![None; patients]),
        }
    }

    fn add(&mut self, k: usize, row: PatientRow) {
        let visit = &row.visit;
        self.reached += 1;
        *self.outcomes.entry(visit.outcome.label()).or_insert(0) += 1;
        self.latencies.push(row.latency_ms);
        self.retries += u64::from(visit.retries);
        if let Some(slot) = visit.slot {
            self.given.push((slot, k));
        }
        if let Some(cost) = visit.cost {
            self.check_quote(&row, cost);
        }
        if matches!(
            visit.outcome,
            Outcome::Protocol(_)
                | Outcome::Connection(_)
                | Outcome::DoctorSilent
                | Outcome::Cancelled
        ) {
            self.failed_count += 1;
            if self.failed.len() < QUOTED_PROBLEMS {
                self.failed
                    .push(format!("{}: {}", row.label, visit.outcome));
            }
        }
        if let Some(rows) = &mut self.rows
            && let Some(place) = rows.get_mut(k)
        {
            *place = Some(row);
        }
    }

    /// The quote must be the doctor's fee for the patient's plan. The doctor
    /// is the one the center named, or (for a port alone) the slot's in the
    /// data.
    fn check_quote(&mut self, row: &PatientRow, cost: u64) {
        let visit = &row.visit;
        let doctor = visit
            .doctor
            .as_deref()
            .or_else(|| visit.slot.and_then(|s| self.slot_doctor.get(&s).copied()));
        let Some(table) = doctor.and_then(|d| self.fixtures.doctor(d)) else {
            self.unknown_doctors
                .insert(doctor.unwrap_or("unnamed").to_owned());
            return;
        };
        self.quotes_checked += 1;
        let expected = table.fees.cost(&row.plan);
        if expected != Some(cost) && self.wrong_quotes.len() < QUOTED_PROBLEMS {
            self.wrong_quotes.push(format!(
                "{} was quoted {cost} by {}, expected {}",
                row.label,
                table.name,
                expected.map_or("no cost (unknown plan)".to_owned(), |c| c.to_string())
            ));
        }
    }

    /// Checks the run; sorts `given` by slot on the way.
    fn invariants(&mut self, roster: &Roster, book: Option<&SlotBook>) -> Vec<Invariant> {
        let mut invariants = Vec::new();

        // No slot given twice: by the patients' own accounts, and as the
        // center's table records it when the center ran here.
        self.given.sort_unstable();
        let given = &self.given;
        let mut twice = Vec::new();
        for run in given
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|run| run.len() > 1)
        {
            let labels: Vec<String> = run.iter().map(|&(_, k)| roster.visitor(k).label).collect();
            twice.push(format!("slot {} to {}", run[0].0, labels.join(", ")));
        }
        let mismatched = book.map_or_else(Vec::new, |book| {
            held_as_reported(&book.holders(), given, roster)
        });
        let ok = twice.is_empty() && mismatched.is_empty();
        invariants.push(Invariant {
            name: "no slot reserved twice",
            ok,
            detail: if ok {
                format!(
                    "{} slots booked, each once, {}",
                    given.len(),
                    if book.is_some() {
                        "as the center records"
                    } else {
                        "as the patients report"
                    }
                )
            } else {
                twice
                    .into_iter()
                    .chain(mismatched)
                    .take(2 * QUOTED_PROBLEMS)
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        });

        let mut detail = if self.wrong_quotes.is_empty() {
            format!("{} quotes checked", self.quotes_checked)
        } else {
            self.wrong_quotes.join("; ")
        };
        if !self.unknown_doctors.is_empty() {
            detail.push_str(&format!(
                "; not checked: no fee table in the data for {}",
                self.unknown_doctors
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        invariants.push(Invariant {
            name: "every quote matches the doctor's table",
            ok: self.wrong_quotes.is_empty(),
            detail,
        });

        invariants.push(Invariant {
            name: "every patient reached an outcome",
            ok: self.reached == roster.count,
            detail: format!("{} of {} patients", self.reached, roster.count),
        });
        invariants.push(Invariant {
            name: "no visit failed (every booked patient was quoted)",
            ok: self.failed_count == 0,
            detail: if self.failed_count == 0 {
                "every visit ended in a quote, a refusal or a lost race".into()
            } else {
                format!("{} failed: {}", self.failed_count, self.failed.join("; "))
            },
        });
        invariants
    }
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
        let roster = Roster::in_process(&fixtures, &source, 5);
        let summary: Vec<(String, String, String, String)> = (0..5)
            .map(|k| {
                let v = roster.visitor(k);
                (
                    v.label,
                    v.patient.username,
                    v.patient.password,
                    v.patient.plan,
                )
            })
            .collect();
        let expected = [
            ("patient1", "password111", "insurance1"),
            ("patient2", "password222", "insurance2"),
            ("patient3", "password333", "insurance3"),
            ("patient4", "password444", "insurance1"),
            ("patient5", "password555", "insurance2"),
        ]
        .map(|(u, p, plan)| (u.to_owned(), u.to_owned(), p.to_owned(), plan.to_owned()));
        assert_eq!(summary, expected);
        assert_eq!(roster.users().len(), 5);
    }

    #[test]
    fn logins_are_reused_in_turn_and_labelled_by_visit() {
        let source = Source::built_in();
        let fixtures = Fixtures::load(&source).unwrap();
        let users = Users::from_pairs([
            ("ann".to_owned(), "a".to_owned()),
            ("patient2".to_owned(), "password222".to_owned()),
        ]);
        let roster = Roster::cycling(&users, &fixtures, &source, 3).unwrap();
        let visitors: Vec<(String, String)> = (0..3)
            .map(|k| {
                let v = roster.visitor(k);
                (v.label, v.patient.plan)
            })
            .collect();
        assert_eq!(
            visitors,
            [
                ("ann.1".to_owned(), "insurance1".to_owned()),
                ("patient2.1".to_owned(), "insurance2".to_owned()),
                ("ann.2".to_owned(), "insurance3".to_owned()),
            ]
        );
        assert!(Roster::cycling(&Users::default(), &fixtures, &source, 3).is_err());
    }

    #[test]
    fn the_tables_and_the_accounts_are_compared_slot_by_slot() {
        let source = Source::built_in();
        let fixtures = Fixtures::load(&source).unwrap();
        let roster = Roster::in_process(&fixtures, &source, 3);
        let holders = [(1, "patient1".to_owned()), (4, "patient3".to_owned())];
        assert!(held_as_reported(&holders, &[(1, 0), (4, 2)], &roster).is_empty());
        assert_eq!(
            held_as_reported(&holders, &[(1, 1), (2, 0), (4, 2), (9, 1)], &roster),
            [
                "the center holds slot 1 for patient1",
                "patients report slot 2 but the center holds it for no one",
                "patients report slot 9 but the center holds it for no one",
            ]
        );
        assert_eq!(
            held_as_reported(&holders, &[(4, 2), (4, 1)], &roster),
            [
                "the center holds slot 1 for patient1",
                "the center holds slot 4 for patient3",
            ]
        );
    }

    #[test]
    fn generated_slots_take_doctors_in_turn() {
        let doctors = [("doc1".to_owned(), 1000), ("doc2".to_owned(), 2000)];
        let slots: Vec<Slot> = generated_slots(9, &doctors).collect();
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
