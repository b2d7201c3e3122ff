//! The event strategy's side of a stream request: waits that park the
//! connection instead of its thread (at a boundary, in a request that comes
//! in pieces, for a PROXY header, for a peer slow to take an answer), the
//! backlog of what the socket would not take, the close a step at a time,
//! and the hint a wait that cannot park gives the loop.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use super::{ReadBuffer, StreamRequest, source};
use crate::deadline::Deadline;
use crate::net::{Stream, is_write_timeout};
use crate::request::timeouts::Expired;

/// Under the event strategy, how often one request may park in its middle
/// (a line or frame that comes in pieces) before its reads wait on a thread
/// instead: each park calls the handler again, which reads what is buffered
/// again, so a peer that sends a byte per segment as fast as it can must
/// not make the server parse its request over and over. A slow client (a
/// byte a second, bounded by the request or read timeout) parks each time.
const MAX_PARKS_PER_REQUEST: u32 = 64;

/// Under the event strategy, the most that writes may leave for the event
/// loop to send (the socket took no more): beyond it (or the write buffer,
/// when larger) a write waits for the peer, on its thread.
const BACKLOG_MAX: usize = 256 * 1024;
/// Under the event strategy, the requests a connection's handler may begin
/// in one turn before the connection yields its thread (tokio's task
/// budget): a peer that keeps sending must not keep one poller to itself,
/// nor make its run look blocked to the monitor.
const TURN_BUDGET: u32 = 32;

/// Under the event strategy: tells the loop that this thread is about to
/// wait in the library's own I/O, so that another polls in its place at
/// once (Go's `entersyscallblock`), not at the monitor's next look.
pub(crate) type BlockingHint = Arc<dyn Fn() + Send + Sync>;

/// What a connection that parked under the event strategy waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParkKind {
    /// Its next request, at a boundary: the idle timeout and the drain
    /// window apply.
    Boundary,
    /// The rest of a request it has begun (a line or frame in pieces): the
    /// read timeouts and the read deadline apply.
    Request,
    /// The rest of its PROXY header: the header timeout applies.
    Preamble,
    /// Nothing: it served its budget of requests in one turn and goes to
    /// the back of the queue, its next request perhaps buffered already.
    Yield,
    /// The peer to take its answer: the write timeout applies.
    Write,
}

/// The error a read returns when, under the event strategy, it parks the
/// connection: the handler returns it (`?`) and is called again when more
/// comes. A handler that swallows it and reads on waits there instead.
fn parked_error() -> io::Error {
    io::Error::new(io::ErrorKind::WouldBlock, "connection parked: the handler is called again when more comes")
}

/// A close under the event strategy, in steps the loop runs as the socket
/// allows.
#[derive(Debug)]
pub(super) enum Closing {
    /// The backlog goes out first, until the write timeout (if any).
    Flushing(Option<Instant>),
    /// The write side is shut down; what the peer still sends is read and
    /// dropped until then.
    Lingering(Instant),
}

/// What [`StreamRequest::close_step`] came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseStep {
    /// Closed: drop the request.
    Done,
    /// Call again when the socket is readable or writable, or at the
    /// deadline.
    Wait(Option<Instant>),
}

pub(super) struct Hint(pub(super) BlockingHint);

impl std::fmt::Debug for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockingHint")
    }
}

/// What [`StreamRequest::more`] found.
pub(super) enum More {
    /// Bytes came.
    Came,
    /// The end of the stream.
    Eof,
    /// Nothing yet, and the caller must wait for it (on its thread).
    Wait,
}

impl StreamRequest {
    /// `wait_for_data` under the event strategy: a boundary the handler is
    /// called again from. An answer the peer has not taken yet goes first
    /// (the connection parks until it can, reading nothing meanwhile);
    /// then nothing to read means park, not wait.
    pub(super) fn wait_for_data_parking(&mut self) -> io::Result<bool> {
        if !self.backlog.is_empty() {
            self.send_backlog_now()?;
            if !self.backlog.is_empty() {
                if std::mem::take(&mut self.expired) {
                    return Err(self.write_timed_out());
                }
                self.parked = true;
                self.park_kind = ParkKind::Write;
                return Ok(false);
            }
        }
        self.reentrant = true;
        if self.turn_served >= TURN_BUDGET {
            self.park_at(ParkKind::Yield);
            return Ok(false);
        }
        if !self.rbuf.is_empty() {
            self.turn_served += 1;
            return Ok(true);
        }
        self.mid_request = false;
        self.parks = 0;
        if self.eof {
            return Ok(false);
        }
        if std::mem::take(&mut self.socket_empty) && !self.peer_closing {
            self.park_at(ParkKind::Boundary);
            return Ok(false);
        }
        match self.rbuf.fill_from(source(&self.conn, &mut self.tls, false)) {
            Ok([]) => self.eof = true,
            Ok(_) => {
                // Under TLS, only when nothing decrypted is held and the
                // socket was found empty: a connection with plaintext in
                // rustls, or records not read yet, must never park (epoll
                // will not report them again).
                self.socket_empty = !self.rbuf.is_full() && self.tls_exhausted();
                self.timeouts.data_came(Instant::now);
                self.turn_served += 1;
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.park_at(ParkKind::Boundary);
                return Ok(false);
            }
            Err(e) => return Err(self.read_error(e)),
        }
        Ok(false)
    }

    pub(super) fn park_at(&mut self, kind: ParkKind) {
        self.parked = true;
        self.park_kind = kind;
    }

    /// Under the event strategy, a library call needs more bytes than are
    /// buffered: reads what the socket has without waiting, keeping what is
    /// buffered (at most `limit` in all). With nothing there, it parks the
    /// connection when the handler can be called again from its boundary
    /// (`Err`, the park), fails when a timer of the parked connection has
    /// passed, or tells the loop that this thread will wait and returns
    /// `Wait` for the caller to wait as the other strategies do.
    pub(super) fn more(&mut self, limit: usize) -> io::Result<More> {
        if self.eof {
            // Reading on after a park: the handler returns by its own end.
            self.parked = false;
            return Ok(More::Eof);
        }
        loop {
            match self.rbuf.fill_more(source(&self.conn, &mut self.tls, false), limit) {
                Ok(0) => {
                    self.eof = true;
                    self.parked = false;
                    return Ok(More::Eof);
                }
                Ok(_) => {
                    // Read on after `wait_for_data` said `false` and found
                    // the request: no park (else the handler's return would
                    // be taken for one, and the connection left open).
                    self.parked = false;
                    self.timeouts.data_came(Instant::now);
                    return Ok(More::Came);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(self.read_error(e)),
            }
        }
        if std::mem::take(&mut self.expired) {
            return Err(self.read_error(io::ErrorKind::WouldBlock.into()));
        }
        if self.reentrant && !self.parked && self.parks < MAX_PARKS_PER_REQUEST {
            // Nothing the handler saw was consumed since its boundary: it is
            // called again from there when more comes.
            if let Err(Expired::Deadline) = self.timeouts.next_wait(Instant::now) {
                return Err(self.deadline_error());
            }
            self.parks += 1;
            let kind = if self.rbuf.is_empty() { ParkKind::Boundary } else { ParkKind::Request };
            self.park_at(kind);
            return Err(parked_error());
        }
        // Reading on after a park (the handler swallowed it), or past what
        // can be called again: this thread waits, and another polls.
        self.parked = false;
        self.hint_blocking();
        Ok(More::Wait)
    }

    /// Tells the event loop this thread is about to wait.
    pub(super) fn hint_blocking(&self) {
        if let Some(Hint(hint)) = &self.hint {
            hint();
        }
    }

    /// The connection resumes after a park (bytes came, or a timer): the
    /// socket may hold what came meanwhile; `peer_closing`: an event said
    /// the peer closed. The handler is called again from the top: it must
    /// reach a boundary again before a wait can park.
    pub(crate) fn resumed(&mut self, peer_closing: bool) {
        self.socket_empty = false;
        self.peer_closing |= peer_closing;
        self.reentrant = false;
        self.parked = false;
        self.turn_served = 0;
    }

    /// Under the event strategy: waits park the connection where they can,
    /// and `hint` is told of those that cannot.
    pub(crate) fn set_parking(&mut self, hint: BlockingHint) {
        self.parking = true;
        self.hint = Some(Hint(hint));
    }

    /// Whether the handler returned because the connection parked (at a
    /// boundary, in a request, for its PROXY header or to send its answer),
    /// and the peer is still there. Clears the mark.
    pub(crate) fn take_parked(&mut self) -> bool {
        std::mem::take(&mut self.parked) && (!self.eof || matches!(self.park_kind, ParkKind::Write | ParkKind::Yield))
    }

    /// The deadline of a park of this kind from `now`, as a wait of the
    /// other strategies would have had: the idle timeout at a boundary; the
    /// read timeouts and the read deadline in a request; the header timeout
    /// for a PROXY header; the write timeout (or the idle timeout) for an
    /// answer the peer does not take. `None`: no timeout applies.
    pub(crate) fn park_deadline(&self, kind: ParkKind, now: Instant) -> Option<Instant> {
        let policy = self.timeouts.policy();
        let wait = match kind {
            ParkKind::Boundary | ParkKind::Yield => policy.idle,
            ParkKind::Request => match self.timeouts.next_wait(|| now) {
                Ok(wait) => wait.or(self.timeouts.receive()),
                Err(_) => return Some(now),
            },
            ParkKind::Preamble if self.proxy_header.is_some() => return self.proxy_deadline.and_then(Deadline::instant),
            // The TLS handshake, after any PROXY header.
            ParkKind::Preamble => return self.handshake_deadline.and_then(Deadline::instant),
            ParkKind::Write => policy.send(),
        };
        Deadline::within(now, wait).instant()
    }

    /// The connection's deadline passed while it was parked (and nothing
    /// came): at a boundary it is closed for idleness; otherwise the wait
    /// that parked fails as it would have failed waiting, when the handler
    /// runs again.
    pub(crate) fn expire(&mut self, kind: ParkKind) {
        match kind {
            ParkKind::Boundary | ParkKind::Yield => self.expire_idle(),
            ParkKind::Request | ParkKind::Preamble | ParkKind::Write => self.expired = true,
        }
    }

    /// The idle timeout passed while the connection was parked: closed,
    /// counted; the handler's next `wait_for_data` sees the end.
    pub(super) fn expire_idle(&mut self) {
        let idle = self.timeouts.policy().idle.unwrap_or_default();
        let _ = self.close_idle(format!("idle timeout: nothing from {} for {idle:?}", self.peer));
    }

    /// The drain window passed while the connection was parked during a
    /// shutdown: the handler's next `wait_for_data` sees the end, and the
    /// close lingers as after any drain window.
    pub(crate) fn expire_drained(&mut self) {
        self.eof = true;
        self.drained = true;
    }

    /// The handler returned parked: what the write buffer holds goes out
    /// (what the socket will not take now waits in the backlog), and a
    /// connection with nothing buffered gives its read buffer back. Returns
    /// what it waits for.
    pub(crate) fn park(&mut self) -> io::Result<ParkKind> {
        self.flush_buffer()?;
        self.rbuf.release();
        // A parked connection holds no write buffer either: it is this
        // thread's spare for the next connection it runs.
        super::keep_spare_wbuf(std::mem::take(&mut self.wbuf));
        // Nor records to send (TLS): what the socket did not take is in the backlog.
        self.sealed = Vec::new();
        if !self.backlog.is_empty() {
            self.park_kind = ParkKind::Write;
        }
        Ok(self.park_kind)
    }

    /// An answer waits in the backlog for the peer to take it.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Sends what the backlog holds, as far as the socket takes it now.
    pub(crate) fn send_backlog_now(&mut self) -> io::Result<()> {
        let (sent, result) = send_now(self.conn.stream(), &self.backlog);
        self.backlog.drain(..sent);
        if self.backlog.is_empty() && self.backlog.capacity() > 2 * ReadBuffer::FIRST {
            self.backlog = Vec::new();
        }
        result
    }

    /// The close under the event strategy, one step at a time as the socket
    /// allows; `Wait(deadline)`: call again when it is readable or
    /// writable, or at the deadline (`expired`); `Done`: drop the request.
    /// First the backlog is sent (within the write timeout), then the close
    /// lingers as [`Connection::close`](crate::request::conn::Connection) does, without waiting.
    pub(crate) fn close_step(&mut self, now: Instant, expired: bool) -> CloseStep {
        #[cfg(feature = "tls")]
        if self.closing.is_none() {
            // A graceful close says so: `close_notify`, behind the backlog.
            self.queue_close_notify();
        }
        if let None | Some(Closing::Flushing(_)) = self.closing {
            let until = match self.closing {
                Some(Closing::Flushing(until)) => until,
                _ => self.park_deadline(ParkKind::Write, now),
            };
            if self.send_backlog_now().is_err() {
                self.backlog.clear();
            }
            if !self.backlog.is_empty() {
                if expired || until.is_some_and(|t| now >= t) {
                    // The peer took nothing for the write timeout.
                    if self.idle_applies_to_writes().is_some() {
                        let _ = self.close_idle(format!("idle timeout: {} took nothing", self.peer));
                    }
                    return CloseStep::Done;
                }
                self.closing = Some(Closing::Flushing(until));
                return CloseStep::Wait(until);
            }
            let unread = !self.rbuf.is_empty();
            let peer_closed = self.eof && !self.drained;
            let Some(until) = self.conn.close_begin(peer_closed, unread, now) else { return CloseStep::Done };
            self.closing = Some(Closing::Lingering(until));
        }
        match self.closing {
            Some(Closing::Lingering(until)) if !expired && now < until && !self.conn.linger_step() => {
                CloseStep::Wait(Some(until))
            }
            _ => CloseStep::Done,
        }
    }

    /// Whether its close has begun (under the event strategy).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Sends the first `n` buffered bytes back and consumes them (the
    /// bundled echo: no second buffer, and under the event strategy what
    /// the peer does not take waits in the backlog, not on a thread).
    pub(crate) fn echo_buffered(&mut self, n: usize) -> io::Result<()> {
        let n = n.min(self.rbuf.buffer().len());
        self.mid_request = false;
        self.reentrant = false;
        if let Some(tls) = self.tls.as_deref_mut() {
            // Sealed straight out of the read buffer (it was copied out
            // first, an allocation per answer), then sent as any records.
            let mut sealed = std::mem::take(&mut self.sealed);
            sealed.clear();
            let sealing = tls.seal(&self.rbuf.buffer()[..n], &mut sealed);
            self.rbuf.consume(n);
            let sent = sealing.and_then(|()| self.send_raw(&sealed));
            self.keep_sealed(sealed);
            return sent;
        }
        if self.parking {
            let mut sent = 0;
            if self.backlog.is_empty() {
                let result;
                (sent, result) = send_now(self.conn.stream(), &self.rbuf.buffer()[..n]);
                result?;
            }
            if sent < n {
                let rest = self.rbuf.buffer()[sent..n].to_vec();
                self.rbuf.consume(n);
                return self.send(&rest);
            }
            self.rbuf.consume(n);
            return Ok(());
        }
        let mut stream = self.conn.stream();
        let written = stream.write_all(&self.rbuf.buffer()[..n]);
        match written {
            Ok(()) => {
                self.rbuf.consume(n);
                Ok(())
            }
            Err(e) if is_write_timeout(&e) => Err(self.write_timed_out()),
            Err(e) => Err(e),
        }
    }

    /// Under the event strategy: sends what the socket takes now and leaves
    /// the rest in the backlog for the event loop, behind what is there
    /// already; past the backlog's bound, this thread waits for the peer
    /// (the loop is told, and another polls meanwhile).
    pub(super) fn send_parking(&mut self, buf: &[u8]) -> io::Result<()> {
        self.reentrant = false;
        let mut rest = buf;
        if self.backlog.is_empty() {
            let (sent, result) = send_now(self.conn.stream(), rest);
            result?;
            rest = &rest[sent..];
            if rest.is_empty() {
                return Ok(());
            }
        }
        if self.backlog.len() + rest.len() <= BACKLOG_MAX.max(self.write_buffer) {
            self.backlog.extend_from_slice(rest);
            return Ok(());
        }
        self.hint_blocking();
        self.send_backlog_waiting()?;
        self.send_waiting(rest)
    }

    /// Sends the whole backlog, waiting for the peer (before anything that
    /// hands out the socket, whose bytes must not overtake it).
    pub(super) fn send_backlog_waiting(&mut self) -> io::Result<()> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        self.send_backlog_now()?;
        if self.backlog.is_empty() {
            return Ok(());
        }
        self.hint_blocking();
        let backlog = std::mem::take(&mut self.backlog);
        self.send_waiting(&backlog)
    }
}

/// Sends what the socket takes of `buf` now: how much it took, and the
/// error that stopped it (`WouldBlock` is no error: just the end).
pub(super) fn send_now(stream: &Stream, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut sent = 0;
    while sent < buf.len() {
        match stream.try_write(&buf[sent..]) {
            Ok(0) => return (sent, Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed while writing"))),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(()))
}
