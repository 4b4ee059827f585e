//! Splitting incoming bytes into messages: one datagram, or a stream fed
//! `recv()` by `recv()` ([`Decoder`]), deciding the answers' dialect from
//! the first message.

use super::{Dialect, ProtocolError};

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
