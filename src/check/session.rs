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
use crate::client::{self, Closing, NoAnswer};
use crate::protocol::{
    self, AuthAnswer, Dialect, SelectionAnswer, SlotsAnswer, strict_assignment, strict_listing_for,
    words,
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
    /// The run's first session has waited for a greeting.
    greeting_checked: AtomicBool,
    /// Some answer came from the center at all.
    pub(super) answered: AtomicBool,
    /// The name of the case running, for the wording's evidence.
    pub(super) case: Mutex<String>,
    /// What the running case sent and got no answer to (the center ended
    /// the connection instead): the inputs a death is blamed on.
    unanswered: Mutex<Vec<String>>,
    /// The running case sent the center something.
    sent_any: AtomicBool,
    /// Sessions closed so far, and how the last one ended: a death that
    /// follows a close is blamed on it.
    closes: std::sync::atomic::AtomicU64,
    last_close_said_nothing: AtomicBool,
    /// The center grants only a bare index (`1`), not `selection 1`.
    pub(super) bare_selection: AtomicBool,
    /// The center serves one session at a time: a second client waits
    /// until the first closes.
    pub(super) one_at_a_time: AtomicBool,
    /// Asked in lines, the center answered with C strings (noted once).
    answers_classic: AtomicBool,
    /// The center takes a login only ended by a newline (it compares the
    /// password with it): requests go as lines.
    pub(super) line_requests: AtomicBool,
    /// The center answers only capitalised commands (`Authenticate`).
    pub(super) capitalised: AtomicBool,
    /// Asked in lines, the center answers C strings and takes a login only
    /// as one: requests go as C strings.
    pub(super) c_string_requests: AtomicBool,
}

impl<'a> Shared<'a> {
    pub(super) fn new(config: &'a Config) -> Shared<'a> {
        Shared {
            config,
            wording: Wording::default(),
            greets: AtomicBool::new(false),
            greeting_checked: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            case: Mutex::new(String::new()),
            unanswered: Mutex::new(Vec::new()),
            sent_any: AtomicBool::new(false),
            closes: std::sync::atomic::AtomicU64::new(0),
            last_close_said_nothing: AtomicBool::new(false),
            bare_selection: AtomicBool::new(false),
            one_at_a_time: AtomicBool::new(false),
            answers_classic: AtomicBool::new(false),
            capitalised: AtomicBool::new(false),
            line_requests: AtomicBool::new(false),
            c_string_requests: AtomicBool::new(false),
        }
    }

    /// The framing sessions send in: the configured one, or lines once the
    /// center was found to take a login only with its newline, or C strings
    /// once a center asked in lines was found to take a login only so.
    pub(super) fn framing(&self) -> crate::protocol::Framing {
        // Lines only ever replace a configured classic dialect, C strings a
        // configured line one: the two never meet.
        let mut framing = self.doctor_framing();
        if self.line_requests.load(Ordering::Relaxed) {
            framing.dialect = Dialect::Line;
        }
        framing
    }

    /// The framing the doctors are asked in: the configured one, or C
    /// strings once the center or a doctor was found to take only them
    /// (a center's login needing its newline says nothing of the doctors).
    pub(super) fn doctor_framing(&self) -> crate::protocol::Framing {
        let mut framing = self.config.framing;
        if self.c_string_requests.load(Ordering::Relaxed) {
            framing.dialect = Dialect::Classic;
        }
        framing
    }

    /// Asked in lines, the center answered with C strings.
    pub(super) fn answers_classic(&self) -> bool {
        self.answers_classic.load(Ordering::Relaxed)
    }

    /// Marks the start of a case.
    pub(super) fn begin_case(&self, name: &str) {
        name.clone_into(&mut self.case.lock());
        self.unanswered.lock().clear();
        self.sent_any.store(false, Ordering::Relaxed);
    }

    /// Whether the running case sent the center anything.
    pub(super) fn sent_any(&self) -> bool {
        self.sent_any.load(Ordering::Relaxed)
    }

    /// What the running case sent without getting an answer, in order.
    pub(super) fn unanswered(&self) -> Vec<String> {
        self.unanswered.lock().clone()
    }

    /// How many sessions have been closed in the run.
    pub(super) fn closes(&self) -> u64 {
        self.closes.load(Ordering::Acquire)
    }

    /// The last close of a session, as an input a death is blamed on.
    pub(super) fn last_close(&self) -> String {
        if self.last_close_said_nothing.load(Ordering::Acquire) {
            NO_WORD_CLOSE.into()
        } else {
            CLOSE_AFTER_MESSAGES.into()
        }
    }

    /// Notes an input the server got and did not answer (a datagram, a
    /// message).
    pub(super) fn sent_unanswered(&self, text: &str) {
        self.unanswered.lock().push(text.to_owned());
    }

    /// A request in the form the center takes: its command word
    /// capitalised (`Authenticate`) when the center answers only that.
    pub(super) fn in_form(&self, text: &str) -> String {
        if !self.capitalised.load(Ordering::Relaxed) {
            return text.to_owned();
        }
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    /// The selection request for `index`, in the form the center takes.
    pub(super) fn selection(&self, index: u64) -> String {
        if self.bare_selection.load(Ordering::Relaxed) {
            index.to_string()
        } else {
            format!("selection {index}")
        }
    }
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
    /// The last message sent, as evidence shows it.
    last_sent: Option<String>,
    /// The last answer received.
    pub(super) last_answer: String,
    /// The last wait for an answer ended in silence, the connection open.
    pub(super) silent: bool,
    /// Sessions this thread had closed when the last message was sent.
    closes_at_send: u64,
}

thread_local! {
    /// Sessions closed by this thread: a case's own earlier session, closed
    /// while this one waited, may be what ended it; a racer's close on
    /// another thread says nothing of this one's message.
    static CLOSED_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn closed_here() -> u64 {
    CLOSED_HERE.with(std::cell::Cell::get)
}

/// A session's close as the input a death is blamed on.
const CLOSE_AFTER_MESSAGES: &str = "the close of a connection after its messages";
/// A close with nothing sent (a connect-and-close).
pub(super) const NO_WORD_CLOSE: &str = "a connection closed without a word";

impl Drop for Session<'_> {
    /// The close is an input too: some centers die of it.
    fn drop(&mut self) {
        // One input whatever came before it (answers, or silence): a center
        // that dies of every close is blamed once.
        self.shared
            .last_close_said_nothing
            .store(self.last_sent.is_none(), Ordering::Release);
        self.shared.closes.fetch_add(1, Ordering::AcqRel);
        CLOSED_HERE.with(|closed| closed.set(closed.get() + 1));
    }
}

impl<'s> Session<'s> {
    pub(super) fn open(shared: &'s Shared<'s>, center: SocketAddr) -> Result<Session<'s>, String> {
        Session::open_in(shared, center, shared.framing())
    }

    /// As [`Session::open`], sending in `framing`.
    pub(super) fn open_in(
        shared: &'s Shared<'s>,
        center: SocketAddr,
        framing: crate::protocol::Framing,
    ) -> Result<Session<'s>, String> {
        let config = shared.config;
        let link = client::Conversation::connect(center, framing, config.timeout)
            .map_err(|e| format!("cannot connect to {center}: {e}"))?;
        let mut session = Session {
            shared,
            link,
            log: Vec::new(),
            last_sent: None,
            last_answer: String::new(),
            silent: false,
            closes_at_send: 0,
        };
        if !shared.greeting_checked.swap(true, Ordering::Relaxed) {
            // The run's first session: does the center speak first?
            session.detect_greeting();
        } else if shared.greets.load(Ordering::Relaxed) {
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
    fn detect_greeting(&mut self) {
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

    /// Notes what came after the last answer and before this request:
    /// NUL padding conforms, anything else is stale text a C reader would
    /// ignore (and a careless one read as the next answer).
    fn note_stale(&mut self) {
        let stale = self.link.take_stale();
        if stale.is_empty() {
            if !self.last_answer.is_empty() {
                self.shared.note(Word::Padding, true, String::new);
            }
            return;
        }
        let after = self.last_answer.clone();
        let conforming = stale.iter().all(|&b| b == 0);
        self.shared.note(Word::Padding, conforming, || {
            format!(
                "after '{}' came {} more bytes before the next request: '{}'",
                quote(&after),
                stale.len(),
                escaped(&stale)
            )
        });
    }

    pub(super) fn ask(&mut self, text: &str) -> Result<String, String> {
        self.note_stale();
        let text = &self.shared.in_form(text);
        self.log.push(format!("sent '{}'", shown(text)));
        self.last_sent = Some(shown(text));
        self.closes_at_send = closed_here();
        self.shared.sent_any.store(true, Ordering::Relaxed);
        if let Err(e) = self.link.send(text) {
            self.log.push(format!("send failed: {e}"));
            return Err(self.evidence());
        }
        self.receive()
    }

    pub(super) fn ask_bytes(&mut self, what: &str, bytes: &[u8]) -> Result<String, String> {
        self.note_stale();
        self.log.push(format!("sent {what}"));
        self.last_sent = Some(what.trim_matches('\'').to_owned());
        self.closes_at_send = closed_here();
        self.shared.sent_any.store(true, Ordering::Relaxed);
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
                self.silent = false;
                self.log.push(format!("got '{}'", quote(&answer)));
                self.last_answer.clone_from(&answer);
                let classic = self.link.answers_classic();
                if classic && !self.shared.answers_classic.swap(true, Ordering::Relaxed) {
                    let first = answer.clone();
                    self.shared.note(Word::Framing, false, || {
                        format!("asked in lines, got '{}' as a C string", quote(&first))
                    });
                } else if !classic {
                    self.shared.note(Word::Framing, true, String::new);
                }
                Ok(answer)
            }
            Err(why) => {
                self.silent = matches!(why, NoAnswer::TimedOut);
                // Ended after another session closed: the message may
                // never have been read (a center serving one session at a
                // time dies of that close), so the close is blamed.
                if matches!(why, NoAnswer::Ended | NoAnswer::Failed(_))
                    && let Some(sent) = &self.last_sent
                    && closed_here() == self.closes_at_send
                {
                    self.shared.sent_unanswered(sent);
                }
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
                let strict = strict_listing_for(self.shared.framing().dialect, &answer);
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
        let answer = self.ask(&self.shared.selection(index))?;
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

/// Whether a grant names the doctor and port the data gives slot `index`
/// (the port the data tells patients, or where `--doctor` says that
/// doctor really is); `Err` says how it does not. A grant of a slot the
/// data does not have, or an unreadable one, is not judged here.
pub(super) fn grant_fits(config: &Config, index: u64, answer: &str) -> Result<(), String> {
    let Some(row) = config.slots.iter().find(|s| s.index == index) else {
        return Ok(());
    };
    let Ok(SelectionAnswer::Assigned { doctor, port }) = protocol::parse_selection_answer(answer)
    else {
        return Ok(());
    };
    // A port is wrong when it is another doctor's (in the data, or where
    // `--doctor` says that doctor is); a port the data does not know at
    // all (a center with data of its own) is not judged here.
    let others_port = config
        .slots
        .iter()
        .filter(|s| s.doctor != row.doctor)
        .map(|s| s.port)
        .chain(
            config
                .doctors
                .iter()
                .filter(|d| d.name != row.doctor)
                .map(|d| d.addr.port()),
        )
        .any(|p| p == port);
    // Where `--doctor` says this doctor is comes first: a real port may
    // also be another doctor's in the data.
    let own_port = port == row.port
        || config
            .doctors
            .iter()
            .any(|d| d.name == row.doctor && d.addr.port() == port);
    let doctor_fits = doctor.is_none_or(|d| d.eq_ignore_ascii_case(&row.doctor));
    if doctor_fits && (own_port || !others_port) {
        Ok(())
    } else {
        Err(format!(
            "WRONG GRANT: slot {index} is {}'s at port {} in the data, but the center granted '{}'",
            row.doctor,
            row.port,
            quote(answer)
        ))
    }
}

/// Bytes as evidence shows them: printable ASCII as it is, the rest as
/// `\0` or `\xNN`, at most 60 bytes.
pub(super) fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(60) {
        match b {
            0 => out.push_str("\\0"),
            b'\n' => out.push_str("\\n"),
            b' '..=b'~' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 60 {
        out.push('…');
    }
    out
}

/// Text as evidence shows it: passwords masked, long text shortened.
pub(super) fn shown(text: &str) -> String {
    quote(&crate::trace::mask_password(text))
}

/// Peer text as evidence quotes it: one line, long enough to read.
pub(super) fn quote(text: &str) -> String {
    protocol::shorten_to(text, 48)
}
