//! A small run of `medsim bench`, so the benchmark cannot rot: every case
//! runs, answers every session, and writes its report. The figures
//! themselves are not asserted (a shared machine makes them noise here);
//! docs/PERFORMANCE.md holds a full run.
//!
//! The postgres rows need `MEDSIM_TEST_POSTGRES` (see
//! `tests/support/postgres.rs`): without it they are skipped, and the bench
//! is expected to say so in its report.

use crate::support::postgres as postgres_support;

use medsim::bench::Report;

use crate::support::{bin, output};

#[test]
fn a_tenth_of_a_second_per_case_runs_everything_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let postgres = postgres_support::server_url("bench: postgres rows");
    let mut command = bin();
    command.arg("bench");
    if let Some(url) = &postgres {
        command.args(["--postgres", url]);
    }
    let (code, stdout, stderr) = output(command.args([
        "--seconds",
        "0.1",
        "--repeats",
        "1",
        "--concurrency",
        "1,4",
        "--quote-concurrency",
        "2",
        "--scale",
        "300",
        "--sustained",
        "3000",
        "--centers",
        "1,2",
        "--centers-concurrency",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "case         conc  medsim/s  medsim p50 us  medsim p99 us  floor/s  floor p50 us  floor p99 us  ratio"
        ),
        "{stdout}"
    );
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let cases: Vec<(&str, usize)> = report
        .center
        .iter()
        .map(|p| (p.case.as_str(), p.concurrency))
        .collect();
    assert_eq!(
        cases,
        [
            ("list", 1),
            ("list", 4),
            ("list+phases", 1),
            ("list+phases", 4),
            ("booking", 1),
            ("booking", 4)
        ]
    );
    assert_eq!(report.quotes.len(), 1);

    let stores: Vec<(&str, usize)> = report
        .stores
        .iter()
        .map(|p| (p.case.as_str(), p.concurrency))
        .collect();
    // Per concurrency: the memory store, then each store on disk held to it.
    let mut expected = vec![
        ("booking memory", 1),
        ("booking sqlite", 1),
        ("booking memory", 4),
        ("booking sqlite", 4),
    ];
    if postgres.is_some() {
        expected.insert(2, ("booking postgres", 1));
        expected.push(("booking postgres", 4));
        let centers: Vec<usize> = report.centers.iter().map(|c| c.centers).collect();
        assert_eq!(centers, [1, 2], "{stdout}");
        for row in &report.centers {
            assert!(row.run.bookings > 0, "{row:?}");
            assert_eq!(row.run.errors, 0, "{row:?}");
        }
        assert!(
            stdout.contains("centers on one PostgreSQL database"),
            "{stdout}"
        );
    } else {
        assert!(report.centers.is_empty());
        assert!(
            report.skipped.iter().any(|s| s.starts_with("postgres: ")),
            "{:?}",
            report.skipped
        );
        assert!(stdout.contains("skipped: postgres: "), "{stdout}");
    }
    assert_eq!(stores, expected);
    assert!(stdout.contains("booking path per store"), "{stdout}");

    for pair in report
        .center
        .iter()
        .chain(&report.stores)
        .chain(&report.quotes)
    {
        for side in [&pair.medsim, &pair.floor] {
            assert!(side.sessions > 0, "{pair:?}");
            assert_eq!(side.errors, 0, "{pair:?}");
        }
        assert!(pair.ratio > 0.0, "{pair:?}");
    }
    for pair in report.stores.iter().filter(|p| p.case == "booking memory") {
        assert_eq!(
            pair.ratio, 1.0,
            "the memory store is held to itself: {pair:?}"
        );
        assert_eq!(pair.medsim.commits, 0, "{pair:?}");
    }
    for pair in report.stores.iter().filter(|p| p.case != "booking memory") {
        assert!(pair.medsim.bookings > 0, "{pair:?}");
        // Every booking on disk went through a commit; a commit may carry
        // several.
        assert!(
            pair.medsim.commits > 0
                && pair.medsim.commits <= pair.medsim.bookings + pair.medsim.sessions,
            "{pair:?}"
        );
    }
    assert!(report.disk_fsyncs_per_second.is_some_and(|r| r > 0.0));
    assert!(stdout.contains("the disk alone: "), "{stdout}");
    assert!(
        stdout.contains("vs memory    min–max  p99 vs memory  p99 min–max  per commit  commits/s"),
        "{stdout}"
    );

    let scale = &report.scale[0];
    assert_eq!(scale.patients, 300);
    assert!(scale.invariants_ok, "{scale:?}");
    assert!(scale.peak_rss_mib.unwrap() > 0.0);

    let sustained = report.sustained.as_ref().unwrap();
    assert_eq!(sustained.sessions, 3000, "{sustained:?}");
    assert_eq!(sustained.errors, 0);
    assert_eq!(
        sustained.samples.len(),
        3,
        "start, middle and end: {sustained:?}"
    );
    assert!(sustained.samples.iter().all(|s| s.threads >= 1));
}
