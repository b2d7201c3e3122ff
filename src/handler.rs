//! What a user writes — [`RequestHandler`] — and what it is given: a
//! [`StreamRequest`] for a connection or a [`DatagramRequest`] for a packet.

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockAddr, SockRef};

use crate::address::Address;
use crate::shutdown::{ServerHandle, Slot};
use crate::stats::Counters;
use crate::sys;

/// The code that answers requests: Python's `BaseRequestHandler`.
///
/// `R` is [`StreamRequest`] for TCP and Unix-stream servers and
/// [`DatagramRequest`] for UDP and Unix-datagram servers; one type may
/// implement both. One handler value serves every request on every thread
/// (`&self`), so per-request state lives in locals of `handle`, and shared
/// state needs its own synchronisation.
///
/// For each request the server calls `setup`, then `handle`, then `finish`.
/// `finish` runs even when `handle` fails or panics; it does not run when
/// `setup` fails. An error or a panic from any of them is reported through
/// the server's `handle_error` hook and counted in
/// [`Stats`](crate::Stats); the server keeps serving.
///
/// Closures `Fn(&mut R) -> io::Result<()>` are handlers too (they only
/// `handle`).
///
/// ```
/// use socketserver::{RequestHandler, StreamRequest};
/// use std::io::{self, BufRead, Write};
///
/// /// Answers each line with its length.
/// struct LineLength;
///
/// impl RequestHandler<StreamRequest> for LineLength {
///     fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
///         let mut line = String::new();
///         while req.read_line(&mut line)? > 0 {
///             writeln!(req, "{}", line.trim_end().len())?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait RequestHandler<R>: Send + Sync + 'static {
    /// Runs before `handle`; an error here skips `handle` and `finish`.
    ///
    /// # Errors
    /// Whatever the implementation returns; it is reported, not fatal.
    fn setup(&self, req: &mut R) -> io::Result<()> {
        let _ = req;
        Ok(())
    }

    /// Serves the request.
    ///
    /// # Errors
    /// Whatever the implementation returns; it is reported, not fatal.
    fn handle(&self, req: &mut R) -> io::Result<()>;

    /// Runs after `handle`, even when `handle` failed.
    ///
    /// # Errors
    /// Whatever the implementation returns; it is reported, not fatal.
    fn finish(&self, req: &mut R) -> io::Result<()> {
        let _ = req;
        Ok(())
    }
}

impl<R, F> RequestHandler<R> for F
where
    F: Fn(&mut R) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut R) -> io::Result<()> {
        self(req)
    }
}

/// A connected stream socket: TCP or Unix.
///
/// Reads and writes go straight to the socket (`Read` and `Write` are
/// implemented for `Stream` and `&Stream`); [`StreamRequest::try_clone`] gives
/// one to hand to another thread, e.g. to broadcast to a chat member.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain stream connection.
    Unix(UnixStream),
}

macro_rules! on_stream {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl Stream {
    /// Shuts down the read half, the write half or both.
    ///
    /// # Errors
    /// As `shutdown(2)`: e.g. `NotConnected` after the peer reset.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        on_stream!(self, s => s.shutdown(how))
    }

    /// Sets how long a read may block (`None`: for ever).
    ///
    /// # Errors
    /// As `setsockopt(SO_RCVTIMEO)`; a zero duration is refused.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        on_stream!(self, s => s.set_read_timeout(t))
    }

    /// Sets how long a write may block (`None`: for ever).
    ///
    /// # Errors
    /// As `setsockopt(SO_SNDTIMEO)`; a zero duration is refused.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        on_stream!(self, s => s.set_write_timeout(t))
    }

    /// A second handle to the same socket.
    ///
    /// # Errors
    /// As `dup(2)`, e.g. when the process is out of descriptors.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// The address of the other end.
    ///
    /// # Errors
    /// As `getpeername(2)`, e.g. `NotConnected` once the peer is gone.
    pub fn peer_addr(&self) -> io::Result<Address> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Address::Inet),
            Stream::Unix(s) => s.peer_addr().map(|a| Address::from_unix(&a)),
        }
    }

    /// The address of this end.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<Address> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(Address::Inet),
            Stream::Unix(s) => s.local_addr().map(|a| Address::from_unix(&a)),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        on_stream!(self, s => (&*s).read(buf))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        on_stream!(self, s => (&*s).write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        on_stream!(self, s => (&*s).write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        on_stream!(self, s => s.as_fd())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        on_stream!(self, s => s.as_raw_fd())
    }
}

/// A connection's read buffer that grows as the connection needs it:
/// 2 KiB at first, doubling up to its capacity each time a read fills it.
/// `std::io::BufReader` zero-fills its whole buffer before the first read
/// (stable Rust cannot hand a socket uninitialised memory), so every idle
/// connection would cost its full buffer in resident memory; here it costs
/// what it has used.
#[derive(Debug)]
struct Reader {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    capacity: usize,
}

impl Reader {
    const FIRST: usize = 2048;

    fn new(stream: Stream, capacity: usize) -> Reader {
        Reader { stream, buf: Vec::new(), pos: 0, filled: 0, capacity: capacity.max(1) }
    }

    fn get_ref(&self) -> &Stream {
        &self.stream
    }

    fn get_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }

    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.filled {
            let size = self.buf.len();
            if size == 0 {
                self.buf.resize(Self::FIRST.min(self.capacity), 0);
            } else if self.filled == size && size < self.capacity {
                // The last read filled the buffer: the peer sends big chunks.
                self.buf.resize((size * 2).min(self.capacity), 0);
            }
            let n = self.stream.read(&mut self.buf)?;
            self.pos = 0;
            self.filled = n;
        }
        Ok(self.buffer())
    }

    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Nothing buffered and a large read: straight from the socket.
        if self.pos >= self.filled && out.len() >= self.capacity {
            return self.stream.read(out);
        }
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

/// Per-connection settings a stream request needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamPolicy {
    /// The idle timeout: when the peer has sent nothing for this long while
    /// the handler waits to read, the connection is closed.
    pub(crate) idle: Option<Duration>,
    /// The read timeout: a read that waits this long fails (the connection
    /// stays open).
    pub(crate) read_timeout: Option<Duration>,
    /// The socket's receive timeout as configured: the shorter of the two.
    pub(crate) receive_timeout: Option<Duration>,
    pub(crate) read_buffer: usize,
    pub(crate) write_buffer: usize,
}

/// Reading more than this from a peer that keeps sending after the handler
/// is done is not worth it: close (the kernel may then send a reset).
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: Duration = Duration::from_millis(500);

/// One connection, as a handler sees it: Python's `StreamRequestHandler`
/// with `rfile` and `wfile` in one value.
///
/// * Reading is buffered: [`BufRead`] (`read_line`, `read_until`, `lines`)
///   and [`Read`] (`read`, `read_exact`) are implemented; inherent
///   [`read_line`](Self::read_line) and [`lines`](Self::lines) spare an import.
/// * Writing sends every byte of every `write` before returning (Python's
///   `wfile` with `wbufsize = 0`), unless the server was built with
///   [`Builder::write_buffer`](crate::Builder::write_buffer): then writes
///   are collected and sent when the buffer fills, on `flush`, and after
///   `finish`.
/// * A read that times out fails with `ErrorKind::TimedOut`; if the timeout
///   was the server's idle timeout, the connection is shut down as well.
///
/// When the handler is done, the connection is closed; if the peer is still
/// sending, the server first stops writing and reads what is left for a
/// moment, so that the peer gets the whole answer rather than a reset.
#[derive(Debug)]
pub struct StreamRequest {
    reader: Reader,
    wbuf: Vec<u8>,
    policy: StreamPolicy,
    peer: Address,
    server: ServerHandle,
    deadline: Option<Instant>,
    /// When the peer last sent anything (or the connection began); kept
    /// only when the idle timeout spans reads.
    last_data: Instant,
    eof: bool,
    idle_closed: bool,
    pub(crate) linger: bool,
    pub(crate) tracked: bool,
    // Dropped after `reader`, i.e. after the socket is closed.
    pub(crate) slot: Option<Slot>,
}

impl StreamRequest {
    pub(crate) fn new(stream: Stream, peer: Address, server: ServerHandle, policy: StreamPolicy, slot: Slot) -> Self {
        StreamRequest {
            reader: Reader::new(stream, policy.read_buffer),
            wbuf: Vec::new(),
            policy,
            peer,
            server,
            deadline: None,
            last_data: Instant::now(),
            eof: false,
            idle_closed: false,
            // Set when the handler runs: a request closed before that (a
            // rejected newcomer) has no answer to protect and closes at once.
            linger: false,
            tracked: true,
            slot: Some(slot),
        }
    }

    /// The address of the client.
    pub fn peer_addr(&self) -> &Address {
        &self.peer
    }

    /// The address the client connected to.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<Address> {
        self.reader.get_ref().local_addr()
    }

    /// A handle to the server: shut it down, read its stats.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// The socket itself, e.g. to change its timeouts. Reading from it
    /// directly skips bytes already buffered by this request.
    pub fn get_ref(&self) -> &Stream {
        self.reader.get_ref()
    }

    /// A second handle to the connection, for another thread to write to
    /// (a chat room broadcasting to its members). Shut down together with
    /// the request when the server closes connections at the end of its
    /// grace period.
    ///
    /// # Errors
    /// As `dup(2)`.
    pub fn try_clone(&self) -> io::Result<Stream> {
        self.reader.get_ref().try_clone()
    }

    /// Reads a line, up to and including `\n`, appending it to `buf`;
    /// returns the number of bytes read, 0 at end of stream.
    ///
    /// # Errors
    /// `InvalidData` if the line is not UTF-8; `TimedOut` on a read timeout;
    /// any socket error.
    pub fn read_line(&mut self, buf: &mut String) -> io::Result<usize> {
        BufRead::read_line(self, buf)
    }

    /// Iterates over the lines of the stream, without their `\n` or `\r\n`.
    pub fn lines(&mut self) -> io::Lines<&mut Self> {
        BufRead::lines(self)
    }

    /// Waits until the peer sends something (`true`) or closes (`false`),
    /// without consuming anything. Call it where a new request may begin:
    /// while a handler waits here its connection counts as idle, and a
    /// shutdown ends the wait at once (it returns `false`) instead of
    /// granting the connection the grace period — as a web server closes
    /// idle keep-alive connections. A request that arrived just before the
    /// shutdown is still returned (`true`) and can be answered.
    ///
    /// # Errors
    /// As [`BufRead::fill_buf`]: timeouts, socket errors.
    pub fn wait_for_data(&mut self) -> io::Result<bool> {
        if !self.reader.buffer().is_empty() {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        let fd = self.fd();
        let shared = Arc::clone(&self.server.shared);
        if self.tracked && !shared.set_idle(fd, true) {
            // Shutting down: a request that has already arrived is served;
            // otherwise the connection is idle and its service ends here.
            let mut ready = [false];
            if sys::poll(&[fd], &mut ready, Some(Duration::ZERO))? == 0 {
                self.eof = true;
                return Ok(false);
            }
            return BufRead::fill_buf(self).map(|data| !data.is_empty());
        }
        let result = BufRead::fill_buf(self).map(|data| !data.is_empty());
        if self.tracked {
            shared.set_idle(fd, false);
        }
        result
    }

    /// Like [`BufRead::fill_buf`], and the socket to answer on at the same
    /// time: a handler can write straight out of the read buffer, then
    /// [`consume`](BufRead::consume) what it used. An empty slice means end
    /// of stream. Writes to the `Stream` go to the socket unbuffered.
    ///
    /// # Errors
    /// As [`BufRead::fill_buf`].
    pub fn fill_buf_and_stream(&mut self) -> io::Result<(&[u8], &Stream)> {
        BufRead::fill_buf(self)?;
        Ok((self.reader.buffer(), self.reader.get_ref()))
    }

    /// Bytes already read from the socket and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// Whether the peer has closed its side (a read returned end of stream).
    pub fn at_eof(&self) -> bool {
        self.eof
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
        if deadline.is_none() && self.deadline.is_some() {
            self.reader.get_ref().set_read_timeout(self.policy.receive_timeout)?;
        }
        self.deadline = deadline;
        Ok(())
    }

    /// Before a read that will wait on the socket: bound the wait by the
    /// deadline, or fail if it has passed.
    /// Also, with a read timeout shorter than the idle timeout, bound it by
    /// what is left of the idle timeout, which retried reads use up.
    fn before_read(&mut self) -> io::Result<()> {
        if !self.reader.buffer().is_empty() {
            return Ok(());
        }
        let mut wait = None;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.deadline_error());
            }
            wait = Some(self.policy.receive_timeout.map_or(left, |t| t.min(left)));
        }
        if let Some(idle) = self.idle_across_reads() {
            // At least a moment: a zero timeout would mean "wait for ever".
            let left = idle.saturating_sub(self.last_data.elapsed()).max(Duration::from_millis(1));
            // (Without a deadline, `wait` is the read timeout, the shorter.)
            wait = Some(wait.or(self.policy.receive_timeout).map_or(left, |w| w.min(left)));
        }
        match wait {
            Some(wait) => self.reader.get_ref().set_read_timeout(Some(wait)),
            None => Ok(()),
        }
    }

    /// The idle timeout when it spans several reads (a shorter read timeout
    /// ends each one first), so that `last_data` must be kept.
    fn idle_across_reads(&self) -> Option<Duration> {
        self.policy.idle.filter(|idle| self.policy.read_timeout.is_some_and(|read| read < *idle))
    }

    fn note_data(&mut self) {
        if self.idle_across_reads().is_some() {
            self.last_data = Instant::now();
        }
    }

    /// Whether a read that timed out means the idle timeout has passed:
    /// always, when the socket's timeout is the idle timeout itself.
    fn idle_passed(&self) -> bool {
        match self.idle_across_reads() {
            Some(idle) => self.last_data.elapsed() >= idle,
            None => self.policy.idle.is_some(),
        }
    }

    fn deadline_error(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("read deadline passed waiting for {}", self.peer))
    }

    fn read_error(&mut self, e: io::Error) -> io::Error {
        if e.kind() != io::ErrorKind::WouldBlock {
            return e;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return self.deadline_error();
        }
        match self.policy.idle.filter(|_| self.idle_passed()) {
            Some(idle) => {
                Counters::bump(&self.server.shared.stats.idle_closed);
                let _ = self.reader.get_ref().shutdown(Shutdown::Both);
                self.eof = true;
                self.idle_closed = true;
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("idle timeout: nothing from {} for {:?}; connection closed", self.peer, idle),
                )
            }
            None => io::Error::new(io::ErrorKind::TimedOut, format!("read from {} timed out", self.peer)),
        }
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut stream = self.reader.get_ref();
        stream.write_all(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, format!("write to {} timed out", self.peer))
            } else {
                e
            }
        })
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let result = self.send(&buf);
        self.wbuf = buf;
        self.wbuf.clear();
        result
    }

    /// After the handler: peer still sending? Stop writing, read and discard
    /// briefly, so that closing does not reset the connection and destroy
    /// the answer in flight.
    fn linger(&mut self) {
        if self.eof {
            return;
        }
        let fd = self.fd();
        let mut ready = [false];
        let pending =
            !self.reader.buffer().is_empty() || sys::poll(&[fd], &mut ready, Some(Duration::ZERO)).is_ok_and(|n| n > 0);
        if !pending || self.reader.get_ref().shutdown(Shutdown::Write).is_err() {
            return;
        }
        let start = std::time::Instant::now();
        let mut scratch = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            let left = LINGER_TIME.saturating_sub(start.elapsed());
            if left.is_zero() || self.reader.get_ref().set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.reader.get_mut().read(&mut scratch) {
                Ok(n) if n > 0 => total += n,
                _ => break,
            }
        }
    }

    /// Whether the server closed this connection for its idle timeout: an
    /// error that follows is the normal end of the connection, not the
    /// handler's failure.
    pub(crate) fn idle_closed(&self) -> bool {
        self.idle_closed
    }

    pub(crate) fn flush_pending(&mut self) -> io::Result<()> {
        self.flush_buffer()
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.reader.get_ref().as_raw_fd()
    }
}

impl Read for StreamRequest {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.before_read()?;
        match self.reader.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.note_data();
                Ok(n)
            }
            Err(e) => Err(self.read_error(e)),
        }
    }
}

impl BufRead for StreamRequest {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.reader.buffer().is_empty() {
            self.before_read()?;
            match self.reader.fill_buf() {
                Ok(b) => {
                    self.eof = b.is_empty();
                    self.note_data();
                }
                Err(e) => return Err(self.read_error(e)),
            }
        }
        Ok(self.reader.buffer())
    }

    fn consume(&mut self, amt: usize) {
        self.reader.consume(amt);
    }
}

impl Write for StreamRequest {
    /// Sends all of `buf` (or buffers it, when write buffering is on).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let cap = self.policy.write_buffer;
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
                self.wbuf.reserve_exact(cap);
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
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.policy.write_buffer > 0 {
            for b in bufs {
                self.write(b)?;
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
            match self.reader.get_ref().write_vectored(slices) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed while writing")),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, format!("write to {} timed out", self.peer)));
                }
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
        if self.linger {
            self.linger();
        }
        if self.tracked {
            // Before the descriptor closes (when `reader` drops, right after
            // this), so the force-closer never touches a reused descriptor.
            self.server.shared.untrack(self.fd());
        }
    }
}

/// A datagram socket: UDP or Unix-datagram.
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramSocket {
    /// A UDP socket.
    Udp(UdpSocket),
    /// A Unix-domain datagram socket.
    Unix(UnixDatagram),
}

impl DatagramSocket {
    /// Sends `data` as one datagram to `addr`.
    ///
    /// # Errors
    /// `InvalidInput` when `addr` is of the other family or an unnamed Unix
    /// socket (it cannot be answered); `sendto(2)` errors such as `EMSGSIZE`.
    pub fn send_to(&self, data: &[u8], addr: &Address) -> io::Result<()> {
        let n = match (self, addr) {
            (DatagramSocket::Udp(s), Address::Inet(a)) => s.send_to(data, a)?,
            (DatagramSocket::Unix(s), Address::Unix(Some(p))) => s.send_to(data, p)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot send a datagram to {addr}: not an address of this socket kind"),
                ));
            }
        };
        check_sent(n, data.len())
    }

    pub(crate) fn send_to_raw(&self, data: &[u8], addr: &SockAddr) -> io::Result<()> {
        let n = SockRef::from(self).send_to(data, addr)?;
        check_sent(n, data.len())
    }

    /// The address the socket is bound to.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<Address> {
        match self {
            DatagramSocket::Udp(s) => s.local_addr().map(Address::Inet),
            DatagramSocket::Unix(s) => s.local_addr().map(|a| Address::from_unix(&a)),
        }
    }
}

fn check_sent(sent: usize, len: usize) -> io::Result<()> {
    if sent == len {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, format!("datagram cut short: sent {sent} of {len} bytes")))
    }
}

impl AsFd for DatagramSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DatagramSocket::Udp(s) => s.as_fd(),
            DatagramSocket::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for DatagramSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// One datagram, as a handler sees it: Python's `DatagramRequestHandler`
/// without the file objects.
///
/// Nothing is sent back unless the handler calls [`reply`](Self::reply)
/// (Python always sends a reply, even an empty one). A datagram longer than
/// the server's `max_datagram_size` never reaches a handler: it is reported
/// as an error and counted in `Stats::oversized`, never silently cut.
#[derive(Debug)]
pub struct DatagramRequest {
    pub(crate) buf: Vec<u8>,
    pub(crate) len: usize,
    pub(crate) peer_raw: SockAddr,
    pub(crate) peer: Address,
    pub(crate) socket: Arc<DatagramSocket>,
    server: ServerHandle,
    pub(crate) slot: Option<Slot>,
}

impl DatagramRequest {
    pub(crate) fn new(buf: Vec<u8>, socket: Arc<DatagramSocket>, server: ServerHandle) -> Self {
        DatagramRequest {
            buf,
            len: 0,
            peer_raw: SockAddr::from(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            peer: Address::Unix(None),
            socket,
            server,
            slot: None,
        }
    }

    /// The bytes of the datagram.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The sender.
    pub fn peer_addr(&self) -> &Address {
        &self.peer
    }

    /// Sends `data` back to the sender as one datagram.
    ///
    /// # Errors
    /// `InvalidInput` when the sender is an unnamed Unix socket (it did not
    /// bind, so it cannot be answered); `sendto(2)` errors, e.g. `EMSGSIZE`
    /// for more than 65,507 bytes over UDP/IPv4.
    pub fn reply(&self, data: &[u8]) -> io::Result<()> {
        if let Address::Unix(None) = self.peer {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot reply: the sender's Unix socket is unnamed (the client did not bind)",
            ));
        }
        self.socket.send_to_raw(data, &self.peer_raw)
    }

    /// The server's socket, to send datagrams to other peers (a chat relay).
    pub fn socket(&self) -> &DatagramSocket {
        &self.socket
    }

    /// A handle to the server: shut it down, read its stats.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }
}
