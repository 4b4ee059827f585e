//! The live page's HTTP server: `GET /` the page, `GET /events` the event
//! stream, `POST /control` the pause / resume / step / pace buttons.
//!
//! A room full of students is its threat model, so it is small and
//! bounded rather than general (why not tiny_http: it ran one request at a
//! time with no body timeout, spawned a thread per connection without
//! limit, and its accept thread ended for good on `EMFILE`, after which
//! the port refused everyone). Here `httparse` reads each request head
//! (`http.rs`, with the answers' bytes and the `Host` and token checks);
//! std sockets and threads do the rest:
//!
//! - at most [`MAX_CONNECTIONS`] connections are served at once, past it
//!   an immediate 503; each request must arrive whole within
//!   [`REQUEST_TIME`] and each write complete within [`WRITE_TIME`], so a
//!   slow request or a stream client that stops reading is dropped
//!   instead of holding a thread or a slot;
//! - the accept loop waits out `EMFILE`/`ENFILE` and goes on;
//! - every request must name the bound address in `Host` (a DNS name
//!   rebound to loopback does not), controls refuse a foreign `Origin`,
//!   and off loopback they need the token only the terminal shows
//!   ([`LiveServer::teacher_url`]): the plain URL is the room's, read
//!   only;
//! - every answer carries a content security policy that forbids framing
//!   and lets only the page's own script run.
//!
//! Each event stream is written by hand: chunked, one chunk per batch of
//! events, flushed. It ends with its final chunk when the server stops,
//! and on the first failed write when the browser has left; a keep-alive
//! comment every few seconds finds a browser that left quietly. Streams
//! read from their own bounded queue ([`super::Hub`]), so a slow browser
//! only loses its own events, and the run never waits for one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use parking_lot::Mutex;

use super::http::{
    Answer, Request, chunk, host_matches, read_request, reason, refuse_now, respond, same_secret,
    security_headers,
};
use super::{Controls, Event, Hub, PAGE};

/// Events a browser may fall behind by before it loses some.
const BROWSER_QUEUE: usize = 4096;
/// Connections served at once (requests and event streams); past it, 503.
pub const MAX_CONNECTIONS: usize = 64;
/// Event streams open at once; past it, 503.
pub const MAX_STREAMS: usize = 32;
/// The time a request has to arrive whole, head and body.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// The time one write to a browser may take; a stream client that reads
/// slower than this is dropped (its browser reconnects and gets the state).
pub const WRITE_TIME: Duration = Duration::from_secs(3);
/// How often loops look at the stop signals.
const POLL: Duration = Duration::from_millis(100);
/// The shortest time between two writes of an event stream.
const BATCH: Duration = Duration::from_millis(100);
/// Silence after which a stream sends a comment, to find a browser gone.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Longest `POST /control` body read.
pub(super) const MAX_CONTROL: usize = 64;
/// How long dropping the server waits for its threads; a stream stuck
/// writing ends by its write time limit on its own after.
const JOIN_TIME: Duration = Duration::from_secs(2);
/// The header that carries the teacher's token on `POST /control`.
pub(super) const TOKEN_HEADER: &str = "x-medsim-token";

/// A running live server; stopping or dropping it stops it and joins its
/// threads.
pub struct LiveServer {
    addr: SocketAddr,
    token: Option<String>,
    stopped: Arc<AtomicBool>,
    main: Option<JoinHandle<()>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Serves the live page on `listener` (already bound: `127.0.0.1:0` in
/// tests) until `stop` returns true or the returned server is dropped.
/// With `controls`, the page shows pause / step / pace and `POST /control`
/// works; without, it answers 404. On an address other than loopback the
/// controls need the token of [`LiveServer::teacher_url`].
///
/// # Errors
///
/// The listener's address could not be read, or it could not be made
/// non-blocking, or the accept thread could not start.
pub fn serve(
    listener: TcpListener,
    hub: Hub,
    controls: Option<Controls>,
    stop: impl Fn() -> bool + Send + Sync + 'static,
) -> std::io::Result<LiveServer> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let token = (controls.is_some() && !addr.ip().is_loopback()).then(new_token);
    let stopped = Arc::new(AtomicBool::new(false));
    let threads = Arc::new(Mutex::new(Vec::new()));
    let context = Arc::new(Context {
        hub,
        controls,
        addr,
        token: token.clone(),
        stop: Box::new(stop),
        stopped: Arc::clone(&stopped),
        connections: AtomicUsize::new(0),
        streams: AtomicUsize::new(0),
        threads: Arc::clone(&threads),
    });
    let main = std::thread::Builder::new()
        .name("medsim-live-http".into())
        .spawn(move || context.accept_loop(&listener))?;
    Ok(LiveServer {
        addr,
        token,
        stopped,
        main: Some(main),
        threads,
    })
}

impl LiveServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`, the page: read only off loopback.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The page with its controls: [`LiveServer::url`] with the token
    /// when one is needed (off loopback), else the same URL. It is meant
    /// for the terminal only.
    pub fn teacher_url(&self) -> String {
        match &self.token {
            Some(token) => format!("{}?token={token}", self.url()),
            None => self.url(),
        }
    }

    /// Whether the controls need a token (the address is not loopback).
    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    /// Stops serving, ends every event stream and joins the threads.
    pub fn stop(self) {}
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(main) = self.main.take() {
            let _ = main.join();
        }
        let deadline = Instant::now() + JOIN_TIME;
        for thread in std::mem::take(&mut *self.threads.lock()) {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// 128 random bits as hex, from the kernel; without `/dev/urandom`, from
/// std's per-process hash keys (random too, if not as strong).
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        use std::hash::{BuildHasher as _, Hasher as _};
        for half in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(Instant::now().elapsed().as_nanos());
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Context {
    hub: Hub,
    controls: Option<Controls>,
    addr: SocketAddr,
    token: Option<String>,
    stop: Box<dyn Fn() -> bool + Send + Sync>,
    stopped: Arc<AtomicBool>,
    connections: AtomicUsize,
    streams: AtomicUsize,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Holds one place of a bounded count; gives it back when dropped.
struct Place<'a>(&'a AtomicUsize);

impl Place<'_> {
    fn take(counter: &AtomicUsize, max: usize) -> Option<Place<'_>> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(counter))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's place, taken by the accept loop and given back by the
/// connection's thread when it ends (or with the closure, if no thread
/// could start).
struct ConnectionPlace(Arc<Context>);

impl Drop for ConnectionPlace {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Context {
    fn stopping(&self) -> bool {
        self.stopped.load(Ordering::SeqCst) || (self.stop)()
    }

    /// Waits for a connection at most [`POLL`]; true if one may be there.
    fn readable(listener: &TcpListener) -> bool {
        let mut fd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length given.
        let ready = unsafe { libc::poll(&mut fd, 1, POLL.as_millis() as libc::c_int) };
        ready > 0
    }

    fn accept_loop(self: Arc<Self>, listener: &TcpListener) {
        while !self.stopping() {
            if !Self::readable(listener) {
                continue;
            }
            match listener.accept() {
                Ok((stream, _)) => self.take(stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Out of descriptors (EMFILE, ENFILE) or memory: the
                // waiting connection stays queued; wait for some to close
                // rather than spin, and go on.
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn take(self: &Arc<Self>, stream: TcpStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(WRITE_TIME));
        if Place::take(&self.connections, MAX_CONNECTIONS)
            .map(std::mem::forget)
            .is_none()
        {
            self.refuse_busy(stream);
            return;
        }
        let place = ConnectionPlace(Arc::clone(self));
        let spawned = std::thread::Builder::new()
            .name("medsim-live-conn".into())
            .spawn(move || {
                place.0.serve_connection(stream);
                drop(place);
            });
        // Without a thread (the process is at its limit) the connection
        // was dropped with the closure, and its place given back; the
        // browser retries.
        if let Ok(handle) = spawned {
            let mut threads = self.threads.lock();
            threads.retain(|h| !h.is_finished());
            threads.push(handle);
        }
    }

    /// All places taken: a short 503, written without waiting (a full
    /// socket buffer just loses it), and the connection closed.
    fn refuse_busy(&self, stream: TcpStream) {
        refuse_now(stream, "too many connections; try again");
    }

    fn serve_connection(&self, mut stream: TcpStream) {
        let request = match read_request(&mut stream) {
            Ok(request) => request,
            Err(status) => {
                if status != 0 {
                    let _ = respond(&mut stream, &Answer::text(status, reason(status)));
                }
                return;
            }
        };
        if let Err(status) = self.check_host(&request) {
            let _ = respond(
                &mut stream,
                &Answer::text(
                    status,
                    "the Host header must name the address this view is bound to",
                ),
            );
            return;
        }
        let answer = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/") => self.page(),
            ("GET", "/events") => {
                let may_control = self.may_control(&request);
                return self.stream(stream, may_control);
            }
            ("POST", "/control") => self.control(&request),
            (_, "/" | "/events" | "/control") => Answer::text(405, "method not allowed"),
            _ => Answer::text(404, "not found"),
        };
        let _ = respond(&mut stream, &answer);
    }

    fn page(&self) -> Answer {
        let nonce = new_token();
        let body = PAGE.replacen("<script>", &format!("<script nonce=\"{nonce}\">"), 1);
        Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body,
            nonce: Some(nonce),
        }
    }

    /// `Host` must name the bound address: its IP (any IP when bound to
    /// all addresses, since the room reaches it by the machine's address),
    /// or `localhost` on loopback, with the bound port. A name that
    /// resolves here by DNS rebinding is refused.
    fn check_host(&self, request: &Request) -> Result<(), u16> {
        let Some(host) = &request.host else {
            // HTTP/1.0 without a Host: no browser sends that.
            return Err(400);
        };
        if host_matches(host, self.addr) {
            Ok(())
        } else {
            Err(421)
        }
    }

    /// Whether this request carries what the controls need: the token
    /// when one is set.
    fn may_control(&self, request: &Request) -> bool {
        match (&self.token, &request.token) {
            (None, _) => true,
            (Some(token), Some(given)) => same_secret(token, given),
            (Some(_), None) => false,
        }
    }

    /// `pause`, `resume`, `step` or `pace=MS`, from this page only.
    fn control(&self, request: &Request) -> Answer {
        let Some(controls) = &self.controls else {
            return Answer::text(404, "this run has no controls");
        };
        // A page elsewhere may post here (a plain form does): the
        // browser names its origin, and only this page's is taken.
        let foreign = match (&request.origin, &request.host) {
            (Some(origin), Some(host)) => !origin.eq_ignore_ascii_case(&format!("http://{host}")),
            (Some(_), None) => true,
            (None, _) => false,
        } || request
            .fetch_site
            .as_deref()
            .is_some_and(|site| site != "same-origin" && site != "none");
        if foreign {
            return Answer::text(403, "controls are taken from this view's own page only");
        }
        if !self.may_control(request) {
            return Answer::text(
                403,
                "read only: the controls need the teacher's URL (printed in the terminal)",
            );
        }
        let Ok(body) = std::str::from_utf8(&request.body) else {
            return Answer::text(400, "the body is not UTF-8 text");
        };
        match body.trim() {
            "pause" => controls.pause(),
            "resume" => controls.resume(),
            "step" => controls.step(),
            body => match body.strip_prefix("pace=").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms <= 60_000 => {
                    controls.set_pace(Duration::from_millis(ms));
                    self.hub.publish(Event::Pace { ms });
                }
                _ => {
                    return Answer::text(
                        400,
                        "expected pause, resume, step or pace=MS (0 to 60000)",
                    );
                }
            },
        }
        let paused = controls.is_paused();
        self.hub.publish(Event::Paused { paused });
        Answer::text(200, &state_json(controls))
    }

    fn stream(&self, stream: TcpStream, may_control: bool) {
        let Some(_place) = Place::take(&self.streams, MAX_STREAMS) else {
            refuse_now(stream, "too many event streams; try again");
            return;
        };
        self.write_events(stream, may_control);
    }

    fn write_events(&self, stream: TcpStream, may_control: bool) {
        let mut out = std::io::BufWriter::new(stream);
        let head = format!(
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/event-stream; charset=utf-8\r\n\
             Connection: close\r\n\
             Transfer-Encoding: chunked\r\n{}\r\n",
            security_headers(None)
        );
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        let subscription = self.hub.subscribe(BROWSER_QUEUE);
        let hello = serde_json::json!({
            "type": "hello",
            "controls": self.controls.as_ref().filter(|_| may_control).map(state_value),
            // A page without the token sees the run, and why it has no
            // buttons.
            "read_only": self.controls.is_some() && !may_control,
            "step_from": self.controls.as_ref().and_then(Controls::step_source),
        })
        .to_string();
        let mut text = format!("data: {hello}\n\n");
        for json in &subscription.initial {
            text.push_str(&format!("data: {json}\n\n"));
        }
        if chunk(&mut out, &text).is_err() {
            return;
        }
        let mut reported_dropped = 0;
        // Pause, pace and the number held can change without a POST (the
        // simulation may set them): each change is sent as it is seen.
        let controls = self.controls.as_ref().filter(|_| may_control);
        let mut reported_controls = controls.map(state_json);
        let mut last_write = Instant::now();
        while !self.stopping() {
            let mut text = String::new();
            match subscription.events.recv_timeout(POLL) {
                Ok(json) => {
                    // At most one write a batch interval: the page draws
                    // no faster, and a stream woken for every event would
                    // take the run's CPU (32 streams on 2 cores slowed a
                    // 1,000-patient run by a third).
                    let since = last_write.elapsed();
                    if since < BATCH {
                        std::thread::sleep(BATCH - since);
                    }
                    text = format!("data: {json}\n\n");
                    // Whatever else is queued goes in the same chunk.
                    for json in subscription.events.try_iter() {
                        text.push_str("data: ");
                        text.push_str(&json);
                        text.push_str("\n\n");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The hub is gone: nothing more will come.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let dropped = subscription.dropped.load(Ordering::Relaxed);
            if dropped != reported_dropped {
                reported_dropped = dropped;
                text.push_str(&format!(
                    "data: {{\"type\":\"browser_dropped\",\"count\":{dropped}}}\n\n"
                ));
            }
            if let Some(controls) = controls {
                let now = state_json(controls);
                if reported_controls.as_ref() != Some(&now) {
                    text.push_str(&format!(
                        "data: {{\"type\":\"controls\",\"controls\":{now}}}\n\n"
                    ));
                    reported_controls = Some(now);
                }
            }
            if text.is_empty() && last_write.elapsed() >= KEEP_ALIVE {
                text.push_str(": keep-alive\n\n");
            }
            if !text.is_empty() {
                // A browser that does not take a chunk within the write
                // time limit is dropped: its place goes to someone else.
                // The limit holds for the whole chunk, so one that takes
                // it a trickle at a time is dropped too.
                let started = Instant::now();
                if chunk(&mut out, &text).is_err() || started.elapsed() > WRITE_TIME {
                    return;
                }
                last_write = Instant::now();
            }
        }
        // The final chunk: the browser sees a clean end, not a reset.
        let _ = out.write_all(b"0\r\n\r\n");
        let _ = out.flush();
    }
}

fn state_value(controls: &Controls) -> serde_json::Value {
    serde_json::json!({
        "paused": controls.is_paused(),
        "pace_ms": u64::try_from(controls.pace().as_millis()).unwrap_or(u64::MAX),
        "waiting": controls.waiting(),
    })
}

fn state_json(controls: &Controls) -> String {
    state_value(controls).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_given_back_once() {
        let counter = AtomicUsize::new(0);
        let first = Place::take(&counter, 2).expect("a place");
        let second = Place::take(&counter, 2).expect("a place");
        // A refusal must not give back a place it never took.
        for _ in 0..3 {
            assert!(Place::take(&counter, 2).is_none());
        }
        assert_eq!(counter.load(Ordering::SeqCst), 2);
        drop(first);
        drop(second);
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn host_must_name_the_bound_address() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
        assert!(host_matches("127.0.0.1:8080", loopback));
        assert!(host_matches("localhost:8080", loopback));
        assert!(host_matches("LOCALHOST:8080", loopback));
        assert!(!host_matches("127.0.0.1:8081", loopback));
        assert!(!host_matches("127.0.0.2:8080", loopback));
        assert!(!host_matches("attacker.example:8080", loopback));
        assert!(!host_matches("127.0.0.1", loopback));
        let all: SocketAddr = "0.0.0.0:8080".parse().expect("an address");
        assert!(host_matches("192.168.1.20:8080", all));
        assert!(host_matches("localhost:8080", all));
        assert!(!host_matches("rebound.example:8080", all));
        let lan: SocketAddr = "192.168.1.20:80".parse().expect("an address");
        assert!(host_matches("192.168.1.20", lan));
        assert!(!host_matches("localhost", lan));
        let v6: SocketAddr = "[::1]:9000".parse().expect("an address");
        assert!(host_matches("[::1]:9000", v6));
        assert!(!host_matches("[::1", v6));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    #[test]
    fn tokens_are_128_random_bits() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
