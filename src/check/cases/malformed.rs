//! Malformed messages: each in a session of its own must get `error ...`,
//! never a login, a list or a grant.

use crate::check::harness::{Outcome, Run, fail, not_run, pass, warn};
use crate::check::session::{Reading, Session, read};
use crate::protocol::Dialect;

/// An index no center should have.
const MISSING_INDEX: u64 = 999_999_999;

pub(in crate::check) struct Malformed {
    pub(in crate::check) id: &'static str,
    pub(in crate::check) name: &'static str,
    pub(in crate::check) after: Stage,
    pub(in crate::check) bad: Bad,
}

impl Malformed {
    /// Whether a center may take it for a login: a center that checks an
    /// empty or short `authenticate` against the last credentials it saw
    /// lets it in right after someone's good login.
    pub(in crate::check) fn may_bypass_login(&self) -> bool {
        matches!(
            self.id,
            "empty" | "authenticate-0-args" | "authenticate-1-arg"
        )
    }
}

/// How far a session goes, correctly, before its malformed message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::check) enum Stage {
    Connected,
    Listed,
}

pub(in crate::check) enum Bad {
    /// Text framed in the session's dialect.
    Text(String),
    /// Bytes sent as they are, with a name for the evidence.
    Bytes(&'static str, Vec<u8>),
}

pub(in crate::check) fn malformed_messages(dialect: Dialect) -> Vec<Malformed> {
    let terminator: &[u8] = match dialect {
        Dialect::Line => b"\n",
        Dialect::Classic => b"\0",
    };
    let mut long = vec![b'a'; 64 * 1024];
    long.extend_from_slice(terminator);
    let mut not_utf8 = b"authenticate \xff\xfe x".to_vec();
    not_utf8.extend_from_slice(terminator);
    let text = |id, name, after, text: &str| Malformed {
        id,
        name,
        after,
        bad: Bad::Text(text.to_owned()),
    };
    vec![
        text("empty", "empty message", Stage::Connected, ""),
        text(
            "unknown-command",
            "unknown command",
            Stage::Connected,
            "hello",
        ),
        text(
            "authenticate-0-args",
            "authenticate with no arguments",
            Stage::Connected,
            "authenticate",
        ),
        text(
            "authenticate-1-arg",
            "authenticate with 1 argument",
            Stage::Connected,
            "authenticate someone",
        ),
        text(
            "authenticate-3-args",
            "authenticate with 3 arguments",
            Stage::Connected,
            "authenticate a b c",
        ),
        text(
            "selection-abc",
            "selection abc",
            Stage::Listed,
            "selection abc",
        ),
        text("selection-0", "selection 0", Stage::Listed, "selection 0"),
        text(
            "selection-negative",
            "selection -1",
            Stage::Listed,
            "selection -1",
        ),
        text(
            "selection-64-bits",
            "selection past 64 bits",
            Stage::Listed,
            "selection 99999999999999999999",
        ),
        Malformed {
            id: "selection-missing",
            name: "selection of an index that does not exist",
            after: Stage::Listed,
            bad: Bad::Text(format!("selection {MISSING_INDEX}")),
        },
        Malformed {
            id: "64k",
            name: "64 KiB message",
            after: Stage::Connected,
            bad: Bad::Bytes("64 KiB of 'a'", long),
        },
        Malformed {
            id: "not-utf8",
            name: "bytes that are not UTF-8",
            after: Stage::Connected,
            bad: Bad::Bytes("'authenticate \\xff\\xfe x'", not_utf8),
        },
    ]
}

/// A malformed message, in a session of its own, gets `error ...`; a
/// login, a list or a grant for it fails, any other answer warns.
pub(in crate::check) fn malformed(run: &mut Run, case: &Malformed) -> Outcome {
    let mut c = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if case.after == Stage::Listed {
        match c.list() {
            Ok(Some(listed)) if !listed.is_empty() => {}
            Ok(_) => {
                return not_run(
                    "no free slot: the center answers 'notavailable' and closes, \
                     so no selection can follow",
                );
            }
            Err(e) => return fail(e),
        }
    }
    let answer = match &case.bad {
        Bad::Text(text) => c.ask(text),
        Bad::Bytes(what, bytes) => c.ask_bytes(what, bytes),
    };
    // A connection that never logged in and is still open after its
    // malformed message: a patient would go on to list and select. A
    // center that lets it is a login bypass needing a second message.
    let let_in = matches!(&answer, Ok(a) if read(a) == Reading::Success);
    // (Not after raw bytes: a 64 KiB message leaves a classic center
    // answering chunk by chunk.)
    if case.after == Stage::Connected
        && matches!(case.bad, Bad::Text(_))
        && !let_in
        && (answer.is_ok() || c.silent)
        && let Some(bypass) = walk_on(&mut c)
    {
        return fail(bypass);
    }
    match answer {
        Ok(answer) => match read(&answer) {
            Reading::Error => pass(c.last_exchange()),
            Reading::Success if case.after == Stage::Connected => {
                c.log.push("let in without valid credentials".into());
                fail(c.evidence())
            }
            Reading::List(_) if case.after == Stage::Connected => {
                c.log
                    .push("slots listed on a connection that never logged in".into());
                fail(c.evidence())
            }
            Reading::Grant => {
                c.log.push("a slot granted for it".into());
                fail(c.evidence())
            }
            _ => warn(format!("{}, expected 'error ...'", c.evidence())),
        },
        Err(e) => warn(format!("{e}, expected 'error ...'")),
    }
}

/// After a malformed first message the center did not close on: asks
/// for the list, as a patient would go on. `Some` with the evidence when
/// the list came (selecting is left to `login/selection`: a slot booked
/// here would be missing from the cases that need one).
fn walk_on(c: &mut Session) -> Option<String> {
    let mark = c.log.len();
    let listed = c
        .ask("available")
        .ok()
        .is_some_and(|answer| matches!(read(&answer), Reading::List(_)));
    if !listed {
        c.log.truncate(mark);
        return None;
    }
    c.log
        .push("LOGIN BYPASS: slots listed on a connection that never logged in".into());
    Some(c.evidence())
}
