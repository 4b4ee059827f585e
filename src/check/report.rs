//! How check's findings read: for people, one line per case and a
//! summary; for programs, the JSON of [`Findings`]; for graders, JUnit XML
//! and a Gradescope `results.json`.

use std::time::Duration;

use super::{Args, CaseResult, Config, Findings, RESERVES, Verdict};
use crate::table::{self, Align};

/// Formats the findings for people: the slots note, one line per case,
/// then the summary.
pub fn render(
    config: &Config,
    more_centers: &[std::net::SocketAddr],
    findings: &Findings,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let centers = std::iter::once(config.center)
        .chain(more_centers.iter().copied())
        .map(|c| c.to_string())
        .collect::<Vec<_>>();
    let _ = writeln!(
        out,
        "medsim check: {} {} ({} dialect), user {}, doctors at {}",
        if centers.len() == 1 {
            "center"
        } else {
            "centers"
        },
        centers.join(", "),
        config.framing.dialect,
        config.username,
        config.doctor_host
    );
    let needed: usize = RESERVES.iter().map(|(_, n)| n).sum();
    let listed = match findings.listed_free {
        Some(free) => format!("the center listed {free} free"),
        None => "no list was read from the center".into(),
    };
    let _ = writeln!(
        out,
        "slots: the cases reserve {needed} ({}); {listed}",
        RESERVES
            .iter()
            .map(|(case, n)| format!("{case} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.push_str(&cases_table(&findings.cases));
    out.push_str(&summary(findings));
    out
}

/// The findings of a patient check, for people.
pub fn render_patient(args: &Args, findings: &Findings) -> String {
    let mut out = format!(
        "medsim check: patient {} `{}`, medsim's center at {}\n",
        if args.patient_cmd.len() == 1 {
            "program"
        } else {
            "programs"
        },
        args.patient_cmd.join("`, `"),
        args.center.first().map_or("", String::as_str)
    );
    out.push_str(&cases_table(&findings.cases));
    out.push_str(&summary(findings));
    out
}

fn cases_table(cases: &[CaseResult]) -> String {
    table::render_rows(
        &[
            ("verdict", Align::Left),
            ("id", Align::Left),
            ("case", Align::Left),
            ("evidence", Align::Left),
        ],
        cases.iter().map(|case| {
            [
                case.verdict.to_string(),
                case.id.clone(),
                case.name.clone(),
                case.evidence.clone(),
            ]
        }),
    )
}

fn summary(findings: &Findings) -> String {
    let mut parts = vec![
        format!("{} passed", findings.count(Verdict::Pass)),
        format!("{} failed", findings.count(Verdict::Fail)),
        format!("{} skipped", findings.count(Verdict::Skip)),
    ];
    let warned = findings.count(Verdict::Warn);
    if warned > 0 {
        parts.insert(1, format!("{warned} warned"));
    }
    let not_run: Vec<&CaseResult> = findings
        .cases
        .iter()
        .filter(|c| c.verdict == Verdict::Blocked)
        .collect();
    if not_run.is_empty() {
        return format!("summary: {}\n", parts.join(", "));
    }
    parts.push(format!("{} not run", not_run.len()));
    let race = if not_run.iter().any(|c| c.id.starts_with("race/")) {
        ", the race among them"
    } else {
        ""
    };
    format!(
        "summary: {}\nincomplete: {} could not run{race} ({}): the check fails until they run\n",
        parts.join(", "),
        crate::stats::plural(not_run.len() as u64, "case", "cases"),
        not_run[0].evidence.trim_start_matches("not run: ")
    )
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t') => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// The findings as JUnit XML: one testcase per case (classname the id's
/// first part, time its share of the run), a `failure` with the evidence
/// for each failure, an `error` for each case that could not run,
/// `skipped` for a case with nothing to judge; a WARN passes with its
/// evidence in `system-out` unless `strict`.
pub fn junit(findings: &Findings, strict: bool, took: Duration) -> String {
    use std::fmt::Write as _;
    let failures = findings
        .cases
        .iter()
        .filter(|c| c.verdict != Verdict::Blocked && c.verdict.fails(strict))
        .count();
    let errors = findings.count(Verdict::Blocked);
    let skipped = findings.count(Verdict::Skip);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"medsim check\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{t:.3}\">\n  <testsuite name=\"medsim check\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{t:.3}\">",
        n = findings.cases.len(),
        t = took.as_secs_f64(),
    );
    for case in &findings.cases {
        let class = case.id.split('/').next().unwrap_or("check");
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\"",
            xml_escape(class),
            xml_escape(&format!("{}: {}", case.id, case.name))
        );
        let evidence = xml_escape(&case.evidence);
        if case.verdict == Verdict::Blocked {
            let _ = writeln!(
                out,
                ">\n      <error message=\"{evidence}\" type=\"NOT RUN\">{evidence}</error>\n    </testcase>"
            );
        } else if case.verdict.fails(strict) {
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{evidence}\" type=\"{}\">{evidence}</failure>\n    </testcase>",
                case.verdict
            );
        } else {
            match case.verdict {
                Verdict::Skip => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{evidence}\"/>\n    </testcase>"
                    );
                }
                Verdict::Warn => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>WARN: {evidence}</system-out>\n    </testcase>"
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{evidence}</system-out>\n    </testcase>"
                    );
                }
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// The points a case is worth: the last `--weights` entry whose id or
/// prefix matches it, else 1.
fn weight(id: &str, weights: &[(String, f64)]) -> f64 {
    weights
        .iter()
        .rev()
        .find(|(pattern, _)| {
            id == pattern
                || id.starts_with(pattern.as_str())
                    && (pattern.ends_with('/') || id[pattern.len()..].starts_with('/'))
        })
        .map_or(1.0, |(_, points)| *points)
}

/// The findings as a Gradescope autograder `results.json`: one test per
/// case with its score (full unless the case fails the run: a FAIL, a
/// case NOT RUN, a WARN when `strict`), max_score, status and output. A
/// case with nothing to judge (SKIP) is worth nothing either way.
pub fn gradescope(findings: &Findings, strict: bool, weights: &[(String, f64)]) -> String {
    let tests: Vec<serde_json::Value> = findings
        .cases
        .iter()
        .map(|case| {
            let max = if case.verdict == Verdict::Skip {
                0.0
            } else {
                weight(&case.id, weights)
            };
            let earned = !case.verdict.fails(strict);
            serde_json::json!({
                "name": format!("{}: {}", case.id, case.name),
                "score": if earned { max } else { 0.0 },
                "max_score": max,
                "status": if earned { "passed" } else { "failed" },
                "output": format!("{} {}", case.verdict, case.evidence),
            })
        })
        .collect();
    let score: f64 = tests.iter().filter_map(|t| t["score"].as_f64()).sum();
    let results = serde_json::json!({
        "score": score,
        "output": summary(findings).trim_end(),
        "tests": tests,
    });
    serde_json::to_string_pretty(&results).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings() -> Findings {
        let case = |id: &str, verdict| CaseResult {
            id: id.into(),
            name: format!("name of {id}"),
            verdict,
            evidence: format!("sent 'x' & got <{id}>"),
        };
        Findings {
            listed_free: Some(6),
            cases: vec![
                case("auth/success", Verdict::Pass),
                case("wording/success", Verdict::Warn),
                case("race/one-slot", Verdict::Fail),
                case("book/first", Verdict::Skip),
                case("race/one-slot", Verdict::Blocked),
            ],
        }
    }

    #[test]
    fn junit_has_a_failure_with_the_evidence_and_escapes_it() {
        let xml = junit(&findings(), false, Duration::from_millis(1500));
        assert!(xml.contains("tests=\"5\" failures=\"1\" errors=\"1\" skipped=\"1\""));
        assert!(xml.contains("<error message=\"sent &apos;x&apos; &amp; got &lt;race/one-slot&gt;\" type=\"NOT RUN\">"));
        assert!(xml.contains(
            "<failure message=\"sent &apos;x&apos; &amp; got &lt;race/one-slot&gt;\" type=\"FAIL\">"
        ));
        assert!(xml.contains("<skipped message="));
        let strict = junit(&findings(), true, Duration::ZERO);
        assert!(strict.contains("failures=\"2\""));
    }

    #[test]
    fn gradescope_scores_one_point_a_case_unless_weighted() {
        let json: serde_json::Value =
            serde_json::from_str(&gradescope(&findings(), false, &[])).unwrap();
        assert_eq!(json["score"], 2.0);
        assert_eq!(json["tests"][2]["status"], "failed");
        assert_eq!(
            json["tests"][3]["max_score"], 0.0,
            "nothing to judge is worth nothing"
        );
        assert_eq!(json["tests"][4]["status"], "failed", "a case not run fails");
        assert_eq!(json["tests"][4]["score"], 0.0);
        assert_eq!(json["tests"][2]["max_score"], 1.0);
        assert_eq!(
            json["tests"][0]["name"],
            "auth/success: name of auth/success"
        );
        let weighted: serde_json::Value = serde_json::from_str(&gradescope(
            &findings(),
            true,
            &[("race".into(), 5.0), ("auth/success".into(), 2.0)],
        ))
        .unwrap();
        assert_eq!(weighted["score"], 2.0);
        assert_eq!(weighted["tests"][2]["max_score"], 5.0);
        assert_eq!(weighted["tests"][1]["status"], "failed");
    }
}
