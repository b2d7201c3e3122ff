//! A datagram socket, UDP or Unix.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use socket2::{SockAddr, SockRef};

use super::Address;

/// The largest UDP payload over IPv4 (65,535 − 8 − 20): the default
/// [`max_datagram_size`](crate::Builder::max_datagram_size).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

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
