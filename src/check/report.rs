//! How check's findings read: for people, one line per case and a
//! summary; for programs, one JSON document (what was checked, the
//! [`Findings`], the [`Summary`]); for graders, JUnit XML and a Gradescope
//! `results.json`.

use std::time::Duration;

use super::{CaseResult, Config, Findings, Options, RESERVES, Summary, Verdict};
use crate::table::{self, Align};

/// What a check was run against, for the JSON report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    /// The centers checked; with `--patient-cmd`, where medsim's center
    /// listens for the program.
    pub centers: Vec<String>,
    /// The framing check spoke (none with `--patient-cmd`: medsim's
    /// center answers in the program's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialect: Option<String>,
    /// The account the cases logged in with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The host the center's `DOCTOR PORT` answers were taken to refer to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doctor_host: Option<String>,
    /// The doctors asked; with `--patient-cmd`, where medsim's doctors
    /// listen for the program.
    pub doctors: Vec<TargetDoctor>,
    /// The programs check started (`--center-cmd`, `--doctor-cmd`,
    /// `--patient-cmd`), when it started any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub center_cmd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doctor_cmd: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patient_cmds: Vec<String>,
}

/// A doctor of the [`Target`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetDoctor {
    pub name: String,
    pub addr: String,
}

/// The findings as one JSON document: `target`, then the [`Findings`]'
/// fields (`listed_free`, `cases`), then `summary`.
pub fn json(target: &Target, findings: &Findings, summary: &Summary) -> String {
    #[derive(serde::Serialize)]
    struct Document<'a> {
        target: &'a Target,
        #[serde(flatten)]
        findings: &'a Findings,
        summary: &'a Summary,
    }
    let document = Document {
        target,
        findings,
        summary,
    };
    serde_json::to_string_pretty(&document).unwrap_or_default() + "\n"
}

/// Formats the findings for people: the slots note, one line per case,
/// then the summary.
pub fn render(
    config: &Config,
    more_centers: &[std::net::SocketAddr],
    findings: &Findings,
    strict: bool,
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
    out.push_str(&summary(findings, strict));
    out
}

/// The findings of a patient check, for people.
pub fn render_patient(options: &Options, findings: &Findings) -> String {
    let mut out = format!(
        "medsim check: patient {} `{}`, medsim's center at {}\n",
        if options.patient_cmds.len() == 1 {
            "program"
        } else {
            "programs"
        },
        options.patient_cmds.join("`, `"),
        options.centers.first().map_or("", String::as_str)
    );
    out.push_str(&cases_table(&findings.cases));
    out.push_str(&summary(findings, options.strict));
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

/// The summary line (and, for a check with cases not run, the line that
/// says it is incomplete): the counts of [`Findings::summary`], which the
/// exit status follows.
fn summary(findings: &Findings, strict: bool) -> String {
    let counts = findings.summary(strict);
    let mut parts = vec![format!("{} passed", counts.passed)];
    if counts.warned > 0 {
        parts.push(format!("{} warned", counts.warned));
    }
    parts.push(format!("{} failed", counts.failed));
    parts.push(format!("{} skipped", counts.skipped));
    if counts.not_run > 0 {
        parts.push(format!("{} not run", counts.not_run));
    }
    let mut line = format!("summary: {}", parts.join(", "));
    if counts.warnings_counted_as_failures > 0 {
        let n = counts.warnings_counted_as_failures as u64;
        line.push_str(&format!(
            "; {} counted as {} (--strict)",
            crate::stats::plural(n, "warning", "warnings"),
            if n == 1 { "a failure" } else { "failures" }
        ));
    }
    line.push('\n');
    let not_run: Vec<&CaseResult> = findings
        .cases
        .iter()
        .filter(|c| c.verdict == Verdict::Blocked)
        .collect();
    if let Some(first) = not_run.first() {
        let race = if not_run.iter().any(|c| c.id.starts_with("race/")) {
            ", the race among them"
        } else {
            ""
        };
        line.push_str(&format!(
            "incomplete: {} could not run{race} ({}): the check fails until they run\n",
            crate::stats::plural(not_run.len() as u64, "case", "cases"),
            first.evidence.trim_start_matches("not run: ")
        ));
    }
    line
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
/// first part, time the seconds it took), a `failure` with the evidence
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
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(class),
            xml_escape(&format!("{}: {}", case.id, case.name)),
            case.seconds
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

/// The points a case is worth: the last `--weights` entry that names it
/// (as `--cases` names cases), else 1.
fn weight(id: &str, weights: &[(String, f64)]) -> f64 {
    weights
        .iter()
        .rev()
        .find(|(pattern, _)| super::names(pattern, id))
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
        "output": summary(findings, strict).trim_end(),
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
            seconds: 0.25,
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
    fn each_junit_case_carries_its_own_time_in_seconds() {
        let xml = junit(&findings(), false, Duration::from_millis(1500));
        assert_eq!(xml.matches(" time=\"0.250\"").count(), 5, "{xml}");
        assert!(
            xml.contains("<testcase classname=\"auth\" name=\"auth/success: name of auth/success\" time=\"0.250\">"),
            "{xml}"
        );
        assert!(xml.contains("<testsuite name=\"medsim check\" tests=\"5\" failures=\"1\" errors=\"1\" skipped=\"1\" time=\"1.500\">"), "{xml}");
    }

    #[test]
    fn under_strict_the_summary_counts_the_warnings_as_the_exit_status_does() {
        let warned = Findings {
            listed_free: Some(6),
            cases: findings()
                .cases
                .into_iter()
                .filter(|c| matches!(c.verdict, Verdict::Pass | Verdict::Warn))
                .collect(),
        };
        assert_eq!(
            summary(&warned, false),
            "summary: 1 passed, 1 warned, 0 failed, 0 skipped\n"
        );
        assert_eq!(warned.summary(false).exit_code, 0);
        assert_eq!(
            summary(&warned, true),
            "summary: 1 passed, 1 warned, 0 failed, 0 skipped; 1 warning counted as a failure (--strict)\n"
        );
        let strict = warned.summary(true);
        assert_eq!(
            (
                strict.exit_code,
                strict.verdict,
                strict.warnings_counted_as_failures
            ),
            (1, "fail", 1)
        );
    }

    #[test]
    fn the_json_names_its_target_and_sums_up() {
        let target = Target {
            centers: vec!["127.0.0.1:21720".into()],
            dialect: Some("classic".into()),
            user: Some("patient1".into()),
            doctor_host: Some("127.0.0.1".into()),
            doctors: vec![TargetDoctor {
                name: "doc1".into(),
                addr: "127.0.0.1:41720".into(),
            }],
            center_cmd: Some("exec python3 center.py".into()),
            doctor_cmd: None,
            patient_cmds: Vec::new(),
        };
        let findings = findings();
        let value: serde_json::Value =
            serde_json::from_str(&json(&target, &findings, &findings.summary(false))).unwrap();
        assert_eq!(value["target"]["centers"][0], "127.0.0.1:21720");
        assert_eq!(value["target"]["dialect"], "classic");
        assert_eq!(value["target"]["doctors"][0]["addr"], "127.0.0.1:41720");
        assert_eq!(value["target"]["center_cmd"], "exec python3 center.py");
        assert!(value["target"].get("doctor_cmd").is_none(), "{value}");
        assert_eq!(value["listed_free"], 6);
        assert_eq!(value["cases"][0]["seconds"], 0.25);
        assert_eq!(
            value["summary"],
            serde_json::json!({
                "passed": 1, "warned": 1, "failed": 1, "not_run": 1, "skipped": 1,
                "strict": false, "warnings_counted_as_failures": 0,
                "verdict": "fail", "exit_code": 1
            })
        );
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
