//! Property tests for the framing codecs: whatever the frames and however
//! the stream is cut into reads, what is written is what is read.

use std::io::{self, BufReader, Read};

use proptest::prelude::*;
use socketserver::framing::{LengthPrefixed, Lines};

/// A reader that hands out the stream in the given chunk sizes, as TCP may.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes.get(self.next % self.sizes.len().max(1)).copied().unwrap_or(1).max(1);
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

proptest! {
    #[test]
    fn length_prefixed_round_trips_in_any_chunking(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        sizes in prop::collection::vec(1usize..50, 1..10),
    ) {
        let codec = LengthPrefixed::new(300);
        let mut wire = Vec::new();
        for f in &frames {
            codec.write_frame(&mut wire, f).unwrap();
        }
        let mut reader = Chunked { data: &wire, sizes, next: 0 };
        let mut got = Vec::new();
        let mut frame = Vec::new();
        while codec.read_frame(&mut reader, &mut frame).unwrap() {
            got.push(frame.clone());
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn length_prefixed_never_accepts_more_than_the_maximum(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let small = LengthPrefixed::new(256);
        let big = LengthPrefixed::new(1024);
        let mut wire = Vec::new();
        big.write_frame(&mut wire, &body).unwrap();
        let mut frame = Vec::new();
        let result = small.read_frame(&mut &wire[..], &mut frame);
        if body.len() <= 256 {
            prop_assert!(result.unwrap());
            prop_assert_eq!(frame, body);
        } else {
            prop_assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
            prop_assert!(small.write_frame(&mut Vec::new(), &body).is_err());
        }
    }

    #[test]
    fn truncated_streams_are_errors_never_short_frames(
        body in prop::collection::vec(any::<u8>(), 1..200),
        cut in 1usize..200,
    ) {
        let codec = LengthPrefixed::new(200);
        let mut wire = Vec::new();
        codec.write_frame(&mut wire, &body).unwrap();
        let cut = cut.min(wire.len() - 1);
        let mut frame = Vec::new();
        let err = codec.read_frame(&mut &wire[..cut], &mut frame).unwrap_err();
        prop_assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn lines_round_trip_in_any_chunking(
        lines in prop::collection::vec("[^\n\r]{0,80}", 0..20),
        buffer in 1usize..32,
        crlf in any::<bool>(),
    ) {
        let codec = Lines::new(80 * 4);
        let ending = if crlf { "\r\n" } else { "\n" };
        let wire: String = lines.iter().map(|l| format!("{l}{ending}")).collect();
        let mut reader = BufReader::with_capacity(buffer, wire.as_bytes());
        let mut got = Vec::new();
        let mut line = Vec::new();
        while codec.read_line(&mut reader, &mut line).unwrap() {
            got.push(String::from_utf8(line.clone()).unwrap());
        }
        prop_assert_eq!(got, lines);
    }

    /// Whatever `write_line` accepts, `read_line` gives back exactly; what
    /// it refuses (a newline inside, a trailing `\r`, too long) it refuses
    /// before writing anything.
    #[test]
    fn write_line_accepts_only_what_read_line_gives_back(
        line in prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()], 0..40),
    ) {
        let codec = Lines::new(32);
        let mut wire = Vec::new();
        match codec.write_line(&mut wire, &line) {
            Ok(()) => {
                let mut got = Vec::new();
                prop_assert!(codec.read_line(&mut BufReader::new(&wire[..]), &mut got).unwrap());
                prop_assert_eq!(got, line);
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                prop_assert!(wire.is_empty());
                prop_assert!(line.contains(&b'\n') || line.last() == Some(&b'\r') || line.len() > 32);
            }
        }
    }
}
