//! The classroom's live picture of the system, in a browser.
//!
//! This module owns the picture and nothing else: it never opens a center,
//! a doctor or a patient socket. The parties tell it what happens through a
//! [`Hub`] (an event sink that never blocks them); [`serve`] shows it at
//! `GET /` as one self-contained page fed by a server-sent-event stream at
//! `GET /events`; [`Controls`] let that page pause, step and pace the
//! simulated patients; [`report::write_html`] draws the same picture once,
//! into a file, after a run.
//!
//! Wiring, for whoever starts the parties (`simulate`, `center`):
//!
//! - make one [`Hub`] and hand out clones; a party that holds
//!   `Option<Hub>` pays one branch when there is none;
//! - publish [`Event::Slots`] once at start (the whole table); the center
//!   publishes [`Event::Booked`] and [`Event::Lost`] as reservations are
//!   decided;
//! - each patient calls [`Controls::before_message`] before every message
//!   it sends, reports each message with [`Hub::message`] (which skips the
//!   work for sessions the page will not draw) and its end with
//!   [`Event::Outcome`];
//! - when the run is over, publish [`Event::Finished`] with the run's own
//!   summary: the page shows it instead of its sampled picture;
//! - a center watching other programs makes its hub with
//!   [`Hub::for_center`] (lanes named by user, visits ended at the
//!   center's last answer);
//! - `serve(listener, hub, Some(controls), stop)` and keep the returned
//!   [`LiveServer`] alive for the run; dropping it stops it. Off loopback,
//!   print [`LiveServer::teacher_url`] only where the teacher sees it.
//!
//! ```
//! use medsim::live::{self, Controls, Event, Hub, SlotView, Transport};
//! use medsim::shutdown::Shutdown;
//!
//! let shutdown = Shutdown::new();
//! let hub = Hub::new();
//! let controls = Controls::new({
//!     let shutdown = shutdown.clone();
//!     move || shutdown.is_triggered()
//! });
//! shutdown.on_trigger({
//!     let controls = controls.clone();
//!     move || controls.wake()
//! });
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let server = live::serve(listener, hub.clone(), Some(controls.clone()), {
//!     let shutdown = shutdown.clone();
//!     move || shutdown.is_triggered()
//! })?;
//! println!("live view at {}", server.url());
//!
//! hub.publish(Event::Slots {
//!     slots: vec![SlotView {
//!         index: 1,
//!         day: "Tue".into(),
//!         time: "01pm".into(),
//!         doctor: "doc1".into(),
//!         holder: None,
//!     }],
//! });
//! // In each patient thread, for session 0:
//! controls.before_message();
//! hub.message(0, "patient1", "center", "authenticate patient1 password111", Transport::Tcp);
//! // In the center, once the reservation is decided:
//! hub.publish(Event::Booked { index: 1, holder: "patient1".into() });
//! // When the visit ends:
//! hub.publish(Event::Outcome {
//!     patient: "patient1".into(),
//!     outcome: "booked".into(),
//!     latency_us: 1800,
//! });
//! shutdown.trigger();
//! drop(server); // joins its threads
//! # Ok::<(), std::io::Error>(())
//! ```

mod controls;
mod http;
mod hub;
pub mod report;
mod server;

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::trace::Transport;
pub use controls::Controls;
pub use hub::{Hub, HubConfig};
pub use server::{LiveServer, serve};

/// One thing that happened, as the page is told about it. On the wire each
/// is a JSON object whose `type` is the variant's name in snake case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// One message between two parties. The hub masks passwords
    /// ([`crate::trace::mask_password`]) before anything leaves it.
    Message {
        from: String,
        to: String,
        text: String,
        #[serde(serialize_with = "transport_name")]
        transport: Transport,
        /// The patient's session, from 0: it decides whether the page
        /// draws the message (see [`HubConfig`]).
        session: u64,
    },
    /// The whole slot table; replaces the one the hub keeps.
    Slots { slots: Vec<SlotView> },
    /// A slot was reserved to `holder`.
    Booked { index: u64, holder: String },
    /// `who` asked for slot `index` and lost it (to a race, or it was
    /// taken already).
    Lost { index: u64, who: String },
    /// A patient's visit ended: `outcome` as the simulation names it
    /// (e.g. `booked`, `no_slot`), after `latency_us` microseconds.
    Outcome {
        patient: String,
        outcome: String,
        latency_us: u64,
    },
    /// Totals so far. The hub makes these itself, every tick; a published
    /// one is passed on as it is.
    Counters(Counters),
    /// The simulated patients were paused (`true`) or let go.
    Paused { paused: bool },
    /// The wait before each patient message is now `ms` milliseconds.
    Pace { ms: u64 },
    /// The run is over: its own summary, the same numbers as its terminal
    /// report. The hub fills in the messages and dropped events it
    /// counted, stops ticking, and gives it to every browser, late ones
    /// too.
    Finished(Box<RunSummary>),
}

/// What a finished run shows: counters and charts from the run's own
/// report, not from the hub's sampled picture of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub counters: Counters,
    /// The table per phase, when the run has one.
    pub phases: Option<PhaseTable>,
    /// Visits per second and latency over the whole run.
    pub latency: Vec<report::LatencyPoint>,
}

/// A table as the terminal report shows it (its cells), with the same
/// table as CSV and as JSON for downloading.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PhaseTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub csv: String,
    pub json: serde_json::Value,
}

/// One row of the slot table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    pub index: u64,
    pub day: String,
    pub time: String,
    pub doctor: String,
    /// Who holds it; `None` while it is free.
    pub holder: Option<String>,
}

/// The hub's totals, sent every tick and kept for browsers that come late.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Since the hub was made.
    pub elapsed_ms: u64,
    /// Visits ended ([`Event::Outcome`]s seen).
    pub sessions: u64,
    /// Visits ended per second over the last tick.
    pub per_second: f64,
    /// Visits ended, per outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Latency percentiles of the visits ended in the last tick (none
    /// ended: `None`).
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Messages reported with [`Hub::message`], drawn or not.
    pub messages: u64,
    pub bookings: u64,
    pub lost: u64,
    /// Events the hub dropped because its buffer was full.
    pub dropped: u64,
}

fn transport_name<S: serde::Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match t {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
        Transport::UdpLost => "udp_lost",
    })
}

/// JSON for embedding in an HTML `<script>`: `<` never appears outside a
/// JSON string, and inside one `\u003c` means the same, so no `</script>`
/// or `<!--` in the data can end the element early.
pub(crate) fn json_for_script(json: &str) -> String {
    json.replace('<', "\\u003c")
}

/// The page: HTML, CSS and script in one file, built into the binary.
pub(crate) const PAGE: &str = include_str!("page.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_snake_case_type() {
        let json = serde_json::to_value(Event::Message {
            from: "patient1".into(),
            to: "doc1".into(),
            text: "insurance1".into(),
            transport: Transport::UdpLost,
            session: 3,
        })
        .expect("plain data");
        assert_eq!(
            json,
            serde_json::json!({"type": "message", "from": "patient1", "to": "doc1",
                "text": "insurance1", "transport": "udp_lost", "session": 3})
        );
        let json = serde_json::to_value(Event::Counters(Counters::default())).expect("plain");
        assert_eq!(json["type"], "counters");
        assert_eq!(json["sessions"], 0);
    }

    #[test]
    fn script_json_cannot_close_its_element() {
        let text = serde_json::to_string("</script><!--").expect("a string");
        let safe = json_for_script(&text);
        assert!(!safe.contains('<'));
        let back: String = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, "</script><!--");
    }
}
