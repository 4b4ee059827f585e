//! medsim against the classic programs as they are: the seed's patient
//! served unchanged by medsim's center and doctors, and medsim's patient
//! and simulate driving classic centers and doctors to a quote. Every
//! classic program here is a fake of ours (`support/fakes.rs`), written
//! from PROTOCOL.md's "Classic programs as they are".

use crate::support;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use crate::support::fakes::{
    Center, FakeSlot, ListForm, SeedPatient, doctor_answering, seed_list_indexes,
    seed_patient_visit,
};
use crate::support::{Running, System, address_in, medsim};
use predicates::str::contains;

#[test]
fn the_seed_patient_completes_all_three_phases_against_medsim() {
    // As the README runs it: doctors on their ports, the center's data
    // naming them 720 lower, the seed patient adding 720.
    let (_doctors, doc1, doc2) = support::doctor_processes();
    let dir = tempfile::tempdir().unwrap();
    support::classic_fixtures(dir.path(), doc1 - 720, doc2 - 720);
    let mut center = Running::spawn(&[
        "center",
        "--listen",
        "127.0.0.1:0",
        "--fixtures",
        dir.path().to_str().unwrap(),
    ]);
    let addr = address_in(&center.line());
    let seed = |user, password, plan, choice| SeedPatient {
        user,
        password,
        plan,
        choice,
        port_offset: 720,
    };
    assert_eq!(
        seed_patient_visit(addr, &seed("patient1", "password111", "insurance1", 1)),
        Ok("30".to_owned())
    );
    assert_eq!(
        seed_patient_visit(addr, &seed("patient2", "password222", "insurance2", 2)),
        Ok("60".to_owned())
    );
    // The slot just given is no longer in the list the seed parses.
    assert_eq!(
        seed_patient_visit(addr, &seed("patient2", "password222", "insurance2", 1)),
        Err("1 is not listed in '3 Thu 02pm 4 Wed 10am 5 Sat 12pm 6 Fri 04pm '".to_owned())
    );
    let (status, stdout, _) = center.terminate();
    assert!(status.success());
    assert!(
        stdout.contains("confirms the following appointment 2 to patient with username patient2.")
    );
}

#[test]
fn the_seed_list_parser_refuses_what_crashes_the_seed() {
    assert_eq!(seed_list_indexes("1 Tue 01pm 2 Mon 03pm "), Ok(vec![1, 2]));
    // medsim's line answer, which crashed the seed patient before.
    assert!(seed_list_indexes("1 Tue 01pm 2 Mon 03pm").is_err());
    assert!(seed_list_indexes("1 Tue 01pm\n2 Mon 03pm\n").is_err());
}

#[test]
fn a_mixed_terminator_patient_is_answered_at_the_pause_not_the_idle_limit() {
    let system = System::start();
    let mut c = support::Raw::connect(system.center);
    c.send(b"authenticate patient2 password222\0");
    assert_eq!(c.classic_segment(), b"success\0");
    c.send(b"available\0");
    c.classic_segment();
    let sent = Instant::now();
    c.send(b"selection 2");
    let answer = c.classic_segment();
    assert_eq!(
        answer,
        format!("doc2 {}\0", system.doctor("doc2").port()).as_bytes()
    );
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "answered after {:?}, the idle limit is 30 s",
        sent.elapsed()
    );
}

/// A classic center that keeps the protocol, its slots at the doctors of
/// `system`.
fn good(system: &System) -> Center {
    Center::good(system.doctor("doc1").port(), system.doctor("doc2").port())
}

/// A good classic center but for its slots.
fn with_slots(slots: Vec<FakeSlot>) -> Center {
    Center {
        slots,
        ..Center::good(0, 0)
    }
}

/// `medsim patient --name patient2 --dialect classic --select SLOT` at
/// `center`, with `more` flags.
fn classic_patient(
    center: std::net::SocketAddr,
    slot: u64,
    more: &[&str],
) -> assert_cmd::assert::Assert {
    let center = center.to_string();
    let slot = slot.to_string();
    let mut args = vec![
        "patient",
        "--name",
        "patient2",
        "--center",
        center.as_str(),
        "--dialect",
        "classic",
        "--select",
        slot.as_str(),
        "--timeout",
        "5s",
    ];
    args.extend_from_slice(more);
    medsim(&args)
}

/// `medsim patient --dialect classic` books slot 5 at a center made by
/// `style` and is quoted by doc2 (60 for insurance2).
fn patient_books_at(style: impl FnOnce(Center) -> Center) -> assert_cmd::assert::Assert {
    let system = System::start();
    let center = style(good(&system)).serve();
    classic_patient(center, 5, &[]).success().stdout(contains(
        "Phase 3: Patient 2 receives 60$ estimation cost from doctor with port number",
    ))
}

#[test]
fn the_classic_client_tolerates_a_greeting() {
    patient_books_at(|c| Center {
        greeting: Some("21720"),
        ..c
    })
    .stdout(contains(
        "Phase 1: The Health Center Server greeted Patient 2 with '21720'.",
    ));
}

#[test]
fn the_classic_client_tolerates_a_greeting_glued_to_the_answer() {
    // Greeting and answer in one segment: two C strings, no padding.
    let system = System::start();
    let doc2 = system.doctor("doc2").port();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let center = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 100];
        assert!(stream.read(&mut buf).unwrap() > 0);
        stream.write_all(b"welcome\0success\0").unwrap();
        assert!(stream.read(&mut buf).unwrap() > 0);
        stream.write_all(b"5 Sat 12pm \0").unwrap();
        assert!(stream.read(&mut buf).unwrap() > 0);
        stream
            .write_all(format!("doc2 {doc2}\0").as_bytes())
            .unwrap();
    });
    classic_patient(center, 5, &["--quiet"])
        .success()
        .stdout("60\n");
}

#[test]
fn the_classic_client_reads_space_dot_lists() {
    patient_books_at(|c| Center {
        list: ListForm::SpaceDot,
        ..c
    })
    .stdout(contains("\n5 Sat 12pm\n"));
}

#[test]
fn the_classic_client_reads_one_slot_a_line_capitals_and_padding() {
    patient_books_at(|c| Center {
        list: ListForm::PerLine,
        success: "Success",
        not_available: "not available",
        padding: 0xCD,
        ..c
    });
}

#[test]
fn the_classic_client_takes_a_port_alone_as_the_grant() {
    patient_books_at(|c| Center {
        port_alone: true,
        ..c
    });
}

#[test]
fn a_doctor_that_answers_an_empty_datagram_is_reported_as_such() {
    let empty = doctor_answering(b"");
    let center = with_slots(vec![(1, "Tue", "01pm", "doc1", empty.port())]).serve();
    medsim(&[
        "patient",
        "--center",
        &center.to_string(),
        "--dialect",
        "classic",
        "--select",
        "1",
    ])
    .code(6)
    .stderr(contains("the doctor answered with an empty message"));
    // simulate counts it as an outcome of its own.
    let empty = doctor_answering(b"");
    let center = with_slots(vec![(1, "Tue", "01pm", "doc1", empty.port())]).serve();
    let run = medsim(&[
        "simulate",
        "--center",
        &center.to_string(),
        "--dialect",
        "classic",
        "--patients",
        "1",
        "--json",
    ])
    .code(1);
    let report: medsim::sim::Report = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert_eq!(report.outcomes.get("doctor_empty"), Some(&1));
}

#[test]
fn doctor_routes_reach_a_doctor_the_center_did_not_name() {
    // The center's data names doc2 at a port where nothing listens (the
    // seed's 42000); the doctor really is elsewhere.
    let system = System::start();
    let doc2 = system.doctor("doc2");
    let center = with_slots(vec![(2, "Mon", "03pm", "doc2", doc2.port() - 720)]).serve();
    let center = center.to_string();
    let base = [
        "patient",
        "--name",
        "patient2",
        "--center",
        center.as_str(),
        "--dialect",
        "classic",
        "--select",
        "2",
        "--quiet",
    ];
    let mut routed = base.to_vec();
    let route = format!("doc2={}", doc2.port());
    routed.extend(["--doctor", route.as_str()]);
    medsim(&routed).success().stdout("60\n");
}

#[test]
fn without_the_route_the_patient_says_the_doctor_did_not_answer() {
    let center = with_slots(vec![(2, "Mon", "03pm", "doc2", 9)]).serve();
    medsim(&[
        "patient",
        "--name",
        "patient2",
        "--center",
        &center.to_string(),
        "--dialect",
        "classic",
        "--select",
        "2",
        "--quote-timeout",
        "50ms",
        "--quote-attempts",
        "2",
    ])
    .code(5)
    .stderr(contains("the doctor did not answer"));
}

#[test]
fn a_sessions_error_lines_stand_after_its_phase_lines_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("center.log");
    let mut center = Running::spawn_shell(&format!(
        "exec \"$MEDSIM\" center --listen 127.0.0.1:0 > {} 2>&1",
        log.display()
    ));
    // The address line is in the file; wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("Phase 1: The Health Center Server has port number"))
        {
            break address_in(line);
        }
        assert!(Instant::now() < deadline, "no address line: {text}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut c = support::Raw::connect(addr);
    assert_eq!(c.ask("authenticate patient1 password111"), "success");
    assert!(c.ask("selection 9").starts_with("error"));
    assert!(c.closed());
    center.send_signal("TERM");
    let _ = center.child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let phase = text
        .find("sends the response success to patient with username patient1.")
        .unwrap_or_else(|| panic!("{text}"));
    let error = text
        .find("error expected 'available', got 'selection'")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(phase < error, "{text}");
}

#[test]
fn the_seed_data_shipped_in_fixtures_names_the_seeds_ports() {
    // What the README's "classic programs" commands use.
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed");
    let (_center, addr) = support::center_process(std::path::Path::new(seed), "memory");
    let mut c = support::Raw::connect(addr);
    c.send(b"authenticate patient1 password111\0");
    assert_eq!(c.classic_segment(), b"success\0");
    c.send(b"available\0");
    let list = c.classic_segment();
    assert_eq!(
        seed_list_indexes(std::str::from_utf8(&list[..list.len() - 1]).unwrap()),
        Ok(vec![1, 2, 3, 4, 5, 6])
    );
    c.send(b"selection 2\0");
    assert_eq!(c.classic_segment(), b"doc2 42000\0");
}
