//! Message boundaries on a byte stream — TCP's "sticky packet" problem.
//!
//! TCP delivers bytes, not messages: two `send`s may arrive in one `recv`,
//! one may arrive in two. The Python tutorials solve it by sending each
//! message's length first with `struct.pack`; [`LengthPrefixed`] is that
//! codec (a 4-byte big-endian length, `struct.pack('!I', n)`, then the body),
//! and [`Lines`] is the newline-delimited one. Both have a maximum frame
//! size: an oversized frame is an error before anything is allocated for
//! it, a truncated one is an error, never a hang or a giant allocation.
//!
//! ```
//! use socketserver::framing::LengthPrefixed;
//!
//! let codec = LengthPrefixed::new(1024);
//! let mut wire = Vec::new();
//! codec.write_frame(&mut wire, b"ls -l")?;
//! codec.write_frame(&mut wire, b"pwd")?;
//! assert_eq!(&wire[..4], &[0, 0, 0, 5]); // struct.pack('!I', 5)
//!
//! let mut reader = &wire[..];
//! let mut frame = Vec::new();
//! assert!(codec.read_frame(&mut reader, &mut frame)?);
//! assert_eq!(frame, b"ls -l");
//! assert!(codec.read_frame(&mut reader, &mut frame)?);
//! assert_eq!(frame, b"pwd");
//! assert!(!codec.read_frame(&mut reader, &mut frame)?); // clean end of stream
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, BufRead, ErrorKind, IoSlice, Read, Write};

/// Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthPrefixed {
    max_frame: usize,
}

impl LengthPrefixed {
    /// The length prefix, in bytes.
    pub const HEADER: usize = 4;

    /// A codec that refuses frames longer than `max_frame` bytes (at most
    /// `u32::MAX`, what the prefix can say).
    pub fn new(max_frame: usize) -> Self {
        LengthPrefixed { max_frame: max_frame.min(u32::MAX as usize) }
    }

    /// The largest frame this codec reads or writes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Writes one frame: header and body, in one vectored write where possible.
    ///
    /// # Errors
    /// `InvalidInput` if `body` is longer than the maximum; write errors.
    pub fn write_frame<W: Write + ?Sized>(&self, w: &mut W, body: &[u8]) -> io::Result<()> {
        if body.len() > self.max_frame {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("frame of {} bytes exceeds the maximum of {} bytes", body.len(), self.max_frame),
            ));
        }
        let header = (body.len() as u32).to_be_bytes();
        let mut slices = [IoSlice::new(&header), IoSlice::new(body)];
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match w.write_vectored(slices) {
                Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "connection closed while writing a frame")),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads one frame into `buf` (replacing its contents). Returns `false`
    /// at a clean end of stream (before any byte of a header).
    ///
    /// # Errors
    /// `InvalidData` if the header announces more than the maximum (nothing
    /// is allocated for it); `UnexpectedEof` if the stream ends inside a
    /// header or body; read errors.
    pub fn read_frame<R: Read + ?Sized>(&self, r: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
        let mut header = [0u8; Self::HEADER];
        let mut got = 0;
        while got < header.len() {
            match r.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("stream ended inside a frame header ({got} of 4 bytes)"),
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_frame {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("frame of {len} bytes announced, more than the maximum of {} bytes", self.max_frame),
            ));
        }
        buf.clear();
        // Grow as bytes arrive rather than trusting the header with one big
        // allocation up front.
        let read = r.take(len as u64).read_to_end(buf)?;
        if read < len {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("stream ended inside a frame ({read} of {len} bytes)"),
            ));
        }
        Ok(true)
    }
}

/// Newline-delimited frames. A line ends at `\n`; a `\r` before it is
/// dropped too. A last line without a newline at the end of the stream is
/// still a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lines {
    max_line: usize,
}

impl Lines {
    /// A codec that refuses lines longer than `max_line` bytes (not counting
    /// the line ending).
    pub fn new(max_line: usize) -> Self {
        Lines { max_line }
    }

    /// The longest line this codec reads.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Reads one line into `buf` (replacing its contents, without the line
    /// ending). Returns `false` at the end of the stream.
    ///
    /// # Errors
    /// `InvalidData` once a line passes the maximum (no more than the
    /// maximum plus one buffer is ever held; the rest of the line is left
    /// unread, so the caller should close the connection); read errors.
    pub fn read_line<R: BufRead + ?Sized>(&self, r: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        loop {
            let available = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if buf.is_empty() {
                    return Ok(false);
                }
                break;
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            // The limit allows one trailing '\r' that will be stripped.
            if buf.len() + chunk.len() > self.max_line + 1 {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("line longer than {} bytes", self.max_line),
                ));
            }
            buf.extend_from_slice(chunk);
            let used = chunk.len() + usize::from(done);
            r.consume(used);
            if done {
                break;
            }
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if buf.len() > self.max_line {
            return Err(io::Error::new(ErrorKind::InvalidData, format!("line longer than {} bytes", self.max_line)));
        }
        Ok(true)
    }

    /// Writes `line` and a `\n`.
    ///
    /// # Errors
    /// `InvalidInput` if `line` contains a newline, ends in `\r` (which
    /// [`read_line`](Self::read_line) would take for part of a `\r\n`, so
    /// the line would not come back as written) or is longer than the
    /// maximum; write errors.
    pub fn write_line<W: Write + ?Sized>(&self, w: &mut W, line: &[u8]) -> io::Result<()> {
        if line.contains(&b'\n') {
            return Err(io::Error::new(ErrorKind::InvalidInput, "a line cannot contain a newline"));
        }
        if line.last() == Some(&b'\r') {
            return Err(io::Error::new(ErrorKind::InvalidInput, "a line cannot end in a carriage return"));
        }
        if line.len() > self.max_line {
            return Err(io::Error::new(ErrorKind::InvalidInput, format!("line longer than {} bytes", self.max_line)));
        }
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line);
        out.push(b'\n');
        w.write_all(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_header_allocates_nothing_and_errors() {
        let codec = LengthPrefixed::new(16);
        let wire = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut buf = Vec::new();
        let err = codec.read_frame(&mut &wire[..], &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn truncated_frames_are_errors() {
        let codec = LengthPrefixed::new(16);
        let mut buf = Vec::new();
        assert_eq!(codec.read_frame(&mut &[0u8, 0][..], &mut buf).unwrap_err().kind(), ErrorKind::UnexpectedEof);
        assert_eq!(
            codec.read_frame(&mut &[0u8, 0, 0, 5, b'a'][..], &mut buf).unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn lines_strip_endings_and_keep_a_last_partial_line() {
        let codec = Lines::new(8);
        let mut r = io::BufReader::with_capacity(3, &b"ab\r\ncd\n\nlast"[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while codec.read_line(&mut r, &mut buf).unwrap() {
            got.push(String::from_utf8(buf.clone()).unwrap());
        }
        assert_eq!(got, ["ab", "cd", "", "last"]);
    }

    #[test]
    fn long_lines_are_refused_without_buffering_them() {
        let codec = Lines::new(4);
        let long = vec![b'x'; 1 << 20];
        let mut r = io::BufReader::with_capacity(16, &long[..]);
        let mut buf = Vec::new();
        assert_eq!(codec.read_line(&mut r, &mut buf).unwrap_err().kind(), ErrorKind::InvalidData);
        assert!(buf.len() <= 4 + 1 + 16);
        // Exactly the maximum, with CRLF, is fine.
        let mut ok = io::BufReader::new(&b"abcd\r\n"[..]);
        assert!(codec.read_line(&mut ok, &mut buf).unwrap());
        assert_eq!(buf, b"abcd");
    }
}
