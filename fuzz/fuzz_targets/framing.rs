//! Feeds arbitrary bytes, split at arbitrary points, through the center's
//! framing and parser, and the doctors' datagram decoding: nothing may
//! panic, and every message must respect the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medsim::protocol::{Decoder, Request, decode_datagram};

fuzz_target!(|data: &[u8]| {
    let _ = decode_datagram(data, 512);
    // The first byte chooses the split points of the rest.
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(100);
    for chunk in bytes.chunks(usize::from(split).max(1)) {
        decoder.feed(chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    assert!(message.len() <= 100);
                    let _ = Request::parse(&message);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.end_of_grace();
});
