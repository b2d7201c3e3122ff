//! [`DatagramRequest`]: one datagram, as a handler sees it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::SockAddr;

use crate::handle::ServerHandle;
use crate::net::{Address, DatagramSocket};
use crate::shutdown::Slot;

/// How many times its request's wire size a reply may take before the
/// peer's address is known to be its own: QUIC's bound (RFC 9000 §8.1).
const AMPLIFICATION: usize = 3;
/// An IPv4 header (20 bytes, no options) and a UDP header (8).
const IPV4_UDP_HEADERS: usize = 28;
/// An IPv6 header (40 bytes, no extension) and a UDP header (8).
const IPV6_UDP_HEADERS: usize = 48;

/// One datagram, as a handler sees it: Python's `DatagramRequestHandler`
/// without the file objects.
///
/// Nothing is sent back unless the handler calls [`reply`](Self::reply)
/// (Python always sends a reply, even an empty one). A datagram longer than
/// the server's `max_datagram_size` never reaches a handler: it is reported
/// as an error and counted in `Stats::oversized`, never silently cut.
///
/// Replies never block and never amplify: a reply the peer cannot take now
/// is dropped and counted, as UDP would drop it. Over UDP a request's
/// sender can be forged, so a reply is bounded as QUIC bounds what it sends
/// to an address it has not validated (RFC 9000 §8.1): on the wire — the
/// payload plus 28 bytes of IPv4 and UDP headers, 48 over IPv6 — at most 3
/// times what its request took. A 2-byte request over IPv4 (30 bytes on the
/// wire) may draw 62 bytes of reply (90 on the wire), a 1,000-byte one
/// 3,056. [`max_reply`](Self::max_reply) says how much; the server's
/// [`max_datagram_reply`](crate::Builder::max_datagram_reply) allows more
/// for clients you trust. Unix datagrams are not bounded that way (see
/// [`max_reply`](Self::max_reply)).
#[derive(Debug)]
pub struct DatagramRequest {
    pub(crate) buf: Vec<u8>,
    pub(crate) len: usize,
    pub(crate) peer_raw: SockAddr,
    pub(crate) peer: Address,
    pub(crate) socket: Arc<DatagramSocket>,
    server: ServerHandle,
    max_reply: usize,
    pub(crate) slot: Option<Slot>,
    /// A batch receiver's held replies (`None`: a reply is sent at once).
    /// (A mutex, not a `RefCell`, so that the request stays `Sync`: only
    /// its receiver's thread ever takes it.)
    pub(crate) outbox: Option<Mutex<Outbox>>,
}

impl DatagramRequest {
    pub(crate) fn new(buf: Vec<u8>, socket: Arc<DatagramSocket>, server: ServerHandle, max_reply: usize) -> Self {
        DatagramRequest {
            buf,
            len: 0,
            peer_raw: SockAddr::from(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            peer: Address::Unix(None),
            socket,
            server,
            max_reply,
            slot: None,
            outbox: None,
        }
    }

    /// A copy of this request for a strategy to run elsewhere.
    pub(crate) fn detached_copy(&self) -> Self {
        DatagramRequest {
            buf: self.data().to_vec(),
            len: self.len,
            peer_raw: self.peer_raw.clone(),
            peer: self.peer.clone(),
            socket: Arc::clone(&self.socket),
            server: self.server.clone(),
            max_reply: self.max_reply,
            slot: None,
            outbox: None,
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

    /// Sends `data` back to the sender as one datagram, without waiting: if
    /// the sender's queue is full (a client that does not read), the reply
    /// is dropped and counted in `Stats::replies_dropped`, and this returns
    /// `Ok` — as UDP drops what it cannot deliver.
    ///
    /// Under [`ThreadPool`](crate::ThreadPool) and [`Event`](crate::Event)
    /// the receivers take datagrams in batches (`recvmmsg`) and a reply of
    /// up to 65,507 bytes is held and sent with the other replies of its
    /// batch in one `sendmmsg`, in the order they were made: after the
    /// batch's last handler, when 64 are held, or before a handler starts
    /// once the oldest has waited 1 ms or the handler before took 100 µs.
    /// An error sending a held reply goes
    /// to `handle_error` (with the peer), not to this call; what
    /// [`socket`](Self::socket) sends goes at once, possibly before held
    /// replies.
    ///
    /// # Errors
    /// `InvalidInput` when the sender is an unnamed Unix socket (it did not
    /// bind, so it cannot be answered), or when `data` is larger than
    /// [`max_reply`](Self::max_reply) (nothing is sent); `sendto(2)` errors,
    /// e.g. `EMSGSIZE` for more than 65,507 bytes over UDP/IPv4.
    pub fn reply(&self, data: &[u8]) -> io::Result<()> {
        if let Address::Unix(None) = self.peer {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot reply: the sender's Unix socket is unnamed (the client did not bind)",
            ));
        }
        let max = self.max_reply();
        if data.len() > max {
            let why = match self.wire_overhead() {
                Some(headers) => format!(
                    "3 times the request's {} bytes on the wire, less {headers} bytes of headers \
                     (RFC 9000 §8.1); Builder::max_datagram_reply allows more",
                    self.len + headers
                ),
                None => "the most a Unix datagram reply may be; Builder::max_datagram_reply allows more".to_string(),
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a reply of {} bytes to a request of {} bytes is larger than the reply limit ({max} bytes: {why})",
                    data.len(),
                    self.len,
                ),
            ));
        }
        let dropped = &self.server.shared.stats.replies_dropped;
        if let Some(outbox) = &self.outbox {
            let mut outbox = outbox.lock();
            if data.len() <= DEFERRED_MAX {
                if !outbox.fits(data.len()) {
                    outbox.flush(&self.socket, dropped);
                }
                outbox.push(data, &self.peer_raw);
                return Ok(());
            }
            // Too large to hold: after the held ones, in order, and its
            // error (EMSGSIZE) is the handler's.
            outbox.flush(&self.socket, dropped);
        }
        match self.socket.send_to_raw(data, &self.peer_raw) {
            Err(e) if is_full(&e) => {
                crate::stats::Counters::bump(dropped);
                Ok(())
            }
            sent => sent,
        }
    }

    /// The largest reply [`reply`](Self::reply) sends, in payload bytes.
    ///
    /// * UDP: `3 × (request + H) − H`, H being the IP and UDP headers: 28
    ///   bytes over IPv4 (an IPv4-mapped IPv6 peer included: the datagram
    ///   travelled as IPv4), 48 over IPv6 — so that the reply's wire size
    ///   is at most 3 times the request's (RFC 9000 §8.1). `3 × request +
    ///   56` over IPv4, `3 × request + 96` over IPv6; or the server's
    ///   [`max_datagram_reply`](crate::Builder::max_datagram_reply) when that
    ///   is larger.
    /// * Unix datagrams: [`MAX_UNIX_DATAGRAM`](crate::MAX_UNIX_DATAGRAM), or
    ///   `max_datagram_reply` when larger. No amplification bound: the
    ///   kernel names the sender by the path its socket is bound to, and a
    ///   socket can only bind a name no other socket holds, so a reply goes
    ///   back to the process that sent the request; and that local sender
    ///   could write as many bytes to any socket it can reach itself.
    pub fn max_reply(&self) -> usize {
        match self.wire_overhead() {
            Some(headers) => (AMPLIFICATION * (self.len + headers) - headers).max(self.max_reply),
            None => crate::net::MAX_UNIX_DATAGRAM.max(self.max_reply),
        }
    }

    /// The bytes of IP and UDP headers around the request on the wire;
    /// `None` for a Unix datagram.
    fn wire_overhead(&self) -> Option<usize> {
        match &self.peer {
            Address::Inet(SocketAddr::V4(_)) => Some(IPV4_UDP_HEADERS),
            Address::Inet(SocketAddr::V6(a)) if a.ip().to_ipv4_mapped().is_some() => Some(IPV4_UDP_HEADERS),
            Address::Inet(SocketAddr::V6(_)) => Some(IPV6_UDP_HEADERS),
            Address::Unix(_) => None,
        }
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

/// The largest reply held for a batch; a larger one is sent at once (its
/// error, e.g. `EMSGSIZE`, is the handler's).
const DEFERRED_MAX: usize = crate::net::MAX_UDP_PAYLOAD;
/// The bytes of replies held at most (more: the held ones are sent first).
const OUTBOX_BYTES: usize = 64 * 1024;
/// How long a held reply may wait for the batch's end before a handler
/// starts: the replies a slow handler holds back are only those made in
/// the last millisecond before it started.
pub(crate) const REPLY_HOLD: Duration = Duration::from_millis(1);
/// A handler this slow sends the replies held before the next handler
/// starts: next to it, what one `sendmmsg` saves is nothing, and the next
/// one may be as slow.
pub(crate) const SLOW_HANDLER: Duration = Duration::from_micros(100);

/// Whether a send failed because the socket cannot take the datagram now
/// (`EAGAIN`, `ENOBUFS`): the reply is dropped and counted, never waited on.
fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// The replies a batch receiver holds until its batch ends, to send them
/// with one `sendmmsg`.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    bytes: Vec<u8>,
    /// Each reply: where its bytes start, how many, to whom.
    held: Vec<(usize, usize, SockAddr)>,
    /// When the oldest held reply was made.
    since: Option<Instant>,
    /// Held replies that could not be sent (other than for a full socket),
    /// for the receiver to report.
    pub(crate) failed: Vec<(SockAddr, io::Error)>,
}

impl Outbox {
    fn fits(&self, len: usize) -> bool {
        self.held.len() < crate::sys::mmsg::MAX_BATCH && self.bytes.len() + len <= OUTBOX_BYTES
    }

    fn push(&mut self, data: &[u8], to: &SockAddr) {
        self.held.push((self.bytes.len(), data.len(), to.clone()));
        self.bytes.extend_from_slice(data);
    }

    /// Notes `now` (the end of the handler that made them) as the time of
    /// the replies held since the last stamp: the receiver reads the clock
    /// once per handler, and a reply need not read it again.
    pub(crate) fn stamp(&mut self, now: Instant) {
        if self.since.is_none() && !self.held.is_empty() {
            self.since = Some(now);
        }
    }

    /// How long the oldest held reply has waited by `now` (zero: none held).
    pub(crate) fn waited(&self, now: Instant) -> Duration {
        self.since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Sends the held replies in order, in as few `sendmmsg` calls as the
    /// socket allows, never waiting: a reply the socket cannot take now is
    /// dropped and counted in `dropped`, the ones after it are still tried;
    /// one that fails otherwise is kept in `failed`.
    pub(crate) fn flush(&mut self, socket: &DatagramSocket, dropped: &AtomicU64) {
        let mut next = 0;
        while next < self.held.len() {
            let msgs = self.held[next..].iter().map(|(start, len, to)| (&self.bytes[*start..*start + *len], to));
            match crate::sys::mmsg::send_batch(socket.as_fd(), msgs) {
                Ok(0) => {
                    // Not expected; never loop on it.
                    crate::stats::Counters::bump(dropped);
                    next += 1;
                }
                Ok(sent) => next += sent,
                Err(e) if is_full(&e) => {
                    crate::stats::Counters::bump(dropped);
                    next += 1;
                }
                Err(e) => {
                    self.failed.push((self.held[next].2.clone(), e));
                    next += 1;
                }
            }
        }
        self.held.clear();
        self.bytes.clear();
        self.since = None;
    }
}
