//! `socketserver echo` and `socketserver time`: bind every listener asked
//! for, print where each listens, serve until SIGINT/SIGTERM, drain, exit.

use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use socketserver::activation::{self, Inherited, SocketKind};
use socketserver::proxy::ProxyProtocol;
use socketserver::servers::{Echo, Strftime};
use socketserver::transport::{Tcp, Udp, UnixDatagram, UnixStream};
use socketserver::{
    Address, AnyStrategy, Builder, DatagramRequest, RequestHandler, Server, ServerHandle, StreamRequest,
};
use socketserver::{DatagramTransport, StreamTransport, Transport};

use crate::restart::SocketFile;

#[derive(Clone, Copy, Debug)]
pub enum Bundled {
    Echo,
    /// The echo server, but a request whose first byte is `S` sleeps this
    /// long first (`--bench-sleep-slow`).
    MixedEcho(Duration, bool),
    /// With the time a stream client has to send one whole request line.
    Time(Duration),
}

impl Bundled {
    fn default_port(self) -> u16 {
        match self {
            Bundled::Echo | Bundled::MixedEcho(..) => 9999,
            Bundled::Time(_) => 9000,
        }
    }
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// For benchmarks (`bench tcp-mixed`): a request whose first byte is
    /// `S` sleeps MS milliseconds before its echo, standing for a blocking
    /// call (a database, a disk) in a handler.
    #[arg(long, value_name = "MS", hide = true, value_parser = crate::bench::parse_ms)]
    pub bench_sleep_slow: Option<Duration>,
    /// With `--bench-sleep-slow`: the sleep runs inside
    /// `StreamRequest::blocking`, which tells the strategy first.
    #[arg(long, hide = true, requires = "bench_sleep_slow")]
    pub bench_hint: bool,
}

impl EchoArgs {
    pub fn bundled(&self) -> Bundled {
        self.bench_sleep_slow.map_or(Bundled::Echo, |sleep| Bundled::MixedEcho(sleep, self.bench_hint))
    }
}

#[derive(Debug, Args)]
pub struct TimeArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A TCP or Unix-stream client must send each request line whole within
    /// SECS of its first byte, or it gets an `error:` line and is closed.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "30")]
    pub request_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    listeners: Listeners,
    #[command(flatten)]
    pub options: ServerOptions,
    /// On SIGHUP a successor (this program, these arguments) is started
    /// with the listening sockets; it has SECS to say it serves, else it is
    /// stopped and this process goes on serving.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "10")]
    restart_timeout: Duration,
}

/// Where to listen; repeatable, all served at once by one process.
#[derive(Debug, Args)]
pub struct Listeners {
    /// Serve TCP on ADDR (host:port, IPv6 as [::1]:port; port 0: any free port).
    #[arg(long = "tcp", value_name = "ADDR")]
    tcp: Vec<String>,
    /// Serve UDP on ADDR (always plaintext: the --tls-* flags are for the
    /// TCP and Unix-stream listeners).
    #[arg(long = "udp", value_name = "ADDR")]
    udp: Vec<String>,
    /// Serve a Unix stream socket at PATH (a stale socket file is replaced;
    /// the file is removed on exit).
    #[arg(long = "unix", value_name = "PATH")]
    unix: Vec<PathBuf>,
    /// Serve a Unix datagram socket at PATH (always plaintext).
    #[arg(long = "unix-dgram", value_name = "PATH")]
    unix_dgram: Vec<PathBuf>,
}

/// `--strategy`, as the library reads a strategy (`AnyStrategy`'s
/// `FromStr`); forking is not offered.
#[derive(Clone, Debug)]
pub struct StrategyArg {
    strategy: AnyStrategy,
    /// With parentheses (`pool(4-64)`): taken as written, without the
    /// command's defaults or its --workers, --max-workers and --queue.
    written: bool,
}

impl FromStr for StrategyArg {
    type Err = String;

    fn from_str(s: &str) -> Result<StrategyArg, String> {
        let strategy: AnyStrategy = s.parse().map_err(|e: socketserver::ParseStrategyError| e.to_string())?;
        if let AnyStrategy::Forking(_) = strategy {
            // Its log writer is a thread, which a forked child has not.
            return Err(format!("{s:?}: the command does not fork; give sync, threading, pool or event"));
        }
        Ok(StrategyArg { strategy, written: s.contains('(') })
    }
}

#[derive(Debug, Args)]
pub struct ServerOptions {
    /// Concurrency strategy: `event` (the default: an idle connection costs
    /// no thread, and it is the cheapest per request, BENCHMARKS.md),
    /// `pool`, `threading` (a thread per connection) or `sync` (one request
    /// at a time, as Python's plain TCPServer: a client that connects and
    /// sends nothing holds up all the rest for ever, or until
    /// --idle-timeout). Or written with its counts and settings as the
    /// library reads it, e.g. 'pool(4-64 queue=128)', 'event(2-32)',
    /// 'threading(500)': taken as written, without --workers,
    /// --max-workers and --queue.
    #[arg(long, value_name = "STRATEGY", default_value = "event")]
    strategy: StrategyArg,
    /// Threads kept even when idle: pool workers (default: the number of
    /// CPUs, at least 2) or event polling threads (default: one per CPU);
    /// for UDP, the threads receiving on the socket.
    #[arg(long, value_name = "N")]
    workers: Option<NonZeroUsize>,
    /// The most threads at once: pool workers or, with threading, request
    /// threads — each open connection holds one (default 4,096); with event,
    /// polling threads while handlers block (default 256).
    #[arg(long, value_name = "N")]
    max_workers: Option<NonZeroUsize>,
    /// Places in the pool's queue for connections waiting for a worker
    /// (default 1,024).
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// The most connections open at once; at the limit the server stops
    /// accepting until one closes (the kernel backlog holds the rest).
    #[arg(long, value_name = "N")]
    max_connections: Option<NonZeroUsize>,
    /// Close a connection that makes no progress for SECS seconds: it sends
    /// nothing while the server waits to read, or takes nothing while the
    /// server waits to write.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    idle_timeout: Option<Duration>,
    /// A write that makes no progress for SECS fails (the connection is
    /// closed); without it, --idle-timeout bounds writes too.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    write_timeout: Option<Duration>,
    /// The longest datagram taken (default: what the transport carries —
    /// 65,507 bytes over UDP/IPv4, 65,527 over IPv6, 262,144 for Unix
    /// datagrams); longer ones are reported with their size and dropped.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..))]
    max_datagram: Option<u32>,
    /// Allow datagram replies of up to BYTES whatever their request, for
    /// trusted networks. Without it a UDP reply may take at most 3 times
    /// its request's bytes on the wire (headers included, as QUIC bounds
    /// it): a forged small request must not draw a large answer at a third
    /// party. Larger renderings of the time server get an `error:` reply.
    #[arg(long, value_name = "BYTES")]
    max_reply: Option<usize>,
    /// On SIGINT/SIGTERM, let requests in flight finish for up to SECS
    /// seconds, then close what is left.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "5")]
    grace: Duration,
    /// On SIGINT/SIGTERM, a connection waiting between requests is still
    /// waited on for SECS: a request that arrives is answered (the client
    /// goes on being served while it keeps sending within SECS of each
    /// answer, up to --grace), a quiet one is closed when SECS pass.
    /// Datagrams already queued are answered for as long. 0: close idle
    /// connections at once.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "0.1")]
    drain_window: Duration,
    /// Set SO_REUSEPORT on TCP and UDP listeners, so that several processes
    /// can serve the same port.
    #[arg(long)]
    reuse_port: bool,
    /// Serve only peers in CIDR (repeatable; e.g. 127.0.0.1/32, ::1/128,
    /// 10.0.0.0/8). Others are refused. Unix-socket peers are not filtered.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    allow: Vec<IpNet>,
    /// Expect the PROXY protocol (v1 or v2, HAProxy's `send-proxy` /
    /// `send-proxy-v2`) on TCP and Unix-stream connections: the client it
    /// names is the peer (for --allow and the logs). Only proxies in
    /// --trusted-proxy may send it (default: loopback; Unix-socket peers
    /// always may); others are refused.
    #[arg(long)]
    proxy_protocol: bool,
    /// A proxy allowed to send the PROXY header (repeatable CIDR; replaces
    /// the loopback default).
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, requires = "proxy_protocol")]
    trusted_proxy: Vec<IpNet>,
    /// How long a PROXY header may take to arrive whole.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "3", requires = "proxy_protocol")]
    proxy_header_timeout: Duration,
    /// Serve TLS on every TCP and Unix-stream listener (UDP and
    /// Unix-datagram ones stay plaintext), with the certificate chain in
    /// PEM (the server's certificate first, then its intermediates).
    /// rustls: TLS 1.3 and 1.2, the ring provider.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: every client must present a certificate issued by one
    /// of the CA certificates in PEM, or its handshake fails.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// A TLS handshake not done within SECS of its start is abandoned and
    /// the connection closed.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, default_value = "10", requires = "tls_cert")]
    handshake_timeout: Duration,
    /// The TLS configuration, read from the files once (`load_tls`).
    #[arg(skip)]
    tls: Option<Arc<socketserver::tls::rustls::ServerConfig>>,
    /// Logging to stderr: off, error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: log::LevelFilter,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a duration in seconds (0 or more)"))
}

/// A timeout: more than zero seconds (to the library a zero timeout fails
/// any wait at once; leave the flag out for none).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_secs(s)? {
        d if d.is_zero() => Err(format!("`{s}`: a timeout must be more than 0 seconds (leave the flag out for none)")),
        d => Ok(d),
    }
}

/// Whether `ip` is in one of `nets`, whatever form either is written in:
/// an IPv4 peer on an IPv6 listener arrives as `::ffff:a.b.c.d`, and a
/// block may be written either way (`127.0.0.1/32`, `::ffff:127.0.0.1/128`,
/// `::/0`), so the peer is tried in both forms.
fn allowed(nets: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    let mapped = match ip {
        std::net::IpAddr::V4(v4) => Some(std::net::IpAddr::V6(v4.to_ipv6_mapped())),
        std::net::IpAddr::V6(_) => None,
    };
    nets.iter().any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or CIDR block (e.g. 127.0.0.1/32)"))
}

/// Whom --proxy-protocol trusts by default: a proxy on this host.
const LOOPBACK_V4: IpNet = IpNet::new_assert(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8);
const LOOPBACK_V6: IpNet = IpNet::new_assert(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128);

/// A bound server, ready to run on its own thread.
struct Bound {
    label: String,
    handle: ServerHandle,
    serve: Box<dyn FnOnce() -> io::Result<()> + Send>,
    /// Its socket, kept to hand to a successor on SIGHUP, and the name it
    /// goes by there (`LISTEN_FDNAMES`).
    socket: OwnedFd,
    name: String,
    /// The Unix socket file this process answers for: bound by it for a
    /// flag, or handed over with the socket by its predecessor. The
    /// successor answers for it after a hand-over; otherwise it is removed
    /// when serving ends (the library removes only the files it bound).
    file: Option<SocketFile>,
}

/// About the most threads this process can start: each takes four or so
/// memory mappings (stack, guard page, signal stack and its guard) out of
/// the kernel's `vm.max_map_count`, and a thread that cannot get them
/// aborts the whole process as it starts, so this is checked up front.
fn thread_ceiling() -> usize {
    let maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(65_530);
    maps / 5
}

impl ServerOptions {
    /// Options that parse but do not make sense together: a usage error.
    pub fn check(&self) -> Result<(), String> {
        let ceiling = thread_ceiling();
        if self.strategy.written {
            let strategy = &self.strategy.strategy;
            let given = [
                ("--workers", self.workers.is_some()),
                ("--max-workers", self.max_workers.is_some()),
                ("--queue", self.queue.is_some()),
            ];
            if let Some((flag, _)) = given.into_iter().find(|&(_, given)| given) {
                return Err(format!(
                    "{flag} with --strategy {strategy}: write the counts and settings in the strategy (e.g. pool(4-64 queue=128))"
                ));
            }
            return match strategy.max_threads() {
                Some(n) if n <= ceiling => Ok(()),
                Some(n) => Err(format!(
                    "--strategy {strategy}: {n} threads is more than this system can start (about {ceiling}: vm.max_map_count / 5)"
                )),
                None => Err(format!("--strategy {strategy}: give the most threads, e.g. threading(4096)")),
            };
        }
        if let Some(w) = self.workers
            && w.get() > self.max_workers()
        {
            return Err(format!("--workers {w} is more than --max-workers {}", self.max_workers()));
        }
        if self.max_workers() > ceiling {
            return Err(format!(
                "--max-workers {} is more threads than this system can start (about {ceiling}: vm.max_map_count / 5)",
                self.max_workers()
            ));
        }
        Ok(())
    }

    /// `--max-workers`, or the strategy's default.
    fn max_workers(&self) -> usize {
        let default = if matches!(self.strategy.strategy, AnyStrategy::Event(_)) { 512 } else { 4096 };
        self.max_workers.map_or(default, NonZeroUsize::get)
    }

    /// `--strategy` as written, or a plain name with --workers,
    /// --max-workers and --queue or their defaults.
    fn strategy(&self) -> AnyStrategy {
        let StrategyArg { strategy, written } = self.strategy.clone();
        if written {
            return strategy;
        }
        match strategy {
            AnyStrategy::Threading(t) => t.max_threads(self.max_workers()).into(),
            AnyStrategy::ThreadPool(p) => {
                let pool = p.max_workers(self.max_workers()).queue(self.queue.unwrap_or(1024));
                match self.workers {
                    Some(n) => pool.workers(n.get()).into(),
                    None => pool.into(),
                }
            }
            AnyStrategy::Event(e) => {
                let event = e.max_workers(self.max_workers());
                match self.workers {
                    Some(n) => event.pollers(n.get()).into(),
                    None => event.into(),
                }
            }
            other => other,
        }
    }

    /// The PROXY protocol policy, with --proxy-protocol.
    fn proxy(&self) -> Option<ProxyProtocol> {
        if !self.proxy_protocol {
            return None;
        }
        let trusted: Arc<Vec<IpNet>> = Arc::new(if self.trusted_proxy.is_empty() {
            vec![LOOPBACK_V4, LOOPBACK_V6]
        } else {
            self.trusted_proxy.clone()
        });
        let policy = ProxyProtocol::trusting(move |proxy| match proxy {
            Address::Inet(a) => allowed(&trusted, a.ip()),
            _ => true,
        });
        Some(policy.header_timeout(self.proxy_header_timeout))
    }

    /// A TCP server's settings.
    fn tcp(&self) -> Builder<Tcp, AnyStrategy> {
        // TCP_NODELAY: echo answers partial data and the time server short
        // lines; Nagle's algorithm would hold the tail of an answer back
        // until the client's delayed ACK (~40 ms).
        self.stream(Server::<Tcp>::builder()).reuse_port(self.reuse_port).nodelay(true)
    }

    /// A UDP server's settings.
    fn udp(&self) -> Builder<Udp, AnyStrategy> {
        self.datagram(Server::<Udp>::builder()).reuse_port(self.reuse_port)
    }

    /// Reads --tls-cert, --tls-key and --tls-client-ca, once, before any
    /// listener is bound: a file that cannot be used is an error naming it.
    pub fn load_tls(&mut self) -> io::Result<()> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let config = socketserver::tls::server_config_from_pem(cert, key, self.tls_client_ca.as_deref())
                .map_err(|e| crate::config_error(format!("TLS: {e}")))?;
            self.tls = Some(Arc::new(config));
        }
        Ok(())
    }

    /// A stream server's settings: the general ones, the timeouts, TLS and
    /// the PROXY protocol.
    fn stream<T: StreamTransport>(&self, builder: Builder<T>) -> Builder<T, AnyStrategy> {
        let mut b = self.configure(builder);
        if let Some(config) = &self.tls {
            b = b.tls(config.clone()).handshake_timeout(self.handshake_timeout);
        }
        if let Some(t) = self.idle_timeout {
            b = b.idle_timeout(t);
        }
        if let Some(t) = self.write_timeout {
            b = b.write_timeout(t);
        }
        match self.proxy() {
            Some(policy) => b.proxy_protocol(policy),
            None => b,
        }
    }

    /// A datagram server's settings: the general ones and the size limits.
    fn datagram<T: DatagramTransport>(&self, builder: Builder<T>) -> Builder<T, AnyStrategy> {
        let mut b = self.configure(builder);
        if let Some(n) = self.max_datagram {
            b = b.max_datagram_size(n as usize);
        }
        if let Some(n) = self.max_reply {
            b = b.max_datagram_reply(n);
        }
        b
    }

    /// The settings of every server.
    fn configure<T: Transport>(&self, builder: Builder<T>) -> Builder<T, AnyStrategy> {
        let mut b = builder.strategy(self.strategy()).grace_period(self.grace).drain_window(self.drain_window);
        if let Some(n) = self.max_connections {
            b = b.max_connections(n.get());
        }
        if !self.allow.is_empty() {
            let allow = Arc::new(self.allow.clone());
            b = b.verify_request(move |peer| match peer {
                Address::Inet(a) => allowed(&allow, a.ip()),
                _ => true,
            });
        }
        b
    }
}

fn bound<T: Transport>(server: Server<T, AnyStrategy>, name: String) -> io::Result<Bound> {
    let label = format!("{} {}", T::NAME, server.server_address());
    let handle = server.handle();
    let socket = server.as_fd().try_clone_to_owned()?;
    Ok(Bound { label, handle, serve: Box::new(move || server.serve_forever()), socket, name, file: None })
}

/// Binds every listener asked for — or takes the one handed to this process
/// under its name (`tcp.0` for the first `--tcp`, ...: a restart's
/// successor is handed its predecessor's sockets so) — then serves every
/// other socket handed over (systemd's), by its kind.
fn bind_all<H>(
    handler: H,
    listeners: &Listeners,
    opts: &ServerOptions,
    inherited: Vec<Inherited>,
) -> io::Result<Vec<Bound>>
where
    H: RequestHandler<StreamRequest> + RequestHandler<DatagramRequest> + Clone,
{
    let mut handed: Vec<Option<Inherited>> = inherited.into_iter().map(Some).collect();
    let mut take = |name: &str| handed.iter_mut().find(|s| s.as_ref().is_some_and(|s| s.name() == name))?.take();
    let mut all = Vec::new();
    for (i, addr) in listeners.tcp.iter().enumerate() {
        let name = format!("tcp.{i}");
        let b = opts.tcp();
        let server = match take(&name) {
            Some(socket) => b.from_inherited(socket, handler.clone())?,
            None => b.bind(addr.as_str(), handler.clone())?,
        };
        all.push(bound(server, name)?);
    }
    for (i, addr) in listeners.udp.iter().enumerate() {
        let name = format!("udp.{i}");
        let b = opts.udp();
        let server = match take(&name) {
            Some(socket) => b.from_inherited(socket, handler.clone())?,
            None => b.bind(addr.as_str(), handler.clone())?,
        };
        all.push(bound(server, name)?);
    }
    for (i, path) in listeners.unix.iter().enumerate() {
        let name = format!("unix.{i}");
        let b = opts.stream(Server::<UnixStream>::builder());
        let (server, ours) = match take(&name) {
            Some(socket) => (b.from_inherited(socket, handler.clone())?, crate::restart::handed_with_file(&name)),
            None => (b.bind(path, handler.clone())?, true),
        };
        let file = if ours { SocketFile::of(server.server_address()) } else { None };
        all.push(Bound { file, ..bound(server, name)? });
    }
    for (i, path) in listeners.unix_dgram.iter().enumerate() {
        let name = format!("unix-dgram.{i}");
        let b = opts.datagram(Server::<UnixDatagram>::builder());
        let (server, ours) = match take(&name) {
            Some(socket) => (b.from_inherited(socket, handler.clone())?, crate::restart::handed_with_file(&name)),
            None => (b.bind(path, handler.clone())?, true),
        };
        let file = if ours { SocketFile::of(server.server_address()) } else { None };
        all.push(Bound { file, ..bound(server, name)? });
    }
    // What systemd (or a predecessor) handed over beyond the flags.
    for socket in handed.into_iter().flatten() {
        let name = socket.name().to_string();
        let server = match socket.kind()? {
            SocketKind::Tcp => bound(opts.tcp().from_inherited(socket, handler.clone())?, name),
            SocketKind::Udp => bound(opts.udp().from_inherited(socket, handler.clone())?, name),
            SocketKind::UnixStream => {
                bound(opts.stream(Server::<UnixStream>::builder()).from_inherited(socket, handler.clone())?, name)
            }
            SocketKind::UnixDatagram => {
                bound(opts.datagram(Server::<UnixDatagram>::builder()).from_inherited(socket, handler.clone())?, name)
            }
            other => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cannot serve a {other} socket")));
            }
        }?;
        all.push(server);
    }
    Ok(all)
}

pub fn run(which: Bundled, mut args: ServeArgs) -> io::Result<()> {
    crate::logging::init(args.options.log_level)?;
    args.options.load_tls()?;
    // Sockets handed over by systemd or by the process this one succeeds.
    let inherited = activation::listen_fds()?;
    let l = &mut args.listeners;
    if inherited.is_empty() && l.tcp.is_empty() && l.udp.is_empty() && l.unix.is_empty() && l.unix_dgram.is_empty() {
        let default = format!("127.0.0.1:{}", which.default_port());
        l.tcp.push(default.clone());
        l.udp.push(default);
    }
    let servers = match which {
        Bundled::Echo => bind_all(Echo, &args.listeners, &args.options, inherited)?,
        Bundled::MixedEcho(sleep, hinted) => {
            use crate::bench::Workload;
            let handler =
                crate::bench::Bench(if hinted { Workload::MixedHinted(sleep) } else { Workload::Mixed(sleep) });
            bind_all(handler, &args.listeners, &args.options, inherited)?
        }
        Bundled::Time(limit) => {
            let handler = Strftime::new().request_timeout(Some(limit).filter(|t| !t.is_zero()));
            bind_all(handler, &args.listeners, &args.options, inherited)?
        }
    };
    // Every server answers SIGINT/SIGTERM before anyone is told where they
    // listen: a script that signals as soon as it reads the lines gets a
    // clean shutdown.
    for s in &servers {
        s.handle.shutdown_on_signal()?;
    }
    // SIGQUIT, SIGUSR1 and SIGUSR2, the command's own, likewise.
    let _signals = crate::signals::install(servers.iter().map(|s| (s.label.clone(), s.handle.clone())).collect())?;
    // SIGHUP (a restart) too, before anyone is told: until here `ctrlc`'s
    // handler takes it and shuts down, so a reload sent as soon as the
    // lines or READY=1 came stopped the service.
    let handles: Vec<ServerHandle> = servers.iter().map(|s| s.handle.clone()).collect();
    let sockets = servers.iter().map(|s| Ok((s.socket.try_clone()?, s.name.clone()))).collect::<io::Result<_>>()?;
    let files: Vec<SocketFile> = servers.iter().filter_map(|s| s.file.clone()).collect();
    let with_files = servers.iter().filter(|s| s.file.is_some()).map(|s| s.name.clone()).collect();
    crate::restart::on_hangup(sockets, with_files, handles.clone(), args.restart_timeout)?;
    // The lines are for whoever started us; if they have stopped reading
    // (a closed pipe, a full disk), that is no reason to stop serving.
    let announce = || -> io::Result<()> {
        let mut out = io::stdout().lock();
        for s in &servers {
            writeln!(out, "listening {}", s.label)?;
        }
        out.flush()
    };
    if let Err(e) = announce() {
        log::warn!("cannot print the listening lines to stdout ({e}); serving anyway");
    }
    // Serving: systemd (NOTIFY_SOCKET) and a predecessor handing over to
    // this process may stop waiting.
    if let Err(e) = activation::notify_ready() {
        log::warn!("cannot report readiness: {e}");
    }
    let stopping = crate::restart::report_stopping(&handles);
    // Each server on a thread of its own but the last, which this thread
    // serves: one thread fewer (the event strategy's whole budget is a few).
    let mut servers = servers;
    let last = servers.pop();
    let threads: Vec<_> = servers
        .into_iter()
        .map(|s| {
            let label = s.label;
            let serve = s.serve;
            let others = handles.clone();
            // A server that fails stops the others at once (the one this
            // thread serves among them), not when it is joined.
            let thread = std::thread::Builder::new().name(format!("serve {label}")).spawn(move || {
                let outcome = serve();
                if outcome.is_err() {
                    stop_all(&others);
                }
                outcome
            });
            (label, thread)
        })
        .collect();
    let mut failure = None;
    let mut failed = |label: &str, e: io::Error| {
        log::error!("{label}: {e}");
        // One listener failed: stop the others too, and say so in the exit code.
        stop_all(&handles);
        failure.get_or_insert(e);
    };
    if let Some(s) = last
        && let Err(e) = (s.serve)()
    {
        failed(&s.label, e);
    }
    for (label, thread) in threads {
        let outcome = match thread {
            Ok(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("the serving thread panicked"))),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            failed(&label, e);
        }
    }
    if let Some(stopping) = stopping {
        stopping.finish();
    }
    if !handles.iter().any(ServerHandle::is_handed_over) {
        for file in &files {
            file.remove();
        }
    }
    match failure {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Asks every server to stop (each returns from serving once drained).
fn stop_all(handles: &[ServerHandle]) {
    for h in handles {
        h.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_matches_mapped_and_unmapped_forms_alike() {
        let v4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let other: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let v6: std::net::IpAddr = "::1".parse().unwrap();
        for block in ["127.0.0.1/32", "::ffff:127.0.0.1/128", "::ffff:127.0.0.0/104"] {
            let nets = [parse_cidr(block).unwrap()];
            assert!(allowed(&nets, v4), "{block} v4");
            assert!(allowed(&nets, mapped), "{block} mapped");
            assert!(!allowed(&nets, other), "{block} other");
            assert!(!allowed(&nets, v6), "{block} ::1");
        }
        let everyone = [parse_cidr("::/0").unwrap()];
        for ip in [v4, mapped, other, v6] {
            assert!(allowed(&everyone, ip), "::/0 lets {ip} in");
        }
        let v6_only = [parse_cidr("::1/128").unwrap()];
        assert!(allowed(&v6_only, v6));
        assert!(!allowed(&v6_only, v4));
    }
}
