//! simulate's report for people: the run's parameters, a row per patient
//! for small runs, the counts, throughput, latency, retries and invariants.
//! Programs read the JSON of [`Report`] instead.

use std::fmt::Write as _;

use super::Report;
use crate::patient::Outcome;
use crate::stats::plural;
use crate::table::{self, Align};

/// The columns of the table per phase.
pub const PHASE_COLUMNS: [(&str, Align); 7] = [
    ("phase", Align::Left),
    ("count", Align::Right),
    ("failures", Align::Right),
    ("p50 ms", Align::Right),
    ("p95 ms", Align::Right),
    ("p99 ms", Align::Right),
    ("per second", Align::Right),
];

/// The table per phase as cells: the terminal's report renders them with
/// [`table::render`], the page and the HTML report draw the same cells,
/// and the CSV is made of them ([`phase_csv`]), so all agree.
pub fn phase_table(report: &Report) -> ([(&'static str, Align); 7], Vec<Vec<String>>) {
    let ms = |v: f64| format!("{v:.2}");
    let rows = report
        .phases
        .iter()
        .map(|p| {
            vec![
                p.phase.name().to_owned(),
                p.count.to_string(),
                p.failures.to_string(),
                ms(p.p50_ms),
                ms(p.p95_ms),
                ms(p.p99_ms),
                format!("{:.1}", p.per_second),
            ]
        })
        .collect();
    (PHASE_COLUMNS, rows)
}

/// The table per phase as CSV: a header line, then the cells of
/// [`phase_table`] (none holds a comma or a quote).
pub fn phase_csv(report: &Report) -> String {
    let (header, rows) = phase_table(report);
    let mut out = header.map(|(name, _)| name).join(",");
    out.push('\n');
    for row in rows {
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Formats the report for people.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mut place = match (&report.external_center, report.slots) {
        (Some(center), _) => format!("against the center at {center}"),
        (None, Some(slots)) => plural(slots as u64, "slot", "slots"),
        (None, None) => String::new(),
    };
    if let (Some(centers), Some(store)) = (report.centers, &report.store)
        && (centers > 1 || store != "memory")
    {
        place.push_str(&format!(
            ", {} on store {store}",
            plural(centers as u64, "center", "centers")
        ));
    }
    let choice = match report.choice {
        super::Choice::First => "first",
        super::Choice::Random => "random",
        super::Choice::Same => "same",
    };
    let _ = writeln!(
        out,
        "medsim simulate: {}, {place}, choice {choice}, seed {}, concurrency {}{}",
        plural(report.patients as u64, "patient", "patients"),
        report.seed,
        report.concurrency,
        if report.udp_loss > 0.0 {
            format!(", udp loss {}", report.udp_loss)
        } else {
            String::new()
        }
    );
    if let Some(rows) = &report.rows {
        out.push('\n');
        let dash = || "-".to_owned();
        out.push_str(&table::render(
            &[
                ("patient", Align::Left),
                ("slot", Align::Right),
                ("doctor", Align::Left),
                ("cost", Align::Right),
                ("retries", Align::Right),
                ("outcome", Align::Left),
                ("latency", Align::Right),
            ],
            rows.iter().map(|row| {
                let v = &row.visit;
                // A lost race shows the slot it was lost for.
                let slot = v.slot.or(match v.outcome {
                    Outcome::Taken => v.chosen,
                    _ => None,
                });
                vec![
                    row.label.clone(),
                    slot.map_or_else(dash, |s| s.to_string()),
                    v.doctor.clone().unwrap_or_else(dash),
                    v.cost.map_or_else(dash, |c| format!("{c}$")),
                    v.retries.to_string(),
                    v.outcome.words().to_owned(),
                    format!("{:.1} ms", row.latency_ms),
                ]
            }),
        ));
    }
    let outcomes: Vec<String> = report
        .outcomes
        .iter()
        .map(|(label, n)| format!("{} {n}", label.replace('_', " ")))
        .collect();
    let _ = writeln!(out, "\noutcomes:    {}", outcomes.join(", "));
    let _ = writeln!(out, "bookings:    {}", report.bookings);
    if let Some(held) = report.held_before.filter(|held| *held > 0) {
        let _ = writeln!(
            out,
            "store:       {} before this run, not counted",
            plural(held as u64, "reservation held", "reservations held")
        );
    }
    let reached: usize = report.outcomes.values().sum();
    let rate = report.patients_per_second;
    let _ = writeln!(
        out,
        "throughput:  {} patients/s ({} in {:.3} s)",
        if rate < 10.0 {
            format!("{rate:.2}")
        } else {
            format!("{rate:.0}")
        },
        plural(reached as u64, "patient", "patients"),
        report.wall_seconds
    );
    let _ = writeln!(
        out,
        "latency:     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.latency.p50_ms, report.latency.p99_ms, report.latency.max_ms
    );
    if report.phases.iter().any(|p| p.count > 0) {
        let (header, rows) = phase_table(report);
        let _ = writeln!(out, "phases:");
        for line in table::render(&header, rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(
        out,
        "retries:     {} sent again",
        plural(report.quote_retries, "quote request", "quote requests")
    );
    if let Some(diagram) = &report.diagram {
        let _ = writeln!(
            out,
            "diagram:     {diagram} (Mermaid; view it in a Markdown file's ```mermaid block, or at mermaid.live)"
        );
    }
    if let Some(html) = &report.html {
        let _ = writeln!(out, "report:      {html} (open it in a browser)");
    }
    let _ = writeln!(out, "invariants:");
    for inv in &report.invariants {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            if inv.ok { "ok  " } else { "FAIL" },
            inv.name,
            inv.detail
        );
    }
    out
}
