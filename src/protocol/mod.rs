//! The wire contract of PROTOCOL.md, away from any socket.
//!
//! This module owns the messages (what a patient asks the center and the
//! doctors, and what they answer), their parsing and formatting, and the
//! two framing dialects (`line` and `classic`) in both directions. It does no
//! I/O and takes no locks: [`Decoder`] is fed the bytes of each `recv()` and
//! hands back whole messages, so tests drive it with plain byte slices.
//!
//! Servers parse strictly ([`Request::parse`]); clients parse answers
//! tolerantly (the `parse_*_answer` functions), since classic servers
//! capitalise, pad and separate their answers in many ways.

use std::fmt;

/// The smallest message limit a server may be configured with: the classic
/// implementations' buffer size.
pub const MIN_MESSAGE_LIMIT: usize = 100;

/// The largest classic answer, NUL included: classic peers read answers with
/// one `recv()` of about 99 bytes.
pub const CLASSIC_ANSWER_MAX: usize = 99;

/// How many bytes of peer input an error message quotes.
const QUOTE_LIMIT: usize = 32;

/// The framing of a session or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// medsim's own: UTF-8 text ending in `\n` (`\r\n` accepted).
    Line,
    /// The classic C implementations': one `send()` per message, text ended
    /// by a NUL (possibly padded with garbage) or by nothing at all.
    Classic,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Line => "line",
            Dialect::Classic => "classic",
        })
    }
}

/// Why a message could not be accepted. Its `Display` is the REASON of the
/// `error REASON` answer, so it names what was wrong and quotes the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The message held no text.
    Empty,
    /// The first word is not a command of the protocol.
    UnknownCommand(String),
    /// A command came with the wrong number of arguments.
    WrongArity {
        command: &'static str,
        expected: usize,
        got: usize,
    },
    /// `selection` with something other than a positive whole number.
    BadIndex(String),
    /// The message exceeded the configured limit before its terminator.
    TooLong { limit: usize },
    /// The message's bytes are not UTF-8.
    NotUtf8,
    /// A well-formed message that the session's state does not allow.
    OutOfOrder {
        expected: &'static str,
        got: &'static str,
    },
    /// An answer a client could not make sense of.
    UnexpectedAnswer { expected: &'static str, got: String },
}

impl std::error::Error for ProtocolError {}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Empty => f.write_str("empty message"),
            ProtocolError::UnknownCommand(word) => {
                write!(f, "unknown command '{}'", shorten(word))
            }
            ProtocolError::WrongArity {
                command,
                expected,
                got,
            } => write!(
                f,
                "'{command}' takes {expected} argument{}, got {got}",
                if *expected == 1 { "" } else { "s" }
            ),
            ProtocolError::BadIndex(text) => write!(
                f,
                "selection index '{}' is not a positive whole number",
                shorten(text)
            ),
            ProtocolError::TooLong { limit } => {
                write!(f, "message too long (limit {limit} bytes)")
            }
            ProtocolError::NotUtf8 => f.write_str("message is not valid UTF-8"),
            ProtocolError::OutOfOrder { expected, got } => {
                write!(f, "expected '{expected}', got '{got}'")
            }
            ProtocolError::UnexpectedAnswer { expected, got } => {
                write!(f, "expected {expected}, got '{}'", shorten(got))
            }
        }
    }
}

/// Quotes at most [`QUOTE_LIMIT`] bytes of peer input, cut on a character
/// boundary, with control characters escaped so a log line stays one line.
pub fn shorten(text: &str) -> String {
    shorten_to(text, QUOTE_LIMIT)
}

/// As [`shorten`], at most `limit` bytes.
pub fn shorten_to(text: &str, limit: usize) -> String {
    let mut out = String::new();
    for (at, c) in text.char_indices() {
        if at >= limit {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The center's words (PROTOCOL.md).
pub mod words {
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const NOT_AVAILABLE: &str = "notavailable";
    pub const BUSY: &str = "error busy";
}

mod answer;
mod decode;
mod encode;
mod listing;
mod request;
mod strict;

pub use answer::*;
pub use decode::*;
pub use encode::*;
pub use listing::*;
pub use request::*;
pub use strict::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_long_input_and_escapes_controls() {
        assert_eq!(shorten("a\nb"), "a\\nb");
        assert_eq!(shorten("it's \"so\""), "it's \"so\"");
        assert_eq!(shorten_to("abcdef", 3), "abc…");
        let long = "x".repeat(100);
        assert_eq!(shorten(&long), format!("{}…", "x".repeat(32)));
        let wide = "é".repeat(40);
        assert!(shorten(&wide).ends_with('…'));
    }
}
