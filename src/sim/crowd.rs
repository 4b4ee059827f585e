//! Running a crowd of patients: against a system started here (through
//! `system`) or a center elsewhere, `concurrency` at a time, each visit
//! tallied as it ends; the classroom (a record, a pace, the live page)
//! watches every message.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::classroom::{self, Classroom};
use super::roster::{Roster, Visitor};
use super::tally::Tally;
use super::{Choice, Latency, Options, PatientRow, Report};
use crate::client::{DoctorOverrides, Loss, Retries, Watch};
use crate::console::Console;
use crate::data::{Fixtures, Patient, Source, Users};
use crate::patient::{self, Chooser, Settings};
use crate::protocol::Listing;
use crate::rng::SplitMix64;
use crate::stats;
use crate::system::{self, CenterSummary, System};

/// Salts that give choices and losses independent streams.
const CHOICE_SALT: u64 = 1;
const LOSS_SALT: u64 = 2;

/// Where the center of a run was.
enum Target {
    /// In this process, with its counts, its table's holders (this run's)
    /// and its size, and how many reservations the store held before.
    InProcess {
        summary: CenterSummary,
        holders: Vec<(u64, String)>,
        slots: usize,
        held_before: usize,
    },
    /// Elsewhere, at this address.
    Elsewhere(String),
}

/// What every patient thread of a run shares.
pub(super) struct Crowd<'a> {
    options: &'a Options,
    seed: u64,
    concurrency: usize,
    room: Classroom,
    console: Console,
    /// The table at the end of an in-process run, as the page draws it.
    final_slots: parking_lot::Mutex<Vec<crate::live::SlotView>>,
    /// (ended at ms, latency µs) of a sample of the visits, for charts,
    /// and how many visits each stands for.
    ends: parking_lot::Mutex<classroom::Ends>,
    /// `--choice same`: where the first patients wait for each other.
    same_gate: Arc<SameGate>,
}

impl<'a> Crowd<'a> {
    pub(super) fn new(options: &'a Options) -> anyhow::Result<Crowd<'a>> {
        let seed = options.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                // 53 bits: a seed printed in JSON is read back exactly by
                // JavaScript and jq, so it repeats the run.
                & ((1 << 53) - 1)
        });
        // A paced run is a demo: one patient at a time, so a seed replays it
        // message for message (concurrent patients race differently each run).
        let shown = options.pace.is_some() || options.step;
        let default_concurrency = if shown { 1 } else { options.patients.min(64) };
        // Paced runs are for an audience: every party says what it does.
        let console = match (shown, options.json) {
            (false, _) => Console::silent(),
            (true, false) => Console::standard(false),
            (true, true) => Console::phases_on_stderr(),
        };
        let concurrency = options.concurrency.unwrap_or(default_concurrency).max(1);
        Ok(Crowd {
            options,
            seed,
            concurrency,
            room: Classroom::start(options)?,
            console,
            final_slots: parking_lot::Mutex::new(Vec::new()),
            ends: parking_lot::Mutex::new((Vec::new(), 1)),
            same_gate: Arc::new(SameGate::new(concurrency.min(options.patients))),
        })
    }

    /// The live view's address, when it serves.
    pub(super) fn live_addr(&self) -> Option<std::net::SocketAddr> {
        self.room.live_addr()
    }

    /// The run's diagram, when one was asked for.
    pub(super) fn diagram(&self, report: &Report, fixtures: &Fixtures) -> Option<String> {
        self.options.diagram.as_ref()?;
        let trace = self.room.trace()?;
        let labels: Vec<String> = report
            .rows
            .iter()
            .flatten()
            .map(|r| r.label.clone())
            .collect();
        let doctors: Vec<String> = fixtures.doctors.iter().map(|d| d.name.clone()).collect();
        Some(trace.mermaid(&labels, &doctors))
    }

    /// The center and every doctor on ephemeral loopback ports, then the
    /// patients; the center's own table is checked afterwards too.
    pub(super) fn visit_in_process(
        &self,
        fixtures: &Fixtures,
        source: &Source,
    ) -> anyhow::Result<Report> {
        let options = self.options;
        let roster = Roster::in_process(fixtures, source, options.patients);
        let mut servers = system::Options::from_fixtures(fixtures);
        servers.users = roster.users();
        servers.list_cap = options.list_cap;
        servers.console = self.console.clone();
        servers.limits.max_sessions = servers.limits.max_sessions.max(self.concurrency * 2);
        if let Some(count) = options.slots {
            servers.slots = system::Slots::Generated(count);
        }
        servers.store = options.store.clone();
        servers.centers = options.centers;
        servers.watcher = self
            .room
            .hub()
            .map(|hub| std::sync::Arc::new(hub) as std::sync::Arc<dyn crate::center::Watcher>);
        self.room
            .show_slots(classroom::slot_views(fixtures, options.slots, &[]).into_iter());
        let system = System::start(servers)?;
        // A store that outlives runs may hold earlier runs' bookings: they
        // are not this run's, and `--choice same` races for a slot still
        // free.
        let before = system.holders()?;
        let same_target = match options.slots {
            Some(count) => (1..=count).find(|i| !before.iter().any(|(h, _)| h == i)),
            None => fixtures
                .slots
                .iter()
                .map(|s| s.index)
                .find(|i| !before.iter().any(|(h, _)| h == i)),
        }
        .unwrap_or(1);
        let centers: Vec<String> = system.centers().iter().map(|c| c.to_string()).collect();
        // The doctors by name: a durable store names the data's ports.
        let doctors = DoctorOverrides {
            host: None,
            by_name: system
                .doctors()
                .iter()
                .map(|(name, addr)| (name.clone(), addr.to_string()))
                .collect(),
        };
        // Grants are held to the slots the center serves: generated ones
        // (`--slots N`), when asked for.
        let served = options.slots.map(|count| {
            let doctors: Vec<(String, u16)> = fixtures
                .doctors
                .iter()
                .map(|d| (d.name.clone(), d.port))
                .collect();
            Fixtures {
                slots: crate::data::generated_slots(count, &doctors).collect(),
                ..fixtures.clone()
            }
        });
        let (tally, wall) = self.visit(
            served.as_ref().unwrap_or(fixtures),
            &roster,
            &centers,
            &doctors,
            same_target,
        );
        let mut holders = system.holders()?;
        holders.retain(|held| !before.contains(held));
        let slots = system.slot_count();
        let summary = system.stop()?;
        *self.final_slots.lock() = classroom::slot_views(fixtures, options.slots, &holders);
        Ok(self.report(
            &roster,
            tally,
            wall,
            Target::InProcess {
                summary,
                holders,
                slots,
                held_before: before.len(),
            },
        ))
    }

    /// The patients against a center running elsewhere, logging in as the
    /// users given, reused in turn.
    pub(super) fn visit_elsewhere(
        &self,
        fixtures: &Fixtures,
        source: &Source,
        center: &str,
    ) -> anyhow::Result<Report> {
        let options = self.options;
        let users = match &options.users {
            Some(path) => Users::load(path)?,
            None => fixtures.users.clone(),
        };
        let roster = Roster::cycling(&users, fixtures, source, options.patients)?;
        let same_target = match options.choice {
            Choice::Same => self.lowest_listed(&roster.visitor(0).patient, center)?,
            Choice::First | Choice::Random => 0,
        };
        let centers = [center.to_owned()];
        let (tally, wall) = self.visit(fixtures, &roster, &centers, &options.doctors, same_target);
        Ok(self.report(&roster, tally, wall, Target::Elsewhere(center.to_owned())))
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
        let mut settings = self.settings(center, &DoctorOverrides::default(), String::new(), None);
        let mut lowest = Lowest(None);
        let visit = patient::visit(&mut settings, patient, &mut lowest, &Console::silent());
        lowest.0.with_context(|| {
            format!(
                "--choice same needs a free slot to race for; listing at {center} as {}: {}",
                patient.username, visit.outcome
            )
        })
    }

    /// A patient's settings; `session` places it on the page, `None` for a
    /// visit nobody watches.
    fn settings(
        &self,
        center: &str,
        doctors: &DoctorOverrides,
        me: String,
        session: Option<u64>,
    ) -> Settings {
        let options = self.options;
        Settings {
            doctors: doctors.clone(),
            framing: options.framing,
            quote: Retries {
                wait: options.quote_timeout,
                attempts: options.quote_attempts,
            },
            label: patient::patient_label(&me),
            watch: session
                .and_then(|k| self.room.observer(k))
                .map(|observer| Watch { observer, me }),
            ..Settings::new(center)
        }
    }

    /// Every visitor of `roster` visits, `concurrency` at a time, the
    /// `centers` in turn; each visit is tallied as it ends.
    fn visit<'f>(
        &self,
        fixtures: &'f Fixtures,
        roster: &Roster,
        centers: &[String],
        doctors: &DoctorOverrides,
        same_target: u64,
    ) -> (Tally<'f>, Duration) {
        // The bar would draw over a paced run's phase messages.
        let progress = if !self.options.json
            && self.console.is_quiet()
            && std::io::stderr().is_terminal()
        {
            indicatif::ProgressBar::new(roster.count as u64).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} patients {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut tally = Tally::new(fixtures, roster.count).with_routes(doctors);
        let started = Instant::now();
        // Patients are numbered, not listed: each thread takes the next.
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let (row_tx, row_rx) = crossbeam_channel::bounded::<(usize, PatientRow)>(1024);
            for _ in 0..self.concurrency {
                let (next, row_tx) = (&next, row_tx.clone());
                scope.spawn(move || {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= roster.count {
                            return;
                        }
                        let center = &centers[k % centers.len()];
                        let row =
                            self.run_patient(k, &roster.visitor(k), center, doctors, same_target);
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
        doctors: &DoctorOverrides,
        same_target: u64,
    ) -> PatientRow {
        let seed = self.seed;
        let passed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut chooser: Box<dyn Chooser> = match self.options.choice {
            Choice::First => Box::new(patient::First),
            Choice::Random => Box::new(patient::Random(SplitMix64::for_item(
                seed,
                CHOICE_SALT,
                k as u64,
            ))),
            Choice::Same => Box::new(Released {
                gate: Arc::clone(&self.same_gate),
                choice: same_target,
                passed: Arc::clone(&passed),
            }),
        };
        let mut settings = self.settings(center, doctors, visitor.label.clone(), Some(k as u64));
        settings.loss = (self.options.udp_loss > 0.0).then(|| Loss {
            rate: self.options.udp_loss,
            rng: SplitMix64::for_item(seed, LOSS_SALT, k as u64),
        });
        let started = Instant::now();
        let patient = &visitor.patient;
        let visit = patient::visit(&mut settings, patient, chooser.as_mut(), &self.console);
        if self.options.choice == Choice::Same
            && k < self.same_gate.size
            && !passed.load(Ordering::Relaxed)
        {
            self.same_gate.left();
        }
        let row = PatientRow {
            label: visitor.label.clone(),
            user: patient.username.clone(),
            plan: patient.plan.clone(),
            visit,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        self.room.visit_ended(&row, self.options.center.is_some());
        row
    }

    /// What the run leaves for its HTML report: the final table, and when
    /// a sample of the visits ended with their latencies.
    pub(super) fn into_parts(self) -> (Classroom, Vec<crate::live::SlotView>, classroom::Ends) {
        (
            self.room,
            self.final_slots.into_inner(),
            self.ends.into_inner(),
        )
    }

    fn report(&self, roster: &Roster, mut tally: Tally, wall: Duration, target: Target) -> Report {
        *self.ends.lock() = (std::mem::take(&mut tally.ends), tally.ends_weight());
        let latency = Latency {
            p50_ms: tally.latencies.quantile_us(0.50) / 1e3,
            p99_ms: tally.latencies.quantile_us(0.99) / 1e3,
            max_ms: tally.latencies.max_us() / 1e3,
        };
        let holders = match &target {
            Target::InProcess { holders, .. } => Some(holders.as_slice()),
            Target::Elsewhere(_) => None,
        };
        let invariants = tally.invariants(roster, holders);
        let (center, slots, held_before, external_center) = match target {
            Target::InProcess {
                summary,
                slots,
                held_before,
                ..
            } => (Some(summary), Some(slots), Some(held_before), None),
            Target::Elsewhere(addr) => (None, None, None, Some(addr)),
        };
        let here = external_center.is_none();
        let wall_seconds = wall.as_secs_f64().max(1e-9);
        let phases = crate::patient::Phase::ALL
            .into_iter()
            .zip(&tally.phases)
            .map(|(phase, t)| super::PhaseRow {
                phase,
                count: t.count,
                failures: t.failures,
                p50_ms: t.latencies.quantile_us(0.50) / 1e3,
                p95_ms: t.latencies.quantile_us(0.95) / 1e3,
                p99_ms: t.latencies.quantile_us(0.99) / 1e3,
                per_second: t.count as f64 / wall_seconds,
            })
            .collect();
        Report {
            patients: roster.count,
            slots,
            choice: self.options.choice,
            seed: self.seed,
            concurrency: self.concurrency,
            udp_loss: self.options.udp_loss,
            wall_seconds: wall.as_secs_f64(),
            patients_per_second: tally.reached as f64 / wall.as_secs_f64().max(1e-9),
            peak_rss_kib: stats::proc_status("self", "VmHWM:"),
            outcomes: std::mem::take(&mut tally.outcomes),
            bookings: tally.given.len(),
            quote_retries: tally.retries,
            latency,
            phases,
            center,
            centers: here.then_some(self.options.centers),
            held_before,
            store: here.then(|| self.options.store.masked()),
            external_center,
            invariants,
            rows: tally
                .rows
                .take()
                .map(|rows| rows.into_iter().flatten().collect()),
            diagram: None,
            html: None,
        }
    }
}

/// The selection step of `--choice same`: the patients running at once
/// wait here until every one of them has listed or left, then select
/// together, as check's race does, so a center that checks and reserves
/// apart is caught whenever check's race catches it. Only the first wave
/// waits (later patients come as earlier ones leave, one at a time). A
/// patient of the first wave that ends without reaching the gate (a
/// refused login, a timeout) counts as arrived, so it holds no one; a
/// bound of [`SameGate::WAIT`] guards the rest.
struct SameGate {
    size: usize,
    arrived: parking_lot::Mutex<usize>,
    all_here: parking_lot::Condvar,
}

impl SameGate {
    const WAIT: Duration = Duration::from_secs(60);

    fn new(size: usize) -> SameGate {
        SameGate {
            size,
            arrived: parking_lot::Mutex::new(0),
            all_here: parking_lot::Condvar::new(),
        }
    }

    /// Counts one patient of the first wave as arrived.
    fn arrive(&self) -> parking_lot::MutexGuard<'_, usize> {
        let mut arrived = self.arrived.lock();
        *arrived += 1;
        if *arrived >= self.size {
            self.all_here.notify_all();
        }
        arrived
    }

    /// Waits for the whole first wave.
    fn pass(&self) {
        let mut arrived = self.arrive();
        let deadline = Instant::now() + Self::WAIT;
        while *arrived < self.size {
            if self.all_here.wait_until(&mut arrived, deadline).timed_out() {
                // Open the gate for good: whoever was missing is not coming.
                *arrived = self.size;
                self.all_here.notify_all();
            }
        }
    }

    /// A patient of the first wave ended without reaching the gate.
    fn left(&self) {
        drop(self.arrive());
    }
}

/// `--choice same`'s chooser: waits at the gate, then chooses the slot.
struct Released {
    gate: Arc<SameGate>,
    choice: u64,
    /// Set once this patient has passed the gate.
    passed: Arc<std::sync::atomic::AtomicBool>,
}

impl Chooser for Released {
    fn choose(&mut self, _listings: &[Listing]) -> std::io::Result<Option<u64>> {
        self.passed.store(true, Ordering::Relaxed);
        self.gate.pass();
        Ok(Some(self.choice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_that_leaves_before_the_gate_holds_no_one() {
        let gate = Arc::new(SameGate::new(2));
        std::thread::scope(|scope| {
            let waiting = Arc::clone(&gate);
            let through = scope.spawn(move || {
                waiting.pass();
                Instant::now()
            });
            while *gate.arrived.lock() < 1 {
                std::thread::yield_now();
            }
            let left = Instant::now();
            gate.left();
            let passed = through.join().expect("the waiting patient");
            assert!(passed >= left, "released only when the other left");
        });
    }

    #[test]
    fn the_same_gate_releases_the_first_wave_together_and_then_stays_open() {
        let gate = Arc::new(SameGate::new(3));
        let released = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let (gate, released) = (Arc::clone(&gate), Arc::clone(&released));
                scope.spawn(move || {
                    gate.pass();
                    released.fetch_add(1, Ordering::SeqCst);
                });
            }
            // The two wait for the third; none is through before it comes.
            while *gate.arrived.lock() < 2 {
                std::thread::yield_now();
            }
            assert_eq!(released.load(Ordering::SeqCst), 0);
            gate.pass();
        });
        assert_eq!(released.load(Ordering::SeqCst), 2);
        let started = Instant::now();
        gate.pass();
        assert!(started.elapsed() < SameGate::WAIT);
    }
}
