//! Arbitrary bytes as a line stream, read through a small buffer: lines are
//! at most the maximum, never contain a newline, and never a panic.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use socketserver::framing::Lines;

fuzz_target!(|data: &[u8]| {
    let codec = Lines::new(64);
    let mut reader = BufReader::with_capacity(7, data);
    let mut line = Vec::new();
    while let Ok(true) = codec.read_line(&mut reader, &mut line) {
        assert!(line.len() <= 64);
        assert!(!line.contains(&b'\n'));
    }
});
