//! A small run of `medsim bench`, so the benchmark cannot rot: every case
//! runs, answers every session, and writes its report. The figures
//! themselves are not asserted (a shared machine makes them noise here);
//! docs/PERFORMANCE.md holds a full run.

mod support;

use support::{bin, output};

#[test]
fn a_tenth_of_a_second_per_case_runs_everything_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let (code, stdout, stderr) = output(bin().args([
        "bench",
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
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("case          conc  medsim/s"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let center = report["center"].as_array().unwrap();
    let cases: Vec<(&str, u64)> = center
        .iter()
        .map(|p| {
            (
                p["case"].as_str().unwrap(),
                p["concurrency"].as_u64().unwrap(),
            )
        })
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
    let quotes = report["quotes"].as_array().unwrap();
    assert_eq!(quotes.len(), 1);
    for pair in center.iter().chain(quotes) {
        for side in ["medsim", "floor"] {
            assert!(pair[side]["sessions"].as_u64().unwrap() > 0, "{pair}");
            assert_eq!(pair[side]["errors"], 0, "{pair}");
        }
        assert!(pair["ratio"].as_f64().unwrap() > 0.0, "{pair}");
    }

    let scale = &report["scale"][0];
    assert_eq!(scale["patients"], 300);
    assert_eq!(scale["invariants_ok"], true, "{scale}");
    assert!(scale["peak_rss_mib"].as_f64().unwrap() > 0.0);

    let sustained = &report["sustained"];
    assert_eq!(sustained["sessions"], 3000, "{sustained}");
    assert_eq!(sustained["errors"], 0);
    let samples = sustained["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3, "start, middle and end: {sustained}");
    assert!(samples.iter().all(|s| s["threads"].as_u64().unwrap() >= 1));
}
