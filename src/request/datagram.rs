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
