//! The built `medsim` binary, as a person or a script runs it.

use crate::support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;

use crate::support::{Running, address_in, bin, medsim, output};
use predicates::prelude::PredicateBooleanExt as _;

/// Doctors on ephemeral ports, then a center whose data points at them:
/// the four-terminal demo of the README, minus the patients.
struct Demo {
    _dir: tempfile::TempDir,
    fixtures: String,
    center: SocketAddr,
    doctors: Running,
    center_process: Running,
}

impl Demo {
    fn start() -> Demo {
        let mut doctors = Running::spawn(&[
            "doctor",
            "--listen",
            "doc1=127.0.0.1:0",
            "--listen",
            "doc2=127.0.0.1:0",
        ]);
        let doc1 = doctors.line();
        let doc2 = doctors.line();
        assert!(
            doc1.starts_with("Phase 3: Doctor doc1 has a static UDP port "),
            "{doc1}"
        );
        assert!(
            doc2.starts_with("Phase 3: Doctor doc2 has a static UDP port "),
            "{doc2}"
        );
        let dir = tempfile::tempdir().unwrap();
        support::classic_fixtures(
            dir.path(),
            address_in(&doc1).port(),
            address_in(&doc2).port(),
        );
        let fixtures = dir.path().to_str().unwrap().to_owned();
        let mut center_process =
            Running::spawn(&["center", "--listen", "127.0.0.1:0", "--fixtures", &fixtures]);
        let first = center_process.line();
        assert!(
            first.starts_with("Phase 1: The Health Center Server has port number "),
            "{first}"
        );
        Demo {
            center: address_in(&first),
            _dir: dir,
            fixtures,
            doctors,
            center_process,
        }
    }

    fn patient(&self, extra: &[&str], stdin: &str) -> (i32, String, String) {
        let center = self.center.to_string();
        let mut child = bin()
            .args(["patient", "--center", &center, "--fixtures", &self.fixtures])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn interactive_patient_is_asked_again_after_an_invalid_choice() {
    let demo = Demo::start();
    let (code, stdout, stderr) = demo.patient(&["--name", "patient1"], "9\n1\n");
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        stdout
            .matches("Please enter the preferred appointment index and press enter:")
            .count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("'9' is not one of the listed indexes")
            .count(),
        1
    );
    assert!(
        stdout
            .contains("Phase 2: The requested appointment is available and reserved to Patient 1.")
    );
    assert!(
        stdout.contains(
            "Phase 3: Patient 1 receives 30$ estimation cost from doctor with port number"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("and name doc1."));
}

#[test]
fn the_classic_four_terminal_demo_books_both_patients() {
    let mut demo = Demo::start();
    let (code1, out1, _) = demo.patient(&["--name", "patient1"], "1\n");
    let (code2, out2, _) = demo.patient(&["--name", "patient2"], "2\n");
    assert_eq!((code1, code2), (0, 0), "{out1}\n{out2}");
    assert!(out1.contains("receives 30$ estimation cost"));
    assert!(out2.contains("receives 60$ estimation cost"));
    // The center tells its side, one line per event.
    let mut center_lines = Vec::new();
    while center_lines.len() < 12 {
        center_lines.push(demo.center_process.line());
    }
    let center_text = center_lines.join("\n");
    assert!(center_text.contains("received request from a patient with username patient1."));
    assert!(
        center_text
            .contains("confirms the following appointment 2 to patient with username patient2.")
    );
    let mut doctor_lines = Vec::new();
    while doctor_lines.len() < 4 {
        doctor_lines.push(demo.doctors.line());
    }
    assert!(
        doctor_lines
            .iter()
            .any(|l| l.contains("Doctor doc1 has sent estimated price 30$"))
    );
    assert!(
        doctor_lines
            .iter()
            .any(|l| l.contains("Doctor doc2 has sent estimated price 60$"))
    );
}

#[test]
fn scripted_patient_and_its_exit_statuses() {
    let demo = Demo::start();
    let (code, stdout, _) = demo.patient(&["--name", "patient2", "--select", "2", "--quiet"], "");
    assert_eq!((code, stdout.as_str()), (0, "60\n"));
    // The same slot again: taken.
    let (code, _, stderr) = demo.patient(&["--name", "patient1", "--select", "2", "--quiet"], "");
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("the chosen appointment was taken"),
        "{stderr}"
    );
    // A slot that does not exist: the center's error, a protocol status.
    let (code, _, stderr) = demo.patient(&["--name", "patient1", "--select", "77"], "");
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("the center says: no slot has index 77"),
        "{stderr}"
    );
}

#[test]
fn wrong_password_exits_with_the_authentication_status() {
    let demo = Demo::start();
    let (code, stdout, stderr) = demo.patient(
        &[
            "--user",
            "patient1",
            "--password",
            "wrong",
            "--insurance",
            "insurance1",
        ],
        "",
    );
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stdout.contains("Phase 1: Patient 1 authentication result: failure."));
    assert!(stderr.contains("authentication failed"));
}

#[test]
fn closing_the_prompt_cancels_without_booking() {
    let demo = Demo::start();
    let (code, stdout, _) = demo.patient(&["--name", "patient1"], "abc\n");
    assert_eq!(code, 7, "{stdout}");
    let (code, stdout, _) = demo.patient(&["--name", "patient2", "--select", "1", "--quiet"], "");
    // insurance2 at doc1 costs 20.
    assert_eq!((code, stdout.as_str()), (0, "20\n"), "slot 1 is still free");
}

#[test]
fn unreachable_center_is_a_connection_error() {
    // Bind then drop: the port is very likely closed now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, stderr) = output(bin().args([
        "patient",
        "--center",
        &format!("127.0.0.1:{port}"),
        "--select",
        "1",
    ]));
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("cannot reach the center at 127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn simulate_two_patients_as_json() {
    let (code, stdout, stderr) =
        output(bin().args(["simulate", "--patients", "2", "--json", "--seed", "7"]));
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["bookings"], 2);
    assert_eq!(report["outcomes"]["quoted"], 2);
    let invariants = report["invariants"].as_array().unwrap();
    assert_eq!(invariants.len(), 5);
    assert!(invariants.iter().all(|i| i["ok"] == true), "{stdout}");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows[0]["user"], "patient1");
    assert_eq!(rows[1]["user"], "patient2");
}

#[test]
fn simulate_three_hundred_patients_for_the_same_slot_books_one() {
    let (code, stdout, stderr) = output(bin().args([
        "simulate",
        "--patients",
        "300",
        "--choice",
        "same",
        "--json",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["bookings"], 1);
    assert_eq!(report["outcomes"]["quoted"], 1);
    assert_eq!(report["outcomes"]["taken"], 299);
    assert!(report.get("rows").is_none(), "no table past 20 patients");
}

#[test]
fn simulate_prints_a_readable_summary() {
    // One at a time, so "first" never races: slots 1 to 4 in order.
    let (code, stdout, _) = output(bin().args([
        "simulate",
        "--patients",
        "4",
        "--choice",
        "first",
        "--seed",
        "3",
        "--concurrency",
        "1",
    ]));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with(
            "medsim simulate: 4 patients, 6 slots, choice first, seed 3, concurrency 1"
        )
    );
    assert!(
        stdout.contains("\npatient   slot  doctor  cost  retries  outcome  latency\n"),
        "a table for small runs: {stdout}"
    );
    assert!(stdout.contains("outcomes:    quoted 4"), "{stdout}");
    assert!(
        stdout.contains("\npatient3     3  doc1     50$        0  quoted "),
        "{stdout}"
    );
    assert!(stdout.contains("  ok   no slot reserved twice: 4 slots booked, each once"));
    assert!(!stdout.contains("FAIL"));
}

#[test]
fn center_refuses_malformed_data_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    support::classic_fixtures(dir.path(), 41720, 42720);
    std::fs::write(
        dir.path().join("availabilities.txt"),
        "1 Tue 01pm doc1 41720\n2 Mon 03pm doc2\n",
    )
    .unwrap();
    let (code, _, stderr) = output(bin().args([
        "center",
        "--listen",
        "127.0.0.1:0",
        "--fixtures",
        dir.path().to_str().unwrap(),
    ]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains(
            "availabilities.txt line 2: expected 5 fields (INDEX DAY TIME DOCTOR PORT), found 4"
        ),
        "{stderr}"
    );
}

#[test]
fn inconsistent_data_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    support::classic_fixtures(dir.path(), 41720, 42720);
    let fixtures = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("availabilities.txt"),
        "1 Tue 01pm doc1 41720\n2 Mon 03pm doc3 43720\n",
    )
    .unwrap();
    let (code, _, stderr) = output(bin().args(["doctor", "--fixtures", fixtures]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("availabilities.txt line 2: doctor 'doc3' has no fee table"),
        "{stderr}"
    );
    std::fs::write(
        dir.path().join("availabilities.txt"),
        "1 Tue 01pm doc1 41720\n1 Mon 03pm doc2 42720\n",
    )
    .unwrap();
    let (code, _, stderr) =
        output(bin().args(["center", "--listen", "127.0.0.1:0", "--fixtures", fixtures]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("line 2: index 1 appears twice (first on line 1)"),
        "{stderr}"
    );
    std::fs::remove_file(dir.path().join("users.txt")).unwrap();
    let (code, _, stderr) =
        output(bin().args(["center", "--listen", "127.0.0.1:0", "--fixtures", fixtures]));
    assert_ne!(code, 0);
    assert!(stderr.contains("users.txt: file not found"), "{stderr}");
}

#[test]
fn a_port_in_use_is_a_start_up_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = output(bin().args(["center", "--listen", &addr]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!("binding the center on {addr}")),
        "{stderr}"
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    let (code, _, stderr) = output(bin().args([
        "doctor",
        "--only",
        "doc1",
        "--listen",
        &format!("doc1={addr}"),
    ]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!("binding doctor doc1 on {addr}")),
        "{stderr}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "center",
        "doctor",
        "patient",
        "simulate",
        "check",
        "bench",
        "completions",
    ] {
        let (code, stdout, _) = output(bin().args([sub, "--help"]));
        assert_eq!(code, 0);
        assert!(stdout.contains("Usage: medsim "), "{sub}: {stdout}");
    }
}

// ------------------------------------------- found tried as a new user ---

#[test]
fn a_closed_pipe_ends_every_printing_subcommand_quietly() {
    // `| head -1`: the reader leaves after one line.
    for command in [
        "\"$MEDSIM\" simulate --patients 5 --pace 1ms | head -1",
        "\"$MEDSIM\" simulate --patients 30 | head -1",
        "\"$MEDSIM\" completions bash | head -1",
        "\"$MEDSIM\" simulate --patients 3 --diagram - | head -1",
    ] {
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {command}")])
            .env("MEDSIM", env!("CARGO_BIN_EXE_medsim"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        assert!(!stderr.contains("failed printing"), "{command}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
    }
}

#[test]
fn runs_that_would_report_nothing_are_refused_with_the_reason() {
    medsim(&["simulate", "--patients", "0"])
        .code(1)
        .stderr("medsim: --patients must be at least 1\n");
    medsim(&["simulate", "--slots", "0"])
        .code(1)
        .stderr("medsim: --slots must be at least 1\n");
    // Help and check agree on the range of --udp-loss.
    medsim(&["simulate", "--udp-loss", "1"])
        .code(1)
        .stderr(predicates::str::contains(
            "--udp-loss must be from 0 up to, not including, 1",
        ));
    medsim(&["simulate", "--help"])
        .success()
        .stdout(predicates::str::is_match(r"from 0\s+up\s+to,\s+not\s+including,\s+1").unwrap());
}

#[test]
fn a_classic_buffer_without_the_classic_dialect_is_refused() {
    for sub in ["patient", "simulate", "check"] {
        medsim(&[sub, "--classic-buffer", "100"])
            .code(1)
            .stderr(predicates::str::contains(
                "--classic-buffer pads classic messages: add --dialect classic",
            ));
    }
}

#[test]
fn a_diagram_to_dash_goes_to_stdout_and_the_report_to_stderr() {
    let run = medsim(&[
        "simulate",
        "--patients",
        "2",
        "--seed",
        "1",
        "--diagram",
        "-",
    ])
    .success();
    let out = run.get_output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("sequenceDiagram\n"), "{stdout}");
    assert!(!stdout.contains("invariants:"), "{stdout}");
    assert!(stderr.contains("diagram:     stdout (Mermaid;"), "{stderr}");
    assert!(!std::path::Path::new("-").exists(), "no file named '-'");
    // To a file, the report says where it went and how to view it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.mmd");
    medsim(&[
        "simulate",
        "--patients",
        "2",
        "--diagram",
        file.to_str().unwrap(),
    ])
    .success()
    .stdout(predicates::str::contains(format!(
        "diagram:     {} (Mermaid; view it in a Markdown file's ```mermaid block, or at mermaid.live)",
        file.display()
    )));
}

#[test]
fn the_report_speaks_of_one_patient_as_one() {
    medsim(&["simulate", "--patients", "1", "--seed", "1"])
        .success()
        .stdout(predicates::str::starts_with(
            "medsim simulate: 1 patient, 6 slots,",
        ))
        .stdout(predicates::str::contains(
            "no slot reserved twice: 1 slot booked, each once",
        ))
        .stdout(predicates::str::contains(
            "every quote matches the doctor's table: 1 quote checked",
        ))
        .stdout(predicates::str::contains(" (1 patient in "))
        .stdout(predicates::str::contains(") (").not());
}

#[test]
fn a_lost_race_shows_its_slot_and_outcomes_read_as_words() {
    medsim(&[
        "simulate",
        "--patients",
        "3",
        "--choice",
        "same",
        "--seed",
        "4",
    ])
    .success()
    .stdout(predicates::str::is_match(r"\npatient\d +1  -  +- +0  taken +").unwrap())
    .stdout(predicates::str::contains("outcomes:    quoted 1, taken 2"))
    .stdout(predicates::str::contains("no_slots").not());
}

#[test]
fn the_patients_help_shows_its_defaults() {
    medsim(&["patient", "--help"])
        .success()
        .stdout(predicates::str::contains("[default: patient1]"))
        .stdout(predicates::str::contains("[default: 10s]"));
}

#[test]
fn the_benchs_list_defaults_show_as_they_are_typed() {
    let (code, help, stderr) = output(bin().args(["bench", "--help"]));
    assert_eq!(code, 0, "{stderr}");
    for default in [
        r"\[default: 1,8,64,256\]",
        r"\[default: 1,8\]",
        r"\[default: 1000,10000,100000\]",
        r"\[default: 1,2,4\]",
        r"\[default:\s+list,phases,booking,stores,centers,quote,scale,watched,sustained\]",
    ] {
        let pattern = predicates::str::is_match(default).unwrap();
        assert!(
            predicates::Predicate::eval(&pattern, help.as_str()),
            "{default}: {help}"
        );
    }
    assert!(!help.contains("[default: 1 8"), "{help}");
}

#[test]
fn an_empty_bench_list_skips_its_runs_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let (code, stdout, stderr) = output(bin().args([
        "bench",
        "--cases",
        "scale,quote",
        "--scale",
        "",
        "--quote-concurrency",
        "",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stderr.contains("simulate --patients"), "{stderr}");
    assert!(
        stdout.contains("\nskipped: quote: --quote-concurrency is empty\n")
            && stdout.contains("\nskipped: scale: --scale is empty\n"),
        "{stdout}"
    );
    let report: medsim::bench::Report =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(report.scale.is_empty() && report.quotes.is_empty());
    assert_eq!(
        report.skipped,
        [
            "quote: --quote-concurrency is empty",
            "scale: --scale is empty"
        ]
    );
    // The command a report names is one a shell takes back.
    assert!(
        report
            .command
            .starts_with("medsim bench --cases scale,quote --scale '' --quote-concurrency ''"),
        "{}",
        report.command
    );
    // Nothing to measure at all is refused.
    medsim(&["bench", "--cases", ""])
        .code(1)
        .stderr("medsim: --cases is empty: name at least one case to measure (see --help)\n");
}

#[test]
fn the_benchs_table_says_whose_each_latency_is_and_how_far_the_runs_swung() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let (code, stdout, stderr) = output(bin().args([
        "bench",
        "--cases",
        "quote",
        "--quote-concurrency",
        "1",
        "--seconds",
        "50ms",
        "--repeats",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: medsim::bench::Report =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let quote = &report.quotes[0];
    assert_eq!(quote.ratios.len(), 3);
    let least = quote.ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let most = quote.ratios.iter().copied().fold(0.0, f64::max);
    assert_eq!(
        (quote.ratio_spread.min, quote.ratio_spread.max),
        (least, most)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("case "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        lines[header],
        "case   conc  medsim/s  medsim p50 us  medsim p99 us  floor/s  floor p50 us  floor p99 us  \
         ratio  ratio min–max  p99 ratio  p99 min–max"
    );
    let row: Vec<&str> = lines[header + 1].split_whitespace().collect();
    assert_eq!(
        (row[8], row[9]),
        (
            format!("{:.2}", quote.ratio).as_str(),
            format!("{least:.2}–{most:.2}").as_str()
        ),
        "{stdout}"
    );
}

/// The long flags `medsim SUB --help` lists as its options (not those its
/// descriptions mention).
fn long_flags(sub: &str) -> Vec<String> {
    let (code, help, stderr) = output(bin().args([sub, "--help"]));
    assert_eq!(code, 0, "{stderr}");
    let mut flags: Vec<String> = help
        .lines()
        .filter_map(|line| {
            // Options are indented 2 (`-h, --help`) or 6 (`--flag`);
            // their wrapped descriptions, which may begin with a flag
            // they name, further.
            let trimmed = line.trim_start();
            if line.len() - trimmed.len() > 6 {
                return None;
            }
            let line = trimmed;
            // `-h, --help` or `--flag <VALUE>`.
            let line =
                line.split_once(", ").map_or(
                    line,
                    |(short, long)| {
                        if short.len() == 2 { long } else { line }
                    },
                );
            let flag = line.split([' ', '=']).next()?;
            let name = flag.strip_prefix("--")?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .then(|| flag.to_owned())
        })
        .filter(|flag| !["--help", "--version"].contains(&flag.as_str()))
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// The README's section of `medsim SUB`, up to the next heading.
fn readme_section(sub: &str) -> String {
    let readme = include_str!("../README.md");
    let heading = format!("### `medsim {sub}`");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("no {heading}"));
    let rest = &readme[start + heading.len()..];
    rest[..rest.find("\n#").unwrap_or(rest.len())].to_owned()
}

#[test]
fn the_readme_documents_every_flag_of_bench_and_check() {
    for sub in ["bench", "check"] {
        let section = readme_section(sub);
        let missing: Vec<String> = long_flags(sub)
            .into_iter()
            .filter(|flag| {
                // Named as itself, not as the start of a longer flag.
                !section.match_indices(flag.as_str()).any(|(at, _)| {
                    !section[at + flag.len()..]
                        .starts_with(|c: char| c.is_ascii_lowercase() || c == '-')
                })
            })
            .collect();
        assert!(missing.is_empty(), "{sub}: {missing:?} not in the README");
    }
}
