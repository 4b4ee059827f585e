//! `simulate`: the center, every doctor and N patients as threads of one
//! process, over real loopback sockets on ephemeral ports.
//!
//! This module owns the wiring (binding port 0 so it runs beside anything
//! holding the default ports), the generated patients and slots, the patient
//! threads, the progress bar, and the report: per-patient rows, counts,
//! latency percentiles, and the invariants it checks on itself (no slot
//! given twice, every quote matching the doctor's table, every patient
//! reaching an outcome). The parties themselves are their modules'.

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
use crate::protocol::Dialect;
use crate::rng::SplitMix64;
use crate::shutdown::Shutdown;
use crate::slots::{DEFAULT_LIST_CAP, SlotBook};

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
        }
    }
}

/// One patient's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PatientRow {
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
    pub slots: usize,
    pub choice: Choice,
    pub seed: u64,
    pub concurrency: usize,
    pub udp_loss: f64,
    pub wall_seconds: f64,
    pub patients_per_second: f64,
    pub outcomes: BTreeMap<&'static str, usize>,
    pub bookings: usize,
    pub quote_retries: u64,
    pub latency: Latency,
    pub center: center::Summary,
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
    let plans: Vec<String> = {
        let mut all: Vec<String> = fixtures
            .doctors
            .iter()
            .flat_map(|d| d.fees.plans().map(str::to_owned))
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let plan_for = |k: usize| -> String {
        if plans.is_empty() {
            "insurance1".to_owned()
        } else {
            plans[(k - 1) % plans.len()].clone()
        }
    };
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
/// Bad data files or flags, or a socket that cannot be bound on loopback.
pub fn simulate(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.udp_loss),
        "--udp-loss must be from 0 up to (not including) 1, not {}",
        args.udp_loss
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

    // Every server on an ephemeral loopback port: never the defaults.
    let listener = center::bind("127.0.0.1:0")?;
    let center_addr = listener.local_addr()?;
    let mut doctor_sockets: Vec<(Doctor, UdpSocket)> = Vec::new();
    let mut doctor_ports = Vec::new();
    for d in &fixtures.doctors {
        let socket = doctor::bind(&d.name, "127.0.0.1:0")?;
        doctor_ports.push((d.name.clone(), socket.local_addr()?.port()));
        doctor_sockets.push((
            Doctor::new(&d.name, d.fees.clone(), Console::silent()),
            socket,
        ));
    }
    let port_of: HashMap<&str, u16> = doctor_ports.iter().map(|(n, p)| (n.as_str(), *p)).collect();
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
    let patients = patients(&fixtures, &source, args.patients);
    let users = Users::from_pairs(
        patients
            .iter()
            .map(|p| (p.username.clone(), p.password.clone())),
    );
    let book = SlotBook::new(&slots, args.list_cap);
    let limits = Limits {
        max_sessions: Limits::default().max_sessions.max(concurrency * 2),
        ..Limits::default()
    };
    let center = Arc::new(Center::new(users, book.clone(), limits, Console::silent()));
    let same_target = slots.iter().map(|s| s.index).min().unwrap_or(1);

    let progress = if !args.json && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(patients.len() as u64).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} patients {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };

    let shutdown = Shutdown::new();
    let started = Instant::now();
    let (rows, wall) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let center_thread = scope.spawn(|| center.serve(listener, &shutdown));
        let doctor_threads: Vec<_> = doctor_sockets
            .iter()
            .map(|(doctor, socket)| scope.spawn(|| doctor.serve(socket, &shutdown)))
            .collect();

        let (work_tx, work_rx) = crossbeam_channel::unbounded::<usize>();
        let (row_tx, row_rx) = crossbeam_channel::unbounded::<(usize, PatientRow)>();
        for k in 0..patients.len() {
            // Unbounded and its receivers alive: cannot fail.
            let _ = work_tx.send(k);
        }
        drop(work_tx);
        for _ in 0..concurrency {
            let (work_rx, row_tx) = (work_rx.clone(), row_tx.clone());
            let patients = &patients;
            scope.spawn(move || {
                while let Ok(k) = work_rx.recv() {
                    let row = run_patient(args, seed, k, &patients[k], center_addr, same_target);
                    if row_tx.send((k, row)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(row_tx);
        let mut rows: Vec<Option<PatientRow>> = vec![None; patients.len()];
        for (k, row) in row_rx {
            rows[k] = Some(row);
            progress.inc(1);
        }
        let wall = started.elapsed();
        progress.finish_and_clear();
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
        Ok((rows, wall))
    })?;

    Ok(build_report(
        args,
        seed,
        concurrency,
        &fixtures,
        &slots,
        &patients,
        rows,
        wall,
        &book,
        center.summary(),
    ))
}

fn run_patient(
    args: &Args,
    seed: u64,
    k: usize,
    patient: &Patient,
    center: std::net::SocketAddr,
    same_target: u64,
) -> PatientRow {
    let mut chooser: Box<dyn Chooser> = match args.choice {
        Choice::First => Box::new(patient::First),
        Choice::Random => Box::new(patient::Random(SplitMix64::for_item(
            seed,
            CHOICE_SALT,
            k as u64,
        ))),
        Choice::Same => Box::new(patient::Fixed(same_target)),
    };
    let mut settings = Settings {
        dialect: args.dialect,
        quote_timeout: Duration::from_millis(args.quote_timeout_ms.max(1)),
        quote_attempts: args.quote_attempts.max(1),
        label: patient.username.clone(),
        loss: (args.udp_loss > 0.0).then(|| Loss {
            rate: args.udp_loss,
            rng: SplitMix64::for_item(seed, LOSS_SALT, k as u64),
        }),
        ..Settings::new(center.to_string())
    };
    let started = Instant::now();
    let visit = patient::visit(&mut settings, patient, chooser.as_mut(), &Console::silent());
    PatientRow {
        user: patient.username.clone(),
        plan: patient.plan.clone(),
        visit,
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &Args,
    seed: u64,
    concurrency: usize,
    fixtures: &Fixtures,
    slots: &[Slot],
    patients: &[Patient],
    rows: Vec<Option<PatientRow>>,
    wall: Duration,
    book: &SlotBook,
    center: center::Summary,
) -> Report {
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
    Report {
        patients: patients.len(),
        slots: slots.len(),
        choice: args.choice,
        seed,
        concurrency,
        udp_loss: args.udp_loss,
        wall_seconds: wall.as_secs_f64(),
        patients_per_second: rows.len() as f64 / wall.as_secs_f64().max(1e-9),
        outcomes,
        bookings,
        quote_retries: rows.iter().map(|r| u64::from(r.visit.retries)).sum(),
        latency,
        center,
        invariants,
        rows: (patients.len() <= TABLE_LIMIT).then_some(rows),
    }
}

fn check_invariants(
    fixtures: &Fixtures,
    slots: &[Slot],
    rows: &[PatientRow],
    missing: usize,
    book: &SlotBook,
) -> Vec<Invariant> {
    let mut invariants = Vec::new();

    // No slot given twice: by the patients' own accounts, and as the
    // center's table records it.
    let mut given: HashMap<u64, Vec<&str>> = HashMap::new();
    for row in rows {
        if let Some(slot) = row.visit.slot {
            given.entry(slot).or_default().push(&row.user);
        }
    }
    let mut twice: Vec<String> = given
        .iter()
        .filter(|(_, users)| users.len() > 1)
        .map(|(slot, users)| format!("slot {slot} to {}", users.join(", ")))
        .collect();
    twice.sort();
    let holders = book.holders();
    let mismatched: Vec<String> = holders
        .iter()
        .filter(|(slot, holder)| {
            given
                .get(slot)
                .is_none_or(|users| users != &[holder.as_str()])
        })
        .map(|(slot, holder)| format!("the center holds slot {slot} for {holder}"))
        .collect();
    invariants.push(Invariant {
        name: "no slot reserved twice",
        ok: twice.is_empty() && mismatched.is_empty() && holders.len() == given.len(),
        detail: if twice.is_empty() && mismatched.is_empty() {
            format!(
                "{} slots booked, each once, as the center records",
                given.len()
            )
        } else {
            twice
                .into_iter()
                .chain(mismatched)
                .collect::<Vec<_>>()
                .join("; ")
        },
    });

    // Every quote is the doctor's fee for the patient's plan.
    let slot_doctor: HashMap<u64, &str> =
        slots.iter().map(|s| (s.index, s.doctor.as_str())).collect();
    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let cost = row.visit.cost?;
            let expected = row
                .visit
                .slot
                .and_then(|s| slot_doctor.get(&s))
                .and_then(|d| fixtures.doctor(d))
                .and_then(|d| d.fees.cost(&row.plan));
            (expected != Some(cost))
                .then(|| format!("{} was quoted {cost}, expected {expected:?}", row.user))
        })
        .collect();
    let quoted = rows.iter().filter(|r| r.visit.cost.is_some()).count();
    invariants.push(Invariant {
        name: "every quote matches the doctor's table",
        ok: wrong.is_empty(),
        detail: if wrong.is_empty() {
            format!("{quoted} quotes checked")
        } else {
            wrong.join("; ")
        },
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
    let _ = writeln!(
        out,
        "medsim simulate: {} patients, {} slots, choice {}, seed {}, concurrency {}{}",
        report.patients,
        report.slots,
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
                row.user,
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
