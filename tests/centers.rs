//! Several center processes on one store: the lock that makes one center
//! correct does nothing across two, so the check-and-set must live in the
//! database. Real `medsim center` processes, a real SQLite file and a real
//! PostgreSQL server (`MEDSIM_TEST_POSTGRES`; `.ci/run` starts one).

use crate::support;

use crate::support::postgres as postgres_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::postgres::TestDb;
use crate::support::{center_process, crowd_fixtures, listed_session, try_booking};
use medsim::data::{Fixtures, Source};
use medsim::rng::SplitMix64;
use medsim::store::{self, StoreUrl};

/// `racers` clients spread over `centers` log in and list, then all select
/// slot 1 at once. Returns the answers.
fn race_for_slot_one(centers: &[SocketAddr], racers: usize) -> Vec<String> {
    let barrier = Barrier::new(racers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..racers)
            .map(|k| {
                let (barrier, center) = (&barrier, centers[k % centers.len()]);
                scope.spawn(move || {
                    let ready = listed_session(center, k);
                    // Everyone waits, ready or not, so no racer is left
                    // waiting for one that failed.
                    barrier.wait();
                    let (mut c, _) = ready.unwrap_or_else(|e| panic!("racer {k}: {e}"));
                    c.ask("selection 1")
                        .unwrap_or_else(|e| panic!("racer {k}: {e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn holders(url: &str, fixtures: &std::path::Path) -> Vec<(u64, String)> {
    let slots = Fixtures::load(&Source::dir(fixtures)).unwrap().slots;
    let url = StoreUrl::parse(url).unwrap();
    store::open(&url, &slots, 1000).unwrap().holders().unwrap()
}

fn one_winner(answers: &[String]) {
    let winners = answers.iter().filter(|a| a.starts_with("doc1 ")).count();
    let losers = answers.iter().filter(|a| *a == "notavailable").count();
    assert_eq!(
        (winners, losers),
        (1, answers.len() - 1),
        "exactly one grant: {answers:?}"
    );
}

#[test]
fn two_center_processes_on_one_sqlite_file_give_a_slot_once() {
    let dir = tempfile::tempdir().unwrap();
    crowd_fixtures(dir.path(), 100, 20);
    let url = format!("sqlite:{}", dir.path().join("slots.db").display());
    let (_a, a) = center_process(dir.path(), &url);
    let (_b, b) = center_process(dir.path(), &url);
    let answers = race_for_slot_one(&[a, b], 60);
    one_winner(&answers);
    let held = holders(&url, dir.path());
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, 1);
}

#[test]
fn two_hundred_sessions_over_three_centers_on_postgres_give_one_winner_each_round() {
    let Some(server) = postgres_support::server_url("centers on postgres race") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    crowd_fixtures(dir.path(), 200, 6);
    for round in 0..3 {
        let db = TestDb::create(&server, "race");
        let processes: Vec<_> = (0..3)
            .map(|_| center_process(dir.path(), &db.url))
            .collect();
        let centers: Vec<SocketAddr> = processes.iter().map(|(_, addr)| *addr).collect();
        let answers = race_for_slot_one(&centers, 200);
        one_winner(&answers);
        let held = holders(&db.url, dir.path());
        assert_eq!(held.len(), 1, "round {round}: {held:?}");
        let winner = answers.iter().position(|a| a.starts_with("doc1 ")).unwrap();
        assert_eq!(held[0], (1, format!("u{winner}")), "round {round}");
    }
}

#[test]
fn kill_9_of_a_center_mid_race_loses_no_confirmed_booking() {
    let Some(server) = postgres_support::server_url("kill -9 of a center on postgres") else {
        return;
    };
    const USERS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    crowd_fixtures(dir.path(), USERS, 200);
    let db = TestDb::create(&server, "kill");
    let mut processes: Vec<_> = (0..3)
        .map(|_| center_process(dir.path(), &db.url))
        .collect();
    let centers: Vec<SocketAddr> = processes.iter().map(|(_, addr)| *addr).collect();
    let next_user = AtomicUsize::new(0);
    let (booked_tx, booked_rx) = crossbeam_channel::unbounded();
    let (victim, _) = processes.remove(0);
    let bookings = std::thread::scope(|scope| {
        for worker in 0..6 {
            let (booked_tx, next_user, centers) = (booked_tx.clone(), &next_user, &centers);
            scope.spawn(move || {
                let mut rng = SplitMix64::for_item(7, worker, 0);
                loop {
                    let k = next_user.fetch_add(1, Ordering::SeqCst);
                    if k >= USERS {
                        return;
                    }
                    // A center killed under us is a failed attempt; the
                    // others go on.
                    if let Ok(Some(slot)) = try_booking(centers[k % 3], k, &mut rng) {
                        booked_tx.send((slot, k)).unwrap();
                    }
                }
            });
        }
        drop(booked_tx);
        let mut bookings = Vec::new();
        while bookings.len() < 20 {
            bookings.push(
                booked_rx
                    .recv_timeout(Duration::from_secs(20))
                    .expect("bookings flow"),
            );
        }
        victim.kill_9();
        bookings.extend(booked_rx.iter());
        bookings
    });
    let mut given: HashMap<u64, usize> = HashMap::new();
    for (slot, user) in bookings {
        if let Some(first) = given.insert(slot, user) {
            panic!("slot {slot} given to u{first} and again to u{user}");
        }
    }
    let held: HashMap<u64, String> = holders(&db.url, dir.path()).into_iter().collect();
    for (slot, user) in &given {
        assert_eq!(
            held.get(slot),
            Some(&format!("u{user}")),
            "slot {slot} was confirmed to u{user} but the database says otherwise"
        );
    }
    assert!(given.len() >= 20, "{}", given.len());
}

#[test]
fn a_center_that_loses_its_database_answers_error_and_reserves_nothing() {
    let Some(server) = postgres_support::server_url("a center losing postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    crowd_fixtures(dir.path(), 10, 6);
    let db = TestDb::create(&server, "lost");
    let db_name = db.url.rsplit('/').next().unwrap().to_owned();
    let (mut center, addr) = center_process(dir.path(), &db.url);
    let (mut c, listed) = listed_session(addr, 1).unwrap();
    assert_eq!(listed, [1, 2, 3, 4, 5, 6]);
    let mut admin = postgres::Client::connect(&server, postgres::NoTls).unwrap();
    let drop_connections = |admin: &mut postgres::Client| {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db_name],
            )
            .unwrap();
    };
    // A restart of the database's backends alone costs no session: the
    // stale pooled connections are passed over.
    drop_connections(&mut admin);
    let (mut other, _) = listed_session(addr, 3).unwrap();
    let answer = other
        .ask("selection 6")
        .unwrap_or_else(|e| panic!("{e}; the center said: {}", center.stderr_text()));
    assert!(answer.starts_with("doc2 "), "{answer}");
    // The database goes away under the center: no new connection is let
    // in, and every connection it has is dropped.
    admin
        .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS false"))
        .unwrap();
    drop_connections(&mut admin);
    let answer = c
        .ask("selection 2")
        .unwrap_or_else(|e| panic!("{e}; the center said: {}", center.stderr_text()));
    assert!(
        answer.starts_with("error the reservation could not be recorded"),
        "{answer}"
    );
    // Back, and nothing was reserved; the center lives on and serves the
    // next session on fresh connections.
    admin
        .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"))
        .unwrap();
    assert_eq!(holders(&db.url, dir.path()), [(6, "u3".to_owned())]);
    let (mut c, _) = listed_session(addr, 2)
        .unwrap_or_else(|e| panic!("{e}; the center said: {}", center.stderr_text()));
    assert!(c.ask("selection 2").unwrap().starts_with("doc2 "));
    let (status, _, stderr) = center.terminate();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("reserving slot 2: "), "{stderr}");
}

#[test]
fn simulate_spreads_patients_over_centers_and_reads_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("slots.db").display());
    let run = support::medsim(&[
        "simulate",
        "--patients",
        "120",
        "--centers",
        "3",
        "--store",
        &url,
        "--choice",
        "same",
        "--json",
    ])
    .success();
    let report: medsim::sim::Report = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert_eq!(report.bookings, 1);
    assert_eq!(report.outcomes.get("taken"), Some(&119));
    assert_eq!(report.centers, Some(3));
    assert_eq!(report.center.map(|c| c.sessions), Some(120));
    assert!(report.ok(), "{}", medsim::sim::render(&report));
    // The store itself holds the one booking, for an operator to read.
    let slots = Fixtures::load(&Source::built_in()).unwrap().slots;
    let held = store::open(&StoreUrl::parse(&url).unwrap(), &slots, 50)
        .unwrap()
        .holders()
        .unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    // Again on the same store: the earlier booking is the store's, not
    // this run's, and the race is for a slot still free.
    let run = support::medsim(&[
        "simulate",
        "--patients",
        "50",
        "--centers",
        "2",
        "--store",
        &url,
        "--choice",
        "same",
        "--json",
    ])
    .success();
    let again: medsim::sim::Report = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert!(again.ok(), "{}", medsim::sim::render(&again));
    assert_eq!((again.bookings, again.held_before), (1, Some(1)));
}

#[test]
fn simulate_on_postgres_with_several_centers_gives_the_slot_once() {
    let Some(server) = postgres_support::server_url("simulate --centers on postgres") else {
        return;
    };
    let db = TestDb::create(&server, "sim");
    support::medsim(&[
        "simulate",
        "--patients",
        "200",
        "--centers",
        "3",
        "--store",
        &db.url,
        "--choice",
        "same",
    ])
    .success()
    .stdout(predicates::str::contains("3 centers on store postgres://"))
    .stdout(predicates::str::contains("bookings:    1\n"))
    .stdout(predicates::str::contains(
        "ok   no slot reserved twice: 1 slot booked, each once, as the store records",
    ));
}
