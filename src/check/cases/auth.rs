//! Authentication and its bypasses: a wrong password, an unknown user,
//! what a session whose login failed may do, a flag shared by sessions, a
//! second `authenticate`.

use std::sync::atomic::Ordering;

use super::malformed::{Malformed, malformed};
use crate::check::Verdict;
use crate::check::harness::{Outcome, Run, fail, pass, warn};
use crate::check::session::{CLOSE_WAIT, Reading, Session, read};
use crate::check::wording::Word;

/// A wrong password gets a refusal (any word), and the center closes.
pub(in crate::check) fn bad_password(run: &mut Run) -> Outcome {
    let config = run.config();
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let wrong = format!("{}-wrong", config.password);
    let (reading, _) = match c.authenticate(&config.username, &wrong) {
        Ok(answer) => answer,
        Err(e) => return fail(e),
    };
    match reading {
        Reading::Failure | Reading::Error => {}
        Reading::Success => {
            c.log.push("a wrong password was let in".into());
            return fail(c.evidence());
        }
        _ => {
            c.log.push("expected 'failure'".into());
            return warn(c.evidence());
        }
    }
    if c.closes() {
        run.shared.note(Word::Close, true, String::new);
        c.log.push("then the center closed".into());
    } else {
        run.shared.note(Word::Close, false, || {
            format!("the connection was still open {CLOSE_WAIT:?} after 'failure'")
        });
        c.log.push(format!(
            "the connection was still open {CLOSE_WAIT:?} after 'failure'"
        ));
    }
    pass(c.last_exchange())
}

pub(in crate::check) fn unknown_user(run: &mut Run) -> Outcome {
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.authenticate("medsim-check-nobody", "nothing") {
        Ok((Reading::Failure | Reading::Error, _)) => pass(c.last_exchange()),
        Ok((Reading::Success, _)) => {
            c.log.push("an unknown user was let in".into());
            fail(c.evidence())
        }
        Ok(_) => {
            c.log.push("expected 'failure'".into());
            warn(c.evidence())
        }
        Err(e) => fail(e),
    }
}

/// A session whose login with a wrong password was refused (or met with
/// silence: a patient would go on, and so does the case, since a center
/// may list to it anyway); the case's outcome when it was let in, or the
/// exchange failed otherwise.
fn refused_session<'a>(run: &mut Run<'a>) -> Result<Session<'a>, Outcome> {
    let config = run.config();
    let mut c = run.open().map_err(fail)?;
    let wrong = format!("{}-wrong", config.password);
    match c.authenticate(&config.username, &wrong) {
        Ok((Reading::Success, _)) => {
            c.log.push("a wrong password was let in".into());
            Err(fail(c.evidence()))
        }
        Ok(_) => Ok(c),
        Err(_) if c.silent => Ok(c),
        Err(e) => Err(fail(e)),
    }
}

/// After `failure`, a center that did not close lists nothing.
pub(in crate::check) fn list_after_failure(run: &mut Run) -> Outcome {
    let mut c = match refused_session(run) {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    match c.ask("available") {
        Ok(answer) => match read(&answer) {
            Reading::List(_) => {
                c.log
                    .push("slots listed to a session whose login failed".into());
                fail(c.evidence())
            }
            Reading::Error | Reading::Failure | Reading::NotAvailable => pass(c.last_exchange()),
            _ => warn(format!("{}, expected 'error ...'", c.evidence())),
        },
        // Closed or silent: nothing listed.
        Err(_) => pass(c.evidence()),
    }
}

/// After `failure`, a center that did not close books nothing.
pub(in crate::check) fn select_after_failure(run: &mut Run) -> Outcome {
    let mut c = match refused_session(run) {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    // Ask for the list, as a client would; a list names a slot to try.
    let target = match c.ask("available") {
        Ok(answer) => match read(&answer) {
            Reading::List(indexes) => indexes.last().copied().unwrap_or(1),
            _ => 1,
        },
        Err(_) => {
            c.log
                .push("so nothing can be selected in a session whose login failed".into());
            return pass(c.evidence());
        }
    };
    match c.select(target) {
        Ok((Reading::Grant, _)) => {
            c.log.push(format!(
                "slot {target} booked by a session whose login failed"
            ));
            fail(c.evidence())
        }
        Ok((Reading::Error | Reading::Failure | Reading::NotAvailable, _)) | Err(_) => {
            pass(c.evidence())
        }
        Ok(_) => warn(format!(
            "{}, expected 'error ...' or a closed connection",
            c.evidence()
        )),
    }
}

/// Another session, logged in with the user's good credentials, for a
/// case to act "right after" it: kept open, unless the center serves one
/// session at a time (it would answer the next only once this one closes,
/// so closed, right after is the best there is). `Err` is the case's
/// outcome when the login failed.
fn logged_in_elsewhere<'a>(run: &mut Run<'a>) -> Result<Option<Session<'a>>, Outcome> {
    let mut good = run.open().map_err(fail)?;
    good.log_in()
        .map_err(|e| fail(format!("the first session: {e}")))?;
    Ok((!run.shared.one_at_a_time.load(Ordering::Relaxed)).then_some(good))
}

/// Bad credentials in a new session, while another session is logged in,
/// are refused: no "authenticated" flag shared across sessions.
pub(in crate::check) fn shared_flag(run: &mut Run) -> Outcome {
    let config = run.config();
    let good = match logged_in_elsewhere(run) {
        Ok(good) => good,
        Err(outcome) => return outcome,
    };
    let mut bad = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let wrong = format!("{}-wrong", config.password);
    let outcome = match bad.authenticate("medsim-check-nobody", &wrong) {
        Ok((Reading::Success, _)) => {
            bad.log.push(
                "an unknown user was let in while another session was logged in \
                 (an 'authenticated' flag shared by all sessions?)"
                    .into(),
            );
            fail(bad.evidence())
        }
        Ok(_) => match bad.ask("available") {
            Ok(answer) if matches!(read(&answer), Reading::List(_)) => {
                bad.log.push(
                    "slots listed to a session whose login failed, while another \
                     session was logged in"
                        .into(),
                );
                fail(bad.evidence())
            }
            _ => pass(format!(
                "another session logged in; {}",
                bad.log[..2.min(bad.log.len())].join(", ")
            )),
        },
        Err(e) => fail(e),
    };
    drop(good);
    outcome
}

pub(in crate::check) fn second_authenticate(run: &mut Run) -> Outcome {
    let config = run.config();
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = c.log_in() {
        return fail(e);
    }
    match c.ask(&format!(
        "authenticate {} {}",
        config.username, config.password
    )) {
        Ok(answer) if read(&answer) == Reading::Error => pass(c.last_exchange()),
        Ok(_) | Err(_) => warn(format!("{}, expected 'error ...'", c.evidence())),
    }
}

/// A message that may pass for a login (empty, `authenticate` short of
/// words), sent right after another session logged in: a center that
/// checks it against the last credentials it saw lets it in.
pub(in crate::check) fn bypass_after_login(run: &mut Run, m: &Malformed) -> Outcome {
    let good = match logged_in_elsewhere(run) {
        Ok(good) => good,
        Err(outcome) => return outcome,
    };
    let outcome = malformed(run, m);
    drop(good);
    let evidence = if outcome.verdict == Verdict::Fail {
        // Whether the same message got in on fresh state tells a kept
        // login from no login check at all.
        let fresh = format!("malformed/{}", m.id);
        let why = match run.results.iter().find(|r| r.id == fresh) {
            Some(r)
                if r.verdict == Verdict::Fail
                    && (r.evidence.contains("LOGIN BYPASS")
                        || r.evidence.contains("let in without valid credentials")) =>
            {
                format!(" (it gets in on fresh state too: {fresh})")
            }
            Some(r) if matches!(r.verdict, Verdict::Pass | Verdict::Warn) => format!(
                " (on fresh state it did not, {fresh}: the last credentials kept for everyone?)"
            ),
            _ => String::new(),
        };
        format!(
            "LOGIN BYPASS right after another session's good login{why}: {}",
            outcome.evidence
        )
    } else {
        format!("another session logged in; {}", outcome.evidence)
    };
    Outcome {
        verdict: outcome.verdict,
        evidence,
    }
}

/// Asked in lines, a center that answers C strings (a classic program,
/// checked without `--dialect classic`) may refuse the login only because
/// its newline is compared with the password: sent as a C string, it is
/// let in, and the other cases go on so (WARN), instead of failing every
/// case that needs a login.
fn as_c_strings(run: &mut Run, refused: String) -> Outcome {
    if !run.shared.answers_classic() {
        return fail(refused);
    }
    run.shared.c_string_requests.store(true, Ordering::Relaxed);
    match run
        .open()
        .and_then(|mut c| c.log_in().map(|()| c.last_exchange()))
    {
        Ok(exchange) => warn(format!(
            "{refused}; sent as a C string instead: {exchange}: the center speaks the classic \
             dialect, so check goes on sending C strings (give --dialect classic)"
        )),
        Err(_) => {
            run.shared.c_string_requests.store(false, Ordering::Relaxed);
            fail(refused)
        }
    }
}

/// The user's good login gets `success`. A classic center that refuses it
/// as a C string but takes it ended by a newline (it compares the password
/// with its newline) is a departure (WARN), and the other cases go on in
/// that form.
pub(in crate::check) fn success(run: &mut Run) -> Outcome {
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let refused = match c.log_in() {
        Ok(()) => return pass(c.last_exchange()),
        Err(e) => e,
    };
    let classic = run.shared.framing().dialect == crate::protocol::Dialect::Classic;
    if c.last_answer.is_empty() {
        return fail(refused);
    }
    if !classic {
        return as_c_strings(run, refused);
    }
    run.shared.line_requests.store(true, Ordering::Relaxed);
    match run
        .open()
        .and_then(|mut line| line.log_in().map(|()| line.last_exchange()))
    {
        Ok(exchange) => warn(format!(
            "{refused}; ended by a newline instead: {exchange}: the center takes the login only \
             with its newline (it compares the password with it); check goes on sending lines"
        )),
        Err(_) => {
            run.shared.line_requests.store(false, Ordering::Relaxed);
            fail(refused)
        }
    }
}
