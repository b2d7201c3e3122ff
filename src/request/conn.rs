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
const LINGER_TIME: Duration = Duration::from_millis(500);
/// How long a connection closed by the drain window waits for its peer to
/// close too: short, so that a process with many idle connections still
/// exits about when the window ends.
const DRAIN_LINGER: Duration = Duration::from_millis(50);

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

    /// Before the socket closes: if the peer may still be sending, stop
    /// writing, then read and discard for a moment, so that closing does not
    /// reset the connection and destroy the answer in flight. A connection
    /// the server ends itself (`drained`: the drain window passed) lingers
    /// always, for at most [`DRAIN_LINGER`] — its peer may send its next
    /// request any moment; one whose handler ended lingers when the peer has
    /// sent something unread (or sends it now), for at most [`LINGER_TIME`].
    /// Never a `shutdown(SHUT_RD)`: Linux answers data that arrives after
    /// one with a reset.
    pub(crate) fn close(&mut self, peer_closed: bool, unread: bool, drained: bool) {
        if !std::mem::take(&mut self.linger) || peer_closed {
            return;
        }
        let limit = if drained {
            DRAIN_LINGER
        } else if unread || sys::readable_now(self.fd()) {
            LINGER_TIME
        } else {
            return;
        };
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let start = Instant::now();
        let mut scratch = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match (&*self.stream).read(&mut scratch) {
                Ok(n) if n > 0 => total += n,
                _ => break,
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
