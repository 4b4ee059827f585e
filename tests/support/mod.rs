//! Shared test helpers: a whole medsim system in-process on port 0, raw
//! clients that speak bytes, and a runner for the real binary.
//!
//! Nothing here sleeps to synchronise: servers are bound before they are
//! handed over, and binaries are waited for by their address line.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use medsim::center::{self, Center, Limits};
use medsim::console::{Captured, Console};
use medsim::data::{Fixtures, Slot, Source, Users};
use medsim::doctor::{self, Doctor};
use medsim::shutdown::Shutdown;
use medsim::slots::{DEFAULT_LIST_CAP, SlotBook};

/// How long any test read waits before calling the server hung.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A center and every doctor of the built-in data, on ephemeral ports, with
/// the slots pointing at the doctors' real ports.
pub struct System {
    pub center: SocketAddr,
    pub doctors: Vec<(String, SocketAddr)>,
    pub book: SlotBook,
    pub center_handle: Arc<Center>,
    pub captured: Captured,
    pub shutdown: Shutdown,
    threads: Vec<JoinHandle<()>>,
}

impl System {
    pub fn start() -> System {
        System::start_with(Limits::default(), None)
    }

    /// A system with these limits and, when given, these slots (their
    /// doctors' ports are rewritten to the bound ones).
    pub fn start_with(limits: Limits, slots: Option<Vec<Slot>>) -> System {
        let fixtures = Fixtures::load(&Source::built_in()).unwrap();
        System::start_full(limits, slots, fixtures.users.clone())
    }

    pub fn start_full(limits: Limits, slots: Option<Vec<Slot>>, users: Users) -> System {
        let fixtures = Fixtures::load(&Source::built_in()).unwrap();
        let shutdown = Shutdown::new();
        let (console, captured) = Console::captured();
        let mut threads = Vec::new();
        let mut doctors = Vec::new();
        for d in &fixtures.doctors {
            let socket = doctor::bind(&d.name, "127.0.0.1:0").unwrap();
            let addr = socket.local_addr().unwrap();
            doctors.push((d.name.clone(), addr));
            let server = Doctor::new(&d.name, d.fees.clone(), console.clone());
            let shutdown = shutdown.clone();
            threads.push(std::thread::spawn(move || {
                server.serve(&socket, &shutdown).unwrap();
            }));
        }
        let port_of = |name: &str| doctors.iter().find(|(n, _)| n == name).unwrap().1.port();
        let slots: Vec<Slot> = slots
            .unwrap_or(fixtures.slots.clone())
            .into_iter()
            .map(|s| Slot {
                port: port_of(&s.doctor),
                ..s
            })
            .collect();
        let book = SlotBook::new(&slots, DEFAULT_LIST_CAP);
        let listener = center::bind("127.0.0.1:0").unwrap();
        let center_addr = listener.local_addr().unwrap();
        let center = Arc::new(Center::new(users, book.clone(), limits, console));
        {
            let center = Arc::clone(&center);
            let shutdown = shutdown.clone();
            threads.push(std::thread::spawn(move || {
                center.serve(listener, &shutdown).unwrap();
            }));
        }
        System {
            center: center_addr,
            doctors,
            book,
            center_handle: center,
            captured,
            shutdown,
            threads,
        }
    }

    pub fn doctor(&self, name: &str) -> SocketAddr {
        self.doctors.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Stops every server and waits for them; returns the captured output.
    pub fn stop(mut self) -> Captured {
        self.shutdown.trigger();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        self.captured.clone()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `n` slots, doctors doc1 and doc2 in turn.
pub fn many_slots(n: u64) -> Vec<Slot> {
    (1..=n)
        .map(|index| Slot {
            index,
            day: "Mon".into(),
            time: "10am".into(),
            doctor: if index % 2 == 1 { "doc1" } else { "doc2" }.into(),
            port: 1,
        })
        .collect()
}

/// A client that writes raw bytes and reads raw answers, with timeouts.
pub struct Raw {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Raw {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `text\n` and returns the answer line.
    pub fn ask(&mut self, text: &str) -> String {
        self.send(format!("{text}\n").as_bytes());
        self.line().expect("an answer line")
    }

    /// The next `\n`-terminated answer, or `None` at end of stream.
    pub fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
            }
            let mut buf = [0u8; 4096];
            let n = self
                .stream
                .read(&mut buf)
                .expect("the server answers in time");
            if n == 0 {
                assert!(
                    self.pending.is_empty(),
                    "unterminated answer {:?}",
                    self.pending
                );
                return None;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// One segment as a classic peer reads it (one recv of 99 bytes).
    pub fn classic_segment(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 99];
        let n = self
            .stream
            .read(&mut buf)
            .expect("the server answers in time");
        buf[..n].to_vec()
    }

    /// True when the server has closed the connection (after any answer).
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.stream.read(&mut buf), Ok(0)) || self.stream.read(&mut buf).is_err()
    }
}

/// Sends one datagram to `to` and returns the answer, or `None` if none
/// comes within `wait`.
pub fn udp_ask(to: SocketAddr, datagram: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(to).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send(datagram).unwrap();
    let mut buf = vec![0u8; 65536];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// A full line-dialect session; returns the selection answer.
pub fn book(addr: SocketAddr, user: &str, password: &str, index: u64) -> String {
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask(&format!("authenticate {user} {password}")), "success");
    let list = c.ask("available");
    if list == "notavailable" {
        return list;
    }
    c.ask(&format!("selection {index}"))
}

/// The built binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medsim"))
}

/// A running `medsim` subcommand: killed and waited for on drop.
pub struct Running {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
    stderr: Option<ChildStderr>,
    description: String,
}

impl Running {
    pub fn spawn(args: &[&str]) -> Running {
        let mut cmd = bin();
        cmd.args(args);
        Running::start(cmd, format!("medsim {}", args.join(" ")))
    }

    /// Runs `script` with `sh -c`, the binary's path in `$MEDSIM` (for
    /// scripts that set limits with `ulimit` before `exec`).
    pub fn spawn_shell(script: &str) -> Running {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .env("MEDSIM", env!("CARGO_BIN_EXE_medsim"));
        Running::start(cmd, script.to_owned())
    }

    fn start(mut cmd: Command, description: String) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running {
            stdout: BufReader::new(child.stdout.take().unwrap()),
            stderr: child.stderr.take(),
            child,
            description,
        }
    }

    /// The next stdout line (blocking until the process prints it or exits).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        if n == 0 {
            let stderr = self.stderr_text();
            panic!("{} ended early; stderr: {stderr}", self.description);
        }
        line.trim_end().to_owned()
    }

    pub fn stderr_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = self.child.kill();
            let _ = e.read_to_string(&mut text);
        }
        text
    }

    /// Sends `signal` (e.g. `TERM`, `INT`) to the process.
    pub fn send_signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to end; returns its status, the rest of
    /// stdout and all of stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = self.stderr.take() {
            e.read_to_string(&mut stderr).unwrap();
        }
        (self.child.wait().unwrap(), rest, stderr)
    }

    /// Sends `signal` and waits; see [`Running::finish`].
    pub fn signal(self, signal: &str) -> (std::process::ExitStatus, String, String) {
        self.send_signal(signal);
        self.finish()
    }

    /// SIGKILL, as a crash: no chance to flush anything.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM; see [`Running::signal`].
    pub fn terminate(self) -> (std::process::ExitStatus, String, String) {
        self.signal("TERM")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a `... port number P and IP address A.` or `... UDP port
/// P and IP address A.` line.
pub fn address_in(line: &str) -> SocketAddr {
    let words: Vec<&str> = line.trim_end_matches('.').split(' ').collect();
    let port_at = words
        .iter()
        .position(|w| *w == "port")
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let port: u16 = words[port_at + 1..]
        .iter()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no port number in {line:?}"));
    let ip = words.last().unwrap();
    format!("{ip}:{port}").parse().unwrap()
}

/// Output of a finished command, with everything shown on failure.
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
