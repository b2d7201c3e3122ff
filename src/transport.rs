//! Socket kinds. A [`Transport`] names the request its handlers get and the
//! std socket a server of its kind can adopt, so that one generic `bind`
//! (and one `from_socket`) serves every server kind, and a stream server and
//! a datagram server are different types all the way down.

use std::fmt;
use std::io;
use std::net::{TcpListener, ToSocketAddrs, UdpSocket};
use std::os::unix::net;
use std::path::Path;

use socket2::Type;

use crate::loops::Kind;
use crate::loops::accept::StreamEndpoint;
use crate::loops::receive::DatagramEndpoint;
use crate::net::bind::{self, SocketFile};
use crate::net::{DatagramSocket, Listener};
use crate::options::Options;
use crate::request::{DatagramRequest, StreamRequest};

#[allow(private_interfaces, reason = "sealed traits: their methods take crate-private types")]
pub(crate) mod sealed {
    use super::*;

    pub trait Sealed {}

    /// A std socket a server of kind `R` can serve.
    pub trait Adopt<R: Kind>: From<std::os::fd::OwnedFd> {
        /// What an inherited descriptor must be to be this socket.
        const KIND: crate::activation::SocketKind;
        /// Serves it as it is: listening already, maybe shared.
        fn adopt(self) -> io::Result<R::Endpoint>;
    }

    /// An address a server of transport `T` can bind.
    pub trait Bind<T: Transport> {
        /// Creates and binds the socket (and listens, for streams, unless
        /// the builder said not to).
        fn bind(self, opts: &Options) -> io::Result<(<T::Request as Kind>::Endpoint, Option<SocketFile>)>;
    }
}

/// A socket kind a server can serve: [`Tcp`], [`Udp`], [`UnixStream`] or
/// [`UnixDatagram`]. Sealed.
pub trait Transport: sealed::Sealed + Send + Sync + 'static {
    /// The name used in logs and in the command's `listening` lines:
    /// `tcp`, `udp`, `unix` or `unix-dgram`.
    const NAME: &'static str;
    /// What a handler is given: [`StreamRequest`] or [`DatagramRequest`].
    type Request: Kind;
    /// The std socket a server of this kind can serve when it was made
    /// elsewhere ([`Builder::from_socket`](crate::Builder::from_socket)).
    type Socket: sealed::Adopt<Self::Request>;
}

/// A stream transport, [`Tcp`] or [`UnixStream`]: the settings of a
/// listener and its connections (the backlog, timeouts, buffers, the PROXY
/// protocol) are [`Builder`](crate::Builder)'s methods for these only.
/// Sealed.
pub trait StreamTransport: Transport<Request = StreamRequest> {}

/// A datagram transport, [`Udp`] or [`UnixDatagram`]: the datagram size
/// limits are [`Builder`](crate::Builder)'s methods for these only. Sealed.
pub trait DatagramTransport: Transport<Request = DatagramRequest> {}

/// An IP transport, [`Tcp`] or [`Udp`]: `SO_REUSEADDR` and `SO_REUSEPORT`
/// are [`Builder`](crate::Builder)'s methods for these only. Sealed.
pub trait InetTransport: Transport {}

impl StreamTransport for Tcp {}
impl StreamTransport for UnixStream {}
impl DatagramTransport for Udp {}
impl DatagramTransport for UnixDatagram {}
impl InetTransport for Tcp {}
impl InetTransport for Udp {}

/// An address a server on transport `T` can bind: anything that resolves
/// to socket addresses (`"127.0.0.1:9999"`, a `SocketAddr`, ...) for TCP
/// and UDP, a path for Unix sockets. Sealed.
pub trait BindAddress<T: Transport>: sealed::Bind<T> {}

impl<T: Transport, A: sealed::Bind<T>> BindAddress<T> for A {}

/// TCP over IPv4 or IPv6; handlers get a [`StreamRequest`].
#[derive(Clone, Copy, Debug)]
pub struct Tcp;
/// UDP over IPv4 or IPv6; handlers get a [`DatagramRequest`].
#[derive(Clone, Copy, Debug)]
pub struct Udp;
/// Unix-domain stream sockets; handlers get a [`StreamRequest`].
#[derive(Clone, Copy, Debug)]
pub struct UnixStream;
/// Unix-domain datagram sockets; handlers get a [`DatagramRequest`].
#[derive(Clone, Copy, Debug)]
pub struct UnixDatagram;

macro_rules! transport {
    ($($t:ident = $name:literal, $request:ty, $socket:ty;)*) => {$(
        impl sealed::Sealed for $t {}
        impl Transport for $t {
            const NAME: &'static str = $name;
            type Request = $request;
            type Socket = $socket;
        }
    )*};
}
transport! {
    Tcp = "tcp", StreamRequest, TcpListener;
    Udp = "udp", DatagramRequest, UdpSocket;
    UnixStream = "unix", StreamRequest, net::UnixListener;
    UnixDatagram = "unix-dgram", DatagramRequest, net::UnixDatagram;
}

#[allow(private_interfaces, reason = "sealed trait")]
impl sealed::Adopt<StreamRequest> for TcpListener {
    const KIND: crate::activation::SocketKind = crate::activation::SocketKind::Tcp;
    fn adopt(self) -> io::Result<StreamEndpoint> {
        StreamEndpoint::adopted(Listener::Tcp(self))
    }
}

#[allow(private_interfaces, reason = "sealed trait")]
impl sealed::Adopt<StreamRequest> for net::UnixListener {
    const KIND: crate::activation::SocketKind = crate::activation::SocketKind::UnixStream;
    fn adopt(self) -> io::Result<StreamEndpoint> {
        StreamEndpoint::adopted(Listener::Unix(self))
    }
}

#[allow(private_interfaces, reason = "sealed trait")]
impl sealed::Adopt<DatagramRequest> for UdpSocket {
    const KIND: crate::activation::SocketKind = crate::activation::SocketKind::Udp;
    fn adopt(self) -> io::Result<DatagramEndpoint> {
        Ok(DatagramEndpoint::adopted(DatagramSocket::Udp(self)))
    }
}

#[allow(private_interfaces, reason = "sealed trait")]
impl sealed::Adopt<DatagramRequest> for net::UnixDatagram {
    const KIND: crate::activation::SocketKind = crate::activation::SocketKind::UnixDatagram;
    fn adopt(self) -> io::Result<DatagramEndpoint> {
        Ok(DatagramEndpoint::adopted(DatagramSocket::Unix(self)))
    }
}

#[allow(private_interfaces, reason = "sealed trait")]
impl<A: ToSocketAddrs + fmt::Debug> sealed::Bind<Tcp> for A {
    fn bind(self, opts: &Options) -> io::Result<(StreamEndpoint, Option<SocketFile>)> {
        let opts = opts.bind_options(true);
        let socket = bind::bind_inet(self, Tcp::NAME, Type::STREAM, &opts)?;
        Ok((StreamEndpoint::bound(Listener::Tcp(socket.into()), opts.activate)?, None))
    }
}

#[allow(private_interfaces, reason = "sealed trait")]
impl<A: ToSocketAddrs + fmt::Debug> sealed::Bind<Udp> for A {
    fn bind(self, opts: &Options) -> io::Result<(DatagramEndpoint, Option<SocketFile>)> {
        let socket = bind::bind_inet(self, Udp::NAME, Type::DGRAM, &opts.bind_options(false))?;
        Ok((DatagramEndpoint::bound(DatagramSocket::Udp(socket.into())), None))
    }
}

#[allow(private_interfaces, reason = "sealed trait")]
impl<P: AsRef<Path>> sealed::Bind<UnixStream> for P {
    fn bind(self, opts: &Options) -> io::Result<(StreamEndpoint, Option<SocketFile>)> {
        let opts = opts.bind_options(true);
        let (socket, file) = bind::bind_unix(self.as_ref(), UnixStream::NAME, Type::STREAM, &opts)?;
        let listener = Listener::Unix(std::os::fd::OwnedFd::from(socket).into());
        Ok((StreamEndpoint::bound(listener, opts.activate)?, Some(file)))
    }
}

#[allow(private_interfaces, reason = "sealed trait")]
impl<P: AsRef<Path>> sealed::Bind<UnixDatagram> for P {
    fn bind(self, opts: &Options) -> io::Result<(DatagramEndpoint, Option<SocketFile>)> {
        let (socket, file) =
            bind::bind_unix(self.as_ref(), UnixDatagram::NAME, Type::DGRAM, &opts.bind_options(false))?;
        let socket = DatagramSocket::Unix(std::os::fd::OwnedFd::from(socket).into());
        Ok((DatagramEndpoint::bound(socket), Some(file)))
    }
}
