//! The messages of a run, as the patients saw them go and come, for a
//! Mermaid `sequenceDiagram` (`simulate --diagram FILE`).
//!
//! This module owns the record and its rendering. The patients record (they
//! see every message of the system: each one either leaves or reaches a
//! patient), so the servers stay untouched and a trace costs nothing when
//! it is off. Passwords are masked: a diagram is meant to be shown.

use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

/// The center's name in diagrams.
pub const CENTER: &str = "center";

/// How a message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    /// A datagram dropped on purpose (`--udp-loss`): sent, never received.
    UdpLost,
}

/// One message from one party to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub from: String,
    pub to: String,
    pub text: String,
    pub transport: Transport,
}

/// Whoever watches the messages of a conversation: a [`Trace`] for a
/// diagram, a pace for an audience, a live page. The clients call it for
/// every message they send or receive. The servers do not: a center
/// reports to a watcher of its own (`center::Watcher`), and only when one
/// watches.
pub trait Observer: Send + Sync {
    /// Called before each message is sent (a pace waits here).
    fn before_send(&self) {}
    /// One message from `from` to `to`.
    fn message(&self, _from: &str, _to: &str, _text: &str, _transport: Transport) {}
}

impl Observer for Trace {
    fn message(&self, from: &str, to: &str, text: &str, transport: Transport) {
        self.record(from, to, text, transport);
    }
}

/// A shared, ordered record of messages. Clones record into the same list.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace::default()
    }

    /// Records one message, in the order calls arrive.
    pub fn record(&self, from: &str, to: &str, text: &str, transport: Transport) {
        self.events.lock().push(Event {
            from: from.to_owned(),
            to: to.to_owned(),
            text: mask_password(text),
            transport,
        });
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// The record as a Mermaid `sequenceDiagram`: `patients` first (in the
    /// order given), then the center, then `doctors`, then any other party
    /// that appears. TCP messages are solid arrows, datagrams dotted, lost
    /// datagrams end in a cross.
    pub fn mermaid(&self, patients: &[String], doctors: &[String]) -> String {
        let events = self.events();
        let mut participants: Vec<&str> = patients.iter().map(String::as_str).collect();
        participants.push(CENTER);
        participants.extend(doctors.iter().map(String::as_str));
        for event in &events {
            for party in [event.from.as_str(), event.to.as_str()] {
                if !participants.contains(&party) {
                    participants.push(party);
                }
            }
        }
        let mut out = String::from("sequenceDiagram\n");
        out.push_str("    %% solid arrows: TCP; dotted: UDP; ending in x: a datagram lost\n");
        for party in &participants {
            let _ = writeln!(out, "    participant {}", participant_id(party));
        }
        for event in &events {
            let arrow = match event.transport {
                Transport::Tcp => "->>",
                Transport::Udp => "--)",
                Transport::UdpLost => "--x",
            };
            let _ = writeln!(
                out,
                "    {}{arrow}{}: {}",
                participant_id(&event.from),
                participant_id(&event.to),
                escape(&event.text)
            );
        }
        out
    }
}

/// A login line with everything after the user replaced by `***`; any
/// other text as it is. A login line is one whose first word is
/// `authenticate` in any case (classic patients capitalise it), with any
/// number of words after it: what follows the user may be a password, or
/// hold one, whatever the arity. A lone word after `authenticate` is taken
/// as the password too (a patient that left out the user), so nothing that
/// may be one is shown.
pub fn mask_password(text: &str) -> String {
    let mut words = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty());
    match (words.next(), words.next(), words.next()) {
        (Some(command), Some(user), Some(_)) if command.eq_ignore_ascii_case("authenticate") => {
            format!("{command} {user} ***")
        }
        (Some(command), Some(_), None) if command.eq_ignore_ascii_case("authenticate") => {
            format!("{command} ***")
        }
        _ => text.to_owned(),
    }
}

/// Mermaid ids may not hold spaces or its own punctuation.
fn participant_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Message text as Mermaid shows it: `#` and `;` are its own syntax, so
/// they go as entity codes; an empty message would vanish, so it is named.
fn escape(text: &str) -> String {
    if text.is_empty() {
        return "(empty)".into();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' => out.push_str("#35;"),
            ';' => out.push_str("#59;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visit_renders_in_order_with_the_password_masked() {
        let trace = Trace::new();
        trace.record(
            "patient1",
            CENTER,
            "authenticate patient1 password111",
            Transport::Tcp,
        );
        trace.record(CENTER, "patient1", "success", Transport::Tcp);
        trace.record("patient1", "doc1", "insurance1", Transport::UdpLost);
        trace.record("patient1", "doc1", "insurance1", Transport::Udp);
        trace.record("doc1", "patient1", "30", Transport::Udp);
        let diagram = trace.mermaid(&["patient1".into()], &["doc1".into(), "doc2".into()]);
        assert_eq!(
            diagram,
            "sequenceDiagram\n\
             \x20   %% solid arrows: TCP; dotted: UDP; ending in x: a datagram lost\n\
             \x20   participant patient1\n\
             \x20   participant center\n\
             \x20   participant doc1\n\
             \x20   participant doc2\n\
             \x20   patient1->>center: authenticate patient1 ***\n\
             \x20   center->>patient1: success\n\
             \x20   patient1--xdoc1: insurance1\n\
             \x20   patient1--)doc1: insurance1\n\
             \x20   doc1--)patient1: 30\n"
        );
        assert!(!diagram.contains("password111"));
    }

    #[test]
    fn a_login_line_is_masked_whatever_its_case_and_arity() {
        for (line, shown) in [
            (
                "authenticate patient1 password111",
                "authenticate patient1 ***",
            ),
            (
                "Authenticate patient2 password222",
                "Authenticate patient2 ***",
            ),
            (
                "AUTHENTICATE patient2 password222",
                "AUTHENTICATE patient2 ***",
            ),
            (
                "authenticate patient2 pass word 222",
                "authenticate patient2 ***",
            ),
            (
                "authenticate\tpatient2\tpassword222",
                "authenticate patient2 ***",
            ),
            (
                "  authenticate  patient2   password222 ",
                "authenticate patient2 ***",
            ),
            ("authenticate password222", "authenticate ***"),
            (
                "authenticate patient2 password222\0garbage",
                "authenticate patient2 ***",
            ),
            ("authenticate", "authenticate"),
            ("available", "available"),
            ("selection 2", "selection 2"),
        ] {
            assert_eq!(mask_password(line), shown, "{line:?}");
        }
    }

    #[test]
    fn mermaid_syntax_in_text_and_names_is_escaped() {
        let trace = Trace::new();
        trace.record("doctor:4172", CENTER, "a;b #c\0", Transport::Tcp);
        trace.record(CENTER, "doctor:4172", "", Transport::Tcp);
        let diagram = trace.mermaid(&[], &[]);
        assert!(diagram.contains("participant doctor_4172\n"));
        assert!(diagram.contains("doctor_4172->>center: a#59;b #35;c \n"));
        assert!(diagram.contains("center->>doctor_4172: (empty)\n"));
    }
}
