//! The generic server: its builder, `serve_forever`, `handle_request` and the
//! hooks Python lets a subclass override.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{Shutdown, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{SockRef, Type};

use crate::accept::{self, Action, Backoff};
use crate::address::Address;
use crate::handler::{DatagramRequest, DatagramSocket, RequestHandler, Stream, StreamPolicy, StreamRequest};
use crate::service::{AnyHandler, Hooks, Job, Service};
use crate::shutdown::{ServerHandle, Shared};
use crate::stats::{Counters, Stats};
use crate::strategy::{self, AnyStrategy, Executor, Strategy, ThreadPool};
use crate::sys;
use crate::transport::{
    self, BindOptions, Endpoint, Listener, SocketFile, Tcp, Transport, Udp, UnixDatagram, UnixStream,
};

/// The largest UDP payload over IPv4 (65,535 − 8 − 20): the default
/// [`max_datagram_size`](Builder::max_datagram_size).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// How many connections or datagrams the loop takes per wake-up before it
/// looks at the shutdown flag and the hooks again.
const BATCH: usize = 64;

#[derive(Clone, Debug)]
pub(crate) struct Options {
    reuse_address: Option<bool>,
    reuse_port: bool,
    backlog: i32,
    activate: bool,
    nodelay: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_datagram_size: usize,
    max_connections: Option<usize>,
    timeout: Option<Duration>,
    grace: Duration,
    service_interval: Option<Duration>,
    read_buffer: usize,
    write_buffer: usize,
    datagram_handoff: bool,
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
            read_buffer: 8 * 1024,
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
/// use socketserver::{StreamRequest, TcpServer, ThreadPool};
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
///
/// let server = TcpServer::builder()
///     .strategy(ThreadPool::new(NonZeroUsize::new(8).unwrap()).max_workers(NonZeroUsize::new(512).unwrap()))
///     .max_connections(2_000)
///     .idle_timeout(Duration::from_secs(60))
///     .verify_request(|peer| peer.as_inet().is_some_and(|a| a.ip().is_loopback()))
///     .bind("127.0.0.1:0", |req: &mut StreamRequest| {
///         std::io::copy(&mut std::io::BufRead::fill_buf(req)?.to_vec().as_slice(), req)?;
///         Ok(())
///     })?;
/// # Ok(()) }
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
    fn new(strategy: S) -> Self {
        Builder { opts: Options::default(), strategy, hooks: Hooks::default(), _transport: PhantomData }
    }

    /// The concurrency strategy: [`Sync`](crate::Sync), [`Threading`](crate::Threading),
    /// [`ThreadPool`], [`Forking`](crate::Forking) or an [`AnyStrategy`].
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
    /// what stops idle clients from pinning workers for ever. Default none.
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

    /// The read buffer of each connection, in bytes (default 8 KiB).
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
        let address = endpoint.local_addr()?;
        let shared = Shared::new(self.opts.grace, format!("{} {}", T::NAME, address))?;
        let service = Arc::new(Service { handler, hooks: self.hooks, shared: Arc::clone(&shared) });
        Ok(Server {
            endpoint,
            address,
            service,
            shared,
            strategy: strategy::to_any(&self.strategy),
            opts: self.opts,
            executor: Mutex::new(None),
            serving: AtomicBool::new(false),
            listening: AtomicBool::new(listening),
            rebind: AtomicBool::new(false),
            fatal: Arc::new(Mutex::new(None)),
            _socket_file: socket_file,
            _marker: PhantomData,
        })
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
    /// listening; the builder's socket options are not applied to it.
    ///
    /// # Errors
    /// If it cannot be made non-blocking or has no local address.
    pub fn from_listener<H: RequestHandler<StreamRequest>>(
        self,
        listener: TcpListener,
        handler: H,
    ) -> io::Result<Server<Tcp, S>> {
        listener.set_nonblocking(true)?;
        self.build(Endpoint::Stream(Listener::Tcp(listener)), AnyHandler::Stream(Arc::new(handler)), None, true)
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
        self.build(Endpoint::Datagram(socket), AnyHandler::Datagram(Arc::new(handler)), None, true)
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
        self.build(Endpoint::Stream(Listener::Unix(listener)), AnyHandler::Stream(Arc::new(handler)), None, true)
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
        self.build(Endpoint::Datagram(socket), AnyHandler::Datagram(Arc::new(handler)), None, true)
    }
}

/// A server: one socket of kind `T` ([`Tcp`], [`Udp`], [`UnixStream`],
/// [`UnixDatagram`]) served with strategy `S`.
///
/// Usually named through an alias: [`TcpServer`](crate::TcpServer),
/// [`ThreadingTcpServer`](crate::ThreadingTcpServer), ... Create one with
/// `bind` (defaults) or [`builder`](Self::builder) (options), run it with
/// [`serve_forever`](Self::serve_forever), stop it through a
/// [`ServerHandle`]. Dropping the server closes its socket and removes its
/// Unix socket file.
pub struct Server<T, S = strategy::Sync> {
    endpoint: Endpoint,
    address: Address,
    service: Arc<Service>,
    shared: Arc<Shared>,
    strategy: AnyStrategy,
    opts: Options,
    /// The strategy started by `handle_request`, kept between calls.
    executor: Mutex<Option<Executor>>,
    serving: AtomicBool,
    listening: AtomicBool,
    /// The TCP listener was shut down and must be bound again to listen.
    rebind: AtomicBool,
    /// A fatal error from a datagram receiver thread.
    fatal: Arc<Mutex<Option<io::Error>>>,
    _socket_file: Option<SocketFile>,
    _marker: PhantomData<fn() -> (T, S)>,
}

impl<T, S> fmt::Debug for Server<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl<S: Strategy> Server<Tcp, S> {
    /// Binds a TCP server with default options; see [`Builder::bind`](Builder#method.bind).
    ///
    /// # Errors
    /// An error naming the address and the cause.
    pub fn bind<A, H>(addr: A, handler: H) -> io::Result<Self>
    where
        A: ToSocketAddrs + fmt::Debug,
        H: RequestHandler<StreamRequest>,
    {
        Self::builder().bind(addr, handler)
    }
}

impl<S: Strategy> Server<Udp, S> {
    /// Binds a UDP server with default options.
    ///
    /// # Errors
    /// An error naming the address and the cause.
    pub fn bind<A, H>(addr: A, handler: H) -> io::Result<Self>
    where
        A: ToSocketAddrs + fmt::Debug,
        H: RequestHandler<DatagramRequest>,
    {
        Self::builder().bind(addr, handler)
    }
}

impl<S: Strategy> Server<UnixStream, S> {
    /// Binds a Unix-stream server with default options.
    ///
    /// # Errors
    /// An error naming the path and the cause.
    pub fn bind<P: AsRef<Path>, H: RequestHandler<StreamRequest>>(path: P, handler: H) -> io::Result<Self> {
        Self::builder().bind(path, handler)
    }
}

impl<S: Strategy> Server<UnixDatagram, S> {
    /// Binds a Unix-datagram server with default options.
    ///
    /// # Errors
    /// An error naming the path and the cause.
    pub fn bind<P: AsRef<Path>, H: RequestHandler<DatagramRequest>>(path: P, handler: H) -> io::Result<Self> {
        Self::builder().bind(path, handler)
    }
}

impl<T: Transport, S: Strategy> Server<T, S> {
    /// A builder with default options and `S::default()` as the strategy.
    pub fn builder() -> Builder<T, S> {
        Builder::new(S::default())
    }

    /// The address the server is bound to, with port 0 resolved to the real port.
    pub fn server_address(&self) -> &Address {
        &self.address
    }

    /// A handle to stop the server or read its counters from anywhere.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: Arc::clone(&self.shared) }
    }

    /// Same as `self.handle().shutdown()`.
    pub fn shutdown(&self) {
        self.handle().shutdown();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// The strategy this server runs.
    pub fn strategy(&self) -> &AnyStrategy {
        &self.strategy
    }

    /// Starts listening, for a server built with `activate(false)` (Python's
    /// `server_activate`). Does nothing if it already listens.
    ///
    /// # Errors
    /// As `listen(2)`.
    pub fn server_activate(&self) -> io::Result<()> {
        if let Endpoint::Stream(l) = &self.endpoint
            && !self.listening.load(SeqCst)
        {
            let listen = || {
                if let (true, Some(addr)) = (self.rebind.load(SeqCst), self.address.as_inet()) {
                    SockRef::from(l).bind(&addr.into())?;
                }
                l.listen(self.opts.backlog)
            };
            listen().map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", self.address)))?;
            self.rebind.store(false, SeqCst);
            self.listening.store(true, SeqCst);
        }
        Ok(())
    }

    /// Serves until a [`ServerHandle::shutdown`], then drains: requests in
    /// flight finish within the grace period, then their connections are
    /// shut down; it returns when every worker, thread and child is done.
    ///
    /// The loop blocks until the socket is readable or the handle wakes it;
    /// it never polls on a timer.
    ///
    /// # Errors
    /// When `serve_forever` is already running on another thread; when an
    /// accept error is neither transient nor a resource shortage (those are
    /// skipped or backed off); when the strategy cannot start its threads.
    pub fn serve_forever(&self) -> io::Result<()> {
        let _serving = self.begin_serving()?;
        self.server_activate()?;
        let result = match (&self.endpoint, &self.strategy) {
            (Endpoint::Datagram(socket), AnyStrategy::ThreadPool(pool)) if !self.opts.datagram_handoff => {
                self.serve_datagram_workers(socket, pool)
            }
            (endpoint, _) => {
                let executor = match self.executor.lock().take() {
                    Some(e) => e,
                    None => Executor::start(&self.strategy, &self.service)?,
                };
                let result = match endpoint {
                    Endpoint::Stream(listener) => self.stream_loop(listener, &executor),
                    Endpoint::Datagram(socket) => self.datagram_loop(socket, &executor),
                };
                if !self.shared.stopping() {
                    self.shared.request_stop(self.opts.grace);
                }
                self.stop_listening();
                executor.finish(&self.service);
                result
            }
        };
        self.shared.reset();
        result
    }

    /// Waits for and handles one request (Python's `handle_request`),
    /// through the strategy: under `Threading` it may still be running when
    /// this returns. Waits at most [`timeout`](Builder::timeout), then calls
    /// `handle_timeout`; returns at once if a shutdown is under way.
    ///
    /// # Errors
    /// While `serve_forever` runs; on a fatal accept or receive error.
    pub fn handle_request(&self) -> io::Result<()> {
        let _serving = self.begin_serving()?;
        self.server_activate()?;
        let mut slot = self.executor.lock();
        if slot.is_none() {
            *slot = Some(Executor::start(&self.strategy, &self.service)?);
        }
        let Some(executor) = slot.as_ref() else { unreachable!("started above") };
        executor.reap();
        let deadline = self.opts.timeout.map(|t| Instant::now() + t);
        let fds = [self.endpoint.fd(), self.shared.waker.stop_fd()];
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let mut ready = [false; 2];
            if sys::poll(&fds, &mut ready, left)? == 0 {
                self.service.call_hook(&self.service.hooks.handle_timeout, "handle_timeout");
                return Ok(());
            }
            if !ready[0] {
                continue;
            }
            let taken = match &self.endpoint {
                Endpoint::Stream(listener) => self.accept_one(listener, executor),
                Endpoint::Datagram(socket) => self.receive_one(socket, executor, &mut None),
            };
            match taken {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => match accept::classify(&e) {
                    Action::Fatal => return Err(self.fatal_error(e)),
                    _ => log::warn!("{}: {e}", self.shared.name),
                },
            }
        }
    }

    /// Closes the server (Python's `server_close`): finishes requests that
    /// `handle_request` started, closes the socket, removes the Unix socket
    /// file. Dropping the server does the same.
    pub fn server_close(self) {}

    fn begin_serving(&self) -> io::Result<ServingGuard<'_>> {
        if self.serving.swap(true, SeqCst) {
            return Err(io::Error::new(io::ErrorKind::ResourceBusy, format!("{}: already serving", self.shared.name)));
        }
        Ok(ServingGuard(&self.serving))
    }

    fn can_accept(&self, executor: &Executor) -> bool {
        let active = self.shared.stats.active.load(SeqCst);
        self.opts.max_connections.is_none_or(|max| active < max) && executor.has_capacity()
    }

    fn stream_loop(&self, listener: &Listener, executor: &Executor) -> io::Result<()> {
        let shared = &self.shared;
        let fds = [listener.as_raw_fd(), shared.waker.stop_fd(), shared.waker.notify_fd()];
        let mut backoff = Backoff::default();
        loop {
            if shared.stopping() {
                return Ok(());
            }
            executor.reap();
            if !self.can_accept(executor) {
                shared.wait_for_capacity(|| self.can_accept(executor))?;
                continue;
            }
            let mut ready = [false; 3];
            sys::poll(&fds, &mut ready, self.opts.service_interval)?;
            if ready[2] {
                shared.waker.drain_notify();
            }
            if ready[0] {
                self.accept_batch(listener, executor, &mut backoff)?;
            }
            self.service.call_hook(&self.service.hooks.service_actions, "service_actions");
        }
    }

    fn accept_batch(&self, listener: &Listener, executor: &Executor, backoff: &mut Backoff) -> io::Result<()> {
        for _ in 0..BATCH {
            if self.shared.stopping() || !self.can_accept(executor) {
                return Ok(());
            }
            match self.accept_one(listener, executor) {
                Ok(_) => {
                    if backoff.in_episode() {
                        let errors = backoff.reset();
                        log::warn!("{}: accepting again after {errors} error(s)", self.shared.name);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    if !self.on_accept_error(e, backoff)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts and sorts an accept/receive error; returns whether to go on at
    /// once (`false` after a back-off pause), or the error if it is fatal.
    fn on_accept_error(&self, e: io::Error, backoff: &mut Backoff) -> io::Result<bool> {
        Counters::bump(&self.shared.stats.accept_errors);
        match accept::classify(&e) {
            Action::Skip => {
                log::debug!("{}: skipping a failed accept: {e}", self.shared.name);
                Ok(true)
            }
            Action::BackOff => {
                let (wait, first) = backoff.step();
                if first {
                    log::warn!(
                        "{}: accept failed: {e}; backing off (5 ms doubling to 1 s) until it succeeds",
                        self.shared.name
                    );
                }
                let mut ready = [false];
                sys::poll(&[self.shared.waker.stop_fd()], &mut ready, Some(wait))?;
                Ok(false)
            }
            Action::Fatal => Err(self.fatal_error(e)),
        }
    }

    fn fatal_error(&self, e: io::Error) -> io::Error {
        log::error!("{}: giving up: {e}", self.shared.name);
        io::Error::new(e.kind(), format!("{}: {e}", self.shared.name))
    }

    /// Accepts one connection and hands it to the strategy. `Ok(false)`: it
    /// was refused or could not be configured.
    fn accept_one(&self, listener: &Listener, executor: &Executor) -> io::Result<bool> {
        let (stream, peer) = listener.accept()?;
        let shared = &self.shared;
        Counters::bump(&shared.stats.accepted);
        if !self.service.verify(&peer) {
            Counters::bump(&shared.stats.refused);
            log::debug!("{}: refused {peer}", shared.name);
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(false);
        }
        let policy = match self.configure(&stream) {
            Ok(p) => p,
            Err(e) => {
                self.service
                    .handle_error(&peer, &io::Error::new(e.kind(), format!("cannot configure the connection: {e}")));
                return Ok(false);
            }
        };
        shared.track(stream.as_raw_fd());
        let request = StreamRequest::new(stream, peer, self.handle(), policy, shared.acquire());
        if shared.stopping() {
            // Taken from the backlog during a drain: the deadline applies.
            shared.ensure_watchdog();
        }
        executor.dispatch(Job::Stream(request));
        Ok(true)
    }

    fn configure(&self, stream: &Stream) -> io::Result<StreamPolicy> {
        let o = &self.opts;
        if let (true, Stream::Tcp(s)) = (o.nodelay, stream) {
            s.set_nodelay(true)?;
        }
        let receive = match (o.read_timeout, o.idle_timeout) {
            (Some(r), Some(i)) => Some(r.min(i)),
            (r, i) => r.or(i),
        };
        if receive.is_some() {
            stream.set_read_timeout(receive)?;
        }
        if o.write_timeout.is_some() {
            stream.set_write_timeout(o.write_timeout)?;
        }
        let idle = o.idle_timeout.filter(|i| o.read_timeout.is_none_or(|r| *i <= r));
        Ok(StreamPolicy { idle, receive_timeout: receive, read_buffer: o.read_buffer, write_buffer: o.write_buffer })
    }

    /// After the loop: refuse new TCP connections at once (those still in
    /// the kernel's backlog are reset) rather than leave clients hanging
    /// until the socket closes.
    fn stop_listening(&self) {
        let Endpoint::Stream(listener) = &self.endpoint else { return };
        if let Listener::Tcp(l) = listener {
            // Linux answers SYNs to a shut-down listener with a reset, and
            // frees its port: `server_activate` binds it again.
            if SockRef::from(l).shutdown(Shutdown::Read).is_ok() {
                self.listening.store(false, SeqCst);
                self.rebind.store(true, SeqCst);
            }
        }
    }

    fn datagram_buffer(&self) -> Vec<u8> {
        // One byte more than the limit, so that even without MSG_TRUNC an
        // oversized datagram shows as longer than the limit.
        vec![0; self.opts.max_datagram_size + 1]
    }

    fn datagram_loop(&self, socket: &Arc<DatagramSocket>, executor: &Executor) -> io::Result<()> {
        let shared = &self.shared;
        let fds = [socket.as_raw_fd(), shared.waker.stop_fd(), shared.waker.notify_fd()];
        let mut scratch = None;
        let mut backoff = Backoff::default();
        loop {
            if shared.stopping() {
                return Ok(());
            }
            executor.reap();
            if !self.can_accept(executor) {
                shared.wait_for_capacity(|| self.can_accept(executor))?;
                continue;
            }
            let mut ready = [false; 3];
            sys::poll(&fds, &mut ready, self.opts.service_interval)?;
            if ready[2] {
                shared.waker.drain_notify();
            }
            if ready[0] {
                for _ in 0..BATCH {
                    if shared.stopping() || !self.can_accept(executor) {
                        break;
                    }
                    match self.receive_one(socket, executor, &mut scratch) {
                        Ok(_) => {
                            backoff.reset();
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            if !self.on_accept_error(e, &mut backoff)? {
                                break;
                            }
                        }
                    }
                }
            }
            self.service.call_hook(&self.service.hooks.service_actions, "service_actions");
        }
    }

    /// Receives one datagram into `scratch` and handles it there (`Sync`)
    /// or hands a copy to the strategy. `Ok(false)`: dropped.
    fn receive_one(
        &self,
        socket: &Arc<DatagramSocket>,
        executor: &Executor,
        scratch: &mut Option<DatagramRequest>,
    ) -> io::Result<bool> {
        let req = scratch
            .get_or_insert_with(|| DatagramRequest::new(self.datagram_buffer(), Arc::clone(socket), self.handle()));
        if !self.receive_into(socket, req)? {
            return Ok(false);
        }
        if let Executor::Sync(_) = executor {
            let AnyHandler::Datagram(h) = &self.service.handler else { unreachable!("datagram server") };
            req.slot = Some(self.shared.acquire());
            self.service.run_datagram(h.as_ref(), req);
            req.slot = None;
        } else {
            let mut job = DatagramRequest::new(req.data().to_vec(), Arc::clone(socket), self.handle());
            job.len = req.len;
            job.peer_raw = req.peer_raw.clone();
            job.peer = req.peer.clone();
            job.slot = Some(self.shared.acquire());
            executor.dispatch(Job::Datagram(job));
        }
        Ok(true)
    }

    /// Receives into `req`; `Ok(false)` when the datagram was oversized or refused.
    fn receive_into(&self, socket: &DatagramSocket, req: &mut DatagramRequest) -> io::Result<bool> {
        receive_into(&self.service, self.opts.max_datagram_size, socket, req)
    }

    /// `ThreadPool` on a datagram socket: the workers receive themselves.
    fn serve_datagram_workers(&self, socket: &Arc<DatagramSocket>, pool: &ThreadPool) -> io::Result<()> {
        let shared = &self.shared;
        // Each receiver handles one datagram at a time: capping receivers
        // at `max_connections` caps datagrams in flight.
        let receivers = self.opts.max_connections.map_or(pool.min, |max| pool.min.min(max));
        let mut handles = Vec::with_capacity(receivers);
        for id in 0..receivers {
            let worker = DatagramWorker {
                service: Arc::clone(&self.service),
                socket: Arc::clone(socket),
                request: DatagramRequest::new(self.datagram_buffer(), Arc::clone(socket), self.handle()),
                max: self.opts.max_datagram_size,
                fatal: Arc::clone(&self.fatal),
            };
            shared.stats.workers_total.fetch_add(1, SeqCst);
            match strategy::spawn(shared, &format!("socketserver-udp-{id}"), pool.stack_size, move || worker.run()) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.stats.workers_total.fetch_sub(1, SeqCst);
                    shared.request_stop(Duration::ZERO);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(io::Error::new(e.kind(), format!("{}: cannot start pool workers: {e}", shared.name)));
                }
            }
        }
        let mut ready = [false];
        while !shared.stopping() {
            sys::poll(&[shared.waker.stop_fd()], &mut ready, None)?;
        }
        let done = shared.wait_drained(|| shared.threads.load(SeqCst) == 0);
        for h in handles {
            if done || h.is_finished() {
                let _ = h.join();
            }
        }
        match self.fatal.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<T, S> AsRawFd for Server<T, S> {
    /// The listening (or datagram) socket: Python's `fileno()`.
    fn as_raw_fd(&self) -> RawFd {
        self.endpoint.fd()
    }
}

impl<T, S> Drop for Server<T, S> {
    fn drop(&mut self) {
        if let Some(executor) = self.executor.get_mut().take() {
            self.shared.request_stop(self.opts.grace);
            executor.finish(&self.service);
            self.shared.reset();
        }
    }
}

struct ServingGuard<'a>(&'a AtomicBool);

impl Drop for ServingGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
    }
}

/// Receives one datagram into `req` without blocking; `Ok(false)` when it
/// was oversized (reported) or refused by `verify_request`.
fn receive_into(service: &Service, max: usize, socket: &DatagramSocket, req: &mut DatagramRequest) -> io::Result<bool> {
    let (len, from) = sys::recv_from_dontwait(SockRef::from(socket), &mut req.buf)?;
    let stats = &service.shared.stats;
    Counters::bump(&stats.accepted);
    let peer = Address::from_sockaddr(&from);
    if len > max {
        Counters::bump(&stats.oversized);
        let shown = if len > req.buf.len() { format!("{len} bytes") } else { format!("more than {max} bytes") };
        let err = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("datagram of {shown} exceeds max_datagram_size ({max} bytes); dropped unhandled"),
        );
        service.handle_error(&peer, &err);
        return Ok(false);
    }
    if !service.verify(&peer) {
        Counters::bump(&stats.refused);
        return Ok(false);
    }
    req.len = len;
    req.peer_raw = from;
    req.peer = peer;
    Ok(true)
}

/// A pool worker that receives datagrams itself.
struct DatagramWorker {
    service: Arc<Service>,
    socket: Arc<DatagramSocket>,
    request: DatagramRequest,
    max: usize,
    fatal: Arc<Mutex<Option<io::Error>>>,
}

impl DatagramWorker {
    fn run(mut self) {
        let shared = Arc::clone(&self.service.shared);
        let AnyHandler::Datagram(handler) = self.service.handler.clone() else { unreachable!("datagram server") };
        let fds = [self.socket.as_raw_fd(), shared.waker.stop_fd()];
        let mut backoff = Backoff::default();
        'serve: while !shared.stopping() {
            let mut ready = [false; 2];
            if let Err(e) = sys::poll(&fds, &mut ready, None) {
                self.fail(e);
                break;
            }
            for _ in 0..BATCH {
                if shared.stopping() {
                    break 'serve;
                }
                match receive_into(&self.service, self.max, &self.socket, &mut self.request) {
                    Ok(false) => {}
                    Ok(true) => {
                        backoff.reset();
                        self.request.slot = Some(shared.acquire());
                        shared.stats.workers_busy.fetch_add(1, SeqCst);
                        self.service.run_datagram(handler.as_ref(), &mut self.request);
                        shared.stats.workers_busy.fetch_sub(1, SeqCst);
                        self.request.slot = None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        Counters::bump(&shared.stats.accept_errors);
                        match accept::classify(&e) {
                            Action::Skip => {}
                            Action::BackOff => {
                                let (wait, first) = backoff.step();
                                if first {
                                    log::warn!("{}: receive failed: {e}; backing off", shared.name);
                                }
                                let _ = sys::poll(&fds[1..], &mut ready[..1], Some(wait));
                                break;
                            }
                            Action::Fatal => {
                                self.fail(e);
                                break 'serve;
                            }
                        }
                    }
                }
            }
        }
        shared.stats.workers_total.fetch_sub(1, SeqCst);
    }

    fn fail(&self, e: io::Error) {
        let shared = &self.service.shared;
        log::error!("{}: giving up: {e}", shared.name);
        self.fatal.lock().get_or_insert(io::Error::new(e.kind(), format!("{}: {e}", shared.name)));
        shared.request_stop(shared.grace);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::strategy::Threading;

    /// Port of CPython's test_threads_reaped: finished request threads are
    /// joined as the server goes, not kept until `server_close`.
    #[test]
    fn finished_request_threads_are_joined_as_the_server_goes() {
        let server = Server::<Tcp, Threading>::bind("127.0.0.1:0", |req: &mut StreamRequest| {
            std::io::Write::write_all(req, b"x")
        })
        .unwrap();
        let addr = server.server_address().as_inet().unwrap();
        for _ in 0..50 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            server.handle_request().unwrap();
            // The thread has answered and closed before the next request.
            c.read_to_end(&mut Vec::new()).unwrap();
        }
        let guard = server.executor.lock();
        let Some(Executor::Threading(threads)) = guard.as_ref() else { panic!("no threading executor") };
        // Only the threads of the last request or two (which may not have
        // reported themselves done when the next reap ran) may remain.
        assert!(threads.unjoined() <= 2, "{} threads kept", threads.unjoined());
    }
}
