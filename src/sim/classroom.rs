//! simulate in front of a class: who watches the patients' messages (a
//! diagram's record, a pace, the live page), the controls that pause, step
//! and pace them (from the page, or Enter in the terminal with `--step`),
//! and the run drawn as one HTML file afterwards (`--report`).
//!
//! The page itself is `live`'s; this module only wires a run to it. A run
//! nobody watches gets no observer at all, so it pays nothing.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{Options, PatientRow, Report};
use crate::data::Fixtures;
use crate::live::{
    self, Controls, Counters, Event, Hub, LiveServer, PhaseTable, RunSummary, SlotView,
    report::Snapshot,
};
use crate::net;
use crate::patient::Outcome;
use crate::shutdown::Shutdown;
use crate::trace::{Observer, Trace, Transport};

/// At most this many slots are drawn on the page: a table of a hundred
/// thousand rows would only slow the browser.
const DRAWN_SLOTS: usize = 1000;

/// What watches a run, shared by every patient.
struct Watchers {
    trace: Option<Trace>,
    pace: Option<Duration>,
    controls: Option<Controls>,
    hub: Option<Hub>,
}

/// One patient's view of the watchers: its session number places it on
/// the page.
struct PatientWatch {
    watchers: Arc<Watchers>,
    session: u64,
}

impl Observer for PatientWatch {
    fn before_send(&self) {
        match (&self.watchers.controls, self.watchers.pace) {
            // The controls hold the pace, and pause or step it.
            (Some(controls), _) => controls.before_message(),
            (None, Some(pace)) => std::thread::sleep(pace),
            (None, None) => {}
        }
    }

    fn message(&self, from: &str, to: &str, text: &str, transport: Transport) {
        if let Some(trace) = &self.watchers.trace {
            trace.record(from, to, text, transport);
        }
        if let Some(hub) = &self.watchers.hub {
            hub.message(self.session, from, to, text, transport);
        }
    }
}

/// A run's audience: the record, the pace, the page and its controls.
pub(super) struct Classroom {
    watchers: Option<Arc<Watchers>>,
    server: Option<LiveServer>,
    stop: Shutdown,
}

impl Classroom {
    /// Sets up what `options` ask for; prints the page's address when there is
    /// one.
    ///
    /// # Errors
    ///
    /// The page's address cannot be bound.
    pub(super) fn start(options: &Options) -> anyhow::Result<Classroom> {
        let stop = Shutdown::new();
        // A report draws the messages of small runs, as a diagram does.
        let traced = options.diagram.is_some()
            || (options.report.is_some() && options.patients <= super::DIAGRAM_LIMIT);
        let trace = traced.then(Trace::new);
        let watched = options.live.is_some() || options.step;
        let controls = watched.then(|| {
            let controls = Controls::new({
                let stop = stop.clone();
                move || stop.is_triggered()
            });
            stop.on_trigger({
                let controls = controls.clone();
                move || controls.wake()
            });
            if let Some(pace) = options.pace {
                controls.set_pace(pace);
            }
            controls
        });
        let hub = options.live.is_some().then(Hub::new);
        let server = match (&options.live, &hub) {
            (Some(addr), Some(hub)) => {
                let listener = net::bind_tcp("the live view", addr)?;
                let server = live::serve(listener, hub.clone(), controls.clone(), {
                    let stop = stop.clone();
                    move || stop.is_triggered()
                })
                .context("starting the live view")?;
                if server.needs_token() {
                    // The room gets the plain URL; the controls are the
                    // teacher's, whose URL is only ever shown here.
                    eprintln!(
                        "medsim simulate: live view for the room (read only) at {}",
                        server.url()
                    );
                    eprintln!(
                        "medsim simulate: live view at {} (the teacher's: it has the controls; do not project it)",
                        server.teacher_url()
                    );
                } else {
                    eprintln!("medsim simulate: live view at {}", server.url());
                }
                Some(server)
            }
            _ => None,
        };
        if options.step
            && let Some(controls) = &controls
        {
            controls.pause();
            if !std::io::stdin().is_terminal() {
                // No one types here (</dev/null, nohup, a pipe that ends):
                // reading stdin would let everything go at once.
                controls.set_step_source("page");
                eprintln!(
                    "medsim simulate: --step: stdin is not a terminal, so steps come from the page only (its Step button)"
                );
                return Ok(Self::assemble(
                    trace,
                    options,
                    Some(controls.clone()),
                    hub,
                    server,
                    stop,
                ));
            }
            eprintln!("medsim simulate: --step: press Enter to let one message go");
            let controls = controls.clone();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    if line.is_err() {
                        break;
                    }
                    controls.step();
                }
                // No more input: let the run go on by itself.
                controls.resume();
            });
        }
        Ok(Self::assemble(trace, options, controls, hub, server, stop))
    }

    fn assemble(
        trace: Option<Trace>,
        options: &Options,
        controls: Option<Controls>,
        hub: Option<Hub>,
        server: Option<LiveServer>,
        stop: Shutdown,
    ) -> Classroom {
        let wanted =
            trace.is_some() || options.pace.is_some() || controls.is_some() || hub.is_some();
        Classroom {
            watchers: wanted.then(|| {
                Arc::new(Watchers {
                    trace,
                    pace: options.pace,
                    controls,
                    hub,
                })
            }),
            server,
            stop,
        }
    }

    /// The observer of patient `session`, when anything watches.
    pub(super) fn observer(&self, session: u64) -> Option<Arc<dyn Observer>> {
        let watchers = Arc::clone(self.watchers.as_ref()?);
        Some(Arc::new(PatientWatch { watchers, session }))
    }

    /// The live view's address, when it serves.
    pub(super) fn live_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(LiveServer::local_addr)
    }

    /// The page's hub, for the centers of this run to report to.
    pub(super) fn hub(&self) -> Option<Hub> {
        self.watchers.as_ref()?.hub.clone()
    }

    /// The run's record of messages, when one is kept.
    pub(super) fn trace(&self) -> Option<&Trace> {
        self.watchers.as_ref()?.trace.as_ref()
    }

    /// Shows the slot table on the page.
    pub(super) fn show_slots(&self, slots: impl Iterator<Item = SlotView>) {
        if let Some(hub) = self.hub() {
            hub.publish(Event::Slots {
                slots: slots.take(DRAWN_SLOTS).collect(),
            });
        }
    }

    /// A visit ended: its outcome on the page; with `from_patients` (no
    /// center of ours to say so), its booking or lost race too.
    pub(super) fn visit_ended(&self, row: &PatientRow, from_patients: bool) {
        let Some(hub) = self.hub() else {
            return;
        };
        let visit = &row.visit;
        if from_patients {
            match (&visit.outcome, visit.slot, visit.chosen) {
                (_, Some(index), _) => hub.publish(Event::Booked {
                    index,
                    holder: row.label.clone(),
                }),
                (Outcome::Taken, None, Some(index)) => hub.publish(Event::Lost {
                    index,
                    who: row.label.clone(),
                }),
                _ => {}
            }
        }
        hub.publish(Event::Outcome {
            patient: row.label.clone(),
            outcome: visit.outcome.label().to_owned(),
            latency_us: (row.latency_ms * 1e3) as u64,
        });
    }

    /// The run is over: the page shows its own summary from now on.
    pub(super) fn show_finished(&self, summary: RunSummary) {
        if let Some(hub) = self.hub() {
            hub.publish(Event::Finished(Box::new(summary)));
        }
    }

    /// The run is over and nobody is to look further: everything stops.
    pub(super) fn stop(self) {
        self.stop.trigger();
    }

    /// The run is over: patients held by the controls are let go; with a
    /// page, it stays up (for the class to look at the end) until Ctrl-C.
    ///
    /// # Errors
    ///
    /// The signal handlers could not be installed.
    pub(super) fn finish(self) -> anyhow::Result<()> {
        if let Some(server) = self.server {
            eprintln!(
                "medsim simulate: the run is over; the live view stays at {} until Ctrl-C",
                server.url()
            );
            let waiting = Shutdown::new();
            waiting.stop_on_signals()?;
            let (done, wait) = crossbeam_channel::bounded::<()>(0);
            waiting.on_trigger(move || drop(done));
            let _ = wait.recv();
            self.stop.trigger();
            // The process ends now: a browser's stream stuck in a write must
            // not keep it waiting for the server's threads.
            std::mem::forget(server);
        } else {
            self.stop.trigger();
        }
        Ok(())
    }
}

/// The slot table as the page draws it, from the data's slots and who
/// holds them.
pub(super) fn slot_views(
    fixtures: &Fixtures,
    generated: Option<u64>,
    holders: &[(u64, String)],
) -> Vec<SlotView> {
    let slots: Vec<crate::data::Slot> = match generated {
        Some(count) => {
            let doctors: Vec<(String, u16)> = fixtures
                .doctors
                .iter()
                .map(|d| (d.name.clone(), d.port))
                .collect();
            crate::data::generated_slots(count.min(DRAWN_SLOTS as u64), &doctors).collect()
        }
        None => fixtures.slots.iter().take(DRAWN_SLOTS).cloned().collect(),
    };
    slots
        .into_iter()
        .map(|s| SlotView {
            holder: holders
                .iter()
                .find(|(index, _)| *index == s.index)
                .map(|(_, holder)| holder.clone()),
            index: s.index,
            day: s.day,
            time: s.time,
            doctor: s.doctor,
        })
        .collect()
}

/// `(ended at ms, latency µs)` of a sample of the visits, and how many
/// visits each stands for.
pub(super) type Ends = (Vec<(u64, u64)>, u64);

/// The run's own numbers for the page and the report: the terminal
/// report's counters, its table per phase, and the chart over the run.
pub(super) fn run_summary(report: &Report, (ends, weight): &Ends) -> RunSummary {
    let reached: usize = report.outcomes.values().sum();
    let wall_ms = (report.wall_seconds * 1e3) as u64;
    let counters = Counters {
        elapsed_ms: wall_ms,
        sessions: reached as u64,
        per_second: report.patients_per_second,
        outcomes: report
            .outcomes
            .iter()
            .map(|(k, v)| (k.clone(), *v as u64))
            .collect(),
        p50_us: Some((report.latency.p50_ms * 1e3) as u64),
        p99_us: Some((report.latency.p99_ms * 1e3) as u64),
        messages: 0,
        bookings: report.bookings as u64,
        lost: report.outcomes.get("taken").copied().unwrap_or(0) as u64,
        dropped: 0,
    };
    let (header, rows) = super::report::phase_table(report);
    let phases = PhaseTable {
        header: header.iter().map(|(name, _)| (*name).to_owned()).collect(),
        rows,
        csv: super::report::phase_csv(report),
        json: serde_json::to_value(&report.phases).unwrap_or_default(),
    };
    RunSummary {
        counters,
        phases: Some(phases),
        latency: live::report::latency_series(
            ends,
            live::report::series_interval_ms(wall_ms, reached as u64),
            *weight,
        ),
    }
}

/// Writes the run as one self-contained HTML file.
///
/// # Errors
///
/// The file cannot be written.
pub(super) fn write_report(
    path: &Path,
    report: &Report,
    slots: Vec<SlotView>,
    trace: Option<&Trace>,
    ends: &Ends,
    fixtures: &Fixtures,
) -> anyhow::Result<()> {
    let command = crate::console::shell_words(std::env::args());
    let mut snapshot = Snapshot::new(
        format!(
            "medsim simulate: {}",
            crate::stats::plural(report.patients as u64, "patient", "patients")
        ),
        command,
    );
    // The names that hold slots are the patients' logins; the rows name them.
    snapshot.slots = slots;
    let rows = report.rows.as_deref().unwrap_or_default();
    snapshot.lost = rows
        .iter()
        .filter(|r| r.visit.outcome == Outcome::Taken)
        .filter_map(|r| {
            r.visit.chosen.map(|index| live::report::LostView {
                index,
                who: r.label.clone(),
            })
        })
        .collect();
    let patients: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let doctors: Vec<String> = fixtures.doctors.iter().map(|d| d.name.clone()).collect();
    match trace {
        Some(trace) => snapshot.add_trace(&trace.events(), &patients, &doctors),
        None => {
            snapshot.patients = patients;
            snapshot.doctors = doctors;
        }
    }
    snapshot.outcomes = rows
        .iter()
        .map(|r| {
            let v = &r.visit;
            live::report::OutcomeView {
                patient: r.label.clone(),
                outcome: v.outcome.label().to_owned(),
                latency_us: (r.latency_ms * 1e3) as u64,
                // As the terminal's row: a lost race shows its slot.
                slot: v.slot.or(match v.outcome {
                    Outcome::Taken => v.chosen,
                    _ => None,
                }),
                doctor: v.doctor.clone(),
                cost: v.cost,
                retries: v.retries,
            }
        })
        .collect();
    let summary = run_summary(report, ends);
    snapshot.latency = summary.latency;
    snapshot.phases = summary.phases;
    let mut counters = summary.counters;
    match trace {
        Some(trace) => counters.messages = trace.events().len() as u64,
        None => {
            snapshot.messages_note = Some(format!(
                "not recorded: a report draws the messages of runs of at most {} patients (--live shows a sample of any run)",
                super::DIAGRAM_LIMIT
            ));
        }
    }
    snapshot.counters = Some(counters);
    snapshot.summary = vec![
        ("patients".into(), report.patients.to_string()),
        ("bookings".into(), report.bookings.to_string()),
        (
            "throughput".into(),
            format!("{:.0} patients/s", report.patients_per_second),
        ),
        (
            "latency".into(),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms",
                report.latency.p50_ms, report.latency.p99_ms
            ),
        ),
        ("wall time".into(), format!("{:.3} s", report.wall_seconds)),
    ];
    snapshot.invariants = report
        .invariants
        .iter()
        .map(|i| live::report::InvariantView {
            name: i.name.clone(),
            ok: i.ok,
            detail: i.detail.clone(),
        })
        .collect();
    live::report::write_html(path, &snapshot)
        .with_context(|| format!("writing the report to {}", path.display()))
}
