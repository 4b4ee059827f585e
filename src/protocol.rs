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

/// What a patient asks the health center.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// `authenticate USERNAME PASSWORD`
    Authenticate { username: String, password: String },
    /// `available`
    Available,
    /// `selection INDEX`
    Selection(u64),
}

impl Request {
    /// Parses one message text (no terminator) as the center does: words
    /// split by runs of spaces or tabs, the command in lowercase.
    ///
    /// # Errors
    ///
    /// Any text that is not exactly one of the three requests.
    pub fn parse(text: &str) -> Result<Request, ProtocolError> {
        let mut words = text.split([' ', '\t']).filter(|w| !w.is_empty());
        let Some(command) = words.next() else {
            return Err(ProtocolError::Empty);
        };
        let args: Vec<&str> = words.collect();
        let arity = |command, expected| ProtocolError::WrongArity {
            command,
            expected,
            got: args.len(),
        };
        match command {
            "authenticate" => match args[..] {
                [username, password] => Ok(Request::Authenticate {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }),
                _ => Err(arity("authenticate", 2)),
            },
            "available" if args.is_empty() => Ok(Request::Available),
            "available" => Err(arity("available", 0)),
            "selection" => match args[..] {
                [index] => parse_index(index).map(Request::Selection),
                _ => Err(arity("selection", 1)),
            },
            other => Err(ProtocolError::UnknownCommand(other.to_owned())),
        }
    }

    /// The command word, for logs and out-of-order errors.
    pub fn command(&self) -> &'static str {
        match self {
            Request::Authenticate { .. } => "authenticate",
            Request::Available => "available",
            Request::Selection(_) => "selection",
        }
    }
}

/// Formats the request as sent on the wire (without terminator).
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Authenticate { username, password } => {
                write!(f, "authenticate {username} {password}")
            }
            Request::Available => f.write_str("available"),
            Request::Selection(index) => write!(f, "selection {index}"),
        }
    }
}

/// Debug leaves the password out: requests end up in logs and test output.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Authenticate { username, .. } => f
                .debug_struct("Authenticate")
                .field("username", username)
                .finish_non_exhaustive(),
            Request::Available => f.write_str("Available"),
            Request::Selection(index) => f.debug_tuple("Selection").field(index).finish(),
        }
    }
}

/// A slot index: a positive whole number. Leading `+` or zeros are refused
/// so that an index formats back to the text it was parsed from.
pub fn parse_index(text: &str) -> Result<u64, ProtocolError> {
    let canonical = text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    match text.parse::<u64>() {
        Ok(index) if canonical && index > 0 => Ok(index),
        _ => Err(ProtocolError::BadIndex(text.to_owned())),
    }
}

/// One free slot as the center lists it: `INDEX DAY TIME`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    pub index: u64,
    pub day: String,
    pub time: String,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.index, self.day, self.time)
    }
}

/// Renders listings as one answer, triples separated by single spaces, and
/// stops before the first triple that would take the text past `max_bytes`.
pub fn render_listings<'a>(
    listings: impl IntoIterator<Item = (u64, &'a str, &'a str)>,
    max_bytes: usize,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (index, day, time) in listings {
        let before = out.len();
        if before > 0 {
            out.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{index} {day} {time}");
        if out.len() > max_bytes {
            out.truncate(before);
            break;
        }
    }
    out
}

/// Renders listings for a classic session, as the seed center sends them:
/// every triple followed by one space, the last one too (the seed patient
/// walks the list space by space and needs it), as many of the lowest as
/// fit one classic answer with its NUL.
pub fn render_classic_listings<'a>(
    listings: impl IntoIterator<Item = (u64, &'a str, &'a str)>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (index, day, time) in listings {
        let before = out.len();
        // Writing to a String cannot fail.
        let _ = write!(out, "{index} {day} {time} ");
        if out.len() > CLASSIC_ANSWER_MAX - 1 {
            out.truncate(before);
            break;
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

/// The center's answer to `authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    Success,
    Failure,
    Error(String),
}

/// The center's answer to `available`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotsAnswer {
    Slots(Vec<Listing>),
    NotAvailable,
    Error(String),
}

/// The center's answer to `selection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectionAnswer {
    /// `DOCTOR PORT`; some classic servers send the port alone.
    Assigned {
        doctor: Option<String>,
        port: u16,
    },
    NotAvailable,
    Error(String),
}

/// A doctor's answer to a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteAnswer {
    Cost(u64),
    Error(String),
}

/// Lowercases and trims an answer so that classic variations (`Success`,
/// trailing newlines or spaces) compare equal.
fn normalise(text: &str) -> String {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_ascii_lowercase()
}

/// `error REASON` → `REASON`, case-insensitively.
fn error_reason(normalised: &str, original: &str) -> Option<String> {
    let rest = normalised.strip_prefix("error")?;
    if !rest.is_empty() && !rest.starts_with([' ', ':']) {
        return None;
    }
    let skip = original.len() - original.trim_start().len() + "error".len();
    let reason = original
        .get(skip..)
        .unwrap_or("")
        .trim_start_matches([':', ' ']);
    Some(reason.trim().to_owned())
}

fn is_not_available(normalised: &str) -> bool {
    let squeezed: String = normalised.split_whitespace().collect();
    squeezed == "notavailable" || squeezed == "notavailable."
}

fn unexpected(expected: &'static str, got: &str) -> ProtocolError {
    ProtocolError::UnexpectedAnswer {
        expected,
        got: got.to_owned(),
    }
}

/// Reads the center's answer to `authenticate`.
///
/// # Errors
///
/// An answer that is none of `success`, `failure` or `error ...`.
pub fn parse_auth_answer(text: &str) -> Result<AuthAnswer, ProtocolError> {
    let norm = normalise(text);
    if let Some(reason) = error_reason(&norm, text) {
        return Ok(AuthAnswer::Error(reason));
    }
    match norm.as_str() {
        "success" => Ok(AuthAnswer::Success),
        "failure" | "fail" | "failed" => Ok(AuthAnswer::Failure),
        _ => Err(unexpected("'success' or 'failure'", text)),
    }
}

/// Reads the center's answer to `available`: triples separated by spaces,
/// newlines or ` .` tokens, or `notavailable` in its variations.
///
/// # Errors
///
/// An answer that is neither a list of `INDEX DAY TIME` triples nor one of
/// the known refusals.
pub fn parse_slots_answer(text: &str) -> Result<SlotsAnswer, ProtocolError> {
    let norm = normalise(text);
    if let Some(reason) = error_reason(&norm, text) {
        return Ok(SlotsAnswer::Error(reason));
    }
    if is_not_available(&norm) {
        return Ok(SlotsAnswer::NotAvailable);
    }
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '\0')
        .filter(|t| !t.is_empty() && *t != ".")
        .collect();
    if tokens.is_empty() || !tokens.len().is_multiple_of(3) {
        return Err(unexpected("a list of 'INDEX DAY TIME' slots", text));
    }
    let mut listings = Vec::with_capacity(tokens.len() / 3);
    for triple in tokens.chunks_exact(3) {
        let index = parse_index(triple[0].trim_matches('.'))
            .map_err(|_| unexpected("a list of 'INDEX DAY TIME' slots", text))?;
        listings.push(Listing {
            index,
            day: triple[1].to_owned(),
            time: triple[2].trim_end_matches('.').to_owned(),
        });
    }
    Ok(SlotsAnswer::Slots(listings))
}

/// Reads the center's answer to `selection`: `DOCTOR PORT`, a port alone,
/// or `notavailable` in its variations.
///
/// # Errors
///
/// Anything else.
pub fn parse_selection_answer(text: &str) -> Result<SelectionAnswer, ProtocolError> {
    let norm = normalise(text);
    if let Some(reason) = error_reason(&norm, text) {
        return Ok(SelectionAnswer::Error(reason));
    }
    if is_not_available(&norm) {
        return Ok(SelectionAnswer::NotAvailable);
    }
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '\0')
        .filter(|w| !w.is_empty())
        .collect();
    let port = |w: &str| w.parse::<u16>().ok().filter(|p| *p != 0);
    match words[..] {
        [doctor, p] => match port(p) {
            Some(port) => Ok(SelectionAnswer::Assigned {
                doctor: Some(doctor.to_owned()),
                port,
            }),
            None => Err(unexpected("'DOCTOR PORT'", text)),
        },
        [p] => match port(p) {
            Some(port) => Ok(SelectionAnswer::Assigned { doctor: None, port }),
            None => Err(unexpected("'DOCTOR PORT'", text)),
        },
        // Text after a newline inside the C string (`doc1 41634\n\x012`):
        // a C client's `sscanf("%s %d")` reads the grant and stops there.
        _ => match text.split_once('\n') {
            Some((first, _)) if !first.trim().is_empty() => match parse_selection_answer(first)? {
                grant @ SelectionAnswer::Assigned { .. } => Ok(grant),
                _ => Err(unexpected("'DOCTOR PORT'", text)),
            },
            _ => Err(unexpected("'DOCTOR PORT'", text)),
        },
    }
}

/// Reads a doctor's answer: a whole number of dollars (a trailing `$` is
/// tolerated) or `error ...`.
///
/// # Errors
///
/// Anything else.
pub fn parse_quote_answer(text: &str) -> Result<QuoteAnswer, ProtocolError> {
    let norm = normalise(text);
    if let Some(reason) = error_reason(&norm, text) {
        return Ok(QuoteAnswer::Error(reason));
    }
    norm.trim_end_matches('$')
        .parse::<u64>()
        .map(QuoteAnswer::Cost)
        .map_err(|_| unexpected("a cost", text))
}

/// Appends `text` framed for `dialect` to `out`: a line gets `\n`; a classic
/// answer is cut to fit [`CLASSIC_ANSWER_MAX`] bytes and gets its NUL.
pub fn encode_into(dialect: Dialect, text: &str, out: &mut Vec<u8>) {
    match dialect {
        Dialect::Line => {
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
        }
        Dialect::Classic => {
            let mut end = text.len().min(CLASSIC_ANSWER_MAX - 1);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&text.as_bytes()[..end]);
            out.push(0);
        }
    }
}

/// `text` framed for `dialect`, as a new buffer.
pub fn encode(dialect: Dialect, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    encode_into(dialect, text, &mut out);
    out
}

/// A client's framing of `text` in the classic dialect: the text and one NUL,
/// padded with zeros to `pad_to` bytes when asked.
pub fn encode_classic_request(text: &str, pad_to: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(pad_to.unwrap_or(0).max(text.len() + 1));
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    if let Some(size) = pad_to
        && out.len() < size
    {
        out.resize(size, 0);
    }
    out
}

/// A client's request framed for `dialect`: a line, or classic text with
/// its NUL, padded to `classic_pad` bytes when given.
pub fn encode_request(dialect: Dialect, text: &str, classic_pad: Option<usize>) -> Vec<u8> {
    match dialect {
        Dialect::Line => encode(Dialect::Line, text),
        Dialect::Classic => encode_classic_request(text, classic_pad),
    }
}

/// The strict reading of a list: PROTOCOL.md's exact words, `INDEX DAY
/// TIME` triples separated by single spaces, indexes positive and rising.
/// Returns the indexes.
///
/// # Errors
///
/// What departs from that form, named.
pub fn strict_listing(answer: &str) -> Result<Vec<u64>, String> {
    let words: Vec<&str> = answer.split(' ').collect();
    if words.iter().any(|w| w.is_empty()) || !words.len().is_multiple_of(3) {
        return Err(format!(
            "expected 'INDEX DAY TIME' triples separated by single spaces ({} words)",
            words.len()
        ));
    }
    let mut indexes = Vec::with_capacity(words.len() / 3);
    for triple in words.chunks_exact(3) {
        let index = parse_index(triple[0])
            .map_err(|_| format!("'{}' is not a slot index", shorten(triple[0])))?;
        if indexes.last().is_some_and(|&last| last >= index) {
            return Err(format!("index {index} is out of order"));
        }
        indexes.push(index);
    }
    Ok(indexes)
}

/// The strict reading of a list in `dialect`: a classic list also follows
/// its last triple with a space, as the seed center sends it and the seed
/// patient needs it (PROTOCOL.md).
///
/// # Errors
///
/// What departs from that form, named.
pub fn strict_listing_for(dialect: Dialect, answer: &str) -> Result<Vec<u64>, String> {
    match dialect {
        Dialect::Line => strict_listing(answer),
        Dialect::Classic => match answer.strip_suffix(' ') {
            Some(triples) => strict_listing(triples),
            None => Err(
                "expected a space after every triple, the last one too (the seed patient crashes without it)"
                    .into(),
            ),
        },
    }
}

/// The strict reading of a grant: `DOCTOR PORT` exactly.
pub fn strict_assignment(answer: &str) -> Option<(String, u16)> {
    let (doctor, port) = answer.split_once(' ')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!doctor.is_empty() && !doctor.contains(' ')).then(|| (doctor.to_owned(), port))
}

/// Cuts one datagram (or one classic segment) to its message: the text
/// before the first NUL, or before a final `\n`/`\r\n`. Returns the message
/// and the dialect to answer in (bare text is answered classically, since
/// a C reader compares up to the NUL).
///
/// # Errors
///
/// An empty message, one longer than `limit`, or one that is not UTF-8.
pub fn decode_datagram(bytes: &[u8], limit: usize) -> Result<(&str, Dialect), ProtocolError> {
    let (body, dialect) = match bytes.iter().position(|&b| b == 0) {
        Some(nul) => (&bytes[..nul], Dialect::Classic),
        None => match bytes.strip_suffix(b"\n") {
            Some(line) => (line.strip_suffix(b"\r").unwrap_or(line), Dialect::Line),
            None => (bytes, Dialect::Classic),
        },
    };
    if body.len() > limit {
        return Err(ProtocolError::TooLong { limit });
    }
    let text = std::str::from_utf8(body).map_err(|_| ProtocolError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(ProtocolError::Empty);
    }
    Ok((text, dialect))
}

/// How far the decoder has identified the peer's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No message yet.
    Undecided,
    /// The first message ended in `\n`: answers are lines, and messages
    /// are read as a stream of lines.
    Line,
    /// The first message ended in a NUL or in silence: answers are classic,
    /// and what follows a message's terminator in its arrival is the
    /// sender's padding.
    Classic,
}

/// Splits a stream into messages, deciding the dialect of the answers from
/// the first one (PROTOCOL.md, "Framing"). Feed it each `recv()` with
/// [`Decoder::feed`], then take messages with [`Decoder::next_message`]
/// until it returns `Ok(None)`. Every message ends at its terminator (`\n`
/// or NUL) or at a pause: when it [`Decoder::awaits_grace`] and the peer
/// stays silent for the grace period, [`Decoder::end_of_grace`] takes what
/// arrived as a message without terminator, as classic peers send them.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    mode: Mode,
    limit: usize,
    /// A message has just ended: terminators that follow it (`TEXT\n`
    /// then NUL padding, or `TEXT\0` then `\n`) belong to its end, not to
    /// an empty message of their own.
    after_message: bool,
}

impl Decoder {
    /// A decoder that refuses messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            mode: Mode::Undecided,
            limit,
            after_message: false,
        }
    }

    /// The session's dialect, once the first message has decided it.
    pub fn dialect(&self) -> Option<Dialect> {
        match self.mode {
            Mode::Undecided => None,
            Mode::Line => Some(Dialect::Line),
            Mode::Classic => Some(Dialect::Classic),
        }
    }

    /// True when text without a terminator is waiting: the caller should
    /// wait only the grace period for the rest of it.
    pub fn awaits_grace(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes received that are not yet part of a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Adds the bytes of one `recv()`.
    pub fn feed(&mut self, arrival: &[u8]) {
        self.buf.extend_from_slice(arrival);
    }

    /// The next whole message, if one has arrived.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::TooLong`] once more than the limit has arrived
    /// without a terminator, [`ProtocolError::NotUtf8`] for a message that
    /// is not text. The session should answer and close after either.
    pub fn next_message(&mut self) -> Result<Option<String>, ProtocolError> {
        if self.after_message {
            let terminators = self
                .buf
                .iter()
                .take_while(|&&b| matches!(b, 0 | b'\n' | b'\r'))
                .count();
            self.buf.drain(..terminators);
            if self.buf.is_empty() {
                return Ok(None);
            }
            self.after_message = false;
        }
        let Some(end) = self.buf.iter().position(|&b| b == b'\n' || b == 0) else {
            return self.check_pending_limit();
        };
        if self.mode == Mode::Undecided {
            // A newline followed by NULs is a C buffer (`TEXT\n` padded
            // with zeros): its reader compares up to a NUL.
            let padded = self.buf.get(end + 1) == Some(&0);
            self.mode = if self.buf[end] == b'\n' && !padded {
                Mode::Line
            } else {
                Mode::Classic
            };
        }
        self.after_message = true;
        let mut body = &self.buf[..end];
        body = body.strip_suffix(b"\r").unwrap_or(body);
        let message = self.text(body);
        if self.mode == Mode::Line && self.buf[end] == b'\n' {
            // A stream of lines: the next one may have begun already.
            self.buf.drain(..=end);
        } else {
            // A C string in a buffer: the rest of the arrival is padding.
            self.buf.clear();
        }
        message.map(Some)
    }

    /// The peer fell silent with text but no terminator: that text is one
    /// message (and, as a session's first, makes the session classic).
    ///
    /// # Errors
    ///
    /// As [`Decoder::next_message`].
    pub fn end_of_grace(&mut self) -> Result<Option<String>, ProtocolError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.mode == Mode::Undecided {
            self.mode = Mode::Classic;
        }
        self.after_message = true;
        let mut body = std::mem::take(&mut self.buf);
        if body.last() == Some(&b'\r') {
            body.pop();
        }
        self.text(&body).map(Some)
    }

    fn check_pending_limit(&self) -> Result<Option<String>, ProtocolError> {
        if self.buf.len() > self.limit {
            Err(ProtocolError::TooLong { limit: self.limit })
        } else {
            Ok(None)
        }
    }

    fn text(&self, body: &[u8]) -> Result<String, ProtocolError> {
        if body.len() > self.limit {
            return Err(ProtocolError::TooLong { limit: self.limit });
        }
        std::str::from_utf8(body)
            .map(str::to_owned)
            .map_err(|_| ProtocolError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(decoder: &mut Decoder, arrival: &[u8]) -> Vec<String> {
        decoder.feed(arrival);
        let mut out = Vec::new();
        while let Some(m) = decoder.next_message().expect("valid input") {
            out.push(m);
        }
        out
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::Authenticate {
                username: "patient1".into(),
                password: "password111".into(),
            },
            Request::Available,
            Request::Selection(1),
            Request::Selection(u64::MAX),
        ];
        for request in requests {
            assert_eq!(Request::parse(&request.to_string()), Ok(request));
        }
    }

    #[test]
    fn requests_accept_runs_of_spaces_and_tabs() {
        assert_eq!(
            Request::parse("authenticate \t patient1   password111 "),
            Ok(Request::Authenticate {
                username: "patient1".into(),
                password: "password111".into()
            })
        );
        assert_eq!(Request::parse("selection\t3"), Ok(Request::Selection(3)));
    }

    #[test]
    fn empty_and_blank_messages_are_empty() {
        assert_eq!(Request::parse(""), Err(ProtocolError::Empty));
        assert_eq!(Request::parse(" \t "), Err(ProtocolError::Empty));
    }

    #[test]
    fn unknown_command_is_named() {
        let err = Request::parse("book 3").unwrap_err();
        assert_eq!(err, ProtocolError::UnknownCommand("book".into()));
        assert_eq!(err.to_string(), "unknown command 'book'");
        // Commands are lowercase words, as the tables write them.
        assert!(matches!(
            Request::parse("AVAILABLE"),
            Err(ProtocolError::UnknownCommand(_))
        ));
    }

    #[test]
    fn authenticate_needs_exactly_two_arguments() {
        for (text, got) in [
            ("authenticate", 0),
            ("authenticate a", 1),
            ("authenticate a b c", 3),
        ] {
            let err = Request::parse(text).unwrap_err();
            assert_eq!(
                err,
                ProtocolError::WrongArity {
                    command: "authenticate",
                    expected: 2,
                    got
                }
            );
        }
        assert_eq!(
            Request::parse("authenticate a").unwrap_err().to_string(),
            "'authenticate' takes 2 arguments, got 1"
        );
    }

    #[test]
    fn available_takes_no_argument_and_selection_one() {
        assert!(matches!(
            Request::parse("available now"),
            Err(ProtocolError::WrongArity { got: 1, .. })
        ));
        assert!(matches!(
            Request::parse("selection"),
            Err(ProtocolError::WrongArity { got: 0, .. })
        ));
        assert!(matches!(
            Request::parse("selection 1 2"),
            Err(ProtocolError::WrongArity { got: 2, .. })
        ));
    }

    #[test]
    fn selection_refuses_what_is_not_a_positive_whole_number() {
        for bad in ["abc", "0", "-1", "+1", "01", "1.5", "99999999999999999999"] {
            assert_eq!(
                Request::parse(&format!("selection {bad}")),
                Err(ProtocolError::BadIndex(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            ProtocolError::BadIndex("abc".into()).to_string(),
            "selection index 'abc' is not a positive whole number"
        );
    }

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

    #[test]
    fn debug_of_authenticate_hides_the_password() {
        let request = Request::parse("authenticate patient1 secret").unwrap();
        assert!(!format!("{request:?}").contains("secret"));
    }

    #[test]
    fn listings_render_in_order_and_stop_at_the_byte_limit() {
        let slots = [(1, "Tue", "01pm"), (2, "Mon", "03pm"), (3, "Thu", "02pm")];
        assert_eq!(
            render_listings(slots, usize::MAX),
            "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm"
        );
        assert_eq!(render_listings(slots, 21), "1 Tue 01pm 2 Mon 03pm");
        assert_eq!(render_listings(slots, 20), "1 Tue 01pm");
    }

    #[test]
    fn classic_lists_follow_every_triple_with_a_space_and_fit_one_answer() {
        let slots = [(1, "Tue", "01pm"), (2, "Mon", "03pm")];
        assert_eq!(render_classic_listings(slots), "1 Tue 01pm 2 Mon 03pm ");
        let many: Vec<(u64, &str, &str)> = (1..=20).map(|i| (i, "Mon", "10am")).collect();
        let text = render_classic_listings(many);
        assert!(text.len() < CLASSIC_ANSWER_MAX, "{}", text.len());
        assert!(text.ends_with("10am "));
        assert_eq!(text.split_whitespace().count() % 3, 0);
    }

    #[test]
    fn auth_answers_tolerate_classic_variations() {
        assert_eq!(parse_auth_answer("success"), Ok(AuthAnswer::Success));
        assert_eq!(parse_auth_answer("Success\n"), Ok(AuthAnswer::Success));
        assert_eq!(parse_auth_answer("failure"), Ok(AuthAnswer::Failure));
        assert_eq!(
            parse_auth_answer("error expected 'authenticate', got 'available'"),
            Ok(AuthAnswer::Error(
                "expected 'authenticate', got 'available'".into()
            ))
        );
        assert!(parse_auth_answer("welcome").is_err());
        // "errors" is not an error answer.
        assert!(parse_auth_answer("errors").is_err());
    }

    #[test]
    fn slot_answers_tolerate_separators() {
        let expected = SlotsAnswer::Slots(vec![
            Listing {
                index: 1,
                day: "Tue".into(),
                time: "01pm".into(),
            },
            Listing {
                index: 2,
                day: "Mon".into(),
                time: "03pm".into(),
            },
        ]);
        for text in [
            "1 Tue 01pm 2 Mon 03pm",
            "1 Tue 01pm\n2 Mon 03pm\n",
            "1 Tue 01pm . 2 Mon 03pm .",
            "1 Tue 01pm  .2 Mon 03pm  .",
            "1 Tue 01pm 2 Mon 03pm ",
            "1 Tue 01pm\r\n2 Mon 03pm\r\n",
        ] {
            assert_eq!(parse_slots_answer(text), Ok(expected.clone()), "{text:?}");
        }
        assert_eq!(
            parse_slots_answer("notavailable"),
            Ok(SlotsAnswer::NotAvailable)
        );
        assert_eq!(
            parse_slots_answer("Not Available"),
            Ok(SlotsAnswer::NotAvailable)
        );
        assert!(parse_slots_answer("1 Tue").is_err());
        assert!(parse_slots_answer("x Tue 01pm").is_err());
        assert!(parse_slots_answer("").is_err());
    }

    #[test]
    fn a_grant_with_text_after_a_newline_reads_as_sscanf_would() {
        assert_eq!(
            parse_selection_answer("doc1 41634\n\u{1}2").unwrap(),
            SelectionAnswer::Assigned {
                doctor: Some("doc1".into()),
                port: 41634
            }
        );
        assert!(parse_selection_answer("hello there\nfriend").is_err());
    }

    #[test]
    fn selection_answers_accept_doctor_and_port_or_port_alone() {
        assert_eq!(
            parse_selection_answer("doc1 41720"),
            Ok(SelectionAnswer::Assigned {
                doctor: Some("doc1".into()),
                port: 41720
            })
        );
        assert_eq!(
            parse_selection_answer("42799"),
            Ok(SelectionAnswer::Assigned {
                doctor: None,
                port: 42799
            })
        );
        assert_eq!(
            parse_selection_answer("not available"),
            Ok(SelectionAnswer::NotAvailable)
        );
        assert!(parse_selection_answer("doc1 70000").is_err());
        assert!(parse_selection_answer("doc1 0").is_err());
        assert!(parse_selection_answer("").is_err());
    }

    #[test]
    fn quote_answers_are_whole_dollars_or_errors() {
        assert_eq!(parse_quote_answer("30"), Ok(QuoteAnswer::Cost(30)));
        assert_eq!(parse_quote_answer("30$\n"), Ok(QuoteAnswer::Cost(30)));
        assert_eq!(
            parse_quote_answer("error unknown plan gold"),
            Ok(QuoteAnswer::Error("unknown plan gold".into()))
        );
        assert!(parse_quote_answer("thirty").is_err());
        assert!(parse_quote_answer("-3").is_err());
    }

    #[test]
    fn line_dialect_splits_lines_and_accepts_crlf() {
        let mut decoder = Decoder::new(100);
        let got = decode_all(&mut decoder, b"authenticate a b\r\navailable\nsel");
        assert_eq!(got, ["authenticate a b", "available"]);
        assert_eq!(decoder.dialect(), Some(Dialect::Line));
        assert_eq!(decode_all(&mut decoder, b"ection 1\n"), ["selection 1"]);
    }

    #[test]
    fn classic_padded_message_with_garbage_after_the_nul() {
        let mut buffer = [0xA5u8; 100];
        let text = b"authenticate patient1 password111";
        buffer[..text.len()].copy_from_slice(text);
        buffer[text.len()] = 0;
        // Garbage may hold newlines and NULs too: none of it is a message.
        buffer[60] = b'\n';
        buffer[70] = 0;
        let mut decoder = Decoder::new(100);
        assert_eq!(
            decode_all(&mut decoder, &buffer),
            ["authenticate patient1 password111"]
        );
        assert_eq!(decoder.dialect(), Some(Dialect::Classic));
        assert_eq!(decoder.pending(), 0);
        assert_eq!(decode_all(&mut decoder, b"available\0"), ["available"]);
    }

    #[test]
    fn classic_message_split_across_arrivals_waits_for_its_nul() {
        let mut decoder = Decoder::new(100);
        assert_eq!(decode_all(&mut decoder, b"available\0"), ["available"]);
        assert!(decode_all(&mut decoder, b"selec").is_empty());
        assert_eq!(decode_all(&mut decoder, b"tion 2\0\0\0"), ["selection 2"]);
    }

    #[test]
    fn bare_classic_text_is_a_message_after_the_grace_period() {
        let mut decoder = Decoder::new(100);
        assert!(decode_all(&mut decoder, b"authenticate a b").is_empty());
        assert!(decoder.awaits_grace());
        assert_eq!(
            decoder.end_of_grace(),
            Ok(Some("authenticate a b".to_owned()))
        );
        assert_eq!(decoder.dialect(), Some(Dialect::Classic));
        assert!(!decoder.awaits_grace());
        // Each later message ends at its terminator or its own pause.
        assert!(decode_all(&mut decoder, b"available").is_empty());
        assert_eq!(decoder.end_of_grace(), Ok(Some("available".to_owned())));
        assert_eq!(
            decode_all(&mut decoder, b"selection 1\0xx"),
            ["selection 1"]
        );
    }

    #[test]
    fn a_later_message_without_terminator_ends_at_the_pause_in_any_dialect() {
        // Real classic patients: NUL on the first messages, the last bare.
        let mut decoder = Decoder::new(100);
        assert_eq!(
            decode_all(&mut decoder, b"authenticate u p\0"),
            ["authenticate u p"]
        );
        assert_eq!(decode_all(&mut decoder, b"available\0"), ["available"]);
        assert!(decode_all(&mut decoder, b"selection 2").is_empty());
        assert_eq!(decoder.end_of_grace(), Ok(Some("selection 2".to_owned())));
        assert_eq!(decoder.dialect(), Some(Dialect::Classic));
        // And a `\n` on the first message only.
        let mut decoder = Decoder::new(100);
        assert_eq!(
            decode_all(&mut decoder, b"authenticate u p\n"),
            ["authenticate u p"]
        );
        assert!(decode_all(&mut decoder, b"available").is_empty());
        assert_eq!(decoder.end_of_grace(), Ok(Some("available".to_owned())));
        assert_eq!(decoder.dialect(), Some(Dialect::Line));
    }

    #[test]
    fn end_of_grace_without_pending_text_is_nothing() {
        let mut decoder = Decoder::new(100);
        assert_eq!(decoder.end_of_grace(), Ok(None));
        assert_eq!(decoder.dialect(), None);
    }

    #[test]
    fn a_newline_then_nul_padding_ends_one_message_and_makes_the_session_classic() {
        // Real patients send `TEXT\n` in a zeroed 60-byte buffer.
        let mut first = b"authenticate patient1 password111\n".to_vec();
        first.resize(60, 0);
        let mut d = Decoder::new(100);
        assert_eq!(
            decode_all(&mut d, &first),
            ["authenticate patient1 password111"]
        );
        assert_eq!(d.dialect(), Some(Dialect::Classic));
        let mut second = b"available\n".to_vec();
        second.resize(60, 0);
        assert_eq!(decode_all(&mut d, &second), ["available"]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn terminators_adjacent_to_a_message_never_make_an_empty_one() {
        let mut d = Decoder::new(100);
        assert_eq!(decode_all(&mut d, b"available\n"), ["available"]);
        // Its padding arrives on its own, and the reverse order too.
        assert_eq!(decode_all(&mut d, b"\0\0\0"), Vec::<String>::new());
        assert_eq!(decode_all(&mut d, b"selection 1\0\n"), ["selection 1"]);
        assert_eq!(decode_all(&mut d, b"\n"), Vec::<String>::new());
        assert!(!d.awaits_grace());
        // A session whose first message is empty still sends an empty one.
        let mut fresh = Decoder::new(100);
        assert_eq!(decode_all(&mut fresh, b"\n"), [""]);
    }

    #[test]
    fn empty_messages_come_out_empty_for_the_parser_to_refuse() {
        assert_eq!(decode_all(&mut Decoder::new(100), b"\n"), [""]);
        assert_eq!(decode_all(&mut Decoder::new(100), b"\0"), [""]);
    }

    #[test]
    fn too_long_without_terminator_is_refused_before_it_grows() {
        let mut decoder = Decoder::new(100);
        decoder.feed(&[b'a'; 101]);
        assert_eq!(
            decoder.next_message(),
            Err(ProtocolError::TooLong { limit: 100 })
        );
        let mut decoder = Decoder::new(100);
        decoder.feed(&[b'a'; 100]);
        assert_eq!(decoder.next_message(), Ok(None));
    }

    #[test]
    fn too_long_with_terminator_is_refused() {
        let mut long = vec![b'a'; 150];
        long.push(b'\n');
        let mut decoder = Decoder::new(100);
        decoder.feed(&long);
        assert_eq!(
            decoder.next_message(),
            Err(ProtocolError::TooLong { limit: 100 })
        );
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut decoder = Decoder::new(100);
        decoder.feed(b"\xff\xfe\n");
        assert_eq!(decoder.next_message(), Err(ProtocolError::NotUtf8));
    }

    #[test]
    fn answers_are_framed_per_dialect() {
        assert_eq!(encode(Dialect::Line, "success"), b"success\n");
        assert_eq!(encode(Dialect::Classic, "success"), b"success\0");
        let long = "x".repeat(200);
        let classic = encode(Dialect::Classic, &long);
        assert_eq!(classic.len(), CLASSIC_ANSWER_MAX);
        assert_eq!(classic.last(), Some(&0));
        assert!(!classic.contains(&b'\n'));
        // Cut on a character boundary.
        let wide = "é".repeat(60);
        let classic = encode(Dialect::Classic, &wide);
        assert!(std::str::from_utf8(&classic[..classic.len() - 1]).is_ok());
    }

    #[test]
    fn classic_requests_are_text_and_one_nul_or_padded() {
        assert_eq!(encode_classic_request("available", None), b"available\0");
        let padded = encode_classic_request("available", Some(100));
        assert_eq!(padded.len(), 100);
        assert_eq!(&padded[..10], b"available\0");
    }

    #[test]
    fn the_strict_list_is_exact() {
        assert_eq!(strict_listing("1 Tue 01pm 2 Mon 03pm"), Ok(vec![1, 2]));
        assert!(strict_listing("1 Tue 01pm  2 Mon 03pm").is_err());
        assert!(strict_listing("1 Tue 01pm 2 Mon").is_err());
        assert!(strict_listing("2 Tue 01pm 1 Mon 03pm").is_err());
        assert!(strict_listing("x Tue 01pm").is_err());
        assert!(strict_listing("").is_err());
    }

    #[test]
    fn the_strict_classic_list_ends_in_a_space() {
        assert_eq!(
            strict_listing_for(Dialect::Classic, "1 Tue 01pm 2 Mon 03pm "),
            Ok(vec![1, 2])
        );
        assert!(strict_listing_for(Dialect::Classic, "1 Tue 01pm 2 Mon 03pm").is_err());
        assert!(strict_listing_for(Dialect::Line, "1 Tue 01pm ").is_err());
    }

    #[test]
    fn the_strict_grant_is_doctor_and_port() {
        assert_eq!(
            strict_assignment("doc1 41720"),
            Some(("doc1".into(), 41720))
        );
        assert_eq!(strict_assignment("41720"), None);
        assert_eq!(strict_assignment("doc1 0"), None);
        assert_eq!(strict_assignment("doc1  41720"), None);
    }

    #[test]
    fn requests_are_framed_per_dialect() {
        assert_eq!(
            encode_request(Dialect::Line, "available", Some(9)),
            b"available\n"
        );
        assert_eq!(
            encode_request(Dialect::Classic, "available", None),
            b"available\0"
        );
        assert_eq!(encode_request(Dialect::Classic, "a", Some(4)), b"a\0\0\0");
    }

    #[test]
    fn datagrams_are_cut_at_nul_or_final_newline() {
        assert_eq!(
            decode_datagram(b"insurance1\0garbage", 100),
            Ok(("insurance1", Dialect::Classic))
        );
        assert_eq!(
            decode_datagram(b"insurance1\r\n", 100),
            Ok(("insurance1", Dialect::Line))
        );
        assert_eq!(
            decode_datagram(b"insurance1", 100),
            Ok(("insurance1", Dialect::Classic))
        );
        assert_eq!(decode_datagram(b"", 100), Err(ProtocolError::Empty));
        assert_eq!(decode_datagram(b"\0abc", 100), Err(ProtocolError::Empty));
        assert_eq!(
            decode_datagram(&[b'a'; 101], 100),
            Err(ProtocolError::TooLong { limit: 100 })
        );
        assert_eq!(decode_datagram(b"\xff", 100), Err(ProtocolError::NotUtf8));
    }
}
