//! A client's tolerant reading of the center's and the doctors' answers:
//! classic servers capitalise, pad and separate them in many ways.

use super::{Listing, ProtocolError, parse_index};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
