//! The health center: a TCP server that authenticates patients, lists free
//! slots and reserves one per session (PROTOCOL.md, "Session at the
//! center").
//!
//! This module owns the accept loop and its limits (concurrent sessions,
//! `error busy`, accept errors such as running out of descriptors), one
//! session's state machine with its deadlines, the phase messages, and the
//! `center` subcommand. The slot table is `slots.rs`'s, framing and parsing
//! `protocol.rs`'s.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::RecvTimeoutError;
use parking_lot::Mutex;

use crate::console::{Console, Transcript};
use crate::data::{Fixtures, Source, Users};
use crate::ledger::Ledger;
use crate::protocol::{self, Decoder, Dialect, MIN_MESSAGE_LIMIT, ProtocolError, Request, words};
use crate::shutdown::Shutdown;
use crate::slots::{DEFAULT_LIST_CAP, Reservation, SlotBook};

/// The center's limits; each has a flag and a documented default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest message accepted, in bytes (at least [`MIN_MESSAGE_LIMIT`]).
    pub message_limit: usize,
    /// How long a session may take to send each whole message.
    pub idle_timeout: Duration,
    /// How long unterminated first text waits before it is taken as a
    /// classic message without terminator.
    pub grace: Duration,
    /// Sessions open at once; past it a connection gets `error busy`.
    pub max_sessions: usize,
    /// How long sessions in flight may run on after shutdown.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            message_limit: 512,
            idle_timeout: Duration::from_secs(30),
            grace: Duration::from_millis(100),
            max_sessions: 1024,
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
/// At most one log line per this interval for repeated accept problems.
const LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Largest single read from a session's socket.
const READ_CHUNK: usize = 4096;

/// Counts kept while serving, returned by [`Center::serve`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub sessions: u64,
    pub bookings: u64,
    pub errors: u64,
    pub busy: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sessions, {} bookings, {} errors, {} refused busy",
            self.sessions, self.bookings, self.errors, self.busy
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
    book: SlotBook,
    limits: Limits,
    console: Console,
    show_passwords: bool,
    ledger: Option<Ledger>,
    counters: Counters,
    /// Sessions open now; bounded by `limits.max_sessions`.
    live: Arc<AtomicUsize>,
}

impl Center {
    pub fn new(users: Users, book: SlotBook, limits: Limits, console: Console) -> Center {
        Center {
            users,
            book,
            limits,
            console,
            show_passwords: false,
            ledger: None,
            counters: Counters::default(),
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Prints passwords in the phase messages, as the classic demo did.
    pub fn show_passwords(mut self, show: bool) -> Center {
        self.show_passwords = show;
        self
    }

    /// Records every reservation in `ledger` before confirming it. The book
    /// should already hold what the ledger replayed.
    pub fn with_ledger(mut self, ledger: Ledger) -> Center {
        self.ledger = Some(ledger);
        self
    }

    /// The slot table this center reserves from.
    pub fn book(&self) -> &SlotBook {
        &self.book
    }

    /// Sessions open right now.
    pub fn open_sessions(&self) -> usize {
        self.live.load(Ordering::Acquire)
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
            accept_log: Mutex::new(RateLimitedLog::default()),
            busy_log: Mutex::new(RateLimitedLog::default()),
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
        if let Some(ledger) = &self.ledger
            && let Err(e) = ledger.sync()
        {
            self.console.diagnostic(format_args!(
                "center: flushing the ledger {}: {e}",
                ledger.path().display()
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
            if self.live.load(Ordering::Acquire) >= self.limits.max_sessions {
                self.refuse_busy(&stream, peer, &acceptors.busy_log);
            } else {
                let _seat = Seat::take(&self.live);
                self.run_session(stream, peer, shutdown);
            }
            acceptors.accepting.fetch_add(1, Ordering::AcqRel);
            idle_since = Instant::now();
        }
    }

    fn accept_failed(&self, e: &io::Error, log: &Mutex<RateLimitedLog>) {
        use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        // A peer that gave up before we accepted it is not our problem.
        if matches!(e.kind(), Interrupted | ConnectionAborted | ConnectionReset) {
            return;
        }
        // EMFILE, ENFILE, ENOBUFS, ENOMEM and the like: wait for sessions to
        // end and free what is short, then accept again.
        if let Some(skipped) = log.lock().ready() {
            self.console.diagnostic(format_args!(
                "center: accept failed: {e}; retrying{}",
                skipped_note(skipped)
            ));
        }
        std::thread::sleep(ACCEPT_BACKOFF);
    }

    fn refuse_busy(&self, stream: &TcpStream, peer: SocketAddr, log: &Mutex<RateLimitedLog>) {
        self.counters.busy.fetch_add(1, Ordering::Relaxed);
        // Never block the accept loop on a peer that does not read.
        let _ = stream.set_nonblocking(true);
        let _ = (&*stream).write(format!("{}\n", words::BUSY).as_bytes());
        if let Some(skipped) = log.lock().ready() {
            self.console.diagnostic(format_args!(
                "center: {peer}: refused with 'error busy', {} sessions open{}",
                self.limits.max_sessions,
                skipped_note(skipped)
            ));
        }
    }

    fn run_session(&self, stream: TcpStream, peer: SocketAddr, shutdown: &Shutdown) {
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        // A peer that stops reading must not hold the thread forever.
        let _ = stream.set_write_timeout(Some(self.limits.idle_timeout));
        let mut session = Session {
            center: self,
            stream,
            peer,
            decoder: Decoder::new(self.limits.message_limit),
            deadline: Instant::now() + self.limits.idle_timeout,
            drain_deadline: None,
            read_timeout: None,
            shutdown,
            transcript: self.console.transcript(),
            out: Vec::new(),
            user: None,
        };
        session.run();
    }
}

/// What the acceptor threads of one center share.
struct Acceptors {
    listener: TcpListener,
    /// Threads waiting in accept() now.
    accepting: AtomicUsize,
    accept_log: Mutex<RateLimitedLog>,
    busy_log: Mutex<RateLimitedLog>,
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

/// One open session, counted in `live` until dropped.
struct Seat(Arc<AtomicUsize>);

impl Seat {
    fn take(live: &Arc<AtomicUsize>) -> Seat {
        live.fetch_add(1, Ordering::AcqRel);
        Seat(Arc::clone(live))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Says something at most once per [`LOG_INTERVAL`] and counts the rest.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimitedLog {
    /// `Some(skipped since last time)` when a line may be written now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < LOG_INTERVAL => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

fn skipped_note(skipped: u64) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} more since the last report)")
    }
}

/// Where to connect to reach a listener bound to `addr`.
pub fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// What waiting for the next message ended with.
enum Incoming {
    Message(String),
    Closed,
    TimedOut,
    /// The drain after shutdown ran out before the next message.
    ShuttingDown,
    Bad(ProtocolError),
    Failed(io::Error),
}

/// Where a session stands: what it may send next.
enum Stage {
    Unauthenticated,
    Authenticated(String),
    Listed(String),
}

impl Stage {
    fn expects(&self) -> &'static str {
        match self {
            Stage::Unauthenticated => "authenticate",
            Stage::Authenticated(_) => "available",
            Stage::Listed(_) => "selection",
        }
    }
}

struct Session<'a> {
    center: &'a Center,
    stream: TcpStream,
    peer: SocketAddr,
    decoder: Decoder,
    /// When the next whole message must have arrived. It moves only when an
    /// answer is sent, so trickling bytes does not keep a session alive.
    deadline: Instant,
    /// Set once the session notices shutdown.
    drain_deadline: Option<Instant>,
    read_timeout: Option<Duration>,
    shutdown: &'a Shutdown,
    transcript: Transcript<'a>,
    /// The framed answer, reused across the session's answers.
    out: Vec<u8>,
    user: Option<String>,
}

impl Session<'_> {
    fn run(&mut self) {
        let mut stage = Stage::Unauthenticated;
        loop {
            let text = match self.next_message() {
                Incoming::Message(text) => text,
                Incoming::Closed => return,
                Incoming::TimedOut => {
                    let reason = format!(
                        "no whole message within {}s; disconnecting",
                        self.center.limits.idle_timeout.as_secs_f64()
                    );
                    return self.refuse(&reason);
                }
                Incoming::ShuttingDown => return self.refuse("the center is shutting down"),
                Incoming::Bad(e) => return self.refuse(&e.to_string()),
                Incoming::Failed(e) => {
                    return self.log(format_args!("connection failed: {e}"));
                }
            };
            let request = match Request::parse(&text) {
                Ok(request) => request,
                Err(e) => return self.refuse(&e.to_string()),
            };
            stage = match (stage, request) {
                (Stage::Unauthenticated, Request::Authenticate { username, password }) => {
                    match self.authenticate(username, &password) {
                        Some(user) => Stage::Authenticated(user),
                        None => return,
                    }
                }
                (Stage::Authenticated(user), Request::Available) => match self.list(&user) {
                    true => Stage::Listed(user),
                    false => return,
                },
                (Stage::Listed(user), Request::Selection(index)) => {
                    return self.select(&user, index);
                }
                (stage, request) => {
                    let e = ProtocolError::OutOfOrder {
                        expected: stage.expects(),
                        got: request.command(),
                    };
                    return self.refuse(&e.to_string());
                }
            };
        }
    }

    /// Phase 1. Returns the user on success.
    fn authenticate(&mut self, username: String, password: &str) -> Option<String> {
        let shown = if self.center.show_passwords {
            format!(" and password {password}")
        } else {
            String::new()
        };
        self.transcript.line(format_args!(
            "Phase 1: The Health Center Server has received request from a patient with username {username}{shown}."
        ));
        let ok = self.center.users.check(&username, password);
        let answer = if ok { words::SUCCESS } else { words::FAILURE };
        self.transcript.line(format_args!(
            "Phase 1: The Health Center Server sends the response {answer} to patient with username {username}."
        ));
        self.user = Some(username.clone());
        let sent = self.answer(answer);
        (ok && sent).then_some(username)
    }

    /// Phase 2, the list. Returns whether the session goes on.
    fn list(&mut self, user: &str) -> bool {
        self.transcript.line(format_args!(
            "Phase 2: The Health Center Server, receives a request for available time slots from patients with port number {} and IP address {}.",
            self.peer.port(),
            self.peer.ip()
        ));
        let free = self.center.book.free_list();
        if free.is_empty() {
            self.transcript.line(format_args!(
                "Phase 2: The Health Center Server has no available time slots for patient with username {user}."
            ));
            self.answer(words::NOT_AVAILABLE);
            return false;
        }
        self.transcript.line(format_args!(
            "Phase 2: The Health Center Server sends available time slots to patient with username {user}."
        ));
        let text = match self.dialect() {
            Dialect::Line => &free.line,
            Dialect::Classic => &free.classic,
        };
        self.answer(text)
    }

    /// Phase 2, the reservation; the session ends after it.
    fn select(&mut self, user: &str, index: u64) {
        self.transcript.line(format_args!(
            "Phase 2: The Health Center Server receives a request for appointment {index} from patient with port number {} and username {user}.",
            self.peer.port()
        ));
        match self.center.book.reserve(index, user) {
            Reservation::Booked { doctor, port } => {
                if let Some(ledger) = &self.center.ledger
                    && let Err(e) = ledger.record_booking(index, user)
                {
                    // Not durable, so not confirmed: the slot stays free.
                    self.center.book.cancel(index, user);
                    self.log(format_args!("recording slot {index} in the ledger: {e}"));
                    return self.refuse("the reservation could not be recorded; try again");
                }
                if self.answer(&format!("{doctor} {port}")) {
                    self.center
                        .counters
                        .bookings
                        .fetch_add(1, Ordering::Relaxed);
                    self.transcript.line(format_args!(
                        "Phase 2: The Health Center Server confirms the following appointment {index} to patient with username {user}."
                    ));
                } else {
                    self.undo(index, user);
                }
            }
            Reservation::Taken => {
                self.transcript.line(format_args!(
                    "Phase 2: The Health Center Server rejects the following appointment {index} to patient with username {user}."
                ));
                self.answer(words::NOT_AVAILABLE);
            }
            Reservation::NoSuchSlot => self.refuse(&format!("no slot has index {index}")),
        }
    }

    /// The patient never learned of its reservation: free the slot. The
    /// cancel is journalled first, so the journal never shows a slot given
    /// to a second patient before the first one's cancel.
    fn undo(&mut self, index: u64, user: &str) {
        if let Some(ledger) = &self.center.ledger
            && let Err(e) = ledger.record_cancel(index, user)
        {
            return self.log(format_args!(
                "the answer for slot {index} could not be sent, and its cancel could not be recorded ({e}); the slot stays reserved"
            ));
        }
        self.center.book.cancel(index, user);
        self.log(format_args!(
            "the answer for slot {index} could not be sent; reservation cancelled"
        ));
    }

    fn dialect(&self) -> Dialect {
        self.decoder.dialect().unwrap_or(Dialect::Line)
    }

    /// Sends one answer in the session's dialect. Returns whether it went.
    fn answer(&mut self, text: &str) -> bool {
        let mut bytes = std::mem::take(&mut self.out);
        bytes.clear();
        protocol::encode_into(self.dialect(), text, &mut bytes);
        let sent = self.stream.write_all(&bytes);
        self.out = bytes;
        self.transcript.exchange_done();
        self.deadline = Instant::now() + self.center.limits.idle_timeout;
        match sent {
            Ok(()) => true,
            Err(e) => {
                self.log(format_args!("could not answer: {e}"));
                false
            }
        }
    }

    /// Answers `error REASON`, logs it, and (by returning) ends the session.
    fn refuse(&mut self, reason: &str) {
        self.center.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.log(format_args!("error {reason}"));
        self.answer(&format!("error {reason}"));
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        let user = self.user.as_deref().unwrap_or("not authenticated");
        self.center
            .console
            .diagnostic(format_args!("center: {} ({user}): {what}", self.peer));
    }

    fn next_message(&mut self) -> Incoming {
        let mut chunk = [0u8; READ_CHUNK];
        let mut last_arrival = Instant::now();
        loop {
            match self.decoder.next_message() {
                Ok(Some(text)) => return Incoming::Message(text),
                Ok(None) => {}
                Err(e) => return Incoming::Bad(e),
            }
            let now = Instant::now();
            if self.drain_deadline.is_none()
                && let Some(stopped) = self.shutdown.triggered_at()
            {
                self.drain_deadline = Some(stopped + self.center.limits.drain_timeout);
            }
            let deadline = self
                .drain_deadline
                .map_or(self.deadline, |d| d.min(self.deadline));
            if self.decoder.awaits_grace() && now >= last_arrival + self.center.limits.grace {
                match self.decoder.end_of_grace() {
                    Ok(Some(text)) => return Incoming::Message(text),
                    Ok(None) => {}
                    Err(e) => return Incoming::Bad(e),
                }
                continue;
            }
            if now >= deadline {
                return match self.drain_deadline {
                    Some(drain) if drain < self.deadline => Incoming::ShuttingDown,
                    _ => Incoming::TimedOut,
                };
            }
            let mut wait = (deadline - now).min(SHUTDOWN_POLL);
            if self.decoder.awaits_grace() {
                wait = wait
                    .min((last_arrival + self.center.limits.grace).saturating_duration_since(now));
            }
            if let Err(e) = self.set_read_timeout(wait.max(Duration::from_millis(1))) {
                return Incoming::Failed(e);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Incoming::Closed,
                Ok(n) => {
                    self.decoder.feed(&chunk[..n]);
                    last_arrival = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Incoming::Failed(e),
            }
        }
    }

    /// Sets the read timeout only when it changes, to spare a syscall per read.
    fn set_read_timeout(&mut self, wait: Duration) -> io::Result<()> {
        // Round to whole milliseconds so nearby deadlines share a setting.
        let wait = Duration::from_millis(wait.as_millis().max(1) as u64);
        if self.read_timeout != Some(wait) {
            self.stream.set_read_timeout(Some(wait))?;
            self.read_timeout = Some(wait);
        }
        Ok(())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.transcript.flush();
    }
}

/// Binds a TCP listener with a backlog deep enough for bursts of patients
/// (std's is 128) and `SO_REUSEADDR`, so a restarted center gets its port
/// back while old connections sit in TIME_WAIT.
///
/// # Errors
///
/// The address does not resolve, or binding it fails (in use, no rights).
pub fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let resolved = crate::resolve(addr)?;
    let socket = Socket::new(Domain::for_address(resolved), Type::STREAM, None)
        .with_context(|| format!("creating a socket for the center on {addr}"))?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&resolved.into())
        .with_context(|| format!("binding the center on {addr}"))?;
    socket
        .listen(1024)
        .with_context(|| format!("listening on {addr}"))?;
    Ok(socket.into())
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
    /// Directory holding users.txt, availabilities.txt and DOCTOR.txt
    /// [default: the built-in copies of fixtures/].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
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
    /// Seconds a session may take to send each whole message before it is
    /// told `error ...` and dropped.
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_secs_f64(), value_name = "SECS")]
    pub idle_timeout: f64,
    /// Sessions served at once; past it a new connection gets `error busy`.
    #[arg(long, default_value_t = Limits::default().max_sessions, value_name = "N")]
    pub max_sessions: usize,
    /// Journal every reservation to FILE (fsync before confirming) and
    /// replay it at start, so a restarted center never gives a slot twice.
    /// Without it, reservations live as long as the process.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// Seconds sessions in flight may run on after SIGINT or SIGTERM.
    #[arg(long, default_value_t = Limits::default().drain_timeout.as_secs_f64(), value_name = "SECS")]
    pub drain_timeout: f64,
}

impl Args {
    fn limits(&self) -> anyhow::Result<Limits> {
        Ok(Limits {
            message_limit: self.max_message,
            idle_timeout: crate::seconds("--idle-timeout", self.idle_timeout)?,
            max_sessions: self.max_sessions.max(1),
            drain_timeout: crate::seconds("--drain-timeout", self.drain_timeout)?,
            ..Limits::default()
        })
    }
}

/// The `center` subcommand.
///
/// # Errors
///
/// Bad data files, a bad flag, or an address that cannot be bound.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let fixtures = Fixtures::load(&Source::from_option(args.fixtures.as_deref()))?;
    let limits = args.limits()?;
    let console = Console::standard(args.quiet);
    let book = SlotBook::new(&fixtures.slots, args.list_cap);
    let mut center = Center::new(fixtures.users, book.clone(), limits, console.clone())
        .show_passwords(args.show_passwords);
    // The ledger is replayed before the ready line: nothing is served
    // before every recorded reservation is back in the table.
    if let Some(path) = &args.ledger {
        let (ledger, replay) = Ledger::open(path, &fixtures.slots)?;
        for warning in &replay.warnings {
            console.diagnostic(format_args!("center: warning: {warning}"));
        }
        book.restore(&replay.holders);
        console.diagnostic(format_args!(
            "center: ledger {}: {} reservations restored",
            path.display(),
            replay.holders.len()
        ));
        center = center.with_ledger(ledger);
    }
    let listener = bind(&args.listen)?;
    let local = listener.local_addr()?;
    let shutdown = Shutdown::new();
    shutdown.stop_on_signals()?;
    // The address line is printed even with --quiet: scripts wait for it.
    Console::standard(false).phases(&format!(
        "Phase 1: The Health Center Server has port number {} and IP address {}.\n",
        local.port(),
        local.ip()
    ));
    let summary = Arc::new(center).serve(listener, &shutdown)?;
    Console::standard(false).phases(&format!("center stopped: {summary}\n"));
    Ok(())
}
