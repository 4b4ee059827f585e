//! Framing outgoing messages for a dialect: answers (a line, or classic
//! text cut to one answer with its NUL) and requests (padded on demand),
//! and a client's [`Framing`], the dialect with its padding.

use super::{CLASSIC_ANSWER_MAX, Dialect};

/// How a client frames its requests: the dialect, and in the classic one
/// the size every message is padded to, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub dialect: Dialect,
    pub classic_buffer: Option<usize>,
}

impl Default for Framing {
    fn default() -> Framing {
        Framing {
            dialect: Dialect::Line,
            classic_buffer: None,
        }
    }
}

impl Framing {
    /// The framing, refused when its parts contradict each other.
    ///
    /// # Errors
    ///
    /// `--classic-buffer` without `--dialect classic`, or a buffer too
    /// small to hold a NUL (named by their flags: that is where a person
    /// sets them).
    pub fn checked(self) -> anyhow::Result<Framing> {
        if let Some(bytes) = self.classic_buffer {
            anyhow::ensure!(
                self.dialect == Dialect::Classic,
                "--classic-buffer pads classic messages: add --dialect classic"
            );
            anyhow::ensure!(
                bytes >= 1,
                "--classic-buffer must be at least 1 byte, not {bytes}"
            );
        }
        Ok(self)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_classic_buffer_needs_the_classic_dialect() {
        let line = Framing {
            dialect: Dialect::Line,
            classic_buffer: Some(100),
        };
        assert!(line.checked().is_err());
        let classic = Framing {
            dialect: Dialect::Classic,
            classic_buffer: Some(100),
        };
        assert_eq!(classic.checked().ok(), Some(classic));
        let empty = Framing {
            dialect: Dialect::Classic,
            classic_buffer: Some(0),
        };
        assert!(empty.checked().is_err());
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
}
