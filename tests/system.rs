//! The whole system over loopback, in-process: center, doctors and patients
//! speaking both dialects, and races for slots.

use crate::support;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::{Raw, System, many_slots, udp_ask};
use medsim::center::Limits;
use medsim::console::Console;
use medsim::data::{Patient, Users};
use medsim::patient::{self, Fixed, Outcome, Settings};
use medsim::protocol::{CLASSIC_ANSWER_MAX, Dialect};

fn settings(system: &System) -> Settings {
    support::patient_settings(system.center, Duration::from_millis(500), 4)
}

#[test]
fn two_patients_book_two_slots_and_pay_the_tables_costs() {
    let system = System::start();
    let p1 = patient::visit(
        &mut settings(&system),
        &support::fixture_patient("patient1"),
        &mut Fixed(1),
        &Console::silent(),
    );
    let p2 = patient::visit(
        &mut settings(&system),
        &support::fixture_patient("patient2"),
        &mut Fixed(2),
        &Console::silent(),
    );
    assert_eq!(p1.outcome, Outcome::Quoted);
    assert_eq!(
        (p1.slot, p1.doctor.as_deref(), p1.cost),
        (Some(1), Some("doc1"), Some(30))
    );
    assert_eq!(p1.doctor_port, Some(system.doctor("doc1").port()));
    assert_eq!(p2.outcome, Outcome::Quoted);
    assert_eq!(
        (p2.slot, p2.doctor.as_deref(), p2.cost),
        (Some(2), Some("doc2"), Some(60))
    );
    assert_eq!(
        system.holders(),
        [(1, "patient1".to_owned()), (2, "patient2".to_owned())]
    );
    let captured = system.stop();
    let phases = captured.phases();
    assert!(phases.contains(
        "Phase 2: The Health Center Server confirms the following appointment 1 to patient with username patient1."
    ));
    assert!(phases.contains("Phase 3: Doctor doc2 has sent estimated price 60$ to patient"));
    assert!(
        !phases.contains("password111"),
        "passwords stay out of logs"
    );
}

#[test]
fn patient_phase_messages_follow_the_classic_demo() {
    let system = System::start();
    let (console, captured) = Console::captured();
    let mut s = Settings {
        label: "Patient 1".into(),
        ..settings(&system)
    };
    let visit = patient::visit(
        &mut s,
        &support::fixture_patient("patient1"),
        &mut Fixed(3),
        &console,
    );
    assert_eq!(visit.outcome, Outcome::Quoted);
    let text = captured.phases();
    let expected_in_order = [
        "Phase 1: Patient 1 has TCP port number ",
        "Phase 1: Authentication request from Patient 1 with username patient1 has been sent to the Health Center Server.",
        "Phase 1: Patient 1 authentication result: success.",
        "Phase 1: End of Phase 1 for Patient 1.",
        "Phase 2: The following appointments are available for Patient 1:\n1 Tue 01pm\n2 Mon 03pm\n3 Thu 02pm\n4 Wed 10am\n5 Sat 12pm\n6 Fri 04pm\n",
        "Phase 2: The requested appointment is available and reserved to Patient 1. The assigned doctor port number is ",
        "Phase 2: End of Phase 2 for Patient 1.",
        "Phase 3: Patient 1 has a dynamic UDP port number ",
        "Phase 3: The cost estimation request from Patient 1 with insurance plan insurance1 has been sent to the doctor with port number ",
        "Phase 3: Patient 1 receives 30$ estimation cost from doctor with port number ",
        "Phase 3: End of Phase 3 for Patient 1.",
    ];
    let mut from = 0;
    for piece in expected_in_order {
        let at = text[from..]
            .find(piece)
            .unwrap_or_else(|| panic!("missing, or out of order: {piece:?}\nin:\n{text}"));
        from += at + piece.len();
    }
}

#[test]
fn wrong_password_gets_failure_and_the_session_closes() {
    let system = System::start();
    let mut c = Raw::connect(system.center);
    assert_eq!(c.ask("authenticate patient1 password222"), "failure");
    assert_eq!(c.line(), None, "the center closes after failure");
    let visit = patient::visit(
        &mut settings(&system),
        &Patient {
            password: "nope".into(),
            ..support::fixture_patient("patient1")
        },
        &mut Fixed(1),
        &Console::silent(),
    );
    assert_eq!(visit.outcome, Outcome::AuthFailed);
    assert!(system.holders().is_empty());
}

#[test]
fn a_taken_slot_is_refused_and_leaves_the_list() {
    let system = System::start();
    assert!(support::book(system.center, "patient1", "password111", 4).starts_with("doc1 "));
    let mut c = Raw::connect(system.center);
    assert_eq!(c.ask("authenticate patient2 password222"), "success");
    assert_eq!(
        c.ask("available"),
        "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm 5 Sat 12pm 6 Fri 04pm"
    );
    assert_eq!(c.ask("selection 4"), "notavailable");
    assert_eq!(c.line(), None);
    let visit = patient::visit(
        &mut settings(&system),
        &support::fixture_patient("patient2"),
        &mut Fixed(4),
        &Console::silent(),
    );
    assert_eq!(visit.outcome, Outcome::Taken);
}

#[test]
fn a_full_center_answers_notavailable_and_closes() {
    let system = System::start_with(Limits::default(), Some(many_slots(1)));
    assert!(support::book(system.center, "patient1", "password111", 1).starts_with("doc1 "));
    let mut c = Raw::connect(system.center);
    assert_eq!(c.ask("authenticate patient2 password222"), "success");
    assert_eq!(c.ask("available"), "notavailable");
    assert_eq!(c.line(), None);
}

fn users(n: usize) -> Users {
    Users::from_pairs((0..n).map(|k| (format!("u{k}"), format!("pw{k}"))))
}

/// `n` sessions authenticate and list, then all select at once; returns
/// every selection answer.
fn race(system: &System, n: usize, index_for: impl Fn(usize) -> u64 + Sync) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let barrier = Arc::clone(&barrier);
                let index_for = &index_for;
                scope.spawn(move || {
                    let mut c = Raw::connect(system.center);
                    assert_eq!(c.ask(&format!("authenticate u{k} pw{k}")), "success");
                    let list = c.ask("available");
                    assert_ne!(list, "notavailable", "every racer sees the slot free");
                    barrier.wait();
                    c.ask(&format!("selection {}", index_for(k)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn two_hundred_patients_race_for_one_slot_and_exactly_one_wins() {
    for round in 0..3 {
        let system = System::start_full(Limits::default(), None, users(200));
        let answers = race(&system, 200, |_| 3);
        let doc1 = format!("doc1 {}", system.doctor("doc1").port());
        let winners = answers.iter().filter(|a| **a == doc1).count();
        let losers = answers.iter().filter(|a| *a == "notavailable").count();
        assert_eq!((winners, losers), (1, 199), "round {round}: {answers:?}");
        let holders = system.holders();
        assert_eq!(holders.len(), 1, "round {round}");
        assert_eq!(holders[0].0, 3);
    }
}

#[test]
fn two_hundred_patients_against_six_slots_make_exactly_six_bookings() {
    for round in 0..3 {
        let system = System::start_full(Limits::default(), None, users(200));
        let answers = race(&system, 200, |k| (k % 6) as u64 + 1);
        let booked = answers.iter().filter(|a| a.starts_with("doc")).count();
        let refused = answers.iter().filter(|a| *a == "notavailable").count();
        assert_eq!((booked, refused), (6, 194), "round {round}");
        let slots: Vec<u64> = system.holders().iter().map(|(s, _)| *s).collect();
        assert_eq!(slots, [1, 2, 3, 4, 5, 6], "round {round}: each slot once");
        assert_eq!(system.summary().bookings, 6);
    }
}

/// Asserts a classic answer: NUL-terminated, no newline, one 99-byte read.
fn classic_text(segment: &[u8]) -> String {
    assert!(segment.len() <= CLASSIC_ANSWER_MAX, "{segment:?}");
    assert_eq!(segment.last(), Some(&0), "NUL-terminated: {segment:?}");
    assert!(!segment.contains(&b'\n'), "no newline: {segment:?}");
    String::from_utf8(segment[..segment.len() - 1].to_vec()).unwrap()
}

fn padded_with_garbage(text: &str) -> Vec<u8> {
    let mut buffer: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37) | 1).collect();
    buffer[..text.len()].copy_from_slice(text.as_bytes());
    buffer[text.len()] = 0;
    buffer
}

fn classic_session(system: &System, frame: impl Fn(&str) -> Vec<u8>) {
    let mut c = Raw::connect(system.center);
    c.send(&frame("authenticate patient1 password111"));
    assert_eq!(classic_text(&c.classic_segment()), "success");
    c.send(&frame("available"));
    assert_eq!(
        classic_text(&c.classic_segment()),
        "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm 4 Wed 10am 5 Sat 12pm 6 Fri 04pm ",
        "every triple followed by a space, as the seed patient needs"
    );
    c.send(&frame("selection 5"));
    assert_eq!(
        classic_text(&c.classic_segment()),
        format!("doc2 {}", system.doctor("doc2").port())
    );
    assert!(c.closed());
    assert_eq!(system.holders(), [(5, "patient1".to_owned())]);
}

#[test]
fn classic_client_with_padded_buffers_and_garbage_after_the_nul() {
    let system = System::start();
    classic_session(&system, padded_with_garbage);
}

#[test]
fn classic_client_with_text_and_a_single_nul() {
    let system = System::start();
    classic_session(&system, |text| format!("{text}\0").into_bytes());
}

#[test]
fn classic_client_with_no_terminator_at_all() {
    let system = System::start();
    classic_session(&system, |text| text.as_bytes().to_vec());
}

#[test]
fn classic_slot_list_is_cut_to_fit_one_answer() {
    let system = System::start_with(Limits::default(), Some(many_slots(100)));
    let mut c = Raw::connect(system.center);
    c.send(b"authenticate patient1 password111\0");
    assert_eq!(classic_text(&c.classic_segment()), "success");
    c.send(b"available\0");
    let list = classic_text(&c.classic_segment());
    assert!(list.starts_with("1 Mon 10am 2 Mon 10am"), "{list}");
    assert!(list.ends_with("10am "), "{list}");
    assert_eq!(
        list.split_whitespace().count() % 3,
        0,
        "whole triples only: {list}"
    );
}

#[test]
fn medsims_own_patient_speaks_classic_too() {
    let system = System::start();
    let mut s = Settings {
        framing: medsim::protocol::Framing {
            dialect: Dialect::Classic,
            classic_buffer: Some(100),
        },
        ..settings(&system)
    };
    let visit = patient::visit(
        &mut s,
        &support::fixture_patient("patient2"),
        &mut Fixed(6),
        &Console::silent(),
    );
    assert_eq!(visit.outcome, Outcome::Quoted);
    assert_eq!(visit.cost, Some(60));
}

#[test]
fn doctors_quote_in_each_dialect_and_refuse_unknown_plans() {
    let system = System::start();
    let wait = Duration::from_secs(5);
    let doc1 = system.doctor("doc1");
    let doc2 = system.doctor("doc2");
    assert_eq!(udp_ask(doc1, b"insurance1\n", wait).unwrap(), b"30\n");
    assert_eq!(udp_ask(doc1, b"insurance3\r\n", wait).unwrap(), b"50\n");
    assert_eq!(udp_ask(doc2, b"insurance1\0", wait).unwrap(), b"40\0");
    assert_eq!(
        udp_ask(doc2, &padded_with_garbage("insurance3"), wait).unwrap(),
        b"10\0"
    );
    assert_eq!(udp_ask(doc2, b"insurance2", wait).unwrap(), b"60\0");
    assert_eq!(
        udp_ask(doc1, b"insurance9\n", wait).unwrap(),
        b"error unknown plan insurance9\n"
    );
    assert_eq!(
        udp_ask(doc2, b"gold-plan-x\0", wait).unwrap(),
        b"error unknown plan gold-plan-x\0"
    );
}

#[test]
fn nothing_is_listed_or_reserved_before_authentication() {
    let system = System::start();
    let mut c = Raw::connect(system.center);
    assert_eq!(
        c.ask("available"),
        "error expected 'authenticate', got 'available'"
    );
    assert_eq!(c.line(), None);
    let mut c = Raw::connect(system.center);
    assert_eq!(
        c.ask("selection 1"),
        "error expected 'authenticate', got 'selection'"
    );
    assert!(system.holders().is_empty());
    // A failed login does not authenticate the session either.
    let mut c = Raw::connect(system.center);
    c.send(b"authenticate patient1 bad\navailable\n");
    assert_eq!(c.line().as_deref(), Some("failure"));
    assert_eq!(c.line(), None);
}

/// Threads of this process whose name starts with `prefix` (Linux shows
/// at most 15 bytes of a thread's name).
fn threads_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("Linux shows this process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// Issue 18.11: a start that fails after its doctors are serving stops
/// them. Before the fix their threads stayed blocked in `recv_from`.
#[test]
fn a_start_that_fails_stops_the_doctors_it_started() {
    use medsim::store::StoreUrl;
    use medsim::system::{self, Options};

    let fixtures = medsim::data::Fixtures::load(&medsim::data::Source::built_in()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    /// A thread-name prefix, and how the start is made to fail.
    type Failure<'a> = (&'static str, Box<dyn Fn(&mut Options) + 'a>);
    let failures: [Failure; 2] = [
        (
            "ends18a",
            Box::new(|o: &mut Options| {
                o.store = StoreUrl::Sqlite(dir.path().join("no such folder").join("slots.db"));
            }),
        ),
        (
            "ends18b",
            // TEST-NET-1: never an address of this machine.
            Box::new(|o: &mut Options| o.center_listen = "192.0.2.1:0".into()),
        ),
    ];
    for (name, fail) in failures {
        let mut options = Options::from_fixtures(&fixtures);
        for doctor in &mut options.doctors {
            doctor.name = format!("{name}{}", &doctor.name[3..]);
        }
        fail(&mut options);
        let Err(e) = system::System::start(options) else {
            panic!("{name}: the system started");
        };
        // `join` returns when the thread's exit wakes it, a moment before
        // the kernel takes the task out of /proc: allow that moment, no more.
        let prefix = format!("medsim-{name}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut left = threads_named(&prefix);
        while !left.is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
            left = threads_named(&prefix);
        }
        assert_eq!(
            left,
            Vec::<String>::new(),
            "{name}: doctor threads left serving after: {e:#}"
        );
    }
}
