//! The time server of the Python tutorials: each request is a strftime
//! format, the answer is the local time rendered with it.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::handler::RequestHandler;
use crate::net::MAX_UDP_PAYLOAD;
use crate::request::{DatagramRequest, StreamRequest};

/// The format used for an empty request: `2026-11-22 05:03:42`.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %X";

/// The longest request line a stream client may send, in bytes.
pub const MAX_TIME_REQUEST: usize = 4096;

/// Why a format could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeError {
    /// The request is not UTF-8.
    NotUtf8,
    /// The format contains a NUL byte, which C strings cannot carry.
    Nul,
    /// The rendered time would be longer than a datagram can carry.
    TooLong,
    /// The rendered time has a line break (`%n`), which one reply line over
    /// a stream cannot carry (over datagrams it is sent as it is).
    LineBreak,
    /// The OS could not give the local time.
    Clock(String),
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeError::NotUtf8 => f.write_str("the request is not valid UTF-8"),
            TimeError::Nul => f.write_str("the format contains a NUL byte"),
            TimeError::TooLong => write!(f, "the format renders to more than {MAX_UDP_PAYLOAD} bytes"),
            TimeError::LineBreak => f.write_str("the format renders a line break, which a reply line cannot carry"),
            TimeError::Clock(e) => write!(f, "cannot read the local time: {e}"),
        }
    }
}

impl std::error::Error for TimeError {}

/// Renders the current local time with the strftime `format` in `request`
/// exactly as C `strftime` does in the C locale (Python's `time.strftime`
/// on Linux), `TZ` honoured. A request that is empty or only white space
/// means [`DEFAULT_TIME_FORMAT`]. Unknown specifiers are copied as C copies
/// them (`%Q` stays `%Q`); nothing here panics.
///
/// # Errors
/// See [`TimeError`].
pub fn render_time(request: &[u8]) -> Result<String, TimeError> {
    let format = std::str::from_utf8(request).map_err(|_| TimeError::NotUtf8)?;
    let format = if format.trim().is_empty() { DEFAULT_TIME_FORMAT } else { format };
    if format.contains('\0') {
        return Err(TimeError::Nul);
    }
    match crate::sys::time::strftime_now(format, MAX_UDP_PAYLOAD) {
        Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|_| TimeError::NotUtf8),
        Ok(None) => Err(TimeError::TooLong),
        Err(e) => Err(TimeError::Clock(e.to_string())),
    }
}

/// The reply to one request: the time, or `error: ...`.
fn reply(request: &[u8]) -> String {
    render_time(request).unwrap_or_else(|e| format!("error: {e}"))
}

/// The reply line to one request over a stream, its newline included: a
/// rendering with a line break cannot be one line, so it is an error.
fn reply_line(request: &[u8]) -> String {
    let mut line = match render_time(request) {
        Ok(time) if time.contains(['\n', '\r']) => format!("error: {}", TimeError::LineBreak),
        Ok(time) => time,
        Err(e) => format!("error: {e}"),
    };
    line.push('\n');
    line
}

/// The time server's handler: each request a strftime format, each answer
/// the local time rendered with it.
///
/// * Datagrams: each datagram is a format; the reply is one datagram, no
///   newline. A rendering larger than
///   [`DatagramRequest::max_reply`](crate::DatagramRequest::max_reply) —
///   over UDP, 3 times the request's size on the wire, headers included,
///   unless the server's
///   [`max_datagram_reply`](crate::Builder::max_datagram_reply) allows
///   more — gets an `error:` reply instead, itself within that bound: no
///   amplification. So `%c` (2 bytes) is answered with its 24, and
///   `%1400Y` (6 bytes: 74 may come back over IPv4, 114 over IPv6) with an
///   error.
/// * Streams: each line is a format (LF ends it, a CR before it is
///   dropped); each reply is one line. A line longer than
///   [`MAX_TIME_REQUEST`] gets an `error:` line and the connection closes.
///
/// Bad requests get a reply beginning with `error:`; the server serves on.
///
/// A line must arrive whole within the [request
/// timeout](Strftime::request_timeout) of its first byte (30 s by
/// default), so a client that dribbles a byte at a time cannot hold a
/// worker for ever; waiting for the first byte of the next line is bounded
/// by the server's idle timeout instead.
///
/// Under the [`Event`](crate::Event) strategy a connection between lines
/// is parked, holding no thread: the handler keeps nothing from one line to
/// the next (lines pipelined behind one stay in the request's buffer and
/// are answered before it parks). A line that has begun is read to its end
/// in the thread that runs it, within the request timeout.
#[derive(Clone, Copy, Debug)]
pub struct Strftime {
    request_timeout: Option<Duration>,
}

impl Default for Strftime {
    fn default() -> Self {
        Strftime { request_timeout: Some(Duration::from_secs(30)) }
    }
}

impl Strftime {
    /// A time server with a 30 s request timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a stream client may take to send one whole line, from its
    /// first byte (`None` or `Some(Duration::MAX)`: for ever).
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }
}

impl RequestHandler<DatagramRequest> for Strftime {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        let mut answer = reply(req.data());
        let max = req.max_reply();
        if answer.len() > max {
            // A small forged request must not aim a large answer at anyone;
            // nor the refusal: cut to the bound (a 0-byte request over
            // IPv4 may draw 56 bytes).
            answer = format!("error: a {}-byte reply is over this request's limit ({max} bytes)", answer.len());
            answer.truncate(max);
        }
        req.reply(answer.as_bytes())
    }
}

impl RequestHandler<StreamRequest> for Strftime {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut line = Vec::new();
        loop {
            // Wait for the next request to begin (the idle timeout governs
            // this wait; under the event strategy, with nothing to read, the
            // connection parks here and `handle` returns), then give it
            // `request_timeout` to arrive whole. Under the event strategy a
            // line in pieces parks too, and `handle` is called again from
            // here: the deadline set at its first byte stays.
            if !req.wait_for_data()? {
                return Ok(());
            }
            if req.read_deadline().is_none() {
                req.set_read_deadline(Deadline::within(Instant::now(), self.request_timeout).instant())?;
            }
            let read = req.read_line_limited(&mut line, MAX_TIME_REQUEST);
            if !matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                req.set_read_deadline(None)?;
            }
            match read {
                Ok(true) => {
                    req.write_all(reply_line(&line).as_bytes())?;
                }
                Ok(false) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    writeln!(req, "error: request line longer than {MAX_TIME_REQUEST} bytes; closing")?;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut && !req.at_eof() => {
                    writeln!(req, "error: request line not complete in time; closing")?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_c_strftime() {
        let year = render_time(b"%Y").unwrap();
        assert_eq!(year.len(), 4);
        assert!(year.starts_with("20"));
        assert_eq!(render_time(b"%Q").unwrap(), "%Q", "unknown specifiers are copied");
        assert_eq!(render_time(b"%").unwrap(), "%");
        assert_eq!(render_time(b"%5Y").unwrap(), format!("0{year}"));
        assert_eq!(render_time("héllo %%".as_bytes()).unwrap(), "héllo %");
        let default = render_time(b"  ").unwrap();
        assert_eq!(default.len(), "2026-11-22 05:03:42".len(), "{default}");
    }

    #[test]
    fn a_line_break_in_a_rendering_is_an_error_reply_over_a_stream_only() {
        assert_eq!(reply_line(b"%Y%n%d"), format!("error: {}\n", TimeError::LineBreak));
        assert_eq!(reply_line(b"%Y\r%d"), format!("error: {}\n", TimeError::LineBreak));
        let year = render_time(b"%Y").unwrap();
        assert_eq!(reply_line(b"%Y"), format!("{year}\n"));
        // Unknown conversions and a lone % render as C strftime renders them.
        assert_eq!(reply_line(b"%Q"), "%Q\n");
        assert_eq!(reply_line(b"%"), "%\n");
        // Over datagrams the rendering goes whole, line break included.
        assert_eq!(reply(b"a%nb"), "a\nb");
    }

    #[test]
    fn bad_formats_are_errors_not_panics() {
        assert_eq!(render_time(b"\xff%Y"), Err(TimeError::NotUtf8));
        assert_eq!(render_time(b"%Y\0"), Err(TimeError::Nul));
        assert_eq!(render_time(b"%100000Y"), Err(TimeError::TooLong));
        // The largest datagram's worth, and nothing at all, are results too.
        assert_eq!(render_time(b"%65507Y").map(|s| s.len()), Ok(65_507));
        assert_eq!(render_time(b"%65508Y"), Err(TimeError::TooLong));
        assert_eq!(render_time("x".repeat(65_507).as_bytes()).map(|s| s.len()), Ok(65_507));
    }
}
