//! Arbitrary bytes as the start of a PROXY-protocol connection: `parse`
//! returns a header, asks for more, or refuses — never a panic. A header's
//! length is within what was given and [`MAX_HEADER`]; a prefix of a header
//! never parses as a different one (the header is read as bytes trickle in,
//! so each prefix is what the server sees on its way to the whole).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::proxy::{MAX_HEADER, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(whole) = parse(data) else { return };
    if let Some((_, len)) = &whole {
        assert!(*len <= data.len() && *len <= MAX_HEADER);
        assert_eq!(parse(&data[..*len]).unwrap(), whole, "the header alone parses the same");
    }
    // Every shorter prefix waits for more (or is refused), but never ends early.
    let end = whole.as_ref().map_or(data.len(), |(_, len)| *len);
    for cut in 0..end {
        if let Ok(Some(early)) = parse(&data[..cut]) {
            panic!("a {cut}-byte prefix parsed as {early:?}");
        }
    }
});
