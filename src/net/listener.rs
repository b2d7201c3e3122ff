//! A listening stream socket, TCP or Unix.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixListener;

use super::{Address, Stream};

/// A listening stream socket: what a TCP or Unix-stream server accepts on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain stream listener.
    Unix(UnixListener),
}

impl Listener {
    /// Takes one pending connection (the listener is non-blocking; so is
    /// the connection).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Address)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept()?;
                Ok((Stream::from_tcp(s)?, Address::Inet(a)))
            }
            Listener::Unix(l) => {
                let (s, a) = l.accept()?;
                Ok((Stream::from_unix(s)?, Address::from_unix(&a)))
            }
        }
    }

    pub(crate) fn listen(&self, backlog: i32) -> io::Result<()> {
        socket2::SockRef::from(self).listen(backlog)
    }

    /// A second handle to the same listening socket.
    pub(crate) fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l) => Listener::Unix(l.try_clone()?),
        })
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(on),
            Listener::Unix(l) => l.set_nonblocking(on),
        }
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<Address> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Address::Inet),
            Listener::Unix(l) => l.local_addr().map(|a| Address::from_unix(&a)),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Listener {
        Listener::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Listener {
        Listener::Unix(l)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}
