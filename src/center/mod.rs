//! The health center: a TCP server that authenticates patients, lists free
//! slots and reserves one per session (PROTOCOL.md, "Session at the
//! center").
//!
//! This module owns the accept loop and its limits (concurrent sessions and
//! each peer address's share of them, `error busy`, accept errors such as
//! running out of descriptors), the counters, and the [`Watcher`] it reports
//! to. One session's state machine is [`session`]'s; the slot table is
//! the store's, framing and parsing the protocol's; its flags are
//! `cli/center.rs`'s.

mod session;

pub use session::Link;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use parking_lot::Mutex;

use crate::console::{Console, RateLimit};
use crate::data::Users;
use crate::protocol::words;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Whoever watches the center at work (the live view is one): the center
/// says what happened, and knows nothing of how it is shown. Called from
/// the sessions' threads, so a watcher must not block.
pub trait Watcher: Send + Sync {
    /// Slot `index` was booked for `holder`, and the patient told.
    fn booked(&self, index: u64, holder: &str);
    /// `who` asked for slot `index`, which someone else held.
    fn lost(&self, index: u64, who: &str);
    /// One message of session `session`, from `from` to `to` (the peer's
    /// address, or [`crate::trace::CENTER`]); only when the center was
    /// asked to show messages ([`Center::showing_messages`]).
    fn message(&self, session: u64, from: &str, to: &str, text: &str);
}

/// The center's limits; each has a flag and a documented default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest message accepted, in bytes (at least [`crate::protocol::MIN_MESSAGE_LIMIT`]).
    pub message_limit: usize,
    /// How long a session may take to send a whole message once its first
    /// byte came: short, so a peer trickling bytes (slowloris) is cut off.
    pub message_timeout: Duration,
    /// How long a session may stay silent between an answer and the next
    /// message: long, so a person thinking at a prompt keeps the session.
    pub idle_timeout: Duration,
    /// How long a new connection may stay silent before its first message
    /// (at most the idle limit): short, since whoever connects has already
    /// typed their login, so silent connections cannot hold seats for long.
    pub first_message_timeout: Duration,
    /// How long unterminated first text waits before it is taken as a
    /// classic message without terminator.
    pub grace: Duration,
    /// Sessions open at once; past it a connection gets `error busy`.
    pub max_sessions: usize,
    /// Sessions one peer address may hold at once (an IPv6 address counts
    /// by its /64); past it a connection from there gets `error busy`, so
    /// one address never takes every seat. 0 means half of
    /// `max_sessions` (at least one).
    pub max_sessions_per_address: usize,
    /// How long sessions in flight may run on after shutdown.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The seats one peer address may hold at once.
    pub fn per_address(&self) -> usize {
        match self.max_sessions_per_address {
            0 => (self.max_sessions / 2).max(1),
            n => n,
        }
    }

    /// How long a new connection may wait before its first message.
    pub fn first_wait(&self) -> Duration {
        self.first_message_timeout.min(self.idle_timeout)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            message_limit: 512,
            message_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            first_message_timeout: Duration::from_secs(10),
            grace: Duration::from_millis(100),
            max_sessions: 1024,
            max_sessions_per_address: 0,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// How often a waiting session looks at the shutdown signal.
const SHUTDOWN_POLL: Duration = Duration::from_millis(250);
/// How long an idle worker thread waits for a new session before exiting.
const WORKER_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Workers run sessions with small buffers; a small stack keeps thousands
/// of idle sessions cheap.
const WORKER_STACK: usize = 256 * 1024;
/// Pause after an accept error such as EMFILE, so the loop does not spin
/// while descriptors are short; sessions ending free them.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// Largest single read from a session's socket.
const READ_CHUNK: usize = 4096;

/// Counts kept while serving, returned by [`Center::serve`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub sessions: u64,
    pub bookings: u64,
    pub errors: u64,
    pub busy: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::stats::plural;
        write!(
            f,
            "{}, {}, {}, {} refused busy",
            plural(self.sessions, "session", "sessions"),
            plural(self.bookings, "booking", "bookings"),
            plural(self.errors, "error", "errors"),
            self.busy
        )
    }
}

#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    bookings: AtomicU64,
    errors: AtomicU64,
    busy: AtomicU64,
}

/// A health center: its users, its slot table, its limits and its console.
pub struct Center {
    users: Users,
    store: Arc<dyn Store>,
    limits: Limits,
    console: Console,
    show_passwords: bool,
    /// Who watches bookings and lost races, when someone does.
    watcher: Option<Arc<dyn Watcher>>,
    /// Also show every message of every session there (when the patients
    /// are other programs, which cannot report their own).
    show_messages: bool,
    counters: Counters,
    /// Lines about sessions' bad input and failed connections: a peer can
    /// cause them at will.
    peer_log: RateLimit,
    /// Who holds the sessions open now.
    seats: Seats,
}

impl Center {
    pub fn new(users: Users, store: Arc<dyn Store>, limits: Limits, console: Console) -> Center {
        Center {
            users,
            store,
            console,
            show_passwords: false,
            watcher: None,
            show_messages: false,
            counters: Counters::default(),
            peer_log: RateLimit::for_peer_trouble(),
            seats: Seats::new(limits.max_sessions, limits.per_address()),
            limits,
        }
    }

    /// Prints passwords in the phase messages, as the classic demo did.
    pub fn show_passwords(mut self, show: bool) -> Center {
        self.show_passwords = show;
        self
    }

    /// Tells `watcher` of every booking and lost race.
    pub fn watched_by(mut self, watcher: Option<Arc<dyn Watcher>>) -> Center {
        self.watcher = watcher;
        self
    }

    /// Tells the watcher every session's messages too.
    pub fn showing_messages(mut self, show: bool) -> Center {
        self.show_messages = show;
        self
    }

    /// Sessions open right now.
    pub fn open_sessions(&self) -> usize {
        self.seats.open.load(Ordering::Acquire)
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        let c = &self.counters;
        Summary {
            sessions: c.sessions.load(Ordering::Relaxed),
            bookings: c.bookings.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
        }
    }

    /// Serves sessions on `listener` until `shutdown` is triggered, then
    /// lets sessions in flight finish within the drain timeout.
    ///
    /// # Errors
    ///
    /// Only when the listener's address cannot be read; accept errors are
    /// logged and survived.
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: &Shutdown,
    ) -> io::Result<Summary> {
        // Acceptors wake this often to look at the signal and their idle time.
        socket2::SockRef::from(&listener).set_read_timeout(Some(SHUTDOWN_POLL))?;
        let closer = listener.try_clone()?;
        shutdown.on_trigger(move || {
            // Stops the listening socket: new connections are refused from
            // now on, not queued unserved, and every accept() returns.
            let _ = socket2::SockRef::from(&closer).shutdown(std::net::Shutdown::Read);
        });
        let (alive, all_ended) = crossbeam_channel::bounded::<()>(0);
        let acceptors = Arc::new(Acceptors {
            listener,
            accepting: AtomicUsize::new(0),
            accept_log: RateLimit::new(1, 1),
            busy_log: RateLimit::new(1, 1),
            alive,
        });
        if let Err(e) = self.spawn_acceptor(&acceptors, shutdown) {
            shutdown.trigger();
            return Err(e);
        }
        // Only the acceptors hold senders now: the channel disconnects when
        // the last of them has ended.
        drop(acceptors);
        let drained = loop {
            match all_ended.recv_timeout(SHUTDOWN_POLL) {
                Err(RecvTimeoutError::Disconnected) => break true,
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            }
            // Sessions stop waiting at the drain deadline; give their last
            // answers a moment to go out before abandoning them.
            if let Some(stopped) = shutdown.triggered_at()
                && Instant::now() >= stopped + self.limits.drain_timeout + SHUTDOWN_POLL
            {
                break false;
            }
        };
        if !drained {
            self.console.diagnostic(format_args!(
                "center: sessions still open after the {:?} drain timeout were abandoned",
                self.limits.drain_timeout
            ));
        }
        Ok(self.summary())
    }

    /// Starts one more thread that accepts and serves sessions.
    fn spawn_acceptor(
        self: &Arc<Self>,
        acceptors: &Arc<Acceptors>,
        shutdown: &Shutdown,
    ) -> io::Result<()> {
        let center = Arc::clone(self);
        let shared = Arc::clone(acceptors);
        let shutdown = shutdown.clone();
        acceptors.accepting.fetch_add(1, Ordering::AcqRel);
        std::thread::Builder::new()
            .name("medsim-session".into())
            .stack_size(WORKER_STACK)
            .spawn(move || center.accept_and_serve(&shared, &shutdown))
            .map(drop)
            .inspect_err(|_| {
                acceptors.accepting.fetch_sub(1, Ordering::AcqRel);
            })
    }

    /// One worker: accepts a connection and serves it itself, then accepts
    /// again (leader/follower). Serving on the accepting thread spares each
    /// session a hand-off to another thread, which costs a wake-up and a
    /// context switch. Whoever takes the last waiting acceptor's place
    /// starts a new acceptor first, so someone is always accepting (and can
    /// answer `error busy`); a worker idle for [`WORKER_KEEP_ALIVE`] leaves
    /// while another is accepting.
    fn accept_and_serve(self: &Arc<Self>, acceptors: &Arc<Acceptors>, shutdown: &Shutdown) {
        let _alive = acceptors.alive.clone();
        let mut idle_since = Instant::now();
        loop {
            if shutdown.is_triggered() {
                acceptors.accepting.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            let (stream, peer) = match acceptors.listener.accept() {
                Ok(connection) => connection,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if idle_since.elapsed() >= WORKER_KEEP_ALIVE && acceptors.leave_if_not_last() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    if !shutdown.is_triggered() {
                        self.accept_failed(&e, &acceptors.accept_log);
                    }
                    continue;
                }
            };
            let others = acceptors.accepting.fetch_sub(1, Ordering::AcqRel) - 1;
            if shutdown.is_triggered() {
                return;
            }
            if others == 0
                && let Err(e) = self.spawn_acceptor(acceptors, shutdown)
            {
                // Nobody accepts until this session ends: say so, serve on.
                self.console.diagnostic(format_args!(
                    "center: no thread for a new acceptor ({e}); accepting after this session"
                ));
            }
            match self.seats.take(peer.ip()) {
                Ok(_seat) => self.run_session(stream, peer, shutdown),
                Err(full) => self.refuse_busy(&stream, peer, full, &acceptors.busy_log),
            }
            acceptors.accepting.fetch_add(1, Ordering::AcqRel);
            idle_since = Instant::now();
        }
    }

    fn accept_failed(&self, e: &io::Error, log: &RateLimit) {
        use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        // A peer that gave up before we accepted it is not our problem.
        if matches!(e.kind(), Interrupted | ConnectionAborted | ConnectionReset) {
            return;
        }
        // EMFILE, ENFILE, ENOBUFS, ENOMEM and the like: wait for sessions to
        // end and free what is short, then accept again.
        if let Some(held_back) = log.allow() {
            self.console.diagnostic(format_args!(
                "center: accept failed: {e}; retrying{held_back}"
            ));
        }
        std::thread::sleep(ACCEPT_BACKOFF);
    }

    fn refuse_busy(&self, stream: &TcpStream, peer: SocketAddr, full: Full, log: &RateLimit) {
        self.counters.busy.fetch_add(1, Ordering::Relaxed);
        // Never block the accept loop on a peer that does not read.
        let _ = stream.set_nonblocking(true);
        let _ = (&*stream).write(format!("{}\n", words::BUSY).as_bytes());
        if let Some(held_back) = log.allow() {
            let why = match full {
                Full::Center => format!("{} sessions open", self.seats.max),
                Full::Address => format!(
                    "its address holds {} sessions, the most one address may",
                    self.seats.per_address
                ),
            };
            self.console.diagnostic(format_args!(
                "center: {peer}: refused with 'error busy', {why}{held_back}"
            ));
        }
    }

    fn run_session(&self, stream: TcpStream, peer: SocketAddr, shutdown: &Shutdown) {
        let _ = stream.set_nodelay(true);
        // A peer that stops reading must not hold the thread forever.
        let _ = stream.set_write_timeout(Some(self.limits.message_timeout));
        self.serve_session(stream, peer, shutdown);
    }
}

/// What the acceptor threads of one center share.
struct Acceptors {
    listener: TcpListener,
    /// Threads waiting in accept() now.
    accepting: AtomicUsize,
    accept_log: RateLimit,
    busy_log: RateLimit,
    /// Each acceptor holds a clone while it runs; `serve` waits for the
    /// channel to disconnect.
    alive: crossbeam_channel::Sender<()>,
}

impl Acceptors {
    /// Stops counting the caller as accepting, unless it is the only one
    /// left. Returns whether it may leave.
    fn leave_if_not_last(&self) -> bool {
        self.accepting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 1).then(|| n - 1)
            })
            .is_ok()
    }
}

/// Who holds the center's sessions: how many are open, in all and per
/// peer address. A connection takes a seat if one is free and its address
/// holds fewer than its share, so one address cannot take every seat.
struct Seats {
    max: usize,
    per_address: usize,
    /// Sessions open now, readable without the lock.
    open: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection got no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// Every seat is taken.
    Center,
    /// Its address holds its share already.
    Address,
}

impl Seats {
    fn new(max: usize, per_address: usize) -> Seats {
        Seats {
            max,
            per_address,
            open: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// A seat for a session from `peer`, held until the [`Seat`] drops.
    fn take(&self, peer: IpAddr) -> Result<Seat<'_>, Full> {
        let address = seat_address(peer);
        let mut by_address = self.by_address.lock();
        if self.open.load(Ordering::Acquire) >= self.max {
            return Err(Full::Center);
        }
        let held = by_address.entry(address).or_insert(0);
        if *held >= self.per_address {
            return Err(Full::Address);
        }
        *held += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Seat {
            seats: self,
            address,
        })
    }
}

/// The address a peer's seats are counted under: an IPv4 address as it is
/// (also when mapped into IPv6), an IPv6 address by its /64, the block one
/// host usually has to choose from.
fn seat_address(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// One open session's seat, given back when dropped.
struct Seat<'a> {
    seats: &'a Seats,
    address: IpAddr,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut by_address = self.seats.by_address.lock();
        if let Some(held) = by_address.get_mut(&self.address) {
            *held -= 1;
            if *held == 0 {
                by_address.remove(&self.address);
            }
        }
        self.seats.open.fetch_sub(1, Ordering::AcqRel);
    }
}
