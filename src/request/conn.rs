//! A connection's lifecycle, apart from the API a handler calls: tracked
//! by the server while open (so the grace period can shut it down), counted
//! as in flight, and closed without destroying an answer the peer has not
//! read yet.

use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handle::ServerHandle;
use crate::net::Stream;
use crate::shutdown::Slot;
use crate::sys;

/// Reading more than this from a peer that keeps sending after the handler
/// is done is not worth it: close (the kernel may then send a reset).
const LINGER_BYTES: usize = 1 << 20;
/// The longest a closing connection waits for its peer to take the answer.
const LINGER_TIME: Duration = Duration::from_millis(500);
/// How often a lingering connection looks whether its answer is all taken.
const LINGER_STEP: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub(crate) struct Connection {
    stream: Arc<Stream>,
    server: ServerHandle,
    /// In the server's tracker (not in a forked child's copy).
    tracked: bool,
    /// A handler has run: closing protects its answer. A connection closed
    /// before that (a rejected newcomer) has no answer and closes at once.
    linger: bool,
    /// Counts the connection as in flight until it is dropped — after the
    /// socket is closed.
    slot: Option<Slot>,
    /// Bytes read and discarded while lingering.
    lingered: usize,
}

impl Connection {
    pub(crate) fn new(stream: Stream, server: ServerHandle, slot: Slot) -> Connection {
        let stream = Arc::new(stream);
        server.shared.track(&stream);
        Connection { stream, server, tracked: true, linger: false, slot: Some(slot), lingered: 0 }
    }

    pub(crate) fn stream(&self) -> &Stream {
        &self.stream
    }

    pub(crate) fn server(&self) -> &ServerHandle {
        &self.server
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Readable once the server is shutting down (in a forked child too: the
    /// descriptor is shared).
    pub(crate) fn stop_fd(&self) -> RawFd {
        self.server.shared.waker.stop_fd()
    }

    /// A handler is about to run: from now on, closing protects its answer.
    pub(crate) fn begin_service(&mut self) {
        self.linger = true;
    }

    /// Prepares the copy a forked child runs: it must not touch the
    /// parent's tracker or counters.
    pub(crate) fn detach_for_child(&mut self) {
        self.tracked = false;
        std::mem::forget(self.slot.take());
    }

    /// Gives up the parent's copy once a child has it: closed at once, the
    /// slot kept by the caller until the child is reaped.
    pub(crate) fn release_to_child(&mut self) -> Option<Slot> {
        self.linger = false;
        self.slot.take()
    }

    /// Before the socket closes, unless the peer has closed its side: close
    /// at once when nothing can be lost — all we wrote has been taken by the
    /// peer's kernel, and the peer sent nothing we did not read. Otherwise
    /// stop writing (FIN after the answer), then read and discard what the
    /// peer sends until it closes or has taken the whole answer, for at most
    /// [`LINGER_TIME`]. Closing with unread input, or while an answer is
    /// still unsent and the peer sends again, makes the kernel send a reset,
    /// which destroys what the peer had not received yet; this is what
    /// `drained` connections (closed by the drain window, their peers
    /// perhaps about to send the next request) and handlers that stop early
    /// both need. Never a `shutdown(SHUT_RD)`: Linux answers data that
    /// arrives after one with a reset.
    pub(crate) fn close(&mut self, peer_closed: bool, unread: bool) {
        let Some(until) = self.close_begin(peer_closed, unread, Instant::now()) else { return };
        while !self.linger_step() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero()
                || self
                    .stream
                    .wait(false, Some(left.min(LINGER_STEP)))
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock)
            {
                break;
            }
        }
    }

    /// The part of [`close`](Self::close) that never waits: `None` when the
    /// connection can close at once; otherwise its write side is shut down
    /// and the lingering read goes on until the returned time, a step at a
    /// time ([`linger_step`](Self::linger_step)) whenever the socket is
    /// readable or its unsent answer shrinks (the event strategy runs it on
    /// its loop, with no thread waiting).
    pub(crate) fn close_begin(&mut self, peer_closed: bool, unread: bool, now: Instant) -> Option<Instant> {
        if !std::mem::take(&mut self.linger) || peer_closed {
            return None;
        }
        let fd = self.fd();
        if !unread && sys::unsent(fd) == 0 && !sys::readable_now(fd) {
            return None;
        }
        self.stream.shutdown(Shutdown::Write).ok()?;
        self.lingered = 0;
        Some(now + LINGER_TIME)
    }

    /// Reads and discards what the peer sent, without waiting; `true` when
    /// the close is done: the peer closed, took the whole answer, failed,
    /// or sent more than is worth reading.
    pub(crate) fn linger_step(&mut self) -> bool {
        let fd = self.fd();
        let mut scratch = [0u8; 4096];
        while self.lingered < LINGER_BYTES {
            match self.stream.try_read(&mut scratch) {
                Ok(0) => return true,
                Ok(n) => self.lingered += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return sys::unsent(fd) == 0,
                Err(_) => return true,
            }
        }
        true
    }

    /// A second handle to the socket, for another thread.
    pub(crate) fn try_clone(&self) -> std::io::Result<Stream> {
        self.stream.try_clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.tracked {
            // The tracker holds the socket only weakly; forgetting it first
            // means a force-close never reaches for a closed connection.
            self.server.shared.untrack(self.fd());
        }
    }
}
