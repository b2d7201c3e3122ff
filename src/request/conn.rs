//! A connection's lifecycle, apart from the API a handler calls: tracked
//! by the server while open (so the grace period can shut it down), counted
//! as in flight, and closed without destroying an answer the peer has not
//! read yet.

use std::io::Read;
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
}

impl Connection {
    pub(crate) fn new(stream: Stream, server: ServerHandle, slot: Slot) -> Connection {
        let stream = Arc::new(stream);
        server.shared.track(&stream);
        Connection { stream, server, tracked: true, linger: false, slot: Some(slot) }
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
        if !std::mem::take(&mut self.linger) || peer_closed {
            return;
        }
        let fd = self.fd();
        if !unread && sys::unsent(fd) == 0 && !sys::readable_now(fd) {
            return;
        }
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let start = Instant::now();
        let mut scratch = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            let left = LINGER_TIME.saturating_sub(start.elapsed());
            if left.is_zero() || self.stream.set_read_timeout(Some(left.min(LINGER_STEP))).is_err() {
                break;
            }
            match (&*self.stream).read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && sys::unsent(fd) == 0 => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
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
