//! A connected stream socket, TCP or Unix.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::Address;

/// A connected stream socket: TCP or Unix.
///
/// Reads and writes go straight to the socket (`Read` and `Write` are
/// implemented for `Stream` and `&Stream`); [`StreamRequest::try_clone`](crate::StreamRequest::try_clone) gives
/// one to hand to another thread, e.g. to broadcast to a chat member.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain stream connection.
    Unix(UnixStream),
}

macro_rules! on_stream {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl Stream {
    /// Shuts down the read half, the write half or both.
    ///
    /// # Errors
    /// As `shutdown(2)`: e.g. `NotConnected` after the peer reset.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        on_stream!(self, s => s.shutdown(how))
    }

    /// Sets how long a read may block (`None`: for ever).
    ///
    /// # Errors
    /// As `setsockopt(SO_RCVTIMEO)`; a zero duration is refused.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        on_stream!(self, s => s.set_read_timeout(t))
    }

    /// Sets how long a write may block (`None`: for ever).
    ///
    /// # Errors
    /// As `setsockopt(SO_SNDTIMEO)`; a zero duration is refused.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        on_stream!(self, s => s.set_write_timeout(t))
    }

    /// A second handle to the same socket.
    ///
    /// # Errors
    /// As `dup(2)`, e.g. when the process is out of descriptors.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// The address of the other end.
    ///
    /// # Errors
    /// As `getpeername(2)`, e.g. `NotConnected` once the peer is gone.
    pub fn peer_addr(&self) -> io::Result<Address> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Address::Inet),
            Stream::Unix(s) => s.peer_addr().map(|a| Address::from_unix(&a)),
        }
    }

    /// The address of this end.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<Address> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(Address::Inet),
            Stream::Unix(s) => s.local_addr().map(|a| Address::from_unix(&a)),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        on_stream!(self, s => (&*s).read(buf))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        on_stream!(self, s => (&*s).write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        on_stream!(self, s => (&*s).write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        on_stream!(self, s => s.as_fd())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        on_stream!(self, s => s.as_raw_fd())
    }
}
