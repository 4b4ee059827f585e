//! What a patient asks the health center, parsed strictly as a server
//! must ([`Request::parse`]) and formatted as a client sends it.

use std::fmt;

use super::ProtocolError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn debug_of_authenticate_hides_the_password() {
        let request = Request::parse("authenticate patient1 secret").unwrap();
        assert!(!format!("{request:?}").contains("secret"));
    }
}
