//! `bench tcp-idle`: what holding many idle connections costs a server, and
//! whether it still answers each of them.
//!
//! Four phases on one thread (mio): open N connections, at most `parallel`
//! connects in flight, each given `connect_timeout`, the phase ending at
//! `max_time` whatever is left; hold them idle for `hold`; send one
//! `size`-byte request on every open connection at once and wait up to
//! `probe_timeout` for the answers; close them all. The server's `VmRSS`
//! and `Threads` (from `/proc/PID/status`) are read before the first
//! connect, at the end of the hold and after the probe.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::load::{self, process_cpu};

/// Descriptors this process needs besides the connections (stdio, epoll,
/// /proc reads, the odd log file).
const SPARE_FDS: u64 = 32;

/// One idle-connections run.
#[derive(Clone, Debug)]
pub struct IdleSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    /// Bytes of the probe request.
    pub size: usize,
    /// Connects in flight at once.
    pub parallel: usize,
    /// A connect not done within this long counts as failed.
    pub connect_timeout: Duration,
    /// The connect phase ends after this long, done or not.
    pub max_time: Duration,
    /// How long all connections are held idle before the probe.
    pub hold: Duration,
    /// The probe phase ends after this long, answered or not.
    pub probe_timeout: Duration,
    pub server_pid: Option<u32>,
    /// Speak TLS: a connection counts as open once its handshake is done.
    pub tls: Option<load::TlsClient>,
}

/// What `/proc/PID/status` says about memory and threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub rss_kib: Option<u64>,
    pub threads: Option<u64>,
}

/// `VmRSS` (KiB) and `Threads` from the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let number = || value.split_whitespace().next().and_then(|v| v.parse::<u64>().ok());
        match key {
            "VmRSS" => s.rss_kib = number(),
            "Threads" => s.threads = number(),
            _ => {}
        }
    }
    s
}

pub fn status(pid: Option<u32>) -> Status {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .map_or_else(Status::default, |t| parse_status(&t))
}

/// One cell of `tcp-idle` results.
#[derive(Clone, Debug, Serialize)]
pub struct IdleRow {
    pub mode: &'static str,
    pub server: String,
    pub connections: usize,
    pub size: usize,
    /// Connections established in the connect phase.
    pub connected: usize,
    /// Connects refused, reset or timed out (`connect_timeout`), or never
    /// tried because the phase hit `max_time`.
    pub connect_failed: usize,
    /// Wall-clock seconds from the first connect to the last one done.
    pub connect_secs: f64,
    /// Open connections the server closed (or reset) before the probe.
    pub closed_before_probe: usize,
    /// Connections whose probe came back whole.
    pub answered: usize,
    /// Wall-clock seconds from the first probe sent to the last answer (or
    /// to `probe_timeout` when some never came).
    pub probe_secs: f64,
    /// Round-trip time of the answered probes, in ms (each timed from its
    /// own send; all were sent at once).
    pub probe_p50_ms: f64,
    pub probe_p99_ms: f64,
    pub probe_max_ms: f64,
    /// The server before the first connect.
    pub base_rss_kib: Option<u64>,
    pub base_threads: Option<u64>,
    /// The server holding the connections, before the probe.
    pub held_rss_kib: Option<u64>,
    pub held_threads: Option<u64>,
    /// The server holding the connections after each was served once.
    pub rss_kib: Option<u64>,
    pub threads: Option<u64>,
    /// (the larger holding RSS − base) / connected.
    pub rss_per_conn_kib: Option<f64>,
    /// CPU time (user + system) of this process over the whole run.
    pub generator_cpu_secs: f64,
    /// CPU time of the server over the whole run (with --server-pid).
    pub server_cpu_secs: Option<f64>,
    /// The first connect error, if any (the others are only counted).
    pub first_error: Option<String>,
    /// Machine-wide, over the connect phase (`/proc/net/netstat`): connections
    /// dropped because a listen queue was full, and SYNs sent again — a
    /// server that accepts slower than clients connect makes them wait
    /// (a dropped SYN is sent again after 1 s, then 2 s more...).
    pub listen_overflows: Option<u64>,
    pub syn_retransmits: Option<u64>,
    /// With TLS: the protocol version, cipher suite and group negotiated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

/// `ListenOverflows` and `TCPSynRetrans` from the text of `/proc/net/netstat`
/// (a header line of names, then a line of values, per protocol).
pub fn parse_netstat(text: &str) -> (Option<u64>, Option<u64>) {
    let lines: Vec<&str> = text.lines().collect();
    let (mut overflows, mut retrans) = (None, None);
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some(("TcpExt", names)), Some(("TcpExt", values))) = (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            match name {
                "ListenOverflows" => overflows = value.parse().ok(),
                "TCPSynRetrans" => retrans = value.parse().ok(),
                _ => {}
            }
        }
    }
    (overflows, retrans)
}

fn netstat() -> (Option<u64>, Option<u64>) {
    std::fs::read_to_string("/proc/net/netstat").map_or((None, None), |t| parse_netstat(&t))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Connecting,
    /// TLS: connected, the handshake under way (still in flight).
    Handshaking,
    Open,
    /// Probe sent (`sent` bytes so far), answer awaited.
    Probing,
    Answered,
    Failed,
    /// The server closed it.
    Closed,
}

struct Conn {
    stream: Option<TcpStream>,
    tls: Option<Box<rustls::ClientConnection>>,
    state: State,
    since: Instant,
    sent: usize,
    got: usize,
}

/// Checks that this process may hold `n` connections (raising the soft
/// open-file limit to the hard one first).
pub fn check_fd_limit(n: usize) -> io::Result<()> {
    let limit = socketserver::raise_fd_limit()?;
    if (n as u64).saturating_add(SPARE_FDS) > limit {
        return Err(io::Error::other(format!(
            "cannot hold {n} connections: the open-file limit is {limit} (the hard limit; this needs {} — raise \
             `ulimit -Hn` as root, or in /etc/security/limits.conf)",
            n as u64 + SPARE_FDS
        )));
    }
    Ok(())
}

/// Runs the four phases; `label` names the server in the row.
pub fn run(spec: &IdleSpec, label: &str) -> io::Result<IdleRow> {
    check_fd_limit(spec.connections)?;
    let me = std::process::id();
    let gen_cpu0 = process_cpu(me);
    let srv_cpu0 = spec.server_pid.map(process_cpu);
    let base = status(spec.server_pid);
    let mut run = Run {
        spec,
        poll: Poll::new()?,
        events: Events::with_capacity(1024),
        conns: Vec::with_capacity(spec.connections),
        buf: vec![0; spec.size.max(1) * 2],
        closed_before_probe: 0,
        first_error: None,
        negotiated: None,
    };
    progress(format_args!("tcp-idle {label}: opening {} connections", spec.connections));
    let net0 = netstat();
    let connect_secs = run.connect()?;
    let net1 = netstat();
    let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    // Established, whether or not the server has closed some since.
    let connected = run.count(State::Open) + run.count(State::Closed);
    progress(format_args!("tcp-idle {label}: {connected} open in {connect_secs:.2} s; holding"));
    run.hold()?;
    let held = status(spec.server_pid);
    progress(format_args!("tcp-idle {label}: probing"));
    let (probe_secs, latency) = run.probe()?;
    let answered = run.count(State::Answered);
    std::thread::sleep(Duration::from_millis(100));
    let after = status(spec.server_pid);
    let generator_cpu_secs = process_cpu(me).saturating_sub(gen_cpu0).as_secs_f64();
    let server_cpu_secs =
        spec.server_pid.zip(srv_cpu0).map(|(p, before)| process_cpu(p).saturating_sub(before).as_secs_f64());
    let q = |p: f64| latency.value_at_quantile(p) as f64 / 1e6;
    let holding = held.rss_kib.max(after.rss_kib);
    let row = IdleRow {
        mode: "tcp-idle",
        server: label.to_string(),
        connections: spec.connections,
        size: spec.size,
        connected,
        connect_failed: spec.connections - connected,
        connect_secs,
        closed_before_probe: run.closed_before_probe,
        answered,
        probe_secs,
        probe_p50_ms: q(0.5),
        probe_p99_ms: q(0.99),
        probe_max_ms: latency.max() as f64 / 1e6,
        base_rss_kib: base.rss_kib,
        base_threads: base.threads,
        held_rss_kib: held.rss_kib,
        held_threads: held.threads,
        rss_kib: after.rss_kib,
        threads: after.threads,
        rss_per_conn_kib: per_conn(base.rss_kib, holding, connected),
        generator_cpu_secs,
        server_cpu_secs,
        first_error: run.first_error,
        listen_overflows: delta(net0.0, net1.0),
        syn_retransmits: delta(net0.1, net1.1),
        tls: run.negotiated.take(),
    };
    drop(run.conns);
    Ok(row)
}

/// RSS growth per connection, when both samples exist and a connection was open.
pub fn per_conn(base: Option<u64>, holding: Option<u64>, connected: usize) -> Option<f64> {
    let (b, h) = (base?, holding?);
    (connected > 0).then(|| (h as f64 - b as f64) / connected as f64)
}

fn progress(msg: std::fmt::Arguments) {
    use std::io::IsTerminal;
    if io::stderr().is_terminal() {
        eprintln!("{msg}");
    }
}

struct Run<'a> {
    spec: &'a IdleSpec,
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    closed_before_probe: usize,
    first_error: Option<String>,
    negotiated: Option<String>,
}

impl Run<'_> {
    fn count(&self, state: State) -> usize {
        self.conns.iter().filter(|c| c.state == state).count()
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    fn failed(&mut self, i: usize, e: io::Error) {
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.state = State::Failed;
    }

    /// The connect phase; returns its wall-clock seconds.
    fn connect(&mut self) -> io::Result<f64> {
        let spec = self.spec;
        let start = Instant::now();
        let deadline = start + spec.max_time;
        let mut inflight: VecDeque<usize> = VecDeque::with_capacity(spec.parallel);
        let mut last_done = start;
        loop {
            let now = Instant::now();
            while inflight.len() < spec.parallel.max(1) && self.conns.len() < spec.connections && now < deadline {
                let i = self.conns.len();
                self.conns.push(Conn {
                    stream: None,
                    tls: None,
                    state: State::Connecting,
                    since: now,
                    sent: 0,
                    got: 0,
                });
                match load::connect(spec.addr, i) {
                    Ok(mut s) => {
                        self.poll.registry().register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
                        self.conns[i].stream = Some(s);
                        inflight.push_back(i);
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("out of file descriptors after {i} connections: {e}"),
                        ));
                    }
                    Err(e) => self.failed(i, e),
                }
            }
            if inflight.is_empty() && (self.conns.len() == spec.connections || now >= deadline) {
                break;
            }
            if now >= deadline {
                for i in inflight.drain(..) {
                    self.failed(i, io::Error::new(io::ErrorKind::TimedOut, "connect phase over (--max-time)"));
                }
                break;
            }
            // Wake for the soonest connect timeout (the oldest in flight).
            let next_timeout = inflight.front().map_or(deadline, |&i| self.conns[i].since + spec.connect_timeout);
            self.wait(next_timeout.min(deadline).saturating_duration_since(now).min(Duration::from_millis(50)))?;
            let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for i in ready {
                let step = match self.conns[i].state {
                    State::Connecting => self.finish_connect(i),
                    State::Handshaking => self.step_handshake(i),
                    State::Open => {
                        self.check_open(i);
                        None
                    }
                    _ => None,
                };
                {
                    {
                        if let Some(done) = step {
                            if done {
                                last_done = Instant::now();
                            }
                            inflight.retain(|&j| j != i);
                        }
                    }
                }
            }
            let now = Instant::now();
            while let Some(&i) = inflight.front() {
                if now.duration_since(self.conns[i].since) < spec.connect_timeout {
                    break;
                }
                inflight.pop_front();
                self.failed(i, io::Error::new(io::ErrorKind::TimedOut, "connect timed out (--connect-timeout)"));
            }
        }
        let end = if self.count(State::Open) + self.closed_before_probe == spec.connections {
            last_done
        } else {
            Instant::now()
        };
        Ok(end.duration_since(start).as_secs_f64())
    }

    /// A connect in progress: Some(true) open, Some(false) failed, None still going.
    fn finish_connect(&mut self, i: usize) -> Option<bool> {
        let s = self.conns[i].stream.as_ref()?;
        let result = match s.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match s.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected || e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    Ok(false)
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(true) => {
                let _ = s.set_nodelay(true);
                if let Some(tls) = &self.spec.tls {
                    match rustls::ClientConnection::new(tls.config.clone(), tls.name.clone()) {
                        Ok(conn) => {
                            self.conns[i].tls = Some(Box::new(conn));
                            self.conns[i].state = State::Handshaking;
                            return self.step_handshake(i);
                        }
                        Err(e) => {
                            self.failed(i, crate::tls::io_error(e));
                            return Some(false);
                        }
                    }
                }
                self.conns[i].state = State::Open;
                // Bytes or an end of stream may have come with the connect.
                self.check_open(i);
                Some(true)
            }
            Ok(false) => None,
            Err(e) => {
                self.failed(i, e);
                Some(false)
            }
        }
    }

    /// A handshake under way: Some(true) done (open), Some(false) failed,
    /// None still going.
    fn step_handshake(&mut self, i: usize) -> Option<bool> {
        let c = &mut self.conns[i];
        let (Some(s), Some(tls)) = (c.stream.as_mut(), c.tls.as_deref_mut()) else { return Some(false) };
        match load::handshake(tls, s) {
            Ok(false) => None,
            Ok(true) => {
                if self.negotiated.is_none() {
                    self.negotiated = Some(load::negotiated(tls));
                }
                c.state = State::Open;
                self.check_open(i);
                Some(true)
            }
            Err(e) => {
                self.failed(i, e);
                Some(false)
            }
        }
    }

    /// An open connection became readable before any request: the server
    /// closed it (or sent something unasked, which is read and ignored).
    fn check_open(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(s) = c.stream.as_mut() else { return };
        let mut s = load::MaybeTls { tcp: s, tls: c.tls.as_deref_mut() };
        loop {
            match s.read(&mut self.buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.state = State::Closed;
        self.closed_before_probe += 1;
    }

    /// Holds the connections for `spec.hold`, noting those the server closes.
    fn hold(&mut self) -> io::Result<()> {
        let end = Instant::now() + self.spec.hold;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            self.wait((end - now).min(Duration::from_millis(100)))?;
            let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for i in ready {
                if self.conns[i].state == State::Open {
                    self.check_open(i);
                }
            }
        }
    }

    /// Sends a probe on every open connection and waits for the answers;
    /// returns the phase's seconds and the answers' round-trip times.
    fn probe(&mut self) -> io::Result<(f64, Histogram<u64>)> {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds");
        let start = Instant::now();
        let deadline = start + self.spec.probe_timeout;
        let mut waiting = 0usize;
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Open {
                self.conns[i].state = State::Probing;
                self.conns[i].since = Instant::now();
                waiting += 1;
                if self.step_probe(i, &mut latency) {
                    waiting -= 1;
                }
            }
        }
        let mut last = start;
        while waiting > 0 {
            let now = Instant::now();
            if now >= deadline {
                last = deadline;
                break;
            }
            self.wait((deadline - now).min(Duration::from_millis(100)))?;
            let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for i in ready {
                if self.conns[i].state == State::Probing && self.step_probe(i, &mut latency) {
                    waiting -= 1;
                    last = Instant::now();
                }
            }
        }
        Ok((last.duration_since(start).as_secs_f64(), latency))
    }

    /// Writes what is left of connection `i`'s probe and reads what is
    /// there of its answer; true once the probe is settled (answered or failed).
    fn step_probe(&mut self, i: usize, latency: &mut Histogram<u64>) -> bool {
        let size = self.spec.size;
        let c = &mut self.conns[i];
        let Some(s) = c.stream.as_mut() else { return true };
        let mut s = load::MaybeTls { tcp: s, tls: c.tls.as_deref_mut() };
        let out = [b'p'; 1024];
        while c.sent < size {
            let n = (size - c.sent).min(out.len());
            match s.write(&out[..n]) {
                Ok(0) => {
                    c.state = State::Failed;
                    return true;
                }
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.state = State::Failed;
                    return true;
                }
            }
        }
        while c.got < size {
            let n = (size - c.got).min(self.buf.len());
            match s.read(&mut self.buf[..n]) {
                Ok(0) => {
                    c.state = State::Failed;
                    return true;
                }
                Ok(n) => c.got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Partly written still: the writable edge comes too.
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.state = State::Failed;
                    return true;
                }
            }
        }
        c.state = State::Answered;
        let _ = latency.record(c.since.elapsed().as_nanos().max(1) as u64);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let text = "Name:\tsocketserver\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  123456 kB\n\
                    VmRSS:\t    4520 kB\nRssAnon:\t    1200 kB\nThreads:\t5\nSigQ:\t0/95000\n";
        assert_eq!(parse_status(text), Status { rss_kib: Some(4520), threads: Some(5) });
        assert_eq!(parse_status("Name:\tx\n"), Status { rss_kib: None, threads: None });
        // A kernel thread has no VmRSS line.
        assert_eq!(parse_status("Name:\tkthreadd\nThreads:\t1\n"), Status { rss_kib: None, threads: Some(1) });
    }

    #[test]
    fn netstat_counters() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPSynRetrans\n\
                    TcpExt: 0 3342 3342 2695\n\
                    IpExt: InNoRoutes ListenOverflows\n\
                    IpExt: 0 7\n";
        assert_eq!(parse_netstat(text), (Some(3342), Some(2695)));
        assert_eq!(parse_netstat(""), (None, None));
    }

    #[test]
    fn rss_per_connection() {
        assert_eq!(per_conn(Some(1000), Some(21_000), 2000), Some(10.0));
        assert_eq!(per_conn(Some(1000), Some(900), 100), Some(-1.0));
        assert_eq!(per_conn(None, Some(900), 100), None);
        assert_eq!(per_conn(Some(1000), Some(2000), 0), None);
    }

    /// A small end-to-end run against an echo server on a thread per
    /// connection: every connection opens and answers.
    #[test]
    fn holds_and_probes_a_few_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for s in listener.incoming().take(20) {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let spec = IdleSpec {
            addr,
            connections: 20,
            size: 64,
            parallel: 4,
            connect_timeout: Duration::from_secs(5),
            max_time: Duration::from_secs(10),
            hold: Duration::from_millis(50),
            probe_timeout: Duration::from_secs(5),
            server_pid: Some(std::process::id()),
            tls: None,
        };
        let row = run(&spec, "test").expect("run");
        assert_eq!((row.connected, row.connect_failed, row.answered), (20, 0, 20), "{row:?}");
        assert!(row.rss_kib.is_some() && row.threads.is_some(), "{row:?}");
    }
}
