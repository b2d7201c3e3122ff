//! The load generator: many connections per thread on mio, each a closed
//! loop (send, wait for the whole answer, send again), latencies in an
//! HDR histogram. 1,000 connections take a few threads, not 1,000.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

/// What one client does in a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A long-lived connection: write `size` bytes, read them back, repeat.
    TcpEcho,
    /// A long-lived connection: write a line of `size` bytes (its last
    /// `\n`), read one line back (any length), repeat.
    TcpLine,
    /// Connect, write `size` bytes, half-close, read them back and the end
    /// of stream, close; repeat with a new connection. Over TLS: connect,
    /// handshake, write, read the echo, close_notify and half-close, read
    /// to the end of stream, close.
    TcpConnect,
    /// Send a datagram of `size` bytes, wait for it back (or count it lost
    /// after the timeout), repeat.
    UdpEcho,
}

/// One load run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub mode: Mode,
    pub addr: SocketAddr,
    pub clients: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub threads: usize,
    /// A datagram (or, for TCP, an answer) not back within this long is lost.
    pub timeout: Duration,
    /// TCP echo: every Nth request of a client is a slow one (its first
    /// byte `S`, which a `mixed:MS` server handler sleeps on); 0: none.
    pub slow_every: u64,
    /// TCP modes: speak TLS (a handshake after each connect).
    pub tls: Option<TlsClient>,
}

/// How the load's TCP clients speak TLS.
#[derive(Clone, Debug)]
pub struct TlsClient {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

/// What a run measured (only the measurement window, after the warm-up).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    /// Datagrams that never came back.
    pub lost: u64,
    /// Clients that never got a single answer during the whole run.
    pub unserved: u64,
    pub elapsed: Duration,
    /// Latency of each request, in nanoseconds (the fast ones only, when
    /// some are slow).
    pub latency: Histogram<u64>,
    /// Latency of each slow request (`slow_every`), in nanoseconds.
    pub latency_slow: Histogram<u64>,
    /// CPU time the generator threads used.
    pub generator_cpu: Duration,
    /// TLS: the protocol version and cipher suite the first handshake
    /// agreed on.
    pub tls_negotiated: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs the load, spreading clients over `spec.threads` threads; `tick` is
/// called about every 100 ms with the requests so far (for progress).
pub fn run(spec: &Spec, tick: &(dyn Fn(u64) + Sync)) -> io::Result<Outcome> {
    let threads = spec.threads.clamp(1, spec.clients.max(1));
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let counter = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<io::Result<ThreadOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let clients = spec.clients / threads + usize::from(t < spec.clients % threads);
                let counter = &counter;
                scope.spawn(move || {
                    let mut worker = Worker::new(spec, clients, measure_from, end, counter)?;
                    worker.run()?;
                    Ok(worker.finish())
                })
            })
            .collect();
        // Progress while the workers run.
        while handles.iter().any(|h| !h.is_finished()) {
            tick(counter.load(std::sync::atomic::Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("load thread panicked"))))
            .collect()
    });
    let mut total = Outcome {
        requests: 0,
        errors: 0,
        lost: 0,
        unserved: 0,
        elapsed: spec.duration,
        latency: histogram(),
        latency_slow: histogram(),
        generator_cpu: Duration::ZERO,
        tls_negotiated: None,
    };
    for r in results {
        let r = r?;
        total.tls_negotiated = total.tls_negotiated.or(r.tls_negotiated);
        total.requests += r.requests;
        total.errors += r.errors;
        total.lost += r.lost;
        total.unserved += r.unserved;
        total.generator_cpu += r.cpu;
        total.latency.add(&r.latency).map_err(|e| io::Error::other(e.to_string()))?;
        total.latency_slow.add(&r.latency_slow).map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(total)
}

struct ThreadOutcome {
    requests: u64,
    errors: u64,
    lost: u64,
    unserved: u64,
    latency: Histogram<u64>,
    latency_slow: Histogram<u64>,
    cpu: Duration,
    tls_negotiated: Option<String>,
}

enum Socket {
    Tcp(TcpStream),
    Udp(UdpSocket),
    None,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    /// TLS: connected, the handshake under way.
    Handshaking,
    Writing,
    Reading,
    /// Connect mode: answer complete, waiting for the end of stream.
    Draining,
    Dead,
}

struct Client {
    socket: Socket,
    /// TLS: the client side of the connection over `socket`.
    tls: Option<Box<rustls::ClientConnection>>,
    state: State,
    written: usize,
    read: usize,
    started: Instant,
    served: bool,
    /// Requests begun, and whether the one under way is a slow one.
    sent: u64,
    slow: bool,
}

struct Worker<'a> {
    spec: &'a Spec,
    poll: Poll,
    clients: Vec<Client>,
    out: Vec<u8>,
    /// A slow request: `out` with `S` first.
    out_slow: Vec<u8>,
    inbuf: Vec<u8>,
    measure_from: Instant,
    end: Instant,
    counter: &'a std::sync::atomic::AtomicU64,
    requests: u64,
    errors: u64,
    lost: u64,
    latency: Histogram<u64>,
    latency_slow: Histogram<u64>,
    cpu_start: Duration,
    tls_negotiated: Option<String>,
}

impl<'a> Worker<'a> {
    fn new(
        spec: &'a Spec,
        n: usize,
        measure_from: Instant,
        end: Instant,
        counter: &'a std::sync::atomic::AtomicU64,
    ) -> io::Result<Worker<'a>> {
        let mut w = Worker {
            spec,
            poll: Poll::new()?,
            clients: Vec::with_capacity(n),
            out: (0..spec.size).map(|i| b'a' + (i % 26) as u8).collect(),
            out_slow: (0..spec.size).map(|i| if i == 0 { b'S' } else { b'a' + (i % 26) as u8 }).collect(),
            inbuf: vec![0; (spec.size.max(1) + 1).max(if spec.mode == Mode::TcpLine { 4096 } else { 0 })],
            measure_from,
            end,
            counter,
            requests: 0,
            errors: 0,
            lost: 0,
            latency: histogram(),
            latency_slow: histogram(),
            cpu_start: thread_cpu(),
            tls_negotiated: None,
        };
        if spec.mode == Mode::TcpLine {
            for out in [&mut w.out, &mut w.out_slow] {
                if let Some(last) = out.last_mut() {
                    *last = b'\n';
                }
            }
        }
        for i in 0..n {
            w.clients.push(Client {
                socket: Socket::None,
                tls: None,
                state: State::Dead,
                written: 0,
                read: 0,
                started: Instant::now(),
                served: false,
                // Staggered, so that clients are not slow all at once.
                sent: i as u64,
                slow: false,
            });
            w.open(i)?;
        }
        Ok(w)
    }

    /// Opens (or reopens) client `i`'s socket and starts its first request.
    fn open(&mut self, i: usize) -> io::Result<()> {
        let token = Token(i);
        let c = &mut self.clients[i];
        c.written = 0;
        c.read = 0;
        c.started = Instant::now();
        c.tls = None;
        match self.spec.mode {
            Mode::TcpEcho | Mode::TcpLine | Mode::TcpConnect => {
                let mut s = connect(self.spec.addr, i)?;
                self.poll.registry().register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
                c.socket = Socket::Tcp(s);
                c.state = State::Connecting;
            }
            Mode::UdpEcho => {
                let local: SocketAddr =
                    if self.spec.addr.is_ipv4() { "127.0.0.1:0".parse() } else { "[::1]:0".parse() }.expect("literal");
                let mut s = UdpSocket::bind(local)?;
                s.connect(self.spec.addr)?;
                self.poll.registry().register(&mut s, token, Interest::READABLE)?;
                c.socket = Socket::Udp(s);
                c.state = State::Writing;
                self.drive(i);
            }
        }
        Ok(())
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if now >= self.end {
                return Ok(());
            }
            let wait = (self.end - now).min(Duration::from_millis(10));
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                self.drive(ev.token().0);
            }
            self.expire();
        }
    }

    /// Requests that waited longer than the timeout: a lost datagram is
    /// counted and sent again; a stuck TCP client is left alone (it shows
    /// up as unserved or as missing throughput).
    fn expire(&mut self) {
        if self.spec.mode != Mode::UdpEcho {
            return;
        }
        let now = Instant::now();
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.state == State::Reading && now.duration_since(c.started) > self.spec.timeout {
                if c.started >= self.measure_from {
                    self.lost += 1;
                }
                c.state = State::Writing;
                c.written = 0;
                c.started = now;
                self.drive(i);
            }
        }
    }

    fn fail(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if let Socket::Tcp(s) = &mut c.socket {
            let _ = self.poll.registry().deregister(s);
        }
        c.socket = Socket::None;
        c.tls = None;
        c.state = State::Dead;
        if Instant::now() >= self.measure_from {
            self.errors += 1;
        }
        // Connect mode goes on with a new connection; a broken long-lived
        // connection stays broken (the server dropped it).
        if self.spec.mode == Mode::TcpConnect && Instant::now() < self.end {
            let _ = self.open(i);
        }
    }

    fn complete(&mut self, i: usize) {
        let now = Instant::now();
        let c = &mut self.clients[i];
        c.served = true;
        c.sent += 1;
        if c.started >= self.measure_from && now <= self.end {
            self.requests += 1;
            self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let took = now.duration_since(c.started).as_nanos().max(1) as u64;
            let _ = if c.slow { self.latency_slow.record(took) } else { self.latency.record(took) };
        }
    }

    /// Moves client `i` as far as its socket allows without blocking.
    fn drive(&mut self, i: usize) {
        loop {
            let state = self.clients[i].state;
            let step = match state {
                State::Dead => return,
                State::Connecting => self.connecting(i),
                State::Handshaking => self.handshaking(i),
                State::Writing => self.writing(i),
                State::Reading => self.reading(i),
                State::Draining => self.draining(i),
            };
            match step {
                Ok(true) => continue,
                Ok(false) => return,
                Err(_) => {
                    self.fail(i);
                    return;
                }
            }
        }
    }

    fn connecting(&mut self, i: usize) -> io::Result<bool> {
        let c = &mut self.clients[i];
        let Socket::Tcp(s) = &c.socket else { return Ok(false) };
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        match s.peer_addr() {
            Ok(_) => {
                let _ = s.set_nodelay(true);
                c.state = State::Writing;
                if let Some(tls) = &self.spec.tls {
                    let conn = rustls::ClientConnection::new(tls.config.clone(), tls.name.clone())
                        .map_err(crate::tls::io_error)?;
                    c.tls = Some(Box::new(conn));
                    c.state = State::Handshaking;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected || e.raw_os_error() == Some(libc::EINPROGRESS) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn writing(&mut self, i: usize) -> io::Result<bool> {
        let size = self.spec.size;
        let mode = self.spec.mode;
        let slow_every = self.spec.slow_every;
        let c = &mut self.clients[i];
        if c.written == 0 && matches!(mode, Mode::TcpEcho | Mode::TcpLine) {
            c.started = Instant::now();
            c.slow = slow_every > 0 && c.sent.is_multiple_of(slow_every);
        }
        let out = if c.slow { &self.out_slow } else { &self.out };
        match &mut c.socket {
            Socket::Tcp(s) if c.tls.is_some() => {
                let tls = c.tls.as_mut().expect("checked");
                loop {
                    if !flush_tls(tls, s)? {
                        return Ok(false);
                    }
                    if c.written == size {
                        break;
                    }
                    c.written += tls.writer().write(&out[c.written..])?;
                }
                // Connect mode over TLS: no half-close yet (TLS has none);
                // close_notify once the echo is back.
            }
            Socket::Tcp(s) => {
                while c.written < size {
                    match s.write(&out[c.written..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => c.written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if mode == Mode::TcpConnect {
                    s.shutdown(Shutdown::Write)?;
                }
            }
            Socket::Udp(s) => {
                c.started = Instant::now();
                match s.send(&self.out) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            Socket::None => return Ok(false),
        }
        c.read = 0;
        c.state = State::Reading;
        Ok(true)
    }

    fn reading(&mut self, i: usize) -> io::Result<bool> {
        let size = self.spec.size;
        let mode = self.spec.mode;
        let c = &mut self.clients[i];
        match &mut c.socket {
            Socket::Tcp(s) if c.tls.is_some() => {
                let tls = c.tls.as_mut().expect("checked");
                // What is still to go out first (the socket took part of it).
                flush_tls(tls, s)?;
                loop {
                    let want = if mode == Mode::TcpLine { self.inbuf.len() } else { size - c.read };
                    match tls.reader().read(&mut self.inbuf[..want]) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) if mode == Mode::TcpLine && self.inbuf[..n].contains(&b'\n') => break,
                        Ok(n) => {
                            c.read += n;
                            if mode != Mode::TcpLine && c.read >= size {
                                break;
                            }
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    if !read_tls(tls, s)? {
                        return Ok(false);
                    }
                }
                if mode == Mode::TcpConnect {
                    // Connect, handshake, one echo, close: close_notify and
                    // a half-close, then the server's end of stream, as the
                    // plaintext mode (the server closes first; the client
                    // closing first had its TIME_WAIT tuples reused while
                    // the server's side lingered: SYNs answered by a
                    // challenge ACK, 1 s stalls).
                    tls.send_close_notify();
                    flush_tls(tls, s)?;
                    s.shutdown(Shutdown::Write)?;
                    c.state = State::Draining;
                    return Ok(true);
                }
            }
            Socket::Tcp(s) if mode == Mode::TcpLine => loop {
                // One line back, however long: done at its `\n`.
                match s.read(&mut self.inbuf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) if self.inbuf[..n].contains(&b'\n') => break,
                    Ok(n) => c.read += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            Socket::Tcp(s) => {
                while c.read < size {
                    match s.read(&mut self.inbuf[..size - c.read]) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => c.read += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Socket::Udp(s) => match s.recv(&mut self.inbuf) {
                Ok(n) if n == size => {}
                Ok(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "datagram of the wrong size")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            },
            Socket::None => return Ok(false),
        }
        if mode == Mode::TcpConnect {
            c.state = State::Draining;
            return Ok(true);
        }
        self.complete(i);
        let c = &mut self.clients[i];
        c.written = 0;
        c.state = if Instant::now() < self.end { State::Writing } else { State::Dead };
        Ok(true)
    }

    fn draining(&mut self, i: usize) -> io::Result<bool> {
        let c = &mut self.clients[i];
        let Socket::Tcp(s) = &mut c.socket else { return Ok(false) };
        while let Some(tls) = c.tls.as_mut() {
            // The server's close_notify (or not: tokio-rustls closes
            // without one), then its end of stream.
            match tls.read_tls(s) {
                Ok(0) => break,
                Ok(_) => {
                    tls.process_new_packets().map_err(crate::tls::io_error)?;
                    match tls.reader().read(&mut self.inbuf) {
                        Ok(0) => {}
                        Ok(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "more bytes than sent")),
                        Err(_) => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        loop {
            if c.tls.is_some() {
                break;
            }
            match s.read(&mut self.inbuf) {
                Ok(0) => break,
                Ok(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "more bytes than sent")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let _ = self.poll.registry().deregister(s);
        self.complete(i);
        self.clients[i].socket = Socket::None;
        self.clients[i].tls = None;
        self.clients[i].state = State::Dead;
        if Instant::now() < self.end {
            self.open(i)?;
        }
        Ok(false)
    }

    /// TLS: moves the handshake on; on to writing once it is done.
    fn handshaking(&mut self, i: usize) -> io::Result<bool> {
        let c = &mut self.clients[i];
        let (Socket::Tcp(s), Some(tls)) = (&mut c.socket, c.tls.as_mut()) else { return Ok(false) };
        if !handshake(tls, s)? {
            return Ok(false);
        }
        if self.tls_negotiated.is_none() {
            self.tls_negotiated = Some(negotiated(tls));
        }
        c.state = State::Writing;
        Ok(true)
    }

    fn finish(self) -> ThreadOutcome {
        ThreadOutcome {
            requests: self.requests,
            errors: self.errors,
            lost: self.lost,
            unserved: self.clients.iter().filter(|c| !c.served).count() as u64,
            latency: self.latency,
            latency_slow: self.latency_slow,
            cpu: thread_cpu().saturating_sub(self.cpu_start),
            tls_negotiated: self.tls_negotiated,
        }
    }
}

/// Sends what rustls holds for the socket; `Ok(false)` when the socket
/// takes no more for now.
fn flush_tls(tls: &mut rustls::ClientConnection, s: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(s) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads TLS records from the socket into rustls and processes them;
/// `Ok(false)` when the socket has nothing more for now.
fn read_tls(tls: &mut rustls::ClientConnection, s: &mut TcpStream) -> io::Result<bool> {
    loop {
        match tls.read_tls(s) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                let processed = tls.process_new_packets();
                // An alert that says why goes out before the error.
                let _ = flush_tls(tls, s);
                processed.map_err(crate::tls::io_error)?;
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A non-blocking connection, over TLS or not, as `Read` and `Write`
/// (`bench tcp-idle`): a TLS write is taken whole by rustls and sent as far
/// as the socket takes it; a read sends what is left first.
pub struct MaybeTls<'a> {
    pub tcp: &'a mut TcpStream,
    pub tls: Option<&'a mut rustls::ClientConnection>,
}

impl Read for MaybeTls<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else { return self.tcp.read(buf) };
        flush_tls(tls, self.tcp)?;
        loop {
            match tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                other => return other,
            }
            match read_tls(tls, self.tcp) {
                Ok(true) => {}
                Ok(false) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for MaybeTls<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else { return self.tcp.write(buf) };
        if !flush_tls(tls, self.tcp)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = tls.writer().write(buf)?;
        flush_tls(tls, self.tcp)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// "TLSv1_3 TLS13_AES_128_GCM_SHA256 X25519": what a handshake agreed on.
pub fn negotiated(tls: &rustls::ClientConnection) -> String {
    let version = tls.protocol_version().map_or("?".into(), |v| format!("{v:?}"));
    let suite = tls.negotiated_cipher_suite().map_or("?".into(), |s| format!("{:?}", s.suite()));
    let group = tls.negotiated_key_exchange_group().map_or("?".into(), |g| format!("{:?}", g.name()));
    format!("{version} {suite} {group}")
}

/// Moves a TLS handshake on: `Ok(true)` once it is done.
pub fn handshake(tls: &mut rustls::ClientConnection, s: &mut TcpStream) -> io::Result<bool> {
    loop {
        if !flush_tls(tls, s)? {
            return Ok(false);
        }
        if !tls.is_handshaking() {
            return Ok(true);
        }
        if !read_tls(tls, s)? {
            return Ok(false);
        }
    }
}

/// Starts a non-blocking connect. Against an IPv4 loopback server, client
/// `i` connects from 127.0.0.(2 + i % 200): connection churn then spreads
/// over many source addresses instead of exhausting one address's
/// ephemeral ports (and their TIME_WAIT slots) and capping the load.
pub fn connect(addr: SocketAddr, i: usize) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else { return TcpStream::connect(addr) };
    if !v4.ip().is_loopback() {
        return TcpStream::connect(addr);
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    // Let connect, not bind, choose the port — by the whole 4-tuple —
    // instead of bind searching the range for a port free on this address,
    // which grows slow as TIME_WAIT sockets pile up.
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 200) as u8);
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(socket)))
}

/// CPU time (user + system) of the calling thread, from /proc (10 ms steps).
pub fn thread_cpu() -> Duration {
    cpu_from_stat("/proc/thread-self/stat")
}

/// CPU time (user + system) of a whole process, from /proc.
pub fn process_cpu(pid: u32) -> Duration {
    cpu_from_stat(&format!("/proc/{pid}/stat"))
}

fn cpu_from_stat(path: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(path) else { return Duration::ZERO };
    // Fields after the command name (which may contain spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}
