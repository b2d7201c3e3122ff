//! A connected stream socket, TCP or Unix.
//!
//! Every stream the server accepts is non-blocking underneath, so that one
//! code path serves a thread that waits on its connection and a connection
//! parked with no thread at all (the event strategy). Its `Read` and `Write`
//! still block as std's do: a read or write that would block waits in
//! `poll` for at most the stream's own read or write timeout. A read then
//! fails with `WouldBlock` — what a std socket with `SO_RCVTIMEO` returns
//! (a `StreamRequest` reports it as `TimedOut`);
//! a write with `TimedOut`, "write to PEER timed out after T" (std's
//! `WouldBlock`, "operation would block", reads as anything but a timeout
//! in a log).

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::Address;
use crate::deadline;
use crate::sys;

/// The socket of a [`Stream`].
#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

macro_rules! on_socket {
    ($self:expr, $s:ident => $e:expr) => {
        match &$self.socket {
            Socket::Tcp($s) => $e,
            Socket::Unix($s) => $e,
        }
    };
}

/// A connected stream socket: TCP or Unix.
///
/// Reads and writes go straight to the socket (`Read` and `Write` are
/// implemented for `Stream` and `&Stream`) and block as std's do, within
/// the timeouts set here; [`StreamRequest::try_clone`](crate::StreamRequest::try_clone)
/// gives one to hand to another thread, e.g. to broadcast to a chat member.
/// The socket underneath is non-blocking: [`as_tcp`](Self::as_tcp) and
/// [`as_unix`](Self::as_unix) give it as it is.
#[derive(Debug)]
pub struct Stream {
    socket: Socket,
    /// Nanoseconds a read may wait (see [`deadline::timeout_nanos`]).
    read_timeout: AtomicU64,
    /// Nanoseconds a write may wait for room.
    write_timeout: AtomicU64,
}

impl Stream {
    fn new(socket: Socket) -> io::Result<Stream> {
        let stream = Stream {
            socket,
            read_timeout: AtomicU64::new(deadline::FOREVER_NANOS),
            write_timeout: AtomicU64::new(deadline::FOREVER_NANOS),
        };
        on_socket!(stream, s => s.set_nonblocking(true))?;
        Ok(stream)
    }

    /// A TCP connection, made non-blocking underneath.
    ///
    /// # Errors
    /// If it cannot be made non-blocking.
    pub fn from_tcp(s: TcpStream) -> io::Result<Stream> {
        Stream::new(Socket::Tcp(s))
    }

    /// A Unix-domain stream connection, made non-blocking underneath.
    ///
    /// # Errors
    /// If it cannot be made non-blocking.
    pub fn from_unix(s: UnixStream) -> io::Result<Stream> {
        Stream::new(Socket::Unix(s))
    }

    /// The TCP socket, if this is TCP (non-blocking: reads and writes on it
    /// return `WouldBlock` rather than wait).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.socket {
            Socket::Tcp(s) => Some(s),
            Socket::Unix(_) => None,
        }
    }

    /// The Unix socket, if this is a Unix-domain stream (non-blocking).
    pub fn as_unix(&self) -> Option<&UnixStream> {
        match &self.socket {
            Socket::Unix(s) => Some(s),
            Socket::Tcp(_) => None,
        }
    }

    /// Shuts down the read half, the write half or both.
    ///
    /// # Errors
    /// As `shutdown(2)`: e.g. `NotConnected` after the peer reset.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        on_socket!(self, s => s.shutdown(how))
    }

    /// Sets how long a read may wait (`None` or `Some(Duration::MAX)`: for
    /// ever). A read on this `Stream` that waits that long fails with
    /// `ErrorKind::WouldBlock`, as a std socket with `SO_RCVTIMEO` does. A
    /// zero duration, which std refuses, is Python's `settimeout(0)`: a
    /// read with nothing to take fails at once.
    ///
    /// A read through a [`StreamRequest`](crate::StreamRequest) reports its
    /// read timeout as `ErrorKind::TimedOut`, "read from PEER timed out"
    /// (what [`Builder::read_timeout`](crate::Builder::read_timeout) says);
    /// only a handler reading this `Stream` itself (from
    /// [`StreamRequest::socket`](crate::StreamRequest::socket) or
    /// [`fill_buf_and_stream`](crate::StreamRequest::fill_buf_and_stream))
    /// sees the `WouldBlock`.
    ///
    /// # Errors
    /// None: the `Result` is std's signature.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.read_timeout.store(deadline::timeout_nanos(t), Relaxed);
        Ok(())
    }

    /// Sets how long a write may wait for room (`None` or
    /// `Some(Duration::MAX)`: for ever). A write that waits that long
    /// without progress fails with `TimedOut`: "write to PEER timed out
    /// after T"; with zero, a write the socket cannot take at once does.
    ///
    /// # Errors
    /// None: the `Result` is std's signature.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.write_timeout.store(deadline::timeout_nanos(t), Relaxed);
        Ok(())
    }

    /// How long a read may wait (`None`: for ever).
    pub fn read_timeout(&self) -> Option<Duration> {
        deadline::timeout_from_nanos(self.read_timeout.load(Relaxed))
    }

    /// How long a write may wait for room (`None`: for ever).
    pub fn write_timeout(&self) -> Option<Duration> {
        deadline::timeout_from_nanos(self.write_timeout.load(Relaxed))
    }

    /// A second handle to the same socket, with the same timeouts.
    ///
    /// # Errors
    /// As `dup(2)`, e.g. when the process is out of descriptors.
    pub fn try_clone(&self) -> io::Result<Stream> {
        let socket = match &self.socket {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        };
        let clone = Stream::new(socket)?;
        clone.read_timeout.store(self.read_timeout.load(Relaxed), Relaxed);
        clone.write_timeout.store(self.write_timeout.load(Relaxed), Relaxed);
        Ok(clone)
    }

    /// The address of the other end.
    ///
    /// # Errors
    /// As `getpeername(2)`, e.g. `NotConnected` once the peer is gone.
    pub fn peer_addr(&self) -> io::Result<Address> {
        match &self.socket {
            Socket::Tcp(s) => s.peer_addr().map(Address::Inet),
            Socket::Unix(s) => s.peer_addr().map(|a| Address::from_unix(&a)),
        }
    }

    /// The address of this end.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<Address> {
        match &self.socket {
            Socket::Tcp(s) => s.local_addr().map(Address::Inet),
            Socket::Unix(s) => s.local_addr().map(|a| Address::from_unix(&a)),
        }
    }

    /// Sets `TCP_NODELAY` (a Unix stream has no Nagle to turn off).
    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match &self.socket {
            Socket::Tcp(s) => s.set_nodelay(on),
            Socket::Unix(_) => Ok(()),
        }
    }

    /// One read that never waits: `WouldBlock` when nothing is there.
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match on_socket!(self, s => (&*s).read(buf)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// One write that never waits: `WouldBlock` when there is no room.
    /// Writes what the socket takes now, without waiting: `send(2)`, which
    /// skips the file layer `write(2)` goes through (and never raises
    /// SIGPIPE).
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match on_socket!(self, s => socket2::SockRef::from(s).send(buf)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    pub(crate) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match on_socket!(self, s => (&*s).write_vectored(bufs)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// Waits until a read or write (`POLLIN`/`POLLOUT`) would not block,
    /// for at most `timeout`; `Err(WouldBlock)` when it passes.
    pub(crate) fn wait(&self, writing: bool, timeout: Option<Duration>) -> io::Result<()> {
        let events = if writing { libc::POLLOUT } else { libc::POLLIN };
        if sys::poll_for(&[self.as_raw_fd()], events, &mut [false], timeout)? == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(false, self.read_timeout())?,
                r => return r,
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Stream {
    /// Waits for room to write, at most the write timeout.
    fn wait_writable(&self) -> io::Result<()> {
        let timeout = self.write_timeout();
        self.wait(true, timeout).map_err(|e| match (e.kind(), timeout) {
            (io::ErrorKind::WouldBlock, Some(after)) => {
                let peer = self.peer_addr().map_or_else(|_| "the peer".to_string(), |a| a.to_string());
                io::Error::new(io::ErrorKind::TimedOut, WriteTimedOut { peer, after })
            }
            _ => e,
        })
    }
}

/// A write through a [`Stream`] that made no progress for its write
/// timeout (the error's inner value, so that the request can tell it from
/// a read's timeout).
#[derive(Debug)]
pub(crate) struct WriteTimedOut {
    peer: String,
    after: Duration,
}

impl std::fmt::Display for WriteTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "write to {} timed out after {:?}", self.peer, self.after)
    }
}

impl std::error::Error for WriteTimedOut {}

/// Whether `e` is a write's timeout: a [`Stream`]'s, or a `WouldBlock`
/// (what a write straight to a non-blocking socket gets).
pub(crate) fn is_write_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.get_ref().is_some_and(|inner| inner.is::<WriteTimedOut>())
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable()?,
                r => return r,
            }
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match self.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable()?,
                r => return r,
            }
        }
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
        on_socket!(self, s => s.as_fd())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        on_socket!(self, s => s.as_raw_fd())
    }
}
