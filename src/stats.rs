//! Counters the server keeps, and the snapshot users read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A snapshot of a server's counters, from [`ServerHandle::stats`](crate::ServerHandle::stats).
///
/// For datagram servers a "request" is one datagram: `accepted` counts
/// datagrams received and `active` the ones being handled.
///
/// Each counter moves as the work happens, on its own, so a snapshot taken
/// while the server runs is not one instant across counters, and some lag
/// what a client sees: a client has its answer, even its connection's end,
/// a moment before its request leaves `active` and is counted in
/// `completed` (under `Forking`, until the parent reaps the child); the
/// error counters move after the answer too. `accepted` moves before the
/// handler runs. For final figures, stop the server:
/// [`ServerThread::stop`](crate::ServerThread::stop) (and `join`) returns
/// them once every request is concluded, as does `stats()` after
/// `serve_forever` has returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted (stream) or datagrams received (datagram), refused ones included.
    pub accepted: u64,
    /// Requests accepted and not yet finished: queued, being handled, or in a forked child.
    pub active: u64,
    /// Requests whose handler ran to the end (successfully or not).
    pub completed: u64,
    /// Connections closed unserved because the pool's queue was full (`Overflow::Reject`)
    /// or a thread or process could not be started for them.
    pub rejected: u64,
    /// Peers refused by `verify_request`.
    pub refused: u64,
    /// Requests whose `setup`, `handle` or `finish` returned an error or panicked.
    pub handler_errors: u64,
    /// Panics caught in `setup`, `handle` or `finish` (also counted in `handler_errors`).
    pub panics: u64,
    /// Errors from `accept` or `recv` on the listening socket (skipped, backed off or fatal).
    pub accept_errors: u64,
    /// Datagrams longer than `max_datagram_size`, reported and dropped unhandled.
    pub oversized: u64,
    /// Datagram replies dropped because the peer's queue was full (a
    /// client that does not read): a reply never waits.
    pub replies_dropped: u64,
    /// Receive calls (`recvmmsg`) of a pool's or `Event`'s datagram
    /// receivers that returned datagrams: `accepted / datagram_batches` is
    /// the mean batch a call took.
    pub datagram_batches: u64,
    /// Connections closed by the framework because their idle timeout passed
    /// (the peer sent nothing, or took nothing, for that long).
    pub idle_closed: u64,
    /// Connections the peer reset, or closed while the handler wrote: their
    /// normal end, not a handler error.
    pub resets: u64,
    /// Connections refused because they came from a peer not trusted to
    /// send a PROXY header (with [`Builder::proxy_protocol`](crate::Builder::proxy_protocol)).
    pub proxy_refused: u64,
    /// Connections closed because their PROXY header was malformed, or did
    /// not come whole in time.
    pub proxy_errors: u64,
    /// TLS handshakes completed (with `Builder::tls`, feature `tls`).
    pub tls_handshakes: u64,
    /// TLS handshakes that failed (a bad or refused client, a peer that
    /// closed during it) or did not finish within the handshake timeout.
    pub tls_handshake_failures: u64,
    /// Requests waiting in the pool's queue for a worker.
    pub queue_depth: u64,
    /// Pool workers (or, under `Event`, polling threads) running a request
    /// right now.
    pub workers_busy: u64,
    /// Pool workers alive (busy or idle); threads alive under `Threading`;
    /// children alive under `Forking`; polling threads under `Event`.
    pub workers_total: u64,
    /// Connections parked under `Event` (between requests, in a request
    /// that comes in pieces, or with an answer the peer has not taken): no
    /// thread; a read buffer only for the part of a request already here.
    pub parked: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) active: AtomicUsize,
    pub(crate) completed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) replies_dropped: AtomicU64,
    pub(crate) datagram_batches: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) proxy_refused: AtomicU64,
    pub(crate) proxy_errors: AtomicU64,
    pub(crate) tls_handshakes: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    pub(crate) queued: AtomicUsize,
    pub(crate) workers_busy: AtomicUsize,
    pub(crate) workers_total: AtomicUsize,
    pub(crate) parked: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            accepted: self.accepted.load(Relaxed),
            active: self.active.load(Relaxed) as u64,
            completed: self.completed.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            refused: self.refused.load(Relaxed),
            handler_errors: self.handler_errors.load(Relaxed),
            panics: self.panics.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            replies_dropped: self.replies_dropped.load(Relaxed),
            datagram_batches: self.datagram_batches.load(Relaxed),
            idle_closed: self.idle_closed.load(Relaxed),
            resets: self.resets.load(Relaxed),
            proxy_refused: self.proxy_refused.load(Relaxed),
            proxy_errors: self.proxy_errors.load(Relaxed),
            tls_handshakes: self.tls_handshakes.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            queue_depth: self.queued.load(Relaxed) as u64,
            workers_busy: self.workers_busy.load(Relaxed) as u64,
            workers_total: self.workers_total.load(Relaxed) as u64,
            parked: self.parked.load(Relaxed),
        }
    }
}
