//! Fakes of the classic C programs of this exercise, written by us from
//! their measured wire behaviour (PROTOCOL.md, "Classic programs as they
//! are"), never from their code: a center with one defect or departure at
//! a time (one `recv()` is one message cut at its NUL; answers are the text
//! and a NUL padded to 100 bytes), doctors, the seed's patient with its
//! exact reads and list parser, and programs in python3 for `check` to
//! launch.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A slot of a fake center: index, day, time, doctor, port.
pub type FakeSlot = (u64, &'static str, &'static str, &'static str, u16);

use parking_lot::Mutex;

/// How the list is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListForm {
    /// `1 Tue 01pm 2 Mon 03pm`: a line session's, no trailing space.
    Single,
    /// `1 Tue 01pm 2 Mon 03pm `: the seed's, PROTOCOL.md's classic list.
    TrailingSpace,
    /// One slot per line.
    PerLine,
    /// `1 Tue 01pm  .2 Mon 03pm  .`
    SpaceDot,
}

/// A fake classic center's behaviour.
#[derive(Debug, Clone)]
pub struct Center {
    pub success: &'static str,
    pub not_available: &'static str,
    pub list: ListForm,
    /// Grant with the port alone (`42799`).
    pub port_alone: bool,
    /// Sent on connect, before reading anything (e.g. a port number).
    pub greeting: Option<&'static str>,
    /// What fills an answer's 100 bytes after its NUL: zeros, or garbage
    /// from an uninitialised buffer.
    pub padding: u8,
    /// Check a slot, pause, then reserve it, without a lock.
    pub racy: bool,
    /// One "authenticated" flag for all sessions.
    pub shared_flag: bool,
    /// `selection` works on a connection that never logged in.
    pub books_without_login: bool,
    pub closes_after_failure: bool,
    /// Bytes sent after each answer's NUL instead of padding: the rest of
    /// a reused fixed buffer (the seed: `success\0send\0\0\0\0\0Pha`).
    pub stale_tail: Option<&'static [u8]>,
    /// An empty message, or `authenticate` short of words, is checked
    /// against the last credentials any session sent (a global buffer).
    pub last_credentials: bool,
    /// Takes only a bare index (`1`) as the selection; closes on
    /// `selection 1` without a word.
    pub bare_index: bool,
    /// Serves one session at a time: the next connection waits in the
    /// backlog until this one closes.
    pub iterative: bool,
    /// Text after a newline inside the grant's C string.
    pub grant_tail: Option<&'static str>,
    /// A login is good only with a newline after the password (it is
    /// compared with it); the refusal is `failure`.
    pub login_needs_newline: bool,
    /// A login ended by a newline is refused (the newline is compared with
    /// the password, as the seed does): only a C string logs in.
    pub login_refuses_newline: bool,
    /// Before a login, `available` and `selection` as C strings are
    /// served, and anything ended by a newline gets silence (one real
    /// center reads them so).
    pub serves_c_strings_without_login: bool,
    /// Slots: index, day, time, doctor, port.
    pub slots: Vec<FakeSlot>,
}

impl Center {
    /// A center that keeps PROTOCOL.md, doctors at these ports.
    pub fn good(doc1: u16, doc2: u16) -> Center {
        Center {
            success: "success",
            not_available: "notavailable",
            list: ListForm::TrailingSpace,
            port_alone: false,
            greeting: None,
            padding: 0,
            racy: false,
            shared_flag: false,
            books_without_login: false,
            closes_after_failure: true,
            stale_tail: None,
            last_credentials: false,
            bare_index: false,
            iterative: false,
            grant_tail: None,
            login_needs_newline: false,
            login_refuses_newline: false,
            serves_c_strings_without_login: false,
            slots: vec![
                (1, "Tue", "01pm", "doc1", doc1),
                (2, "Mon", "03pm", "doc2", doc2),
                (3, "Thu", "02pm", "doc1", doc1),
                (4, "Wed", "10am", "doc1", doc1),
                (5, "Sat", "12pm", "doc2", doc2),
                (6, "Fri", "04pm", "doc2", doc2),
            ],
        }
    }

    /// Serves on a free loopback port, a thread per connection; returns
    /// its address.
    pub fn serve(self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let taken: BTreeMap<u64, bool> = self.slots.iter().map(|s| (s.0, false)).collect();
        let iterative = self.iterative;
        let state = Arc::new(State {
            center: self,
            taken: Mutex::new(taken),
            flag: AtomicBool::new(false),
            last: Mutex::new(None),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&state);
                if iterative {
                    session(stream, &state);
                } else {
                    std::thread::spawn(move || session(stream, &state));
                }
            }
        });
        addr
    }
}

struct State {
    center: Center,
    taken: Mutex<BTreeMap<u64, bool>>,
    flag: AtomicBool,
    /// The last credentials any session sent (`last_credentials`).
    last: Mutex<Option<(String, String)>>,
}

fn send(stream: &mut TcpStream, padding: u8, stale_tail: Option<&[u8]>, text: &str) -> bool {
    let text = &text.as_bytes()[..text.len().min(99)];
    let mut out = text.to_vec();
    out.push(0);
    match stale_tail {
        Some(tail) => out.extend_from_slice(tail),
        None => out.resize(100, padding),
    }
    stream.write_all(&out).is_ok()
}

fn good_login(user: &str, password: &str) -> bool {
    matches!(
        (user, password),
        ("patient1", "password111") | ("patient2", "password222")
    )
}

fn session(mut stream: TcpStream, state: &State) {
    let c = &state.center;
    let answer = |stream: &mut TcpStream, text: &str| send(stream, c.padding, c.stale_tail, text);
    if let Some(greeting) = c.greeting
        && !answer(&mut stream, greeting)
    {
        return;
    }
    let mut authed = false;
    let mut buf = [0u8; 4096];
    // `serves_c_strings_without_login`: this request passes without one.
    let mut authed_for_one;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        authed_for_one = false;
        let Ok(text) = std::str::from_utf8(&buf[..end]) else {
            answer(&mut stream, "error message is not valid UTF-8");
            return;
        };
        let mut words: Vec<&str> = text.split_whitespace().collect();
        let newline_ended = text.ends_with('\n');
        if c.serves_c_strings_without_login && !authed && words.first() != Some(&"authenticate") {
            if newline_ended {
                continue;
            }
            authed_for_one = true;
        }
        let last = state.last.lock().clone();
        if c.last_credentials
            && !authed
            && words.len() < 3
            && words.first().is_none_or(|w| *w == "authenticate")
        {
            // The defect: the words missing are taken from the last login.
            if let Some((user, password)) = &last {
                let given: Vec<&str> = words.iter().skip(1).copied().collect();
                words = vec![
                    "authenticate",
                    given.first().copied().unwrap_or(user),
                    password,
                ];
            }
        }
        if let ["authenticate", user, password] = words[..] {
            *state.last.lock() = Some((user.to_owned(), password.to_owned()));
        }
        if c.bare_index && words.first() == Some(&"selection") {
            return;
        }
        if c.bare_index && words.len() == 1 && words[0].parse::<u64>().is_ok() {
            words.insert(0, "selection");
        }
        let reply = match words[..] {
            ["authenticate", user, password] if !authed => {
                let good = good_login(user, password)
                    && (!c.login_needs_newline || newline_ended)
                    && !(c.login_refuses_newline && newline_ended);
                if good || c.shared_flag && state.flag.load(Ordering::SeqCst) {
                    authed = true;
                    state.flag.store(true, Ordering::SeqCst);
                    c.success.to_owned()
                } else {
                    answer(&mut stream, "failure");
                    if c.closes_after_failure {
                        return;
                    }
                    continue;
                }
            }
            ["available"] if authed || authed_for_one => {
                let taken = state.taken.lock();
                let free: Vec<String> = c
                    .slots
                    .iter()
                    .filter(|s| !taken[&s.0])
                    .map(|s| format!("{} {} {}", s.0, s.1, s.2))
                    .collect();
                if free.is_empty() {
                    answer(&mut stream, c.not_available);
                    return;
                }
                match c.list {
                    ListForm::Single => free.join(" "),
                    ListForm::TrailingSpace => free.join(" ") + " ",
                    ListForm::PerLine => free.join("\n"),
                    ListForm::SpaceDot => free.iter().map(|s| format!("{s}  .")).collect(),
                }
            }
            ["selection", index] if authed || authed_for_one || c.books_without_login => {
                let Some(slot) = index
                    .parse::<u64>()
                    .ok()
                    .and_then(|i| c.slots.iter().find(|s| s.0 == i))
                else {
                    answer(&mut stream, &format!("error no slot {index}"));
                    return;
                };
                let granted = if c.racy {
                    let free = !state.taken.lock()[&slot.0];
                    if free {
                        // The defect: the check and the set are apart.
                        std::thread::sleep(Duration::from_millis(30));
                        state.taken.lock().insert(slot.0, true);
                    }
                    free
                } else {
                    let mut taken = state.taken.lock();
                    let free = !taken[&slot.0];
                    taken.insert(slot.0, true);
                    free
                };
                let reply = match (granted, c.port_alone) {
                    (false, _) => c.not_available.to_owned(),
                    (true, true) => slot.4.to_string(),
                    (true, false) => format!("{} {}{}", slot.3, slot.4, c.grant_tail.unwrap_or("")),
                };
                answer(&mut stream, &reply);
                return;
            }
            [] => "error empty message".to_owned(),
            [first, ..] => format!("error unexpected '{first}'"),
        };
        if !answer(&mut stream, &reply) {
            return;
        }
    }
}

/// A fake classic doctor with these fees: answers a known plan with its
/// cost and a NUL; on an unknown plan it exits when `dies_on_unknown`,
/// else answers `error unknown plan`.
pub fn doctor(fees: &[(&'static str, u64)], dies_on_unknown: bool) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let fees: Vec<(&'static str, u64)> = fees.to_vec();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let end = buf[..n]
                .iter()
                .position(|&b| b == 0 || b == b'\n')
                .unwrap_or(n);
            let plan = String::from_utf8_lossy(&buf[..end]).into_owned();
            match fees.iter().find(|(p, _)| *p == plan) {
                Some((_, cost)) => {
                    let _ = socket.send_to(format!("{cost}\0").as_bytes(), from);
                }
                // The thread ends and the socket closes: the doctor is gone.
                None if dies_on_unknown => return,
                None => {
                    let _ = socket.send_to(format!("error unknown plan {plan}\0").as_bytes(), from);
                }
            }
        }
    });
    addr
}

/// A center that accepts and never answers.
pub fn silent_center() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    addr
}

/// A python3 classic center, run as a program of its own: it serves the
/// good protocol on the port given as its first argument, except that an
/// empty message kills it with SIGSEGV (as the seed's empty read does) and
/// it lists slots to a connection that never logged in.
pub const CRASHING_CENTER_PY: &str = r#"
import os, signal, socket, sys, threading
port = int(sys.argv[1])
slots = {1: "1 Tue 01pm", 2: "2 Mon 03pm", 3: "3 Thu 02pm", 4: "4 Wed 10am", 5: "5 Sat 12pm", 6: "6 Fri 04pm"}
ports = {1: "doc1 41720", 2: "doc2 42720", 3: "doc1 41720", 4: "doc1 41720", 5: "doc2 42720", 6: "doc2 42720"}
taken = set()
lock = threading.Lock()
threading.excepthook = lambda args: None
def send(c, text):
    c.sendall((text.encode() + b"\0").ljust(100, b"\0"))
def serve(c):
    authed = False
    while True:
        data = c.recv(4096)
        if not data:
            c.close(); return
        text = data.split(b"\0")[0].decode("latin-1").strip()
        if text == "":
            print("empty message: crashing", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        w = text.split()
        if w[0] == "authenticate" and len(w) == 3 and not authed:
            if (w[1], w[2]) in (("patient1", "password111"), ("patient2", "password222")):
                authed = True; send(c, "success")
            else:
                send(c, "failure"); c.close(); return
        elif w == ["available"]:
            with lock:
                free = [slots[i] for i in sorted(slots) if i not in taken]
            if not free:
                send(c, "notavailable"); c.close(); return
            send(c, " ".join(free))
        elif w[0] == "selection" and len(w) == 2 and authed:
            try:
                i = int(w[1])
            except ValueError:
                send(c, "error bad index"); c.close(); return
            if i not in slots:
                send(c, "error no such slot"); c.close(); return
            with lock:
                free = i not in taken
                taken.add(i)
            send(c, ports[i] if free else "notavailable"); c.close(); return
        else:
            send(c, "error unexpected"); c.close(); return
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(64)
print("listening on", port, flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A python3 patient: logs in, lists, reads indexes from stdin until a
/// listed one, selects it, and asks the doctor at the port named plus
/// `PORT_OFFSET` (0 for the right one). `NEVER_EXITS=1` makes it hang
/// at the end, as a patient with no timeout does.
pub const PATIENT_PY: &str = r#"
import os, socket, sys, time
host, port = os.environ["MEDSIM_CENTER"].rsplit(":", 1)
offset = int(os.environ.get("PORT_OFFSET", "0"))
def finish(code):
    if os.environ.get("NEVER_EXITS") == "1":
        while True:
            time.sleep(1)
    sys.exit(code)
c = socket.create_connection((host, int(port)))
def ask(text):
    c.sendall(text.encode() + b"\0")
    return c.recv(4096).split(b"\0")[0].decode().strip()
if ask("authenticate patient1 password111") != "success":
    print("authentication failed"); finish(3)
listed = ask("available")
if listed == "notavailable":
    print("nothing available"); finish(4)
words = listed.split()
indexes = [words[k] for k in range(0, len(words), 3)]
for line in sys.stdin:
    choice = line.strip()
    if choice in indexes:
        break
    print("invalid choice", choice, flush=True)
grant = ask("selection " + choice)
doctor, dport = grant.split()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1)
u.sendto(b"insurance1\0", (host, int(dport) + offset))
try:
    print("cost", u.recv(100).split(b"\0")[0].decode(), flush=True)
except OSError:
    print("no answer from the doctor", flush=True)
finish(0)
"#;

/// A UDP doctor that answers every datagram with `answer` (empty for the
/// classic doctors that send an empty datagram); returns its address.
pub fn doctor_answering(answer: &'static [u8]) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(answer, from);
        }
    });
    addr
}

/// What the seed patient needs of a center, and what it did.
#[derive(Debug, Clone)]
pub struct SeedPatient {
    pub user: &'static str,
    pub password: &'static str,
    pub plan: &'static str,
    /// The index typed at its prompt.
    pub choice: u64,
    /// What it adds to the port the center names (the seed: 720).
    pub port_offset: u16,
}

/// A request as the seed patient sends it: the text and its NUL in a
/// 100-byte buffer, the rest `fill` (garbage for its first message, whose
/// buffer it never cleared; zeros for the others).
fn seed_buffer(text: &str, fill: u8) -> [u8; 100] {
    let mut buf = [fill; 100];
    buf[..text.len()].copy_from_slice(text.as_bytes());
    buf[text.len()] = 0;
    buf
}

/// The C string at the start of `buf`; `None` when no NUL is within it
/// (the seed patient would read past its buffer).
fn c_string(buf: &[u8]) -> Option<String> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// One visit of the seed patient, as its code does it: one `recv()` per
/// answer, compared up to the NUL, the list walked space by space (a word
/// without a space after it is where the real one crashes), the doctor at
/// the port named plus its offset. Returns the cost it would print, or
/// what would go wrong for the real one.
pub fn seed_patient_visit(center: SocketAddr, patient: &SeedPatient) -> Result<String, String> {
    let mut stream = TcpStream::connect(center).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = seed_buffer(
        &format!("authenticate {} {}", patient.user, patient.password),
        0x5A,
    );
    stream.write_all(&auth).map_err(|e| e.to_string())?;
    // Its answer lands on the request, with one recv() of 99 bytes.
    let mut buf = auth;
    let n = stream
        .read(&mut buf[..99])
        .map_err(|e| format!("auth: {e}"))?;
    let answer = c_string(&buf).unwrap_or_default();
    if n == 0 || answer != "success" {
        return Err(format!("authentication result: failure ('{answer}')"));
    }

    stream
        .write_all(&seed_buffer("available", 0))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 100];
    let n = stream.read(&mut buf).map_err(|e| format!("list: {e}"))?;
    let list = c_string(&buf[..n.min(100)])
        .or_else(|| (n < 100).then(|| String::from_utf8_lossy(&buf[..n]).into_owned()))
        .ok_or("the list has no NUL within 100 bytes: it reads past its buffer")?;
    if list == "notavailable" {
        return Err("not available".into());
    }
    let indexes = seed_list_indexes(&list)?;
    if !indexes.contains(&patient.choice) {
        return Err(format!("{} is not listed in '{list}'", patient.choice));
    }

    stream
        .write_all(&seed_buffer(&format!("selection {}", patient.choice), 0))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 100];
    let n = stream
        .read(&mut buf)
        .map_err(|e| format!("selection: {e}"))?;
    let grant = c_string(&buf[..n.min(100)]).unwrap_or_default();
    if grant == "notavailable" {
        return Err("the requested appointment is not available".into());
    }
    let (_doctor, port) = grant.split_once(' ').ok_or(format!(
        "a port alone ('{grant}'): it dereferences NULL there (SIGSEGV)"
    ))?;
    let port: u16 = port.trim().parse().unwrap_or(0) + patient.port_offset;
    drop(stream);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(&seed_buffer(patient.plan, 0), ("127.0.0.1", port))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 100];
    let n = udp
        .recv(&mut buf)
        .map_err(|_| format!("no cost from port {port}: it would wait for ever"))?;
    c_string(&buf[..n.min(100)])
        .or_else(|| (n < 100).then(|| String::from_utf8_lossy(&buf[..n]).into_owned()))
        .ok_or_else(|| "a cost with no NUL within 100 bytes".to_owned())
}

/// The seed patient's list parser: every word, the last included, followed
/// by exactly one space; every third word an index of one digit; at most
/// six of them (its array holds six).
pub fn seed_list_indexes(list: &str) -> Result<Vec<u64>, String> {
    if !list.ends_with(' ') {
        return Err(format!(
            "no space after the last word of '{list}': the seed patient crashes (SIGSEGV)"
        ));
    }
    let words: Vec<&str> = list[..list.len() - 1].split(' ').collect();
    if words.iter().any(|w| w.is_empty() || w.contains('\n')) {
        return Err(format!("'{list}' is not single words and single spaces"));
    }
    if !words.len().is_multiple_of(3) {
        return Err(format!("'{list}' is not whole triples"));
    }
    let indexes: Vec<u64> = words
        .iter()
        .step_by(3)
        .map(|w| match w.as_bytes() {
            [d] if d.is_ascii_digit() => Ok(u64::from(d - b'0')),
            _ => Err(format!("index '{w}' is not one digit")),
        })
        .collect::<Result<_, _>>()?;
    if indexes.len() > 6 {
        return Err(format!("{} slots overflow its array of six", indexes.len()));
    }
    Ok(indexes)
}

/// A doctor that compares the plan exactly as a C string (only a NUL ends
/// it: `insurance1\n` is an unknown plan) and dies on an unknown plan.
pub fn exact_doctor(fees: &[(&'static str, u64)]) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let fees: Vec<(&'static str, u64)> = fees.to_vec();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
            let plan = String::from_utf8_lossy(&buf[..end]).into_owned();
            match fees.iter().find(|(p, _)| *p == plan) {
                Some((_, cost)) => {
                    let _ = socket.send_to(format!("{cost}\0").as_bytes(), from);
                }
                None => return,
            }
        }
    });
    addr
}

/// A center that answers `OK` to everything and books nothing.
pub fn ok_center() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(b"OK\0").is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A python3 center like the seed as it was measured, run as a program of
/// its own on the port given: it does not set SO_REUSEADDR, sends every
/// answer in a fixed 20-byte buffer that keeps its old bytes after the
/// NUL, and dies with SIGSEGV when a client connects and closes without a
/// word. Otherwise it keeps the protocol.
pub const SEED_LIKE_CENTER_PY: &str = r#"
import os, signal, socket, sys, threading
port = int(sys.argv[1])
slots = {1: "1 Tue 01pm", 2: "2 Mon 03pm", 3: "3 Thu 02pm", 4: "4 Wed 10am", 5: "5 Sat 12pm", 6: "6 Fri 04pm"}
ports = {1: "doc1 41720", 2: "doc2 42720", 3: "doc1 41720", 4: "doc1 41720", 5: "doc2 42720", 6: "doc2 42720"}
taken = set()
lock = threading.Lock()
threading.excepthook = lambda args: None
def send(c, text):
    b = text.encode() + b"\0"
    if len(b) < 20:
        b = b + b"send\0\0\0\0\0Pha"[: 20 - len(b)]
    c.sendall(b)
def serve(c):
    authed = False
    said = False
    while True:
        data = c.recv(100)
        if not data:
            if not said:
                print("closed without a word: crashing", flush=True)
                os.kill(os.getpid(), signal.SIGSEGV)
            c.close(); return
        said = True
        text = data.split(b"\0")[0].decode("latin-1").strip()
        w = text.split()
        if not w:
            send(c, "error empty"); c.close(); return
        if w[0] == "authenticate" and len(w) == 3 and not authed:
            if (w[1], w[2]) in (("patient1", "password111"), ("patient2", "password222")):
                authed = True; send(c, "success")
            else:
                send(c, "failure"); c.close(); return
        elif w == ["available"] and authed:
            with lock:
                free = [slots[i] for i in sorted(slots) if i not in taken]
            if not free:
                send(c, "notavailable"); c.close(); return
            send(c, " ".join(free) + " ")
        elif w[0] == "selection" and len(w) == 2 and authed:
            try:
                i = int(w[1])
            except ValueError:
                send(c, "error bad index"); c.close(); return
            if i not in slots:
                send(c, "error no such slot"); c.close(); return
            with lock:
                free = i not in taken
                taken.add(i)
            send(c, ports[i] if free else "notavailable"); c.close(); return
        else:
            send(c, "error unexpected"); c.close(); return
s = socket.socket()
s.bind(("127.0.0.1", port))
s.listen(64)
print("listening on", port, flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A classic center program (`python3 - PORT`) as two of the real ones
/// are: it serves one session at a time, never closes a connection
/// itself, answers a wrong password with silence, and dies with SIGSEGV
/// whenever a client closes its connection, said or not.
pub const CLOSE_DYING_CENTER_PY: &str = r#"
import os, signal, socket, sys
port = int(sys.argv[1])
slots = {1: "1 Tue 01pm", 2: "2 Mon 03pm", 3: "3 Thu 02pm", 4: "4 Wed 10am", 5: "5 Sat 12pm", 6: "6 Fri 04pm"}
ports = {1: "doc1 41720", 2: "doc2 42720", 3: "doc1 41720", 4: "doc1 41720", 5: "doc2 42720", 6: "doc2 42720"}
taken = set()
def send(c, text):
    c.sendall(text.encode() + b"\0")
def serve(c):
    authed = False
    while True:
        try:
            data = c.recv(100)
        except OSError:
            data = b""
        if not data:
            print("a client closed: crashing", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        w = data.split(b"\0")[0].decode("latin-1").split()
        if w and w[0] == "authenticate" and len(w) == 3:
            if (w[1], w[2]) in (("patient1", "password111"), ("patient2", "password222")):
                authed = True; send(c, "success")
        elif w == ["available"] and authed:
            free = [slots[i] for i in sorted(slots) if i not in taken]
            send(c, " ".join(free) if free else "notavailable")
        elif len(w) == 2 and w[0] == "selection" and authed and w[1].isdigit() and int(w[1]) in slots:
            i = int(w[1])
            send(c, "notavailable" if i in taken else ports[i])
            taken.add(i)
        else:
            send(c, "error unexpected")
s = socket.socket()
s.bind(("127.0.0.1", port))
s.listen(64)
print("listening on", port, flush=True)
while True:
    c, _ = s.accept()
    serve(c)
"#;

/// A doctor program (`python3 - PORT COST`) that quotes every known plan
/// COST and dies with SIGSEGV on a plan it does not know, as a real one
/// does.
pub const DYING_DOCTOR_PY: &str = r#"
import os, signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
print("doctor on", sys.argv[1], flush=True)
while True:
    data, peer = s.recvfrom(100)
    if data.strip(b"\0\n") not in (b"insurance1", b"insurance2", b"insurance3"):
        print("unknown plan: crashing", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    s.sendto(sys.argv[2].encode(), peer)
"#;

/// A classic center program (`python3 - PORT`) whose login is good only
/// with a newline after the password (so check's sessions go in lines),
/// and which dies with SIGSEGV, before answering, on `available` from a
/// connection that never logged in: a center check did not start is then
/// gone for the rest of the case.
pub const LINE_LOGIN_CENTER_DYING_OF_AVAILABLE_PY: &str = r#"
import os, signal, socket, sys, threading
port = int(sys.argv[1])
def send(c, text):
    c.sendall(text.encode() + b"\0")
def serve(c):
    authed = False
    while True:
        try:
            data = c.recv(100)
        except OSError:
            data = b""
        if not data:
            return
        text = data.split(b"\0")[0].decode("latin-1")
        w = text.split()
        if w and w[0] == "authenticate" and len(w) == 3:
            if (w[1], w[2]) == ("patient1", "password111") and text.endswith("\n"):
                authed = True; send(c, "success")
            else:
                send(c, "failure")
        elif w == ["available"] and authed:
            send(c, "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm 4 Wed 10am 5 Sat 12pm 6 Fri 04pm")
        elif w == ["available"]:
            print("available without a login: crashing", flush=True)
            # Nothing listens from here on (the kernel would close the
            # listener only as the process ends, perhaps after this
            # connection): a connection made after this one's end is refused.
            s.shutdown(socket.SHUT_RDWR)
            os.kill(os.getpid(), signal.SIGSEGV)
        else:
            send(c, "error unexpected")
s = socket.socket()
s.bind(("127.0.0.1", port))
s.listen(64)
print("listening on", port, flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
