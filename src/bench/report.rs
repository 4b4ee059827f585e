//! The table `bench` prints: each case's pair (medsim against its floor),
//! the scale runs and the sustained run.

use std::fmt::Write as _;

use super::{Centers, Pair, Report};
use crate::table::{self, Align};

fn pair_table(pairs: &[Pair]) -> String {
    let header = [
        ("case", Align::Left),
        ("conc", Align::Right),
        ("medsim/s", Align::Right),
        ("medsim p50 us", Align::Right),
        ("medsim p99 us", Align::Right),
        ("floor/s", Align::Right),
        ("floor p50 us", Align::Right),
        ("floor p99 us", Align::Right),
        ("ratio", Align::Right),
        ("ratio min–max", Align::Right),
        ("p99 ratio", Align::Right),
        ("p99 min–max", Align::Right),
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
                p.ratio_spread.show(),
                format!("{:.2}", p.p99_ratio),
                p.p99_ratio_spread.show(),
            ]
        }),
    )
}

/// The booking path per store: bookings (each durable before its `DOCTOR
/// PORT` on a store on disk) and sessions per second, against the memory
/// store's run of the same repeat.
fn store_table(pairs: &[Pair]) -> String {
    let header = [
        ("store", Align::Left),
        ("conc", Align::Right),
        ("bookings/s", Align::Right),
        ("sessions/s", Align::Right),
        ("p50 us", Align::Right),
        ("p99 us", Align::Right),
        ("vs memory", Align::Right),
        ("min–max", Align::Right),
        ("p99 vs memory", Align::Right),
        ("p99 min–max", Align::Right),
        ("per commit", Align::Right),
        ("commits/s", Align::Right),
    ];
    table::render(
        &header,
        pairs.iter().map(|p| {
            vec![
                p.case
                    .strip_prefix("booking ")
                    .unwrap_or(&p.case)
                    .to_owned(),
                p.concurrency.to_string(),
                format!("{:.0}", p.medsim.bookings_per_second),
                format!("{:.0}", p.medsim.per_second),
                format!("{:.0}", p.medsim.p50_us),
                format!("{:.0}", p.medsim.p99_us),
                format!("{:.2}", p.ratio),
                p.ratio_spread.show(),
                format!("{:.2}", p.p99_ratio),
                p.p99_ratio_spread.show(),
                per_commit(&p.medsim),
                commits_per_second(&p.medsim),
            ]
        }),
    )
}

/// Bookings per commit of a run on a store on disk; `-` in memory.
fn per_commit(run: &super::Run) -> String {
    if run.commits == 0 {
        return "-".into();
    }
    format!("{:.1}", run.bookings as f64 / run.commits as f64)
}

fn commits_per_second(run: &super::Run) -> String {
    if run.commits == 0 {
        return "-".into();
    }
    format!("{:.0}", run.commits_per_second)
}

fn centers_table(rows: &[Centers]) -> String {
    let header = [
        ("centers", Align::Right),
        ("conc", Align::Right),
        ("bookings/s", Align::Right),
        ("sessions/s", Align::Right),
        ("p50 us", Align::Right),
        ("p99 us", Align::Right),
        ("errors", Align::Right),
        ("vs 1st", Align::Right),
        ("vs 1st min–max", Align::Right),
        ("per commit", Align::Right),
        ("commits/s", Align::Right),
    ];
    table::render(
        &header,
        rows.iter().map(|c| {
            vec![
                c.centers.to_string(),
                c.concurrency.to_string(),
                format!("{:.0}", c.run.bookings_per_second),
                format!("{:.0}", c.run.per_second),
                format!("{:.0}", c.run.p50_us),
                format!("{:.0}", c.run.p99_us),
                c.run.errors.to_string(),
                format!("{:.2}", c.vs_first),
                c.vs_first_spread.show(),
                per_commit(&c.run),
                commits_per_second(&c.run),
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
        "{}; {} s a run, median of {} runs; ratio = medsim / floor throughput, p99 ratio = medsim / floor p99, each paired per run; min–max: the smallest and largest of the runs' ratios",
        report.machine, report.seconds_per_run, report.repeats
    );
    let center_title = "center sessions (list: login + available on a full center; booking: login, list, select, quote)";
    if !report.center.is_empty() {
        let _ = writeln!(out, "\n{center_title}");
        out.push_str(&pair_table(&report.center));
    }
    if !report.stores.is_empty() {
        let _ = writeln!(
            out,
            "\nbooking path per store (bookings: answered DOCTOR PORT, on disk committed first; vs memory: bookings/s and p99 over the memory store's in the same repeat, median; per commit: bookings per commit)"
        );
        out.push_str(&store_table(&report.stores));
    }
    if !report.centers.is_empty() {
        let _ = writeln!(
            out,
            "\ncenters on one PostgreSQL database (booking path; clients take the centers in turn; median of {} runs)",
            report.repeats
        );
        out.push_str(&centers_table(&report.centers));
    }
    if let Some(rate) = report.disk_fsyncs_per_second {
        let _ = writeln!(
            out,
            "\nthe disk alone: {rate:.0} fsyncs a second (4 KiB write + fdatasync): the most commits a second, each booking's own or shared"
        );
    }
    if !report.quotes.is_empty() {
        let _ = writeln!(
            out,
            "\ndoctor quotes over UDP (floor: a fixed answer from one thread)"
        );
        out.push_str(&pair_table(&report.quotes));
    }
    for why in &report.skipped {
        let _ = writeln!(out, "\nskipped: {why}");
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
    if !report.watched.is_empty() {
        out.push_str(&super::watched::table(report));
    }
    if let Some(s) = &report.sustained {
        let _ = writeln!(
            out,
            "\nsustained: {} list sessions at concurrency {} against one center process: {:.0}/s, {} errors",
            s.sessions, s.concurrency, s.per_second, s.errors
        );
        if let Some(status) = &s.center_exited {
            let _ = writeln!(out, "  the center ended before the run did: {status}");
        }
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

#[cfg(test)]
mod tests {
    use super::super::{Pair, Report, Run};
    use super::render;
    use crate::stats::Spread;

    fn run(per_second: f64, p50_us: f64, p99_us: f64) -> Run {
        Run {
            sessions: 100,
            per_second,
            p50_us,
            p99_us,
            ..Run::default()
        }
    }

    #[test]
    fn each_latency_column_names_whose_it_is_and_each_ratio_shows_its_spread() {
        let ratios = vec![8.73, 0.52, 1.22, 0.68];
        let report = Report {
            command: "medsim bench".into(),
            date_unix: 0,
            machine: "2 cores".into(),
            seconds_per_run: 1.0,
            repeats: 4,
            center: Vec::new(),
            stores: Vec::new(),
            centers: Vec::new(),
            disk_fsyncs_per_second: None,
            skipped: Vec::new(),
            quotes: vec![Pair {
                case: "quote".into(),
                concurrency: 1,
                medsim: run(6800.0, 120.0, 410.0),
                floor: run(10000.0, 90.0, 300.0),
                ratio: 1.22,
                ratio_spread: Spread::of(&ratios).unwrap_or_default(),
                ratios,
                p99_ratio: 1.37,
                p99_ratios: vec![1.37, 1.1, 2.0, 1.5],
                p99_ratio_spread: Spread { min: 1.1, max: 2.0 },
            }],
            scale: Vec::new(),
            watched: Vec::new(),
            sustained: None,
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("case"))
            .unwrap_or_else(|| panic!("{text}"));
        let words: Vec<&str> = lines[header].split("  ").map(str::trim).collect();
        let words: Vec<&str> = words.into_iter().filter(|w| !w.is_empty()).collect();
        assert_eq!(
            words,
            [
                "case",
                "conc",
                "medsim/s",
                "medsim p50 us",
                "medsim p99 us",
                "floor/s",
                "floor p50 us",
                "floor p99 us",
                "ratio",
                "ratio min–max",
                "p99 ratio",
                "p99 min–max"
            ],
            "{text}"
        );
        let row: Vec<&str> = lines[header + 1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "quote",
                "1",
                "6800",
                "120",
                "410",
                "10000",
                "90",
                "300",
                "1.22",
                "0.52–8.73",
                "1.37",
                "1.10–2.00"
            ],
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap_or_default();
        assert_eq!(
            json["quotes"][0]["ratio_spread"],
            serde_json::json!({"min": 0.52, "max": 8.73})
        );
    }
}
