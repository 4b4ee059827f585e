//! The table `bench` prints: each case's pair (medsim against its floor),
//! the scale runs and the sustained run.

use std::fmt::Write as _;

use super::{Pair, Report};
use crate::table::{self, Align};

fn pair_table(pairs: &[Pair]) -> String {
    let header = [
        ("case", Align::Left),
        ("conc", Align::Right),
        ("medsim/s", Align::Right),
        ("p50 us", Align::Right),
        ("p99 us", Align::Right),
        ("floor/s", Align::Right),
        ("p50 us", Align::Right),
        ("p99 us", Align::Right),
        ("ratio", Align::Right),
    ];
    table::render(
        &header,
        pairs.iter().map(|p| {
            vec![
                p.case.clone(),
                p.concurrency.to_string(),
                format!("{:.0}", p.medsim.per_second),
                format!("{:.0}", p.medsim.p50_us),
                format!("{:.0}", p.medsim.p99_us),
                format!("{:.0}", p.floor.per_second),
                format!("{:.0}", p.floor.p50_us),
                format!("{:.0}", p.floor.p99_us),
                format!("{:.2}", p.ratio),
            ]
        }),
    )
}

/// Formats a report as the table `bench` prints.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", report.command);
    let _ = writeln!(
        out,
        "{}; {} s a run, median of {} runs; ratio = medsim / floor, paired per run",
        report.machine, report.seconds_per_run, report.repeats
    );
    for (title, pairs) in [
        (
            "center sessions (list: login + available on a full center; booking: login, list, select, quote)",
            &report.center,
        ),
        (
            "doctor quotes over UDP (floor: a fixed answer from one thread)",
            &report.quotes,
        ),
    ] {
        if pairs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}");
        out.push_str(&pair_table(pairs));
    }
    if !report.scale.is_empty() {
        let _ = writeln!(
            out,
            "\nsimulate --patients N --slots N --choice random (median of {} runs; peak RSS the largest)",
            report.repeats
        );
        out.push_str(&table::render(
            &[
                ("N", Align::Right),
                ("wall s", Align::Right),
                ("us/patient", Align::Right),
                ("vs 1st", Align::Right),
                ("peak RSS MiB", Align::Right),
                ("invariants", Align::Left),
            ],
            report.scale.iter().map(|s| {
                vec![
                    s.patients.to_string(),
                    format!("{:.3}", s.wall_seconds),
                    format!("{:.1}", s.us_per_patient),
                    format!("{:.2}", s.vs_smallest),
                    s.peak_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
                    if s.invariants_ok { "ok" } else { "FAILED" }.to_owned(),
                ]
            }),
        ));
    }
    if let Some(s) = &report.sustained {
        let _ = writeln!(
            out,
            "\nsustained: {} list sessions at concurrency {} against one center process: {:.0}/s, {} errors",
            s.sessions, s.concurrency, s.per_second, s.errors
        );
        for sample in &s.samples {
            let _ = writeln!(
                out,
                "  after {:>9} sessions: RSS {:.1} MiB, {} threads",
                sample.after_sessions, sample.rss_mib, sample.threads
            );
        }
    }
    out
}
