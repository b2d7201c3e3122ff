//! In-process servers for `bench --spawn`: each strategy, each workload.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socketserver::tls::rustls::ServerConfig;
use socketserver::{AnyStrategy, DatagramRequest, RequestHandler, ServerHandle, StreamRequest};
use socketserver::{TcpServer, UdpServer};

/// What the handler does before it echoes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Echo at once.
    Echo,
    /// Block this long first (a database call, a disk read).
    Sleep(Duration),
    /// Compute this long first (busy CPU).
    Cpu(Duration),
    /// Block this long first for a request that begins with `S` (a load
    /// generator's `--slow-every`), echo the rest at once: fast requests
    /// among slow ones.
    Mixed(Duration),
    /// As `Mixed`, the sleep inside `StreamRequest::blocking` (the handler
    /// says it will block: under `Event`, its thread hands on its polling
    /// slot at once).
    MixedHinted(Duration),
}

impl Workload {
    fn before_echo(self, request: &[u8]) {
        match self {
            Workload::Echo => {}
            Workload::Sleep(d) => std::thread::sleep(d),
            Workload::Mixed(d) | Workload::MixedHinted(d) if request.first() == Some(&b'S') => std::thread::sleep(d),
            Workload::Mixed(_) | Workload::MixedHinted(_) => {}
            Workload::Cpu(d) => {
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < d {
                    for i in 0..64 {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Echo => f.write_str("echo"),
            Workload::Sleep(d) => write!(f, "sleep:{}", d.as_micros() as f64 / 1000.0),
            Workload::Cpu(d) => write!(f, "cpu:{}", d.as_micros() as f64 / 1000.0),
            Workload::Mixed(d) => write!(f, "mixed:{}", d.as_micros() as f64 / 1000.0),
            Workload::MixedHinted(d) => write!(f, "mixed-hinted:{}", d.as_micros() as f64 / 1000.0),
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    /// `echo`, `sleep:MS`, `cpu:MS` or `mixed:MS` (milliseconds, fractions
    /// allowed).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "echo" => Ok(Workload::Echo),
            Some(("sleep", v)) => Ok(Workload::Sleep(parse_ms(v)?)),
            Some(("cpu", v)) => Ok(Workload::Cpu(parse_ms(v)?)),
            Some(("mixed", v)) => Ok(Workload::Mixed(parse_ms(v)?)),
            Some(("mixed-hinted", v)) => Ok(Workload::MixedHinted(parse_ms(v)?)),
            _ => Err(format!("`{s}`: expected echo, sleep:MS, cpu:MS, mixed:MS or mixed-hinted:MS")),
        }
    }
}

/// Milliseconds, fractions allowed.
pub fn parse_ms(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|m| Duration::try_from_secs_f64(m / 1000.0).ok())
        .ok_or_else(|| format!("`{v}` is not a number of milliseconds"))
}

/// A strategy to benchmark, as written on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrategyChoice {
    pub label: String,
    pub strategy: AnyStrategy,
}

impl FromStr for StrategyChoice {
    type Err = String;
    /// A strategy as the library reads it (`sync`, `threading`, `pool`,
    /// `pool(16)`, `event(2-32)`...), forking aside. A plain `pool` grows
    /// to 4,096 workers, as the command's: each connection holds one.
    fn from_str(s: &str) -> Result<Self, String> {
        let strategy = match s.parse().map_err(|e: socketserver::ParseStrategyError| e.to_string())? {
            AnyStrategy::Forking(_) => return Err(format!("{s:?}: the benchmark does not fork")),
            AnyStrategy::ThreadPool(p) if s == "pool" => p.max_workers(4096).into(),
            other => other,
        };
        Ok(StrategyChoice { label: s.to_string(), strategy })
    }
}

/// The benchmarks' handler: the workload, then the echo (also `socketserver
/// echo --bench-sleep-slow`'s, as `Workload::Mixed`).
#[derive(Clone, Copy)]
pub struct Bench(pub Workload);

impl RequestHandler<StreamRequest> for Bench {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        if req.tls().is_some() {
            // The raw socket is not handed out under TLS: the request's
            // own writes encrypt.
            let mut copy = Vec::new();
            while req.wait_for_data()? {
                let data = req.fill_buf()?;
                self.0.before_echo(data);
                copy.clear();
                copy.extend_from_slice(data);
                req.consume(copy.len());
                req.write_all(&copy)?;
            }
            return Ok(());
        }
        while req.wait_for_data()? {
            if let Workload::MixedHinted(d) = self.0
                && req.buffered().first() == Some(&b'S')
            {
                req.blocking(|| std::thread::sleep(d));
                let (data, mut stream) = req.fill_buf_and_stream()?;
                let n = data.len();
                stream.write_all(data)?;
                req.consume(n);
                continue;
            }
            let (data, mut stream) = req.fill_buf_and_stream()?;
            self.0.before_echo(data);
            let n = data.len();
            stream.write_all(data)?;
            req.consume(n);
        }
        Ok(())
    }
}

impl RequestHandler<DatagramRequest> for Bench {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        self.0.before_echo(req.data());
        req.reply(req.data())
    }
}

/// A server running on its own thread until dropped.
pub struct Spawned {
    pub addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Spawned {
    /// With `tls`, the TCP server serves TLS with that configuration.
    pub fn start(
        udp: bool,
        strategy: &AnyStrategy,
        workload: Workload,
        tls: Option<&Arc<ServerConfig>>,
    ) -> io::Result<Spawned> {
        let (addr, handle, thread) = if udp {
            let server = UdpServer::builder().strategy(strategy.clone()).bind("127.0.0.1:0", Bench(workload))?;
            let addr = server.server_address().as_inet().expect("an IP server");
            (addr, server.handle(), std::thread::spawn(move || server.serve_forever()))
        } else {
            let mut builder = TcpServer::builder().strategy(strategy.clone()).nodelay(true);
            if let Some(config) = tls {
                builder = builder.tls(config.clone());
            }
            let server = builder.bind("127.0.0.1:0", Bench(workload))?;
            let addr = server.server_address().as_inet().expect("an IP server");
            (addr, server.handle(), std::thread::spawn(move || server.serve_forever()))
        };
        Ok(Spawned { addr, handle, thread: Some(thread) })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Whatever the generator left open is closed now.
        self.handle.shutdown_with_grace(Duration::ZERO);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::{self, Mode, Spec};

    #[test]
    fn workloads_parse_and_print_back() {
        for w in ["echo", "sleep:5", "cpu:0.5", "mixed:5"] {
            assert_eq!(w.parse::<Workload>().unwrap().to_string(), w);
        }
        assert!("mixed".parse::<Workload>().is_err());
        assert!("mixed:x".parse::<Workload>().is_err());
    }

    /// As the library reads a strategy, but a plain pool grows to 4,096
    /// workers, and forking is refused.
    #[test]
    fn strategies_are_read_as_the_library_reads_them() {
        let read = |s: &str| s.parse::<StrategyChoice>().map(|c| (c.label, c.strategy));
        let pool16 = socketserver::ThreadPool::new(16).into();
        assert_eq!(read("pool(16)").unwrap(), ("pool(16)".to_string(), pool16));
        assert_eq!(read("event").unwrap().1, socketserver::Event::new().into());
        assert_eq!(read("pool").unwrap().1.max_threads(), Some(4096));
        assert_eq!(read("pool(2-8)").unwrap().1.max_threads(), Some(8));
        assert!(read("forking").unwrap_err().contains("does not fork"));
        let e = read("pool:16").unwrap_err();
        assert!(e.starts_with("\"pool:16\" is not a strategy") && e.contains("pool(N-M)"), "{e}");
    }

    /// A mixed load: every 4th request of a client is slow, the server
    /// sleeps on those alone, and the two are reported apart.
    #[test]
    fn a_mixed_load_reports_its_slow_requests_apart() {
        let sleep = Duration::from_millis(2);
        let server = Spawned::start(false, &socketserver::Event::new().into(), Workload::Mixed(sleep), None).unwrap();
        let spec = Spec {
            mode: Mode::TcpEcho,
            addr: server.addr,
            clients: 4,
            size: 64,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            threads: 1,
            timeout: Duration::from_secs(5),
            slow_every: 4,
            tls: None,
        };
        let outcome = load::run(&spec, &|_| {}).unwrap();
        let (fast, slow) = (outcome.latency.len(), outcome.latency_slow.len());
        assert!(slow > 0 && fast >= slow, "{fast} fast, {slow} slow");
        assert!(outcome.latency_slow.min() >= sleep.as_nanos() as u64, "a slow request took less than the sleep");
        assert_eq!(outcome.errors, 0);
    }

    /// The load side over TLS against an in-process TLS server: echo,
    /// connect (a handshake each) and idle connections are all served,
    /// with the one suite and group offered.
    #[test]
    fn a_tls_load_is_served_with_the_suite_offered() {
        let dir = std::env::temp_dir().join(format!("socketserver-bench-tls-{}", std::process::id()));
        crate::tls::gen_cert(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let config = Arc::new(socketserver::tls::server_config_from_pem(&cert, &key, None).unwrap());
        let server = Spawned::start(false, &socketserver::Event::new().into(), Workload::Echo, Some(&config)).unwrap();
        let opts = crate::tls::ClientTls {
            ca: Some(&cert),
            cipher: Some("TLS13_CHACHA20_POLY1305_SHA256"),
            group: Some("secp256r1"),
            no_resumption: true,
            ..Default::default()
        };
        let tls = load::TlsClient {
            config: crate::tls::client_config(&opts).unwrap(),
            name: crate::tls::server_name(None, "127.0.0.1:1").unwrap(),
        };
        for (mode, size) in [(Mode::TcpEcho, 64), (Mode::TcpEcho, 16384), (Mode::TcpLine, 100), (Mode::TcpConnect, 64)]
        {
            let spec = Spec {
                mode,
                addr: server.addr,
                clients: 4,
                size,
                warmup: Duration::from_millis(50),
                duration: Duration::from_millis(300),
                threads: 1,
                timeout: Duration::from_secs(5),
                slow_every: 0,
                tls: Some(tls.clone()),
            };
            let outcome = load::run(&spec, &|_| {}).unwrap();
            assert!(
                outcome.requests > 0 && outcome.errors == 0 && outcome.unserved == 0,
                "{mode:?} {size}: {outcome:?}"
            );
            assert_eq!(outcome.tls_negotiated.as_deref(), Some("TLSv1_3 TLS13_CHACHA20_POLY1305_SHA256 secp256r1"));
        }
        let idle = crate::bench::idle::IdleSpec {
            addr: server.addr,
            connections: 20,
            size: 64,
            parallel: 4,
            connect_timeout: Duration::from_secs(5),
            max_time: Duration::from_secs(10),
            hold: Duration::from_millis(50),
            probe_timeout: Duration::from_secs(5),
            server_pid: None,
            tls: Some(tls),
        };
        let row = crate::bench::idle::run(&idle, "tls").unwrap();
        assert_eq!((row.connected, row.answered), (20, 20), "{row:?}");
        assert!(row.tls.as_deref().is_some_and(|t| t.starts_with("TLSv1_3")), "{row:?}");
        // A client that does not trust the certificate is served nothing.
        let untrusting = crate::tls::ClientTls::default();
        let spec = Spec {
            mode: Mode::TcpEcho,
            addr: server.addr,
            clients: 2,
            size: 64,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(200),
            threads: 1,
            timeout: Duration::from_secs(5),
            slow_every: 0,
            tls: Some(load::TlsClient {
                config: crate::tls::client_config(&untrusting).unwrap(),
                name: crate::tls::server_name(None, "127.0.0.1:1").unwrap(),
            }),
        };
        let outcome = load::run(&spec, &|_| {}).unwrap();
        assert_eq!((outcome.requests, outcome.unserved), (0, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
