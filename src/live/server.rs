//! The live page's HTTP server: `GET /` the page, `GET /events` the event
//! stream, `POST /control` the pause / resume / step / pace buttons.
//!
//! tiny_http parses requests; one thread answers them, and each event
//! stream gets a thread of its own that writes the response by hand
//! (tiny_http buffers a streamed body into 8 KiB chunks, which would hold
//! events back): chunked, one chunk per event, flushed. A stream ends with
//! its final chunk when the server stops, and on the first failed write
//! when the browser has left; a keep-alive comment every few seconds finds
//! a browser that left quietly. Streams read from their own bounded queue
//! ([`super::Hub`]), so a slow browser only loses its own events.

use std::io::{Read as _, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use parking_lot::Mutex;
use tiny_http::{Header, Method, Request, Response};

use super::{Controls, Event, Hub, PAGE};

/// Events a browser may fall behind by before it loses some.
const BROWSER_QUEUE: usize = 4096;
/// Event streams open at once; past it, 503.
const MAX_STREAMS: usize = 32;
/// How often loops look at the stop signals.
const POLL: Duration = Duration::from_millis(100);
/// Silence after which a stream sends a comment, to find a browser gone.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Longest `POST /control` body read.
const MAX_CONTROL: u64 = 64;
/// How long dropping the server waits for streams stuck writing to a
/// browser that stopped reading; they are left to end on their own after.
const STREAM_JOIN: Duration = Duration::from_secs(2);

/// A running live server; stopping or dropping it stops it and joins its
/// threads.
pub struct LiveServer {
    addr: SocketAddr,
    stopped: Arc<AtomicBool>,
    http: Arc<tiny_http::Server>,
    main: Option<JoinHandle<()>>,
    streams: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Serves the live page on `listener` (already bound: `127.0.0.1:0` in
/// tests) until `stop` returns true or the returned server is dropped.
/// With `controls`, the page shows pause / step / pace and `POST /control`
/// works; without, it answers 404.
///
/// # Errors
///
/// The listener's address could not be read or tiny_http refused it.
pub fn serve(
    listener: TcpListener,
    hub: Hub,
    controls: Option<Controls>,
    stop: impl Fn() -> bool + Send + Sync + 'static,
) -> std::io::Result<LiveServer> {
    let addr = listener.local_addr()?;
    let http = tiny_http::Server::from_listener(listener, None)
        .map(Arc::new)
        .map_err(std::io::Error::other)?;
    let stopped = Arc::new(AtomicBool::new(false));
    let streams = Arc::new(Mutex::new(Vec::new()));
    let context = Context {
        hub,
        controls,
        stop: Arc::new(stop),
        stopped: Arc::clone(&stopped),
        streams: Arc::clone(&streams),
        open_streams: Arc::new(AtomicU64::new(0)),
    };
    let main = std::thread::Builder::new()
        .name("medsim-live-http".into())
        .spawn({
            let http = Arc::clone(&http);
            move || context.run(&http)
        })?;
    Ok(LiveServer {
        addr,
        stopped,
        http,
        main: Some(main),
        streams,
    })
}

impl LiveServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`, the page.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops serving, ends every event stream and joins the threads.
    pub fn stop(self) {}
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.http.unblock();
        if let Some(main) = self.main.take() {
            let _ = main.join();
        }
        let deadline = Instant::now() + STREAM_JOIN;
        for stream in std::mem::take(&mut *self.streams.lock()) {
            while !stream.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if stream.is_finished() {
                let _ = stream.join();
            }
        }
    }
}

type Stop = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct Context {
    hub: Hub,
    controls: Option<Controls>,
    stop: Stop,
    stopped: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<JoinHandle<()>>>>,
    open_streams: Arc<AtomicU64>,
}

impl Context {
    fn stopping(&self) -> bool {
        self.stopped.load(Ordering::SeqCst) || (self.stop)()
    }

    fn run(&self, http: &tiny_http::Server) {
        while !self.stopping() {
            match http.recv_timeout(POLL) {
                Ok(Some(request)) => self.answer(request),
                Ok(None) => {}
                // A connection that failed before its request was read: the
                // next one may be fine.
                Err(_) => {}
            }
        }
    }

    fn answer(&self, mut request: Request) {
        let path = request.url().split('?').next().unwrap_or("").to_owned();
        let reply = match (request.method(), path.as_str()) {
            (Method::Get, "/") => html(PAGE),
            (Method::Get, "/events") => return self.stream(request),
            (Method::Post, "/control") => {
                let mut body = String::new();
                let read = request
                    .as_reader()
                    .take(MAX_CONTROL)
                    .read_to_string(&mut body);
                match read {
                    Ok(_) => self.control(body.trim()),
                    Err(_) => text(400, "the body is not UTF-8 text"),
                }
            }
            (_, "/" | "/events" | "/control") => text(405, "method not allowed"),
            _ => text(404, "not found"),
        };
        // The browser may have gone; nothing to do about it.
        let _ = request.respond(reply);
    }

    /// `pause`, `resume`, `step` or `pace=MS`.
    fn control(&self, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
        let Some(controls) = &self.controls else {
            return text(404, "this run has no controls");
        };
        match body {
            "pause" => controls.pause(),
            "resume" => controls.resume(),
            "step" => controls.step(),
            _ => match body.strip_prefix("pace=").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms <= 60_000 => {
                    controls.set_pace(Duration::from_millis(ms));
                    self.hub.publish(Event::Pace { ms });
                }
                _ => return text(400, "expected pause, resume, step or pace=MS (0 to 60000)"),
            },
        }
        let paused = controls.is_paused();
        self.hub.publish(Event::Paused { paused });
        text(200, &state_json(controls))
    }

    fn stream(&self, request: Request) {
        if self.open_streams.load(Ordering::SeqCst) >= MAX_STREAMS as u64 {
            let _ = request.respond(text(503, "too many event streams"));
            return;
        }
        self.open_streams.fetch_add(1, Ordering::SeqCst);
        let context = self.clone();
        let spawned = std::thread::Builder::new()
            .name("medsim-live-events".into())
            .spawn(move || {
                let writer = request.into_writer();
                context.write_events(writer);
                context.open_streams.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(handle) => {
                let mut streams = self.streams.lock();
                streams.retain(|h| !h.is_finished());
                streams.push(handle);
            }
            // The request went with the closure; the browser retries.
            Err(_) => {
                self.open_streams.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn write_events(&self, mut out: Box<dyn Write + Send>) {
        let head = "HTTP/1.1 200 OK\r\n\
                    Content-Type: text/event-stream; charset=utf-8\r\n\
                    Cache-Control: no-store\r\n\
                    Connection: close\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        let subscription = self.hub.subscribe(BROWSER_QUEUE);
        let hello = match &self.controls {
            Some(c) => format!(r#"{{"type":"hello","controls":{}}}"#, state_json(c)),
            None => r#"{"type":"hello","controls":null}"#.to_owned(),
        };
        let mut sent = Ok(());
        for json in std::iter::once(hello.as_str()).chain(subscription.initial.iter().map(|j| &**j))
        {
            sent = sent.and_then(|()| chunk(&mut out, &format!("data: {json}\n\n"), false));
        }
        if sent.and_then(|()| out.flush()).is_err() {
            return;
        }
        let mut reported_dropped = 0;
        // Pause, pace and the number held can change without a POST (the
        // simulation may set them): each change is sent as it is seen.
        let mut reported_controls = self.controls.as_ref().map(state_json);
        let mut last_write = Instant::now();
        while !self.stopping() {
            let mut text = String::new();
            match subscription.events.recv_timeout(POLL) {
                Ok(json) => {
                    text = format!("data: {json}\n\n");
                    // Whatever else is queued goes in the same chunk.
                    for json in subscription.events.try_iter().take(256) {
                        text.push_str(&format!("data: {json}\n\n"));
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
            if let Some(controls) = &self.controls {
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
                if chunk(&mut out, &text, true).is_err() {
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

fn chunk(out: &mut dyn Write, text: &str, flush: bool) -> std::io::Result<()> {
    write!(out, "{:x}\r\n{text}\r\n", text.len())?;
    if flush {
        out.flush()?;
    }
    Ok(())
}

fn state_json(controls: &Controls) -> String {
    serde_json::json!({
        "paused": controls.is_paused(),
        "pace_ms": u64::try_from(controls.pace().as_millis()).unwrap_or(u64::MAX),
        "waiting": controls.waiting(),
    })
    .to_string()
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header text is valid")
}

fn html(page: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(page)
        .with_header(header("Content-Type", "text/html; charset=utf-8"))
        .with_header(header("Cache-Control", "no-store"))
}

fn text(status: u16, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let content_type = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
}
