//! Servers nothing can stall (issue 18, points 8 to 10; issue 16, point
//! 4): output nobody reads, floods of bad input, a receive error that
//! persists, silent connections holding seats, and control characters in
//! a log. Each test failed before its fix.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::{READ_TIMEOUT, Raw, System, udp_ask};
use medsim::console::Console;
use medsim::data::FeeTable;
use medsim::doctor::Doctor;
use medsim::shutdown::Shutdown;
use medsim::system::Limits;

/// A child process killed and waited for on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `medsim ARGS` with stdout a pipe that is read up to its first
/// line (the bound address) and never again, and stderr as `stderr` says.
/// Returns the process, the address, and the unread pipes, kept open.
fn spawn_unread(args: &[&str], stderr: Stdio) -> (Reaped, SocketAddr, impl Sized) {
    let mut child = support::bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = support::address_in(line.trim_end());
    let stderr = child.stderr.take();
    (Reaped(child), addr, (stdout, stderr))
}

/// Waits (at most [`READ_TIMEOUT`]) for `child` to end after SIGTERM.
fn terminates(child: &mut Reaped) -> bool {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        if child.0.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// 18.8: phase lines went to stdout under a lock before each answer, so a
/// pipe nobody read (a paused `| less`) stopped every session after about
/// 300 of these.
#[test]
fn a_center_whose_stdout_nobody_reads_still_serves_sessions() {
    let (mut center, addr, unread) =
        spawn_unread(&["center", "--listen", "127.0.0.1:0"], Stdio::null());
    // Two phase lines of about 100 bytes a session: 400 KB, six times
    // what a pipe holds.
    for n in 0..2000 {
        let mut c = Raw::connect(addr);
        assert_eq!(
            c.ask("authenticate patient1 wrong"),
            "failure",
            "session {n}"
        );
    }
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask("authenticate patient1 password111"), "success");
    assert!(c.ask("available").starts_with("1 Tue 01pm"));
    // Nor does its end wait for a reader that never comes.
    assert!(terminates(&mut center), "the center did not stop");
    drop(unread);
}

/// 18.8: every unknown plan wrote a line to stderr, waited for: with a
/// stderr nobody read, the doctor stopped answering after 1,250 of them.
#[test]
fn a_doctor_whose_stderr_nobody_reads_still_answers_after_many_unknown_plans() {
    let (mut doctor, addr, unread) = spawn_unread(
        &[
            "doctor",
            "--only",
            "doc1",
            "--listen",
            "doc1=127.0.0.1:0",
            "--quiet",
        ],
        Stdio::piped(),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut buf = [0u8; 256];
    for n in 0..4000 {
        socket.send(format!("nosuch{n}\n").as_bytes()).unwrap();
        let len = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to unknown plan {n}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&buf[..len]),
            format!("error unknown plan nosuch{n}\n")
        );
    }
    socket.send(b"insurance1\n").unwrap();
    let len = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"30\n");
    assert!(terminates(&mut doctor), "the doctor did not stop");
    drop(unread);
}

/// 18.8: a flood of unknown plans wrote one line each (192 MB in 12 s);
/// now a burst of fifty, then at most ten lines a second, reach the log,
/// and each answer still goes.
#[test]
fn a_flood_of_bad_plans_writes_few_lines_and_every_answer() {
    let system = System::start();
    let started = Instant::now();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(system.doctor("doc1")).unwrap();
    socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut buf = [0u8; 256];
    for n in 0..500 {
        socket.send(format!("nosuch{n}\n").as_bytes()).unwrap();
        let len = socket.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"error unknown plan"));
        // Garbage too: bytes that are no text (enough of them that the
        // error is no amplification).
        socket.send(&[0xff; 20]).unwrap();
        let len = socket.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"error "));
    }
    let seconds = started.elapsed().as_secs();
    let captured = system.stop();
    let diagnostics = captured.diagnostics();
    let lines = diagnostics.lines().filter(|l| l.contains("doc1")).count() as u64;
    // Fifty at once, then ten a second, in each second the flood touched.
    let most = 50 + 10 * (seconds + 1);
    assert!(
        (1..=most).contains(&lines),
        "{lines} lines in {seconds} s:\n{diagnostics}"
    );
    let phases = captured.phases();
    assert!(phases.lines().count() as u64 <= most, "{phases}");
}

/// 18.9: the receive loop went straight back to `recv_from` after any
/// error, so an error that persists spun a core. A non-blocking socket
/// fails every receive with `WouldBlock`: the doctor now pauses 1, 2, 4,
/// 8 and 16 ms between the first six failures (before: microseconds), and
/// still answers what comes.
#[test]
fn a_receive_error_that_persists_is_retried_with_growing_pauses() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let addr = socket.local_addr().unwrap();
    let doctor = Doctor::new(
        "doc1",
        FeeTable::from_pairs([("insurance1", 30)]),
        Console::silent(),
    );
    let shutdown = Shutdown::new();
    std::thread::scope(|scope| {
        let started = Instant::now();
        let serving = scope.spawn(|| doctor.serve(&socket, &shutdown));
        while doctor.receive_failures() < 6 {
            assert!(started.elapsed() < READ_TIMEOUT, "no failure seen");
            std::thread::sleep(Duration::from_millis(1));
        }
        let elapsed = started.elapsed();
        let answer = udp_ask(addr, b"insurance1\n", READ_TIMEOUT);
        // Stopped before anything is asserted, so a failure does not hang.
        shutdown.trigger();
        serving.join().unwrap().unwrap();
        assert!(elapsed >= Duration::from_millis(31), "{elapsed:?}");
        assert_eq!(answer.as_deref(), Some(&b"30\n"[..]));
    });
}

/// Connects to `center` from `from` (any address of 127/8 is this host).
fn connect_from(from: &str, center: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&center.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// 18.10: 1,024 connections that never sent a word took every seat for
/// the idle limit, and every real patient was told `error busy`. One
/// address now holds at most half the seats.
#[test]
fn a_thousand_silent_connections_from_one_address_do_not_lock_out_a_patient() {
    // Client and server share this process: 1,024 + 512 descriptors.
    rlimit::increase_nofile_limit(8192).unwrap();
    let system = System::start();
    let silent: Vec<TcpStream> = (0..1024)
        .map(|_| connect_from("127.0.0.1", system.center))
        .collect();
    // Behind every one of them in the accept queue, from another address.
    let mut patient = connect_from("127.0.0.2", system.center);
    patient
        .write_all(b"authenticate patient1 password111\n")
        .unwrap();
    let mut answers = BufReader::new(patient.try_clone().unwrap());
    let mut answer = String::new();
    answers.read_line(&mut answer).unwrap();
    assert_eq!(answer, "success\n");
    patient.write_all(b"available\n").unwrap();
    answer.clear();
    answers.read_line(&mut answer).unwrap();
    assert!(answer.starts_with("1 Tue 01pm"), "{answer:?}");
    drop((patient, answers));
    drop(silent);
    system.wait_for_sessions_to_end();
}

/// 18.10: a connection is let go soon if it says nothing at all (whoever
/// connects has a login ready), and only after the long idle limit once
/// it has logged in (a person reading the list).
#[test]
fn silence_before_the_first_message_is_cut_short_after_a_login_it_is_not() {
    let limits = Limits {
        first_message_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let system = System::start_with(limits, None);
    let mut silent = Raw::connect(system.center);
    assert_eq!(
        silent.line().as_deref(),
        Some("error no message for 0.2s; disconnecting")
    );
    assert_eq!(silent.line(), None);
    // The first wait is never longer than the idle limit.
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let capped = System::start_with(limits, None);
    assert_eq!(
        Raw::connect(capped.center).line().as_deref(),
        Some("error no message for 0.3s; disconnecting")
    );
    let mut thinking = Raw::connect(system.center);
    assert_eq!(thinking.ask("authenticate patient1 password111"), "success");
    assert_eq!(
        thinking.line().as_deref(),
        Some("error no message for 0.6s; disconnecting")
    );
    system.wait_for_sessions_to_end();
}

/// 16.4: a username reached the center's terminal raw: an escape sequence
/// set the title or cleared the screen, a carriage return forged a phase
/// line. Every line of every server now shows control characters escaped.
#[test]
fn control_characters_from_peers_are_shown_escaped_in_every_log_line() {
    let system = System::start();
    // No space in it: a username is one word.
    let name = "eve\r\u{1b}]0;owned\u{7}\u{1b}[2JPhase_2:forged";
    let mut c = Raw::connect(system.center);
    assert_eq!(c.ask(&format!("authenticate {name} x")), "failure");
    let mut c = Raw::connect(system.center);
    assert_eq!(c.ask("authenticate patient1 password111"), "success");
    assert!(c.ask("\u{1b}[2Javailable").starts_with("error "));
    let answer = udp_ask(
        system.doctor("doc1"),
        "\u{1b}[2Jinsurance\r9\n".as_bytes(),
        READ_TIMEOUT,
    );
    assert!(answer.is_some_and(|a| a.starts_with(b"error unknown plan")));
    let captured = system.stop();
    let (phases, diagnostics) = (captured.phases(), captured.diagnostics());
    for text in [&phases, &diagnostics] {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }
    assert!(
        phases.contains(r"username eve\r\u{1b}]0;owned\u{7}\u{1b}[2JPhase_2:forged."),
        "{phases}"
    );
    assert!(diagnostics.contains(r"\u{1b}[2Javailable"), "{diagnostics}");
    assert!(
        diagnostics.contains(r"\u{1b}[2Jinsurance\r9"),
        "{diagnostics}"
    );
}
