//! The wording registry of `medsim check`: each kind of answer whose words
//! PROTOCOL.md fixes, what was seen of it as the cases ran, and the
//! `wording/...` cases that report each departure once.
//!
//! The other cases read answers tolerantly and judge meaning; they note
//! here how each answer was worded.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::harness::{Case, Need, case, pass, skip, warn};

/// A kind of wording the protocol fixes, noted as answers come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Word {
    Success,
    Failure,
    NotAvailable,
    List,
    Grant,
    Greeting,
    Close,
    Padding,
    Framing,
}

impl Word {
    const ALL: [Word; 9] = [
        Word::Success,
        Word::Failure,
        Word::NotAvailable,
        Word::List,
        Word::Grant,
        Word::Greeting,
        Word::Close,
        Word::Padding,
        Word::Framing,
    ];

    pub(super) fn id(self) -> &'static str {
        match self {
            Word::Success => "wording/success",
            Word::Failure => "wording/failure",
            Word::NotAvailable => "wording/notavailable",
            Word::List => "wording/list",
            Word::Grant => "wording/grant",
            Word::Greeting => "wording/greeting",
            Word::Close => "wording/close-after-failure",
            Word::Padding => "wording/padding",
            Word::Framing => "wording/framing",
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Word::Success => "wording: 'success'",
            Word::Failure => "wording: 'failure'",
            Word::NotAvailable => "wording: 'notavailable'",
            Word::List => "wording: the list's form",
            Word::Grant => "wording: 'DOCTOR PORT'",
            Word::Greeting => "wording: no greeting",
            Word::Close => "wording: closes after 'failure'",
            Word::Padding => "wording: nothing after an answer's end",
            Word::Framing => "wording: answers framed in the dialect asked",
        }
    }

    /// What PROTOCOL.md says, for the evidence.
    pub(super) fn rule(self) -> &'static str {
        match self {
            Word::Success => "PROTOCOL.md's word is 'success'",
            Word::Failure => "PROTOCOL.md's word is 'failure'",
            Word::NotAvailable => "PROTOCOL.md's word is 'notavailable'",
            Word::List => "PROTOCOL.md: 'INDEX DAY TIME' triples separated by single spaces",
            Word::Grant => "PROTOCOL.md: 'DOCTOR PORT'",
            Word::Greeting => "PROTOCOL.md: the center reads 'authenticate' first",
            Word::Close => "PROTOCOL.md: 'failure' and closes",
            Word::Padding => {
                "an answer is its first C string: what follows it before the next request is \
                 stale (read as C reads it, never as the next answer)"
            }
            Word::Framing => {
                "asked in lines, the center answered with C strings: check read them so; \
                 check it with --dialect classic"
            }
        }
    }
}

/// What was seen of one kind of wording.

#[derive(Debug, Default)]
pub(super) struct Seen {
    pub(super) conforming: usize,
    /// The first departure: its evidence and the case it came in.
    pub(super) departure: Option<(String, String)>,
    pub(super) departures: usize,
}

/// What every case noted of the wording, kind by kind.
#[derive(Debug, Default)]
pub(super) struct Wording {
    pub(super) seen: Mutex<BTreeMap<Word, Seen>>,
}

impl Wording {
    /// Notes one answer of kind `word`; `evidence` and `case` describe the
    /// first departure.
    pub(super) fn note(
        &self,
        word: Word,
        conforming: bool,
        case: &str,
        evidence: impl FnOnce() -> String,
    ) {
        let mut wording = self.seen.lock();
        let seen = wording.entry(word).or_default();
        if conforming {
            seen.conforming += 1;
        } else {
            seen.departures += 1;
            if seen.departure.is_none() {
                seen.departure = Some((evidence(), case.to_owned()));
            }
        }
    }
}

/// One case per kind of wording: PASS when every answer of that kind had
/// PROTOCOL.md's words, WARN with the first departure, SKIP when none came.
pub(super) fn wording_cases() -> Vec<Case<'static>> {
    Word::ALL
        .into_iter()
        .map(|word| {
            case(word.id(), word.name(), Need::Nothing, move |run| {
                let wording = run.shared.wording.seen.lock();
                match wording.get(&word) {
                    Some(Seen {
                        departure: Some((evidence, case)),
                        departures,
                        ..
                    }) => warn(format!(
                        "{evidence} (first in case '{case}'; {departures} such answers); {}",
                        word.rule()
                    )),
                    Some(seen) => pass(format!("as PROTOCOL.md says ({} seen)", seen.conforming)),
                    None => skip("no such answer was seen"),
                }
            })
        })
        .collect()
}
