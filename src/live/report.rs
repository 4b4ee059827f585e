//! The live picture of a finished run, as one self-contained HTML file
//! (`write_html`): the slot table, the sequence diagram of the recorded
//! messages of up to [`MAX_PATIENTS`] patients, the latency chart, the
//! invariants and the command line that made it.
//!
//! It is the live page itself with the run embedded as JSON, so the two
//! always draw alike. This module only shapes and writes the data; the
//! simulation fills a [`Snapshot`] from its own report.

use std::path::Path;

use serde::Serialize;

use super::{Counters, PhaseTable, SlotView, Transport, json_for_script};
use crate::trace;

/// Patients whose messages a report draws.
pub const MAX_PATIENTS: usize = 20;

/// Everything a report shows. Build it with [`Snapshot::new`] and the
/// `add_*`/field setters; every list may stay empty.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The page's title, e.g. `medsim simulate: 300 patients`.
    pub title: String,
    /// The command line that made the run, as typed.
    pub command: String,
    /// The slot table at the end of the run.
    pub slots: Vec<SlotView>,
    /// Requests for a slot that someone else got.
    pub lost: Vec<LostView>,
    /// Lifelines, left to right: patients, then the center, then doctors.
    pub patients: Vec<String>,
    pub doctors: Vec<String>,
    /// The recorded messages, in order, of at most [`MAX_PATIENTS`]
    /// patients.
    pub messages: Vec<MessageView>,
    /// One row per patient (all of them, or as many as the run kept).
    pub outcomes: Vec<OutcomeView>,
    /// Latency and throughput over the run.
    pub latency: Vec<LatencyPoint>,
    /// Headline numbers (`wall time`, `p99`, ...), shown in order.
    pub summary: Vec<(String, String)>,
    pub invariants: Vec<InvariantView>,
    /// The counters as the run's own report has them (without, the page
    /// counts what the snapshot holds).
    pub counters: Option<Counters>,
    /// Why the message list is empty or partial, when it is.
    pub messages_note: Option<String>,
    /// The table per phase.
    pub phases: Option<PhaseTable>,
}

/// A lost race for slot `index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostView {
    pub index: u64,
    pub who: String,
}

/// One recorded message; the password is masked when it is added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub from: String,
    pub to: String,
    pub text: String,
    #[serde(serialize_with = "super::transport_name")]
    pub transport: Transport,
    pub session: u64,
}

/// How one patient's visit ended: the terminal report's row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeView {
    pub patient: String,
    pub outcome: String,
    pub latency_us: u64,
    /// The slot booked, or the one lost in a race.
    pub slot: Option<u64>,
    pub doctor: Option<String>,
    pub cost: Option<u64>,
    /// Quote requests sent again.
    pub retries: u32,
}

/// Latency percentiles and throughput of the visits that ended in one
/// interval, ending `at_ms` after the start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyPoint {
    pub at_ms: u64,
    pub per_second: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

/// One invariant check of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvariantView {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Snapshot {
    /// An empty report titled `title`, made by `command`.
    pub fn new(title: impl Into<String>, command: impl Into<String>) -> Snapshot {
        Snapshot {
            title: title.into(),
            command: command.into(),
            ..Snapshot::default()
        }
    }

    /// Adds the messages of a [`trace::Trace`] that involve the first
    /// [`MAX_PATIENTS`] of `patients` (the session is the patient's place
    /// in that list), and sets the lifelines.
    pub fn add_trace(&mut self, events: &[trace::Event], patients: &[String], doctors: &[String]) {
        let drawn = &patients[..patients.len().min(MAX_PATIENTS)];
        self.patients = drawn.to_vec();
        self.doctors = doctors.to_vec();
        for event in events {
            let session = drawn
                .iter()
                .position(|p| *p == event.from || *p == event.to);
            if let Some(session) = session {
                self.messages.push(MessageView {
                    from: event.from.clone(),
                    to: event.to.clone(),
                    text: trace::mask_password(&event.text),
                    transport: event.transport,
                    session: session as u64,
                });
            }
        }
    }

    /// Fills [`Snapshot::latency`] from `(ended_at_ms, latency_us)` per
    /// visit, in intervals of `interval_ms` (at least 1); each visit given
    /// stands for `weight` visits (a sample of one in `weight`).
    pub fn set_latency_series(&mut self, visits: &[(u64, u64)], interval_ms: u64, weight: u64) {
        self.latency = latency_series(visits, interval_ms, weight);
    }
}

/// The interval of a run's chart that fits its pace: about 40 points over
/// the run, but long enough that a bin holds a few visits on average, so a
/// slow run draws a steady rate instead of a zig-zag between 0 and 1.
pub fn series_interval_ms(wall_ms: u64, visits: u64) -> u64 {
    const POINTS: u64 = 40;
    const VISITS_PER_BIN: u64 = 4;
    let even = wall_ms / POINTS;
    let paced = wall_ms.saturating_mul(VISITS_PER_BIN) / visits.max(1);
    even.max(paced).max(1)
}

/// Latency percentiles and throughput per interval, from `(ended_at_ms,
/// latency_us)` per visit, each standing for `weight` visits.
pub fn latency_series(visits: &[(u64, u64)], interval_ms: u64, weight: u64) -> Vec<LatencyPoint> {
    {
        let interval_ms = interval_ms.max(1);
        let weight = weight.max(1);
        let mut visits = visits.to_vec();
        visits.sort_unstable();
        let mut series = Vec::new();
        let mut rest = visits.as_slice();
        while let Some(&(first, _)) = rest.first() {
            let end = (first / interval_ms + 1) * interval_ms;
            let split = rest.partition_point(|&(at, _)| at < end);
            let mut latencies = crate::stats::Latencies::new();
            for &(_, latency_us) in &rest[..split] {
                latencies.record(std::time::Duration::from_micros(latency_us));
            }
            series.push(LatencyPoint {
                at_ms: end,
                per_second: (latencies.count() * weight) as f64 * 1000.0 / interval_ms as f64,
                p50_us: Some(latencies.quantile_us(0.5) as u64),
                p99_us: Some(latencies.quantile_us(0.99) as u64),
            });
            rest = &rest[split..];
        }
        series
    }
}

impl Snapshot {
    /// The report as one HTML document.
    pub fn to_html(&self) -> String {
        let json = serde_json::to_string(self).expect("a snapshot is plain data");
        let data = format!(
            "<script id=\"snapshot\" type=\"application/json\">{}</script>",
            json_for_script(&json)
        );
        // The title is the run's even before (or without) the page's
        // script: for a reader that shows the file as text, or a tab.
        let title = html_escape(&self.title);
        super::PAGE
            .replacen("<!--SNAPSHOT-->", &data, 1)
            .replacen(
                "<title>medsim: live</title>",
                &format!("<title>{title}</title>"),
                1,
            )
            .replacen(
                "<h1 id=\"title\">medsim: live</h1>",
                &format!("<h1 id=\"title\">{title}</h1>"),
                1,
            )
    }
}

/// Text as HTML shows it.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `snapshot` to `path` as one self-contained HTML file.
///
/// # Errors
///
/// The file could not be written.
pub fn write_html(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    std::fs::write(path, snapshot.to_html())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_keeps_the_first_patients_masked() {
        let trace = trace::Trace::new();
        trace.record(
            "p1",
            trace::CENTER,
            "authenticate p1 secret",
            Transport::Tcp,
        );
        trace.record("p2", trace::CENTER, "list", Transport::Tcp);
        trace.record("doc1", "p2", "30", Transport::Udp);
        let mut snapshot = Snapshot::new("t", "medsim simulate");
        snapshot.add_trace(
            &trace.events(),
            &["p1".into(), "p2".into()],
            &["doc1".into()],
        );
        assert_eq!(snapshot.messages.len(), 3);
        assert_eq!(snapshot.messages[0].text, "authenticate p1 ***");
        assert_eq!(snapshot.messages[2].session, 1);
        let html = snapshot.to_html();
        assert!(html.contains("<script id=\"snapshot\""));
        assert!(!html.contains("secret"));
    }

    #[test]
    fn latency_series_groups_visits_by_interval() {
        let mut snapshot = Snapshot::default();
        snapshot.set_latency_series(&[(5, 100), (1500, 300), (1200, 200), (990, 50)], 1000, 1);
        assert_eq!(snapshot.latency.len(), 2);
        assert_eq!(snapshot.latency[0].at_ms, 1000);
        assert_eq!(snapshot.latency[0].p50_us, Some(50));
        assert_eq!(snapshot.latency[1].p99_us, Some(300));
        assert_eq!(snapshot.latency[1].per_second, 2.0);
        snapshot.set_latency_series(&[(5, 100)], 1000, 8);
        assert_eq!(snapshot.latency[0].per_second, 8.0, "a sample's weight");
    }

    #[test]
    fn chart_bins_fit_the_pace() {
        // A fast run: 40 points.
        assert_eq!(series_interval_ms(4_000, 100_000), 100);
        // A paced demo, 3 visits in a minute: bins long enough for a few
        // visits each, not 40 bins of 0 or 1.
        assert_eq!(series_interval_ms(60_000, 3), 80_000);
        assert_eq!(series_interval_ms(0, 0), 1);
    }
}
