//! The tolerant session of `medsim check`: one conversation with a center,
//! read as medsim's classic client reads it (`Success`, `not available`, a
//! list one slot a line, a port alone all understood), its exchanges kept
//! as the case's evidence, and how each answer was worded noted in the
//! [`Wording`] registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::Config;
use super::wording::{Word, Wording};
use crate::client::{self, Closing};
use crate::protocol::{
    self, AuthAnswer, SelectionAnswer, SlotsAnswer, strict_assignment, strict_listing_for, words,
};

/// How long a closed-after-failure connection may take to close.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long to wait for a greeting on the first connection.
pub(super) const GREETING_WAIT: Duration = Duration::from_millis(300);

/// What a whole run shares, race threads included.
pub(super) struct Shared<'a> {
    pub(super) config: &'a Config,
    pub(super) wording: Wording,
    /// The center sends a message before reading `authenticate`.
    pub(super) greets: AtomicBool,
    /// Some answer came from the center at all.
    pub(super) answered: AtomicBool,
    /// The name of the case running, for the wording's evidence.
    pub(super) case: Mutex<String>,
}

impl Shared<'_> {
    pub(super) fn note(&self, word: Word, conforming: bool, evidence: impl FnOnce() -> String) {
        self.wording
            .note(word, conforming, &self.case.lock(), evidence);
    }
}

/// How an answer reads, whatever its wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reading {
    Success,
    Failure,
    List(Vec<u64>),
    NotAvailable,
    Grant,
    Error,
    Other,
}

pub(super) fn read(answer: &str) -> Reading {
    if let Ok(AuthAnswer::Error(_)) = protocol::parse_auth_answer(answer) {
        return Reading::Error;
    }
    match protocol::parse_auth_answer(answer) {
        Ok(AuthAnswer::Success) => return Reading::Success,
        Ok(AuthAnswer::Failure) => return Reading::Failure,
        _ => {}
    }
    match protocol::parse_slots_answer(answer) {
        Ok(SlotsAnswer::NotAvailable) => return Reading::NotAvailable,
        Ok(SlotsAnswer::Slots(listings)) => {
            return Reading::List(listings.iter().map(|l| l.index).collect());
        }
        _ => {}
    }
    match protocol::parse_selection_answer(answer) {
        Ok(SelectionAnswer::Assigned { .. }) => Reading::Grant,
        _ => Reading::Other,
    }
}

/// One tolerant conversation with a center, its exchanges kept as
/// evidence.
pub(super) struct Session<'s> {
    pub(super) shared: &'s Shared<'s>,
    pub(super) link: client::Conversation,
    pub(super) log: Vec<String>,
}

impl<'s> Session<'s> {
    pub(super) fn open(shared: &'s Shared<'s>, center: SocketAddr) -> Result<Session<'s>, String> {
        let config = shared.config;
        let link = client::Conversation::connect(center, config.framing, config.timeout)
            .map_err(|e| format!("cannot connect to {center}: {e}"))?;
        let mut session = Session {
            shared,
            link,
            log: Vec::new(),
        };
        if shared.greets.load(Ordering::Relaxed) {
            // Read and drop the greeting, as a classic client must.
            match session.link.receive() {
                Ok(greeting) => session
                    .log
                    .push(format!("greeted with '{}'", quote(&greeting))),
                Err(why) => session.log.push(format!("no greeting this time ({why})")),
            }
        }
        Ok(session)
    }

    /// On a first connection: waits briefly for a message the center
    /// sends unasked, and notes it.
    pub(super) fn detect_greeting(&mut self) {
        let _ = self.link.set_answer_timeout(GREETING_WAIT);
        let greeting = self.link.receive();
        let _ = self.link.set_answer_timeout(self.shared.config.timeout);
        match greeting {
            Ok(text) => {
                self.shared.greets.store(true, Ordering::Relaxed);
                self.shared.answered.store(true, Ordering::Relaxed);
                self.log.push(format!(
                    "greeted with '{}' before any request",
                    quote(&text)
                ));
                self.shared.note(Word::Greeting, false, || {
                    format!("the center sent '{}' before any request", quote(&text))
                });
            }
            Err(_) => self.shared.note(Word::Greeting, true, String::new),
        }
    }

    pub(super) fn ask(&mut self, text: &str) -> Result<String, String> {
        self.log.push(format!("sent '{}'", shown(text)));
        if let Err(e) = self.link.send(text) {
            self.log.push(format!("send failed: {e}"));
            return Err(self.evidence());
        }
        self.receive()
    }

    pub(super) fn ask_bytes(&mut self, what: &str, bytes: &[u8]) -> Result<String, String> {
        self.log.push(format!("sent {what}"));
        if let Err(e) = self.link.send_raw(bytes) {
            self.log.push(format!("send failed: {e}"));
            return Err(self.evidence());
        }
        self.receive()
    }

    pub(super) fn receive(&mut self) -> Result<String, String> {
        match self.link.receive() {
            Ok(answer) => {
                self.shared.answered.store(true, Ordering::Relaxed);
                self.log.push(format!("got '{}'", quote(&answer)));
                Ok(answer)
            }
            Err(why) => {
                self.log.push(why.to_string());
                Err(self.evidence())
            }
        }
    }

    /// Sends `authenticate USER PASS`; how the answer reads, its wording
    /// noted.
    pub(super) fn authenticate(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<(Reading, String), String> {
        let answer = self.ask(&format!("authenticate {user} {password}"))?;
        let reading = read(&answer);
        match reading {
            Reading::Success => self
                .shared
                .note(Word::Success, answer == words::SUCCESS, || {
                    format!("got '{}' for a good login", quote(&answer))
                }),
            Reading::Failure => self
                .shared
                .note(Word::Failure, answer == words::FAILURE, || {
                    format!("got '{}' for a bad login", quote(&answer))
                }),
            _ => {}
        }
        Ok((reading, answer))
    }

    /// Logs in with the configured credentials (any word for success).
    pub(super) fn log_in(&mut self) -> Result<(), String> {
        let config = self.shared.config;
        let (reading, _) = self.authenticate(&config.username, &config.password)?;
        if reading != Reading::Success {
            self.log.push("expected 'success'".into());
            return Err(self.evidence());
        }
        Ok(())
    }

    /// Sends `available`; the indexes listed, `None` for `notavailable`.
    pub(super) fn available(&mut self) -> Result<Option<Vec<u64>>, String> {
        let answer = self.ask("available")?;
        match read(&answer) {
            Reading::List(indexes) => {
                let strict = strict_listing_for(self.shared.config.framing.dialect, &answer);
                self.shared.note(Word::List, strict.is_ok(), || {
                    format!(
                        "got '{}': {}",
                        quote(&answer),
                        strict.err().unwrap_or_default()
                    )
                });
                Ok(Some(indexes))
            }
            Reading::NotAvailable => {
                self.note_not_available(&answer);
                Ok(None)
            }
            _ => {
                self.log
                    .push("expected a list of 'INDEX DAY TIME' slots or 'notavailable'".into());
                Err(self.evidence())
            }
        }
    }

    /// Logs in and lists.
    pub(super) fn list(&mut self) -> Result<Option<Vec<u64>>, String> {
        self.log_in()?;
        self.available()
    }

    /// Sends `selection INDEX`; the answer and how it reads, its wording
    /// noted.
    pub(super) fn select(&mut self, index: u64) -> Result<(Reading, String), String> {
        let answer = self.ask(&format!("selection {index}"))?;
        let reading = read(&answer);
        match reading {
            Reading::Grant => {
                self.shared
                    .note(Word::Grant, strict_assignment(&answer).is_some(), || {
                        format!("got '{}' for a slot granted", quote(&answer))
                    });
            }
            Reading::NotAvailable => self.note_not_available(&answer),
            _ => {}
        }
        Ok((reading, answer))
    }

    pub(super) fn note_not_available(&self, answer: &str) {
        self.shared
            .note(Word::NotAvailable, answer == words::NOT_AVAILABLE, || {
                format!("got '{}'", quote(answer))
            });
    }

    pub(super) fn closes(&mut self) -> bool {
        self.link.wait_for_close(CLOSE_WAIT) == Closing::Closed
    }

    pub(super) fn evidence(&self) -> String {
        self.log.join(", ")
    }

    pub(super) fn last_exchange(&self) -> String {
        self.log[self.log.len().saturating_sub(2)..].join(", ")
    }
}

/// Text as evidence shows it: passwords masked, long text shortened.
pub(super) fn shown(text: &str) -> String {
    quote(&crate::trace::mask_password(text))
}

/// Peer text as evidence quotes it: one line, long enough to read.
pub(super) fn quote(text: &str) -> String {
    protocol::shorten_to(text, 48)
}
