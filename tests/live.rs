//! The live view, end to end: its HTTP server over raw TCP, then the page
//! and the report file in a real headless Chromium driven through the
//! DevTools protocol (a websocket, by tungstenite). Every wait is on a
//! bound address, a channel, or the DOM polled against a deadline.
//!
//! Without Chromium the browser tests print `skipped: chromium not found`;
//! with `CI=true` they fail instead, naming what is missing. Set
//! `MEDSIM_CHROMIUM` to use another binary, and `MEDSIM_UPDATE_SCREENSHOT=1`
//! to refresh `docs/live.png`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

use medsim::live::report::{InvariantView, OutcomeView, Snapshot};
use medsim::live::{Controls, Event, Hub, LiveServer, SlotView, Transport, serve};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn start(hub: &Hub, controls: Option<Controls>) -> LiveServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    serve(listener, hub.clone(), controls, || false).expect("start the live server")
}

fn slots(n: u64) -> Vec<SlotView> {
    let days = ["Tue", "Mon", "Thu", "Wed", "Sat", "Fri"];
    let times = ["01pm", "03pm", "02pm", "10am", "12pm", "04pm"];
    (1..=n)
        .map(|i| SlotView {
            index: i,
            day: days[(i as usize - 1) % 6].into(),
            time: times[(i as usize - 1) % 6].into(),
            doctor: if i % 2 == 1 { "doc1" } else { "doc2" }.into(),
            holder: None,
        })
        .collect()
}

// ---------------------------------------------------------------- HTTP ---

/// One request over a fresh connection, with the `Host` a browser would
/// send unless it names its own; the whole answer, as text.
fn http(server: &LiveServer, request: &str) -> String {
    let request = with_host(request, server.local_addr());
    let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// `request` with `Host: ADDR` after its first line, unless it has one.
fn with_host(request: &str, addr: std::net::SocketAddr) -> String {
    if request.to_ascii_lowercase().contains("\r\nhost:") {
        return request.to_owned();
    }
    let (first, rest) = request.split_once("\r\n").expect("a request line");
    format!("{first}\r\nHost: {addr}\r\n{rest}")
}

#[test]
fn the_server_answers_page_control_and_unknown_paths() {
    let hub = Hub::new();
    let server = start(&hub, None);
    let page = http(&server, "GET / HTTP/1.0\r\n\r\n");
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    assert!(page.contains("<svg id=\"diagram\""));
    assert!(
        !page.contains("src=\"http"),
        "the page loads nothing from elsewhere"
    );
    let missing = http(&server, "GET /nope HTTP/1.0\r\n\r\n");
    assert!(missing.contains(" 404 "), "{missing}");
    let no_controls = http(
        &server,
        "POST /control HTTP/1.0\r\nContent-Length: 5\r\n\r\npause",
    );
    assert!(no_controls.contains(" 404 "), "{no_controls}");
    drop(server);

    let controls = Controls::new(|| false);
    let server = start(&hub, Some(controls.clone()));
    let bad = http(
        &server,
        "POST /control HTTP/1.0\r\nContent-Length: 9\r\n\r\npace=-1xx",
    );
    assert!(bad.contains(" 400 "), "{bad}");
    let paced = http(
        &server,
        "POST /control HTTP/1.0\r\nContent-Length: 8\r\n\r\npace=250",
    );
    assert!(
        paced.contains(" 200 ") && paced.contains("\"pace_ms\":250"),
        "{paced}"
    );
    assert_eq!(controls.pace(), Duration::from_millis(250));
}

#[test]
fn the_event_stream_starts_with_the_state_and_ends_cleanly_on_stop() {
    let hub = Hub::new();
    hub.publish(Event::Slots { slots: slots(2) });
    hub.publish(Event::Booked {
        index: 2,
        holder: "patient1".into(),
    });
    assert!(hub.sync(WAIT));
    let server = start(&hub, None);
    let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream
        .write_all(with_host("GET /events HTTP/1.1\r\n\r\n", server.local_addr()).as_bytes())
        .expect("send");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut events = Vec::new();
    let mut line = String::new();
    while events.len() < 2 {
        line.clear();
        let n = reader.read_line(&mut line).expect("the stream goes on");
        assert!(n > 0, "the stream ended early");
        if let Some(json) = line.strip_prefix("data: ") {
            events.push(serde_json::from_str::<Value>(json.trim()).expect("JSON events"));
        } else if events.is_empty() {
            head.push_str(&line);
        }
    }
    assert!(head.contains("text/event-stream"), "{head}");
    assert_eq!(
        events[0],
        json!({"type": "hello", "controls": null, "read_only": false, "step_from": null})
    );
    assert_eq!(events[1]["type"], "slots");
    assert_eq!(events[1]["slots"][1]["holder"], "patient1");

    // A new event arrives on the open stream.
    hub.publish(Event::Lost {
        index: 2,
        who: "patient2".into(),
    });
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).expect("more") > 0);
        if line.contains("\"lost\"") {
            break;
        }
    }
    // Stopping the server ends the stream with its last chunk (the
    // connection itself is the browser's to close).
    drop(server);
    let mut rest = Vec::new();
    let mut buf = [0; 4096];
    while !rest.ends_with(b"0\r\n\r\n") {
        let n = reader.read(&mut buf).expect("the last chunk comes");
        assert!(n > 0, "closed before the last chunk: {rest:?}");
        rest.extend_from_slice(&buf[..n]);
    }
}

// ------------------------------------------------------- attacks (#16) ---

/// The status code of an HTTP answer.
fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

fn control_request(origin: Option<&str>, host: Option<&str>, token: Option<&str>) -> String {
    let mut request = String::from("POST /control HTTP/1.1\r\n");
    if let Some(host) = host {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    if let Some(token) = token {
        request.push_str(&format!("X-Medsim-Token: {token}\r\n"));
    }
    request.push_str("Content-Type: text/plain\r\nContent-Length: 8\r\n\r\npace=999");
    request
}

#[test]
fn issue_16_controls_refuse_a_foreign_origin_and_a_foreign_host() {
    let hub = Hub::new();
    let controls = Controls::new(|| false);
    let server = start(&hub, Some(controls.clone()));
    let addr = server.local_addr().to_string();
    // A page elsewhere (a plain form does this) and a rebound DNS name.
    let foreign = http(
        &server,
        &control_request(Some("http://attacker.example"), Some(&addr), None),
    );
    assert_eq!(status_of(&foreign), 403, "{foreign}");
    let null_origin = http(&server, &control_request(Some("null"), Some(&addr), None));
    assert_eq!(status_of(&null_origin), 403, "{null_origin}");
    let rebound = http(
        &server,
        &control_request(
            None,
            Some(&format!("rebound.example:{}", server.local_addr().port())),
            None,
        ),
    );
    assert_eq!(status_of(&rebound), 421, "{rebound}");
    let page = http(&server, "GET / HTTP/1.1\r\nHost: rebound.example\r\n\r\n");
    assert_eq!(
        status_of(&page),
        421,
        "the page is not served to a rebound name"
    );
    let cross_site = http(
        &server,
        &control_request(None, Some(&addr), None).replacen(
            "Content-Type",
            "Sec-Fetch-Site: cross-site\r\nContent-Type",
            1,
        ),
    );
    assert_eq!(status_of(&cross_site), 403, "{cross_site}");
    assert_eq!(controls.pace(), Duration::ZERO, "nothing was changed");
    // The page's own origin, and a tool that sends none (curl), may.
    let own = http(
        &server,
        &control_request(Some(&format!("http://{addr}")), Some(&addr), None),
    );
    assert_eq!(status_of(&own), 200, "{own}");
    assert_eq!(controls.pace(), Duration::from_millis(999));
    let curl = http(&server, &control_request(None, Some(&addr), None));
    assert_eq!(status_of(&curl), 200, "{curl}");
}

#[test]
fn issue_16_off_loopback_the_controls_need_the_terminals_token() {
    let hub = Hub::new();
    let controls = Controls::new(|| false);
    // Bound to every address: the room's machines reach it; the test
    // still talks over loopback.
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let server = serve(listener, hub.clone(), Some(controls.clone()), || false).expect("serve");
    assert!(server.needs_token());
    let teacher = server.teacher_url();
    let token = teacher
        .split_once("?token=")
        .map(|(_, t)| t.to_owned())
        .expect("the teacher's URL has the token");
    assert_eq!(token.len(), 32);
    assert!(!server.url().contains(&token), "the room's URL is plain");
    let port = server.local_addr().port();
    let host = format!("127.0.0.1:{port}");
    let room = http(&server, &control_request(None, Some(&host), None));
    assert_eq!(status_of(&room), 403, "{room}");
    assert!(room.contains("read only"), "{room}");
    let guessed = http(
        &server,
        &control_request(None, Some(&host), Some(&"0".repeat(32))),
    );
    assert_eq!(status_of(&guessed), 403, "{guessed}");
    assert_eq!(controls.pace(), Duration::ZERO);
    let teachers = http(&server, &control_request(None, Some(&host), Some(&token)));
    assert_eq!(status_of(&teachers), 200, "{teachers}");
    assert_eq!(controls.pace(), Duration::from_millis(999));
    // The room's stream says it is read only and carries no control state.
    let hello = |query: &str| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        write!(
            stream,
            "GET /events{query} HTTP/1.1\r\nHost: {host}\r\n\r\n"
        )
        .expect("send");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(reader.read_line(&mut line).expect("the stream") > 0);
            if let Some(json) = line.strip_prefix("data: ") {
                return serde_json::from_str::<Value>(json.trim()).expect("JSON");
            }
        }
    };
    let room = hello("");
    assert_eq!(room["read_only"], json!(true));
    assert_eq!(room["controls"], Value::Null);
    let teachers = hello(&format!("?token={token}"));
    assert_eq!(teachers["read_only"], json!(false));
    assert_eq!(teachers["controls"]["pace_ms"], json!(999));
}

#[test]
fn issue_16_every_answer_forbids_framing_and_foreign_scripts() {
    let hub = Hub::new();
    let server = start(&hub, Some(Controls::new(|| false)));
    for request in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET /nope HTTP/1.1\r\n\r\n",
        "POST /control HTTP/1.1\r\nContent-Length: 4\r\n\r\nnope",
        "GET / HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n",
    ] {
        let answer = http(&server, request);
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            head.contains("content-security-policy: default-src 'none';")
                && head.contains("frame-ancestors 'none'")
                && head.contains("x-frame-options: deny"),
            "{request:?} answered without the policy:\n{head}"
        );
    }
    // The page's one script runs by its nonce; nothing else would.
    let page = http(&server, "GET / HTTP/1.1\r\n\r\n");
    let nonce = page
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy");
    assert!(page.contains(&format!("<script nonce=\"{nonce}\">")));
}

#[test]
fn issue_16_a_slow_request_holds_nobody_and_is_cut_off() {
    let hub = Hub::new();
    let server = start(&hub, Some(Controls::new(|| false)));
    let addr = server.local_addr();
    // A body announced long and sent one byte: refused at once, unread.
    let mut long = TcpStream::connect(addr).expect("connect");
    long.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        long,
        "POST /control HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5000\r\n\r\np"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = long.read_to_string(&mut answer);
    assert_eq!(status_of(&answer), 413, "{answer}");
    // A head sent one byte and then nothing, and a short body that never
    // comes: neither holds the page nor the stream...
    let mut stalled_head = TcpStream::connect(addr).expect("connect");
    stalled_head.write_all(b"G").expect("send");
    let mut stalled_body = TcpStream::connect(addr).expect("connect");
    write!(
        stalled_body,
        "POST /control HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5\r\n\r\np"
    )
    .expect("send");
    let page = http(&server, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status_of(&page), 200);
    // ...and each is answered 408 and closed once its time is up.
    for mut stalled in [stalled_head, stalled_body] {
        stalled.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut answer = String::new();
        let _ = stalled.read_to_string(&mut answer);
        assert_eq!(status_of(&answer), 408, "{answer}");
    }
}

/// A connection that asks for the event stream and then never reads, its
/// receive buffer as small as the kernel allows.
fn never_reading_stream(addr: std::net::SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_recv_buffer_size(1).expect("a small buffer");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    write!(stream, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    stream
}

/// The status line of a fresh `GET /events`.
fn stream_status(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(stream, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut first = String::new();
    BufReader::new(stream)
        .read_line(&mut first)
        .expect("a status line");
    first
}

#[test]
fn issue_16_stream_clients_that_never_read_are_dropped_for_others() {
    let hub = Hub::new();
    let server = start(&hub, None);
    let addr = server.local_addr();
    let sluggards: Vec<TcpStream> = (0..32).map(|_| never_reading_stream(addr)).collect();
    hub.publish(Event::Slots { slots: slots(6) });
    // Every place taken (the 33rd is told so at once)...
    let deadline = Instant::now() + WAIT;
    while status_of(&stream_status(addr)) != 503 {
        assert!(
            Instant::now() < deadline,
            "the 33rd stream was never refused"
        );
    }
    // ...until the run says more than they take: then they are dropped,
    // and a browser that reads gets a stream again.
    let text = "x".repeat(8000);
    let started = Instant::now();
    for _ in 0..3000 {
        hub.message(0, "patient1", "center", &text, Transport::Tcp);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "publishing waited for the browsers"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let first = stream_status(addr);
        if status_of(&first) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the places of readers that never read were never given back: {first}"
        );
        hub.message(0, "patient1", "center", &text, Transport::Tcp);
    }
    drop(sluggards);
}

#[test]
fn issue_16_the_live_port_survives_running_out_of_descriptors() {
    // A center with few descriptors, and its live view flooded with idle
    // connections until accept fails with EMFILE.
    let mut center = support::Running::spawn_shell(
        "ulimit -n 48 && exec \"$MEDSIM\" center --listen 127.0.0.1:0 --live 127.0.0.1:0 --quiet 2>&1",
    );
    let addr = support::address_in(&center.line_with("has port number"));
    let url = live_url(&mut center);
    let live: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the live address");
    let idle: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(live).expect("the kernel queues it"))
        .collect();
    // The idle ones are cut off by the request time limit, and the port
    // serves again (tiny_http's accept thread ended for good here).
    let deadline = Instant::now() + WAIT + WAIT;
    loop {
        let mut stream = TcpStream::connect(live).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let _ = write!(stream, "GET / HTTP/1.1\r\nHost: {live}\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live port never served again: {answer:?}"
        );
    }
    drop(idle);
    // And the center went on.
    let answer = support::book(addr, "patient1", "password111", 1);
    assert!(answer.starts_with("doc1 "), "{answer}");
    center.send_signal("TERM");
    let (status, _, _) = center.finish();
    assert!(status.success());
}

// ------------------------------------------------------------ Chromium ---

fn find_chromium() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MEDSIM_CHROMIUM") {
        return Ok(path.into());
    }
    let names = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no MEDSIM_CHROMIUM, and none of {names:?} on PATH; install the Debian package chromium"
    ))
}

/// A headless Chromium and one page in it, spoken to over the DevTools
/// protocol. Killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: tungstenite::WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Browser {
    /// `None` (after printing why) when there is no Chromium here and
    /// this is not CI; panics on CI.
    fn launch() -> Option<Browser> {
        let binary = match find_chromium() {
            Ok(binary) => binary,
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("chromium not found ({why}); CI must have it (.ci/run installs it)")
            }
            Err(why) => {
                // Straight to stderr: the harness captures eprintln!, and
                // a skip must show in a plain `cargo test`.
                let _ = writeln!(std::io::stderr(), "skipped: chromium not found ({why})");
                return None;
            }
        };
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        // Chromium names its DevTools address on stderr; the rest of
        // stderr is kept for failure messages (and read, so it never
        // blocks on a full pipe).
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = crossbeam_channel::bounded(1);
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.try_send(url.trim().to_owned());
                }
                if let Ok(mut log) = keep.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let url = match rx.recv_timeout(WAIT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} printed no DevTools address; stderr:\n{}",
                    binary.display(),
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        let hostport = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("a ws:// address");
        let stream = TcpStream::connect(hostport).expect("connect to DevTools");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            session: String::new(),
            next_id: 0,
            stderr: log,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_owned();
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        Some(browser)
    }

    /// One DevTools command; its result. Events in between are skipped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws
            .send(tungstenite::Message::text(message.to_string()))
            .expect("send to DevTools");
        loop {
            let reply = self.ws.read().unwrap_or_else(|e| {
                panic!(
                    "reading DevTools for {method}: {e}; stderr:\n{}",
                    self.log()
                )
            });
            let tungstenite::Message::Text(text) = reply else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if reply["id"] == json!(id) {
                if let Some(error) = reply.get("error") {
                    panic!("{method} failed: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The value of a script expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is true, at most `WAIT`.
    fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + WAIT;
        let guarded = format!(
            "(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"
        );
        while self.eval(&guarded) != json!(true) {
            if Instant::now() > deadline {
                let body = self.eval("document.body ? document.body.innerText : ''");
                let body: String = body.as_str().unwrap_or("").chars().take(3000).collect();
                panic!("timed out waiting for {what} ({expression}); the page says:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// A real mouse click in the middle of the element.
    fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const r = document.querySelector({selector:?}).getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (at[0].as_f64().expect("x"), at[1].as_f64().expect("y"));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// The page's size, as a projector's or a laptop's.
    fn viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    /// Lays the page out as printed.
    fn print_media(&mut self) {
        self.call("Emulation.setEmulatedMedia", json!({"media": "print"}));
    }

    /// The whole page, however long, `width` pixels wide.
    fn screenshot_whole(&mut self, width: u32) -> Vec<u8> {
        let height = self
            .eval("document.documentElement.scrollHeight")
            .as_f64()
            .expect("a height");
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
        );
        base64_decode(shot["data"].as_str().expect("base64 PNG"))
    }

    fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": false}),
        );
        base64_decode(shot["data"].as_str().expect("base64 PNG"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn message(hub: &Hub, session: u64, from: &str, to: &str, text: &str, transport: Transport) {
    hub.message(session, from, to, text, transport);
}

/// Two patients' visits, the second losing slot 2 to the first.
fn scripted_run(hub: &Hub) -> Vec<(String, String, String, String)> {
    use Transport::{Tcp, Udp, UdpLost};
    let script = [
        (
            0,
            "patient1",
            "center",
            "authenticate patient1 password111",
            Tcp,
        ),
        (0, "center", "patient1", "success", Tcp),
        (
            1,
            "patient2",
            "center",
            "authenticate patient2 password222",
            Tcp,
        ),
        (1, "center", "patient2", "success", Tcp),
        (0, "patient1", "center", "list", Tcp),
        (
            0,
            "center",
            "patient1",
            "1 Tue 01pm, 2 Mon 03pm, 3 Thu 02pm",
            Tcp,
        ),
        (0, "patient1", "center", "book 2", Tcp),
        (0, "center", "patient1", "booked doc2 42720", Tcp),
        (1, "patient2", "center", "book 2", Tcp),
        (1, "center", "patient2", "taken", Tcp),
        (0, "patient1", "doc2", "insurance1", UdpLost),
        (0, "patient1", "doc2", "insurance1", Udp),
        (0, "doc2", "patient1", "60", Udp),
    ];
    for (session, from, to, text, transport) in script {
        message(hub, session, from, to, text, transport);
        if text == "booked doc2 42720" {
            hub.publish(Event::Booked {
                index: 2,
                holder: "patient1".into(),
            });
        }
        if text == "taken" {
            hub.publish(Event::Lost {
                index: 2,
                who: "patient2".into(),
            });
        }
    }
    hub.publish(Event::Outcome {
        patient: "patient1".into(),
        outcome: "booked".into(),
        latency_us: 2300,
    });
    hub.publish(Event::Outcome {
        patient: "patient2".into(),
        outcome: "taken".into(),
        latency_us: 1700,
    });
    script
        .iter()
        .map(|&(_, from, to, text, transport)| {
            let text = text
                .replace("password111", "***")
                .replace("password222", "***");
            let transport = match transport {
                Tcp => "tcp",
                Udp => "udp",
                UdpLost => "udp_lost",
            };
            (from.to_owned(), to.to_owned(), text, transport.to_owned())
        })
        .collect()
}

const MESSAGES_JS: &str = "[...document.querySelectorAll('#messages li')].map(li => \
     [li.dataset.from, li.dataset.to, li.querySelector('.text').textContent, li.dataset.transport])";

fn shown_messages(browser: &mut Browser) -> Vec<(String, String, String, String)> {
    serde_json::from_value(browser.eval(MESSAGES_JS)).expect("four strings per message")
}

#[test]
fn the_live_page_shows_bookings_losers_and_messages_in_order() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let hub = Hub::new();
    let controls = Controls::new(|| false);
    let server = start(&hub, Some(controls));
    hub.publish(Event::Slots { slots: slots(6) });
    browser.open(&server.url());
    browser.wait_for(
        "the slot table",
        "document.querySelectorAll('#slots tr[data-slot]').length === 6",
    );
    browser.wait_for(
        "the stream",
        "document.querySelector('#status').dataset.state === 'live'",
    );
    assert_eq!(
        browser.eval("document.querySelector('[data-slot=\"2\"]').dataset.state"),
        json!("free")
    );

    let expected = scripted_run(&hub);
    browser.wait_for(
        "slot 2 booked",
        "document.querySelector('[data-slot=\"2\"]').dataset.state === 'booked'",
    );
    assert_eq!(
        browser.eval("document.querySelector('[data-slot=\"2\"]').dataset.holder"),
        json!("patient1")
    );
    assert_eq!(
        browser.eval("document.querySelector('[data-slot=\"2\"] .doctor').textContent"),
        json!("doc2")
    );
    browser.wait_for(
        "the race loser",
        "document.querySelector('[data-slot=\"2\"] .losers').textContent === 'patient2'",
    );
    browser.wait_for(
        "every message",
        &format!(
            "document.querySelectorAll('#messages li').length === {}",
            expected.len()
        ),
    );
    assert_eq!(shown_messages(&mut browser), expected);
    // The diagram: one arrow per message, the lost datagram with a cross,
    // lifelines patients first, then the center, then the doctors.
    browser.wait_for(
        "every arrow",
        &format!(
            "document.querySelectorAll('#diagram g.arrow').length === {}",
            expected.len()
        ),
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#diagram g.udp_lost line.cross').length"),
        json!(2)
    );
    assert_eq!(
        browser.eval("[...document.querySelectorAll('#lanes g.party')].map(g => g.dataset.party)"),
        json!(["patient1", "patient2", "center", "doc1", "doc2"])
    );
    browser.wait_for(
        "the counters",
        "document.querySelector('#c-sessions').textContent === '2'",
    );
    assert_eq!(
        browser.eval("document.querySelector('#outcomes [data-outcome=\"booked\"]').dataset.count"),
        json!("1")
    );
    assert_eq!(
        browser.eval("document.querySelector('#dropped').textContent"),
        json!("0")
    );
    assert!(
        !browser
            .eval("document.body.innerHTML")
            .to_string()
            .contains("password111"),
        "a password reached the page"
    );

    // A browser that comes late sees the same table and messages.
    browser.open("about:blank");
    browser.open(&server.url());
    browser.wait_for(
        "slot 2 booked, late",
        "document.querySelector('[data-slot=\"2\"]')?.dataset.state === 'booked'",
    );
    browser.wait_for(
        "the messages, late",
        &format!(
            "document.querySelectorAll('#messages li').length === {}",
            expected.len()
        ),
    );
    assert_eq!(shown_messages(&mut browser), expected);
    browser.wait_for(
        "the chart",
        "document.querySelectorAll('#chart polyline').length >= 1",
    );

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live.png");
    std::fs::write(&out, &png).expect("save the screenshot");
}

#[test]
fn the_step_button_lets_exactly_one_message_through() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let hub = Hub::new();
    let controls = Controls::new(|| false);
    let server = start(&hub, Some(controls.clone()));
    browser.open(&server.url());
    browser.wait_for(
        "the controls",
        "!document.querySelector('#controls').hidden",
    );

    browser.click("#pause");
    browser.wait_for(
        "the paused state",
        "document.querySelector('#run-state').dataset.paused === 'true'",
    );
    assert!(controls.is_paused());

    let (tx, through) = crossbeam_channel::unbounded();
    let patients: Vec<_> = (0..3)
        .map(|i| {
            let (controls, tx) = (controls.clone(), tx.clone());
            std::thread::spawn(move || {
                controls.before_message();
                let _ = tx.send(i);
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while controls.waiting() < 3 {
        assert!(Instant::now() < deadline, "three patients never waited");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(through.try_recv().is_err());
    browser.wait_for(
        "the patients held, shown",
        "document.querySelector('#run-state').textContent === 'paused (3 waiting)'",
    );

    browser.click("#step");
    through.recv_timeout(WAIT).expect("one message through");
    // The step is spent and two patients are still held.
    assert_eq!(controls.pending_steps(), 0);
    assert_eq!(controls.waiting(), 2);
    assert!(through.try_recv().is_err());
    assert!(controls.is_paused());

    browser.eval(
        "(() => { const p = document.querySelector('#pace'); p.focus(); p.value = '250'; })()",
    );
    browser.click("#set-pace");
    let deadline = Instant::now() + WAIT;
    while controls.pace() != Duration::from_millis(250) {
        assert!(Instant::now() < deadline, "the pace never changed");
        std::thread::sleep(Duration::from_millis(1));
    }
    // A change made by the simulation, not the page, shows too.
    controls.set_pace(Duration::from_millis(40));
    browser.wait_for(
        "the new pace",
        "document.querySelector('#pace').value === '40'",
    );
    controls.set_pace(Duration::ZERO);

    browser.click("#resume");
    through.recv_timeout(WAIT).expect("released by resume");
    through.recv_timeout(WAIT).expect("released by resume");
    browser.wait_for(
        "the running state",
        "document.querySelector('#run-state').dataset.paused === 'false'",
    );
    for patient in patients {
        patient.join().expect("patient thread");
    }
}

#[test]
fn the_report_file_draws_the_run() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let trace = medsim::trace::Trace::new();
    trace.record(
        "patient1",
        "center",
        "authenticate patient1 password111",
        Transport::Tcp,
    );
    trace.record("center", "patient1", "success", Transport::Tcp);
    trace.record("patient1", "center", "book 1 </script>", Transport::Tcp);
    trace.record("patient1", "doc1", "insurance1", Transport::UdpLost);
    trace.record("patient1", "doc1", "insurance1", Transport::Udp);
    trace.record("doc1", "patient1", "30", Transport::Udp);
    let mut snapshot = Snapshot::new(
        "medsim simulate: 2 patients",
        "medsim simulate --patients 2 --seed 7",
    );
    let mut table = slots(3);
    table[0].holder = Some("patient1".into());
    snapshot.slots = table;
    snapshot.add_trace(
        &trace.events(),
        &["patient1".into()],
        &["doc1".into(), "doc2".into()],
    );
    snapshot.outcomes = vec![
        OutcomeView {
            patient: "patient1".into(),
            outcome: "booked".into(),
            latency_us: 1200,
            slot: Some(1),
            doctor: Some("doc1".into()),
            cost: Some(30),
            retries: 1,
        },
        OutcomeView {
            patient: "patient2".into(),
            outcome: "no_slot".into(),
            latency_us: 800,
            ..OutcomeView::default()
        },
    ];
    snapshot.set_latency_series(&[(100, 1200), (1100, 800), (2100, 900)], 1000, 1);
    snapshot.invariants = vec![
        InvariantView {
            name: "no slot reserved twice".into(),
            ok: true,
            detail: String::new(),
        },
        InvariantView {
            name: "every visit ended".into(),
            ok: false,
            detail: "patient3 hung".into(),
        },
    ];
    snapshot.summary = vec![("wall time".into(), "0.2 s".into())];
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("report.html");
    medsim::live::report::write_html(&path, &snapshot).expect("write the report");

    browser.open(&format!("file://{}", path.display()));
    browser.wait_for(
        "the slots",
        "document.querySelectorAll('#slots tr[data-slot]').length === 3",
    );
    assert_eq!(
        browser.eval("document.querySelector('#status').dataset.state"),
        json!("report")
    );
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('#slots tr[data-slot]')].map(r => r.dataset.state)"
        ),
        json!(["booked", "free", "free"])
    );
    browser.wait_for(
        "the diagram",
        "document.querySelectorAll('#diagram g.arrow').length === 6",
    );
    let shown = shown_messages(&mut browser);
    assert_eq!(shown[0].2, "authenticate patient1 ***");
    assert_eq!(
        shown[2].2, "book 1 </script>",
        "text that looks like markup stays text"
    );
    assert_eq!(shown[3].3, "udp_lost");
    assert_eq!(
        browser.eval("[...document.querySelectorAll('#invariants li')].map(li => [li.dataset.name, li.dataset.ok])"),
        json!([["no slot reserved twice", "true"], ["every visit ended", "false"]])
    );
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('#visits tr[data-patient]')].map(r => r.dataset.outcome)"
        ),
        json!(["booked", "no_slot"])
    );
    assert_eq!(
        browser.eval("[...document.querySelectorAll('#lanes g.party')].map(g => g.dataset.party)"),
        json!(["patient1", "center", "doc1", "doc2"])
    );
    assert_eq!(
        browser.eval("document.querySelector('#command').textContent"),
        json!("$ medsim simulate --patients 2 --seed 7")
    );
    assert_eq!(
        browser.eval("document.querySelector('#c-sessions').textContent"),
        json!("2")
    );
    assert!(
        browser
            .eval("document.querySelectorAll('#chart polyline').length")
            .as_u64()
            >= Some(2),
        "a latency chart"
    );
    assert_eq!(
        browser.eval("document.querySelector('#controls').hidden"),
        json!(true)
    );
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    std::fs::write(&out, &png).expect("save the screenshot");
}

#[test]
fn a_run_of_100000_patients_reaches_the_page_as_a_sample_and_counters() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    const PATIENTS: u64 = 100_000;
    let hub = Hub::new();
    let server = start(&hub, None);
    hub.publish(Event::Slots { slots: slots(6) });
    browser.open(&server.url());
    browser.wait_for(
        "the stream",
        "document.querySelector('#status').dataset.state === 'live'",
    );
    let texts = [
        "authenticate x pw",
        "success",
        "list",
        "1 Tue 01pm",
        "book 1",
        "taken",
    ];
    let publishers: Vec<_> = (0..4)
        .map(|first| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for session in (first..PATIENTS).step_by(4) {
                    let name = format!("patient{session}");
                    for text in texts {
                        hub.message(session, &name, "center", text, Transport::Tcp);
                    }
                    // Everyone races for slot 1; patient0 wins.
                    if session == 0 {
                        hub.publish(Event::Booked {
                            index: 1,
                            holder: name.clone(),
                        });
                    } else {
                        hub.publish(Event::Lost {
                            index: 1,
                            who: name.clone(),
                        });
                    }
                    hub.publish(Event::Outcome {
                        patient: name,
                        outcome: "taken".into(),
                        latency_us: 1000 + session % 500,
                    });
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    assert!(hub.sync(WAIT));
    // Every visit is on the page, or counted among the dropped events.
    browser.wait_for(
        "every visit counted",
        &format!(
            "Number(document.querySelector('#c-sessions').textContent) + \
             Number(document.querySelector('#dropped').textContent) >= {PATIENTS}"
        ),
    );
    browser.wait_for(
        "every message counted",
        &format!(
            "document.querySelector('#c-messages').textContent === '{}'",
            PATIENTS * 6
        ),
    );
    // Only the sampled sessions were sent, and the list stays bounded.
    let sessions = browser.eval(
        "[...new Set([...document.querySelectorAll('#messages li')].map(li => Number(li.dataset.session)))]",
    );
    let sessions: Vec<u64> = serde_json::from_value(sessions).expect("numbers");
    assert!(!sessions.is_empty());
    assert!(
        sessions.iter().all(|&s| s < 20 || s % 100 == 0),
        "unsampled sessions drawn: {sessions:?}"
    );
    let listed = browser.eval("document.querySelectorAll('#messages li').length");
    assert!(listed.as_u64() <= Some(1000), "{listed}");
    // The race: one holder, a few losers named, the rest counted.
    browser.wait_for(
        "the winner",
        "document.querySelector('[data-slot=\"1\"]').dataset.holder === 'patient0'",
    );
    // The count shown is the hub's, not the sample's (1 in 100 is sent).
    browser.wait_for(
        "eight losers named, the rest counted",
        "(() => { const c = document.querySelector('[data-slot=\"1\"] .losers'); \
         return c.textContent.endsWith(' in all)') && c.textContent.split(', ').length === 8 \
         && Number(c.dataset.lost) >= 1000; })()",
    );
    // Every loss and visit is counted, or among the dropped events (four
    // threads publishing flat out overflow the hub's buffer by design).
    browser.wait_for(
        "every loss counted",
        &format!(
            "Number(document.querySelector('#c-lost').textContent) + \
             Number(document.querySelector('#c-sessions').textContent) + \
             Number(document.querySelector('#dropped').textContent) >= {}",
            2 * PATIENTS - 1
        ),
    );
    let arrows = browser.eval("document.querySelectorAll('#diagram g.arrow').length");
    assert!(arrows.as_u64() <= Some(60), "{arrows}");
}

// ------------------------------------------------ the real parties, live ---

/// The URL a `medsim` process printed for its live view.
fn live_url(process: &mut support::Running) -> String {
    let line = process.line_with("live view at ");
    line.rsplit(' ').next().expect("a URL").to_owned()
}

/// The terminal report's table per phase, as cells: the lines after
/// `phases:` that start with a phase's name.
fn terminal_phases(report: &str) -> Vec<Vec<String>> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("phases:"))
        .skip(2)
        .take_while(|l| l.starts_with("  ") && !l.starts_with("  ok"))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

const PAGE_PHASES_JS: &str = "[...document.querySelectorAll('#phases tbody tr')].map(r => \
     [...r.cells].map(c => c.textContent))";

#[test]
fn issue_16_step_without_a_terminal_steps_from_the_page_and_the_end_shows_the_runs_numbers() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    // --step with stdin a pipe, not a terminal: the page steps, Enter in
    // the pipe does not, and its end does not let the run go.
    let (mut sim, mut typing) = support::Running::spawn_typed(&[
        "simulate",
        "--patients",
        "3",
        "--seed",
        "2",
        "--live",
        "127.0.0.1:0",
        "--step",
    ]);
    let url = live_url(&mut sim);
    sim.line_with("steps come from the page only");
    browser.open(&url);
    browser.wait_for(
        "the slot table",
        "document.querySelectorAll('[data-slot]').length === 6",
    );
    browser.wait_for(
        "the held run",
        "document.querySelector('#run-state').dataset.paused === 'true'",
    );
    assert_eq!(
        browser.eval("document.querySelector('#step-from').hidden"),
        json!(false),
        "the page says where steps come from"
    );
    let count = "document.querySelectorAll('#messages li').length";
    assert_eq!(browser.eval(count), json!(0), "nothing goes before a step");
    // One step lets one request go; its answer comes back, and the next
    // request is held again.
    browser.click("#step");
    browser.wait_for("the request and its answer", &format!("{count} === 2"));
    browser.wait_for(
        "the next request held",
        "document.querySelector('#run-state').textContent === 'paused (1 waiting)'",
    );
    let first = browser.eval("document.querySelector('#messages li').textContent");
    assert!(
        first
            .as_str()
            .unwrap_or("")
            .contains("authenticate patient1 ***"),
        "{first}"
    );
    // Enter in the pipe, then its end: neither lets anything go; the next
    // step from the page lets exactly one more exchange through.
    typing.write_all(b"\n\n\n").expect("type Enter");
    drop(typing);
    browser.click("#step");
    browser.wait_for("the second exchange", &format!("{count} === 4"));
    browser.wait_for(
        "held again",
        "document.querySelector('#run-state').textContent === 'paused (1 waiting)'",
    );
    assert_eq!(browser.eval(count), json!(4), "only the page's step went");
    browser.click("#resume");
    browser.wait_for(
        "the run over",
        "document.querySelector('#status').dataset.state === 'over'",
    );
    // The terminal's report, printed before the wait for Ctrl-C.
    let mut report = String::new();
    loop {
        let line = sim.line();
        if line.contains("the live view stays at") {
            break;
        }
        report.push_str(&line);
        report.push('\n');
    }
    assert!(report.contains("outcomes:    quoted 3"), "{report}");
    browser.wait_for(
        "the run's counters",
        "document.querySelector('#c-sessions').textContent === '3' && \
         document.querySelector('#outcomes [data-outcome=\"quoted\"]')?.dataset.count === '3'",
    );
    let phases: Vec<Vec<String>> =
        serde_json::from_value(browser.eval(PAGE_PHASES_JS)).expect("cells");
    assert_eq!(phases, terminal_phases(&report), "{report}");
    assert_eq!(phases.len(), 4);
    sim.send_signal("INT");
    let (status, _, _) = sim.finish();
    assert!(status.success());
}

#[test]
fn a_center_shows_outside_patients_as_they_book() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let (mut center, _typing) = support::Running::spawn_typed(&[
        "center",
        "--listen",
        "127.0.0.1:0",
        "--live",
        "127.0.0.1:0",
        "--quiet",
    ]);
    let addr = support::address_in(&center.line_with("has port number"));
    let url = live_url(&mut center);
    browser.open(&url);
    browser.wait_for(
        "the slot table",
        "document.querySelectorAll('[data-state=\"free\"]').length === 6",
    );
    // Any program: here a raw client, as a student's would be.
    let mut c = support::Raw::connect(addr);
    assert_eq!(c.ask("authenticate patient2 password222"), "success");
    c.ask("available");
    assert!(c.ask("selection 4").starts_with("doc1 "));
    browser.wait_for(
        "slot 4 booked by patient2",
        "document.querySelector('[data-slot=\"4\"]').dataset.holder === 'patient2'",
    );
    browser.wait_for(
        "the session's six messages",
        "document.querySelectorAll('#messages li').length === 6",
    );
    // The lane is the user's, named once it logged in (#16).
    let shown = shown_messages(&mut browser);
    assert_eq!(shown[0].0, "patient2", "{shown:?}");
    assert_eq!(shown[0].2, "authenticate patient2 ***", "{shown:?}");
    assert_eq!(shown[1].1, "patient2", "{shown:?}");
    assert!(shown[5].2.starts_with("doc1 "), "{shown:?}");
    browser.wait_for(
        "the visit ended, as the center saw it",
        "document.querySelector('#c-sessions').textContent === '1' && \
         document.querySelector('#outcomes [data-outcome=\"booked\"]')?.dataset.count === '1'",
    );
    // The same user loses slot 4 twice: counted twice, named once; and a
    // capitalised login line keeps its password off the page.
    for _ in 0..2 {
        let mut again = support::Raw::connect(addr);
        assert_eq!(again.ask("authenticate patient1 password111"), "success");
        again.ask("available");
        assert_eq!(again.ask("selection 4"), "notavailable");
    }
    let mut shouting = support::Raw::connect(addr);
    let _ = shouting.ask("Authenticate patient1 password111");
    browser.wait_for(
        "two losses, one name",
        "document.querySelector('[data-slot=\"4\"] .losers').textContent === 'patient1 (2 in all)' && \
         document.querySelector('[data-slot=\"4\"] .losers').dataset.lost === '2'",
    );
    browser.wait_for(
        "three visits ended",
        "document.querySelector('#c-sessions').textContent === '4'",
    );
    assert!(
        !browser
            .eval("document.body.innerHTML")
            .to_string()
            .contains("password111"),
        "a password reached the page"
    );
    center.send_signal("TERM");
    let (status, _, _) = center.finish();
    assert!(status.success());
}

#[test]
fn simulate_writes_the_run_as_one_html_file() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.html");
    let run = support::medsim(&[
        "simulate",
        "--patients",
        "4",
        "--choice",
        "same",
        "--seed",
        "3",
        "--report",
        file.to_str().unwrap(),
    ])
    .success();
    let stdout = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    assert!(stdout.contains("report:      "), "{stdout}");
    browser.open(&format!("file://{}", file.display()));
    browser.wait_for(
        "the one booking",
        "document.querySelectorAll('[data-state=\"booked\"]').length === 1",
    );
    let text = browser.eval("document.body.innerText");
    let text = text.as_str().unwrap_or("");
    assert!(text.contains("no slot reserved twice"), "{text}");
    assert!(
        text.contains("--report"),
        "the command that made it: {text}"
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(!html.contains("password111"), "passwords masked");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "everything embedded, no CDN"
    );
}

/// The report lines a `medsim` process printed before `until`.
fn lines_until(process: &mut support::Running, until: &str) -> String {
    let mut report = String::new();
    loop {
        let line = process.line();
        if line.contains(until) {
            return report;
        }
        report.push_str(&line);
        report.push('\n');
    }
}

/// The terminal's outcomes line as the page's chips: `[label, count]`.
fn terminal_outcomes(report: &str) -> Vec<(String, String)> {
    let line = report
        .lines()
        .find_map(|l| l.strip_prefix("outcomes:"))
        .unwrap_or_else(|| panic!("no outcomes line in {report}"));
    let mut outcomes: Vec<(String, String)> = line
        .split(',')
        .map(|part| {
            let (words, n) = part.trim().rsplit_once(' ').expect("WORDS N");
            (words.replace(' ', "_"), n.to_owned())
        })
        .collect();
    outcomes.sort();
    outcomes
}

const PAGE_OUTCOMES_JS: &str = "[...document.querySelectorAll('#outcomes li')].map(li => \
     [li.dataset.outcome, li.dataset.count]).sort()";

/// Lanes fit a 1024-pixel page, beyond a few patients gathered in one.
fn assert_lanes_fit(browser: &mut Browser) {
    let lanes: Vec<String> = serde_json::from_value(
        browser.eval("[...document.querySelectorAll('#lanes g.party')].map(g => g.dataset.party)"),
    )
    .expect("names");
    assert!(lanes.len() <= 8, "{lanes:?}");
    assert!(lanes.contains(&"others".to_owned()), "{lanes:?}");
    assert_eq!(lanes.iter().filter(|l| l.starts_with("patient")).count(), 4);
    let others =
        browser.eval("document.querySelector('#lanes [data-party=\"others\"]').textContent");
    assert!(
        others.as_str().unwrap_or("").contains("more patients"),
        "{others}"
    );
    assert_eq!(
        browser.eval(
            "(() => { const r = [...document.querySelectorAll('#lanes g.party')].map(g => g.querySelector('text').getBBox()); \
             return r.every((b, i) => i === 0 || r[i - 1].x + r[i - 1].width < b.x); })()"
        ),
        json!(true),
        "lane names overlap"
    );
    assert_eq!(
        browser.eval("document.documentElement.scrollWidth <= 1024"),
        json!(true),
        "the page is wider than a 1024-pixel projector"
    );
    assert_eq!(
        browser.eval(
            "(() => { const d = document.querySelector('#diagram'); const b = document.querySelector('#diagram-box'); \
             return d.getBoundingClientRect().width <= b.clientWidth; })()"
        ),
        json!(true),
        "the diagram's lanes do not fit its box"
    );
}

#[test]
fn issue_16_a_200_patient_run_reads_at_1024x768_and_a_late_page_gets_its_end() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    browser.viewport(1024, 768);
    let (mut sim, _typing) = support::Running::spawn_typed(&[
        "simulate",
        "--patients",
        "200",
        "--slots",
        "150",
        "--choice",
        "random",
        "--udp-loss",
        "0.2",
        "--seed",
        "4",
        "--live",
        "127.0.0.1:0",
    ]);
    let url = live_url(&mut sim);
    // The page is opened only after the run.
    let report = lines_until(&mut sim, "the live view stays at");
    browser.open(&url);
    browser.wait_for(
        "the run's end",
        "document.querySelector('#status').dataset.state === 'over' && \
         document.querySelector('#c-sessions').textContent === '200'",
    );
    let outcomes: Vec<(String, String)> =
        serde_json::from_value(browser.eval(PAGE_OUTCOMES_JS)).expect("pairs");
    assert_eq!(outcomes, terminal_outcomes(&report), "{report}");
    let rate = browser.eval("Number(document.querySelector('#c-rate').textContent)");
    let terminal_rate: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("throughput:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a throughput line");
    // The same rate, shown to 0.1 on the page and to 1 in the terminal:
    // rounding the page's figure again may land on the other side of a
    // half (396.47 shows as 396.5 and 396), so they agree within both
    // roundings, not after a second one.
    let page_rate = rate.as_f64().expect("a number");
    assert!(
        (page_rate - terminal_rate).abs() <= 0.55,
        "page {page_rate}, terminal {terminal_rate}: {report}"
    );
    let p50 = browser.eval("document.querySelector('#c-p50').textContent");
    assert_ne!(p50, json!("–"), "a late page has the latency");
    assert!(
        browser
            .eval("document.querySelectorAll('#chart polyline').length")
            .as_u64()
            >= Some(2),
        "a late page has the charts"
    );
    // The y axis labels are whole, inside the chart.
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('#chart text')].every(t => t.getBBox().x >= 0)"),
        json!(true)
    );
    let phases: Vec<Vec<String>> =
        serde_json::from_value(browser.eval(PAGE_PHASES_JS)).expect("cells");
    assert_eq!(phases, terminal_phases(&report), "{report}");
    // The same table to download, as CSV and JSON.
    let csv = browser.eval(
        "decodeURIComponent(document.querySelector('#phases-csv').href.split(',').slice(1).join(','))",
    );
    let csv = csv.as_str().expect("text").to_owned();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("phase,count,failures,p50 ms,p95 ms,p99 ms,per second")
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows, phases);
    let json_rows = browser.eval(
        "JSON.parse(decodeURIComponent(document.querySelector('#phases-json').href.split(',').slice(1).join(',')))",
    );
    assert_eq!(json_rows[0]["phase"], json!("login"));
    assert_eq!(json_rows[0]["count"].as_str().map(str::to_owned), None);
    assert_eq!(json_rows[0]["count"].to_string(), phases[0][1]);
    assert_lanes_fit(&mut browser);
    // Lane names stay in sight while the diagram scrolls.
    let sticky = browser.eval(
        "(() => { const b = document.querySelector('#diagram-box'); b.scrollTop = b.scrollHeight; \
         return Math.abs(document.querySelector('#lanes-box').getBoundingClientRect().top - b.getBoundingClientRect().top) < 2; })()",
    );
    assert_eq!(sticky, json!(true));
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-200.png"),
        &png,
    )
    .expect("save the screenshot");
    if std::env::var_os("MEDSIM_UPDATE_SCREENSHOT").is_some() {
        // The README's picture: this page, whole, 1024 pixels wide.
        browser.eval("document.querySelector('#diagram-box').scrollTop = 0");
        let whole = browser.screenshot_whole(1024);
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/live.png");
        std::fs::write(docs, whole).expect("update docs/live.png");
    }
    sim.send_signal("INT");
    let (status, _, _) = sim.finish();
    assert!(status.success());
}

#[test]
fn issue_16_the_report_prints_whole_with_the_terminals_columns_and_numbers() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    browser.viewport(1024, 768);
    let dir = tempfile::tempdir().expect("a directory");
    // 20 patients: their messages are drawn; datagrams lost on the way.
    let small = dir.path().join("small.html");
    let run = support::medsim(&[
        "simulate",
        "--patients",
        "20",
        "--slots",
        "12",
        "--udp-loss",
        "0.4",
        "--seed",
        "9",
        "--report",
        small.to_str().expect("a UTF-8 path"),
    ])
    .success();
    let report = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    browser.open(&format!("file://{}", small.display()));
    browser.wait_for(
        "every visit",
        "document.querySelectorAll('#visits tr[data-patient]').length === 20",
    );
    // The visits table is the terminal's, column for column.
    let header =
        browser.eval("[...document.querySelectorAll('#visits th')].map(th => th.textContent)");
    assert_eq!(
        header,
        json!([
            "patient", "slot", "doctor", "cost", "retries", "outcome", "latency"
        ])
    );
    let page_rows: Vec<Vec<String>> = serde_json::from_value(browser.eval(
        "[...document.querySelectorAll('#visits tr[data-patient]')].map(r => [...r.cells].slice(0, 5).map(c => c.textContent))",
    ))
    .expect("cells");
    let terminal_rows: Vec<Vec<String>> = report
        .lines()
        .filter(|l| l.starts_with("patient") && !l.starts_with("patient "))
        .map(|l| l.split_whitespace().take(5).map(str::to_owned).collect())
        .collect();
    assert_eq!(page_rows, terminal_rows, "{report}");
    assert!(
        page_rows.iter().any(|r| r[4] != "0"),
        "the seed was meant to show retries: {report}"
    );
    assert_lanes_fit(&mut browser);
    // A lost patient-to-doctor datagram's cross is on the doctor's lane,
    // not the center's between them.
    let crosses = browser.eval(
        "(() => { const x = (p) => Number(document.querySelector('#diagram-box line.lifeline[data-party=\"' + p + '\"]').getAttribute('x1')); \
         return [...document.querySelectorAll('#diagram-box g.udp_lost')].filter(g => g.dataset.to.startsWith('doc')) \
           .map(g => [Math.abs(Number(g.dataset.crossAt) - x(g.dataset.to)), Math.abs(Number(g.dataset.crossAt) - x('center'))]); })()",
    );
    let crosses: Vec<(f64, f64)> = serde_json::from_value(crosses).expect("pairs");
    assert!(!crosses.is_empty(), "the seed was meant to lose a request");
    for (to_doctor, to_center) in crosses {
        assert!(
            to_doctor < 20.0 && to_center > 50.0,
            "{to_doctor} {to_center}"
        );
    }
    // Printed, nothing is cut: no box scrolls.
    browser.print_media();
    let cut = browser.eval(
        "['#diagram-box', '#messages', '#slots-box'].filter(s => { const e = document.querySelector(s); \
         return e.scrollHeight > e.clientHeight + 1 || e.scrollWidth > e.clientWidth + 1 && s !== '#diagram-box'; })",
    );
    assert_eq!(cut, json!([]), "boxes cut in print");
    // The diagram prints in pieces that fit a page, each naming the lanes.
    let pieces = browser.eval(
        "[...document.querySelectorAll('#diagram-box svg.diagram')].map(d => \
         [d.querySelectorAll('g.arrow').length, d.querySelectorAll('.piece-lanes text').length, \
          getComputedStyle(d.querySelector('.piece-lanes')).display])",
    );
    let pieces: Vec<(u64, u64, String)> = serde_json::from_value(pieces).expect("pieces");
    assert!(pieces.len() > 1, "{pieces:?}");
    assert!(
        pieces
            .iter()
            .all(|(arrows, lanes, shown)| *arrows <= 32 && *lanes >= 4 && shown != "none"),
        "{pieces:?}"
    );
    let messages = browser.eval("document.querySelectorAll('#messages li').length");
    assert_eq!(
        Some(pieces.iter().map(|p| p.0).sum::<u64>()),
        messages.as_u64(),
        "every message drawn"
    );

    // 200 patients: the counters are the terminal's, and the empty
    // message list says why.
    let large = dir.path().join("large.html");
    let run = support::medsim(&[
        "simulate",
        "--patients",
        "200",
        "--seed",
        "3",
        "--report",
        large.to_str().expect("a UTF-8 path"),
    ])
    .success();
    let report = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    browser.open(&format!("file://{}", large.display()));
    browser.wait_for(
        "the counters",
        "document.querySelector('#c-sessions').textContent === '200'",
    );
    let outcomes: Vec<(String, String)> =
        serde_json::from_value(browser.eval(PAGE_OUTCOMES_JS)).expect("pairs");
    assert_eq!(outcomes, terminal_outcomes(&report), "{report}");
    let phases: Vec<Vec<String>> =
        serde_json::from_value(browser.eval(PAGE_PHASES_JS)).expect("cells");
    assert_eq!(phases, terminal_phases(&report), "{report}");
    let note = browser.eval("document.querySelector('#messages-note').textContent");
    assert!(
        note.as_str().unwrap_or("").contains("not recorded"),
        "{note}"
    );
    assert_eq!(
        browser.eval("document.querySelector('#c-messages').textContent"),
        json!("not recorded")
    );
}

#[test]
fn issue_16_an_unwritable_report_or_diagram_is_refused_before_the_run() {
    for flag in ["--report", "--diagram"] {
        let run = support::medsim(&[
            "simulate",
            "--patients",
            "2",
            flag,
            "/nonexistent-directory/run.out",
        ])
        .failure();
        let output = run.get_output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "{flag} /nonexistent-directory/run.out: cannot write there"
            )),
            "{stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "the run went ahead: {:?}",
            output.stdout
        );
    }
    // --step with stdin not a terminal and no page to step from.
    let run = support::medsim(&["simulate", "--patients", "2", "--step"]).failure();
    let stderr = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
    assert!(
        stderr.contains("add --live to step from the page"),
        "{stderr}"
    );
}

#[test]
fn issue_16_the_benchs_watched_case_runs_with_200_slow_readers() {
    let dir = tempfile::tempdir().expect("a directory");
    let out = dir.path().join("bench.json");
    let (code, stdout, stderr) = support::output(support::bin().args([
        "bench",
        "--cases",
        "watched",
        "--repeats",
        "1",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("watched runs: simulate --patients 1000"),
        "{stdout}"
    );
    let report: medsim::bench::Report =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the JSON")).expect("a report");
    let cases: Vec<&str> = report.watched.iter().map(|w| w.case.as_str()).collect();
    assert_eq!(cases, ["unwatched", "live", "live + 200 slow readers"]);
    // Every stream place went to a reader that never reads; the others
    // were told so at once, and the run still ended with its invariants.
    assert_eq!(report.watched[2].streams_taken, 32, "{stdout}");
    assert!(
        report
            .watched
            .iter()
            .all(|w| w.ratios.len() == 1 && w.wall_seconds > 0.0)
    );
}

#[test]
fn issue_16_the_rooms_page_is_read_only_and_the_teachers_has_the_controls() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let hub = Hub::new();
    let controls = Controls::new(|| false);
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let server = serve(listener, hub.clone(), Some(controls.clone()), || false).expect("serve");
    let port = server.local_addr().port();
    let token = server
        .teacher_url()
        .split_once("?token=")
        .map(|(_, t)| t.to_owned())
        .expect("a token");
    // The room's page, over loopback as a student's laptop would over the
    // network.
    browser.open(&format!("http://127.0.0.1:{port}/"));
    browser.wait_for(
        "the read-only note",
        "!document.querySelector('#read-only').hidden",
    );
    assert_eq!(
        browser.eval("document.querySelector('#controls').hidden"),
        json!(true)
    );
    // Even a hand-made request from the room's page is refused.
    let refused =
        browser.eval("fetch('/control', {method: 'POST', body: 'pause'}).then(r => r.status)");
    assert_eq!(refused, json!(403));
    assert!(!controls.is_paused());
    // The teacher's page: its buttons work, the token going with them.
    browser.open(&format!("http://127.0.0.1:{port}/?token={token}"));
    browser.wait_for(
        "the controls",
        "!document.querySelector('#controls').hidden && document.querySelector('#read-only').hidden",
    );
    browser.click("#pause");
    browser.wait_for(
        "the paused state",
        "document.querySelector('#run-state').dataset.paused === 'true'",
    );
    assert!(controls.is_paused());
}
