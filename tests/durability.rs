//! The real binary under crashes and signals: an SQLite store across
//! kill -9, and shutdown on SIGTERM and SIGINT.

use crate::support;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Raw, Running, address_in, try_booking};
use medsim::data::{Fixtures, Source};
use medsim::rng::SplitMix64;
use medsim::store::Store as _;
use medsim::store::sqlite::SqliteStore;

const USERS: usize = 5000;
const SLOTS: u64 = 400;

fn write_fixtures(dir: &Path) {
    support::crowd_fixtures(dir, USERS, SLOTS);
}

/// A center on `store` (a `--store` URL).
fn start_center(fixtures: &Path, store: &str) -> (Running, SocketAddr) {
    support::center_process(fixtures, store)
}

/// Lists the free slots as a fresh user.
fn listed(addr: SocketAddr, k: usize) -> Vec<u64> {
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask(&format!("authenticate u{k} pw{k}")), "success");
    c.ask("available")
        .split(' ')
        .step_by(3)
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn reservations_survive_kill_9_and_no_slot_is_ever_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    write_fixtures(dir.path());
    let db = dir.path().join("slots.db");
    let store = format!("sqlite:{}", db.display());
    let next_user = AtomicUsize::new(0);
    // Every slot some patient was told `DOCTOR PORT` for, and to whom.
    let mut given: HashMap<u64, usize> = HashMap::new();

    for round in 0..4 {
        let (center, addr) = start_center(dir.path(), &store);
        let free = listed(addr, next_user.fetch_add(1, Ordering::SeqCst));
        for slot in given.keys() {
            assert!(
                !free.contains(slot),
                "round {round}: slot {slot} listed again"
            );
        }
        let (booked_tx, booked_rx) = crossbeam_channel::unbounded();
        let bookings = std::thread::scope(|scope| {
            for worker in 0..6 {
                let (booked_tx, next_user) = (booked_tx.clone(), &next_user);
                scope.spawn(move || {
                    let mut rng = SplitMix64::for_item(round, worker, 0);
                    loop {
                        let k = next_user.fetch_add(1, Ordering::SeqCst);
                        if k >= USERS {
                            return;
                        }
                        match try_booking(addr, k, &mut rng) {
                            Ok(Some(slot)) => booked_tx.send((slot, k)).unwrap(),
                            Ok(None) => {}
                            Err(_) => return, // the center is gone
                        }
                    }
                });
            }
            drop(booked_tx);
            // Crash the center under load, a few bookings into the round.
            let mut bookings = Vec::new();
            while bookings.len() < 15 {
                bookings.push(
                    booked_rx
                        .recv_timeout(Duration::from_secs(20))
                        .expect("bookings flow"),
                );
            }
            center.kill_9();
            bookings.extend(booked_rx.iter());
            bookings
        });
        for (slot, user) in bookings {
            if let Some(first) = given.insert(slot, user) {
                panic!("slot {slot} given to u{first} and again to u{user} (round {round})");
            }
        }
    }

    let slots = Fixtures::load(&Source::dir(dir.path())).unwrap().slots;
    let recorded: HashMap<u64, String> = SqliteStore::open(&db, &slots, 1000)
        .unwrap()
        .holders()
        .unwrap()
        .into_iter()
        .collect();
    for (slot, user) in &given {
        assert_eq!(
            recorded.get(slot),
            Some(&format!("u{user}")),
            "slot {slot} was confirmed to u{user} but the database says otherwise"
        );
    }
    assert!(given.len() >= 60, "four rounds of at least 15 bookings");

    // One more restart: nothing given is listed, or given again.
    let (center, addr) = start_center(dir.path(), &store);
    let free = listed(addr, next_user.fetch_add(1, Ordering::SeqCst));
    assert_eq!(free.len() as u64, SLOTS - recorded.len() as u64);
    let (slot, _) = given.iter().next().unwrap();
    let k = next_user.fetch_add(1, Ordering::SeqCst);
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask(&format!("authenticate u{k} pw{k}")), "success");
    c.ask("available");
    assert_eq!(c.ask(&format!("selection {slot}")), "notavailable");
    let (status, _, stderr) = center.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "center: sqlite store {}: {} reservations held",
            db.display(),
            recorded.len()
        )),
        "{stderr}"
    );
}

/// Waits (bounded) until connections to `addr` are refused.
fn wait_until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting after the signal"
        );
        // A nap, not a spin: the center needs the cores to shut down.
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigterm_lets_the_session_in_flight_finish_then_exits_zero() {
    let mut center = Running::spawn(&["center", "--listen", "127.0.0.1:0", "--quiet"]);
    let addr = address_in(&center.line());
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask("authenticate patient1 password111"), "success");
    center.send_signal("TERM");
    wait_until_refused(addr);
    // Stopped accepting, yet the session in flight completes.
    assert!(c.ask("available").starts_with("1 Tue 01pm"));
    assert!(c.ask("selection 1").starts_with("doc1 "));
    let (status, stdout, stderr) = center.finish();
    assert!(status.success(), "{stderr}");
    assert!(stdout.starts_with("center stopped: "), "{stdout}");
    assert!(
        // Sessions: this one, and any probe of wait_until_refused that was
        // accepted before the listener closed.
        stdout.contains(", 1 booking, 0 errors, 0 refused busy"),
        "{stdout}"
    );
}

#[test]
fn ctrl_c_says_what_it_waits_for_and_a_second_stops_at_once() {
    let mut center = Running::spawn(&["center", "--listen", "127.0.0.1:0", "--quiet"]);
    let addr = address_in(&center.line());
    // A person at the prompt: logged in and listed, thinking.
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask("authenticate patient1 password111"), "success");
    c.ask("available");
    center.send_signal("INT");
    wait_until_refused(addr);
    let started = Instant::now();
    center.send_signal("INT");
    let (status, _, stderr) = center.finish();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the drain is 5 s; stopped after {:?}",
        started.elapsed()
    );
    assert!(
        stderr
            .contains("center: stopping: waiting up to 5s for 1 session; Ctrl-C again to stop now"),
        "{stderr}"
    );
    assert!(stderr.contains("medsim: stopped at once"), "{stderr}");
}

#[test]
fn after_shutdown_an_idle_session_is_cut_at_the_drain_timeout() {
    let mut center = Running::spawn(&[
        "center",
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--drain-timeout",
        "0.5",
    ]);
    let addr = address_in(&center.line());
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask("authenticate patient1 password111"), "success");
    let started = Instant::now();
    center.send_signal("INT");
    assert_eq!(
        c.line().as_deref(),
        Some("error the center is shutting down")
    );
    let (status, stdout, _) = center.finish();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(stdout.contains(", 1 error, "), "{stdout}");
}

#[test]
fn doctors_stop_on_sigint_and_sigterm_with_a_summary() {
    for signal in ["INT", "TERM"] {
        let mut doctors = Running::spawn(&[
            "doctor",
            "--listen",
            "doc1=127.0.0.1:0",
            "--listen",
            "doc2=127.0.0.1:0",
        ]);
        let doc1 = address_in(&doctors.line());
        let _doc2 = address_in(&doctors.line());
        assert_eq!(
            support::udp_ask(doc1, b"insurance1\n", Duration::from_secs(5)).unwrap(),
            b"30\n"
        );
        let (status, stdout, stderr) = doctors.signal(signal);
        assert!(status.success(), "{signal}: {stderr}");
        assert!(
            stdout.contains("doctor doc1 stopped: 1 quote, 0 errors"),
            "{stdout}"
        );
        assert!(
            stdout.contains("doctor doc2 stopped: 0 quotes, 0 errors"),
            "{stdout}"
        );
    }
}

#[test]
fn an_sqlite_file_deleted_under_a_running_center_is_noticed_and_bookings_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_fixtures(dir.path());
    let db = dir.path().join("slots.db");
    let (mut center, addr) = start_center(dir.path(), &format!("sqlite:{}", db.display()));
    let mut rng = SplitMix64::new(3);
    assert!(try_booking(addr, 1, &mut rng).unwrap().is_some());
    // A patient who listed before the file went.
    let mut early = Raw::connect(addr);
    assert_eq!(early.ask("authenticate u3 pw3"), "success");
    let listed = early.ask("available");
    let pick = listed.split(' ').next().unwrap().to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let mut file = db.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    let mut c = Raw::connect(addr);
    assert_eq!(c.ask("authenticate u2 pw2"), "success");
    let answer = c.ask("available");
    assert_eq!(
        answer,
        "error the appointment store cannot answer now; try again later",
        "{}",
        center.stderr_text()
    );
    assert_eq!(
        early.ask(&format!("selection {pick}")),
        "error the appointment store's file is gone; no reservation can be recorded"
    );
    let (status, _, stderr) = center.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the file {} was deleted or replaced while the center ran",
            db.display()
        )),
        "{stderr}"
    );
}
