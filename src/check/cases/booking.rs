//! The list, a booking, the taken slot, the race for one slot, and what a
//! connection that never logged in may do.

use std::sync::Barrier;

use crate::check::harness::{Booked, Outcome, Run, fail, pass, skip, warn};
use crate::check::session::{Reading, Session, quote, read, shown};
use crate::protocol::{self, SelectionAnswer, strict_assignment};

pub(in crate::check) fn list_format(run: &mut Run) -> Outcome {
    let outcome = run.open().and_then(|mut c| {
        let listed = c.list()?;
        if listed.is_none() {
            c.log
                .push("(no free slot: 'notavailable' is the right answer)".into());
        }
        Ok((listed, c.last_exchange()))
    });
    match outcome {
        Ok((listed, evidence)) => {
            run.listed = Some(listed.unwrap_or_default());
            pass(evidence)
        }
        Err(e) => fail(e),
    }
}

/// Books the lowest listed slot.
pub(in crate::check) fn booking(run: &mut Run) -> Outcome {
    let index = match run.free_now() {
        Ok(Some(listed)) if !listed.is_empty() => listed[0],
        Ok(_) => return skip("no free slot listed to book"),
        Err(e) => return fail(e),
    };
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = c.list() {
        return fail(e);
    }
    match c.select(index) {
        Ok((Reading::Grant, answer)) => {
            run.booked = Some(Booked {
                index,
                doctor: strict_assignment(&answer).or_else(
                    || match protocol::parse_selection_answer(&answer) {
                        Ok(SelectionAnswer::Assigned {
                            doctor: Some(d),
                            port,
                        }) => Some((d, port)),
                        _ => None,
                    },
                ),
                answer,
            });
            run.restarted = false;
            pass(c.last_exchange())
        }
        Ok((Reading::NotAvailable, _)) => {
            c.log.push("a listed slot was refused".into());
            fail(c.evidence())
        }
        Ok(_) => {
            c.log.push("expected 'DOCTOR PORT'".into());
            fail(c.evidence())
        }
        Err(e) => fail(e),
    }
}

/// The booked slot is not listed again, and nobody else gets it.
pub(in crate::check) fn taken_slot(run: &mut Run) -> Outcome {
    let Some(booked) = run.booked.clone() else {
        return skip("no slot was booked");
    };
    if run.restarted {
        return skip("the center was restarted (fresh state) since the booking");
    }
    let index = booked.index;
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.list() {
        Ok(Some(listed)) if listed.contains(&index) => {
            c.log
                .push(format!("slot {index}, reserved, is listed again"));
            return fail(c.evidence());
        }
        Ok(Some(_)) => {}
        // Nothing free: the session is over, and the slot was not listed.
        Ok(None) => return pass(format!("{}; slot {index} not listed", c.last_exchange())),
        Err(e) => return fail(e),
    }
    match c.select(index) {
        Ok((Reading::Grant, answer)) => fail(format!(
            "DOUBLE BOOKING: slot {index} given to 2 clients (the booking got '{}', \
             a later session got '{}')",
            quote(&booked.answer),
            quote(&answer)
        )),
        Ok((Reading::NotAvailable, _)) => pass(c.last_exchange()),
        Ok(_) => warn(format!("{}, expected 'notavailable'", c.evidence())),
        Err(e) => warn(format!("{e}, expected 'notavailable'")),
    }
}

/// What one racer got for its selection.
pub(in crate::check) enum RaceResult {
    Won(String),
    Lost,
    Other(String),
}

/// K clients log in and list (spread over every center given), then all
/// select one free slot at once: exactly one may be granted it, by any
/// reading of a grant.
pub(in crate::check) fn race(run: &mut Run) -> Outcome {
    let config = run.config();
    let index = match run.free_now() {
        Ok(Some(listed)) if !listed.is_empty() => listed[0],
        Ok(_) => return skip("no free slot left to race for"),
        Err(e) => return fail(e),
    };
    let barrier = Barrier::new(config.race);
    let (shared, centers) = (run.shared, &run.centers);
    let results: Vec<RaceResult> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..config.race)
            .map(|k| {
                let barrier = &barrier;
                let center = centers[k % centers.len()];
                scope.spawn(move || {
                    let ready = Session::open(shared, center).and_then(|mut c| {
                        c.list()?;
                        Ok(c)
                    });
                    // Everyone waits at the barrier, ready or not, so no
                    // racer is left waiting for one that failed.
                    barrier.wait();
                    let mut c = match ready {
                        Ok(c) => c,
                        Err(evidence) => return RaceResult::Other(evidence),
                    };
                    match c.select(index) {
                        Ok((Reading::Grant, answer)) => RaceResult::Won(answer),
                        Ok((Reading::NotAvailable, _)) => RaceResult::Lost,
                        Ok((_, answer)) => RaceResult::Other(format!("got '{}'", shown(&answer))),
                        Err(evidence) => RaceResult::Other(evidence),
                    }
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| RaceResult::Other("the racer thread panicked".into()))
            })
            .collect()
    });
    let (mut winners, mut losers, mut others) = (Vec::new(), 0, Vec::new());
    for (k, result) in results.iter().enumerate() {
        match result {
            RaceResult::Won(answer) => {
                winners.push(format!("client {} got '{}'", k + 1, quote(answer)));
            }
            RaceResult::Lost => losers += 1,
            RaceResult::Other(what) => others.push(format!("client {}: {what}", k + 1)),
        }
    }
    let mut evidence = if winners.len() > 1 {
        format!(
            "DOUBLE BOOKING: slot {index} given to {} clients ({}); {losers} got 'notavailable'",
            winners.len(),
            winners.join(", "),
        )
    } else {
        format!(
            "slot {index}: {} granted ({}), {losers} got 'notavailable'",
            winners.len(),
            winners.join(", ")
        )
    };
    if !others.is_empty() {
        evidence.push_str(&format!(
            "; {} other: {}",
            others.len(),
            others
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if winners.len() == 1 && others.is_empty() {
        pass(evidence)
    } else if winners.len() == 1 {
        warn(evidence)
    } else {
        fail(evidence)
    }
}

pub(in crate::check) fn before_login_available(run: &mut Run) -> Outcome {
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.ask("available") {
        Ok(answer) => match read(&answer) {
            Reading::Error => pass(c.last_exchange()),
            Reading::List(_) => {
                c.log
                    .push("slots listed on a connection that never logged in".into());
                fail(c.evidence())
            }
            _ => warn(format!("{}, expected 'error ...'", c.evidence())),
        },
        Err(e) => warn(format!("{e}, expected 'error ...'")),
    }
}

pub(in crate::check) fn before_login_selection(run: &mut Run) -> Outcome {
    let free = run.free_now().ok().flatten().unwrap_or_default();
    let target = free.last().copied().unwrap_or(1);
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.select(target) {
        Ok((Reading::Grant, _)) => {
            c.log.push(format!(
                "slot {target} booked on a connection that never logged in"
            ));
            fail(c.evidence())
        }
        Ok((Reading::Error, _)) => {
            if free.contains(&target) {
                let after = run.free_now().ok().flatten().unwrap_or_default();
                if !after.contains(&target) {
                    c.log.push(format!(
                        "slot {target} was free before and is no longer listed: reserved without login"
                    ));
                    return fail(c.evidence());
                }
                c.log.push(format!("slot {target} is still listed"));
            }
            pass(c.last_exchange())
        }
        Ok(_) => warn(format!("{}, expected 'error ...'", c.evidence())),
        Err(e) => warn(format!("{e}, expected 'error ...'")),
    }
}
