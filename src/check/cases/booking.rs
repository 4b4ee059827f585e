//! The list, a booking, the taken slot, the race for one slot, and what a
//! connection that never logged in may do.

use std::sync::Barrier;
use std::sync::atomic::Ordering;

use crate::check::Verdict;
use crate::check::harness::{Booked, Outcome, Run, fail, not_run, pass, skip, warn};
use crate::check::session::{Reading, Session, grant_fits, quote, read, shown};
use crate::protocol::{self, Dialect, Framing, SelectionAnswer, SlotsAnswer, strict_assignment};

/// The list reads as slots; when its slots are not the data's (another
/// `availabilities.txt`), grants are not held to the data.
pub(in crate::check) fn list_format(run: &mut Run) -> Outcome {
    let outcome = run.open().and_then(|mut c| {
        let listed = c.list()?;
        if listed.is_none() {
            c.log
                .push("(no free slot: 'notavailable' is the right answer)".into());
        }
        Ok((listed, c.last_answer.clone(), c.last_exchange()))
    });
    match outcome {
        Ok((listed, answer, mut evidence)) => {
            run.listed = Some(listed.unwrap_or_default());
            if let Ok(SlotsAnswer::Slots(rows)) = protocol::parse_slots_answer(&answer) {
                let data = &run.config().slots;
                let differs = rows.iter().find(|row| {
                    !data.iter().any(|d| {
                        d.index == row.index
                            && d.day.eq_ignore_ascii_case(&row.day)
                            && d.time.eq_ignore_ascii_case(&row.time)
                    })
                });
                if let Some(row) = differs {
                    run.data_fits = false;
                    evidence.push_str(&format!(
                        "; slot '{row}' is not in the data (--fixtures), so grants are not \
                         held to the data's doctors and ports"
                    ));
                }
            }
            pass(evidence)
        }
        Err(e) => fail(e),
    }
}

/// Books the lowest listed slot, finding the form of selection the center
/// takes: `selection N`, or (a departure, WARN) a bare `N`.
pub(in crate::check) fn booking(run: &mut Run) -> Outcome {
    let index = match run.free_now() {
        Ok(Some(listed)) if !listed.is_empty() => listed[0],
        Ok(_) => return not_run("no free slot listed to book: give the center free slots"),
        Err(e) => return fail(e),
    };
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = c.list() {
        return fail(e);
    }
    let mut tried_bare = None;
    let mut selected = c.select(index);
    if !matches!(selected, Ok((Reading::Grant | Reading::NotAvailable, _))) {
        // Refused or dropped: does it take a bare index, as some classic
        // centers do? Asked in a session of its own.
        let first = c.evidence();
        run.shared.bare_selection.store(true, Ordering::Relaxed);
        match run.open().and_then(|mut bare| {
            bare.list()?;
            let answer = bare.select(index);
            Ok((bare, answer))
        }) {
            Ok((bare, answer @ Ok((Reading::Grant, _)))) => {
                tried_bare = Some(first);
                c = bare;
                selected = answer;
            }
            _ => run.shared.bare_selection.store(false, Ordering::Relaxed),
        }
    }
    match selected {
        Ok((Reading::Grant, answer)) => {
            let fits = if run.data_fits {
                grant_fits(run.config(), index, &answer)
            } else {
                Ok(())
            };
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
            if let Err(wrong) = fits {
                return fail(format!("{}; {wrong}", c.last_exchange()));
            }
            match tried_bare {
                Some(first) => warn(format!(
                    "{first}; then {}: the center takes a bare index as the selection, \
                     not PROTOCOL.md's 'selection {index}' (the race uses the bare form)",
                    c.last_exchange()
                )),
                None => pass(c.last_exchange()),
            }
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
        return not_run("no slot was booked");
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
        Ok(_) => {
            return not_run(
                "no free slot left to race for: the race did not run (give the center free slots)",
            );
        }
        Err(e) => return fail(e),
    };
    // The list's close may have killed the center: it races fresh.
    run.settle();
    let (shared, centers) = (run.shared, run.centers.clone());
    let select = |ready: Result<Session, String>| {
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
    };
    let listed = |center| {
        Session::open(shared, center).and_then(|mut c| {
            c.list()?;
            Ok(c)
        })
    };
    let in_turn = shared.one_at_a_time.load(Ordering::Relaxed);
    // In turns: the turn during which the center died, ending the race.
    let mut cut_short = None;
    let results: Vec<RaceResult> = if in_turn {
        // A second session waits for the first to close: racing them at
        // once would only time out. They take turns, and still only one
        // may be granted the slot. A center that dies as a turn ends
        // cannot be raced: restarted, it would have forgotten the grant.
        let mut results = Vec::new();
        for k in 0..config.race {
            let result = select(listed(centers[k % centers.len()]));
            let failed = matches!(result, RaceResult::Other(_));
            results.push(result);
            if failed && run.center_died_just_now() {
                cut_short = Some(k + 1);
                break;
            }
        }
        results
    } else {
        let barrier = Barrier::new(config.race);
        std::thread::scope(|scope| {
            let racers: Vec<_> = (0..config.race)
                .map(|k| {
                    let (barrier, select, listed) = (&barrier, &select, &listed);
                    let center = centers[k % centers.len()];
                    scope.spawn(move || {
                        let ready = listed(center);
                        // Everyone waits at the barrier, ready or not, so no
                        // racer is left waiting for one that failed.
                        barrier.wait();
                        select(ready)
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
        })
    };
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
    if in_turn {
        evidence.insert_str(
            0,
            "the center serves one session at a time, so the clients took turns: ",
        );
    }
    let wrong = results.iter().find_map(|r| match r {
        RaceResult::Won(answer) if run.data_fits => grant_fits(config, index, answer).err(),
        _ => None,
    });
    if let Some(wrong) = wrong {
        fail(format!("{evidence}; {wrong}"))
    } else if winners.len() > 1 {
        fail(evidence)
    } else if let Some(turn) = cut_short {
        // Restarted, it would have forgotten the grant: no race to go on.
        not_run(format!(
            "the race could not run to its end: the center died during client {turn}'s turn; {evidence}"
        ))
    } else if winners.is_empty() && run.center_dead() {
        // Nobody can win a race the center does not live through: that is
        // its death's to answer for (blamed on its input), not the race's.
        not_run(format!(
            "the race could not run: the center died during it; {evidence}"
        ))
    } else if winners.len() == 1 && others.is_empty() {
        pass(evidence)
    } else if winners.len() == 1 {
        warn(evidence)
    } else {
        fail(evidence)
    }
}

pub(in crate::check) fn before_login_available(run: &mut Run) -> Outcome {
    in_every_framing(run, |run, framing| {
        let mut c = match run.open_in(framing) {
            Ok(c) => c,
            Err(e) => return fail(e).into(),
        };
        match c.ask("available") {
            Ok(answer) => match read(&answer) {
                Reading::Error => pass(c.last_exchange()).into(),
                Reading::List(_) => {
                    c.log
                        .push("slots listed on a connection that never logged in".into());
                    WithoutLogin::served(c.evidence())
                }
                _ => warn(format!("{}, expected 'error ...'", c.evidence())).into(),
            },
            Err(e) => warn(format!("{e}, expected 'error ...'")).into(),
        }
    })
}

/// What a connection that never logged in met: the case's outcome, and
/// whether the center served it (a list, a grant), which only a center
/// can be blamed for. Failing to connect, say, is no such finding.
struct WithoutLogin {
    outcome: Outcome,
    served: bool,
}

impl WithoutLogin {
    fn served(evidence: String) -> WithoutLogin {
        WithoutLogin {
            outcome: fail(evidence),
            served: true,
        }
    }
}

impl From<Outcome> for WithoutLogin {
    fn from(outcome: Outcome) -> WithoutLogin {
        WithoutLogin {
            outcome,
            served: false,
        }
    }
}

/// Runs a case whose sessions never log in, sent in the framing sessions
/// use, and again in the configured one when they differ (a center that
/// needs a newline after the password may still take other requests as C
/// strings, and serve them without a login): the first failure, or the
/// first run's outcome. The second run's failure is the center's only when
/// it served that run; otherwise (no connection, say) it is told beside
/// the first run's verdict.
fn in_every_framing(run: &mut Run, case: impl Fn(&mut Run, Framing) -> WithoutLogin) -> Outcome {
    let used = run.shared.framing();
    let outcome = case(run, used).outcome;
    let configured = run.config().framing;
    if outcome.verdict == Verdict::Fail || configured.dialect == used.dialect {
        return outcome;
    }
    let other = case(run, configured);
    let (form, why) = match used.dialect {
        Dialect::Line => ("lines", "the login needs its newline"),
        Dialect::Classic => ("C strings", "the login is taken only as one"),
    };
    let dialect = configured.dialect;
    if other.served {
        fail(format!(
            "sessions go in {form} here ({why}), but without a login the center also serves \
             the configured framing ({dialect}); in {form}: {}; in {dialect}: {}",
            outcome.evidence, other.outcome.evidence
        ))
    } else if other.outcome.verdict == Verdict::Fail {
        Outcome {
            verdict: outcome.verdict,
            evidence: format!(
                "{}; in {dialect}, the configured framing, it could not be checked: {}",
                outcome.evidence, other.outcome.evidence
            ),
        }
    } else {
        outcome
    }
}

/// A connection that never logs in walks the session a patient would:
/// `available`, then a selection of a free slot (alone, on a new
/// connection, when the center closed after `available`). Nothing may be
/// booked.
pub(in crate::check) fn before_login_selection(run: &mut Run) -> Outcome {
    in_every_framing(run, walk_without_login)
}

fn walk_without_login(run: &mut Run, framing: Framing) -> WithoutLogin {
    let free = run.free_now().ok().flatten().unwrap_or_default();
    let target = free.last().copied().unwrap_or(1);
    let mut c = match run.open_in(framing) {
        Ok(c) => c,
        Err(e) => return fail(e).into(),
    };
    if c.ask("available").is_err() {
        // Closed before the next opens: its close is an input of its own
        // (and a center serving one session at a time waits for it).
        let before = c.evidence();
        drop(c);
        c = match run.open_in(framing) {
            Ok(mut alone) => {
                alone.log.insert(0, format!("{before}; a new connection"));
                alone
            }
            Err(e) => return fail(e).into(),
        };
    }
    match c.select(target) {
        Ok((Reading::Grant, _)) => {
            c.log.push(format!(
                "BOOKED WITHOUT LOGIN: slot {target} granted on a connection that never logged in"
            ));
            WithoutLogin::served(c.evidence())
        }
        Ok((Reading::Error | Reading::NotAvailable | Reading::Failure, _)) | Err(_) => {
            let mut evidence = c.evidence();
            // Closed first: a center serving one session at a time would
            // keep the next one waiting behind it.
            drop(c);
            if free.contains(&target) {
                // Only a list read after says the slot went: a center that
                // died meanwhile (raksha, on this very input) lists nothing,
                // and that is no booking.
                match run.free_now() {
                    Ok(Some(after)) if after.contains(&target) => {
                        evidence.push_str(&format!(", slot {target} is still listed"));
                    }
                    Ok(_) => {
                        return WithoutLogin::served(format!(
                            "{evidence}, BOOKED WITHOUT LOGIN: slot {target} was free before and is no longer listed"
                        ));
                    }
                    Err(why) => evidence.push_str(&format!(
                        ", the list could not be read after ({why}): whether slot {target} was booked is not known"
                    )),
                }
            }
            pass(evidence).into()
        }
        Ok(_) => warn(format!("{}, expected 'error ...'", c.evidence())).into(),
    }
}
