//! A datagram socket, UDP or Unix.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use socket2::{SockAddr, SockRef};

use super::Address;

/// The largest UDP payload over IPv4 (65,535 − 8 − 20): the default
/// [`max_datagram_size`](crate::Builder::max_datagram_size) of a UDP server
/// bound to an IPv4 address.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The largest UDP payload over IPv6 (65,535 − 8; the IPv6 header is not
/// counted in its payload length): the default of a UDP server on IPv6.
pub const MAX_UDP6_PAYLOAD: usize = 65_527;

/// The default largest datagram of a Unix-datagram server: 256 KiB, more
/// than Linux lets a sender queue by default (`net.core.wmem_max`, 212,992
/// bytes).
pub const MAX_UNIX_DATAGRAM: usize = 256 * 1024;

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
    /// Sends `data` as one datagram to `addr`, without ever waiting: a peer
    /// whose queue is full (a Unix-datagram client that does not read) gets
    /// nothing and this fails with `WouldBlock` at once, as UDP drops what
    /// it cannot deliver.
    ///
    /// # Errors
    /// `InvalidInput` when `addr` is of the other family or an unnamed Unix
    /// socket (it cannot be answered); `WouldBlock` as above; `sendto(2)`
    /// errors such as `EMSGSIZE`.
    pub fn send_to(&self, data: &[u8], addr: &Address) -> io::Result<()> {
        let to = match (self, addr) {
            (DatagramSocket::Udp(_), Address::Inet(a)) => SockAddr::from(*a),
            (DatagramSocket::Unix(_), Address::Unix(Some(p))) => SockAddr::unix(p)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot send a datagram to {addr}: not an address of this socket kind"),
                ));
            }
        };
        self.send_to_raw(data, &to)
    }

    /// Sends one datagram without waiting (`MSG_DONTWAIT`).
    pub(crate) fn send_to_raw(&self, data: &[u8], addr: &SockAddr) -> io::Result<()> {
        let n = crate::sys::send_to_now(SockRef::from(self), data, addr)?;
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
