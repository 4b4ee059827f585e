//! medsim against other implementations: `check` against its own servers
//! and against a deliberately racy center, the classic-dialect client and
//! `simulate --center` against a classic-style server, and the classroom
//! extras (`--diagram`, `--pace`, completions).

use crate::support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::support::{System, bin, output};
use medsim::check::{self, Config, DoctorTarget, Verdict};
use medsim::console::Console;
use medsim::data::{Fixtures, Source};
use medsim::patient::{self, Fixed, Outcome, Settings};
use medsim::protocol::Dialect;
use medsim::protocol::Framing;
use medsim::sim::{self, Choice};

fn check_config(system: &System, race: usize) -> Config {
    Config {
        center: system.center,
        doctor_host: "127.0.0.1".into(),
        framing: Framing::default(),
        username: "patient1".into(),
        password: "password111".into(),
        plan: "insurance2".into(),
        race,
        timeout: Duration::from_secs(5),
        doctors: vec![
            DoctorTarget {
                name: "doc1".into(),
                addr: system.doctor("doc1"),
                expected: Some(20),
            },
            DoctorTarget {
                name: "doc2".into(),
                addr: system.doctor("doc2"),
                expected: Some(60),
            },
        ],
        slots: Fixtures::load(&Source::built_in())
            .expect("built-in data")
            .slots,
    }
}

fn verdicts(findings: &check::Findings) -> HashMap<String, Verdict> {
    findings
        .cases
        .iter()
        .map(|c| (c.name.clone(), c.verdict))
        .collect()
}

#[test]
fn check_passes_against_medsims_own_center_and_doctors_in_each_dialect() {
    for dialect in [Dialect::Line, Dialect::Classic] {
        let system = System::start();
        let config = Config {
            framing: Framing {
                dialect,
                classic_buffer: (dialect == Dialect::Classic).then_some(100),
            },
            ..check_config(&system, 30)
        };
        let findings = check::check(&config);
        let failed: Vec<_> = findings
            .cases
            .iter()
            .filter(|c| c.verdict != Verdict::Pass)
            .collect();
        assert!(failed.is_empty(), "{dialect}: {failed:#?}");
        let names = verdicts(&findings);
        for case in [
            "auth-success",
            "auth-failure",
            "list-format",
            "booking (reserves 1 slot)",
            "taken-slot",
            "race of 30 clients for one slot (reserves 1 slot)",
            "before login: available",
            "before login: selection",
            "malformed: empty message (before any good login)",
            "empty message right after another session's good login",
            "connect and close without a word",
            "serves two sessions at once",
            "malformed: a second authenticate",
            "malformed: 64 KiB message",
            "still serves a normal session",
            "doc1 quotes insurance2",
            "doc2 refuses an unknown plan",
        ] {
            assert_eq!(names.get(case), Some(&Verdict::Pass), "{dialect}: {case}");
        }
        assert_eq!(findings.listed_free, Some(6));
        // Exactly the two slots the cases say they reserve are gone.
        assert_eq!(system.holders().len(), 2, "{dialect}");
    }
}

#[test]
fn the_check_binary_prints_each_case_and_exits_zero_on_a_good_system() {
    let system = System::start();
    let doc1 = format!("doc1={}", system.doctor("doc1"));
    let doc2 = format!("doc2={}", system.doctor("doc2").port());
    let (code, stdout, stderr) = output(bin().args([
        "check",
        "--center",
        &system.center.to_string(),
        "--doctor",
        &doc1,
        "--doctor",
        &doc2,
        "--race",
        "10",
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("slots: the cases reserve 2 (booking 1, race 1); the center listed 6 free"),
        "{stdout}"
    );
    assert!(
        support::has_check_line(&stdout, "PASS", "doc2 quotes insurance1")
            && stdout.contains("got '40'"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("summary: 49 passed, 0 failed, 0 skipped\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("password111"), "{stdout}");
}

/// A center as the buggy classic ones are: a thread per connection, and a
/// reservation that checks, pauses, then sets, with no lock across.
fn racy_center(slots: usize, doctor_port: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reserved: Arc<Vec<AtomicBool>> =
        Arc::new((0..=slots).map(|_| AtomicBool::new(false)).collect());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let reserved = Arc::clone(&reserved);
            std::thread::spawn(move || racy_session(stream, &reserved, doctor_port));
        }
    });
    addr
}

fn racy_session(stream: TcpStream, reserved: &[AtomicBool], doctor_port: u16) {
    let mut writer = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["authenticate", _, "password111"] => "success".to_owned(),
            ["authenticate", _, _] => {
                let _ = writeln!(writer, "failure");
                return;
            }
            ["available"] => {
                let free: Vec<String> = (1..reserved.len())
                    .filter(|&i| !reserved[i].load(Ordering::SeqCst))
                    .map(|i| format!("{i} Mon 10am"))
                    .collect();
                free.join(" ")
            }
            ["selection", index] => match index.parse::<usize>() {
                Ok(i) if i >= 1 && i < reserved.len() => {
                    if reserved[i].load(Ordering::SeqCst) {
                        "notavailable".to_owned()
                    } else {
                        // The bug: the check and the set are apart.
                        std::thread::sleep(Duration::from_millis(100));
                        reserved[i].store(true, Ordering::SeqCst);
                        format!("doc1 {doctor_port}")
                    }
                }
                _ => "error bad index".to_owned(),
            },
            _ => "error bad request".to_owned(),
        };
        if writeln!(writer, "{answer}").is_err() {
            return;
        }
    }
}

#[test]
fn check_reports_the_double_booking_of_a_racy_center() {
    let system = System::start();
    let racy = racy_center(6, system.doctor("doc1").port());
    let config = Config {
        center: racy,
        ..check_config(&system, 12)
    };
    let findings = check::check(&config);
    let race = findings
        .cases
        .iter()
        .find(|c| c.name.starts_with("race of 12 clients"))
        .unwrap();
    assert_eq!(race.verdict, Verdict::Fail, "{race:?}");
    assert!(
        race.evidence
            .starts_with("DOUBLE BOOKING: slot 2 given to "),
        "{}",
        race.evidence
    );
    // What it does right still passes.
    let names = verdicts(&findings);
    assert_eq!(names["auth-success"], Verdict::Pass);
    assert_eq!(names["booking (reserves 1 slot)"], Verdict::Pass);

    // The binary says so, and exits 1.
    let (code, stdout, _) = output(bin().args([
        "check",
        "--center",
        &racy.to_string(),
        "--race",
        "5",
        "--doctor",
        &format!("doc1={}", system.doctor("doc1")),
    ]));
    assert_eq!(code, 1, "{stdout}");
    let race_line = support::check_line(
        &stdout,
        "FAIL",
        "race of 5 clients for one slot (reserves 1 slot)",
    )
    .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        race_line.contains("DOUBLE BOOKING: slot 4 given to "),
        "{race_line}"
    );
}

/// A center in the style of the classic C programs: one `recv()` is one
/// message cut at its NUL; answers are 100-byte buffers with garbage after
/// the NUL; `Success` capitalised, the list one slot a line, the port
/// alone, `not available` in two words; and it never closes first.
fn classic_style_center(slots: Vec<(u64, &'static str, u16)>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let table = Arc::new(Mutex::new(
        slots
            .into_iter()
            .map(|(i, when, port)| (i, (when, port, false)))
            .collect::<std::collections::BTreeMap<_, _>>(),
    ));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let table = Arc::clone(&table);
            std::thread::spawn(move || classic_session(stream, &table));
        }
    });
    addr
}

type ClassicTable = Mutex<std::collections::BTreeMap<u64, (&'static str, u16, bool)>>;

fn classic_session(mut stream: TcpStream, table: &ClassicTable) {
    loop {
        let mut buf = [0xABu8; 100];
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["authenticate", "patient1", "password111"]
            | ["authenticate", "patient2", "password222"] => "Success".to_owned(),
            ["authenticate", ..] => "failure".to_owned(),
            ["available"] => {
                let free: String = table
                    .lock()
                    .iter()
                    .filter(|(_, (_, _, taken))| !taken)
                    .map(|(i, (when, _, _))| format!("{i} {when}\n"))
                    .collect();
                if free.is_empty() {
                    "not available".to_owned()
                } else {
                    free
                }
            }
            ["selection", index] => {
                let mut table = table.lock();
                match index.parse().ok().and_then(|i: u64| table.get_mut(&i)) {
                    Some((_, port, taken)) if !*taken => {
                        *taken = true;
                        port.to_string()
                    }
                    _ => "not available".to_owned(),
                }
            }
            _ => "error".to_owned(),
        };
        let mut out = [0xCDu8; 100];
        out[..answer.len()].copy_from_slice(answer.as_bytes());
        out[answer.len()] = 0;
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn classic_slots(system: &System) -> Vec<(u64, &'static str, u16)> {
    let doc1 = system.doctor("doc1").port();
    let doc2 = system.doctor("doc2").port();
    vec![
        (1, "Tue 01pm", doc1),
        (2, "Mon 03pm", doc2),
        (3, "Thu 02pm", doc1),
        (4, "Wed 10am", doc1),
        (5, "Sat 12pm", doc2),
        (6, "Fri 04pm", doc2),
    ]
}

#[test]
fn the_classic_dialect_client_books_at_a_classic_style_center() {
    let system = System::start();
    let classic = classic_style_center(classic_slots(&system));
    let patient = support::fixture_patient("patient2");
    for (index, outcome, cost) in [(2, Outcome::Quoted, Some(60)), (2, Outcome::Taken, None)] {
        let mut settings = Settings {
            framing: Framing {
                dialect: Dialect::Classic,
                classic_buffer: None,
            },
            ..Settings::new(classic.to_string())
        };
        let visit = patient::visit(
            &mut settings,
            &patient,
            &mut Fixed(index),
            &Console::silent(),
        );
        assert_eq!(visit.outcome, outcome);
        assert_eq!(visit.cost, cost);
        assert_eq!(
            visit.doctor, None,
            "the classic center sends the port alone"
        );
    }
}

#[test]
fn check_names_each_departure_of_a_classic_style_center() {
    let system = System::start();
    let classic = classic_style_center(classic_slots(&system));
    let config = Config {
        center: classic,
        framing: Framing {
            dialect: Dialect::Classic,
            classic_buffer: None,
        },
        timeout: Duration::from_secs(2),
        ..check_config(&system, 5)
    };
    let findings = check::check(&config);
    let case = |name: &str| {
        findings
            .cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}: {findings:#?}"))
    };
    // Read tolerantly, the semantic cases pass; each departure in wording
    // is one WARN with its evidence.
    assert_eq!(case("auth-success").verdict, Verdict::Pass);
    assert_eq!(case("auth-failure").verdict, Verdict::Pass);
    let success = case("wording: 'success'");
    assert_eq!(success.verdict, Verdict::Warn);
    assert!(
        success
            .evidence
            .starts_with("got 'Success' for a good login (first in case 'auth-success'"),
        "{}",
        success.evidence
    );
    let close = case("wording: closes after 'failure'");
    assert_eq!(close.verdict, Verdict::Warn);
    assert!(
        close
            .evidence
            .starts_with("the connection was still open 2s after 'failure'"),
        "{}",
        close.evidence
    );
    assert_eq!(case("wording: 'DOCTOR PORT'").verdict, Verdict::Warn);
    assert_eq!(
        case("race of 5 clients for one slot (reserves 1 slot)").verdict,
        Verdict::Pass
    );
    // The doctors are medsim's own: those cases pass.
    assert_eq!(case("doc2 quotes insurance2").verdict, Verdict::Pass);
}

#[test]
fn simulate_drives_a_classic_style_center_elsewhere() {
    let system = System::start();
    let classic = classic_style_center(classic_slots(&system));
    let report = sim::simulate(&sim::Options {
        patients: 10,
        choice: Choice::Random,
        seed: Some(7),
        concurrency: Some(4),
        framing: Framing {
            dialect: Dialect::Classic,
            classic_buffer: None,
        },
        center: Some(classic.to_string()),
        ..sim::Options::default()
    })
    .unwrap();
    assert!(report.ok(), "{}", sim::render(&report));
    assert_eq!(report.bookings, 6);
    assert_eq!(report.outcomes.get("quoted"), Some(&6));
    assert_eq!(report.external_center, Some(classic.to_string()));
    assert!(report.center.is_none() && report.slots.is_none());
    let rows = report.rows.as_ref().unwrap();
    // Two users, reused in turn: patient1.1, patient2.1, patient1.2, ...
    assert_eq!(rows[0].label, "patient1.1");
    assert_eq!(rows[3].label, "patient2.2");
    // The quotes were checked against the data's tables by slot.
    assert_eq!(
        report.invariants[2].detail, "6 quotes checked",
        "{:?}",
        report.invariants
    );
}

#[test]
fn simulate_against_a_center_elsewhere_races_for_one_slot() {
    let system = System::start();
    let users = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(users.path(), "patient1 password111\npatient2 password222\n").unwrap();
    // Someone else booked slot 1 first: the race is for the lowest free.
    assert_eq!(
        support::book(system.center, "patient2", "password222", 1),
        format!("doc1 {}", system.doctor("doc1").port())
    );
    let report = sim::simulate(&sim::Options {
        patients: 40,
        choice: Choice::Same,
        center: Some(system.center.to_string()),
        users: Some(users.path().to_owned()),
        ..sim::Options::default()
    })
    .unwrap();
    assert!(report.ok(), "{}", sim::render(&report));
    assert_eq!(report.bookings, 1);
    assert_eq!(report.outcomes.get("taken"), Some(&39));
    let holders = system.holders();
    assert_eq!(holders.len(), 2);
    assert_eq!(holders[1].0, 2, "the race was for slot 2, the lowest free");
    let text = sim::render(&report);
    assert!(text.starts_with(&format!(
        "medsim simulate: 40 patients, against the center at {}, choice same",
        system.center
    )));
}

#[test]
fn the_diagram_shows_every_message_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.mmd");
    let report = sim::simulate(&sim::Options {
        patients: 2,
        choice: Choice::First,
        seed: Some(1),
        concurrency: Some(1),
        diagram: Some(path.clone()),
        ..sim::Options::default()
    })
    .unwrap();
    assert!(report.ok());
    let diagram = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = diagram.lines().collect();
    assert_eq!(lines[0], "sequenceDiagram");
    assert_eq!(
        &lines[2..7],
        [
            "    participant patient1",
            "    participant patient2",
            "    participant center",
            "    participant doc1",
            "    participant doc2",
        ]
    );
    let fixtures = Fixtures::load(&Source::built_in()).unwrap();
    let first_slot = &fixtures.slots[0];
    let tcp: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("->>"))
        .collect();
    assert_eq!(
        &tcp[..6],
        [
            "    patient1->>center: authenticate patient1 ***",
            "    center->>patient1: success",
            "    patient1->>center: available",
            "    center->>patient1: 1 Tue 01pm 2 Mon 03pm 3 Thu 02pm 4 Wed 10am 5 Sat 12pm 6 Fri 04pm",
            "    patient1->>center: selection 1",
            &format!(
                "    center->>patient1: doc1 {}",
                report.rows.as_ref().unwrap()[0].visit.doctor_port.unwrap()
            ),
        ]
    );
    assert_eq!(first_slot.doctor, "doc1");
    assert_eq!(tcp.len(), 12, "six TCP messages per patient");
    let udp: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("--)"))
        .collect();
    assert_eq!(
        udp,
        [
            "    patient1--)doc1: insurance1",
            "    doc1--)patient1: 30",
            "    patient2--)doc2: insurance2",
            "    doc2--)patient2: 60",
        ]
    );
    assert!(!diagram.contains("password"), "{diagram}");
}

#[test]
fn lost_datagrams_are_drawn_and_big_runs_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.mmd");
    let report = sim::simulate(&sim::Options {
        patients: 4,
        udp_loss: 0.5,
        quote_timeout: Duration::from_millis(20),
        seed: Some(3),
        diagram: Some(path.clone()),
        ..sim::Options::default()
    })
    .unwrap();
    assert!(report.ok(), "{}", sim::render(&report));
    let diagram = std::fs::read_to_string(&path).unwrap();
    let lost = diagram.lines().filter(|l| l.contains("--x")).count() as u64;
    assert!(report.quote_retries > 0 && lost > 0, "{diagram}");

    let too_many = sim::simulate(&sim::Options {
        patients: sim::DIAGRAM_LIMIT + 1,
        diagram: Some(path),
        ..sim::Options::default()
    });
    assert_eq!(
        too_many.unwrap_err().to_string(),
        "--diagram draws at most 20 patients, not 21"
    );
}

#[test]
fn a_paced_run_prints_every_partys_phase_messages() {
    let pace_ms = 30;
    let (code, stdout, stderr) = output(bin().args([
        "simulate",
        "--patients",
        "1",
        "--seed",
        "1",
        "--pace",
        &format!("{pace_ms}ms"),
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Every party's lines, in the order things happened: each request is
    // said to be sent before its receiver says it came, and each answer
    // received after its sender says it went.
    let in_order = [
        "Phase 1: Authentication request from Patient 1 with username patient1 has been sent",
        "Phase 1: The Health Center Server has received request from a patient with username patient1.",
        "Phase 1: The Health Center Server sends the response success to patient with username patient1.",
        "Phase 1: Patient 1 authentication result: success.",
        "Phase 2: The Health Center Server, receives a request for available time slots",
        "Phase 2: The Health Center Server sends available time slots to patient with username patient1.",
        "Phase 2: The following appointments are available for Patient 1:",
        "Phase 2: The Health Center Server receives a request for appointment",
        "Phase 2: The Health Center Server confirms the following appointment",
        "Phase 2: The requested appointment is available and reserved to Patient 1.",
        "Phase 3: The cost estimation request from Patient 1 with insurance plan insurance1 has been sent",
        "Phase 3: Doctor doc1 receives the request from the patient with port number",
        "Phase 3: Patient 1 receives 30$ estimation cost from doctor with port number",
    ];
    let mut from = 0;
    for line in in_order {
        let at = stdout[from..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing or out of order in {stdout}"));
        from += at + line.len();
    }
    // The report follows the phase messages, and the four paced steps
    // (login, list, selection, quote) took at least their pauses.
    let report_at = stdout.find("medsim simulate: 1 patient,").unwrap();
    assert!(stdout[..report_at].contains("Phase 3: End of Phase 3 for Patient 1."));
    let wall: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("throughput:"))
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|l| l.trim_end_matches(" s)").parse().ok())
        .unwrap();
    assert!(wall >= 4.0 * f64::from(pace_ms) / 1e3, "{wall}");
}

#[test]
fn a_paced_demo_takes_one_patient_at_a_time_and_keeps_json_clean() {
    let (code, stdout, stderr) = output(bin().args([
        "simulate",
        "--patients",
        "2",
        "--seed",
        "5",
        "--pace",
        "5ms",
        "--json",
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: sim::Report = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report.concurrency, 1);
    assert_eq!(report.bookings, 2);
    // The phase messages went to stderr, one patient after the other.
    let first_done = stderr
        .find("Phase 3: End of Phase 3 for Patient 1.")
        .unwrap_or_else(|| panic!("{stderr}"));
    let second_starts = stderr
        .find("Phase 1: Patient 2 has TCP port number")
        .unwrap();
    assert!(first_done < second_starts, "{stderr}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, stderr) = output(bin().args(["completions", shell]));
        assert_eq!(code, 0, "{stderr}");
        for word in ["medsim", "simulate", "check", "doctor-host", "diagram"] {
            assert!(stdout.contains(word), "{shell}: no {word}");
        }
    }
    let (code, _, stderr) = output(bin().args(["completions", "tcsh"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
}
