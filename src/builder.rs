//! Configuring a server before it binds: [`Builder`] and its options.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{TcpListener, ToSocketAddrs, UdpSocket};
use std::os::unix::net;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use socket2::Type;

use crate::address::Address;
use crate::handler::{DatagramRequest, DatagramSocket, RequestHandler, StreamRequest};
use crate::server::Server;
use crate::service::{AnyHandler, Hooks};
use crate::strategy::{self, Strategy};
use crate::transport::{
    self, BindOptions, Endpoint, Listener, SocketFile, Tcp, Transport, Udp, UnixDatagram, UnixStream,
};

/// The largest UDP payload over IPv4 (65,535 − 8 − 20): the default
/// [`max_datagram_size`](Builder::max_datagram_size).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) reuse_address: Option<bool>,
    pub(crate) reuse_port: bool,
    pub(crate) backlog: i32,
    pub(crate) activate: bool,
    pub(crate) nodelay: bool,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_datagram_size: usize,
    pub(crate) max_connections: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
    pub(crate) service_interval: Option<Duration>,
    pub(crate) read_buffer: usize,
    pub(crate) write_buffer: usize,
    pub(crate) datagram_handoff: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reuse_address: None,
            reuse_port: false,
            backlog: libc::SOMAXCONN,
            activate: true,
            nodelay: false,
            read_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            max_datagram_size: MAX_UDP_PAYLOAD,
            max_connections: None,
            timeout: None,
            grace: Duration::from_secs(5),
            service_interval: None,
            read_buffer: 64 * 1024,
            write_buffer: 0,
            datagram_handoff: false,
        }
    }
}

/// Configures a server before it binds: socket options, limits, timeouts,
/// the strategy and the hooks. Get one from [`Server::builder`].
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use socketserver::servers::Echo;
/// use socketserver::{TcpServer, ThreadPool};
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
///
/// let n = |n| NonZeroUsize::new(n).unwrap();
/// let server = TcpServer::builder()
///     .strategy(ThreadPool::new(n(8)).max_workers(n(512)))
///     .max_connections(2_000)
///     .idle_timeout(Duration::from_secs(60))
///     .verify_request(|peer| peer.as_inet().is_some_and(|a| a.ip().is_loopback()))
///     .bind("127.0.0.1:0", Echo)?;
/// server.serve_forever()
/// # }
/// ```
#[must_use = "a builder does nothing until `bind` is called"]
pub struct Builder<T, S = strategy::Sync> {
    opts: Options,
    strategy: S,
    hooks: Hooks,
    _transport: PhantomData<fn() -> T>,
}

impl<T, S: fmt::Debug> fmt::Debug for Builder<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("opts", &self.opts)
            .field("strategy", &self.strategy)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl<T: Transport, S: Strategy> Builder<T, S> {
    pub(crate) fn new(strategy: S) -> Self {
        Builder { opts: Options::default(), strategy, hooks: Hooks::default(), _transport: PhantomData }
    }

    /// The concurrency strategy: [`Sync`](crate::Sync), [`Threading`](crate::Threading),
    /// [`ThreadPool`](crate::ThreadPool), [`Forking`](crate::Forking) or an
    /// [`AnyStrategy`](crate::AnyStrategy).
    pub fn strategy<S2: Strategy>(self, strategy: S2) -> Builder<T, S2> {
        Builder { opts: self.opts, strategy, hooks: self.hooks, _transport: PhantomData }
    }

    /// `SO_REUSEADDR`. On by default for stream servers, so that a restart
    /// never fails because old connections sit in TIME_WAIT; off by default
    /// for datagram servers, where on Linux it would let two servers bind
    /// the same port and split its datagrams.
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.opts.reuse_address = Some(on);
        self
    }

    /// `SO_REUSEPORT` (IP sockets only; binding a Unix server with it set
    /// fails): several processes bind the same port and the kernel spreads
    /// connections among them. Off by default.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.opts.reuse_port = on;
        self
    }

    /// The `listen` backlog: connections the kernel completes while the
    /// server is busy. Default `SOMAXCONN` (Python's default is 5); the
    /// kernel caps it at `net.core.somaxconn`.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.opts.backlog = backlog.min(i32::MAX as u32) as i32;
        self
    }

    /// Whether `bind` also listens (Python's `bind_and_activate`). With
    /// `false`, call [`Server::server_activate`] before serving (or let
    /// `serve_forever` do it). Default true.
    pub fn activate(mut self, on: bool) -> Self {
        self.opts.activate = on;
        self
    }

    /// `TCP_NODELAY` on every accepted TCP connection (Python's
    /// `disable_nagle_algorithm`). Default off.
    pub fn nodelay(mut self, on: bool) -> Self {
        self.opts.nodelay = on;
        self
    }

    /// A read that waits longer fails with `ErrorKind::TimedOut`; the
    /// connection stays open. Default none (Python's handler `timeout`).
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.opts.read_timeout = Some(t).filter(|t| !t.is_zero());
        self
    }

    /// A write that waits longer (a peer that does not read) fails with
    /// `ErrorKind::TimedOut`. Default none.
    pub fn write_timeout(mut self, t: Duration) -> Self {
        self.opts.write_timeout = Some(t).filter(|t| !t.is_zero());
        self
    }

    /// A connection that sends nothing for this long while its handler
    /// waits to read is shut down by the server, the read fails with
    /// `ErrorKind::TimedOut`, and `Stats::idle_closed` counts it. This is
    /// what stops idle clients from pinning workers for ever. With a
    /// shorter [`read_timeout`](Self::read_timeout), reads time out as that
    /// says, and a handler that reads on is closed once the peer has been
    /// silent for the idle timeout in all. Default none.
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.opts.idle_timeout = Some(t).filter(|t| !t.is_zero());
        self
    }

    /// The longest datagram a datagram server takes (default 65,507). A
    /// longer one is reported through `handle_error`, counted in
    /// `Stats::oversized` and dropped — never cut short and handled as if
    /// whole, as Python does.
    pub fn max_datagram_size(mut self, bytes: usize) -> Self {
        self.opts.max_datagram_size = bytes.max(1);
        self
    }

    /// At most `n` connections (or datagrams) in flight: at the limit the
    /// server stops accepting until one closes; the kernel backlog holds
    /// newcomers and nothing is dropped. Default unlimited.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.opts.max_connections = Some(n.max(1));
        self
    }

    /// How long [`Server::handle_request`] waits before it calls
    /// `handle_timeout` and returns (Python's `timeout`). Default none.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.opts.timeout = Some(t);
        self
    }

    /// How long a shutdown lets requests in flight finish before it shuts
    /// their connections down (default 5 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.opts.grace = grace;
        self
    }

    /// Also wake `serve_forever` this often to run `service_actions` when
    /// nothing happens (by default it runs only after a wake-up).
    pub fn service_interval(mut self, every: Duration) -> Self {
        self.opts.service_interval = Some(every);
        self
    }

    /// The most a connection's read buffer grows to, in bytes (default
    /// 64 KiB). It starts at 2 KiB and doubles only when a read fills it,
    /// so idle and small-message connections use little memory while bulk
    /// transfers get large reads.
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.opts.read_buffer = bytes.max(1);
        self
    }

    /// Collect writes in a buffer of this many bytes, sent when it fills, on
    /// `flush` and after `finish` (default 0: every write is sent at once).
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.opts.write_buffer = bytes;
        self
    }

    /// Datagram servers under a [`ThreadPool`] normally let the workers
    /// receive on the socket themselves; with this set, one loop receives
    /// and hands each datagram (copied) through the pool's queue instead.
    /// Kept for comparison in benchmarks.
    #[doc(hidden)]
    pub fn datagram_handoff(mut self, on: bool) -> Self {
        self.opts.datagram_handoff = on;
        self
    }

    /// Python's `verify_request`: called with each peer before its request
    /// is handled; `false` refuses it (a connection is shut down and closed,
    /// a datagram dropped; the handler never runs) and counts it in
    /// `Stats::refused`.
    pub fn verify_request(mut self, f: impl Fn(&Address) -> bool + Send + std::marker::Sync + 'static) -> Self {
        self.hooks.verify_request = Some(Arc::new(f));
        self
    }

    /// Python's `handle_error`: called with the peer and the error when a
    /// handler fails or panics (a panic arrives as an error whose message
    /// starts with `handler panicked`). The default logs it through `log`
    /// at error level. The server keeps serving either way.
    pub fn handle_error(mut self, f: impl Fn(&Address, &io::Error) + Send + std::marker::Sync + 'static) -> Self {
        self.hooks.handle_error = Some(Arc::new(f));
        self
    }

    /// Python's `handle_timeout`: called when `handle_request` waited
    /// `timeout` for nothing.
    pub fn handle_timeout(mut self, f: impl Fn() + Send + std::marker::Sync + 'static) -> Self {
        self.hooks.handle_timeout = Some(Arc::new(f));
        self
    }

    /// Python's `service_actions`: called by `serve_forever` after each
    /// wake-up (and every [`service_interval`](Self::service_interval), if set).
    pub fn service_actions(mut self, f: impl Fn() + Send + std::marker::Sync + 'static) -> Self {
        self.hooks.service_actions = Some(Arc::new(f));
        self
    }

    fn bind_options(&self, stream: bool) -> BindOptions {
        BindOptions {
            reuse_address: self.opts.reuse_address.unwrap_or(stream),
            reuse_port: self.opts.reuse_port,
            backlog: self.opts.backlog,
            activate: self.opts.activate,
        }
    }

    fn build(
        self,
        endpoint: Endpoint,
        handler: AnyHandler,
        socket_file: Option<SocketFile>,
        listening: bool,
    ) -> io::Result<Server<T, S>> {
        Server::new(endpoint, handler, self.hooks, strategy::to_any(&self.strategy), self.opts, socket_file, listening)
    }

    /// Builds on a socket made elsewhere: it listens already, may be shared
    /// with other processes, and is never shut down by this server.
    fn adopt(self, endpoint: Endpoint, handler: AnyHandler) -> io::Result<Server<T, S>> {
        let mut server = self.build(endpoint, handler, None, true)?;
        server.adopted = true;
        Ok(server)
    }
}

impl<S: Strategy> Builder<Tcp, S> {
    /// Binds (and, unless `activate(false)`, listens) on the first address
    /// `addr` resolves to. Port 0 picks a free port: see
    /// [`Server::server_address`].
    ///
    /// # Errors
    /// An error naming the address and the cause: it cannot be resolved, it
    /// is in use, permission is denied...
    pub fn bind<A, H>(self, addr: A, handler: H) -> io::Result<Server<Tcp, S>>
    where
        A: ToSocketAddrs + fmt::Debug,
        H: RequestHandler<StreamRequest>,
    {
        let opts = self.bind_options(true);
        let socket = transport::bind_inet(addr, Tcp::NAME, Type::STREAM, &opts)?;
        self.build(
            Endpoint::Stream(transport::tcp_listener(socket)),
            AnyHandler::Stream(Arc::new(handler)),
            None,
            opts.activate,
        )
    }

    /// Serves on a listener bound elsewhere (systemd socket activation, a
    /// `SO_REUSEPORT` sibling, a hand-off on restart). It should already be
    /// listening; the builder's socket options are not applied to it. When
    /// serving stops, the listener is left listening (a server that bound
    /// its own shuts it down so that newcomers are refused at once): other
    /// holders of the same socket go on accepting from it.
    ///
    /// # Errors
    /// If it cannot be made non-blocking or has no local address.
    pub fn from_listener<H: RequestHandler<StreamRequest>>(
        self,
        listener: TcpListener,
        handler: H,
    ) -> io::Result<Server<Tcp, S>> {
        listener.set_nonblocking(true)?;
        self.adopt(Endpoint::Stream(Listener::Tcp(listener)), AnyHandler::Stream(Arc::new(handler)))
    }
}

impl<S: Strategy> Builder<Udp, S> {
    /// Binds on the first address `addr` resolves to (port 0: a free port).
    ///
    /// # Errors
    /// An error naming the address and the cause.
    pub fn bind<A, H>(self, addr: A, handler: H) -> io::Result<Server<Udp, S>>
    where
        A: ToSocketAddrs + fmt::Debug,
        H: RequestHandler<DatagramRequest>,
    {
        let socket = transport::bind_inet(addr, Udp::NAME, Type::DGRAM, &self.bind_options(false))?;
        let socket = Arc::new(transport::udp_socket(socket));
        self.build(Endpoint::Datagram(socket), AnyHandler::Datagram(Arc::new(handler)), None, true)
    }

    /// Serves on a socket bound elsewhere.
    ///
    /// # Errors
    /// If it has no local address.
    pub fn from_socket<H: RequestHandler<DatagramRequest>>(
        self,
        socket: UdpSocket,
        handler: H,
    ) -> io::Result<Server<Udp, S>> {
        let socket = Arc::new(DatagramSocket::Udp(socket));
        self.adopt(Endpoint::Datagram(socket), AnyHandler::Datagram(Arc::new(handler)))
    }
}

impl<S: Strategy> Builder<UnixStream, S> {
    /// Binds (and listens) at `path`. A stale socket file there — one no
    /// server answers on — is removed first; a live one, or a file that is
    /// not a socket, is an error. The file is removed when the server closes.
    ///
    /// # Errors
    /// An error naming the path and the cause.
    pub fn bind<P: AsRef<Path>, H: RequestHandler<StreamRequest>>(
        self,
        path: P,
        handler: H,
    ) -> io::Result<Server<UnixStream, S>> {
        let opts = self.bind_options(true);
        let (socket, file) = transport::bind_unix(path.as_ref(), UnixStream::NAME, Type::STREAM, &opts)?;
        let endpoint = Endpoint::Stream(transport::unix_listener(socket));
        self.build(endpoint, AnyHandler::Stream(Arc::new(handler)), Some(file), opts.activate)
    }

    /// Serves on a listener bound elsewhere; its file is left in place on close.
    ///
    /// # Errors
    /// If it cannot be made non-blocking or has no local address.
    pub fn from_listener<H: RequestHandler<StreamRequest>>(
        self,
        listener: net::UnixListener,
        handler: H,
    ) -> io::Result<Server<UnixStream, S>> {
        listener.set_nonblocking(true)?;
        self.adopt(Endpoint::Stream(Listener::Unix(listener)), AnyHandler::Stream(Arc::new(handler)))
    }
}

impl<S: Strategy> Builder<UnixDatagram, S> {
    /// Binds at `path`, removing a stale socket file first; the file is
    /// removed when the server closes.
    ///
    /// # Errors
    /// An error naming the path and the cause.
    pub fn bind<P: AsRef<Path>, H: RequestHandler<DatagramRequest>>(
        self,
        path: P,
        handler: H,
    ) -> io::Result<Server<UnixDatagram, S>> {
        let (socket, file) =
            transport::bind_unix(path.as_ref(), UnixDatagram::NAME, Type::DGRAM, &self.bind_options(false))?;
        let socket = Arc::new(transport::unix_datagram(socket));
        self.build(Endpoint::Datagram(socket), AnyHandler::Datagram(Arc::new(handler)), Some(file), true)
    }

    /// Serves on a socket bound elsewhere; its file is left in place on close.
    ///
    /// # Errors
    /// If it has no local address.
    pub fn from_socket<H: RequestHandler<DatagramRequest>>(
        self,
        socket: net::UnixDatagram,
        handler: H,
    ) -> io::Result<Server<UnixDatagram, S>> {
        let socket = Arc::new(DatagramSocket::Unix(socket));
        self.adopt(Endpoint::Datagram(socket), AnyHandler::Datagram(Arc::new(handler)))
    }
}
