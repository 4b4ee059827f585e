//! The doctors' cases: a quote of the plan at its table's cost, and an
//! unknown plan refused (an `error` or silence, never a cost).

use std::net::SocketAddr;
use std::time::Duration;

use crate::check::harness::{Booked, Case, Need, Outcome, Run, case, fail, pass, skip, warn};
use crate::check::session::quote;
use crate::check::{Config, DoctorTarget, UNKNOWN_PLAN};
use crate::client::{DoctorLink, DoctorReply, Retries};
use crate::protocol::{Dialect, Framing};
use crate::{net, protocol};
use std::sync::atomic::Ordering;

/// Each doctor quotes the plan (its table's cost, when known) and does not
/// answer an unknown plan with a cost.
pub(in crate::check) fn doctor_cases(run: &Run) -> Vec<Case<'static>> {
    let config = run.config();
    let mut targets = config.doctors.clone();
    // The doctor the center assigned is asked too, at the port it gave.
    if let Some(Booked {
        doctor: Some((name, port)),
        ..
    }) = &run.booked
        && !targets.iter().any(|t| &t.name == name)
        && let Ok(addr) = net::resolve(&net::host_port(&config.doctor_host, *port))
    {
        targets.push(DoctorTarget {
            name: name.clone(),
            addr,
            expected: None,
        });
    }
    doctor_cases_for(targets, &config.plan)
}

/// The cases of each doctor of `targets`, asked about `plan`.
pub(in crate::check) fn doctor_cases_for(
    targets: Vec<DoctorTarget>,
    plan: &str,
) -> Vec<Case<'static>> {
    let mut cases = Vec::new();
    for target in targets {
        let doctor_case = |kind: &str, name: String, judge: CaseBody| {
            let target = target.clone();
            case(
                format!("doctor/{}/{kind}", target.name),
                name,
                Need::Doctor(target.name.clone()),
                move |run| judge(run, &target),
            )
        };
        let name = &target.name;
        cases.push(doctor_case(
            "quote",
            format!("{name} quotes {plan}"),
            quote_case,
        ));
        cases.push(doctor_case(
            "unknown-plan",
            format!("{name} refuses an unknown plan"),
            |run, t| unknown_plan_case(run, t),
        ));
        cases.push(doctor_case(
            "empty-datagram",
            format!("{name} quotes no cost for an empty datagram"),
            |run, t| no_cost_for(run, t, "", "an empty datagram", "left over in its buffer?"),
        ));
        cases.push(doctor_case(
            "plan-prefix",
            format!("{name} refuses a plan that only begins like {plan}"),
            |run, t| {
                let longer = format!("{}xyz", run.config().plan);
                let what = format!("'{longer}'");
                no_cost_for(
                    run,
                    t,
                    &longer,
                    &what,
                    "it compares only the beginning of the plan?",
                )
            },
        ));
    }
    cases
}

/// How a doctor case judges its doctor.
type CaseBody = fn(&mut Run, &DoctorTarget) -> Outcome;

pub(in crate::check) fn quote_case(run: &mut Run, target: &DoctorTarget) -> Outcome {
    let config = run.config();
    let plan = &config.plan;
    run.shared.sent_unanswered(plan);
    let mut answer = ask_doctor(config, run.shared.doctor_framing(), target.addr, plan);
    let mut in_c_strings = None;
    if let Ok(None) = answer
        && run.shared.doctor_framing().dialect == Dialect::Line
    {
        // A classic doctor checked in lines compares `insurance1\n` with
        // its plans and stays silent: asked as a C string, it answers.
        let classic = Framing {
            dialect: Dialect::Classic,
            classic_buffer: None,
        };
        if let Ok(Some(text)) = ask_doctor(config, classic, target.addr, plan) {
            run.shared.c_string_requests.store(true, Ordering::Relaxed);
            in_c_strings = Some(format!(
                "sent '{plan}' as a line, no answer; as a C string: '{}': the doctor speaks the \
                 classic dialect, so check goes on sending C strings (give --dialect classic)",
                quote(&text)
            ));
            answer = Ok(Some(text));
        }
    }
    if let Ok(Some(_)) = answer {
        run.quoted.push(target.name.clone());
    }
    match answer {
        Ok(Some(answer)) => match (protocol::parse_quote_answer(&answer), target.expected) {
            (Ok(protocol::QuoteAnswer::Cost(cost)), Some(expected)) if cost != expected => fail(
                format!("sent '{plan}', got '{answer}', expected {expected} from its table"),
            ),
            (Ok(protocol::QuoteAnswer::Cost(_)), _)
                if answer.bytes().all(|b| b.is_ascii_digit()) =>
            {
                match in_c_strings {
                    Some(departure) => warn(departure),
                    None => pass(format!("sent '{plan}', got '{answer}'")),
                }
            }
            (Ok(protocol::QuoteAnswer::Cost(_)), _) => warn(format!(
                "sent '{plan}', got '{}': a cost, but PROTOCOL.md's is a whole number alone",
                quote(&answer)
            )),
            _ => fail(format!(
                "sent '{plan}', got '{}', expected a cost",
                quote(&answer)
            )),
        },
        Ok(None) => fail(format!(
            "sent '{plan}' to {} three times, no answer",
            target.addr
        )),
        Err(e) => fail(format!("asking {}: {e}", target.addr)),
    }
}

pub(in crate::check) fn unknown_plan_case(run: &Run, target: &DoctorTarget) -> Outcome {
    let config = run.config();
    if !run.quoted.contains(&target.name) {
        return skip(format!(
            "{} did not answer '{}' in its quote case, so silence here would prove nothing",
            target.name, config.plan
        ));
    }
    run.shared.sent_unanswered(UNKNOWN_PLAN);
    match ask_doctor(
        config,
        run.shared.doctor_framing(),
        target.addr,
        UNKNOWN_PLAN,
    ) {
        Ok(Some(answer)) => match protocol::parse_quote_answer(&answer) {
            Ok(protocol::QuoteAnswer::Cost(_)) => fail(format!(
                "sent '{UNKNOWN_PLAN}', got a cost: '{}'",
                quote(&answer)
            )),
            Ok(protocol::QuoteAnswer::Error(_)) => {
                pass(format!("sent '{UNKNOWN_PLAN}', got '{}'", quote(&answer)))
            }
            Err(_) => warn(format!(
                "sent '{UNKNOWN_PLAN}', got '{}', expected 'error ...' or silence",
                quote(&answer)
            )),
        },
        // The liveness check after this case tells a drop from a death.
        Ok(None) => pass(format!("sent '{UNKNOWN_PLAN}', no answer (dropped)")),
        Err(e) => fail(format!("asking {}: {e}", target.addr)),
    }
}

/// Sends `plan` up to three times; the first answer, cut at its NUL or
/// final newline, or `None` after silence.
pub(in crate::check) fn ask_doctor(
    config: &Config,
    framing: Framing,
    doctor: SocketAddr,
    plan: &str,
) -> std::io::Result<Option<String>> {
    let retries = Retries {
        wait: (config.timeout / 3).max(Duration::from_millis(100)),
        attempts: 3,
    };
    let quoted = DoctorLink::open(doctor)?.quote(plan, framing, retries, None, &mut || {})?;
    Ok(match quoted.reply {
        DoctorReply::Text(text) => Some(text),
        DoctorReply::Empty => Some(String::new()),
        DoctorReply::Undecodable(e) => Some(format!("(undecodable: {e})")),
        DoctorReply::Silent => None,
    })
}

/// Something that is no plan of the doctor's (`what`, sent as `text`):
/// never a cost for it. Classic doctors answer an empty datagram with a
/// cost left in their buffer, and a plan that only begins like one they
/// have when they compare a prefix (`why` guesses which).
fn no_cost_for(run: &Run, target: &DoctorTarget, text: &str, what: &str, why: &str) -> Outcome {
    let config = run.config();
    run.shared.sent_unanswered(text);
    match ask_doctor(config, run.shared.doctor_framing(), target.addr, text) {
        Ok(Some(answer)) => match protocol::parse_quote_answer(&answer) {
            Ok(protocol::QuoteAnswer::Cost(_)) => fail(format!(
                "sent {what}, got a cost: '{}' ({why})",
                quote(&answer)
            )),
            _ => pass(format!("sent {what}, got '{}'", quote(&answer))),
        },
        Ok(None) => pass(format!("sent {what}, no answer (dropped)")),
        Err(e) => fail(format!("asking {}: {e}", target.addr)),
    }
}
