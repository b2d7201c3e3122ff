//! Arbitrary bytes as a length-prefixed stream: every read ends in a frame,
//! a clean end or an error — never a panic, a hang or an allocation beyond
//! the maximum frame; frames read back re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::framing::LengthPrefixed;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let codec = LengthPrefixed::new(MAX);
    let mut input = data;
    let mut frame = Vec::new();
    let mut consumed = 0;
    while let Ok(true) = codec.read_frame(&mut input, &mut frame) {
        assert!(frame.len() <= MAX);
        assert!(frame.capacity() <= MAX.max(64) * 2, "allocation beyond the maximum frame");
        let mut again = Vec::new();
        codec.write_frame(&mut again, &frame).unwrap();
        assert_eq!(&again[..], &data[consumed..consumed + again.len()]);
        consumed += again.len();
    }
});
