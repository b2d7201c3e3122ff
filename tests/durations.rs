//! `Duration::MAX` means for ever, and 0 means not at all, in every
//! duration the library takes: every setting of the builder, of the
//! strategies and of the PROXY protocol, a handle's shutdown grace and its
//! wait for a shutdown. Each is walked with 0, 1 ns and `Duration::MAX`,
//! over every transport and every strategy: the server serves a request
//! through `handle_request` and through `serve_forever`, a connection left
//! waiting between requests meets the shutdown, and `serve_forever`
//! returns. Nothing may panic anywhere: not `serve_forever`, not a library
//! thread (a panic hook counts those), not a handler (reported through
//! `handle_error` and `Stats::panics`, from a forked child too).
//!
//! The cases run side by side on a few threads, each bounded in time: a
//! case that hangs fails as hung instead of stalling the file.

mod util;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use socketserver::proxy::ProxyProtocol;
use socketserver::transport::{Tcp, Udp, UnixDatagram, UnixStream};
use socketserver::{
    Address, AnyStrategy, Builder, DatagramRequest, Event, Forking, Handled, Server, ServerHandle, StreamRequest,
    StreamTransport, Synchronous, ThreadPool, Threading, Transport,
};
use util::echo_parked_lines;

/// How long a client waits for an answer that must come.
const ANSWER: Duration = Duration::from_secs(5);
/// How long a case may take in all before it counts as hung.
const CASE_LIMIT: Duration = Duration::from_secs(12);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Tcp,
    Udp,
    UnixStream,
    UnixDatagram,
}

impl Net {
    fn stream(self) -> bool {
        matches!(self, Net::Tcp | Net::UnixStream)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strat {
    Synchronous,
    Threading,
    ThreadPool,
    Forking,
    Event,
}

/// Every duration a user can give the library about a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    ReadTimeout,
    WriteTimeout,
    IdleTimeout,
    Timeout,
    GracePeriod,
    DrainWindow,
    ServiceInterval,
    /// `ProxyProtocol::header_timeout` (stream servers only).
    HeaderTimeout,
    /// `ThreadPool::keep_alive`, `Event::keep_alive`.
    KeepAlive,
    /// `ServerHandle::shutdown_with_grace`.
    ShutdownWithGrace,
    /// `ServerHandle::wait_shutdown_requested`.
    WaitShutdownRequested,
}

const SETTINGS: [Setting; 11] = [
    Setting::ReadTimeout,
    Setting::WriteTimeout,
    Setting::IdleTimeout,
    Setting::Timeout,
    Setting::GracePeriod,
    Setting::DrainWindow,
    Setting::ServiceInterval,
    Setting::HeaderTimeout,
    Setting::KeepAlive,
    Setting::ShutdownWithGrace,
    Setting::WaitShutdownRequested,
];

const VALUES: [Duration; 3] = [Duration::ZERO, Duration::from_nanos(1), Duration::MAX];

#[derive(Clone, Copy, Debug)]
struct Case {
    net: Net,
    strat: Strat,
    setting: Setting,
    value: Duration,
}

impl Case {
    fn applies(&self) -> bool {
        match self.setting {
            // Settings of stream servers only: a datagram server has none.
            Setting::ReadTimeout | Setting::WriteTimeout | Setting::IdleTimeout | Setting::HeaderTimeout => {
                self.net.stream()
            }
            Setting::KeepAlive => matches!(self.strat, Strat::ThreadPool | Strat::Event),
            _ => true,
        }
    }

    /// A short setting that may end a connection before its answer: a
    /// client then sees it closed, which is what the setting asked for.
    fn may_close(&self) -> bool {
        self.value < Duration::from_millis(1)
            && matches!(
                self.setting,
                Setting::ReadTimeout | Setting::WriteTimeout | Setting::IdleTimeout | Setting::HeaderTimeout
            )
    }

    /// The one setting 0 is refused for, at bind: an interval of no time
    /// would make `serve_forever` spin.
    fn refused(&self) -> bool {
        self.setting == Setting::ServiceInterval && self.value.is_zero()
    }

    fn strategy(&self) -> AnyStrategy {
        let keep_alive = if self.setting == Setting::KeepAlive { self.value } else { Duration::from_secs(10) };
        match self.strat {
            Strat::Synchronous => Synchronous.into(),
            Strat::Threading => Threading::new().into(),
            // Room to grow, so that a surplus worker waits `keep_alive`.
            Strat::ThreadPool => ThreadPool::new(1).max_workers(3).keep_alive(keep_alive).into(),
            Strat::Forking => Forking::new().into(),
            Strat::Event => Event::new().pollers(1).max_workers(3).keep_alive(keep_alive).into(),
        }
    }
}

/// Panics anywhere in this process (the library's threads included), with
/// where and on which thread. A forked child's panics are not seen here:
/// they reach the parent through `handle_error` and `Stats::panics`.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PARENT: AtomicU32 = AtomicU32::new(0);

fn count_panics() {
    PARENT.store(std::process::id(), SeqCst);
    std::panic::set_hook(Box::new(|info| {
        // In a forked child, take no lock: another thread of the parent may
        // have held it at the fork.
        if std::process::id() != PARENT.load(SeqCst) {
            return;
        }
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let line = format!("thread {thread}: {info}");
        eprintln!("{line}");
        PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }));
}

/// What `handle_error` was told that says a panic: a handler's (the
/// library's read panicking inside it, say), or a child that died.
#[derive(Clone, Default)]
struct Reported(Arc<Mutex<Vec<String>>>);

impl Reported {
    fn note(&self, err: &io::Error) {
        let text = err.to_string();
        // (A child killed when the grace period ends exits with 137: SIGKILL.)
        let died = text.contains("exited with status") && !text.contains("status 137");
        if text.contains("panicked") || died {
            self.0.lock().unwrap().push(text);
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A server of any transport and strategy, as the case drives it.
trait AnyServer: Send {
    fn handle_request(&self) -> io::Result<Handled>;
    fn serve_forever(&self) -> io::Result<()>;
    fn handle(&self) -> ServerHandle;
    fn address(&self) -> Address;
}

impl<T: Transport + Send> AnyServer for Server<T, AnyStrategy> {
    fn handle_request(&self) -> io::Result<Handled> {
        Server::handle_request(self)
    }
    fn serve_forever(&self) -> io::Result<()> {
        Server::serve_forever(self)
    }
    fn handle(&self) -> ServerHandle {
        Server::handle(self)
    }
    fn address(&self) -> Address {
        self.server_address().clone()
    }
}

fn echo_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    req.reply(req.data())
}

/// The settings every transport has.
fn common<T: Transport>(case: &Case, reported: &Reported) -> Builder<T, AnyStrategy> {
    let reported = reported.clone();
    let b =
        Server::<T, AnyStrategy>::builder().strategy(case.strategy()).handle_error(move |_, _, err| reported.note(err));
    let v = case.value;
    match case.setting {
        Setting::Timeout => b.timeout(v),
        Setting::GracePeriod => b.grace_period(v),
        Setting::DrainWindow => b.drain_window(v),
        Setting::ServiceInterval => b.service_interval(v),
        Setting::ReadTimeout
        | Setting::WriteTimeout
        | Setting::IdleTimeout
        | Setting::HeaderTimeout
        | Setting::KeepAlive
        | Setting::ShutdownWithGrace
        | Setting::WaitShutdownRequested => b,
    }
}

fn stream_builder<T: StreamTransport>(case: &Case, reported: &Reported) -> Builder<T, AnyStrategy> {
    let b = common::<T>(case, reported);
    let v = case.value;
    match case.setting {
        Setting::ReadTimeout => b.read_timeout(v),
        Setting::WriteTimeout => b.write_timeout(v),
        Setting::IdleTimeout => b.idle_timeout(v),
        Setting::HeaderTimeout => b.proxy_protocol(ProxyProtocol::trusting(|_| true).header_timeout(v)),
        _ => b,
    }
}

fn bind(case: &Case, dir: &Path, reported: &Reported) -> io::Result<Box<dyn AnyServer>> {
    let path = dir.join("server.sock");
    Ok(match case.net {
        Net::Tcp => Box::new(stream_builder::<Tcp>(case, reported).bind("127.0.0.1:0", echo_parked_lines)?),
        Net::UnixStream => Box::new(stream_builder::<UnixStream>(case, reported).bind(&path, echo_parked_lines)?),
        Net::Udp => Box::new(common::<Udp>(case, reported).bind("127.0.0.1:0", echo_datagram)?),
        Net::UnixDatagram => Box::new(common::<UnixDatagram>(case, reported).bind(&path, echo_datagram)?),
    })
}

/// A client of a stream server.
trait Conn: Read + Write + Send {}
impl<C: Read + Write + Send> Conn for C {}

/// What a client got back.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Line(String),
    /// End of stream or reset: the server closed the connection.
    Closed,
    /// Nothing within `ANSWER`.
    Nothing,
}

fn connect(case: &Case, addr: &Address) -> io::Result<Box<dyn Conn>> {
    Ok(match case.net {
        Net::Tcp => {
            let s = TcpStream::connect(addr.as_inet().unwrap())?;
            s.set_read_timeout(Some(ANSWER))?;
            Box::new(s)
        }
        _ => {
            let s = StdUnixStream::connect(addr.as_path().unwrap())?;
            s.set_read_timeout(Some(ANSWER))?;
            Box::new(s)
        }
    })
}

/// Sends `lines` (after a PROXY header, when the server expects one); a
/// server that already closed may refuse them.
fn send(case: &Case, c: &mut dyn Conn, lines: &str, first: bool) {
    let mut out = String::new();
    if first && case.setting == Setting::HeaderTimeout {
        out.push_str("PROXY TCP4 192.0.2.1 192.0.2.2 1111 2222\r\n");
    }
    out.push_str(lines);
    let _ = c.write_all(out.as_bytes());
}

fn answer(c: &mut dyn Conn) -> Answer {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match c.read(&mut byte) {
            Ok(0) => return Answer::Closed,
            Ok(_) if byte[0] == b'\n' => return Answer::Line(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) => line.push(byte[0]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Answer::Nothing;
            }
            Err(_) => return Answer::Closed,
        }
    }
}

/// A client of a datagram server.
enum Datagrams {
    Udp(UdpSocket, std::net::SocketAddr),
    Unix(StdUnixDatagram, PathBuf),
}

impl Datagrams {
    fn new(case: &Case, addr: &Address, dir: &Path, name: &str) -> Datagrams {
        match case.net {
            Net::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(ANSWER)).unwrap();
                Datagrams::Udp(s, addr.as_inet().unwrap())
            }
            _ => {
                let s = StdUnixDatagram::bind(dir.join(name)).unwrap();
                s.set_read_timeout(Some(ANSWER)).unwrap();
                Datagrams::Unix(s, addr.as_path().unwrap().to_path_buf())
            }
        }
    }

    fn send(&self, data: &[u8]) {
        match self {
            Datagrams::Udp(s, to) => drop(s.send_to(data, to)),
            Datagrams::Unix(s, to) => drop(s.send_to(data, to)),
        }
    }

    fn answer(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 256];
        let n = match self {
            Datagrams::Udp(s, _) => s.recv(&mut buf).ok()?,
            Datagrams::Unix(s, _) => s.recv(&mut buf).ok()?,
        };
        Some(buf[..n].to_vec())
    }
}

/// Checks one answer: the echo, or — for a setting that may close the
/// connection first — a clean close.
fn expect_echo(case: &Case, what: &str, got: Answer, problems: &mut Vec<String>) {
    match got {
        Answer::Line(l) if l == "ping" => {}
        Answer::Closed if case.may_close() => {}
        other => problems.push(format!("{what}: expected the echo, got {other:?}")),
    }
}

/// Waits for `thread` for at most what is left of the case.
fn join_within<T>(thread: std::thread::JoinHandle<T>, until: Instant) -> Option<std::thread::Result<T>> {
    while !thread.is_finished() {
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Some(thread.join())
}

/// A request through `serve_forever`; then, left waiting between requests
/// when the shutdown comes, a request within the drain window is served or
/// the connection closed, and the client leaves.
fn serve_one(case: &Case, mut c: Box<dyn Conn>, shutdown: &dyn Fn(), problems: &mut Vec<String>) {
    send(case, &mut *c, "ping\n", true);
    expect_echo(case, "serve_forever", answer(&mut *c), problems);
    shutdown();
    std::thread::sleep(Duration::from_millis(5));
    send(case, &mut *c, "ping\n", false);
    let _ = answer(&mut *c);
    send(case, &mut *c, "quit\n", false);
    // Closed now, or the server lingers for the client's end.
}

/// Runs one case; what went wrong, if anything.
fn run_case(case: Case, dir: PathBuf) -> Vec<String> {
    let until = Instant::now() + CASE_LIMIT - Duration::from_secs(1);
    let mut problems = Vec::new();
    let reported = Reported::default();
    let server = match bind(&case, &dir, &reported) {
        Ok(s) if !case.refused() => s,
        Ok(_) => return vec!["bind took service_interval(0), which would spin".into()],
        Err(e) if case.refused() && e.kind() == io::ErrorKind::InvalidInput => return vec![],
        Err(e) => return vec![format!("bind failed: {e}")],
    };
    let addr = server.address();
    let handle = server.handle();

    // handle_request, the request sent first: served whatever the timeout.
    if case.setting == Setting::Timeout && case.value != Duration::MAX {
        match server.handle_request() {
            Ok(Handled::TimedOut) => {}
            other => problems.push(format!("handle_request with nothing to take: {other:?}")),
        }
    }
    if case.net.stream() {
        let mut c = connect(&case, &addr).expect("connect before serving");
        send(&case, &mut *c, "ping\nquit\n", true);
        // Read as it comes: a handler run in place (`Synchronous`, `Event`)
        // closes before `handle_request` returns, lingering until its answer
        // is read.
        let reader = std::thread::spawn(move || answer(&mut *c));
        let handled = server.handle_request();
        let got = reader.join().expect("the client's reader");
        match handled {
            Ok(Handled::Served) => expect_echo(&case, "handle_request", got, &mut problems),
            other => problems.push(format!("handle_request: {other:?}")),
        }
    } else {
        let c = Datagrams::new(&case, &addr, &dir, "client-1.sock");
        c.send(b"ping");
        match server.handle_request() {
            Ok(Handled::Served) if c.answer().as_deref() == Some(b"ping") => {}
            Ok(Handled::Served) => problems.push("handle_request: no echo".into()),
            other => problems.push(format!("handle_request: {other:?}")),
        }
    }

    // serve_forever.
    let serving = std::thread::spawn(move || server.serve_forever());
    let waiter = (case.setting == Setting::WaitShutdownRequested).then(|| {
        let handle = handle.clone();
        std::thread::spawn(move || handle.wait_shutdown_requested(Some(case.value)))
    });
    if let Some(waiter) = &waiter {
        // Waiting by now, and for ever if need be: only the shutdown ends it.
        std::thread::sleep(Duration::from_millis(20));
        if case.value == Duration::MAX && waiter.is_finished() {
            problems.push("wait_shutdown_requested(MAX) returned before any shutdown".into());
        }
    }
    let shutdown = || match case.setting {
        Setting::ShutdownWithGrace => handle.shutdown_with_grace(case.value),
        _ => handle.shutdown(),
    };
    if case.net.stream() {
        // (Refused when serve_forever died at once.)
        match connect(&case, &addr) {
            Ok(c) => serve_one(&case, c, &shutdown, &mut problems),
            Err(e) => {
                problems.push(format!("serve_forever: cannot connect: {e}"));
                shutdown();
            }
        }
    } else {
        let c = Datagrams::new(&case, &addr, &dir, "client-2.sock");
        c.send(b"ping");
        if c.answer().as_deref() != Some(b"ping") {
            problems.push("serve_forever: no echo".into());
        }
        // One more queued as the shutdown comes.
        c.send(b"ping");
        shutdown();
    }
    match join_within(serving, until) {
        None => problems.push("serve_forever did not return after the shutdown".into()),
        Some(Err(_)) => problems.push("serve_forever panicked".into()),
        Some(Ok(Err(e))) => problems.push(format!("serve_forever failed: {e}")),
        Some(Ok(Ok(()))) => {}
    }
    if let Some(waiter) = waiter {
        match join_within(waiter, until) {
            None => problems.push("wait_shutdown_requested did not return after the shutdown".into()),
            Some(Err(_)) => problems.push("wait_shutdown_requested panicked".into()),
            Some(Ok(_)) => {}
        }
    }
    let stats = handle.stats();
    if stats.panics > 0 {
        problems.push(format!("Stats::panics = {}", stats.panics));
    }
    problems.extend(reported.take().into_iter().map(|e| format!("handle_error: {e}")));
    problems
}

#[test]
fn every_duration_setting_takes_zero_a_nanosecond_and_max_without_a_panic() {
    count_panics();
    let root = std::env::temp_dir().join(format!("socketserver-durations-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut cases = VecDeque::new();
    for net in [Net::Tcp, Net::Udp, Net::UnixStream, Net::UnixDatagram] {
        for strat in [Strat::Synchronous, Strat::Threading, Strat::ThreadPool, Strat::Forking, Strat::Event] {
            for setting in SETTINGS {
                for value in VALUES {
                    let case = Case { net, strat, setting, value };
                    if case.applies() {
                        cases.push_back(case);
                    }
                }
            }
        }
    }
    let total = cases.len();
    let cases = Arc::new(Mutex::new(cases));
    let numbered = Arc::new(AtomicUsize::new(0));
    let (report, reports) = mpsc::channel::<(Case, Vec<String>, Duration)>();
    let started = Instant::now();
    let runners: Vec<_> = (0..8)
        .map(|_| {
            let (cases, numbered, report, root) = (cases.clone(), numbered.clone(), report.clone(), root.clone());
            std::thread::spawn(move || {
                loop {
                    let Some(case) = cases.lock().unwrap().pop_front() else { return };
                    let dir = root.join(numbered.fetch_add(1, SeqCst).to_string());
                    std::fs::create_dir_all(&dir).unwrap();
                    // Each case on a thread of its own, so that one that
                    // hangs is reported, not waited for.
                    let (done, result) = mpsc::channel();
                    let began = Instant::now();
                    std::thread::spawn(move || {
                        let _ = done.send(run_case(case, dir));
                    });
                    let problems = match result.recv_timeout(CASE_LIMIT) {
                        Ok(problems) => problems,
                        Err(mpsc::RecvTimeoutError::Timeout) => vec!["hung".into()],
                        Err(mpsc::RecvTimeoutError::Disconnected) => vec!["the case panicked".into()],
                    };
                    let _ = report.send((case, problems, began.elapsed()));
                }
            })
        })
        .collect();
    drop(report);
    let mut failed = Vec::new();
    let mut slowest = Vec::new();
    for (case, problems, took) in reports {
        if !problems.is_empty() {
            failed.push(format!("{case:?}: {}", problems.join("; ")));
        }
        slowest.push((took, case));
    }
    slowest.sort_by_key(|(took, _)| std::cmp::Reverse(*took));
    for (took, case) in slowest.iter().take(5) {
        eprintln!("slowest: {took:?} {case:?}");
    }
    for r in runners {
        r.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&root);
    let panics = PANICS.lock().unwrap().clone();
    eprintln!("{total} cases in {:?}", started.elapsed());
    assert!(
        failed.is_empty() && panics.is_empty(),
        "{} of {total} cases failed:\n{}\n\n{} panics:\n{}",
        failed.len(),
        failed.join("\n"),
        panics.len(),
        panics.join("\n"),
    );
}

/// Zero is "not at all", never "for ever": a zero read timeout fails a
/// read with nothing to take at once (Python's timeout of 0), a zero idle
/// timeout closes a connection whose handler would wait for it, and a zero
/// write timeout fails a write the peer does not take. (They used to mean
/// no timeout, unlike 1 ns.)
#[test]
fn a_zero_timeout_waits_not_at_all() {
    for setting in [Setting::ReadTimeout, Setting::IdleTimeout, Setting::WriteTimeout] {
        let (tx, rx) = mpsc::channel();
        let builder = socketserver::TcpServer::builder();
        let builder = match setting {
            Setting::ReadTimeout => builder.read_timeout(Duration::ZERO),
            Setting::IdleTimeout => builder.idle_timeout(Duration::ZERO),
            _ => builder.write_timeout(Duration::ZERO),
        };
        let server = builder
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                let start = Instant::now();
                let result = match setting {
                    // More than the socket and the client's kernel take.
                    Setting::WriteTimeout => req.write_all(&vec![0; 32 << 20]),
                    _ => req.next_line().map(drop),
                };
                let _ = tx.send((result.map_err(|e| e.kind()), start.elapsed()));
                Ok(())
            })
            .unwrap()
            .spawn()
            .unwrap();
        // Connected, silent, reading nothing.
        let client = TcpStream::connect(server.server_address().as_inet().unwrap()).unwrap();
        let (result, took) = rx.recv_timeout(ANSWER).unwrap_or_else(|_| panic!("{setting:?}(0) waited"));
        assert_eq!(result, Err(io::ErrorKind::TimedOut), "{setting:?}(0)");
        assert!(took < Duration::from_secs(1), "{setting:?}(0) took {took:?}");
        if setting == Setting::IdleTimeout {
            assert_eq!(server.handle().stats().idle_closed, 1);
        }
        drop(client);
        server.stop().unwrap();
    }
}

/// The durations taken outside the builder follow the rule too: the time
/// server's `request_timeout(Some(Duration::MAX))` (it panicked at the
/// first line), a `Stream`'s timeouts (MAX reads back as for ever, zero as
/// no wait, where std refuses it).
#[test]
fn durations_outside_the_builder_take_max_as_for_ever() {
    let server = socketserver::TcpServer::bind(
        "127.0.0.1:0",
        socketserver::servers::Strftime::new().request_timeout(Some(Duration::MAX)),
    )
    .unwrap()
    .spawn()
    .unwrap();
    let mut c = TcpStream::connect(server.server_address().as_inet().unwrap()).unwrap();
    c.set_read_timeout(Some(ANSWER)).unwrap();
    c.write_all(b"%Y\n").unwrap();
    let Answer::Line(year) = answer(&mut c) else { panic!("no answer") };
    assert!(year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()), "{year:?}");
    drop(c);
    server.stop().unwrap();

    let (a, _b) = StdUnixStream::pair().unwrap();
    let stream = socketserver::Stream::from_unix(a).unwrap();
    stream.set_read_timeout(Some(Duration::MAX)).unwrap();
    assert_eq!(stream.read_timeout(), None);
    stream.set_write_timeout(Some(Duration::ZERO)).unwrap();
    assert_eq!(stream.write_timeout(), Some(Duration::ZERO));
    stream.set_read_timeout(Some(Duration::ZERO)).unwrap();
    let start = Instant::now();
    let err = (&stream).read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(start.elapsed() < Duration::from_secs(1));
}
