//! Shared test helpers: a whole medsim system in-process on port 0, raw
//! clients that speak bytes, and a runner for the real binary.
//!
//! Nothing here sleeps to synchronise: servers are bound before they are
//! handed over, and binaries are waited for by their address line.

#![allow(dead_code)]

pub mod fakes;
pub mod postgres;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use medsim::console::{Captured, Console};
use medsim::data::{Fixtures, Slot, Source, Users};
use medsim::system::{self, CenterSummary, Limits};

/// How long any test read waits before calling the server hung.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// medsim's one in-process system (a center and every doctor of the
/// built-in data on ephemeral ports), with its phase messages captured.
pub struct System {
    pub center: SocketAddr,
    pub doctors: Vec<(String, SocketAddr)>,
    pub captured: Captured,
    inner: system::System,
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
        System::start_custom(|options| {
            options.users = users;
            options.limits = limits;
            if let Some(slots) = slots {
                options.slots = system::Slots::Given(slots);
            }
        })
    }

    /// The built-in data's system, as `adjust` changes its options.
    pub fn start_custom(adjust: impl FnOnce(&mut system::Options)) -> System {
        let fixtures = Fixtures::load(&Source::built_in()).unwrap();
        let (console, captured) = Console::captured();
        let mut options = system::Options::from_fixtures(&fixtures);
        options.console = console;
        adjust(&mut options);
        let inner = system::System::start(options).expect("the system starts on loopback");
        System {
            center: inner.center(),
            doctors: inner.doctors().to_vec(),
            captured,
            inner,
        }
    }

    pub fn doctor(&self, name: &str) -> SocketAddr {
        self.inner.doctor(name).expect("a doctor of the data")
    }

    /// The center's table: every reserved slot and its holder.
    pub fn holders(&self) -> Vec<(u64, String)> {
        self.inner.holders().expect("the store answers")
    }

    pub fn summary(&self) -> CenterSummary {
        self.inner.summary()
    }

    /// Waits (at most [`READ_TIMEOUT`]) until the center has no session
    /// open; a session that never ends fails the test.
    pub fn wait_for_sessions_to_end(&self) {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.inner.open_sessions() > 0 {
            assert!(Instant::now() < deadline, "sessions never ended");
            // A short nap, not a spin: the center needs the cores.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The lowest free slot, as the center lists it.
    pub fn first_free(&self) -> u64 {
        let mut c = Raw::connect(self.center);
        assert_eq!(c.ask("authenticate patient1 password111"), "success");
        let list = c.ask("available");
        list.split(' ')
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no free slot listed: {list:?}"))
    }

    /// Stops every server and waits for them; returns the captured output.
    pub fn stop(self) -> Captured {
        let captured = self.captured.clone();
        self.inner.stop().expect("every server stops cleanly");
        captured
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

    /// True when the server has closed the connection (after any answer
    /// still unread); false when it is still open after [`READ_TIMEOUT`].
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A reset is a close too.
                Err(_) => return true,
            }
        }
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

/// A running `medsim` subcommand: killed and waited for on drop. Its
/// stdout is read on a thread of its own, so waiting for a line is bounded.
pub struct Running {
    pub child: Child,
    lines: crossbeam_channel::Receiver<String>,
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

    /// As [`Running::spawn`], stderr joined to stdout (so its lines are
    /// read in order too), and stdin a pipe handed back for typing.
    pub fn spawn_typed(args: &[&str]) -> (Running, std::process::ChildStdin) {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("exec \"$MEDSIM\" \"$@\" 2>&1")
            .arg("medsim")
            .args(args)
            .env("MEDSIM", env!("CARGO_BIN_EXE_medsim"))
            .stdin(Stdio::piped());
        let mut running = Running::start_with(cmd, format!("medsim {}", args.join(" ")));
        let stdin = running.child.stdin.take().unwrap();
        (running, stdin)
    }

    /// The next stdout line that contains `text` (others are skipped).
    pub fn line_with(&mut self, text: &str) -> String {
        loop {
            let line = self.line();
            if line.contains(text) {
                return line;
            }
        }
    }

    fn start(mut cmd: Command, description: String) -> Running {
        cmd.stdin(Stdio::null());
        Running::start_with(cmd, description)
    }

    /// Starts `cmd` as it is set up for stdin, piping its stdout and stderr.
    fn start_with(mut cmd: Command, description: String) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            lines,
            stderr: child.stderr.take(),
            child,
            description,
        }
    }

    /// The next stdout line; a process that ends first, or prints nothing
    /// for [`READ_TIMEOUT`], fails the test with its stderr.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(READ_TIMEOUT) {
            Ok(line) => line.trim_end().to_owned(),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let stderr = self.stderr_text();
                panic!(
                    "{} printed no line in {READ_TIMEOUT:?}; stderr: {stderr}",
                    self.description
                );
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                let stderr = self.stderr_text();
                panic!("{} ended early; stderr: {stderr}", self.description);
            }
        }
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
        let mut stderr = String::new();
        if let Some(mut e) = self.stderr.take() {
            e.read_to_string(&mut stderr).unwrap();
        }
        let status = self.child.wait().unwrap();
        // The reader thread ends with the process's stdout.
        let rest: Vec<String> = self.lines.iter().collect();
        let mut rest = rest.join("\n");
        if !rest.is_empty() {
            rest.push('\n');
        }
        (status, rest, stderr)
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

/// The exit code, stdout and stderr of a finished command (run through
/// assert_cmd, so a run that cannot start names the command).
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = assert_cmd::Command::from_std(std::mem::replace(cmd, Command::new("true")))
        .write_stdin(Vec::new())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `medsim ARGS`, run to its end through assert_cmd: its `assert()` prints
/// the command, status, stdout and stderr when an expectation fails.
pub fn medsim(args: &[&str]) -> assert_cmd::assert::Assert {
    assert_cmd::Command::new(env!("CARGO_BIN_EXE_medsim"))
        .args(args)
        .write_stdin(Vec::new())
        .timeout(Duration::from_secs(120))
        .assert()
}

/// Data files for a crowd: users `uK`/`pwK` for K below `users`, and
/// `slots` slots, doc1 (port 41720) and doc2 (42720) in turn.
pub fn crowd_fixtures(dir: &std::path::Path, users: usize, slots: u64) {
    let users: String = (0..users).map(|k| format!("u{k} pw{k}\n")).collect();
    let slots: String = (1..=slots)
        .map(|i| {
            let (doctor, port) = if i % 2 == 1 {
                ("doc1", 41720)
            } else {
                ("doc2", 42720)
            };
            format!("{i} Mon 10am {doctor} {port}\n")
        })
        .collect();
    std::fs::write(dir.join("users.txt"), users).unwrap();
    std::fs::write(dir.join("availabilities.txt"), slots).unwrap();
    std::fs::write(dir.join("doc1.txt"), "insurance1 30\n").unwrap();
    std::fs::write(dir.join("doc2.txt"), "insurance1 40\n").unwrap();
}

/// A crowd user's session up to the list: logged in as `uK` at `center`,
/// with the free indexes listed. `Err` when the center is gone or
/// refuses.
pub fn listed_session(
    center: SocketAddr,
    k: usize,
) -> Result<(medsim::client::Conversation, Vec<u64>), String> {
    use medsim::client::Conversation;
    let mut c = Conversation::connect(center, Default::default(), READ_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let login = c
        .ask(&format!("authenticate u{k} pw{k}"))
        .map_err(|e| e.to_string())?;
    if login != "success" {
        return Err(format!("login answered {login:?}"));
    }
    let list = c.ask("available").map_err(|e| e.to_string())?;
    let indexes = list
        .split(' ')
        .step_by(3)
        .filter_map(|w| w.parse().ok())
        .collect();
    Ok((c, indexes))
}

/// One booking attempt as crowd user `k`, a listed slot at random:
/// `Ok(Some(slot))` when the center answered `DOCTOR PORT`, `Ok(None)` when
/// nothing was free or the slot was taken, `Err` once the center is gone.
pub fn try_booking(
    center: SocketAddr,
    k: usize,
    rng: &mut medsim::rng::SplitMix64,
) -> Result<Option<u64>, String> {
    let (mut c, indexes) = listed_session(center, k)?;
    if indexes.is_empty() {
        return Ok(None);
    }
    let pick = indexes[rng.below(indexes.len() as u64) as usize];
    let answer = c
        .ask(&format!("selection {pick}"))
        .map_err(|e| e.to_string())?;
    Ok(answer.starts_with("doc").then_some(pick))
}

/// `medsim center` on `store` (a `--store` URL) with the data in
/// `fixtures`, on a free port; returns it and its address.
pub fn center_process(fixtures: &std::path::Path, store: &str) -> (Running, SocketAddr) {
    center_process_with(fixtures, store, &[])
}

/// As [`center_process`], with more flags (e.g. `--store-timeout 1s`).
pub fn center_process_with(
    fixtures: &std::path::Path,
    store: &str,
    more: &[&str],
) -> (Running, SocketAddr) {
    let mut args = vec![
        "center",
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--fixtures",
        fixtures.to_str().unwrap(),
        "--store",
        store,
        "--list-cap",
        "1000",
    ];
    args.extend_from_slice(more);
    let mut center = Running::spawn(&args);
    let addr = address_in(&center.line());
    (center, addr)
}

/// `medsim doctor` with doc1 and doc2 on free ports; returns it and their
/// ports.
pub fn doctor_processes() -> (Running, u16, u16) {
    let mut doctors = Running::spawn(&[
        "doctor",
        "--listen",
        "doc1=127.0.0.1:0",
        "--listen",
        "doc2=127.0.0.1:0",
    ]);
    let doc1 = address_in(&doctors.line()).port();
    let doc2 = address_in(&doctors.line()).port();
    (doctors, doc1, doc2)
}

/// The classic data files (the built-in ones: users, six slots, fee
/// tables, patient1 and patient2 with their plans), the slots naming doc1
/// at port `doc1` and doc2 at `doc2`.
pub fn classic_fixtures(dir: &std::path::Path, doc1: u16, doc2: u16) {
    let files = [
        (
            "users.txt",
            "patient1 password111\npatient2 password222\n".to_owned(),
        ),
        (
            "availabilities.txt",
            format!(
                "1 Tue 01pm doc1 {doc1}\n2 Mon 03pm doc2 {doc2}\n3 Thu 02pm doc1 {doc1}\n4 Wed 10am doc1 {doc1}\n5 Sat 12pm doc2 {doc2}\n6 Fri 04pm doc2 {doc2}\n"
            ),
        ),
        (
            "doc1.txt",
            "insurance1 30\ninsurance2 20\ninsurance3 50\n".to_owned(),
        ),
        (
            "doc2.txt",
            "insurance1 40\ninsurance2 60\ninsurance3 10\n".to_owned(),
        ),
        ("patient1.txt", "patient1 password111\n".to_owned()),
        ("patient2.txt", "patient2 password222\n".to_owned()),
        ("patient1insurance.txt", "insurance1\n".to_owned()),
        ("patient2insurance.txt", "insurance2\n".to_owned()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// A patient of the built-in data (`patient1`, `patient2`).
pub fn fixture_patient(name: &str) -> medsim::data::Patient {
    medsim::data::Patient::load(&Source::built_in(), name).unwrap()
}

/// A patient's settings for `center`, waiting `quote_wait` for each of
/// `attempts` quotes (and as long for the center's answers, at least
/// 500 ms).
pub fn patient_settings(
    center: SocketAddr,
    quote_wait: Duration,
    attempts: u32,
) -> medsim::patient::Settings {
    medsim::patient::Settings {
        answer_timeout: quote_wait.max(Duration::from_millis(500)),
        quote: medsim::client::Retries {
            wait: quote_wait,
            attempts,
        },
        ..medsim::patient::Settings::new(center.to_string())
    }
}

/// The fields of one line of check's text report (verdict, id, name,
/// evidence: columns apart by two spaces or more); `None` for other lines.
pub fn check_fields(line: &str) -> Option<Vec<String>> {
    const VERDICTS: [&str; 5] = ["PASS", "FAIL", "WARN", "SKIP", "NOT RUN"];
    let verdict = VERDICTS.iter().find(|v| line.starts_with(*v))?;
    let rest = &line[verdict.len()..];
    let mut fields = vec![(*verdict).to_owned()];
    fields.extend(
        rest.split("  ")
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned),
    );
    Some(fields)
}

/// The line of check's text report for case `name` with `verdict`.
pub fn check_line<'a>(out: &'a str, verdict: &str, name: &str) -> Option<&'a str> {
    out.lines().find(|l| {
        check_fields(l).is_some_and(|f| f[0] == verdict && f.get(2).is_some_and(|n| n == name))
    })
}

/// Whether check's text report has a line for case `name` with `verdict`.
pub fn has_check_line(out: &str, verdict: &str, name: &str) -> bool {
    check_line(out, verdict, name).is_some()
}
