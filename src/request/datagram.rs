//! [`DatagramRequest`]: one datagram, as a handler sees it.

use std::io;
use std::sync::Arc;

use socket2::SockAddr;

use crate::handle::ServerHandle;
use crate::net::{Address, DatagramSocket};
use crate::shutdown::Slot;

/// One datagram, as a handler sees it: Python's `DatagramRequestHandler`
/// without the file objects.
///
/// Nothing is sent back unless the handler calls [`reply`](Self::reply)
/// (Python always sends a reply, even an empty one). A datagram longer than
/// the server's `max_datagram_size` never reaches a handler: it is reported
/// as an error and counted in `Stats::oversized`, never silently cut.
///
/// Replies never block and never amplify: a reply the peer cannot take now
/// is dropped and counted, as UDP would drop it; one larger than both its
/// request and the server's [`max_datagram_reply`](crate::Builder::max_datagram_reply)
/// (1,400 bytes by default, about one Ethernet MTU) is refused, so that a
/// forged small request cannot aim a large answer at somebody else.
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
    /// # Errors
    /// `InvalidInput` when the sender is an unnamed Unix socket (it did not
    /// bind, so it cannot be answered), or when `data` is larger than both
    /// the request and [`max_reply`](Self::max_reply); `sendto(2)` errors,
    /// e.g. `EMSGSIZE` for more than 65,507 bytes over UDP/IPv4.
    pub fn reply(&self, data: &[u8]) -> io::Result<()> {
        if let Address::Unix(None) = self.peer {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot reply: the sender's Unix socket is unnamed (the client did not bind)",
            ));
        }
        if data.len() > self.max_reply() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a reply of {} bytes to a request of {} bytes is larger than the reply limit \
                     ({} bytes: Builder::max_datagram_reply)",
                    data.len(),
                    self.len,
                    self.max_reply
                ),
            ));
        }
        match self.socket.send_to_raw(data, &self.peer_raw) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                crate::stats::Counters::bump(&self.server.shared.stats.replies_dropped);
                Ok(())
            }
            sent => sent,
        }
    }

    /// The largest reply [`reply`](Self::reply) sends: the larger of the
    /// request's size and the server's
    /// [`max_datagram_reply`](crate::Builder::max_datagram_reply).
    pub fn max_reply(&self) -> usize {
        self.len.max(self.max_reply)
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
