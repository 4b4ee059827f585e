//! One session at the center, as a state machine over any byte stream:
//! what may come next, the answer to each message, and the deadlines that
//! keep a slow or silent peer from holding a thread.
//!
//! It runs over a [`Link`] (a `Read + Write` that can wait a bounded time),
//! so its unit tests feed it byte scripts with no socket. Accepting, the
//! session limit and the counters are the center's (`mod.rs`); framing and
//! parsing are `protocol`'s.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Center, READ_CHUNK, SHUTDOWN_POLL};
use crate::console::Transcript;
use crate::protocol::{self, Decoder, Dialect, ProtocolError, Request, words};
use crate::shutdown::Shutdown;
use crate::store::Reservation;
use crate::trace;

/// A session's byte stream: read, write, and a bounded wait for reads.
pub trait Link: Read + Write {
    /// How long the next read may wait before `WouldBlock`/`TimedOut`.
    ///
    /// # Errors
    ///
    /// The stream refused the setting.
    fn set_read_timeout(&mut self, wait: Duration) -> io::Result<()>;
}

impl Link for TcpStream {
    fn set_read_timeout(&mut self, wait: Duration) -> io::Result<()> {
        TcpStream::set_read_timeout(self, Some(wait))
    }
}

impl Center {
    /// Serves one session on `link` from `peer` until it ends.
    pub fn serve_session<L: Link>(&self, link: L, peer: SocketAddr, shutdown: &Shutdown) {
        let number = self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        let mut session = Session {
            // Only a watched center names its peers for the page.
            shown_as: (self.watcher.is_some() && self.show_messages)
                .then(|| (number, peer.to_string())),
            center: self,
            stream: link,
            peer,
            decoder: Decoder::new(self.limits.message_limit),
            // Whoever connects has their login ready: a connection that
            // stays silent is let go soon, so it cannot hold a seat long.
            deadline: Instant::now() + self.limits.first_wait(),
            message_deadline: None,
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

/// What waiting for the next message ended with.
enum Incoming {
    Message(String),
    Closed,
    /// Silent past the idle limit.
    Idle,
    /// A message begun and not finished within the message limit.
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

struct Session<'a, L: Link> {
    center: &'a Center,
    stream: L,
    peer: SocketAddr,
    decoder: Decoder,
    /// When the next message must begin: the idle limit after the last
    /// answer.
    deadline: Instant,
    /// When the message under way must be whole: the message limit after
    /// its first byte. Trickling bytes do not move it.
    message_deadline: Option<Instant>,
    /// Set once the session notices shutdown.
    drain_deadline: Option<Instant>,
    read_timeout: Option<Duration>,
    shutdown: &'a Shutdown,
    transcript: Transcript<'a>,
    /// The session's number and name for the watcher, when one watches.
    shown_as: Option<(u64, String)>,
    /// The framed answer, reused across the session's answers.
    out: Vec<u8>,
    user: Option<String>,
}

/// The reason of the `error` answer to a message that is no request: what
/// was wrong, and what the session expected instead, so a student reading
/// it knows what to send. Classic patients' usual departures get their own
/// words: a bare index for a selection, a capitalised command.
fn departure(stage: &Stage, e: &ProtocolError) -> String {
    let expected = stage.expects();
    match e {
        ProtocolError::UnknownCommand(word) => {
            if matches!(stage, Stage::Listed(_)) && protocol::parse_index(word).is_ok() {
                format!(
                    "a bare index '{}'; expected 'selection {}'",
                    protocol::shorten(word),
                    protocol::shorten(word)
                )
            } else if word.to_ascii_lowercase() == expected {
                format!(
                    "unknown command '{}'; expected '{expected}' (commands are lowercase)",
                    protocol::shorten(word)
                )
            } else {
                format!("{e}; expected '{expected}'")
            }
        }
        ProtocolError::NotUtf8 | ProtocolError::Empty => format!("{e}; expected '{expected}'"),
        _ => e.to_string(),
    }
}

impl<L: Link> Session<'_, L> {
    fn run(&mut self) {
        let mut stage = Stage::Unauthenticated;
        loop {
            let text = match self.next_message() {
                Incoming::Message(text) => text,
                Incoming::Closed => return,
                Incoming::TimedOut => {
                    let reason = format!(
                        "no whole message within {}s; disconnecting",
                        self.center.limits.message_timeout.as_secs_f64()
                    );
                    return self.refuse(&reason);
                }
                Incoming::Idle => {
                    // Nothing has been answered before the first message.
                    let limit = match stage {
                        Stage::Unauthenticated => self.center.limits.first_wait(),
                        _ => self.center.limits.idle_timeout,
                    };
                    let reason = format!("no message for {}s; disconnecting", limit.as_secs_f64());
                    return self.refuse(&reason);
                }
                Incoming::ShuttingDown => return self.refuse("the center is shutting down"),
                Incoming::Bad(e) => return self.refuse(&departure(&stage, &e)),
                Incoming::Failed(e) => {
                    return self.log_peer_trouble(format_args!("connection failed: {e}"));
                }
            };
            self.show(&text, true);
            let request = match Request::parse(&text) {
                Ok(request) => request,
                Err(e) => return self.refuse(&departure(&stage, &e)),
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
        let free = match self.center.store.free_list() {
            Ok(free) => free,
            Err(e) => {
                self.log(format_args!("listing the free slots: {e}"));
                self.refuse("the appointment store cannot answer now; try again later");
                return false;
            }
        };
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
        let reservation = match self.center.store.reserve(index, user) {
            Ok(reservation) => reservation,
            Err(e) => {
                // The store says what is true to tell: nothing recorded,
                // or not confirmed (and cancelled if it did commit).
                self.log(format_args!("reserving slot {index}: {e}"));
                return self.refuse(e.for_patient());
            }
        };
        match reservation {
            Reservation::Booked { doctor, port } => {
                self.transcript.line(format_args!(
                    "Phase 2: The Health Center Server confirms the following appointment {index} to patient with username {user}."
                ));
                if self.answer(&format!("{doctor} {port}")) {
                    self.center
                        .counters
                        .bookings
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(watcher) = &self.center.watcher {
                        watcher.booked(index, user);
                    }
                } else {
                    self.undo(index, user);
                }
            }
            Reservation::Taken => {
                self.transcript.line(format_args!(
                    "Phase 2: The Health Center Server rejects the following appointment {index} to patient with username {user}."
                ));
                if let Some(watcher) = &self.center.watcher {
                    watcher.lost(index, user);
                }
                self.answer(words::NOT_AVAILABLE);
            }
            Reservation::NoSuchSlot => self.refuse(&format!("no slot has index {index}")),
        }
    }

    /// The patient never learned of its reservation: free the slot.
    fn undo(&mut self, index: u64, user: &str) {
        match self.center.store.cancel(index, user) {
            Ok(_) => self.log(format_args!(
                "the answer for slot {index} could not be sent; reservation cancelled"
            )),
            Err(e) => self.log(format_args!(
                "the answer for slot {index} could not be sent, and its cancel failed ({e}); the slot stays reserved"
            )),
        }
    }

    fn dialect(&self) -> Dialect {
        self.decoder.dialect().unwrap_or(Dialect::Line)
    }

    /// Sends one answer in the session's dialect. Returns whether it went.
    fn answer(&mut self, text: &str) -> bool {
        let mut bytes = std::mem::take(&mut self.out);
        bytes.clear();
        protocol::encode_into(self.dialect(), text, &mut bytes);
        // The lines about this exchange go out before its answer: piped or
        // not, they appear as it happens, and before anything the patient
        // prints about the answer.
        self.transcript.flush();
        self.show(text, false);
        let sent = self.stream.write_all(&bytes);
        self.out = bytes;
        self.deadline = Instant::now() + self.center.limits.idle_timeout;
        self.message_deadline = None;
        match sent {
            Ok(()) => true,
            Err(e) => {
                self.log_peer_trouble(format_args!("could not answer: {e}"));
                false
            }
        }
    }

    /// Answers `error REASON`, logs it (within the center's rate limit:
    /// a peer can send bad input at will), and (by returning) ends the
    /// session.
    fn refuse(&mut self, reason: &str) {
        self.center.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.log_peer_trouble(format_args!("error {reason}"));
        self.answer(&format!("error {reason}"));
    }

    /// Tells the watcher one message of this session, if one watches: the
    /// patients of a center are other programs, so the center reports
    /// their conversation itself.
    fn show(&self, text: &str, incoming: bool) {
        if let (Some(watcher), Some((number, peer))) = (&self.center.watcher, &self.shown_as) {
            let (from, to) = if incoming {
                (peer.as_str(), trace::CENTER)
            } else {
                (trace::CENTER, peer.as_str())
            };
            watcher.message(*number, from, to, text);
        }
    }

    /// Logs a problem of this session. Its phase lines so far go out
    /// first, so a log read from a file tells the session's story in order.
    fn log(&mut self, what: std::fmt::Arguments<'_>) {
        self.transcript.flush();
        let user = self.user.as_deref().unwrap_or("not authenticated");
        self.center
            .console
            .diagnostic(format_args!("center: {} ({user}): {what}", self.peer));
    }

    /// Logs a problem a peer can cause at will, within the center's rate
    /// limit for such lines.
    fn log_peer_trouble(&mut self, what: std::fmt::Arguments<'_>) {
        if let Some(held_back) = self.center.peer_log.allow() {
            self.log(format_args!("{what}{held_back}"));
        }
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
            // A message under way has its own, shorter clock.
            if self.decoder.pending() == 0 {
                self.message_deadline = None;
            }
            let own = self.message_deadline.unwrap_or(self.deadline);
            let deadline = self.drain_deadline.map_or(own, |d| d.min(own));
            if self.decoder.awaits_grace() && now >= last_arrival + self.center.limits.grace {
                match self.decoder.end_of_grace() {
                    Ok(Some(text)) => return Incoming::Message(text),
                    Ok(None) => {}
                    Err(e) => return Incoming::Bad(e),
                }
                continue;
            }
            if now >= deadline {
                return match (self.drain_deadline, self.message_deadline) {
                    (Some(drain), _) if drain < own => Incoming::ShuttingDown,
                    (_, Some(_)) => Incoming::TimedOut,
                    (_, None) => Incoming::Idle,
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
                    last_arrival = Instant::now();
                    if self.message_deadline.is_none() {
                        self.message_deadline =
                            Some(last_arrival + self.center.limits.message_timeout);
                    }
                    self.decoder.feed(&chunk[..n]);
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
            self.stream.set_read_timeout(wait)?;
            self.read_timeout = Some(wait);
        }
        Ok(())
    }
}

impl<L: Link> Drop for Session<'_, L> {
    fn drop(&mut self) {
        self.transcript.flush();
    }
}

#[cfg(test)]
mod tests {
    //! The session over byte scripts: each arrival is what one `recv()`
    //! returns; after the last, the peer closes or falls silent.

    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;
    use crate::center::Limits;
    use crate::console::{Captured, Console};
    use crate::data::{Fixtures, Source};
    use crate::store::memory::MemoryStore;

    /// What the peer does after its last arrival.
    #[derive(Clone, Copy)]
    enum Then {
        Close,
        Silence,
    }

    struct Script {
        arrivals: VecDeque<Vec<u8>>,
        /// A pause before each arrival.
        gap: Duration,
        then: Then,
        wait: Duration,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.arrivals.pop_front() {
                Some(arrival) => {
                    std::thread::sleep(self.gap);
                    buf[..arrival.len()].copy_from_slice(&arrival);
                    Ok(arrival.len())
                }
                None => match self.then {
                    Then::Close => Ok(0),
                    Then::Silence => {
                        // A socket's read timeout, shortened: the deadlines
                        // under test are a few milliseconds.
                        std::thread::sleep(self.wait.min(Duration::from_millis(2)));
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                },
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Link for &mut Script {
        fn set_read_timeout(&mut self, wait: Duration) -> io::Result<()> {
            self.wait = wait;
            Ok(())
        }
    }

    /// Runs one session of `arrivals` against the built-in data; returns
    /// what the center wrote, and its console.
    fn session(arrivals: &[&[u8]], then: Then) -> (String, Captured) {
        let (written, captured, _) = session_holding(arrivals, then);
        (written, captured)
    }

    /// As [`session`], with the table's holders after it.
    fn session_holding(arrivals: &[&[u8]], then: Then) -> (String, Captured, Vec<(u64, String)>) {
        session_paced(arrivals, Duration::ZERO, then)
    }

    /// As [`session_holding`], each arrival `gap` after the one before.
    fn session_paced(
        arrivals: &[&[u8]],
        gap: Duration,
        then: Then,
    ) -> (String, Captured, Vec<(u64, String)>) {
        let fixtures = Fixtures::load(&Source::built_in()).unwrap();
        let (console, captured) = Console::captured();
        let limits = Limits {
            grace: Duration::from_millis(10),
            message_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            first_message_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let store = Arc::new(MemoryStore::new(&fixtures.slots, 50));
        let center = Center::new(fixtures.users, store.clone(), limits, console);
        let mut script = Script {
            arrivals: arrivals.iter().map(|a| a.to_vec()).collect(),
            gap,
            then,
            wait: Duration::ZERO,
            written: Vec::new(),
        };
        let peer = "127.0.0.1:5000".parse().unwrap();
        center.serve_session(&mut script, peer, &Shutdown::new());
        (
            String::from_utf8_lossy(&script.written).into_owned(),
            captured,
            store.book().holders(),
        )
    }

    const LIST: &str = "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm 4 Wed 10am 5 Sat 12pm 6 Fri 04pm";

    #[test]
    fn a_line_session_logs_in_lists_and_books() {
        let (written, captured) = session(
            &[
                b"authenticate patient1 password111\n",
                b"available\n",
                b"selection 3\n",
            ],
            Then::Close,
        );
        assert_eq!(written, format!("success\n{LIST}\ndoc1 41720\n"));
        let phases = captured.phases();
        assert!(
            phases.contains(
                "confirms the following appointment 3 to patient with username patient1."
            )
        );
    }

    #[test]
    fn a_classic_session_is_answered_in_c_strings_with_the_seeds_list() {
        let mut padded = b"authenticate patient2 password222\0".to_vec();
        padded.resize(100, 0xA5);
        let (written, _) = session(&[&padded, b"available\0", b"selection 2\0"], Then::Close);
        assert_eq!(written, format!("success\0{LIST} \0doc2 42720\0"));
    }

    #[test]
    fn a_bare_last_message_is_answered_at_the_pause_not_the_idle_limit() {
        let started = Instant::now();
        let (written, _) = session(
            &[
                b"authenticate patient2 password222\0",
                b"available\0",
                b"selection 2",
            ],
            Then::Silence,
        );
        assert!(written.ends_with("doc2 42720\0"), "{written:?}");
        assert!(started.elapsed() < Duration::from_millis(250));
    }

    #[test]
    fn a_wrong_password_gets_failure_and_the_session_ends() {
        let (written, _) = session(
            &[b"authenticate patient1 nope\n", b"available\n"],
            Then::Close,
        );
        assert_eq!(written, "failure\n");
    }

    #[test]
    fn each_departure_is_answered_at_once_naming_what_was_expected() {
        let login: &[u8] = b"authenticate patient1 password111\0";
        let cases: [(&[&[u8]], &str); 6] = [
            (
                &[b"available\0"],
                "error expected 'authenticate', got 'available'\0",
            ),
            (
                &[b"Authenticate patient1 password111\0"],
                "error unknown command 'Authenticate'; expected 'authenticate' (commands are lowercase)\0",
            ),
            (
                &[b"\xff\xfeauthenticate patient1 password111\0"],
                "error message is not valid UTF-8; expected 'authenticate'\0",
            ),
            (
                &[b"xx authenticate patient1 password111\0"],
                "error unknown command 'xx'; expected 'authenticate'\0",
            ),
            (
                &[login, b"available\0", b"1\0"],
                "error a bare index '1'; expected 'selection 1'\0",
            ),
            (
                &[login, b"selection 1\0"],
                "error expected 'available', got 'selection'\0",
            ),
        ];
        for (arrivals, last_answer) in cases {
            let (written, captured) = session(arrivals, Then::Silence);
            assert!(written.ends_with(last_answer), "{written:?}");
            assert!(
                captured
                    .diagnostics()
                    .contains(last_answer.trim_end_matches('\0')),
                "logged too"
            );
        }
    }

    #[test]
    fn a_silent_peer_is_told_and_dropped_at_the_first_message_limit() {
        let (written, _) = session(&[], Then::Silence);
        assert_eq!(written, "error no message for 0.2s; disconnecting\n");
    }

    #[test]
    fn a_peer_silent_after_its_login_is_dropped_at_the_idle_limit() {
        let (written, _) = session(&[b"authenticate patient1 password111\n"], Then::Silence);
        assert_eq!(
            written,
            "success\nerror no message for 0.3s; disconnecting\n"
        );
    }

    #[test]
    fn a_trickle_within_a_message_is_cut_at_the_message_limit() {
        // A byte every 4 ms: never the 10 ms pause that ends a message,
        // never a terminator; 60 of them outlast the 100 ms message limit
        // long before the 300 ms idle limit.
        let bytes: Vec<[u8; 1]> = b"authenticate patient1 password111 and more and more bytes"
            .iter()
            .map(|b| [*b])
            .collect();
        let arrivals: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        let started = Instant::now();
        let (written, _, _) = session_paced(&arrivals, Duration::from_millis(4), Then::Silence);
        assert_eq!(
            written,
            "error no whole message within 0.1s; disconnecting\n"
        );
        assert!(started.elapsed() < Duration::from_millis(250));
    }

    #[test]
    fn nothing_is_reserved_before_a_login_or_after_a_failed_one() {
        let (written, _, holders) = session_holding(&[b"selection 1\n"], Then::Close);
        assert_eq!(written, "error expected 'authenticate', got 'selection'\n");
        assert!(holders.is_empty());
        let (written, _, holders) = session_holding(
            &[
                b"authenticate patient1 nope\n",
                b"available\n",
                b"selection 1\n",
            ],
            Then::Close,
        );
        assert_eq!(written, "failure\n");
        assert!(holders.is_empty());
        let (_, _, holders) = session_holding(
            &[
                b"authenticate patient1 password111\n",
                b"available\n",
                b"selection 1\n",
            ],
            Then::Close,
        );
        assert_eq!(holders, [(1, "patient1".to_owned())]);
    }
}
