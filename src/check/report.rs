//! How check's findings read: for people, one line per case and a
//! summary; for programs, the JSON of [`Findings`].

use super::{Config, Findings, RESERVES, Verdict};
use crate::table::{self, Align};

/// Formats the findings for people: the slots note, one line per case,
/// then the summary.
pub fn render(config: &Config, findings: &Findings) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "medsim check: center {} ({} dialect), user {}, doctors at {}",
        config.center, config.framing.dialect, config.username, config.doctor_host
    );
    let needed: usize = RESERVES.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        out,
        "slots: the cases reserve {needed} ({}); the center listed {} free",
        RESERVES
            .iter()
            .map(|(case, n)| format!("{case} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        findings.listed_free
    );
    out.push_str(&table::render_rows(
        &[
            ("verdict", Align::Left),
            ("case", Align::Left),
            ("evidence", Align::Left),
        ],
        findings.cases.iter().map(|case| {
            [
                case.verdict.to_string(),
                case.name.clone(),
                case.evidence.clone(),
            ]
        }),
    ));
    let _ = writeln!(
        out,
        "summary: {} passed, {} failed, {} skipped",
        findings.count(Verdict::Pass),
        findings.count(Verdict::Fail),
        findings.count(Verdict::Skip)
    );
    out
}
