//! Configuring a server before it binds: [`Builder`] and its options.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::handler::RequestHandler;
use crate::loops::Kind;
use crate::net::Address;
use crate::net::bind::SocketFile;
use crate::options::Options;
use crate::server::{Parts, Server};
use crate::service::Hooks;
use crate::strategy::{self, Strategy};
use crate::transport::sealed::{Adopt, Bind};
use crate::transport::{BindAddress, DatagramTransport, InetTransport, StreamTransport, Tcp, Transport};

/// Configures a server before it binds: socket options, limits, timeouts,
/// the strategy and the hooks. Get one from [`Server::builder`].
///
/// # Durations
///
/// Every duration the library takes — these settings, the strategies'
/// `keep_alive`, [`ProxyProtocol::header_timeout`](crate::proxy::ProxyProtocol::header_timeout),
/// [`ServerHandle::shutdown_with_grace`](crate::ServerHandle::shutdown_with_grace)
/// and the timeouts of its calls — follows one rule: **`Duration::MAX`
/// means for ever** (no timeout, no deadline; never an overflow), and
/// **`Duration::ZERO` means not at all**: nothing is waited for. So a
/// zero read, write or idle timeout fails a read or write that would wait
/// (Python's timeout of 0: non-blocking), a zero [`timeout`](Self::timeout)
/// makes `handle_request` take only what is already there, a zero grace
/// period or drain window closes at once, and a zero `keep_alive` retires a
/// surplus thread as soon as it is idle. The one exception is
/// [`service_interval`](Self::service_interval), whose zero `bind` refuses.
///
/// # Settings by socket kind
///
/// A setting exists only on the servers it applies to, so that one that
/// would do nothing does not compile (`UdpServer::builder().nodelay(true)`:
/// no method `nodelay`):
///
/// | servers | settings |
/// |---|---|
/// | all | [`strategy`](Self::strategy), [`max_connections`](Self::max_connections), [`timeout`](Self::timeout), [`grace_period`](Self::grace_period), [`drain_window`](Self::drain_window), [`service_interval`](Self::service_interval), the hooks |
/// | TCP and UDP ([`InetTransport`]) | [`reuse_address`](Self::reuse_address), [`reuse_port`](Self::reuse_port) |
/// | TCP only | [`nodelay`](Self::nodelay) |
/// | stream: TCP, Unix stream ([`StreamTransport`]) | [`backlog`](Self::backlog), [`activate`](Self::activate), [`read_timeout`](Self::read_timeout), [`write_timeout`](Self::write_timeout), [`idle_timeout`](Self::idle_timeout), [`read_buffer`](Self::read_buffer), [`write_buffer`](Self::write_buffer), [`proxy_protocol`](Self::proxy_protocol) |
/// | stream, with the `tls` feature | `tls`, `handshake_timeout`, `verify_tls` |
/// | datagram: UDP, Unix datagram ([`DatagramTransport`]) | [`max_datagram_size`](Self::max_datagram_size), [`max_datagram_reply`](Self::max_datagram_reply) |
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use socketserver::servers::Echo;
/// use socketserver::{TcpServer, ThreadPool};
/// use std::time::Duration;
///
/// let server = TcpServer::builder()
///     .strategy(ThreadPool::new(8).max_workers(512))
///     .max_connections(2_000)
///     .idle_timeout(Duration::from_secs(60))
///     .verify_request(|peer| peer.as_inet().is_some_and(|a| a.ip().is_loopback()))
///     .bind("127.0.0.1:0", Echo)?;
/// server.serve_forever()
/// # }
/// ```
#[must_use = "a builder does nothing until `bind` is called"]
pub struct Builder<T: Transport, S = strategy::Synchronous> {
    opts: Options,
    strategy: S,
    hooks: Hooks<T::Request>,
    _transport: PhantomData<fn() -> T>,
}

impl<T: Transport, S: fmt::Debug> fmt::Debug for Builder<T, S> {
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

    /// The concurrency strategy: [`Synchronous`](crate::Synchronous), [`Threading`](crate::Threading),
    /// [`ThreadPool`](crate::ThreadPool), [`Forking`](crate::Forking), [`Event`](crate::Event),
    /// or an [`AnyStrategy`](crate::AnyStrategy) to choose one at run time.
    /// The server keeps it as its type: `Server<T, S2>`.
    pub fn strategy<S2: Strategy>(self, strategy: S2) -> Builder<T, S2> {
        Builder { opts: self.opts, strategy, hooks: self.hooks, _transport: PhantomData }
    }

    /// At most `n` connections (or datagrams) in flight: at the limit the
    /// server stops accepting until one closes; the kernel backlog holds
    /// newcomers and nothing is dropped. Default unlimited.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.opts.max_connections = Some(n.max(1));
        self
    }

    /// How long [`Server::handle_request`] waits before it calls
    /// `handle_timeout` and returns (Python's `timeout`). Default none;
    /// zero: it takes a request already waiting, or times out at once.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.opts.timeout = Some(t);
        self
    }

    /// How long a shutdown lets requests in flight finish before it shuts
    /// their connections down (default 5 s). Python's two settings are the
    /// two ends:
    ///
    /// * `Duration::MAX`: no deadline — the shutdown waits for every request
    ///   to finish however long it takes (Python's `block_on_close = True`);
    /// * `Duration::ZERO`: no wait — every connection is shut down at once,
    ///   forked children killed, and `serve_forever` returns as soon as the
    ///   handlers see it (Python's `daemon_threads = True`, where the
    ///   process's exit ends them).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.opts.grace = grace;
        self
    }

    /// During a shutdown, how long a connection waiting between requests is
    /// still waited on for its next request (default 100 ms; see
    /// [`StreamRequest`](crate::StreamRequest#request-boundaries-and-shutdown)):
    /// a request that raced the signal is served instead of cut, and a quiet
    /// connection closes when the window ends. A datagram server answers
    /// what is already queued on its socket for as long. `Duration::ZERO`:
    /// idle connections close at once; `Duration::MAX`: they are waited on
    /// until the grace period ends.
    pub fn drain_window(mut self, window: Duration) -> Self {
        self.opts.drain_window = window;
        self
    }

    /// How often [`service_actions`](Self::service_actions) runs: at most
    /// once per interval, busy or idle (default 0.5 s, Python's
    /// `poll_interval`). `Duration::MAX`: never; `bind` refuses zero, on
    /// which the loop would spin.
    pub fn service_interval(mut self, every: Duration) -> Self {
        self.opts.service_interval = every;
        self
    }

    /// Python's `verify_request`: called with each peer before its request
    /// is handled; `false` refuses it (a connection is shut down and closed,
    /// a datagram dropped; the handler never runs) and counts it in
    /// `Stats::refused`.
    pub fn verify_request(mut self, f: impl Fn(&Address) -> bool + Send + Sync + 'static) -> Self {
        self.hooks.verify_request = Some(Arc::new(f));
        self
    }

    /// Python's `handle_error(request, client_address)`: called when a
    /// handler fails or panics (a panic arrives as an error whose message
    /// starts with `handler panicked`), with the request — still open, so
    /// the hook can answer on it, e.g. an error line to the client — the
    /// peer and the error. The request is `None` for errors that have no
    /// request (a connection that could not be configured, an oversized
    /// datagram, a thread that could not be started) and under `Forking`,
    /// where the request lives in the child process. The default logs
    /// through `log` at error level, the error's text
    /// [escaped](crate::Escaped) (it may hold what the peer sent). The
    /// server keeps serving either way.
    ///
    /// ```no_run
    /// use socketserver::{Escaped, StreamRequest, TcpServer};
    /// use std::io::Write;
    ///
    /// let server = TcpServer::builder()
    ///     .handle_error(|req, peer, err| {
    ///         log::warn!("{peer}: {}", Escaped::text(&err.to_string()));
    ///         if let Some(req) = req {
    ///             let _ = writeln!(req, "error: {err}");
    ///         }
    ///     })
    ///     .bind("127.0.0.1:0", |req: &mut StreamRequest| {
    ///         Err(std::io::Error::other("not today"))
    ///     })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_error(
        mut self,
        f: impl Fn(Option<&mut T::Request>, &Address, &io::Error) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.handle_error = Some(Arc::new(f));
        self
    }

    /// Python's `handle_timeout`: called when `handle_request` waited
    /// `timeout` for nothing.
    pub fn handle_timeout(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.hooks.handle_timeout = Some(Arc::new(f));
        self
    }

    /// Python's `service_actions`: called on the thread of `serve_forever`
    /// once every [`service_interval`](Self::service_interval) (0.5 s by
    /// default), however many requests come meanwhile, under every strategy
    /// — a periodic hook, for a summary line or housekeeping. A hook or a
    /// request (under `Synchronous`) that runs long delays the next call;
    /// missed calls are not made up. Not called by `handle_request`, nor
    /// during the drain. (Python calls it after each wake-up of its loop,
    /// so as often as requests come.)
    pub fn service_actions(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.hooks.service_actions = Some(Arc::new(f));
        self
    }

    /// Binds (and, unless [`activate(false)`](Self::activate), listens):
    ///
    /// * TCP and UDP: on the first address `addr` resolves to. Port 0 picks
    ///   a free port: see [`Server::server_address`].
    /// * Unix sockets: at the path `addr`. A stale socket file there — one
    ///   no server answers on — is removed first; a live one, or a file
    ///   that is not a socket, is an error. The file is removed when the
    ///   server closes.
    ///
    /// # Errors
    /// An error naming the address and the cause (a [`ContextError`](crate::ContextError)
    /// inside): it cannot be resolved, it is in use, permission is denied...
    pub fn bind<A, H>(self, addr: A, handler: H) -> io::Result<Server<T, S>>
    where
        A: BindAddress<T>,
        H: RequestHandler<T::Request>,
    {
        self.check()?;
        let (endpoint, socket_file) = Bind::<T>::bind(addr, &self.opts)?;
        self.build(endpoint, socket_file, Arc::new(handler))
    }

    /// Serves on a socket bound elsewhere (systemd socket activation, a
    /// `SO_REUSEPORT` sibling, a hand-off on restart): a `TcpListener`, a
    /// `UdpSocket`, a `UnixListener` or a `UnixDatagram`, as the transport
    /// says. A listener should already be listening; the builder's socket
    /// options are not applied to it. When serving stops, the socket is left
    /// as it is (a server that bound its own listener shuts it down so that
    /// newcomers are refused at once): other holders of the same socket go
    /// on using it. A Unix socket's file is left in place.
    ///
    /// # Errors
    /// If it cannot be made non-blocking or has no local address.
    pub fn from_socket<H>(self, socket: T::Socket, handler: H) -> io::Result<Server<T, S>>
    where
        H: RequestHandler<T::Request>,
    {
        self.check()?;
        let endpoint = socket.adopt()?;
        self.build(endpoint, None, Arc::new(handler))
    }

    /// Serves a socket this process was handed
    /// ([`activation::listen_fds`](crate::activation::listen_fds): systemd,
    /// or the process it succeeds), after checking on the descriptor that
    /// it is this server's kind (a listening TCP socket for a TCP server,
    /// ...). As [`from_socket`](Self::from_socket): the socket is left as it
    /// is when serving stops.
    ///
    /// # Errors
    /// `InvalidInput` naming the descriptor when it is another kind of
    /// socket, not listening, or no socket; as `from_socket`.
    pub fn from_inherited<H>(self, socket: crate::activation::Inherited, handler: H) -> io::Result<Server<T, S>>
    where
        H: RequestHandler<T::Request>,
    {
        use crate::transport::sealed::Adopt;
        let fd = socket.expect(<T::Socket as Adopt<T::Request>>::KIND)?;
        self.from_socket(T::Socket::from(fd), handler)
    }

    fn build(
        self,
        endpoint: <T::Request as Kind>::Endpoint,
        socket_file: Option<SocketFile>,
        handler: Arc<dyn RequestHandler<T::Request>>,
    ) -> io::Result<Server<T, S>> {
        Server::assemble(Parts {
            endpoint,
            socket_file,
            handler,
            hooks: self.hooks,
            strategy: self.strategy,
            opts: self.opts,
        })
    }

    /// Refuses settings that cannot work before anything is bound.
    fn check(&self) -> io::Result<()> {
        if self.opts.service_interval.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "service_interval(0): serve_forever would wake without pause; give a positive interval (Duration::MAX: none)",
            ));
        }
        self.strategy.check()
    }
}


impl<T: Transport, S: Strategy> Server<T, S> {
    /// A builder with default options and `S::default()` as the strategy.
    pub fn builder() -> Builder<T, S> {
        Builder::new(S::default())
    }

    /// Binds a server with default options; see [`Builder::bind`].
    ///
    /// # Errors
    /// An error naming the address and the cause.
    pub fn bind<A, H>(addr: A, handler: H) -> io::Result<Self>
    where
        A: BindAddress<T>,
        H: RequestHandler<T::Request>,
    {
        Self::builder().bind(addr, handler)
    }
}

/// Settings of IP sockets: TCP and UDP servers.
impl<T: InetTransport, S: Strategy> Builder<T, S> {
    /// `SO_REUSEADDR`. On by default for TCP, so that a restart never fails
    /// because old connections sit in TIME_WAIT; off by default for UDP,
    /// where on Linux it would let two servers bind the same port and split
    /// its datagrams. TCP and UDP servers only (a Unix socket has no port).
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.opts.reuse_address = Some(on);
        self
    }

    /// `SO_REUSEPORT`: several processes bind the same port and the kernel
    /// spreads connections (or datagrams) among them. Off by default. TCP
    /// and UDP servers only.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.opts.reuse_port = on;
        self
    }
}

/// Settings of TCP servers only.
impl<S: Strategy> Builder<Tcp, S> {
    /// `TCP_NODELAY` on every accepted TCP connection (Python's
    /// `disable_nagle_algorithm`). Default **on**, unlike Python: a
    /// handler's writes are collected ([`write_buffer`](Self::write_buffer)),
    /// so an answer that fits the buffer leaves in one segment either way,
    /// and a longer one does not wait for the peer's delayed ACK (with
    /// Nagle on, a 9 kB answer written in pieces took 44 ms on loopback
    /// against 10 µs: `cargo bench --bench nagle`). TCP servers only (a
    /// Unix stream has no Nagle to turn off).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.opts.nodelay = on;
        self
    }
}

/// Settings of stream servers only (TCP and Unix stream sockets): the
/// listener and the connections.
impl<T: StreamTransport, S: Strategy> Builder<T, S> {
    /// The `listen` backlog: connections the kernel completes while the
    /// server is busy. Default `SOMAXCONN` (Python's default is 5); the
    /// kernel caps it at `net.core.somaxconn`. Stream servers only.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.opts.backlog = backlog.min(i32::MAX as u32) as i32;
        self
    }

    /// Whether `bind` also listens (Python's `bind_and_activate`). With
    /// `false`, call [`Server::server_activate`] before serving (or let
    /// `serve_forever` do it). Default true. Stream servers only (a
    /// datagram socket does not listen).
    pub fn activate(mut self, on: bool) -> Self {
        self.opts.activate = on;
        self
    }

    /// A read that waits longer fails with `ErrorKind::TimedOut`; the
    /// connection stays open. Default none (Python's handler `timeout`);
    /// zero: a read with nothing to take fails at once. Stream servers only.
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.opts.read_timeout = Some(t);
        self
    }

    /// A write that waits longer (a peer that does not read) fails with
    /// `ErrorKind::TimedOut`, "write to PEER timed out after T" — through
    /// the request, or straight to its [`Stream`](crate::Stream). Default
    /// none; zero: a write the socket cannot take at once fails. Stream
    /// servers only (a datagram reply never waits for its peer).
    pub fn write_timeout(mut self, t: Duration) -> Self {
        self.opts.write_timeout = Some(t);
        self
    }

    /// A connection that sends nothing for this long while its handler
    /// waits to read is shut down by the server, the read fails with
    /// `ErrorKind::TimedOut`, and `Stats::idle_closed` counts it. This is
    /// what stops idle clients from pinning workers for ever. With a
    /// shorter [`read_timeout`](Self::read_timeout), reads time out as that
    /// says, and a handler that reads on is closed once the peer has been
    /// silent for the idle timeout in all. Default none; zero: a connection
    /// is closed as soon as its handler would wait for it. Stream servers
    /// only.
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.opts.idle_timeout = Some(t);
        self
    }

    /// The most a connection's read buffer grows to, in bytes (default
    /// 64 KiB). It starts at 2 KiB and doubles only when a read fills it,
    /// so idle and small-message connections use little memory while bulk
    /// transfers get large reads. Stream servers only (a datagram server
    /// reads whole datagrams: [`max_datagram_size`](Self::max_datagram_size)).
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.opts.read_buffer = bytes.max(1);
        self
    }

    /// A handler's writes are collected in a buffer of up to this many bytes
    /// (default 8 KiB), so that an answer written in pieces — each
    /// `write!` argument is a write — leaves as one segment. The buffer is
    /// sent before the server waits for the peer (any read that finds
    /// nothing buffered: `next_line`, `wait_for_data`, ...), when it fills,
    /// on `flush`, after `finish` and after `handle_error`, and before the
    /// socket is handed out ([`StreamRequest::socket`](crate::StreamRequest::socket));
    /// the same under every strategy. A write of at least this many bytes
    /// goes out at once. 0: every write is sent as it is made (Python's
    /// `wbufsize = 0`). Stream servers only (a datagram reply is one
    /// `send`).
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.opts.write_buffer = bytes;
        self
    }

    /// Takes the PROXY protocol (v1 and v2, as HAProxy's `send-proxy` and
    /// `send-proxy-v2` send it) on every connection: the header is read
    /// before `verify_request` and before the handler, which then see the
    /// client the proxy reports ([`StreamRequest::peer_addr`](crate::StreamRequest::peer_addr))
    /// and the address it connected to ([`local_addr`](crate::StreamRequest::local_addr));
    /// a `LOCAL` header (a health check) keeps the proxy's own. Only peers
    /// the policy trusts may send it: others are refused (`Stats::proxy_refused`).
    /// A header that does not come whole within its timeout, or is
    /// malformed, closes the connection (`Stats::proxy_errors`, logged once
    /// per episode). Stream servers only.
    pub fn proxy_protocol(mut self, policy: crate::proxy::ProxyProtocol) -> Self {
        self.opts.proxy = Some(policy);
        self
    }
}

/// TLS on stream servers (feature `tls`): see the [`tls`](crate::tls) module.
#[cfg(feature = "tls")]
impl<T: StreamTransport, S: Strategy> Builder<T, S> {
    /// Every connection is TLS, with this config (from
    /// [`tls::server_config_from_pem`](crate::tls::server_config_from_pem),
    /// or built with rustls; its `alpn_protocols`, client verifier,
    /// versions and session storage are used as they are). The handshake
    /// runs where the request runs — a thread, a pool worker, a forked
    /// child, or parked with no thread under [`Event`](crate::Event) — never
    /// on the accept loop, after the PROXY header if there is one, within
    /// [`handshake_timeout`](Self::handshake_timeout); then `verify_tls`,
    /// then the handler, which reads and writes plaintext as ever and finds
    /// what the handshake settled in [`StreamRequest::tls`](crate::StreamRequest::tls).
    /// A server built with another config (a successor after a SIGHUP
    /// hand-over, with a renewed certificate) uses its own. Stream servers
    /// only.
    pub fn tls(mut self, config: impl Into<Arc<rustls::ServerConfig>>) -> Self {
        self.opts.tls = Some(config.into());
        self
    }

    /// How long a TLS handshake may take from the moment it begins (after
    /// any PROXY header), default 10 s: a client that has not finished it
    /// by then — silent, slow, or stuck half-way — is closed and counted in
    /// `Stats::tls_handshake_failures`. `Duration::MAX`: no limit; zero: only
    /// what is already there is taken. Stream servers only.
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.opts.handshake_timeout = t;
        self
    }

    /// Called with the peer and what its TLS handshake settled (SNI, ALPN,
    /// the client's certificates) once the handshake is done, after
    /// [`verify_request`](Self::verify_request) (which runs before the
    /// handshake, on the peer's address, or on the client a PROXY header
    /// names); `false` refuses the connection (`Stats::refused`), which is
    /// closed with `close_notify` before the handler runs. Stream servers
    /// with TLS only.
    pub fn verify_tls(
        mut self,
        f: impl Fn(&Address, &crate::tls::TlsInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hooks.verify_tls = Some(Arc::new(f));
        self
    }
}

/// Settings of datagram servers only (UDP and Unix datagram sockets).
impl<T: DatagramTransport, S: Strategy> Builder<T, S> {
    /// The longest datagram a datagram server takes. By default what the
    /// transport carries: 65,507 bytes over UDP/IPv4
    /// ([`MAX_UDP_PAYLOAD`](crate::MAX_UDP_PAYLOAD)), 65,527 over UDP/IPv6
    /// ([`MAX_UDP6_PAYLOAD`](crate::MAX_UDP6_PAYLOAD)), 256 KiB for Unix
    /// datagrams ([`MAX_UNIX_DATAGRAM`](crate::MAX_UNIX_DATAGRAM)). A longer
    /// one is reported through `handle_error` with its real size, counted
    /// in `Stats::oversized` and dropped — never cut short and handled as
    /// if whole, as Python does. Datagram servers only.
    pub fn max_datagram_size(mut self, bytes: usize) -> Self {
        self.opts.max_datagram_size = Some(bytes.max(1));
        self
    }

    /// Lets datagram replies of up to `bytes` go out whatever their request
    /// (default 0: none beyond the amplification bound). A UDP request's
    /// sender address can be forged: a server whose answer is far larger
    /// than the question lets anyone aim its answers at a third party
    /// (amplification). So by default
    /// [`DatagramRequest::reply`](crate::DatagramRequest::reply) refuses a
    /// reply whose size on the wire (IP and UDP headers included) is more
    /// than 3 times its request's, as QUIC bounds what it sends to an
    /// address it has not validated (RFC 9000 §8.1): for a 4-byte request
    /// over IPv4, 68 bytes of payload. Set this for clients you trust, on a
    /// network where sources cannot be forged; the limit is then the larger
    /// of the two ([`DatagramRequest::max_reply`](crate::DatagramRequest::max_reply)).
    /// Datagram servers only.
    pub fn max_datagram_reply(mut self, bytes: usize) -> Self {
        self.opts.max_datagram_reply = bytes;
        self
    }
}

/// Each kind-specific setting compiles on the servers it applies to and on
/// no other. For every setting, the same line is a doctest that compiles
/// on each server of the right kind and a `compile_fail` one, whose error
/// must be E0599 (no such method on that builder), on each server of a
/// wrong kind: the two differ only in the server's name, so the failure can
/// only be the kind.
#[cfg(doctest)]
mod kind_checks {
    macro_rules! kind_checks {
        ($($name:ident: $call:literal, right [$($right:ident),+], wrong [$($wrong:ident),+];)*) => {$(
            #[doc = concat!(
                $("```\nlet _ = socketserver::", stringify!($right),
                  "::builder().strategy(socketserver::ThreadPool::new(2)).", $call, ";\n```\n",)+
                $("```compile_fail,E0599\nlet _ = socketserver::", stringify!($wrong),
                  "::builder().strategy(socketserver::ThreadPool::new(2)).", $call, ";\n```\n",)+
            )]
            pub struct $name;
        )*};
    }

    kind_checks! {
        ReuseAddress: "reuse_address(true)", right [TcpServer, UdpServer], wrong [UnixStreamServer, UnixDatagramServer];
        ReusePort: "reuse_port(true)", right [TcpServer, UdpServer], wrong [UnixStreamServer, UnixDatagramServer];
        Nodelay: "nodelay(false)", right [TcpServer], wrong [UdpServer, UnixStreamServer, UnixDatagramServer];
        Backlog: "backlog(16)", right [TcpServer, UnixStreamServer], wrong [UdpServer, UnixDatagramServer];
        Activate: "activate(false)", right [TcpServer, UnixStreamServer], wrong [UdpServer, UnixDatagramServer];
        ReadTimeout: "read_timeout(std::time::Duration::from_secs(1))",
            right [TcpServer, UnixStreamServer], wrong [UdpServer, UnixDatagramServer];
        WriteTimeout: "write_timeout(std::time::Duration::from_secs(1))",
            right [TcpServer, UnixStreamServer], wrong [UdpServer, UnixDatagramServer];
        IdleTimeout: "idle_timeout(std::time::Duration::from_secs(1))",
            right [TcpServer, UnixStreamServer], wrong [UdpServer, UnixDatagramServer];
        ReadBuffer: "read_buffer(4096)", right [TcpServer, UnixStreamServer], wrong [UdpServer, UnixDatagramServer];
        WriteBuffer: "write_buffer(0)", right [TcpServer, UnixStreamServer], wrong [UdpServer, UnixDatagramServer];
        ProxyProtocol: "proxy_protocol(socketserver::proxy::ProxyProtocol::trusting(|_| true))",
            right [TcpServer, UnixStreamServer], wrong [UdpServer, UnixDatagramServer];
        MaxDatagramSize: "max_datagram_size(512)", right [UdpServer, UnixDatagramServer], wrong [TcpServer, UnixStreamServer];
        MaxDatagramReply: "max_datagram_reply(1200)", right [UdpServer, UnixDatagramServer], wrong [TcpServer, UnixStreamServer];
    }

    /// The TLS settings (feature `tls`) exist on stream servers only:
    ///
    /// ```no_run
    /// # fn config() -> socketserver::tls::rustls::ServerConfig { unimplemented!() }
    /// let _ = socketserver::TcpServer::builder().tls(config()).handshake_timeout(std::time::Duration::from_secs(1));
    /// let _ = socketserver::UnixStreamServer::builder().tls(config()).verify_tls(|_, _| true);
    /// ```
    /// ```compile_fail,E0599
    /// # fn config() -> socketserver::tls::rustls::ServerConfig { unimplemented!() }
    /// let _ = socketserver::UdpServer::builder().tls(config());
    /// ```
    /// ```compile_fail,E0599
    /// # fn config() -> socketserver::tls::rustls::ServerConfig { unimplemented!() }
    /// let _ = socketserver::UnixDatagramServer::builder().tls(config());
    /// ```
    /// ```compile_fail,E0599
    /// let _ = socketserver::UdpServer::builder().handshake_timeout(std::time::Duration::from_secs(1));
    /// ```
    #[cfg(feature = "tls")]
    pub struct Tls;
}
