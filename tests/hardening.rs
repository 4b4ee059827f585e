//! Bad input, limits, faults and abuse: every case over real sockets, and
//! after each one a normal session still books and quotes.

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::support::{Raw, System, udp_ask};
use medsim::console::Console;
use medsim::patient::{self, Fixed, Outcome, Settings};
use medsim::system::Limits;

/// A normal visit still books and gets its quote: the center survived.
fn still_serves(system: &System) {
    let first_free = system.first_free();
    let mut settings = support::patient_settings(system.center, Duration::from_millis(500), 4);
    let visit = patient::visit(
        &mut settings,
        &support::fixture_patient("patient1"),
        &mut Fixed(first_free),
        &Console::silent(),
    );
    assert_eq!(visit.outcome, Outcome::Quoted, "{visit:?}");
    assert!(visit.cost.is_some());
}

/// Sends `steps` (line dialect) and returns the answer to the last one,
/// then checks the session was closed.
fn answer_to(system: &System, steps: &[&str]) -> String {
    let mut c = Raw::connect(system.center);
    let mut last = String::new();
    for step in steps {
        last = c.ask(step);
    }
    assert_eq!(c.line(), None, "closed after {steps:?}");
    last
}

const LOGIN: &str = "authenticate patient1 password111";

#[test]
fn each_bad_message_gets_its_error_and_the_center_keeps_serving() {
    let system = System::start();
    let cases: &[(&[&str], &str)] = &[
        (&[""], "error empty message; expected 'authenticate'"),
        (&["   "], "error empty message; expected 'authenticate'"),
        (
            &["hello"],
            "error unknown command 'hello'; expected 'authenticate'",
        ),
        (
            &["Authenticate patient1 password111"],
            "error unknown command 'Authenticate'; expected 'authenticate' (commands are lowercase)",
        ),
        (
            &[LOGIN, "available", "2"],
            "error a bare index '2'; expected 'selection 2'",
        ),
        (
            &["authenticate"],
            "error 'authenticate' takes 2 arguments, got 0",
        ),
        (
            &["authenticate patient1"],
            "error 'authenticate' takes 2 arguments, got 1",
        ),
        (
            &["authenticate a b c"],
            "error 'authenticate' takes 2 arguments, got 3",
        ),
        (
            &["available"],
            "error expected 'authenticate', got 'available'",
        ),
        (
            &["selection 1"],
            "error expected 'authenticate', got 'selection'",
        ),
        (
            &[LOGIN, LOGIN],
            "error expected 'available', got 'authenticate'",
        ),
        (
            &[LOGIN, "selection 1"],
            "error expected 'available', got 'selection'",
        ),
        (
            &[LOGIN, "available", "available"],
            "error expected 'selection', got 'available'",
        ),
        (
            &[LOGIN, "available", "selection abc"],
            "error selection index 'abc' is not a positive whole number",
        ),
        (
            &[LOGIN, "available", "selection 0"],
            "error selection index '0' is not a positive whole number",
        ),
        (
            &[LOGIN, "available", "selection -1"],
            "error selection index '-1' is not a positive whole number",
        ),
        (
            &[LOGIN, "available", "selection 99999999999999999999"],
            "error selection index '99999999999999999999' is not a positive whole number",
        ),
        (
            &[LOGIN, "available", "selection 7"],
            "error no slot has index 7",
        ),
    ];
    for (steps, expected) in cases {
        assert_eq!(&answer_to(&system, steps), expected, "{steps:?}");
    }
    assert!(
        system.holders().is_empty(),
        "no bad message reserved anything"
    );
    let errors = system.summary().errors;
    assert_eq!(errors, cases.len() as u64);
    still_serves(&system);
    let log = system.stop().diagnostics();
    assert!(
        log.contains("(not authenticated): error expected 'authenticate', got 'available'"),
        "{log}"
    );
    assert!(
        log.contains("(patient1): error no slot has index 7"),
        "{log}"
    );
}

#[test]
fn a_megabyte_without_terminator_is_refused_at_the_limit() {
    let system = System::start();
    let mut c = Raw::connect(system.center);
    let mut writer = c.stream.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        // The center stops reading and closes: errors here are expected.
        let _ = writer.write_all(&vec![b'a'; 1 << 20]);
    });
    assert_eq!(
        c.line().as_deref(),
        Some("error message too long (limit 512 bytes)")
    );
    flood.join().unwrap();
    still_serves(&system);
}

#[test]
fn bytes_that_are_not_utf8_are_refused() {
    let system = System::start();
    let mut c = Raw::connect(system.center);
    c.send(b"authenticate \xff\xfe x\n");
    assert_eq!(
        c.line().as_deref(),
        Some("error message is not valid UTF-8; expected 'authenticate'")
    );
    still_serves(&system);
}

#[test]
fn disconnecting_after_each_step_leaves_no_reservation_behind() {
    let system = System::start();
    type Step = fn(&mut Raw);
    let steps: &[(&str, Step)] = &[
        ("connect only", |_| {}),
        ("authenticate sent", |c| {
            c.send(format!("{LOGIN}\n").as_bytes())
        }),
        ("authenticated", |c| {
            c.ask(LOGIN);
        }),
        ("available sent", |c| {
            c.ask(LOGIN);
            c.send(b"available\n");
        }),
        ("listed", |c| {
            c.ask(LOGIN);
            c.ask("available");
        }),
        ("half a selection", |c| {
            c.ask(LOGIN);
            c.ask("available");
            c.send(b"selection 2");
        }),
    ];
    for (name, step) in steps {
        let mut c = Raw::connect(system.center);
        step(&mut c);
        drop(c);
        system.wait_for_sessions_to_end();
        assert!(system.holders().is_empty(), "after '{name}'");
    }
    // Sent and then gone before reading: reserved only if the answer went
    // out, and then it is a booking the center counted.
    let mut c = Raw::connect(system.center);
    c.ask(LOGIN);
    c.ask("available");
    c.send(b"selection 3\n");
    drop(c);
    system.wait_for_sessions_to_end();
    let holders = system.holders();
    assert_eq!(holders.len() as u64, system.summary().bookings);
    // Read the answer, then gone: the slot stays reserved.
    let mut c = Raw::connect(system.center);
    c.ask(LOGIN);
    c.ask("available");
    assert!(c.ask("selection 4").starts_with("doc1 "));
    drop(c);
    system.wait_for_sessions_to_end();
    assert!(system.holders().contains(&(4, "patient1".to_owned())));
    still_serves(&system);
}

#[test]
fn a_trickling_client_is_cut_off_at_the_message_timeout() {
    let limits = Limits {
        message_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let system = System::start_with(limits, None);
    let mut c = Raw::connect(system.center);
    assert_eq!(c.ask(LOGIN), "success");
    let started = Instant::now();
    let mut writer = c.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        // One byte every 50 ms, never a whole message and never the
        // pause that would end one: the pace of the attack, not a wait for
        // the server.
        for byte in b"available-and-more-and-more-and-more" {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(
        c.line().as_deref(),
        Some("error no whole message within 1s; disconnecting")
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "cut after {waited:?}, despite the trickle"
    );
    trickle.join().unwrap();
    still_serves(&system);
}

#[test]
fn past_the_session_limit_a_client_is_told_busy_and_served_again_later() {
    // All three from this host: the limit under test is the center's,
    // not one address's share of it.
    let limits = Limits {
        max_sessions: 3,
        max_sessions_per_address: 3,
        ..Limits::default()
    };
    let system = System::start_with(limits, None);
    let held: Vec<Raw> = (0..3)
        .map(|_| {
            let mut c = Raw::connect(system.center);
            assert_eq!(c.ask(LOGIN), "success");
            c
        })
        .collect();
    let mut c = Raw::connect(system.center);
    assert_eq!(c.line().as_deref(), Some("error busy"));
    assert_eq!(c.line(), None);
    assert_eq!(system.summary().busy, 1);
    drop(held);
    system.wait_for_sessions_to_end();
    still_serves(&system);
}

#[test]
fn two_thousand_idle_connections_never_hang_a_normal_session() {
    // Client and server share this process: 2,000 + 1,024 descriptors.
    rlimit::increase_nofile_limit(8192).unwrap();
    let system = System::start();
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(system.center).unwrap())
        .collect();
    // A normal session now either completes or is told busy: never hangs.
    let mut c = Raw::connect(system.center);
    c.send(format!("{LOGIN}\n").as_bytes());
    let answer = c.line();
    assert!(
        matches!(answer.as_deref(), Some("success" | "error busy")),
        "{answer:?}"
    );
    let summary = system.summary();
    assert!(summary.busy >= 976, "{summary:?}");
    drop(idle);
    system.wait_for_sessions_to_end();
    still_serves(&system);
}

#[test]
fn running_out_of_descriptors_is_survived() {
    // A center allowed 40 descriptors, facing 60 connections: accept fails
    // with EMFILE until idle sessions are dropped, then serves again.
    let mut center = support::Running::spawn_shell(
        "ulimit -n 40 && exec \"$MEDSIM\" center --listen 127.0.0.1:0 --message-timeout 1s --idle-timeout 1s --quiet",
    );
    let addr = support::address_in(&center.line());
    let hogs: Vec<TcpStream> = (0..60).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask(LOGIN), "success");
    assert!(c.ask("available").starts_with("1 Tue 01pm"));
    assert!(c.ask("selection 1").starts_with("doc1 "));
    drop(hogs);
    let (status, _, stderr) = center.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("accept failed: Too many open files"),
        "{stderr}"
    );
}

#[test]
fn doctors_answer_garbage_with_errors_or_silence_never_a_cost() {
    let system = System::start();
    let doc1 = system.doctor("doc1");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(doc1).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut garbage: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
    garbage[0] = 0xff;
    let hostile: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![b'x'],
        vec![0],
        vec![b'a'; 65507],
        garbage,
        b"insurance9\n".to_vec(),
    ];
    for datagram in &hostile {
        socket.send(datagram).unwrap();
        // UDP on loopback keeps one sender's order: whatever comes before
        // the answer to this probe was the answer to the hostile datagram.
        socket.send(b"insurance2\n").unwrap();
        let mut answers = Vec::new();
        loop {
            let n = socket.recv(&mut buf).unwrap();
            answers.push(buf[..n].to_vec());
            if buf[..n] == *b"20\n" {
                break;
            }
        }
        let to_hostile = &answers[..answers.len() - 1];
        assert!(to_hostile.len() <= 1, "{datagram:?} got {to_hostile:?}");
        for answer in to_hostile {
            assert!(answer.starts_with(b"error "), "{answer:?}");
            assert!(
                answer.len() <= datagram.len() * medsim::doctor::AMPLIFICATION_LIMIT,
                "{} bytes for {}",
                answer.len(),
                datagram.len()
            );
        }
    }
    assert_eq!(
        udp_ask(doc1, &[b'a'; 65507], Duration::from_secs(10)).unwrap(),
        b"error message too long (limit 512 bytes)\0"
    );
    still_serves(&system);
}

/// A center written in the test that answers until `stop_after` requests,
/// then closes (or, with `silent`, stops answering), assigning doctor port
/// `doctor_port`.
fn fake_center(stop_after: usize, silent: bool, doctor_port: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let answers = [
            "success\n".to_owned(),
            "1 Tue 01pm\n".to_owned(),
            format!("doc1 {doctor_port}\n"),
        ];
        let mut buf = [0u8; 512];
        for answer in answers.iter().take(stop_after) {
            if stream.read(&mut buf).unwrap_or(0) == 0 {
                return;
            }
            stream.write_all(answer.as_bytes()).unwrap();
        }
        if silent {
            // Hold the connection open without a word until the client leaves.
            while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
    });
    addr
}

fn quick_settings(center: SocketAddr) -> Settings {
    support::patient_settings(center, Duration::from_millis(100), 3)
}

#[test]
fn a_silent_doctor_ends_in_bounded_retries() {
    let silent_doctor = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent_doctor.local_addr().unwrap().port();
    let center = fake_center(3, false, port);
    let started = Instant::now();
    let visit = patient::visit(
        &mut quick_settings(center),
        &support::fixture_patient("patient1"),
        &mut Fixed(1),
        &Console::silent(),
    );
    assert_eq!(visit.outcome, Outcome::DoctorSilent);
    assert_eq!(visit.retries, 2);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Three requests reached the silent doctor.
    silent_doctor
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let n = silent_doctor.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"insurance1\n");
    }
}

#[test]
fn a_center_closing_or_falling_silent_mid_session_is_a_connection_error() {
    let visit = patient::visit(
        &mut quick_settings(fake_center(1, false, 1)),
        &support::fixture_patient("patient1"),
        &mut Fixed(1),
        &Console::silent(),
    );
    assert_eq!(
        visit.outcome,
        Outcome::Connection("the center ended the connection without answering".into())
    );
    let visit = patient::visit(
        &mut quick_settings(fake_center(2, true, 1)),
        &support::fixture_patient("patient1"),
        &mut Fixed(1),
        &Console::silent(),
    );
    assert_eq!(
        visit.outcome,
        Outcome::Connection("the center did not answer in time".into())
    );
}

#[test]
fn the_patient_binary_reports_a_silent_doctor_with_its_status() {
    let silent_doctor = UdpSocket::bind("127.0.0.1:0").unwrap();
    let center = fake_center(3, false, silent_doctor.local_addr().unwrap().port());
    let (code, _, stderr) = support::output(support::bin().args([
        "patient",
        "--center",
        &center.to_string(),
        "--select",
        "1",
        "--quote-timeout",
        "0.1",
        "--quote-attempts",
        "2",
    ]));
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("the doctor did not answer"), "{stderr}");
}

#[test]
fn simulated_loss_is_overcome_by_retries() {
    let args = medsim::sim::Options {
        patients: 40,
        slots: Some(40),
        choice: medsim::sim::Choice::Random,
        concurrency: Some(8),
        udp_loss: 0.3,
        seed: Some(11),
        quote_timeout: Duration::from_millis(50),
        ..medsim::sim::Options::default()
    };
    let report = medsim::sim::simulate(&args).unwrap();
    assert!(report.ok(), "{}", medsim::sim::render(&report));
    // Random choices collide at times: every booked patient is quoted.
    assert!(report.bookings >= 20, "{}", medsim::sim::render(&report));
    assert_eq!(report.outcomes.get("quoted"), Some(&report.bookings));
    assert!(report.quote_retries > 0, "30% loss each way needs retries");
}

#[test]
fn passwords_appear_only_when_asked_for() {
    let system = System::start();
    still_serves(&system);
    let phases = system.stop().phases();
    assert!(phases.contains("received request from a patient with username patient1."));
    assert!(!phases.contains("password111"));

    let system = System::start_custom(|options| options.show_passwords = true);
    let mut c = Raw::connect(system.center);
    assert_eq!(c.ask(LOGIN), "success");
    drop(c);
    let captured = system.stop();
    assert!(
        captured
            .phases()
            .contains("with username patient1 and password password111.")
    );
}
