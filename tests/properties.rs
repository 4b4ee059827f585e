//! Property tests for the parsers and the framing: any input parses to a
//! message that formats back to the same text, or is refused with an
//! error; nothing panics, whatever the bytes and however they are split.

use proptest::prelude::*;

use medsim::protocol::{
    self, CLASSIC_ANSWER_MAX, Decoder, Dialect, ProtocolError, Request, decode_datagram,
};

/// Words as the protocol has them: no spaces, tabs or terminators.
fn word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.$-]{1,12}"
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (word(), word())
            .prop_map(|(username, password)| Request::Authenticate { username, password }),
        Just(Request::Available),
        (1u64..).prop_map(Request::Selection),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_request_formats_and_parses_back(request in request()) {
        let text = request.to_string();
        prop_assert_eq!(Request::parse(&text), Ok(request));
    }

    #[test]
    fn any_text_parses_to_a_canonical_request_or_an_error(text in "\\PC{0,40}|(authenticate|available|selection)[ \\t]{1,3}\\PC{0,20}") {
        if let Ok(request) = Request::parse(&text) {
            // What parsed formats to canonical text that parses to the same
            // request; canonical input formats back to itself.
            let formatted = request.to_string();
            prop_assert_eq!(Request::parse(&formatted), Ok(request));
            let canonical: Vec<&str> = text.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
            prop_assert_eq!(formatted, canonical.join(" "));
        }
    }

    #[test]
    fn any_bytes_split_anywhere_never_panic_the_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(0usize..600, 0..8),
    ) {
        let mut decoder = Decoder::new(100);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        for pair in cuts.windows(2) {
            decoder.feed(&bytes[pair[0]..pair[1]]);
            loop {
                match decoder.next_message() {
                    Ok(Some(message)) => {
                        prop_assert!(message.len() <= 100);
                        prop_assert!(!message.contains('\n'));
                        let _ = Request::parse(&message);
                    }
                    Ok(None) => break,
                    Err(ProtocolError::TooLong { .. } | ProtocolError::NotUtf8) => return Ok(()),
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            prop_assert!(decoder.pending() <= bytes.len());
        }
        let _ = decoder.end_of_grace();
    }

    #[test]
    fn line_framing_round_trips_whatever_the_split(
        requests in proptest::collection::vec(request(), 1..6),
        cut in 0usize..200,
    ) {
        let wire: Vec<u8> = requests.iter().flat_map(|r| protocol::encode(Dialect::Line, &r.to_string())).collect();
        let cut = cut.min(wire.len());
        let mut decoder = Decoder::new(512);
        let mut got = Vec::new();
        for part in [&wire[..cut], &wire[cut..]] {
            decoder.feed(part);
            while let Some(message) = decoder.next_message().unwrap() {
                got.push(Request::parse(&message).unwrap());
            }
        }
        prop_assert_eq!(got, requests);
    }

    #[test]
    fn classic_framing_drops_any_padding(request in request(), garbage in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut wire = protocol::encode_classic_request(&request.to_string(), None);
        wire.extend_from_slice(&garbage);
        let mut decoder = Decoder::new(512);
        decoder.feed(&wire);
        prop_assert_eq!(decoder.next_message(), Ok(Some(request.to_string())));
        prop_assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn any_datagram_decodes_or_errors(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Ok((text, _)) = decode_datagram(&bytes, 512) {
            prop_assert!(!text.trim().is_empty());
            prop_assert!(text.len() <= 512);
            prop_assert!(!text.contains('\0'));
        }
    }

    #[test]
    fn classic_answers_always_fit_one_read(text in "\\PC{0,200}") {
        let framed = protocol::encode(Dialect::Classic, &text);
        prop_assert!(framed.len() <= CLASSIC_ANSWER_MAX);
        prop_assert_eq!(framed.last(), Some(&0));
        prop_assert!(std::str::from_utf8(&framed[..framed.len() - 1]).is_ok());
    }

    #[test]
    fn answer_parsers_never_panic(text in "\\PC{0,120}") {
        let _ = protocol::parse_auth_answer(&text);
        let _ = protocol::parse_slots_answer(&text);
        let _ = protocol::parse_selection_answer(&text);
        let _ = protocol::parse_quote_answer(&text);
    }
}
