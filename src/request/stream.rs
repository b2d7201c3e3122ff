//! [`StreamRequest`]: one connection, as a handler sees it.

use std::any::Any;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::buffer::ReadBuffer;
use super::conn::Connection;
use super::tls::Session;
use super::timeouts::{Expired, ReadTimeouts, TimeoutPolicy};
use crate::deadline::Deadline;
use crate::handle::ServerHandle;
use crate::net::{Address, Stream, is_write_timeout};
use crate::shutdown::Slot;
use crate::stats::Counters;
use crate::sys;

mod parking;
#[cfg(feature = "tls")]
mod secure;

pub(crate) use self::parking::{BlockingHint, CloseStep, ParkKind};
use self::parking::{Closing, Hint, More};

/// The longest line [`StreamRequest::next_line`] reads, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// The write buffer's first allocation, in bytes: it grows to the server's
/// [`write_buffer`](crate::Builder::write_buffer) only for longer answers.
const WRITE_FIRST: usize = 512;

thread_local! {
    /// Under the event strategy a connection gives its (empty) write buffer
    /// back when it parks; the next connection this thread runs takes it,
    /// so an answer costs no allocation, and a parked connection no memory.
    static SPARE_WBUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A write buffer from this thread's spare (empty, with its capacity).
fn take_spare_wbuf() -> Vec<u8> {
    SPARE_WBUF.with(std::cell::Cell::take)
}

/// Keeps `buf` (cleared) as this thread's spare, unless it grew past the
/// first allocation's size many times over (a bulk answer's buffer is
/// freed, not kept per thread).
fn keep_spare_wbuf(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > 16 * WRITE_FIRST {
        return;
    }
    buf.clear();
    SPARE_WBUF.with(|spare| spare.set(buf));
}

/// Per-connection settings a stream request needs.
#[derive(Clone, Debug)]
pub(crate) struct StreamPolicy {
    pub(crate) timeouts: TimeoutPolicy,
    pub(crate) read_buffer: usize,
    pub(crate) write_buffer: usize,
    /// During a shutdown, how long a connection at a request boundary is
    /// still waited on for its next request.
    pub(crate) drain_window: Duration,
    /// With the PROXY protocol: how long its header may take.
    pub(crate) proxy_header_timeout: Option<Duration>,
    /// With TLS: the config and the handshake's timeout.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsPolicy>,
}

/// One connection, as a handler sees it: Python's `StreamRequestHandler`
/// with `rfile` and `wfile` in one value.
///
/// * Reading is buffered: [`next_line`](Self::next_line) gives the next
///   line as an owned `String` (Python's `for line in self.rfile`), and
///   [`BufRead`] (`read_line`, `read_until`, `lines`) and [`Read`] (`read`,
///   `read_exact`) are implemented.
/// * Writes are collected (8 KiB by default,
///   [`Builder::write_buffer`](crate::Builder::write_buffer)), so that
///   `writeln!(req, "{a} {b}")` leaves as one segment, not three. The rule:
///   what is written is sent **before the server waits for the peer** — any
///   read that finds nothing buffered, [`wait_for_data`](Self::wait_for_data)
///   included — when the buffer fills, on `flush`, and when the handler is
///   done; so a request/response handler never needs `flush`, under every
///   strategy. A handler that writes and then works a while before it
///   reads again (a progress line before a long job) calls `flush` to send
///   what it wrote first. Whatever hands out the socket itself
///   ([`socket`](Self::socket), [`try_clone`](Self::try_clone),
///   [`fill_buf_and_stream`](Self::fill_buf_and_stream)) sends the buffer
///   first, so bytes written there never overtake bytes written here.
/// * A read that times out fails with `ErrorKind::TimedOut`; if the timeout
///   was the server's idle timeout, the connection is shut down as well.
///
/// # Request boundaries and shutdown
///
/// A connection is *between requests* when a read would wait for new
/// bytes and the handler has consumed nothing since it last wrote (or since
/// the connection began) — the `while let Some(line) = req.next_line()?`
/// of a line protocol, or an explicit [`wait_for_data`](Self::wait_for_data).
/// When the server shuts down, a wait there lasts at most the server's
/// [drain window](crate::Builder::drain_window) (100 ms by default): a
/// request that arrives within it is served, and a connection that stays
/// quiet that long sees the end of the stream. A read in the middle of a
/// request waits as usual; the grace period bounds the whole drain.
///
/// When the handler is done, the connection is closed; if the peer is still
/// sending, the server first stops writing and reads what is left for a
/// moment, so that the peer gets the whole answer rather than a reset.
///
/// ```no_run
/// use socketserver::{StreamRequest, ThreadingTcpServer};
/// use std::io::Write;
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
///     while let Some(line) = req.next_line()? {
///         writeln!(req, "{}", line.to_uppercase())?;
///     }
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct StreamRequest {
    conn: Connection,
    rbuf: ReadBuffer,
    wbuf: Vec<u8>,
    write_buffer: usize,
    timeouts: ReadTimeouts,
    drain_window: Duration,
    peer: Address,
    /// A read returned end of stream: the peer closed, or the drain window
    /// passed (`drained`).
    eof: bool,
    /// The end of the stream was the drain window's, not the peer's.
    drained: bool,
    /// Bytes were consumed since the handler last wrote: a read now is in
    /// the middle of a request, not at a boundary.
    mid_request: bool,
    /// Run by the event strategy: a wait parks the connection rather than
    /// the thread, where it can (see [`Self::reentrant`]).
    parking: bool,
    /// Under the event strategy: the loop's hint for a wait that cannot park.
    hint: Option<Hint>,
    /// Under the event strategy: the handler reached a boundary
    /// (`wait_for_data`) and has consumed and written nothing since, so a
    /// library call that must wait for more can park the connection: the
    /// handler is called again from the top and reads the same buffered
    /// bytes again (none were consumed where it could see them).
    reentrant: bool,
    /// Parks in the middle of the current request.
    parks: u32,
    /// Requests begun in this turn (since the connection last resumed).
    turn_served: u32,
    /// How it parked (meaningful while `parked`).
    park_kind: ParkKind,
    /// A timer of the parked connection passed: the next wait fails as the
    /// timeout would have failed a read that waited.
    expired: bool,
    /// Under the event strategy: what writes left that the socket did not
    /// take (a peer slow to read), sent on the event loop before the
    /// handler runs again.
    backlog: Vec<u8>,
    /// Under the event strategy: the close, once it has begun.
    closing: Option<Closing>,
    /// What the handler keeps for this connection, by type.
    states: Vec<Box<dyn Any + Send>>,
    /// `wait_for_data` found nothing and parked the connection.
    parked: bool,
    /// The last read from the socket took all it had (it returned less
    /// than there was room for). Under the event strategy, whose epoll set
    /// is edge-triggered, anything that comes later raises a new event, so
    /// a boundary parks without asking the socket again (one `recv` per
    /// request, not two). Cleared by every other read and when the
    /// connection resumes.
    socket_empty: bool,
    /// An event said the peer closed: its end of stream may wait behind
    /// the bytes a read returned, and no further event will come, so a
    /// boundary always asks the socket.
    peer_closing: bool,
    idle_closed: bool,
    /// A PROXY header is still to be read, within this long.
    proxy_header: Option<Duration>,
    /// When the PROXY header must be in (set at its first read; a header
    /// read across parks keeps it).
    proxy_deadline: Option<Deadline>,
    /// The address the client connected to, as a PROXY header said.
    local: Option<Address>,
    /// A PROXY header was read (the preamble says so once it is whole).
    proxied: bool,
    /// Under TLS, once its handshake has begun: the session every read and
    /// write goes through (`None`: plaintext, the one branch it costs).
    tls: Option<Box<Session>>,
    /// TLS is to begin (taken when the handshake starts).
    #[cfg(feature = "tls")]
    tls_policy: Option<crate::tls::TlsPolicy>,
    /// When the TLS handshake must be done (set as it begins), and its timeout.
    handshake_deadline: Option<Deadline>,
    #[cfg(feature = "tls")]
    handshake_timeout: Duration,
    /// Under TLS: records to send, reused.
    sealed: Vec<u8>,
}

/// What came before a connection's own bytes (a PROXY header).
#[derive(Debug)]
pub(crate) enum Preamble {
    /// Nothing was expected.
    None,
    /// A header was read: the peer may have changed, verify it now.
    Read,
    /// The peer closed before sending anything (a health check that only
    /// connects): no request, no error.
    Closed,
    /// The header was malformed, incomplete in time, or cut short.
    Failed(io::Error),
    /// Under the event strategy: the rest of the header has not come yet;
    /// the connection parked, and the preamble is read again when it does.
    Pending,
    /// The TLS handshake failed or timed out.
    #[cfg_attr(not(feature = "tls"), allow(dead_code, reason = "made by the TLS handshake only"))]
    TlsFailed(io::Error),
}

/// Plaintext sealed into TLS records at a time (a bulk write is not held
/// whole twice).
const SEAL_CHUNK: usize = 64 * 1024;

impl StreamRequest {
    pub(crate) fn new(stream: Stream, peer: Address, server: ServerHandle, policy: StreamPolicy, slot: Slot) -> Self {
        StreamRequest {
            conn: Connection::new(stream, server, slot),
            rbuf: ReadBuffer::new(policy.read_buffer),
            wbuf: Vec::new(),
            write_buffer: policy.write_buffer,
            timeouts: ReadTimeouts::new(policy.timeouts, Instant::now()),
            drain_window: policy.drain_window,
            peer,
            eof: false,
            drained: false,
            mid_request: false,
            parking: false,
            hint: None,
            reentrant: false,
            parks: 0,
            turn_served: 0,
            park_kind: ParkKind::Boundary,
            expired: false,
            backlog: Vec::new(),
            closing: None,
            states: Vec::new(),
            parked: false,
            socket_empty: false,
            peer_closing: false,
            idle_closed: false,
            proxy_header: policy.proxy_header_timeout,
            proxy_deadline: None,
            local: None,
            proxied: false,
            tls: None,
            #[cfg(feature = "tls")]
            tls_policy: policy.tls,
            handshake_deadline: None,
            #[cfg(feature = "tls")]
            handshake_timeout: Duration::ZERO,
            sealed: Vec::new(),
        }
    }

    /// Reads what comes before the connection's own bytes: the PROXY
    /// header, when one is expected, then (under TLS) the handshake.
    pub(crate) fn read_preamble(&mut self) -> Preamble {
        if self.proxy_header.is_some() {
            match self.read_proxy_header() {
                Preamble::Read => self.proxied = true,
                other => return other,
            }
        }
        #[cfg(feature = "tls")]
        if let Some(stop) = self.handshake() {
            return stop;
        }
        if self.proxied { Preamble::Read } else { Preamble::None }
    }

    /// Reads the PROXY header before anything else: the peer becomes the
    /// client it names, the local address the one the client connected to.
    /// Bytes after the header stay buffered (for the handler, or the TLS
    /// handshake). Waits at most the header timeout from now, the whole
    /// header (a trusted proxy sends it at once).
    fn read_proxy_header(&mut self) -> Preamble {
        let Some(timeout) = self.proxy_header else { return Preamble::None };
        let deadline = *self.proxy_deadline.get_or_insert_with(|| Deadline::after(Instant::now(), timeout));
        let fd = self.fd();
        let timed_out = |peer: &Address| {
            Preamble::Failed(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no whole PROXY header from {peer} within {timeout:?}"),
            ))
        };
        loop {
            match crate::proxy::parse(self.rbuf.buffer()) {
                Ok(Some((header, len))) => {
                    self.rbuf.consume(len);
                    self.proxy_header = None;
                    if let crate::proxy::Header::Proxied { source, destination } = header {
                        self.peer = Address::Inet(source);
                        self.local = Some(Address::Inet(destination));
                    }
                    return Preamble::Read;
                }
                Ok(None) => {}
                Err(e) => return Preamble::Failed(crate::proxy::to_io(e)),
            }
            if !self.parking {
                let mut ready = [false];
                match sys::poll(&[fd], &mut ready, deadline.left(Instant::now())) {
                    Ok(0) => return timed_out(&self.peer),
                    Ok(_) => {}
                    Err(e) => return Preamble::Failed(e),
                }
            }
            match self.rbuf.fill_more(TryRead(self.conn.stream()), crate::proxy::MAX_HEADER) {
                Ok(0) if self.rbuf.is_empty() => {
                    self.eof = true;
                    return Preamble::Closed;
                }
                Ok(0) => {
                    self.eof = true;
                    return Preamble::Failed(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} closed in the middle of its PROXY header", self.peer),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.parking => {
                    // The event strategy: the rest of the header parks, with
                    // no thread, until it comes or the deadline passes.
                    if std::mem::take(&mut self.expired) || deadline.passed(Instant::now()) {
                        return timed_out(&self.peer);
                    }
                    self.parked = true;
                    self.park_kind = ParkKind::Preamble;
                    return Preamble::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Preamble::Failed(e),
            }
        }
    }

    /// The address of the client: with the
    /// [PROXY protocol](crate::Builder::proxy_protocol), the one the proxy
    /// reports.
    pub fn peer_addr(&self) -> &Address {
        &self.peer
    }

    /// The address the client connected to: with the
    /// [PROXY protocol](crate::Builder::proxy_protocol), the proxy's
    /// frontend address from the header.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<Address> {
        if let Some(local) = &self.local {
            return Ok(local.clone());
        }
        self.conn.stream().local_addr()
    }

    /// A handle to the server: shut it down, read its stats.
    pub fn server(&self) -> &ServerHandle {
        self.conn.server()
    }

    /// The socket itself, e.g. to change its timeouts, after sending what
    /// the write buffer holds. Reading from it directly skips bytes already
    /// buffered by this request.
    ///
    /// # Errors
    /// When sending the write buffer fails; `Unsupported` under TLS (what
    /// is read or written on the socket itself would bypass the encryption).
    pub fn socket(&mut self) -> io::Result<&Stream> {
        self.refuse_raw_under_tls("socket")?;
        self.flush_all()?;
        Ok(self.conn.stream())
    }

    /// A second handle to the connection, for another thread to write to
    /// (a chat room broadcasting to its members), after sending what the
    /// write buffer holds. Shut down together with the request when the
    /// server closes connections at the end of its grace period.
    ///
    /// # Errors
    /// When sending the write buffer fails; as `dup(2)`; `Unsupported`
    /// under TLS (bytes written to the clone would bypass the encryption).
    pub fn try_clone(&mut self) -> io::Result<Stream> {
        self.refuse_raw_under_tls("try_clone")?;
        self.flush_all()?;
        self.conn.try_clone()
    }

    /// This connection's state of type `T`, made with `T::default()` the
    /// first time: what Python keeps in `self.x` across `setup`, `handle`
    /// and `finish`. One handler value serves every connection, so
    /// per-connection state lives here; under the [`Event`](crate::Event)
    /// strategy it is also what survives while the connection is parked
    /// (`handle` is called again; its locals are gone).
    ///
    /// ```
    /// use socketserver::{RequestHandler, StreamRequest};
    /// use std::io::{self, Write};
    ///
    /// #[derive(Default)]
    /// struct Seen(u64);
    ///
    /// struct Counting;
    ///
    /// impl RequestHandler<StreamRequest> for Counting {
    ///     fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
    ///         while let Some(line) = req.next_line()? {
    ///             req.state_mut::<Seen>().0 += 1;
    ///             writeln!(req, "{line}")?;
    ///         }
    ///         Ok(())
    ///     }
    ///     fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
    ///         let seen = req.state_mut::<Seen>().0;
    ///         writeln!(req, "{seen} lines")
    ///     }
    /// }
    /// ```
    pub fn state_mut<T: Default + Send + 'static>(&mut self) -> &mut T {
        let at = match self.states.iter().position(|s| (**s).is::<T>()) {
            Some(at) => at,
            None => {
                self.states.push(Box::new(T::default()));
                self.states.len() - 1
            }
        };
        match self.states[at].downcast_mut::<T>() {
            Some(state) => state,
            None => unreachable!("the slot at {at} holds a T: it was found or made so"),
        }
    }

    /// This connection's state of type `T`, if set.
    pub fn state<T: 'static>(&self) -> Option<&T> {
        self.states.iter().find_map(|s| s.downcast_ref::<T>())
    }

    /// Takes this connection's state of type `T` out, if set.
    pub fn take_state<T: 'static>(&mut self) -> Option<T> {
        let at = self.states.iter().position(|s| (**s).is::<T>())?;
        self.states.swap_remove(at).downcast::<T>().ok().map(|b| *b)
    }

    /// The next line, without its `\n` or `\r\n`; `None` at the end of the
    /// stream. Python's `for line in self.rfile`, written
    /// `while let Some(line) = req.next_line()? { ... }`: the line is owned,
    /// so the body can write to `req`.
    ///
    /// # Errors
    /// `InvalidData` if the line is not UTF-8 or longer than [`MAX_LINE`]
    /// bytes; `TimedOut` on a read timeout; any socket error.
    pub fn next_line(&mut self) -> io::Result<Option<String>> {
        let Some(mut line) = self.take_line(MAX_LINE)? else { return Ok(None) };
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        String::from_utf8(line)
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("line from {} is not UTF-8", self.peer)))
    }

    /// Reads one line into `buf` (replacing its contents, without the line
    /// ending), refusing lines longer than `max` bytes; `false` at the end
    /// of the stream. [`framing::Lines::read_line`](crate::framing::Lines::read_line)
    /// for a request, except that nothing is consumed until the line is
    /// whole: under the [`Event`](crate::Event) strategy a line that comes
    /// in pieces parks the connection rather than hold a thread.
    ///
    /// # Errors
    /// `InvalidData` once the line passes `max` (the rest is left unread:
    /// close the connection); timeouts; socket errors.
    pub fn read_line_limited(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
        buf.clear();
        let Some(line) = self.take_line(max)? else { return Ok(false) };
        buf.extend_from_slice(&line);
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        // (`take_line` refused a longer one.)
        Ok(true)
    }

    /// The next line with its `\n` (none on a last line at the end of the
    /// stream); `None` at the end. Consumes nothing until the line is whole
    /// or refused, so that a wait for its rest can park.
    fn take_line(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut scanned = 0;
        loop {
            let buffered = self.rbuf.buffer();
            if let Some(i) = buffered[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                let content = end - 1 - usize::from(end >= 2 && buffered[end - 2] == b'\r');
                if content > max {
                    return Err(self.line_too_long(max));
                }
                let line = buffered[..end].to_vec();
                self.consume(end);
                return Ok(Some(line));
            }
            scanned = buffered.len();
            // (A `\r` may come before the `\n`.)
            if scanned > max.saturating_add(1) {
                return Err(self.line_too_long(max));
            }
            if !self.read_more(max.saturating_add(2))? {
                if self.rbuf.is_empty() {
                    return Ok(None);
                }
                // A last line without a newline.
                if self.rbuf.buffer().len() > max {
                    return Err(self.line_too_long(max));
                }
                let line = self.rbuf.buffer().to_vec();
                self.consume(line.len());
                return Ok(Some(line));
            }
        }
    }

    fn line_too_long(&self, max: usize) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("line from {} longer than {max} bytes", self.peer))
    }

    /// Reads a line, up to and including `\n`, appending it to `buf`;
    /// returns the number of bytes read, 0 at end of stream.
    ///
    /// # Errors
    /// `InvalidData` if the line is not UTF-8; `TimedOut` on a read timeout;
    /// any socket error.
    pub fn read_line(&mut self, buf: &mut String) -> io::Result<usize> {
        let Some(line) = self.take_line(usize::MAX)? else { return Ok(0) };
        let text = std::str::from_utf8(&line)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("line from {} is not UTF-8", self.peer)))?;
        buf.push_str(text);
        Ok(line.len())
    }

    /// Iterates over the lines of the stream, without their `\n` or `\r\n`.
    /// The iterator borrows the request: to write while reading lines, use
    /// [`next_line`](Self::next_line).
    pub fn lines(&mut self) -> io::Lines<&mut Self> {
        BufRead::lines(self)
    }

    /// Waits until the peer sends something (`true`) or closes (`false`),
    /// without consuming anything: an explicit request boundary. While the
    /// server runs it waits as long as the timeouts allow; once it shuts
    /// down, at most the drain window: a request that arrives within it is
    /// returned (`true`) and can be answered, otherwise the connection
    /// counts as closed (`false`) — as a web server closes idle keep-alive
    /// connections, without cutting a request that raced the signal.
    ///
    /// # Errors
    /// As [`BufRead::fill_buf`]: timeouts, socket errors.
    pub fn wait_for_data(&mut self) -> io::Result<bool> {
        if self.parking {
            return self.wait_for_data_parking();
        }
        if !self.rbuf.is_empty() {
            return Ok(true);
        }
        self.mid_request = false;
        self.fill_buf().map(|data| !data.is_empty())
    }

    /// Reads more after what is buffered (a line or frame not whole yet),
    /// holding at most `limit` bytes; waits as a read does (parks, under
    /// the event strategy, where it can). `false`: the end of the stream.
    fn read_more(&mut self, limit: usize) -> io::Result<bool> {
        if self.parking {
            match self.more(limit)? {
                More::Came => return Ok(true),
                More::Eof => return Ok(false),
                More::Wait => {}
            }
        }
        if !self.rbuf.is_empty() {
            // A part of a request is here: waiting for its rest is no boundary.
            self.mid_request = true;
        }
        if !self.before_read()? {
            return Ok(false);
        }
        loop {
            match self.rbuf.fill_more(source(&self.conn, &mut self.tls, true), limit) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(_) => {
                    self.timeouts.data_came(Instant::now);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }

    /// Like [`BufRead::fill_buf`], and the socket to answer on at the same
    /// time: a handler can write straight out of the read buffer, then
    /// [`consume`](BufRead::consume) what it used. An empty slice means end
    /// of stream. Writes to the `Stream` go to the socket unbuffered, after
    /// what the write buffer held.
    ///
    /// # Errors
    /// As [`BufRead::fill_buf`]; when sending the write buffer fails;
    /// `Unsupported` under TLS (bytes written to the stream would bypass
    /// the encryption).
    pub fn fill_buf_and_stream(&mut self) -> io::Result<(&[u8], &Stream)> {
        self.refuse_raw_under_tls("fill_buf_and_stream")?;
        self.flush_all()?;
        BufRead::fill_buf(self)?;
        // What is written to the stream is out of this request's sight.
        self.reentrant = false;
        Ok((self.rbuf.buffer(), self.conn.stream()))
    }

    /// Waits until at least `n` bytes are buffered (fewer only at the end of
    /// the stream) and returns all that is buffered, consuming nothing: a
    /// frame's header can be looked at, and the whole frame taken with
    /// [`consume`](BufRead::consume) once it is here. Under the
    /// [`Event`](crate::Event) strategy a wait here parks the connection
    /// (the handler is called again from its `wait_for_data`), so a frame
    /// that comes in pieces holds no thread; `read_exact` of a header and
    /// then of a body would hold one between the two.
    ///
    /// ```no_run
    /// # use socketserver::StreamRequest;
    /// # use std::io::{self, BufRead, Write};
    /// fn frames(req: &mut StreamRequest) -> io::Result<()> {
    ///     while req.wait_for_data()? {
    ///         let len = match req.fill_at_least(4)? {
    ///             head if head.len() < 4 => return Ok(()), // closed mid-header
    ///             head => u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize,
    ///         };
    ///         if len > 64 * 1024 {
    ///             return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    ///         }
    ///         let frame = req.fill_at_least(4 + len)?.get(4..4 + len).map(<[u8]>::to_vec);
    ///         let Some(body) = frame else { return Ok(()) }; // closed mid-frame
    ///         req.consume(4 + len);
    ///         req.write_all(&body)?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// Timeouts; socket errors. `n` is buffered whole: bound what a peer's
    /// header may ask for before asking for it.
    pub fn fill_at_least(&mut self, n: usize) -> io::Result<&[u8]> {
        let limit = n.max(ReadBuffer::FIRST);
        while self.rbuf.buffer().len() < n {
            if !self.read_more(limit)? {
                break;
            }
        }
        Ok(self.rbuf.buffer())
    }

    /// Bytes already read from the socket and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        self.rbuf.buffer()
    }

    /// Whether the peer has closed its side (a read returned end of stream).
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Runs `f`, a wait the library cannot see (a database call, a lock,
    /// a `sleep`), telling the strategy first, as tokio's `block_in_place`
    /// does. Under [`Event`](crate::Event) this thread hands its polling
    /// slot to another thread before `f` starts, so the other connections
    /// it would have served do not wait for `f`; without the call, the
    /// event loop's monitor finds the thread blocked and hands the slot on
    /// within about 0.1 ms. Under the other strategies every request has a
    /// thread of its own, and this only runs `f`.
    ///
    /// What the write buffer holds is not sent first: call
    /// [`flush`](Write::flush) before, if the peer should have it while `f`
    /// runs.
    ///
    /// ```no_run
    /// # use std::io::{self, Write};
    /// # fn lookup(_: &str) -> String { String::new() }
    /// fn handle(req: &mut socketserver::StreamRequest) -> io::Result<()> {
    ///     while let Some(key) = req.next_line()? {
    ///         let value = req.blocking(|| lookup(&key)); // a database call
    ///         writeln!(req, "{value}")?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn blocking<T>(&mut self, f: impl FnOnce() -> T) -> T {
        self.hint_blocking();
        f()
    }

    /// Sets a time by which reads must be done (`None`: no deadline): a
    /// read still waiting for data then fails with `ErrorKind::TimedOut`,
    /// however often the peer sends a byte. This is how a handler bounds a
    /// whole request against a slow client ("slowloris") that the idle
    /// timeout, which any byte resets, cannot catch. The connection stays
    /// open; the handler decides what to do.
    ///
    /// # Errors
    /// As `setsockopt(SO_RCVTIMEO)` when the deadline is cleared.
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        if let Some(receive) = self.timeouts.set_deadline(deadline) {
            self.conn.stream().set_read_timeout(receive)?;
        }
        Ok(())
    }

    /// The read deadline set by [`set_read_deadline`](Self::set_read_deadline), if any.
    pub fn read_deadline(&self) -> Option<Instant> {
        self.timeouts.deadline()
    }

    /// Before a read from the socket, with nothing buffered: at a request
    /// boundary, wait as a boundary does; in the middle of a request, bound
    /// the socket's wait by the deadline (or fail if it has passed) and by
    /// what is left of an idle timeout that spans reads. `Ok(false)`: the
    /// drain window passed with nothing to read (end of stream).
    fn before_read(&mut self) -> io::Result<bool> {
        // Reading on after `wait_for_data` said `false`: the handler did not
        // return to park, so it is not parked (it waits here instead).
        self.parked = false;
        // The peer may be waiting for the answer before it sends more: what
        // the handler wrote goes out before this thread waits for the peer.
        if !self.wbuf.is_empty() || !self.backlog.is_empty() {
            self.flush_all()?;
        }
        if self.eof {
            return Ok(!self.drained);
        }
        if self.tls_readable() {
            // Decrypted already (or its end is): no wait.
            return Ok(true);
        }
        if !self.mid_request {
            return self.wait_at_boundary();
        }
        match self.timeouts.next_wait(Instant::now) {
            Ok(None) => {}
            Ok(Some(wait)) => self.conn.stream().set_read_timeout(Some(wait))?,
            Err(_) => return Err(self.deadline_error()),
        }
        Ok(true)
    }

    /// Waits until the socket is readable or the server shuts down; then
    /// (shutting down) at most the drain window. `Ok(false)` when the window
    /// passes with nothing to read; a timeout as a read would time out.
    fn wait_at_boundary(&mut self) -> io::Result<bool> {
        let timeout = match self.timeouts.next_wait(Instant::now) {
            Ok(wait) => wait.or(self.timeouts.receive()),
            Err(_) => return Err(self.deadline_error()),
        };
        let fd = self.fd();
        let mut ready = [false; 2];
        if sys::poll(&[fd, self.conn.stop_fd()], &mut ready, timeout)? == 0 {
            return Err(self.read_error(io::ErrorKind::WouldBlock.into()));
        }
        if ready[0] {
            return Ok(true);
        }
        // Shutting down: the next request gets the drain window to arrive.
        let window = timeout.map_or(self.drain_window, |t| t.min(self.drain_window));
        if sys::poll(&[fd], &mut ready[..1], Some(window))? > 0 {
            return Ok(true);
        }
        if timeout.is_some_and(|t| t < self.drain_window) {
            return Err(self.read_error(io::ErrorKind::WouldBlock.into()));
        }
        self.eof = true;
        self.drained = true;
        Ok(false)
    }

    fn deadline_error(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("read deadline passed waiting for {}", self.peer))
    }

    fn read_error(&mut self, e: io::Error) -> io::Error {
        if e.kind() != io::ErrorKind::WouldBlock {
            return e;
        }
        match self.timeouts.expired(Instant::now) {
            Expired::Deadline => self.deadline_error(),
            Expired::Idle(idle) => self.close_idle(format!("idle timeout: nothing from {} for {idle:?}", self.peer)),
            Expired::Read => io::Error::new(io::ErrorKind::TimedOut, format!("read from {} timed out", self.peer)),
        }
    }

    /// A write that made no progress for the socket's send timeout: the
    /// idle timeout (the peer takes nothing: closed, counted) or the write
    /// timeout (the write fails; the connection stays).
    fn write_timed_out(&mut self) -> io::Error {
        // What the peer did not take in time is not sent later.
        self.backlog = Vec::new();
        match self.idle_applies_to_writes() {
            Some(idle) => self.close_idle(format!("idle timeout: {} took nothing for {idle:?}", self.peer)),
            None => {
                let after = self.timeouts.policy().send().unwrap_or_default();
                io::Error::new(io::ErrorKind::TimedOut, format!("write to {} timed out after {after:?}", self.peer))
            }
        }
    }

    /// The idle timeout, when it is what bounds a write (no write timeout,
    /// or a longer one): the socket's send timeout is then the idle timeout.
    fn idle_applies_to_writes(&self) -> Option<std::time::Duration> {
        let policy = self.timeouts.policy();
        policy.idle.filter(|idle| policy.write.is_none_or(|w| w >= *idle))
    }

    /// Closes the connection for idleness: counted, shut down, and the
    /// error that follows is its normal end, not the handler's failure.
    fn close_idle(&mut self, why: String) -> io::Error {
        Counters::bump(&self.server().shared.stats.idle_closed);
        let _ = self.conn.stream().shutdown(Shutdown::Both);
        self.eof = true;
        self.idle_closed = true;
        io::Error::new(io::ErrorKind::TimedOut, format!("{why}; connection closed"))
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.mid_request = false;
        if self.tls.is_some() {
            return self.send_sealed(buf);
        }
        self.send_raw(buf)
    }

    /// Sends bytes as they go on the wire (plaintext, or TLS records).
    fn send_raw(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.parking {
            return self.send_parking(buf);
        }
        self.send_waiting(buf)
    }

    /// Under TLS: encrypts `buf` ([`SEAL_CHUNK`] at a time, so that a bulk
    /// write is not held whole twice) and sends the records, after any rustls had
    /// queued, as plaintext is sent.
    fn send_sealed(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        loop {
            let (chunk, after) = rest.split_at(rest.len().min(SEAL_CHUNK));
            rest = after;
            let mut sealed = std::mem::take(&mut self.sealed);
            sealed.clear();
            let result = match self.tls.as_deref_mut() {
                Some(tls) => tls.seal(chunk, &mut sealed),
                None => Ok(()),
            };
            let result = result.and_then(|()| self.send_raw(&sealed));
            self.keep_sealed(sealed);
            result?;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Keeps a records buffer for the next answer, unless a bulk write grew
    /// it past twice the chunk it seals at a time.
    fn keep_sealed(&mut self, mut sealed: Vec<u8>) {
        if sealed.capacity() <= 2 * SEAL_CHUNK {
            sealed.clear();
            self.sealed = sealed;
        }
    }

    /// Whether a TLS read would return without the socket: plaintext is
    /// decrypted and held, or the peer's end waits there.
    fn tls_readable(&mut self) -> bool {
        self.tls.as_deref_mut().is_some_and(Session::readable)
    }

    /// Whether what the last read found is all there is, as far as TLS
    /// knows: nothing decrypted is held, and the socket was found empty (a
    /// TLS read stops at its first plaintext, so a short read does not say
    /// the socket is empty). Always true without TLS.
    fn tls_exhausted(&mut self) -> bool {
        self.tls.as_deref_mut().is_none_or(Session::exhausted)
    }

    fn refuse_raw_under_tls(&self, what: &str) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if self.tls.is_some() || self.tls_policy.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("StreamRequest::{what} under TLS: the socket itself would bypass the encryption"),
            ));
        }
        let _ = what;
        Ok(())
    }

    /// Sends all of `buf`, waiting for the peer as long as the write
    /// timeout allows.
    fn send_waiting(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut stream = self.conn.stream();
        stream.write_all(buf).map_err(|e| if is_write_timeout(&e) { self.write_timed_out() } else { e })
    }

    /// Sends the write buffer and the backlog, waiting if it must.
    fn flush_all(&mut self) -> io::Result<()> {
        self.flush_buffer()?;
        self.reentrant = false;
        self.send_backlog_waiting()
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() && !self.tls.as_deref().is_some_and(Session::wants_write) {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let result = self.send(&buf);
        self.wbuf = buf;
        self.wbuf.clear();
        result
    }

    /// Whether `err`, which ended the handler, is the connection's idle
    /// timeout rather than the handler's failure: a read or write through
    /// the request closed it for idleness, or a write straight to the socket
    /// (`fill_buf_and_stream`, `try_clone`) stalled for the idle timeout
    /// while the peer took nothing — then it is closed and counted here.
    pub(crate) fn closed_for_idleness(&mut self, err: &io::Error) -> bool {
        if self.idle_closed {
            return err.kind() == io::ErrorKind::TimedOut;
        }
        let stalled_write =
            is_write_timeout(err) && self.idle_applies_to_writes().is_some() && sys::unsent(self.fd()) > 0;
        if stalled_write {
            let _ = self.close_idle(format!("idle timeout: {} took nothing", self.peer));
        }
        stalled_write
    }

    pub(crate) fn flush_pending(&mut self) -> io::Result<()> {
        self.flush_buffer()
    }

    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.conn.fd()
    }
}

/// What a request reads its bytes from: the socket, or its TLS session
/// over the socket; waiting as the stream's timeouts say, or not at all.
struct Source<'a> {
    stream: &'a Stream,
    tls: Option<&'a mut Session>,
    wait: bool,
}

fn source<'a>(conn: &'a Connection, tls: &'a mut Option<Box<Session>>, wait: bool) -> Source<'a> {
    Source { stream: conn.stream(), tls: tls.as_deref_mut(), wait }
}

impl Read for Source<'_> {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut stream = self.stream;
        match (&mut self.tls, self.wait) {
            (None, true) => stream.read(buf),
            (None, false) => stream.try_read(buf),
            (Some(tls), true) => tls.read(&mut stream, buf),
            (Some(tls), false) => tls.read(&mut TryRead(stream), buf),
        }
    }
}

/// Reads without waiting (the stream's `Read` waits for its timeout).
struct TryRead<'a>(&'a Stream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Read for StreamRequest {
    /// Under the event strategy, consumes nothing until all of `buf` is
    /// here (up to the read buffer's size), so that a frame that comes in
    /// pieces parks the connection; longer ones are read as `Read` does.
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if self.parking && buf.len() <= self.rbuf.capacity() {
            while self.rbuf.buffer().len() < buf.len() {
                if !self.read_more(buf.len().max(ReadBuffer::FIRST))? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer"));
                }
            }
            buf.copy_from_slice(&self.rbuf.buffer()[..buf.len()]);
            self.consume(buf.len());
            return Ok(());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            match self.read(rest) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer")),
                Ok(n) => rest = &mut rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.rbuf.is_empty() && self.parking && !self.eof {
            // Nothing consumed in this call yet: it can park.
            match self.more(self.rbuf.capacity())? {
                More::Came => {
                    let n = self.rbuf.buffer().len().min(buf.len());
                    buf[..n].copy_from_slice(&self.rbuf.buffer()[..n]);
                    self.consume(n);
                    return Ok(n);
                }
                More::Eof => return Ok(0),
                More::Wait => {}
            }
        }
        if self.rbuf.is_empty() && !self.before_read()? {
            return Ok(0);
        }
        self.reentrant = false;
        self.socket_empty = false;
        match self.rbuf.read_from(source(&self.conn, &mut self.tls, true), buf) {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.timeouts.data_came(Instant::now);
                self.mid_request = true;
                Ok(n)
            }
            Err(e) => Err(self.read_error(e)),
        }
    }
}

impl BufRead for StreamRequest {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.rbuf.is_empty() && self.parking && !self.eof {
            // Reads nothing it keeps from the handler: it can park.
            match self.more(self.rbuf.capacity())? {
                More::Came | More::Eof => return Ok(self.rbuf.buffer()),
                More::Wait => {}
            }
        }
        if self.rbuf.is_empty() {
            if !self.before_read()? {
                return Ok(&[]);
            }
            self.socket_empty = false;
            match self.rbuf.fill_from(source(&self.conn, &mut self.tls, true)) {
                Ok(b) => {
                    self.eof = b.is_empty();
                    self.socket_empty = !self.eof && !self.rbuf.is_full() && self.tls_exhausted();
                    self.timeouts.data_came(Instant::now);
                }
                Err(e) => return Err(self.read_error(e)),
            }
        }
        Ok(self.rbuf.buffer())
    }

    fn consume(&mut self, amt: usize) {
        self.rbuf.consume(amt);
        self.mid_request |= amt > 0;
        self.reentrant &= amt == 0;
    }
}

impl Write for StreamRequest {
    /// Sends all of `buf` (or buffers it, when write buffering is on).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.mid_request = false;
        // Written is seen, buffered or not: a wait cannot call the handler
        // again from its boundary (it would write this twice).
        self.reentrant = false;
        let cap = self.write_buffer;
        if cap == 0 {
            self.send(buf)?;
            return Ok(buf.len());
        }
        if self.wbuf.len() + buf.len() > cap {
            self.flush_buffer()?;
        }
        if buf.len() >= cap {
            self.send(buf)?;
        } else {
            if self.wbuf.capacity() == 0 {
                // Most answers are short: a first piece that fits them, not
                // the whole buffer (a connection that parks gives it back).
                self.wbuf = take_spare_wbuf();
                self.wbuf.reserve(buf.len().max(WRITE_FIRST).min(cap));
            }
            self.wbuf.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(buf).map(drop)
    }

    /// Sends all of `bufs` — in one system call when the socket takes it —
    /// so that a small header and its body leave in one segment.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.mid_request = false;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.parking && !self.backlog.is_empty() {
            for b in bufs {
                self.send(b)?;
            }
            return Ok(total);
        }
        if self.write_buffer > 0 {
            for b in bufs {
                self.write(b)?;
            }
            return Ok(total);
        }
        if self.tls.is_some() {
            // Each piece is encrypted on its own: no vectored send of records.
            for b in bufs {
                self.send(b)?;
            }
            return Ok(total);
        }
        // A copy of the slice list to advance; on the stack for the usual few.
        let mut stack = [IoSlice::new(&[]); 8];
        let mut heap = Vec::new();
        let mut slices: &mut [IoSlice<'_>] = if bufs.len() <= stack.len() {
            stack[..bufs.len()].copy_from_slice(bufs);
            &mut stack[..bufs.len()]
        } else {
            heap.extend_from_slice(bufs);
            &mut heap[..]
        };
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            match self.conn.stream().write_vectored(slices) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed while writing")),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_write_timeout(&e) && self.parking => {
                    // The rest waits in the backlog (or for the peer).
                    for s in slices.iter() {
                        self.send(s)?;
                    }
                    return Ok(total);
                }
                Err(e) if is_write_timeout(&e) => return Err(self.write_timed_out()),
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()
    }
}

impl Drop for StreamRequest {
    fn drop(&mut self) {
        #[cfg(feature = "tls")]
        self.tls_goodbye();
        let unread = !self.rbuf.is_empty();
        self.conn.close(self.eof && !self.drained, unread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_connections_write_buffer_serves_the_next_one_on_this_thread() {
        let mut buf = Vec::with_capacity(WRITE_FIRST);
        buf.extend_from_slice(b"an answer");
        let kept = buf.as_ptr();
        keep_spare_wbuf(buf);
        let again = take_spare_wbuf();
        assert!(again.is_empty() && again.capacity() >= WRITE_FIRST && again.as_ptr() == kept);
        // Taken: the next one finds none.
        assert_eq!(take_spare_wbuf().capacity(), 0);
        // A bulk answer's buffer is not kept.
        keep_spare_wbuf(Vec::with_capacity(64 * WRITE_FIRST));
        assert_eq!(take_spare_wbuf().capacity(), 0);
    }
}
