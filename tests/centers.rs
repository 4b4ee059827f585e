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

/// One booking attempt as crowd user `k` at `center`, a listed slot at
/// random, waiting up to `wait` for each answer: the slot asked for and
/// the answer to `selection`, `None` when nothing was listed.
fn book_once(
    center: SocketAddr,
    k: usize,
    rng: &mut SplitMix64,
    wait: Duration,
) -> Result<Option<(u64, String)>, String> {
    let mut c = medsim::client::Conversation::connect(center, Default::default(), wait)
        .map_err(|e| e.to_string())?;
    let login = c
        .ask(&format!("authenticate u{k} pw{k}"))
        .map_err(|e| e.to_string())?;
    if login != "success" {
        return Err(format!("login answered {login:?}"));
    }
    let listed: Vec<u64> = c
        .ask("available")
        .map_err(|e| e.to_string())?
        .split(' ')
        .step_by(3)
        .filter_map(|w| w.parse().ok())
        .collect();
    if listed.is_empty() {
        return Ok(None);
    }
    let pick = listed[rng.below(listed.len() as u64) as usize];
    let answer = c
        .ask(&format!("selection {pick}"))
        .map_err(|e| e.to_string())?;
    Ok(Some((pick, answer)))
}

/// The slots held in the database at `url`, by holder.
fn held_in(url: &str) -> HashMap<String, u64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .query(
            "SELECT idx, holder FROM slots WHERE holder IS NOT NULL",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, String>(1), row.get::<_, i64>(0) as u64))
        .collect()
}

/// What every fault test asserts at the end: no slot granted twice, every
/// grant in the database to its patient, and (once the centers have
/// settled, bounded) no patient told `error` holding a slot.
fn nothing_confirmed_lost_or_denied(url: &str, answers: &[(usize, u64, String)]) {
    let mut granted: HashMap<u64, usize> = HashMap::new();
    for (k, slot, answer) in answers {
        if answer.starts_with("doc")
            && let Some(first) = granted.insert(*slot, *k)
        {
            panic!("slot {slot} granted to u{first} and again to u{k}");
        }
    }
    let told_error: Vec<usize> = answers
        .iter()
        .filter(|(_, _, a)| a.starts_with("error"))
        .map(|(k, _, _)| *k)
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held = held_in(url);
        for (slot, k) in &granted {
            assert_eq!(
                held.get(&format!("u{k}")),
                Some(slot),
                "slot {slot} was granted to u{k} but the database says otherwise"
            );
        }
        let wrongly: Vec<String> = told_error
            .iter()
            .filter_map(|k| {
                held.get(&format!("u{k}"))
                    .map(|s| format!("u{k} holds slot {s}"))
            })
            .collect();
        if wrongly.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "told error, yet holding a slot 30 s later: {wrongly:?}"
        );
        // Settling is the centers' work, a second apart when idle.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgres_stopped_mid_race_and_restarted_after_8_s_denies_nothing_committed() {
    let Some(server) = postgres_support::OwnServer::start("postgres stopped mid-race") else {
        return;
    };
    const USERS: usize = 6000;
    let dir = tempfile::tempdir().unwrap();
    crowd_fixtures(dir.path(), USERS, 400);
    let url = server.url();
    // Long enough for a session in flight at the stop to see the restart.
    let processes: Vec<_> = (0..3)
        .map(|_| support::center_process_with(dir.path(), &url, &["--store-timeout", "20s"]))
        .collect();
    let centers: Vec<SocketAddr> = processes.iter().map(|(_, addr)| *addr).collect();
    let next_user = AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = crossbeam_channel::unbounded();
    let answers = std::thread::scope(|scope| {
        for worker in 0..6 {
            let (tx, next_user, stop, centers) = (tx.clone(), &next_user, &stop, &centers);
            scope.spawn(move || {
                let mut rng = SplitMix64::for_item(17, worker, 0);
                while !stop.load(Ordering::SeqCst) {
                    let k = next_user.fetch_add(1, Ordering::SeqCst);
                    if k >= USERS {
                        return;
                    }
                    match book_once(centers[k % 3], k, &mut rng, Duration::from_secs(40)) {
                        Ok(Some((slot, answer))) => {
                            let refused = answer.starts_with("error");
                            tx.send((k, slot, answer)).unwrap();
                            if refused {
                                // A patient tries again a little later.
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                        Ok(None) => return,
                        Err(e) => panic!("u{k}: {e}"),
                    }
                }
            });
        }
        drop(tx);
        let mut answers = Vec::new();
        let grants = |answers: &[(usize, u64, String)]| {
            answers
                .iter()
                .filter(|(_, _, a)| a.starts_with("doc"))
                .count()
        };
        while grants(&answers) < 20 {
            answers.push(
                rx.recv_timeout(Duration::from_secs(20))
                    .expect("bookings flow"),
            );
        }
        server.stop_immediate();
        // The outage: the fault itself lasts 8 s, as in the issue.
        let outage = std::time::Instant::now();
        while outage.elapsed() < Duration::from_secs(8) {
            if let Ok(answer) = rx.recv_timeout(Duration::from_millis(100)) {
                answers.push(answer);
            }
        }
        server.restart();
        let before = grants(&answers);
        while grants(&answers) < before + 20 {
            answers.push(
                rx.recv_timeout(Duration::from_secs(30))
                    .expect("bookings flow again"),
            );
        }
        stop.store(true, Ordering::SeqCst);
        answers.extend(rx.iter());
        answers
    });
    for (_, _, answer) in &answers {
        assert!(
            answer.starts_with("doc")
                || answer == "notavailable"
                || answer == "error the reservation could not be recorded; try again later"
                || answer
                    == "error the appointment store did not answer in time; the reservation is not confirmed",
            "{answer}"
        );
    }
    nothing_confirmed_lost_or_denied(&url, &answers);
}

#[test]
fn postgres_stalled_answers_error_within_the_time_limit_and_keeps_listing() {
    let Some(server) = postgres_support::OwnServer::start("postgres stalled") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    crowd_fixtures(dir.path(), 100, 60);
    let url = server.url();
    let processes: Vec<_> = (0..2)
        .map(|_| support::center_process_with(dir.path(), &url, &["--store-timeout", "1s"]))
        .collect();
    let centers: Vec<SocketAddr> = processes.iter().map(|(_, addr)| *addr).collect();
    let mut rng = SplitMix64::new(5);
    let mut answers = Vec::new();
    for k in 0..2 {
        let (slot, answer) = book_once(centers[k % 2], k, &mut rng, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("doc"), "{answer}");
        answers.push((k, slot, answer));
    }
    server.stall();
    let stalled = std::time::Instant::now();
    let during: Vec<(usize, u64, String, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (10..16)
            .map(|k| {
                let center = centers[k % 2];
                scope.spawn(move || {
                    let mut rng = SplitMix64::new(k as u64);
                    let begun = std::time::Instant::now();
                    let (slot, answer) = book_once(center, k, &mut rng, Duration::from_secs(30))
                        .unwrap_or_else(|e| panic!("u{k}: {e}"))
                        .expect("slots listed during the stall");
                    (k, slot, answer, begun.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, _, answer, took) in &during {
        assert!(
            answer == "error the reservation could not be recorded; try again later"
                || answer
                    == "error the appointment store did not answer in time; the reservation is not confirmed",
            "u{k}: {answer}"
        );
        // The limit is 1 s; the rest is margin for a loaded machine.
        assert!(*took < Duration::from_secs(5), "u{k} waited {took:?}");
    }
    // The stall itself lasts 3 s.
    if let Some(rest) = Duration::from_secs(3).checked_sub(stalled.elapsed()) {
        std::thread::sleep(rest);
    }
    server.resume();
    answers.extend(
        during
            .into_iter()
            .map(|(k, slot, answer, _)| (k, slot, answer)),
    );
    // Served again once the server answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut k = 20;
    loop {
        let (slot, answer) = book_once(centers[k % 2], k, &mut rng, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        let granted = answer.starts_with("doc");
        answers.push((k, slot, answer));
        if granted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{answers:?}\n{}",
            server.log()
        );
        k += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    nothing_confirmed_lost_or_denied(&url, &answers);
}
