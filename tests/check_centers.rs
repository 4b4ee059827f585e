//! `check` against fake classic centers and doctors, one defect or
//! departure each, and against medsim's own servers: each gets its exact
//! verdicts (issue 10).

use crate::support;
use crate::support::fakes;

use std::time::Duration;

use crate::support::System;
use medsim::check::{self, Config, DoctorTarget, Findings, Settings, Verdict};
use medsim::data::{Fixtures, Source};
use medsim::protocol::Dialect;
use medsim::protocol::Framing;

fn config(system: &System, center: std::net::SocketAddr, race: usize) -> Config {
    Config {
        center,
        doctor_host: "127.0.0.1".into(),
        framing: Framing {
            dialect: Dialect::Classic,
            classic_buffer: None,
        },
        username: "patient1".into(),
        password: "password111".into(),
        plan: "insurance1".into(),
        race,
        timeout: Duration::from_secs(3),
        doctors: vec![
            DoctorTarget {
                name: "doc1".into(),
                addr: system.doctor("doc1"),
                expected: Some(30),
            },
            DoctorTarget {
                name: "doc2".into(),
                addr: system.doctor("doc2"),
                expected: Some(40),
            },
        ],
        slots: Fixtures::load(&Source::built_in())
            .expect("built-in data")
            .slots,
    }
}

/// Every case that did not pass, as (id, verdict).
fn not_passed(findings: &Findings) -> Vec<(&str, Verdict)> {
    findings
        .cases
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| (c.id.as_str(), c.verdict))
        .collect()
}

fn evidence<'f>(findings: &'f Findings, id: &str) -> &'f str {
    &findings
        .cases
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no case {id}: {findings:#?}"))
        .evidence
}

fn fake(system: &System) -> fakes::Center {
    fakes::Center::good(system.doctor("doc1").port(), system.doctor("doc2").port())
}

fn run(config: &Config) -> Findings {
    let findings = check::check(config);
    eprintln!("{findings:#?}");
    findings
}

#[test]
fn a_good_classic_center_passes_every_case() {
    let system = System::start();
    let center = fake(&system).serve();
    let findings = run(&config(&system, center, 8));
    assert_eq!(not_passed(&findings), vec![]);
    assert_eq!(findings.listed_free, Some(6));
}

#[test]
fn a_center_granting_by_a_port_alone_under_a_race_is_a_double_booking() {
    let system = System::start();
    let center = fakes::Center {
        racy: true,
        port_alone: true,
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 8));
    assert_eq!(
        not_passed(&findings),
        vec![
            ("race/one-slot", Verdict::Fail),
            ("wording/grant", Verdict::Warn)
        ]
    );
    let race = evidence(&findings, "race/one-slot");
    assert!(
        race.starts_with("DOUBLE BOOKING: slot 2 given to 8 clients (client 1 got '"),
        "{race}"
    );
    let port = system.doctor("doc2").port();
    assert!(race.contains(&format!("client 8 got '{port}'")), "{race}");
    assert!(evidence(&findings, "wording/grant").starts_with(&format!(
        "got '{}' for a slot granted",
        system.doctor("doc1").port()
    )));
}

#[test]
fn a_shared_authenticated_flag_lets_bad_credentials_in() {
    let system = System::start();
    let center = fakes::Center {
        shared_flag: true,
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 4));
    // Refused before anyone logged in; let in after.
    assert_eq!(
        not_passed(&findings),
        vec![("auth/shared-flag", Verdict::Fail)]
    );
    assert_eq!(
        evidence(&findings, "auth/shared-flag"),
        "sent 'authenticate medsim-check-nobody ***', got 'success', an unknown user was let in \
         while another session was logged in (an 'authenticated' flag shared by all sessions?)"
    );
}

#[test]
fn a_center_that_books_without_login_fails_before_login_selection() {
    let system = System::start();
    let center = fakes::Center {
        books_without_login: true,
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 4));
    assert_eq!(
        not_passed(&findings),
        vec![("login/selection", Verdict::Fail)]
    );
    let port = system.doctor("doc2").port();
    assert_eq!(
        evidence(&findings, "login/selection"),
        format!(
            "sent 'available', got 'error unexpected 'available'', sent 'selection 6', got 'doc2 {port}', \
             BOOKED WITHOUT LOGIN: slot 6 granted on a connection that never logged in"
        )
    );
}

#[test]
fn lists_one_per_line_or_without_the_seeds_trailing_space_warn_and_every_case_runs() {
    for list in [fakes::ListForm::PerLine, fakes::ListForm::Single] {
        let system = System::start();
        let center = fakes::Center {
            list,
            ..fake(&system)
        }
        .serve();
        let findings = run(&config(&system, center, 4));
        assert_eq!(
            not_passed(&findings),
            vec![("wording/list", Verdict::Warn)],
            "{list:?}"
        );
    }
}

#[test]
fn a_greeting_and_capitalised_words_warn() {
    let system = System::start();
    let center = fakes::Center {
        greeting: Some("53124"),
        success: "Success",
        not_available: "not available",
        closes_after_failure: false,
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 4));
    assert_eq!(
        not_passed(&findings),
        vec![
            ("wording/success", Verdict::Warn),
            ("wording/notavailable", Verdict::Warn),
            ("wording/greeting", Verdict::Warn),
            ("wording/close-after-failure", Verdict::Warn),
        ]
    );
    assert!(
        evidence(&findings, "wording/success")
            .starts_with("got 'Success' for a good login (first in case 'auth-success'; "),
        "{findings:#?}"
    );
    assert!(
        evidence(&findings, "wording/greeting").starts_with(
            "the center sent '53124' before any request (first in case 'auth-failure'"
        )
    );
}

#[test]
fn a_doctor_that_dies_on_an_unknown_plan_is_named_and_not_passed() {
    let system = System::start();
    let dying = fakes::doctor(&[("insurance1", 30), ("insurance2", 20)], true);
    let center = fakes::Center::good(dying.port(), system.doctor("doc2").port()).serve();
    let mut config = config(&system, center, 4);
    config.doctors[0].addr = dying;
    let findings = run(&config);
    // Not passed as "dropped", and doc2 is not blamed.
    assert_eq!(
        not_passed(&findings),
        vec![
            ("doctor/doc1/unknown-plan", Verdict::Fail),
            ("doctor/doc1/empty-datagram", Verdict::Blocked),
            ("doctor/doc1/plan-prefix", Verdict::Blocked)
        ]
    );
    assert!(
        evidence(&findings, "doctor/doc1/unknown-plan").starts_with(&format!(
            "doctor doc1 is gone (nothing holds {dying} any more) on the datagram \
             'medsim-check-no-such-plan' to doc1; check did not start it, so the cases after this one \
             cannot run; the case: sent 'medsim-check-no-such-plan', no answer (dropped)"
        )),
        "{findings:#?}"
    );
}

#[test]
fn medsims_own_servers_pass_in_both_dialects_and_one_free_slot_is_an_incomplete_check() {
    for dialect in [Dialect::Line, Dialect::Classic] {
        for held in [0, 5] {
            let system = System::start_custom(|options| {
                options.holders = (1..=held).map(|i| (i, "someone".to_owned())).collect();
            });
            let mut config = config(&system, system.center, 6);
            config.framing.dialect = dialect;
            let findings = check::check_with(&config, &Settings::default());
            let failed: Vec<_> = findings
                .cases
                .iter()
                .filter(|c| !matches!(c.verdict, Verdict::Pass | Verdict::Skip | Verdict::Blocked))
                .collect();
            assert!(failed.is_empty(), "{dialect} {held}: {failed:#?}");
            assert_eq!(findings.listed_free, Some(6 - held as usize));
            let not_run: Vec<_> = findings
                .cases
                .iter()
                .filter(|c| c.verdict == Verdict::Blocked)
                .map(|c| c.id.as_str())
                .collect();
            if held == 0 {
                assert!(not_run.is_empty(), "{not_run:?}");
                assert!(!findings.failed(false));
            } else {
                // The booking takes the last slot: what needs one cannot
                // run, and the check is incomplete, so it fails (issue 15).
                assert_eq!(
                    not_run,
                    [
                        "race/one-slot",
                        "malformed/selection-abc",
                        "malformed/selection-0",
                        "malformed/selection-negative",
                        "malformed/selection-64-bits",
                        "malformed/selection-missing"
                    ]
                );
                assert_eq!(
                    evidence(&findings, "malformed/selection-abc"),
                    "not run: no free slot: the center answers 'notavailable' and closes, so no selection can follow"
                );
                assert!(findings.failed(false), "an incomplete check fails");
                let summary = check::render(&config, &[], &findings, false);
                assert!(
                    summary.contains("incomplete: 6 cases could not run, the race among them (no free slot left to race for"),
                    "{summary}"
                );
                let gradescope: serde_json::Value =
                    serde_json::from_str(&check::gradescope(&findings, false, &[])).expect("JSON");
                let race = gradescope["tests"]
                    .as_array()
                    .expect("tests")
                    .iter()
                    .find(|t| t["name"].as_str().is_some_and(|n| n.starts_with("race/")))
                    .expect("the race is listed");
                assert_eq!(
                    (race["score"].as_f64(), race["status"].as_str()),
                    (Some(0.0), Some("failed"))
                );
                let junit = check::junit(&findings, false, Duration::from_secs(1));
                assert!(junit.contains("errors=\"6\""), "{junit}");
            }
        }
    }
}

#[test]
fn cases_are_chosen_by_id_and_prefix() {
    let system = System::start();
    let config = config(&system, system.center, 4);
    let settings = Settings {
        cases: vec!["auth".into(), "race/one-slot".into()],
        skip: vec!["auth/shared-flag".into(), "auth/after-login".into()],
        ..Settings::default()
    };
    let findings = check::check_with(&config, &settings);
    let ids: Vec<&str> = findings.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "auth/bad-password",
            "auth/unknown-user",
            "auth/list-after-failure",
            "auth/select-after-failure",
            "auth/success",
            "auth/second-authenticate",
            "race/one-slot",
        ]
    );
}

#[test]
fn simulate_choice_same_releases_its_patients_together_and_catches_a_racy_center() {
    let system = System::start();
    let racy = fakes::Center {
        racy: true,
        ..fake(&system)
    }
    .serve();
    let report = medsim::sim::simulate(&medsim::sim::Options {
        patients: 8,
        choice: medsim::sim::Choice::Same,
        concurrency: Some(8),
        framing: Framing {
            dialect: Dialect::Classic,
            classic_buffer: None,
        },
        center: Some(racy.to_string()),
        ..medsim::sim::Options::default()
    })
    .unwrap();
    assert!(!report.ok(), "{}", medsim::sim::render(&report));
    assert!(report.bookings > 1, "{}", medsim::sim::render(&report));
}

#[test]
fn simulate_holds_every_grant_to_the_slots_doctor_and_port_in_the_data() {
    let system = System::start();
    let doc2 = system.doctor("doc2").port();
    let mut center = fake(&system);
    // Slot 1 is doc1's in the data; this center grants it as doc2's.
    center.slots[0] = (1, "Tue", "01pm", "doc2", doc2);
    let report = medsim::sim::simulate(&medsim::sim::Options {
        patients: 6,
        choice: medsim::sim::Choice::First,
        concurrency: Some(1),
        framing: Framing {
            dialect: Dialect::Classic,
            classic_buffer: None,
        },
        center: Some(center.serve().to_string()),
        doctors: medsim::client::DoctorOverrides {
            host: None,
            by_name: vec![
                ("doc1".into(), system.doctor("doc1").to_string()),
                ("doc2".into(), system.doctor("doc2").to_string()),
            ],
        },
        ..medsim::sim::Options::default()
    })
    .unwrap();
    let rendered = medsim::sim::render(&report);
    assert!(!report.ok(), "{rendered}");
    assert!(
        rendered.contains(&format!(
            "FAIL every grant names the slot's doctor and port: patient1.1 was granted slot 1 as doc2 {doc2}, but it is doc1's at port 41720 in the data"
        )),
        "{rendered}"
    );
}

#[test]
fn a_race_spreads_over_every_center_given_and_one_wins() {
    // Two centers of one process on one table: the store is what they
    // share, as separate processes on a database would.
    let system = medsim::system::System::start({
        let fixtures = medsim::data::Fixtures::load(&medsim::data::Source::built_in()).unwrap();
        let mut options = medsim::system::Options::from_fixtures(&fixtures);
        options.centers = 2;
        options
    })
    .unwrap();
    let centers = system.centers();
    let doc1 = system.doctor("doc1").unwrap();
    let doc2 = system.doctor("doc2").unwrap();
    let (code, stdout, stderr) = support::output(support::bin().args([
        "check",
        "--center",
        &centers[0].to_string(),
        "--center",
        &centers[1].to_string(),
        "--race",
        "20",
        "--cases",
        "race",
        "--doctor",
        &format!("doc1={doc1}"),
        "--doctor",
        &format!("doc2={doc2}"),
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "medsim check: centers {}, {} ",
            centers[0], centers[1]
        )),
        "{stdout}"
    );
    let race = support::check_line(
        &stdout,
        "PASS",
        "race of 20 clients for one slot (reserves 1 slot)",
    )
    .unwrap_or_else(|| panic!("{stdout}"));
    assert!(race.contains(": 1 granted ("), "{race}");
    assert!(race.contains("19 got 'notavailable'"), "{race}");
    assert_eq!(system.holders().unwrap().len(), 1);
}

// Fakes of what the real C programs were seen to do (issue 15), each with
// check's exact verdicts.

#[test]
fn the_seeds_fixed_answer_buffer_is_stale_padding_never_the_next_answer() {
    let system = System::start();
    let center = fakes::Center {
        stale_tail: Some(b"send\0\0\0\0\0Pha"),
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 4));
    assert_eq!(
        not_passed(&findings),
        vec![("wording/padding", Verdict::Warn)]
    );
    assert!(
        evidence(&findings, "wording/padding").starts_with(
            "after 'error empty message' came 12 more bytes before the next request: 'send\\0\\0\\0\\0\\0Pha'"
        ),
        "{findings:#?}"
    );
}

#[test]
fn credentials_kept_from_the_last_login_are_a_login_bypass_right_after_a_good_login() {
    let system = System::start();
    let center = fakes::Center {
        last_credentials: true,
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 4));
    let failed: Vec<&str> = findings
        .cases
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        failed,
        // `authenticate someone` keeps the last password but not its user.
        [
            "auth/after-login/empty",
            "auth/after-login/authenticate-0-args"
        ]
    );
    assert!(
        evidence(&findings, "auth/after-login/empty").starts_with(
            "LOGIN BYPASS right after another session's good login (on fresh state it did not, \
             malformed/empty: the last credentials kept for everyone?): sent '', got 'success', \
             let in without valid credentials"
        ),
        "{findings:#?}"
    );
}

#[test]
fn a_center_taking_only_a_bare_index_is_booked_in_its_form_and_its_race_found() {
    let system = System::start();
    let center = fakes::Center {
        bare_index: true,
        racy: true,
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 8));
    let book = evidence(&findings, "book/first");
    assert!(
        book.contains(
            "the center takes a bare index as the selection, not PROTOCOL.md's 'selection 1'"
        ),
        "{book}"
    );
    let race = evidence(&findings, "race/one-slot");
    assert!(
        race.starts_with("DOUBLE BOOKING: slot 2 given to"),
        "{race}"
    );
    let verdicts: Vec<_> = not_passed(&findings)
        .into_iter()
        .filter(|(id, _)| id.starts_with("book/") || id.starts_with("race/"))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("book/first", Verdict::Warn),
            ("race/one-slot", Verdict::Fail)
        ]
    );
}

#[test]
fn a_center_serving_one_session_at_a_time_is_said_and_never_failed_for_it() {
    let system = System::start();
    let center = fakes::Center {
        iterative: true,
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 4));
    assert_eq!(
        not_passed(&findings),
        vec![("session/concurrent", Verdict::Warn)]
    );
    assert!(
        evidence(&findings, "race/one-slot").starts_with(
            "the center serves one session at a time, so the clients took turns: slot 2: 1 granted"
        ),
        "{findings:#?}"
    );
}

#[test]
fn a_grant_naming_another_doctor_than_the_data_fails() {
    let system = System::start();
    let (doc1, doc2) = (system.doctor("doc1").port(), system.doctor("doc2").port());
    let mut center = fake(&system);
    center.slots[0] = (1, "Tue", "01pm", "doc2", doc2);
    let findings = run(&config(&system, center.serve(), 4));
    let _ = doc1;
    assert_eq!(not_passed(&findings), vec![("book/first", Verdict::Fail)]);
    assert!(
        evidence(&findings, "book/first").ends_with(&format!(
            "WRONG GRANT: slot 1 is doc1's at port 41720 in the data, but the center granted 'doc2 {doc2}'"
        )),
        "{findings:#?}"
    );
}

#[test]
fn a_grant_with_text_after_a_newline_is_read_as_sscanf_reads_it() {
    let system = System::start();
    let center = fakes::Center {
        grant_tail: Some("\n\u{1}2"),
        ..fake(&system)
    }
    .serve();
    let findings = run(&config(&system, center, 4));
    assert_eq!(
        not_passed(&findings),
        vec![("wording/grant", Verdict::Warn)]
    );
}

#[test]
fn a_center_answering_ok_to_everything_passes_no_case_that_needs_an_answer() {
    let system = System::start();
    let findings = run(&config(&system, fakes::ok_center(), 4));
    for id in [
        "auth/select-after-failure",
        "auth/success",
        "list/format",
        "book/first",
    ] {
        let case = findings.cases.iter().find(|c| c.id == id).expect(id);
        assert_ne!(case.verdict, Verdict::Pass, "{case:#?}");
    }
}

#[test]
fn doctors_comparing_the_plan_exactly_are_asked_in_the_chosen_dialect() {
    let system = System::start();
    let doc1 = fakes::exact_doctor(&[("insurance1", 30), ("insurance2", 20)]);
    let center = fakes::Center::good(doc1.port(), system.doctor("doc2").port()).serve();
    let mut config = config(&system, center, 4);
    config.doctors[0].addr = doc1;
    let findings = run(&config);
    let doctor: Vec<_> = findings
        .cases
        .iter()
        .filter(|c| c.id.starts_with("doctor/doc1/"))
        .map(|c| (c.id.as_str(), c.verdict))
        .collect();
    assert_eq!(
        doctor,
        [
            ("doctor/doc1/quote", Verdict::Pass),
            ("doctor/doc1/unknown-plan", Verdict::Fail),
            ("doctor/doc1/empty-datagram", Verdict::Blocked),
            ("doctor/doc1/plan-prefix", Verdict::Blocked)
        ]
    );
}

/// Issue 15 (a real center): the login needs its newline, so check's
/// sessions go in lines; without a login, lines get silence but C strings
/// are served. The no-login cases walk both framings and find the list
/// and the booking.
#[test]
fn a_center_serving_c_strings_without_a_login_is_caught_though_its_login_needs_lines() {
    let system = System::start();
    let center = fakes::Center {
        login_needs_newline: true,
        serves_c_strings_without_login: true,
        closes_after_failure: false,
        ..fake(&system)
    }
    .serve();
    let mut config = config(&system, center, 4);
    config.timeout = Duration::from_millis(500);
    let findings = run(&config);
    let verdict = |id: &str| {
        findings
            .cases
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.verdict)
    };
    assert_eq!(verdict("auth/success"), Some(Verdict::Warn));
    assert_eq!(verdict("login/available"), Some(Verdict::Fail));
    assert_eq!(verdict("login/selection"), Some(Verdict::Fail));
    let booked = evidence(&findings, "login/selection");
    assert!(
        booked.starts_with(
            "sessions go in lines here (the login needs its newline), but without a login the \
             center also serves the configured framing (classic); in lines: "
        ) && booked.contains("BOOKED WITHOUT LOGIN: slot "),
        "{booked}"
    );
    assert!(
        evidence(&findings, "login/available")
            .contains("slots listed on a connection that never logged in"),
        "{findings:#?}"
    );
}

/// Issue 15.14: a classic center checked without `--dialect classic`
/// refuses the login sent as a line (it compares the newline with the
/// password) and answers C strings: check finds that the login goes as a
/// C string, says so once, and every other case runs in that form instead
/// of failing for want of a login.
#[test]
fn a_classic_center_checked_in_lines_is_checked_in_c_strings_after_one_warn() {
    let system = System::start();
    let center = fakes::Center {
        login_refuses_newline: true,
        ..fake(&system)
    }
    .serve();
    let mut config = config(&system, center, 4);
    config.framing.dialect = Dialect::Line;
    let findings = run(&config);
    assert_eq!(
        not_passed(&findings),
        vec![
            ("auth/success", Verdict::Warn),
            ("wording/framing", Verdict::Warn)
        ]
    );
    assert!(
        evidence(&findings, "auth/success").ends_with(
            "got 'success': the center speaks the classic dialect, so check goes on sending C \
             strings (give --dialect classic)"
        ),
        "{findings:#?}"
    );
}

/// Issue 15.14: a doctor that compares the plan as a C string, checked in
/// lines (the center speaking lines), is silent to `insurance1\n`: check
/// asks it again as a C string, says so, and judges it in that form.
#[test]
fn a_classic_doctor_checked_in_lines_is_asked_in_c_strings_after_one_warn() {
    let system = System::start();
    // Silent to anything but the plan as a C string (no newline).
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let doc1 = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let plan = buf[..n].split(|&b| b == 0).next().unwrap_or_default();
            if plan == b"insurance1" {
                let _ = socket.send_to(b"30\0", from);
            }
        }
    });
    let center = fakes::Center::good(doc1.port(), system.doctor("doc2").port()).serve();
    let mut config = config(&system, center, 4);
    config.framing.dialect = Dialect::Line;
    config.doctors[0].addr = doc1;
    let settings = Settings {
        cases: vec!["doctor/doc1/quote".into()],
        ..Settings::default()
    };
    let findings = check::check_with(&config, &settings);
    eprintln!("{findings:#?}");
    assert_eq!(
        not_passed(&findings),
        vec![("doctor/doc1/quote", Verdict::Warn)]
    );
    assert_eq!(
        evidence(&findings, "doctor/doc1/quote"),
        "sent 'insurance1' as a line, no answer; as a C string: '30': the doctor speaks the \
         classic dialect, so check goes on sending C strings (give --dialect classic)"
    );
}
