//! The load: threads of blocking clients (`client`'s, as every other
//! caller's) that each run one whole exchange per session and time it, and
//! the medsim system they measure, started through `system`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Run;
use crate::client::{Closing, Conversation, DoctorLink, DoctorReply, Retries};
use crate::console::Console;
use crate::data::{Fixtures, Source, Users};
use crate::protocol::{self, Framing, SelectionAnswer, SlotsAnswer};
use crate::rng::SplitMix64;
use crate::stats::Latencies;
use crate::store::StoreUrl;
use crate::system::{self, System};

pub(super) const USER: &str = "patient1";
pub(super) const PASSWORD: &str = "password111";
const PLAN: &str = "insurance1";
/// How long a benchmark client waits for any answer before calling the
/// session failed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How a benchmark client asks for quotes: a lost datagram is sent again
/// after 50 ms, as a patient would.
const QUOTE_RETRIES: Retries = Retries {
    wait: Duration::from_millis(50),
    attempts: 40,
};

/// The exchanges a benchmark session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exchange {
    /// connect, authenticate, `available` (answered `notavailable` by a
    /// fully booked center), close.
    List,
    /// authenticate, list, select a listed slot at random, and when booked,
    /// the doctor's quote over UDP.
    Booking,
}

/// Runs `session` on `concurrency` threads until `stop` says so; each
/// session is timed. Client k is numbered k (`Client::number`).
pub(super) fn drive(
    concurrency: usize,
    stop: &(dyn Fn(u64) -> bool + Sync),
    session: &(dyn Fn(&mut SplitMix64, &mut Client) -> bool + Sync),
) -> Run {
    let started = Instant::now();
    let done = AtomicU64::new(0);
    let results: Vec<(Latencies, u64, Client)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|k| {
                let done = &done;
                // Named, so a profile tells the load from the servers.
                std::thread::Builder::new()
                    .name("bench-client".into())
                    .spawn_scoped(scope, move || {
                        let mut rng = SplitMix64::new(k as u64 + 1);
                        let mut client = Client {
                            number: k,
                            ..Client::default()
                        };
                        let mut latencies = Latencies::new();
                        let mut errors = 0;
                        while !stop(done.fetch_add(1, Ordering::Relaxed)) {
                            let begun = Instant::now();
                            if session(&mut rng, &mut client) {
                                latencies.record(begun.elapsed());
                            } else {
                                errors += 1;
                            }
                        }
                        (latencies, errors, client)
                    })
                    .expect("a client thread of the bench starts")
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| (Latencies::new(), 1, Client::default()))
            })
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = Latencies::new();
    let (mut errors, mut retries, mut bookings) = (0, 0, 0);
    for (worker, worker_errors, client) in &results {
        latencies.merge(worker);
        errors += worker_errors;
        retries += client.retries;
        bookings += client.bookings;
    }
    Run {
        sessions: latencies.count(),
        errors,
        retries,
        bookings,
        per_second: latencies.count() as f64 / elapsed.max(1e-9),
        bookings_per_second: bookings as f64 / elapsed.max(1e-9),
        // Filled in by the runs on a store on disk.
        commits: 0,
        commits_per_second: 0.0,
        p50_us: latencies.quantile_us(0.50),
        p99_us: latencies.quantile_us(0.99),
    }
}

/// A benchmark client: its doctor socket is kept across sessions.
#[derive(Default)]
pub(super) struct Client {
    /// Which of the run's clients this is, from 0: clients of several
    /// centers take them in turn by it.
    pub(super) number: usize,
    doctor: Option<DoctorLink>,
    /// Quote requests sent again after a lost datagram.
    retries: u64,
    /// Sessions that got a `DOCTOR PORT` answer.
    bookings: u64,
}

impl Client {
    /// One session of `path` against the center at `addr`; true when every
    /// answer was the expected one.
    pub(super) fn session(
        &mut self,
        path: Exchange,
        addr: SocketAddr,
        rng: &mut SplitMix64,
    ) -> bool {
        self.try_session(path, addr, rng).unwrap_or(false)
    }

    fn try_session(
        &mut self,
        path: Exchange,
        addr: SocketAddr,
        rng: &mut SplitMix64,
    ) -> anyhow::Result<bool> {
        let mut center = Conversation::connect(addr, Framing::default(), CLIENT_TIMEOUT)?;
        if center.ask(&format!("authenticate {USER} {PASSWORD}"))? != "success" {
            return Ok(false);
        }
        let listed = center.ask("available")?;
        if path == Exchange::List {
            // The server closes first, as the protocol has it: the side
            // that closes keeps the TIME_WAIT, and a long run would use up
            // the client's ephemeral ports otherwise.
            return Ok(listed == "notavailable"
                && center.wait_for_close(CLIENT_TIMEOUT) == Closing::Closed);
        }
        let Ok(SlotsAnswer::Slots(listings)) = protocol::parse_slots_answer(&listed) else {
            return Ok(false);
        };
        let choice = listings[rng.below(listings.len() as u64) as usize].index;
        let answer = center.ask(&format!("selection {choice}"))?;
        let port = match protocol::parse_selection_answer(&answer) {
            Ok(SelectionAnswer::Assigned { port, .. }) => Some(port),
            // Lost the race for that slot: a whole session all the same.
            Ok(SelectionAnswer::NotAvailable) => None,
            _ => return Ok(false),
        };
        if center.wait_for_close(CLIENT_TIMEOUT) != Closing::Closed {
            return Ok(false);
        }
        if port.is_some() {
            self.bookings += 1;
        }
        match port {
            Some(port) => self.quote(SocketAddr::new(addr.ip(), port)),
            None => Ok(true),
        }
    }

    /// One quote: the plan out, a whole number back.
    pub(super) fn quote(&mut self, doctor: SocketAddr) -> anyhow::Result<bool> {
        if self.doctor.as_ref().is_none_or(|d| d.doctor() != doctor) {
            self.doctor = Some(DoctorLink::open(doctor)?);
        }
        let Some(link) = &self.doctor else {
            return Ok(false);
        };
        let quoted = link.quote(PLAN, Framing::default(), QUOTE_RETRIES, None, &mut || {})?;
        self.retries += u64::from(quoted.retries);
        Ok(
            matches!(quoted.reply, DoctorReply::Text(text) if text.starts_with(|c: char| c.is_ascii_digit())),
        )
    }
}

/// A medsim center and its doc1 in this process: `slot_count` slots, all
/// at doc1, all booked when `booked`, in memory.
pub(super) fn medsim(slot_count: u64, booked: bool, console: Console) -> anyhow::Result<System> {
    medsim_on(StoreUrl::Memory, 1, slot_count, booked, console)
}

/// As [`medsim`], with the slots in `store` (made and filled when empty),
/// shared by `centers` centers, each with its own store handle (and pool).
/// `booked` is for the memory store only.
pub(super) fn medsim_on(
    store: StoreUrl,
    centers: usize,
    slot_count: u64,
    booked: bool,
    console: Console,
) -> anyhow::Result<System> {
    let fixtures = Fixtures::load(&Source::built_in())?;
    let mut options = system::Options::from_fixtures(&fixtures);
    options.doctors.retain(|d| d.name == "doc1");
    options.users = Users::from_pairs([(USER.to_owned(), PASSWORD.to_owned())]);
    options.slots = system::Slots::Generated(slot_count);
    if booked {
        options.holders = (1..=slot_count)
            .map(|i| (i, "someone".to_owned()))
            .collect();
    }
    options.limits.max_sessions = 4096;
    options.store = store;
    options.centers = centers;
    options.console = console;
    System::start(options)
}
