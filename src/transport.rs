//! Socket kinds: creating, binding and activating the server's socket, and
//! taking connections or datagrams from it.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::address::Address;
use crate::handler::{DatagramSocket, Stream};

mod sealed {
    pub trait Sealed {}
}

/// A socket kind a server can serve: [`Tcp`], [`Udp`], [`UnixStream`] or
/// [`UnixDatagram`]. Sealed.
pub trait Transport: sealed::Sealed + Send + Sync + 'static {
    /// The name used in logs and in the command's `listening` lines:
    /// `tcp`, `udp`, `unix` or `unix-dgram`.
    const NAME: &'static str;
}

/// TCP over IPv4 or IPv6; handlers get a [`StreamRequest`](crate::StreamRequest).
#[derive(Clone, Copy, Debug)]
pub struct Tcp;
/// UDP over IPv4 or IPv6; handlers get a [`DatagramRequest`](crate::DatagramRequest).
#[derive(Clone, Copy, Debug)]
pub struct Udp;
/// Unix-domain stream sockets; handlers get a [`StreamRequest`](crate::StreamRequest).
#[derive(Clone, Copy, Debug)]
pub struct UnixStream;
/// Unix-domain datagram sockets; handlers get a [`DatagramRequest`](crate::DatagramRequest).
#[derive(Clone, Copy, Debug)]
pub struct UnixDatagram;

macro_rules! transport {
    ($($t:ident = $name:literal),*) => {$(
        impl sealed::Sealed for $t {}
        impl Transport for $t {
            const NAME: &'static str = $name;
        }
    )*};
}
transport!(Tcp = "tcp", Udp = "udp", UnixStream = "unix", UnixDatagram = "unix-dgram");

/// A listening stream socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(net::UnixListener),
}

impl Listener {
    /// Takes one pending connection (the listener is non-blocking).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Address)> {
        let (stream, peer) = match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), Address::Inet(a)))?,
            Listener::Unix(l) => l.accept().map(|(s, a)| (Stream::Unix(s), Address::from_unix(&a)))?,
        };
        // BSDs hand out accepted sockets that inherit O_NONBLOCK; Linux does not.
        #[cfg(not(target_os = "linux"))]
        match &stream {
            Stream::Tcp(s) => s.set_nonblocking(false)?,
            Stream::Unix(s) => s.set_nonblocking(false)?,
        }
        Ok((stream, peer))
    }

    pub(crate) fn listen(&self, backlog: i32) -> io::Result<()> {
        socket2::SockRef::from(self).listen(backlog)
    }
}

impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// The server's socket.
#[derive(Debug)]
pub(crate) enum Endpoint {
    Stream(Listener),
    Datagram(std::sync::Arc<DatagramSocket>),
}

impl Endpoint {
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            Endpoint::Stream(l) => l.as_raw_fd(),
            Endpoint::Datagram(s) => s.as_raw_fd(),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<Address> {
        match self {
            Endpoint::Stream(Listener::Tcp(l)) => l.local_addr().map(Address::Inet),
            Endpoint::Stream(Listener::Unix(l)) => l.local_addr().map(|a| Address::from_unix(&a)),
            Endpoint::Datagram(s) => s.local_addr(),
        }
    }
}

/// Socket-level settings applied at bind time.
#[derive(Clone, Debug)]
pub(crate) struct BindOptions {
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) backlog: i32,
    pub(crate) activate: bool,
}

fn context(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Creates, configures and binds an IP socket on the first of `addrs` that
/// works; listens too for a stream socket when `activate` is set.
pub(crate) fn bind_inet<A: ToSocketAddrs + fmt::Debug>(
    addrs: A,
    kind: &str,
    ty: Type,
    opts: &BindOptions,
) -> io::Result<Socket> {
    let resolved: Vec<SocketAddr> = addrs
        .to_socket_addrs()
        .map_err(|e| context(e, format_args!("cannot resolve {kind} address {addrs:?}")))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{kind} address {addrs:?} resolves to nothing"));
    for addr in resolved {
        match bind_one(addr, ty, opts) {
            Ok(s) => return Ok(s),
            Err(e) => last = context(e, format_args!("cannot bind {kind} {addr}")),
        }
    }
    Err(last)
}

fn bind_one(addr: SocketAddr, ty: Type, opts: &BindOptions) -> io::Result<Socket> {
    let proto = if ty == Type::STREAM { Protocol::TCP } else { Protocol::UDP };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    socket.set_reuse_address(opts.reuse_address)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    if ty == Type::STREAM {
        socket.set_nonblocking(true)?;
        if opts.activate {
            socket.listen(opts.backlog)?;
        }
    }
    Ok(socket)
}

pub(crate) fn tcp_listener(socket: Socket) -> Listener {
    Listener::Tcp(TcpListener::from(socket))
}

pub(crate) fn udp_socket(socket: Socket) -> DatagramSocket {
    DatagramSocket::Udp(UdpSocket::from(socket))
}

/// A socket file this server created, removed when the server closes if it
/// is still the same file (another server may have replaced it since).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile { path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            log::warn!("cannot remove socket file {}: {e}", self.path.display());
        }
    }
}

/// Removes a socket file that no server is listening on. Refuses to touch a
/// path that is not a socket, or a socket someone is still serving.
fn remove_stale(path: &Path, ty: Type) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the path exists and is not a socket"));
    }
    let probe = Socket::new(Domain::UNIX, ty, None)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(io::Error::new(io::ErrorKind::AddrInUse, "another server is listening on it")),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// Binds a Unix socket at `path`, removing a stale socket file first.
pub(crate) fn bind_unix(path: &Path, kind: &str, ty: Type, opts: &BindOptions) -> io::Result<(Socket, SocketFile)> {
    let what = || format!("cannot bind {kind} {}", path.display());
    if opts.reuse_port {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: reuse_port applies to IP sockets only", what()),
        ));
    }
    let bind = || -> io::Result<(Socket, SocketFile)> {
        remove_stale(path, ty)?;
        let socket = Socket::new(Domain::UNIX, ty, None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        let file = SocketFile::new(path)?;
        if ty == Type::STREAM {
            socket.set_nonblocking(true)?;
            if opts.activate {
                socket.listen(opts.backlog)?;
            }
        }
        Ok((socket, file))
    };
    bind().map_err(|e| context(e, what()))
}

pub(crate) fn unix_listener(socket: Socket) -> Listener {
    Listener::Unix(net::UnixListener::from(std::os::fd::OwnedFd::from(socket)))
}

pub(crate) fn unix_datagram(socket: Socket) -> DatagramSocket {
    DatagramSocket::Unix(net::UnixDatagram::from(std::os::fd::OwnedFd::from(socket)))
}
