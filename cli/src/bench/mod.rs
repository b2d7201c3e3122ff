//! `socketserver bench`: drive load against a server (or against servers
//! started in-process for each strategy) and report throughput, latency,
//! errors and unserved clients as a table, JSON or a plot; or hold many
//! idle connections against a server and report what they cost it.

mod idle;
mod load;
mod plot;
mod spawn;

use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use load::{Mode, Spec};
pub use spawn::{Bench, Workload, parse_ms};
use spawn::{Spawned, StrategyChoice};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// N long-lived connections, each a closed loop: write B bytes, read them back.
    TcpEcho,
    /// tcp-echo with slow requests (every --slow-every'th, default 10: 10 %)
    /// against a server that blocks on them (`socketserver echo
    /// --bench-sleep-slow MS`, a `mixed:MS` workload), fast and slow
    /// reported apart; with --server-pid, the server's threads (most seen)
    /// and CPU per request.
    TcpMixed,
    /// N long-lived connections, each a closed loop: write a line of B
    /// bytes (its last `\n`), read one line back — a line-protocol server
    /// such as the README's first example.
    TcpLine,
    /// Connect, one request, close — connection churn.
    TcpConnect,
    /// N clients, each a closed loop of one datagram out and back.
    UdpEcho,
    /// Open N connections (--parallel at a time), hold them idle for
    /// --duration, then probe each with one B-byte round trip: connect
    /// time, connections answered, and (with --server-pid) the server's
    /// RSS and threads before and while holding them. --addr only.
    TcpIdle,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The workload the clients generate.
    #[arg(value_enum, required_unless_present = "gen_cert")]
    mode: Option<ModeArg>,
    /// Load a server that is already running at ADDR.
    #[arg(long, value_name = "ADDR", conflicts_with = "spawn", required_unless_present_any = ["spawn", "gen_cert"])]
    addr: Option<String>,
    /// Start servers in this process for each --strategies × --workloads
    /// and load each in turn.
    #[arg(long)]
    spawn: bool,
    /// Concurrent clients; a comma-separated list runs one cell each.
    #[arg(long, short = 'c', value_name = "N,...", value_delimiter = ',', default_value = "16")]
    connections: Vec<usize>,
    /// Bytes per request.
    #[arg(long, short = 'b', value_name = "BYTES", default_value = "64")]
    size: usize,
    /// Measured seconds per cell (tcp-idle: seconds the connections are
    /// held idle before the probe).
    #[arg(long, short = 'd', value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    duration: Duration,
    /// Seconds of load before measuring.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    warmup: Duration,
    /// Load-generator threads (each drives many connections).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// A datagram not back within this long counts as lost (and is sent again).
    #[arg(long, value_name = "SECS", default_value = "0.2", value_parser = parse_secs)]
    timeout: Duration,
    /// With --spawn: strategies to compare, as the library reads them (sync,
    /// threading, pool, pool(N), pool(N-M), event, event(N-M)...; a plain
    /// pool grows to 4,096 workers).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "sync,threading,pool(2),pool(16),pool")]
    strategies: Vec<StrategyChoice>,
    /// With --spawn: handler workloads (echo, sleep:MS, cpu:MS, mixed:MS:
    /// sleep only for the requests --slow-every makes slow).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "echo")]
    workloads: Vec<Workload>,
    /// tcp-echo, tcp-mixed: every Nth request of each client is a slow one
    /// (first byte `S`; a `mixed:MS` handler sleeps on it), reported apart:
    /// the latency columns are the fast requests'. Default: none, for
    /// tcp-mixed 10 (10 %).
    #[arg(long, value_name = "N")]
    slow_every: Option<u64>,
    /// A name for the server in the output (with --addr).
    #[arg(long, value_name = "NAME")]
    label: Option<String>,
    /// With --addr: the server's pid, to report its CPU time (in all, and
    /// per request) and its threads (the most seen).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// tcp-idle: connects in flight at once.
    #[arg(long, value_name = "N", default_value = "16")]
    parallel: usize,
    /// tcp-idle: a connect not done within SECS counts as failed (a SYN
    /// the server's full listen queue dropped is sent again after 1 s,
    /// then 2 s more).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    connect_timeout: Duration,
    /// tcp-idle: the connect phase ends after SECS, whatever is not
    /// connected by then counting as failed.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    max_time: Duration,
    /// tcp-idle: the longest wait for the probes' answers.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    probe_timeout: Duration,
    /// TCP modes (tcp-echo, tcp-line, tcp-connect, tcp-mixed, tcp-idle):
    /// speak TLS, a handshake after each connect (tcp-connect: connect,
    /// handshake, one echo, close — handshakes per second). No session
    /// resumption: every handshake is a full one. With --spawn, the
    /// servers serve TLS with --tls-cert and --tls-key.
    #[arg(long)]
    tls: bool,
    /// With --tls: trust the certificate(s) in PEM (else the Mozilla roots).
    #[arg(long, value_name = "PEM", requires = "tls")]
    ca: Option<std::path::PathBuf>,
    /// With --tls: accept any server certificate.
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    insecure_skip_verify: bool,
    /// With --tls: the name to send and check (default: the host of --addr).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
    /// With --tls: the only cipher suite the clients offer, so that every
    /// server measured uses the same one ("any": rustls's default list).
    #[arg(long, value_name = "SUITE", default_value = "TLS13_AES_128_GCM_SHA256", requires = "tls")]
    tls_cipher: String,
    /// With --tls: the only key exchange group the clients offer ("any":
    /// the ring provider's list, which rustls 0.23.48 heads with
    /// secp384r1, several times X25519's cost).
    #[arg(long, value_name = "GROUP", default_value = "X25519", requires = "tls")]
    tls_group: String,
    /// With --spawn --tls: the servers' certificate chain (PEM).
    #[arg(long, value_name = "PEM", requires_all = ["tls", "spawn", "tls_key"])]
    tls_cert: Option<std::path::PathBuf>,
    /// With --spawn --tls: the servers' private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Write a self-signed certificate for localhost, 127.0.0.1 and ::1
    /// (ECDSA P-256) to DIR/cert.pem and its key to DIR/key.pem, and exit.
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    gen_cert: Option<std::path::PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also draw throughput and p99 latency against connections, one line
    /// per server, as an SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("`{s}` is not a number of seconds"))
}

/// One cell of the results.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub mode: &'static str,
    pub server: String,
    pub workload: String,
    pub connections: usize,
    pub size: usize,
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// With --slow-every: the slow requests' count and p99.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<SlowRow>,
    pub errors: u64,
    pub lost: u64,
    pub unserved: u64,
    pub generator_cpu_pct: f64,
    pub server_cpu_pct: Option<f64>,
    /// With --server-pid: the server's CPU time per request, measured window only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_request: Option<f64>,
    /// With --server-pid: the most threads the server had (sampled every 100 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_threads_max: Option<u64>,
    /// With --tls: the protocol version and cipher suite negotiated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

/// The slow requests of a mixed load.
#[derive(Clone, Debug, Serialize)]
pub struct SlowRow {
    pub requests: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Slow requests under way at once, on average (Little's law: their
    /// rate times their mean latency): the handlers blocked at once.
    pub in_flight: f64,
}

fn mode_name(m: ModeArg) -> &'static str {
    match m {
        ModeArg::TcpEcho => "tcp-echo",
        ModeArg::TcpMixed => "tcp-mixed",
        ModeArg::TcpLine => "tcp-line",
        ModeArg::TcpConnect => "tcp-connect",
        ModeArg::UdpEcho => "udp-echo",
        ModeArg::TcpIdle => "tcp-idle",
    }
}

impl BenchArgs {
    /// With --tls, how the clients speak it to `addr`.
    fn tls_client(&self, addr: &str) -> io::Result<Option<load::TlsClient>> {
        if !self.tls {
            return Ok(None);
        }
        let cipher = Some(self.tls_cipher.as_str()).filter(|c| !c.eq_ignore_ascii_case("any"));
        let group = Some(self.tls_group.as_str()).filter(|c| !c.eq_ignore_ascii_case("any"));
        let opts = crate::tls::ClientTls {
            ca: self.ca.as_deref(),
            insecure: self.insecure_skip_verify,
            cipher,
            group,
            no_resumption: true,
            ..Default::default()
        };
        let config = crate::tls::client_config(&opts)?;
        let name = crate::tls::server_name(self.server_name.as_deref(), addr)?;
        Ok(Some(load::TlsClient { config, name }))
    }
}

pub fn run(args: BenchArgs) -> io::Result<()> {
    if let Some(dir) = &args.gen_cert {
        return crate::tls::gen_cert(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write a certificate to {}: {e}", dir.display())));
    }
    let Some(mode_arg) = args.mode else { unreachable!("clap requires a mode without --gen-cert") };
    if mode_arg == ModeArg::TcpIdle {
        return run_idle(&args);
    }
    if args.tls && mode_arg == ModeArg::UdpEcho {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--tls is for the TCP modes (udp-echo stays plaintext)",
        ));
    }
    if args.spawn && args.tls && args.tls_cert.is_none() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "--spawn --tls needs --tls-cert and --tls-key"));
    }
    let server_tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(std::sync::Arc::new(socketserver::tls::server_config_from_pem(cert, key, None)?))
        }
        _ => None,
    };
    raise_fd_limit();
    let mode = match mode_arg {
        ModeArg::TcpEcho | ModeArg::TcpMixed => Mode::TcpEcho,
        ModeArg::TcpLine => Mode::TcpLine,
        ModeArg::TcpConnect => Mode::TcpConnect,
        ModeArg::UdpEcho => Mode::UdpEcho,
        ModeArg::TcpIdle => unreachable!("run_idle"),
    };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = args.threads.unwrap_or(cpus).max(1);
    let slow_every = args.slow_every.unwrap_or(if mode_arg == ModeArg::TcpMixed { 10 } else { 0 });
    let mut rows = Vec::new();
    let mut cells: Vec<(String, Workload, Option<StrategyChoice>)> = Vec::new();
    if args.spawn {
        for w in &args.workloads {
            for s in &args.strategies {
                cells.push((s.label.clone(), *w, Some(s.clone())));
            }
        }
    } else {
        let label = args.label.clone().unwrap_or_else(|| args.addr.clone().unwrap_or_default());
        cells.push((label, Workload::Echo, None));
    }
    for (label, workload, strategy) in cells {
        for &connections in &args.connections {
            let spawned = match &strategy {
                Some(s) => Some(Spawned::start(mode == Mode::UdpEcho, &s.strategy, workload, server_tls.as_ref())?),
                None => None,
            };
            let addr = match &spawned {
                Some(s) => s.addr,
                None => resolve(args.addr.as_deref().unwrap_or_default())?,
            };
            let spec = Spec {
                mode,
                addr,
                clients: connections,
                size: args.size,
                warmup: args.warmup,
                duration: args.duration,
                threads,
                timeout: args.timeout,
                slow_every,
                tls: args.tls_client(&args.addr.clone().unwrap_or_else(|| addr.to_string()))?,
            };
            let what = format!("{} {label} {workload} c={connections}", mode_name(mode_arg));
            let server_cpu_before = args.server_pid.map(load::process_cpu);
            let watch = ServerWatch::new(args.server_pid, spec.warmup);
            let outcome = with_progress(&what, &spec, |tick| {
                load::run(&spec, &|n| {
                    watch.sample();
                    tick(n)
                })
            })?;
            let server_cpu = args.server_pid.zip(server_cpu_before).map(|(pid, before)| {
                let used = load::process_cpu(pid).saturating_sub(before);
                100.0 * used.as_secs_f64() / (spec.warmup + spec.duration).as_secs_f64()
            });
            let (server_threads_max, server_cpu_measured) = watch.finish(spec.duration);
            drop(spawned);
            let secs = outcome.elapsed.as_secs_f64();
            let q = |p: f64| outcome.latency.value_at_quantile(p) as f64 / 1000.0;
            let slow = &outcome.latency_slow;
            let slow = (slow_every > 0).then(|| SlowRow {
                requests: slow.len(),
                p50_us: slow.value_at_quantile(0.5) as f64 / 1000.0,
                p99_us: slow.value_at_quantile(0.99) as f64 / 1000.0,
                in_flight: slow.len() as f64 * slow.mean() / 1e9 / secs,
            });
            rows.push(Row {
                mode: mode_name(mode_arg),
                server: label.clone(),
                workload: workload.to_string(),
                connections,
                size: args.size,
                requests: outcome.requests,
                requests_per_sec: outcome.requests as f64 / secs,
                p50_us: q(0.5),
                p99_us: q(0.99),
                p999_us: q(0.999),
                slow,
                errors: outcome.errors,
                lost: outcome.lost,
                unserved: outcome.unserved,
                generator_cpu_pct: 100.0 * outcome.generator_cpu.as_secs_f64()
                    / (spec.warmup + spec.duration).as_secs_f64(),
                server_cpu_pct: server_cpu,
                server_cpu_us_per_request: server_cpu_measured
                    .map(|cpu| cpu.as_secs_f64() * 1e6 / outcome.requests.max(1) as f64),
                server_threads_max,
                tls: outcome.tls_negotiated.clone(),
            });
        }
    }
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &rows)?;
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &rows).map_err(|e| io::Error::other(format!("cannot draw {}: {e}", path.display())))?;
    }
    Ok(())
}

/// `tcp-idle`: one cell per connection count, against --addr.
fn run_idle(args: &BenchArgs) -> io::Result<()> {
    let Some(addr) = args.addr.as_deref() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "tcp-idle needs --addr (not --spawn)"));
    };
    if args.plot.is_some() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "tcp-idle draws no plot"));
    }
    // Fail before the first connection rather than part-way through.
    idle::check_fd_limit(args.connections.iter().copied().max().unwrap_or(0))?;
    let addr = resolve(addr)?;
    let label = args.label.clone().unwrap_or_else(|| addr.to_string());
    let mut rows = Vec::new();
    for &connections in &args.connections {
        let spec = idle::IdleSpec {
            addr,
            connections,
            size: args.size.max(1),
            parallel: args.parallel.max(1),
            connect_timeout: args.connect_timeout,
            max_time: args.max_time,
            hold: args.duration,
            probe_timeout: args.probe_timeout,
            server_pid: args.server_pid,
            tls: args.tls_client(args.addr.as_deref().unwrap_or_default())?,
        };
        rows.push(idle::run(&spec, &label)?);
    }
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        print_idle_table(&mut out, &rows)?;
    }
    Ok(())
}

fn print_idle_table(out: &mut impl Write, rows: &[idle::IdleRow]) -> io::Result<()> {
    let kib = |v: Option<u64>| v.map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let num = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
    writeln!(
        out,
        "{:<14} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9} {:>15} {:>8} {:>8}",
        "server",
        "conns",
        "connected",
        "connect s",
        "closed",
        "answered",
        "probe s",
        "RSS before",
        "RSS held",
        "RSS probed",
        "KiB/conn",
        "threads",
        "gen cpu",
        "srv cpu"
    )?;
    for r in rows {
        let threads = format!("{} → {}", num(r.base_threads), num(r.threads.max(r.held_threads)));
        writeln!(
            out,
            "{:<14} {:>7} {:>9} {:>9.2} {:>9} {:>9} {:>9.2} {:>10} {:>10} {:>10} {:>9} {:>15} {:>7.2}s {:>8}",
            r.server,
            r.connections,
            r.connected,
            r.connect_secs,
            r.closed_before_probe,
            r.answered,
            r.probe_secs,
            kib(r.base_rss_kib),
            kib(r.held_rss_kib),
            kib(r.rss_kib),
            r.rss_per_conn_kib.map_or("-".to_string(), |v| format!("{v:.1}")),
            threads,
            r.generator_cpu_secs,
            r.server_cpu_secs.map_or("-".to_string(), |v| format!("{v:.2}s")),
        )?;
        if let Some(e) = &r.first_error {
            writeln!(out, "  {} of {} did not connect; first error: {e}", r.connect_failed, r.connections)?;
        }
        if let (Some(o), Some(s)) = (r.listen_overflows, r.syn_retransmits)
            && o + s > 0
        {
            writeln!(out, "  while connecting (whole machine): {o} listen-queue overflows, {s} SYNs sent again")?;
        }
    }
    Ok(())
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr} resolves to nothing")))
}

fn with_progress<T>(what: &str, spec: &Spec, f: impl FnOnce(&(dyn Fn(u64) + Sync)) -> T) -> T {
    if !io::stderr().is_terminal() {
        return f(&|_| {});
    }
    let total = (spec.warmup + spec.duration).as_millis() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    let start = std::time::Instant::now();
    let result = f(&|requests| {
        bar.set_position(start.elapsed().as_millis() as u64);
        bar.set_message(format!("{requests} requests"));
    });
    bar.finish_and_clear();
    result
}

fn print_table(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    writeln!(
        out,
        "{:<12} {:<14} {:<10} {:>6} {:>6} {:>11} {:>9} {:>9} {:>9} {:>7} {:>6} {:>8} {:>7} {:>7}",
        "mode",
        "server",
        "workload",
        "conns",
        "bytes",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "errors",
        "lost",
        "unserved",
        "gen cpu",
        "srv cpu"
    )?;
    for r in rows {
        let srv = r.server_cpu_pct.map_or("-".to_string(), |c| format!("{c:.0}%"));
        writeln!(
            out,
            "{:<12} {:<14} {:<10} {:>6} {:>6} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>6} {:>8} {:>6.0}% {:>7}",
            r.mode,
            r.server,
            r.workload,
            r.connections,
            r.size,
            r.requests_per_sec,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.errors,
            r.lost,
            r.unserved,
            r.generator_cpu_pct,
            srv
        )?;
    }
    for r in rows {
        if let Some(slow) = &r.slow {
            writeln!(
                out,
                "{} {} c={}: the latency columns are the fast requests'; {} slow requests, p50 {:.1} µs, p99 {:.1} µs, {:.1} under way at once",
                r.server, r.workload, r.connections, slow.requests, slow.p50_us, slow.p99_us, slow.in_flight
            )?;
        }
        if let (Some(threads), Some(cpu)) = (r.server_threads_max, r.server_cpu_us_per_request) {
            writeln!(
                out,
                "{} c={}: server threads at most {threads}, CPU {cpu:.2} µs per request",
                r.server, r.connections
            )?;
        }
    }
    Ok(())
}

/// A server process watched during a run: its threads (the most seen) and
/// its CPU time over the measured window (from the first sample after the
/// warm-up to the end).
struct ServerWatch {
    pid: Option<u32>,
    measure_from: std::time::Instant,
    state: std::sync::Mutex<Watched>,
}

/// The most threads seen; when the window began, and the CPU time then.
type Watched = (Option<u64>, Option<(std::time::Instant, Duration)>);

impl ServerWatch {
    fn new(pid: Option<u32>, warmup: Duration) -> ServerWatch {
        let watch = ServerWatch { pid, measure_from: std::time::Instant::now() + warmup, state: Default::default() };
        watch.sample();
        watch
    }

    fn sample(&self) {
        let Some(pid) = self.pid else { return };
        let threads = idle::status(Some(pid)).threads;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.max(threads);
        let now = std::time::Instant::now();
        if state.1.is_none() && now >= self.measure_from {
            state.1 = Some((now, load::process_cpu(pid)));
        }
    }

    /// The most threads seen, and the CPU time of the measured window
    /// (scaled to the whole window when the first sample came late).
    fn finish(self, window: Duration) -> (Option<u64>, Option<Duration>) {
        self.sample();
        let (threads, start) = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        let cpu = self.pid.zip(start).map(|(pid, (at, before))| {
            let used = load::process_cpu(pid).saturating_sub(before);
            let sampled = at.elapsed().min(window).max(Duration::from_millis(1));
            used.mul_f64(window.as_secs_f64() / sampled.as_secs_f64())
        });
        (threads, cpu)
    }
}

/// Thousands of connections need thousands of descriptors: raise the soft
/// limit to the hard one.
fn raise_fd_limit() {
    if let Err(e) = socketserver::raise_fd_limit() {
        log::warn!("cannot raise the open-file limit: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Watching this process: its threads (the most seen) and its CPU over
    /// the window; without a pid, nothing.
    #[test]
    fn a_watched_server_reports_its_threads_and_cpu() {
        // (An absolute count: the other tests of this binary run on threads
        // of this process that come and go, so a count taken before is no
        // baseline.)
        const SLEEPERS: u64 = 16;
        let watch = ServerWatch::new(Some(std::process::id()), Duration::ZERO);
        std::thread::scope(|s| {
            let _busy: Vec<_> =
                (0..SLEEPERS).map(|_| s.spawn(|| std::thread::sleep(Duration::from_millis(100)))).collect();
            watch.sample();
        });
        let (threads, cpu) = watch.finish(Duration::from_millis(100));
        assert!(threads.unwrap() > SLEEPERS, "{threads:?} threads while {SLEEPERS} slept");
        assert!(cpu.is_some());
        assert_eq!(ServerWatch::new(None, Duration::ZERO).finish(Duration::from_secs(1)), (None, None));
    }
}
