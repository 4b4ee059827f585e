//! `check`'s flags as a new user met them: names of cases refused or
//! taken alike by `--cases`, `--skip` and `--weights`; `--weights` only
//! with `--gradescope`; `--strict`'s summary agreeing with its exit
//! status; each JUnit case's time; the JSON's target and summary.

use crate::support::fakes;

use std::net::TcpListener;

use crate::support::{System, bin, output};

/// A loopback address where nothing listens: a check that got past its
/// flags would find nothing there (and never a real center's port).
fn nowhere() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `check` against `center` with the doctors of `system`, and `extra`.
fn check(system: &System, center: &str, extra: &[&str]) -> (i32, String, String) {
    output(
        bin()
            .args(["check", "--center", center, "--race", "2"])
            .args(["--doctor", &format!("doc1={}", system.doctor("doc1"))])
            .args(["--doctor", &format!("doc2={}", system.doctor("doc2"))])
            .args(extra),
    )
}

const IDS_HINT: &str = "ids are like auth/bad-password, race/one-slot, malformed/empty \
     (a beginning of one names every id it begins at a '/', or in the last part; \
     --json lists them all)";

#[test]
fn a_name_that_is_no_cases_is_refused_alike_by_cases_skip_and_weights() {
    let center = nowhere();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.json");
    let results = results.to_str().unwrap();
    for (flags, refused) in [
        (vec!["--cases", "auth,nosuch"], "--cases nosuch"),
        (vec!["--skip", "nosuch"], "--skip nosuch"),
        (
            vec!["--gradescope", results, "--weights", "race=5,nosuch=5"],
            "--weights nosuch",
        ),
        // A middle part is never cut short: doc1 is a doctor's whole name.
        (vec!["--cases", "doctor/doc"], "--cases doctor/doc"),
    ] {
        let (code, stdout, stderr) = output(
            bin()
                .args(["check", "--center", &center])
                .args(["--doctor", "doc1=127.0.0.1:9"])
                .args(&flags),
        );
        let pattern = refused.split(' ').nth(1).unwrap();
        assert_eq!(
            (code, stdout.as_str(), stderr),
            (
                2,
                "",
                format!("{refused}: no case id is or begins with '{pattern}': {IDS_HINT}\n")
            ),
            "{flags:?}"
        );
    }
    assert!(
        !std::path::Path::new(results).exists(),
        "refused before anything ran"
    );
    // Names that are cases, but no case left: refused the same way.
    let (code, _, stderr) = output(bin().args([
        "check", "--center", &center, "--cases", "auth", "--skip", "auth",
    ]));
    assert_eq!(
        (code, stderr),
        (
            2,
            format!("no case is selected by --cases auth --skip auth: {IDS_HINT}\n")
        )
    );
}

#[test]
fn weights_without_gradescope_are_refused() {
    let (code, stdout, stderr) =
        output(bin().args(["check", "--center", &nowhere(), "--weights", "race=5"]));
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: the following required arguments were not provided:\n  --gradescope <FILE>\n"
        ),
        "{stderr}"
    );
    let (_, help, _) = output(bin().args(["check", "--help"]));
    assert!(
        help.contains("Points per case for --gradescope (needs it)"),
        "{help}"
    );
}

#[test]
fn a_cut_short_last_part_names_its_case_in_cases_and_weights_and_each_case_is_timed() {
    let system = System::start();
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let gradescope = dir.path().join("results.json");
    let (code, stdout, stderr) = check(
        &system,
        &system.center.to_string(),
        &[
            "--cases",
            "race/one,session/silent,doctor/doc1/q",
            "--gradescope",
            gradescope.to_str().unwrap(),
            "--weights",
            "race/one=5,doctor/doc1/=2",
            "--junit",
            junit.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["session/silent-close", "race/one-slot", "doctor/doc1/quote"]
    );

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&gradescope).unwrap()).unwrap();
    let points: Vec<f64> = results["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["max_score"].as_f64().unwrap())
        .collect();
    assert_eq!(points, [1.0, 5.0, 2.0]);

    // Each testcase has its own time, in seconds, and they add up to no
    // more than the suite's.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let times: Vec<f64> = xml
        .lines()
        .filter(|l| l.trim_start().starts_with("<testcase "))
        .map(|l| {
            let time = l.split(" time=\"").nth(1).unwrap_or_else(|| panic!("{l}"));
            time[..time.find('"').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(times.len(), 3, "{xml}");
    let suite: f64 = {
        let time = xml.split("<testsuite ").nth(1).unwrap();
        let time = time.split(" time=\"").nth(1).unwrap();
        time[..time.find('"').unwrap()].parse().unwrap()
    };
    assert!(times.iter().sum::<f64>() <= suite + 0.002, "{xml}");
    // The race alone waits for 2 clients to log in, list and select: it
    // takes longer than the quote of one datagram.
    assert!(times[1] > times[2], "{xml}");
    for (case, time) in report["cases"].as_array().unwrap().iter().zip(&times) {
        let seconds = case["seconds"].as_f64().unwrap();
        assert!((seconds - time).abs() < 0.001, "{case} {time}");
    }
}

#[test]
fn the_json_names_what_was_checked_and_sums_up_as_the_exit_status_does() {
    let system = System::start();
    let center = system.center.to_string();
    let (code, stdout, stderr) = check(
        &system,
        &center,
        &[
            "--cases",
            "session/silent-close",
            "--json",
            "--dialect",
            "classic",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["target"],
        serde_json::json!({
            "centers": [center],
            "dialect": "classic",
            "user": "patient1",
            "doctor_host": "127.0.0.1",
            "doctors": [
                {"name": "doc1", "addr": system.doctor("doc1").to_string()},
                {"name": "doc2", "addr": system.doctor("doc2").to_string()},
            ],
        })
    );
    assert_eq!(
        report["summary"],
        serde_json::json!({
            "passed": 1, "warned": 0, "failed": 0, "not_run": 0, "skipped": 0,
            "strict": false, "warnings_counted_as_failures": 0,
            "verdict": "pass", "exit_code": 0
        })
    );
    assert_eq!(report["listed_free"], serde_json::Value::Null);
}

#[test]
fn under_strict_a_warning_is_a_failure_in_the_summary_as_in_the_exit_status() {
    let system = System::start();
    // A center that lists one slot a line: a wording WARN, nothing worse.
    let center = fakes::Center {
        list: fakes::ListForm::PerLine,
        ..fakes::Center::good(system.doctor("doc1").port(), system.doctor("doc2").port())
    }
    .serve()
    .to_string();
    let cases = ["--dialect", "classic", "--cases", "list,wording/list"];
    let (code, stdout, stderr) = check(&system, &center, &cases);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("summary: 1 passed, 1 warned, 0 failed, 0 skipped\n"),
        "{stdout}"
    );

    let strict = [&cases[..], &["--strict"]].concat();
    let (code, stdout, stderr) = check(&system, &center, &strict);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.ends_with(
            "summary: 1 passed, 1 warned, 0 failed, 0 skipped; \
             1 warning counted as a failure (--strict)\n"
        ),
        "{stdout}"
    );

    let json = [&strict[..], &["--json"]].concat();
    let (code, stdout, stderr) = check(&system, &center, &json);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["summary"],
        serde_json::json!({
            "passed": 1, "warned": 1, "failed": 0, "not_run": 0, "skipped": 0,
            "strict": true, "warnings_counted_as_failures": 1,
            "verdict": "fail", "exit_code": 1
        })
    );
}
