//! The cases of `medsim check`, in the order they run: authentication and
//! its bypasses ([`auth`]), the list, booking and the race ([`booking`]),
//! malformed messages ([`malformed`]), and the doctors ([`doctor`]).

use super::Config;
use super::harness::{Case, Need, case, judged};

use std::sync::Arc;

use auth::{
    bad_password, bypass_after_login, list_after_failure, second_authenticate,
    select_after_failure, shared_flag, unknown_user,
};
use booking::{
    before_login_available, before_login_selection, booking, list_format, race, taken_slot,
};
use malformed::{Malformed, malformed, malformed_messages};
use session::{concurrent, silent_close};

mod auth;
mod booking;
mod doctor;
mod malformed;
mod session;

pub(in crate::check) use doctor::{ask_doctor, doctor_cases, doctor_cases_for};

pub(in crate::check) fn center_cases(config: &Config) -> Vec<Case<'static>> {
    let (bypasses, malformed_rest): (Vec<_>, Vec<_>) = malformed_messages(config.framing.dialect)
        .into_iter()
        .partition(Malformed::may_bypass_login);
    let bypasses: Vec<Arc<Malformed>> = bypasses.into_iter().map(Arc::new).collect();
    let mut cases = vec![case(
        "session/silent-close",
        "connect and close without a word",
        Need::Center,
        silent_close,
    )];
    cases.push(case(
        "auth/bad-password",
        "auth-failure",
        Need::Center,
        bad_password,
    ));
    // Before any good login: no credentials are left over for them to
    // pass with (the same messages run again right after a good login).
    for m in &bypasses {
        let m = Arc::clone(m);
        cases.push(case(
            format!("malformed/{}", m.id),
            format!("malformed: {} (before any good login)", m.name),
            Need::Center,
            move |run| malformed(run, &m),
        ));
    }
    cases.extend([
        case(
            "auth/unknown-user",
            "auth-failure: unknown user",
            Need::Center,
            unknown_user,
        ),
        case(
            "auth/list-after-failure",
            "after failure: available",
            Need::Center,
            list_after_failure,
        ),
        case(
            "auth/select-after-failure",
            "after failure: selection",
            Need::Center,
            select_after_failure,
        ),
        case("auth/success", "auth-success", Need::Center, auth::success),
        case(
            "session/concurrent",
            "serves two sessions at once",
            Need::Center,
            concurrent,
        ),
        case(
            "auth/shared-flag",
            "bad credentials right after another login",
            Need::Center,
            shared_flag,
        ),
    ]);
    for m in &bypasses {
        let m = Arc::clone(m);
        cases.push(case(
            format!("auth/after-login/{}", m.id),
            format!("{} right after another session's good login", m.name),
            Need::Center,
            move |run| bypass_after_login(run, &m),
        ));
    }
    cases.extend([
        case(
            "auth/second-authenticate",
            "malformed: a second authenticate",
            Need::Center,
            second_authenticate,
        ),
        case("list/format", "list-format", Need::Center, list_format),
        case(
            "book/first",
            "booking (reserves 1 slot)",
            Need::Center,
            booking,
        ),
        case("book/taken", "taken-slot", Need::Center, taken_slot),
        case(
            "race/one-slot",
            format!(
                "race of {} clients for one slot (reserves 1 slot)",
                config.race
            ),
            Need::Center,
            race,
        ),
        case(
            "book/still-taken",
            "taken-slot, still, after the race",
            Need::Center,
            taken_slot,
        ),
        case(
            "login/available",
            "before login: available",
            Need::Center,
            before_login_available,
        ),
        case(
            "login/selection",
            "before login: selection",
            Need::Center,
            before_login_selection,
        ),
    ]);
    for m in malformed_rest {
        let (id, name) = (
            format!("malformed/{}", m.id),
            format!("malformed: {}", m.name),
        );
        cases.push(case(id, name, Need::Center, move |run| malformed(run, &m)));
    }
    cases.push(case(
        "session/normal",
        "still serves a normal session",
        Need::Center,
        |run| {
            judged(run.open().and_then(|mut c| {
                c.list()?;
                Ok(c.last_exchange())
            }))
        },
    ));
    cases
}
