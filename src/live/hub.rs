//! The hub: where the parties drop their events and browsers pick them up.
//!
//! A publisher only tries to put its event in a bounded channel: when that
//! is full the event is dropped and counted, so a run is never slowed by
//! its picture. One dispatcher thread per hub drains the channel, keeps the
//! current state (slot table, counters, the last messages) for browsers
//! that connect late, samples the sessions whose messages are drawn, and
//! hands each event, serialized once, to every browser's own bounded
//! queue; a browser that falls behind loses events, counted, and nobody
//! else notices. The dispatcher ends, and is joined, when the last [`Hub`]
//! clone is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use super::{Counters, Event, SlotView};
use crate::trace::mask_password;

/// How much a hub buffers and how much of a large run it draws.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Events waiting for the dispatcher; past it, events are dropped.
    pub capacity: usize,
    /// Sessions `0..full_sessions` are drawn message by message...
    pub full_sessions: u64,
    /// ...and after them one session in `sample_every` (0: none). Outcomes
    /// and race losses are sampled the same way, by their count.
    pub sample_every: u64,
    /// How often counters are computed and sent.
    pub tick: Duration,
    /// The messages come from a center watching other programs (`center
    /// --live`), which send no outcomes: each session's lane is named by
    /// the user it logs in as, and its visit ends at the center's last
    /// answer (`failure`, `notavailable`, `error ...`, or the grant).
    pub center_sessions: bool,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            capacity: 65_536,
            full_sessions: 20,
            sample_every: 100,
            tick: Duration::from_millis(500),
            center_sessions: false,
        }
    }
}

/// Messages and outcomes replayed to a browser that connects late.
const RECENT: usize = 400;
/// Counter points kept for the chart of a browser that connects late;
/// when full, neighbours are merged, so the chart always covers the run.
const HISTORY: usize = 240;
/// The visits the live rate is taken over when few end per tick (a slow
/// pace): fewer would make the chart jump between none and one per tick.
const RATE_VISITS: usize = 8;
/// Center sessions followed at once for their lane names and ends; past
/// it (sessions that closed without a last answer), they are forgotten.
const CENTER_SESSIONS: usize = 10_000;
/// Race losers' names kept per slot (all are counted).
const LOSERS_PER_SLOT: usize = 8;

/// A cloneable, thread-safe sink for [`Event`]s. See the module doc.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

enum Item {
    Event(Event),
    /// Answered once every item sent before it has been dispatched.
    Sync(Sender<()>),
}

struct Inner {
    tx: Option<Sender<Item>>,
    shared: Arc<Shared>,
    dispatcher: Option<JoinHandle<()>>,
}

struct Shared {
    config: HubConfig,
    dropped: AtomicU64,
    messages: AtomicU64,
    state: Mutex<State>,
}

struct State {
    started: Instant,
    slots: Vec<SlotView>,
    /// Per slot: losses counted, and the first few losers' names.
    losers: BTreeMap<u64, (u64, Vec<String>)>,
    counters: Counters,
    /// Latencies of the visits ended since the last tick.
    window: crate::stats::Latencies,
    window_started: Instant,
    history: VecDeque<Counters>,
    recent: VecDeque<Arc<str>>,
    /// When the last few visits ended, for the rate of a slow run.
    recent_ends: VecDeque<Instant>,
    /// The run's own summary, once it is over.
    finished: Option<Arc<str>>,
    /// With [`HubConfig::center_sessions`]: the sessions under way.
    center_sessions: std::collections::HashMap<u64, CenterSession>,
    paused: Option<bool>,
    pace: Option<u64>,
    outcomes_seen: u64,
    losses_seen: u64,
    subscribers: Vec<Subscriber>,
}

/// A session at a watched center, as its messages tell it.
struct CenterSession {
    /// The peer's name as the center reports it (its address).
    peer: String,
    /// The user it logged in as, once it said.
    user: Option<String>,
    /// The first word of its last request, lowercased.
    last_request: String,
    began: Instant,
}

struct Subscriber {
    tx: Sender<Arc<str>>,
    dropped: Arc<AtomicU64>,
}

/// What a browser gets: the current state first, then every event.
pub(crate) struct Subscription {
    pub initial: Vec<Arc<str>>,
    pub events: Receiver<Arc<str>>,
    /// Events this browser missed because its queue was full.
    pub dropped: Arc<AtomicU64>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::new()
    }
}

impl Hub {
    /// A hub with the default [`HubConfig`].
    pub fn new() -> Hub {
        Hub::with_config(HubConfig::default())
    }

    /// A hub for a center watching other programs' sessions (see
    /// [`HubConfig::center_sessions`]).
    pub fn for_center() -> Hub {
        Hub::with_config(HubConfig {
            center_sessions: true,
            ..HubConfig::default()
        })
    }

    /// A hub with its own limits; starts the dispatcher thread.
    ///
    /// # Panics
    ///
    /// The thread could not be started (the process is out of threads).
    pub fn with_config(config: HubConfig) -> Hub {
        let (tx, rx) = crossbeam_channel::bounded(config.capacity);
        let shared = Arc::new(Shared::new(config));
        let dispatcher = std::thread::Builder::new()
            .name("medsim-live-hub".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.dispatch(&rx)
            })
            .expect("a thread for the live hub");
        Hub {
            inner: Arc::new(Inner {
                tx: Some(tx),
                shared,
                dispatcher: Some(dispatcher),
            }),
        }
    }

    /// Hands `event` to the dispatcher without waiting; if its buffer is
    /// full the event is dropped and counted ([`Hub::dropped`]).
    pub fn publish(&self, event: Event) {
        let sent = match &self.inner.tx {
            Some(tx) => tx.try_send(Item::Event(event)).is_ok(),
            None => false,
        };
        if !sent {
            self.inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reports one message of `session`: counted always, and published
    /// (text copied, password masked later by the dispatcher) only when
    /// the page draws that session, so a large run copies almost nothing.
    pub fn message(
        &self,
        session: u64,
        from: &str,
        to: &str,
        text: &str,
        transport: super::Transport,
    ) {
        self.inner.shared.messages.fetch_add(1, Ordering::Relaxed);
        if self.draws(session) {
            self.publish(Event::Message {
                from: from.to_owned(),
                to: to.to_owned(),
                text: text.to_owned(),
                transport,
                session,
            });
        }
    }

    /// Whether the page draws `session`'s messages.
    pub fn draws(&self, session: u64) -> bool {
        self.inner.shared.config.sampled(session)
    }

    /// Events dropped so far because the hub's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every event published before this call has been
    /// dispatched, at most `timeout`; true if it was.
    pub fn sync(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.inner.tx else {
            return false;
        };
        let (done, wait) = crossbeam_channel::bounded(1);
        tx.send_timeout(Item::Sync(done), timeout).is_ok() && wait.recv_timeout(timeout).is_ok()
    }

    /// A new browser: the current state, then every event after it, in a
    /// queue of `queue` events.
    pub(crate) fn subscribe(&self, queue: usize) -> Subscription {
        self.inner.shared.subscribe(queue)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The dispatcher ends once the channel is closed.
        drop(self.tx.take());
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.join();
        }
    }
}

impl HubConfig {
    fn sampled(&self, n: u64) -> bool {
        n < self.full_sessions || (self.sample_every > 0 && n.is_multiple_of(self.sample_every))
    }
}

fn to_json(value: &impl serde::Serialize) -> Arc<str> {
    serde_json::to_string(value)
        .expect("live events are plain data with string keys")
        .into()
}

/// A loss as the page gets it: with `count`, the losses on that slot so
/// far, since only a sample of them is sent.
fn lost_json(index: u64, who: &str, count: u64) -> Arc<str> {
    let value = serde_json::json!({"type": "lost", "index": index, "who": who, "count": count});
    value.to_string().into()
}

impl Shared {
    fn new(config: HubConfig) -> Shared {
        let now = Instant::now();
        Shared {
            config,
            dropped: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            state: Mutex::new(State {
                started: now,
                slots: Vec::new(),
                losers: BTreeMap::new(),
                counters: Counters::default(),
                window: crate::stats::Latencies::new(),
                window_started: now,
                history: VecDeque::new(),
                recent: VecDeque::new(),
                recent_ends: VecDeque::new(),
                finished: None,
                center_sessions: std::collections::HashMap::new(),
                paused: None,
                pace: None,
                outcomes_seen: 0,
                losses_seen: 0,
                subscribers: Vec::new(),
            }),
        }
    }

    fn dispatch(&self, rx: &Receiver<Item>) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            match rx.recv_deadline(next_tick) {
                Ok(Item::Event(event)) => self.apply(event),
                Ok(Item::Sync(done)) => {
                    let _ = done.try_send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.tick();
                    return;
                }
            }
            // Checked after every event too, so a busy hub still ticks.
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + self.config.tick;
            }
        }
    }

    /// Updates the kept state and passes the event on if it is drawn.
    fn apply(&self, event: Event) {
        let mut state = self.state.lock();
        let forward = match event {
            Event::Message {
                mut from,
                mut to,
                text,
                transport,
                session,
            } => {
                let ended = if self.config.center_sessions {
                    state.follow_center_session(session, &mut from, &mut to, &text)
                } else {
                    None
                };
                let json = to_json(&Event::Message {
                    from,
                    to,
                    text: mask_password(&text),
                    transport,
                    session,
                });
                state.remember(json.clone());
                state.send(&json);
                ended.and_then(|(patient, outcome, latency_us)| {
                    self.outcome(&mut state, patient, outcome, latency_us)
                })
            }
            Event::Slots { slots } => {
                state.slots = slots;
                state.slots.sort_by_key(|s| s.index);
                state.losers.clear();
                Some(to_json(&Event::Slots {
                    slots: state.slots.clone(),
                }))
            }
            Event::Booked { index, holder } => {
                state.counters.bookings += 1;
                match state.slots.binary_search_by_key(&index, |s| s.index) {
                    Ok(at) => state.slots[at].holder = Some(holder.clone()),
                    Err(at) => state.slots.insert(
                        at,
                        SlotView {
                            index,
                            day: String::new(),
                            time: String::new(),
                            doctor: String::new(),
                            holder: Some(holder.clone()),
                        },
                    ),
                }
                Some(to_json(&Event::Booked { index, holder }))
            }
            Event::Lost { index, who } => {
                state.counters.lost += 1;
                let n = state.losses_seen;
                state.losses_seen += 1;
                let (count, names) = state.losers.entry(index).or_default();
                *count += 1;
                // A user who loses the same slot again is counted, not
                // named twice.
                if names.len() < LOSERS_PER_SLOT && !names.contains(&who) {
                    names.push(who.clone());
                }
                let count = *count;
                self.config
                    .sampled(n)
                    .then(|| lost_json(index, &who, count))
            }
            Event::Outcome {
                patient,
                outcome,
                latency_us,
            } => self.outcome(&mut state, patient, outcome, latency_us),
            Event::Finished(mut summary) => {
                summary.counters.messages = self.messages.load(Ordering::Relaxed);
                summary.counters.dropped = self.dropped.load(Ordering::Relaxed);
                let json = to_json(&Event::Finished(summary));
                state.finished = Some(json.clone());
                Some(json)
            }
            Event::Counters(counters) => Some(to_json(&Event::Counters(counters))),
            Event::Paused { paused } => {
                state.paused = Some(paused);
                Some(to_json(&Event::Paused { paused }))
            }
            Event::Pace { ms } => {
                state.pace = Some(ms);
                Some(to_json(&Event::Pace { ms }))
            }
        };
        if let Some(json) = forward {
            state.send(&json);
        }
    }

    /// Counts one visit's end; its JSON when the page is to be told.
    fn outcome(
        &self,
        state: &mut State,
        patient: String,
        outcome: String,
        latency_us: u64,
    ) -> Option<Arc<str>> {
        state.counters.sessions += 1;
        match state.counters.outcomes.get_mut(&outcome) {
            Some(n) => *n += 1,
            None => {
                state.counters.outcomes.insert(outcome.clone(), 1);
            }
        }
        state
            .window
            .record(std::time::Duration::from_micros(latency_us));
        if state.recent_ends.len() == RATE_VISITS {
            state.recent_ends.pop_front();
        }
        state.recent_ends.push_back(Instant::now());
        let n = state.outcomes_seen;
        state.outcomes_seen += 1;
        self.config.sampled(n).then(|| {
            let json = to_json(&Event::Outcome {
                patient,
                outcome,
                latency_us,
            });
            state.remember(json.clone());
            json
        })
    }

    /// Computes the counters of the tick that just ended and sends them;
    /// once the run is over its own summary stands, and ticks stop.
    fn tick(&self) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.finished.is_some() {
            return;
        }
        let now = Instant::now();
        let window_secs = now.duration_since(state.window_started).as_secs_f64();
        let window = std::mem::take(&mut state.window);
        let counters = &mut state.counters;
        counters.elapsed_ms =
            u64::try_from(now.duration_since(state.started).as_millis()).unwrap_or(u64::MAX);
        let ended = window.count() as usize;
        counters.per_second = match state.recent_ends.front() {
            // Few visits a tick: over the last few visits, up to now, so
            // a slow pace draws a steady rate rather than a zig-zag.
            Some(oldest) if ended < RATE_VISITS && state.recent_ends.len() > 1 => {
                let span = now.duration_since(*oldest).as_secs_f64().max(window_secs);
                state.recent_ends.len() as f64 / span
            }
            _ if window_secs > 0.0 => ended as f64 / window_secs,
            _ => 0.0,
        };
        let quantile = |q| (window.count() > 0).then(|| window.quantile_us(q) as u64);
        counters.p50_us = quantile(0.5);
        counters.p99_us = quantile(0.99);
        counters.messages = self.messages.load(Ordering::Relaxed);
        counters.dropped = self.dropped.load(Ordering::Relaxed);
        let json = to_json(&Event::Counters(counters.clone()));
        state.window = crate::stats::Latencies::new();
        state.window_started = now;
        if state.history.len() == HISTORY {
            state.history = merge_pairs(std::mem::take(&mut state.history));
        }
        let point = counters.clone();
        state.history.push_back(point);
        state.send(&json);
    }

    fn subscribe(&self, queue: usize) -> Subscription {
        let (tx, events) = crossbeam_channel::bounded(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        // Under the lock the dispatcher sends with: nothing is missed
        // between the snapshot and the queue, and nothing comes twice.
        let mut state = self.state.lock();
        let mut initial = vec![to_json(&Event::Slots {
            slots: state.slots.clone(),
        })];
        for (&index, (count, names)) in &state.losers {
            for (i, who) in names.iter().enumerate() {
                let so_far = if i + 1 == names.len() {
                    *count
                } else {
                    i as u64 + 1
                };
                initial.push(lost_json(index, who, so_far));
            }
        }
        if let Some(paused) = state.paused {
            initial.push(to_json(&Event::Paused { paused }));
        }
        if let Some(ms) = state.pace {
            initial.push(to_json(&Event::Pace { ms }));
        }
        initial.extend(
            state
                .history
                .iter()
                .map(|c| to_json(&Event::Counters(c.clone()))),
        );
        initial.extend(state.recent.iter().cloned());
        initial.extend(state.finished.iter().cloned());
        state.subscribers.push(Subscriber {
            tx,
            dropped: Arc::clone(&dropped),
        });
        Subscription {
            initial,
            events,
            dropped,
        }
    }
}

/// The history at half the resolution: each pair of neighbours as one
/// point, at the later one's time and totals, the rate averaged, p50 the
/// mean and p99 the worse of the two.
fn merge_pairs(history: VecDeque<Counters>) -> VecDeque<Counters> {
    let points: Vec<Counters> = history.into();
    points
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => {
                let mean = |x: Option<u64>, y: Option<u64>| match (x, y) {
                    (Some(x), Some(y)) => Some((x + y) / 2),
                    (x, y) => x.or(y),
                };
                Counters {
                    per_second: (a.per_second + b.per_second) / 2.0,
                    p50_us: mean(a.p50_us, b.p50_us),
                    p99_us: a.p99_us.max(b.p99_us),
                    ..b.clone()
                }
            }
            _ => pair[0].clone(),
        })
        .collect()
}

/// What a center's answer says of its session's end: the outcome, or
/// `None` while the session goes on.
fn center_session_end(last_request: &str, answer: &str) -> Option<&'static str> {
    let answer = answer.trim();
    match (last_request, answer) {
        (_, "failure") => Some("auth_failed"),
        (_, a) if a.starts_with("error") => Some("protocol_error"),
        ("selection", "notavailable") => Some("taken"),
        (_, "notavailable") => Some("no_slots"),
        ("selection", _) => Some("booked"),
        _ => None,
    }
}

impl State {
    /// Follows a session at a watched center: names its lane by its user
    /// once known, and returns (user, outcome, latency) when its last
    /// answer ends it.
    fn follow_center_session(
        &mut self,
        session: u64,
        from: &mut String,
        to: &mut String,
        text: &str,
    ) -> Option<(String, String, u64)> {
        let incoming = to.as_str() == crate::trace::CENTER;
        if !self.center_sessions.contains_key(&session) {
            if self.center_sessions.len() >= CENTER_SESSIONS {
                self.center_sessions.clear();
            }
            let peer = if incoming { from.clone() } else { to.clone() };
            self.center_sessions.insert(
                session,
                CenterSession {
                    peer,
                    user: None,
                    last_request: String::new(),
                    began: Instant::now(),
                },
            );
        }
        let followed = self.center_sessions.get_mut(&session)?;
        if incoming {
            let mut words = text.split_whitespace();
            followed.last_request = words.next().unwrap_or("").to_ascii_lowercase();
            if followed.last_request == "authenticate"
                && let Some(user) = words.next()
            {
                followed.user = Some(user.to_owned());
            }
        }
        if let Some(user) = &followed.user {
            for name in [&mut *from, &mut *to] {
                if *name == followed.peer {
                    name.clone_from(user);
                }
            }
        }
        if incoming {
            return None;
        }
        let outcome = center_session_end(&followed.last_request, text)?;
        let followed = self.center_sessions.remove(&session)?;
        let latency = followed.began.elapsed().as_micros() as u64;
        Some((
            followed.user.unwrap_or(followed.peer),
            outcome.to_owned(),
            latency,
        ))
    }

    fn remember(&mut self, json: Arc<str>) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(json);
    }

    /// To every browser without waiting: a full queue loses the event
    /// (counted for that browser), a closed one is forgotten.
    fn send(&mut self, json: &Arc<str>) {
        self.subscribers
            .retain(|s| match s.tx.try_send(Arc::clone(json)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }
}

/// A center reports to the live view through its own trait: the center
/// knows nothing of pages or events.
impl crate::center::Watcher for Hub {
    fn booked(&self, index: u64, holder: &str) {
        self.publish(Event::Booked {
            index,
            holder: holder.to_owned(),
        });
    }

    fn lost(&self, index: u64, who: &str) {
        self.publish(Event::Lost {
            index,
            who: who.to_owned(),
        });
    }

    fn message(&self, session: u64, from: &str, to: &str, text: &str) {
        Hub::message(self, session, from, to, text, crate::trace::Transport::Tcp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Transport;

    const WAIT: Duration = Duration::from_secs(10);

    fn types(sub: &Subscription) -> Vec<serde_json::Value> {
        sub.initial
            .iter()
            .chain(sub.events.try_iter().collect::<Vec<_>>().iter())
            .map(|j| serde_json::from_str(j).expect("hub JSON"))
            .collect()
    }

    fn slot(index: u64) -> SlotView {
        SlotView {
            index,
            day: "Mon".into(),
            time: "10am".into(),
            doctor: "doc1".into(),
            holder: None,
        }
    }

    #[test]
    fn a_late_browser_sees_the_current_table_and_recent_messages_masked() {
        let hub = Hub::new();
        hub.publish(Event::Slots {
            slots: vec![slot(2), slot(1)],
        });
        hub.message(
            0,
            "patient1",
            "center",
            "authenticate patient1 pw",
            Transport::Tcp,
        );
        hub.publish(Event::Booked {
            index: 2,
            holder: "patient1".into(),
        });
        hub.publish(Event::Lost {
            index: 2,
            who: "patient2".into(),
        });
        assert!(hub.sync(WAIT));
        let sub = hub.subscribe(16);
        let events = types(&sub);
        assert_eq!(events[0]["type"], "slots");
        assert_eq!(events[0]["slots"][0]["index"], 1);
        assert_eq!(events[0]["slots"][1]["holder"], "patient1");
        assert_eq!(events[1]["type"], "lost");
        assert_eq!(events[1]["count"], 1);
        let message = events
            .iter()
            .find(|e| e["type"] == "message")
            .expect("kept");
        assert_eq!(message["text"], "authenticate patient1 ***");
        // Events after subscribing come through the queue, once.
        hub.publish(Event::Pace { ms: 5 });
        assert!(hub.sync(WAIT));
        let next: Vec<_> = sub.events.try_iter().collect();
        assert_eq!(next.len(), 1);
        assert!(next[0].contains("\"pace\""));
    }

    #[test]
    fn large_runs_draw_the_first_sessions_then_a_sample() {
        let hub = Hub::with_config(HubConfig {
            full_sessions: 3,
            sample_every: 10,
            ..HubConfig::default()
        });
        let sub = hub.subscribe(1000);
        for session in 0..100 {
            hub.message(session, "p", "center", "list", Transport::Tcp);
        }
        assert!(hub.sync(WAIT));
        let drawn: Vec<u64> = sub
            .events
            .try_iter()
            .filter_map(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
            .filter(|e| e["type"] == "message")
            .filter_map(|e| e["session"].as_u64())
            .collect();
        assert_eq!(drawn, [0, 1, 2, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
        assert!(!hub.draws(11));
    }

    #[test]
    fn a_slow_browser_loses_events_counted_and_nobody_waits() {
        let hub = Hub::new();
        let slow = hub.subscribe(4);
        let fast = hub.subscribe(1000);
        for i in 0..100 {
            hub.publish(Event::Booked {
                index: i,
                holder: "p".into(),
            });
        }
        assert!(hub.sync(WAIT));
        assert_eq!(slow.events.len(), 4);
        assert_eq!(slow.dropped.load(Ordering::Relaxed), 96);
        assert_eq!(fast.events.len(), 100);
        assert_eq!(fast.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_hub_drops_and_counts_instead_of_waiting() {
        let hub = Hub::with_config(HubConfig {
            capacity: 1,
            ..HubConfig::default()
        });
        // Hold the state lock so the dispatcher stalls on its first event.
        let guard = hub.inner.shared.state.lock();
        for _ in 0..50 {
            hub.publish(Event::Pace { ms: 1 });
        }
        drop(guard);
        assert!(hub.dropped() >= 48, "dropped {}", hub.dropped());
        assert!(hub.sync(WAIT));
    }

    #[test]
    fn a_slow_run_keeps_a_steady_rate_between_its_visits() {
        let hub = Hub::with_config(HubConfig {
            tick: Duration::from_millis(5),
            ..HubConfig::default()
        });
        let sub = hub.subscribe(10_000);
        for patient in ["a", "b"] {
            hub.publish(Event::Outcome {
                patient: patient.into(),
                outcome: "quoted".into(),
                latency_us: 100,
            });
        }
        assert!(hub.sync(WAIT));
        // The ticks after them, with no visit ending, still show the rate
        // over the last visits, not a drop to none.
        let mut idle_ticks = 0;
        while idle_ticks < 3 {
            let json = sub.events.recv_timeout(WAIT).expect("a tick");
            let event: serde_json::Value = serde_json::from_str(&json).expect("JSON");
            if event["type"] == "counters" && event["sessions"] == 2 && event["p50_us"].is_null() {
                let rate = event["per_second"].as_f64().expect("a rate");
                assert!(rate > 0.0, "{event}");
                idle_ticks += 1;
            }
        }
    }

    #[test]
    fn a_finished_run_stands_for_late_browsers_and_ends_the_ticks() {
        let hub = Hub::with_config(HubConfig {
            tick: Duration::from_millis(1),
            ..HubConfig::default()
        });
        hub.message(0, "p", "center", "x", Transport::Tcp);
        let mut summary = crate::live::RunSummary::default();
        summary.counters.sessions = 200;
        hub.publish(Event::Finished(Box::new(summary)));
        assert!(hub.sync(WAIT));
        let late = hub.subscribe(16);
        let last: serde_json::Value =
            serde_json::from_str(late.initial.last().expect("some state")).expect("JSON");
        assert_eq!(last["type"], "finished");
        assert_eq!(last["counters"]["sessions"], 200);
        assert_eq!(last["counters"]["messages"], 1, "the hub's own count");
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            late.events.try_iter().all(|j| !j.contains("\"counters\"")),
            "no tick after the end"
        );
    }

    #[test]
    fn a_full_history_is_merged_not_cut() {
        let points: VecDeque<Counters> = (0..HISTORY as u64)
            .map(|i| Counters {
                elapsed_ms: i * 500,
                per_second: i as f64,
                ..Counters::default()
            })
            .collect();
        let merged = merge_pairs(points);
        assert_eq!(merged.len(), HISTORY / 2);
        assert_eq!(merged[0].elapsed_ms, 500, "the start is kept");
        assert_eq!(merged[0].per_second, 0.5);
    }

    #[test]
    fn a_center_session_is_named_by_its_user_and_ends_at_the_last_answer() {
        let hub = Hub::for_center();
        let sub = hub.subscribe(100);
        let peer = "127.0.0.1:5000";
        for (from, to, text) in [
            (peer, "center", "authenticate patient2 secret"),
            ("center", peer, "success"),
            (peer, "center", "available"),
            ("center", peer, "1 Tue 01pm"),
            (peer, "center", "selection 1"),
            ("center", peer, "notavailable"),
        ] {
            hub.message(7, from, to, text, Transport::Tcp);
        }
        assert!(hub.sync(WAIT));
        let events: Vec<serde_json::Value> = sub
            .events
            .try_iter()
            .map(|j| serde_json::from_str(&j).expect("JSON"))
            .collect();
        let parties: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| e["type"] == "message")
            .map(|e| {
                (
                    e["from"].as_str().unwrap_or(""),
                    e["to"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert!(
            parties.iter().all(|(f, t)| *f != peer && *t != peer),
            "{parties:?}"
        );
        let outcome = events
            .iter()
            .find(|e| e["type"] == "outcome")
            .expect("an end");
        assert_eq!(outcome["patient"], "patient2");
        assert_eq!(outcome["outcome"], "taken");
    }

    #[test]
    fn ticks_count_outcomes_and_latency() {
        let hub = Hub::with_config(HubConfig {
            tick: Duration::from_millis(1),
            ..HubConfig::default()
        });
        let sub = hub.subscribe(10_000);
        for (patient, latency_us) in [("a", 100), ("b", 300), ("c", 200)] {
            hub.publish(Event::Outcome {
                patient: patient.into(),
                outcome: "booked".into(),
                latency_us,
            });
        }
        hub.message(500, "p", "center", "x", Transport::Tcp);
        assert!(hub.sync(WAIT));
        // The next counters carry all three (they were dispatched first).
        let counters = loop {
            let json = sub.events.recv_timeout(WAIT).expect("a tick");
            let event: serde_json::Value = serde_json::from_str(&json).expect("JSON");
            if event["type"] == "counters" && event["sessions"] == 3 {
                break event;
            }
        };
        assert_eq!(counters["outcomes"]["booked"], 3);
        assert_eq!(counters["messages"], 1);
    }
}
