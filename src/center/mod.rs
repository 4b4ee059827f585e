//! The health center: a TCP server that authenticates patients, lists free
//! slots and reserves one per session (PROTOCOL.md, "Session at the
//! center").
//!
//! This module owns the accept loop and its limits (concurrent sessions and
//! each peer address's share of them, `error busy`, accept errors such as
//! running out of descriptors), the counters, and the `center` subcommand. One session's state machine is
//! [`session`]'s; the slot table is `slots.rs`'s, framing and parsing
//! `protocol.rs`'s.

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

use crate::cli;
use crate::console::{Console, RateLimit};
use crate::data::{Fixtures, Users};
use crate::live::Hub;
use crate::net;
use crate::protocol::{MIN_MESSAGE_LIMIT, words};
use crate::shutdown::Shutdown;
use crate::store::DEFAULT_LIST_CAP;
use crate::store::{self, Store, StoreUrl};

/// The center's limits; each has a flag and a documented default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest message accepted, in bytes (at least [`MIN_MESSAGE_LIMIT`]).
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
    /// Where bookings and lost races are shown live, when someone watches.
    live: Option<Hub>,
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
            live: None,
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

    /// Shows every booking and lost race on `hub`.
    pub fn with_live(mut self, hub: Option<Hub>) -> Center {
        self.live = hub;
        self
    }

    /// Shows every session's messages on the live hub too.
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

fn parse_message_limit(text: &str) -> Result<usize, String> {
    let limit: usize = text.parse().map_err(|e| format!("{e}"))?;
    if limit < MIN_MESSAGE_LIMIT {
        return Err(format!(
            "must be at least {MIN_MESSAGE_LIMIT} bytes, the classic buffer"
        ));
    }
    Ok(limit)
}

/// Run the health center: authenticate patients, list free slots and
/// reserve one per session, over TCP.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. Port 0 picks a free port; the first line
    /// printed names the address actually bound.
    #[arg(long, default_value = "127.0.0.1:21720", value_name = "ADDR")]
    pub listen: String,
    #[command(flatten)]
    pub fixtures: cli::Fixtures,
    /// Print no phase messages (the bound address is still printed first).
    #[arg(long)]
    pub quiet: bool,
    /// Print passwords in the phase messages, as the classic demo did.
    #[arg(long)]
    pub show_passwords: bool,
    /// Most free slots listed in one answer (the lowest indexes).
    #[arg(long, default_value_t = DEFAULT_LIST_CAP, value_name = "N")]
    pub list_cap: usize,
    /// Longest message accepted, in bytes (at least 100); longer gets
    /// `error message too long`.
    #[arg(long, default_value_t = Limits::default().message_limit, value_parser = parse_message_limit, value_name = "BYTES")]
    pub max_message: usize,
    /// Time a session may take to send a whole message once its first byte
    /// came, before it is told `error ...` and dropped (slowloris).
    #[arg(long, default_value = "30s", value_parser = cli::parse_duration, value_name = "DURATION")]
    pub message_timeout: Duration,
    /// Time a session may stay silent between an answer and its next
    /// message (a person thinking at the prompt) before it is dropped.
    #[arg(long, default_value = "5m", value_parser = cli::parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Sessions served at once; past it a new connection gets `error busy`.
    #[arg(long, default_value_t = Limits::default().max_sessions, value_name = "N")]
    pub max_sessions: usize,
    /// Sessions one peer address may hold at once (an IPv6 address counts
    /// by its /64); past it a new connection from there gets `error busy`,
    /// so one address never takes every seat [default: half of
    /// --max-sessions].
    #[arg(long, value_name = "N")]
    pub max_sessions_per_address: Option<usize>,
    /// Time a new connection may stay silent before its first message (a
    /// patient sends its login at once), at most the idle timeout.
    #[arg(long, default_value = "10s", value_parser = cli::parse_duration, value_name = "DURATION")]
    pub first_message_timeout: Duration,
    /// Where the reservations are kept: `memory` (gone at exit),
    /// `sqlite:FILE` (durable before each `DOCTOR PORT`; made and filled
    /// from the data files when missing), or `postgres://USER@HOST/DB`
    /// (shared by several centers; the schema is made when missing).
    #[arg(long, default_value = "memory", value_name = "URL", value_parser = parse_store)]
    pub store: StoreUrl,
    /// Serve a live view of this center in a browser at ADDR [default: a
    /// free loopback port]: its slot table filling, and the messages of the
    /// patients that connect, whatever program they are. The URL is
    /// printed.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    pub live: Option<String>,
    /// Longest a reservation waits for the store (a commit, a statement,
    /// reconnecting to a restarted server) before the patient is told it
    /// is not confirmed (it is then cancelled if it did commit).
    /// PostgreSQL's statement_timeout is set to it unless the URL sets one.
    #[arg(long, default_value = "10s", value_parser = cli::parse_duration, value_name = "DURATION")]
    pub store_timeout: Duration,
    /// Time sessions in flight may run on after SIGINT or SIGTERM.
    #[arg(long, default_value = "5s", value_parser = cli::parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,
}

impl Args {
    fn limits(&self) -> Limits {
        Limits {
            message_limit: self.max_message,
            message_timeout: self.message_timeout,
            idle_timeout: self.idle_timeout,
            first_message_timeout: self.first_message_timeout,
            max_sessions: self.max_sessions.max(1),
            // An explicit 0 would refuse everyone: take it as one.
            max_sessions_per_address: self.max_sessions_per_address.map_or(0, |n| n.max(1)),
            drain_timeout: self.drain_timeout,
            ..Limits::default()
        }
    }
}

/// The `center` subcommand.
///
/// # Errors
///
/// Bad data files, a bad flag, or an address that cannot be bound.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let fixtures = Fixtures::load(&args.fixtures.source())?;
    let limits = args.limits();
    let limits_drain = limits.drain_timeout;
    let console = Console::standard(args.quiet);
    // Every recorded reservation is in the table before the ready line:
    // nothing is served before the store is open.
    let store = store::open_with(
        &args.store,
        &fixtures.slots,
        args.list_cap,
        args.store_timeout,
    )?;
    // A store that outlives the process says what it brought back.
    if args.store != StoreUrl::Memory {
        let held = store.holders()?;
        console.diagnostic(format_args!(
            "center: {}: {} held",
            store.describe(),
            crate::stats::plural(held.len() as u64, "reservation", "reservations")
        ));
    }
    let hub = args.live.as_ref().map(|_| Hub::for_center());
    if let Some(hub) = &hub {
        let held = store.holders()?;
        hub.publish(crate::live::Event::Slots {
            slots: fixtures
                .slots
                .iter()
                .take(1000)
                .map(|s| crate::live::SlotView {
                    index: s.index,
                    day: s.day.clone(),
                    time: s.time.clone(),
                    doctor: s.doctor.clone(),
                    holder: held
                        .iter()
                        .find(|(index, _)| *index == s.index)
                        .map(|(_, holder)| holder.clone()),
                })
                .collect(),
        });
    }
    let center = Center::new(fixtures.users, store, limits, console.clone())
        .show_passwords(args.show_passwords)
        .with_live(hub.clone())
        .showing_messages(true);
    let listener = net::bind_tcp("the center", &args.listen)?;
    let local = listener.local_addr()?;
    let center = Arc::new(center);
    let shutdown = Shutdown::new();
    shutdown.stop_on_signals_saying({
        let (center, drain, console) = (Arc::clone(&center), limits_drain, console.clone());
        move || {
            let open = center.open_sessions();
            if open > 0 {
                console.diagnostic(format_args!(
                    "center: stopping: waiting up to {} for {}; Ctrl-C again to stop now",
                    crate::duration::show_duration(drain),
                    crate::stats::plural(open as u64, "session", "sessions")
                ));
            }
        }
    })?;
    // The address line is printed even with --quiet: scripts wait for it.
    Console::standard(false).phases(&format!(
        "Phase 1: The Health Center Server has port number {} and IP address {}.\n",
        local.port(),
        local.ip()
    ));
    let live_view = match (&args.live, hub) {
        (Some(addr), Some(hub)) => {
            let listener = net::bind_tcp("the live view", addr)?;
            let server = crate::live::serve(listener, hub, None, {
                let shutdown = shutdown.clone();
                move || shutdown.is_triggered()
            })?;
            console.diagnostic(format_args!("center: live view at {}", server.url()));
            Some(server)
        }
        _ => None,
    };
    let summary = center.serve(listener, &shutdown)?;
    drop(live_view);
    Console::standard(false).phases(&format!("center stopped: {summary}\n"));
    Ok(())
}

fn parse_store(text: &str) -> Result<StoreUrl, String> {
    StoreUrl::parse(text).map_err(|e| e.to_string())
}
