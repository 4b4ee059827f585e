//! The cases of `medsim check`, in the order they run: authentication and
//! its bypasses ([`auth`]), the list, booking and the race ([`booking`]),
//! malformed messages ([`malformed`]), and the doctors ([`doctor`]).

use super::Config;
use super::harness::{Case, Need, case, judged};
use auth::{
    bad_password, list_after_failure, second_authenticate, select_after_failure, shared_flag,
    unknown_user,
};
use booking::{
    before_login_available, before_login_selection, booking, list_format, race, taken_slot,
};
use malformed::{malformed, malformed_messages};

mod auth;
mod booking;
mod doctor;
mod malformed;

pub(in crate::check) use doctor::{ask_doctor, doctor_cases};

pub(in crate::check) fn center_cases(config: &Config) -> Vec<Case<'static>> {
    let mut cases = vec![
        case("auth/bad-password", "auth-failure", Need::Center, |run| {
            bad_password(run)
        }),
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
        case("auth/success", "auth-success", Need::Center, |run| {
            judged(run.open().and_then(|mut c| {
                c.log_in()?;
                Ok(c.last_exchange())
            }))
        }),
        case(
            "auth/shared-flag",
            "bad credentials right after another login",
            Need::Center,
            shared_flag,
        ),
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
    ];
    for m in malformed_messages(config.framing.dialect) {
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
