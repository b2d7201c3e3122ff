//! Arbitrary bytes as a time-server request: a rendered time or an error,
//! never a panic, never more than a datagram (possibly empty: `%Z` of a nameless zone).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::MAX_UDP_PAYLOAD;
use socketserver::servers::render_time;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = render_time(data) {
        assert!(s.len() <= MAX_UDP_PAYLOAD);
    }
});
