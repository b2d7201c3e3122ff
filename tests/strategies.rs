//! What each concurrency strategy promises: caps, growth and shrinking,
//! overflow, reaping, and where requests run.

mod util;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, unbounded};
use socketserver::{Forking, Overflow, ServerHandle, StreamRequest, TcpServer, ThreadPool, Threading};
use util::*;

/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

/// The tests here count threads and fork: run them one at a time so that
/// they do not see each other's threads and children.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads one line (up to and including `\n`, or to EOF) byte by byte.
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            Err(e) => panic!("reading a line failed after {:?}: {e}", String::from_utf8_lossy(&line)),
        }
    }
    String::from_utf8(line).unwrap()
}

/// A client that connected and sent `name` as its first line.
fn client(addr: std::net::SocketAddr, name: &str) -> TcpStream {
    let mut c = tcp_connect(addr);
    c.write_all(format!("{name}\n").as_bytes()).unwrap();
    c
}

/// Handlers that announce themselves and then block until the test releases
/// them, measuring how many run at once.
struct Gate {
    entered_tx: Sender<String>,
    entered_rx: Receiver<String>,
    release_tx: Sender<()>,
    release_rx: Receiver<()>,
    current: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Gate {
    fn new() -> Gate {
        let (entered_tx, entered_rx) = unbounded();
        let (release_tx, release_rx) = unbounded();
        Gate { entered_tx, entered_rx, release_tx, release_rx, current: Arc::default(), peak: Arc::default() }
    }

    /// Reads the client's first line, reports it as entered, waits for a
    /// release, then answers with the same line and returns.
    fn handler(&self) -> impl Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync + 'static {
        let entered = self.entered_tx.clone();
        let release = self.release_rx.clone();
        let current = Arc::clone(&self.current);
        let peak = Arc::clone(&self.peak);
        move |req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?;
            let now = current.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            let _ = entered.send(line.trim_end().to_string());
            let released = release.recv_timeout(TIMEOUT);
            current.fetch_sub(1, SeqCst);
            released.map_err(|_| io::Error::other("never released"))?;
            req.write_all(line.as_bytes())
        }
    }

    /// The name of the next handler to start (waits for it).
    fn entered(&self) -> String {
        self.entered_rx.recv_timeout(TIMEOUT).expect("a handler to start")
    }

    /// As [`entered`](Self::entered), waiting at most `wait` and showing the
    /// server's stats on failure.
    fn entered_within(&self, wait: Duration, server: &ServerHandle) -> String {
        match self.entered_rx.recv_timeout(wait) {
            Ok(name) => name,
            Err(_) => panic!("no handler started within {wait:?}; stats: {:?}", server.stats()),
        }
    }

    /// Asserts that no further handler starts for a while.
    fn assert_none_enters(&self, why: &str) {
        if let Ok(name) = self.entered_rx.recv_timeout(QUIET) {
            panic!("{why}: handler for {name:?} started");
        }
    }

    fn release(&self, n: usize) {
        for _ in 0..n {
            self.release_tx.send(()).unwrap();
        }
    }

    fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

#[test]
fn threading_max_threads_caps_concurrency_and_holds_newcomers_in_backlog() {
    let _serial = serial();
    let gate = Gate::new();
    let server = TcpServer::builder().strategy(Threading::new().max_threads(2)).bind("127.0.0.1:0", gate.handler());
    let running = run(server.unwrap());
    let addr = running.inet();

    let names = ["c0", "c1", "c2"];
    let mut clients: Vec<TcpStream> = names.iter().map(|n| client(addr, n)).collect();
    let first = [gate.entered(), gate.entered()];
    gate.assert_none_enters("a third connection with max_threads(2) and two handlers busy");
    let s = running.handle.stats();
    assert_eq!(s.accepted, 2, "the third connection waits in the backlog, unaccepted: {s:?}");
    assert_eq!(s.workers_total, 2, "{s:?}");

    // One handler finishes: the third connection is accepted and served.
    gate.release(1);
    let third = gate.entered();
    assert!(!first.contains(&third), "{third} entered twice");
    let mut all = first.to_vec();
    all.push(third);
    all.sort();
    assert_eq!(all, names, "each connection served once");
    eventually("the third connection is accepted", || running.handle.stats().accepted == 3);

    gate.release(2);
    for (c, name) in clients.iter_mut().zip(names) {
        assert_eq!(read_line(c), format!("{name}\n"), "nothing dropped");
    }
    assert_eq!(gate.peak(), 2, "at most (and, with three clients, exactly) 2 handlers at once");
    eventually("all requests complete", || {
        let s = running.handle.stats();
        s.completed == 3 && s.workers_total == 0
    });
    let s = running.handle.stats();
    assert_eq!((s.accepted, s.rejected, s.handler_errors), (3, 0, 0), "{s:?}");
    running.stop().unwrap();
}

/// Open lines of /proc/self/maps: a thread stack (and its guard page) stays
/// mapped until the thread is joined or detached.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

// Ported from CPython's Lib/test/test_socketserver.py
// (SocketServerTest.test_threads_reaped, bpo-37193: ThreadingMixIn kept every
// request thread until server_close).
#[test]
fn threading_reaps_finished_threads_as_it_goes() {
    let _serial = serial();
    let server = TcpServer::builder().strategy(Threading::new()).bind("127.0.0.1:0", echo_lines).unwrap();
    let running = run(server);
    let addr = running.inet();
    let serve = |i: usize| {
        let mut c = tcp_connect(addr);
        let msg = format!("request {i}\n");
        assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes());
        c.write_all(b"quit\n").unwrap();
    };
    // Warm up (first request thread, its allocator arena), then measure.
    serve(0);
    eventually("the warm-up thread ends", || running.handle.stats().workers_total == 0);
    let (threads0, maps0) = (threads(), mappings());
    let mut most_threads = threads0;
    for i in 1..=200 {
        serve(i);
        most_threads = most_threads.max(threads());
    }
    eventually("every request thread ends", || running.handle.stats().workers_total == 0);
    assert!(most_threads <= threads0 + 10, "threads grew from {threads0} to {most_threads}");
    // 200 finished but unjoined threads would keep ~400 mappings (stack + guard each).
    let maps = mappings();
    assert!(maps < maps0 + 100, "mappings grew from {maps0} to {maps}: finished request threads are not joined");
    let s = running.handle.stats();
    assert_eq!((s.accepted, s.completed, s.active), (201, 201, 0), "{s:?}");
    running.stop().unwrap();
}

#[test]
fn pool_grows_on_demand_and_shrinks_when_idle() {
    let _serial = serial();
    let gate = Gate::new();
    let pool = ThreadPool::new(1).max_workers(4).keep_alive(Duration::from_millis(100));
    let server = TcpServer::builder().strategy(pool).bind("127.0.0.1:0", gate.handler()).unwrap();
    let running = run(server);
    let addr = running.inet();
    eventually("the pool starts its one worker", || running.handle.stats().workers_total == 1);

    // Long-lived connections arriving one after another: each finds every
    // worker busy, so the pool grows by one for it.
    let names = ["c0", "c1", "c2", "c3"];
    let mut clients = Vec::new();
    for name in names {
        clients.push(client(addr, name));
        assert_eq!(gate.entered_within(TIMEOUT, &running.handle), name, "served at once, not queued");
    }
    let s = running.handle.stats();
    assert_eq!((s.workers_total, s.workers_busy, s.queue_depth), (4, 4, 0), "{s:?}");
    assert_eq!(gate.peak(), 4);

    gate.release(4);
    for (c, name) in clients.iter_mut().zip(names) {
        assert_eq!(read_line(c), format!("{name}\n"));
    }
    eventually("the pool shrinks back to one worker after keep_alive", || {
        let s = running.handle.stats();
        s.workers_total == 1 && s.workers_busy == 0
    });
    // The remaining worker still serves.
    let mut c = client(addr, "again");
    assert_eq!(gate.entered(), "again");
    gate.release(1);
    assert_eq!(read_line(&mut c), "again\n");
    running.stop().unwrap();
}

#[test]
fn pool_grows_for_a_burst_of_long_lived_connections() {
    let _serial = serial();
    let gate = Gate::new();
    let pool = ThreadPool::new(1).max_workers(4);
    let server = TcpServer::builder().strategy(pool).bind("127.0.0.1:0", gate.handler()).unwrap();
    let running = run(server);
    let addr = running.inet();
    eventually("the pool starts its one worker", || running.handle.stats().workers_total == 1);

    // Four connections at once (a burst the loop accepts in one go): the one
    // idle worker can take only one of them, so the pool must grow for the
    // others rather than queue them behind long-lived connections.
    let names = ["c0", "c1", "c2", "c3"];
    let mut clients: Vec<TcpStream> = names.iter().map(|n| client(addr, n)).collect();
    let mut entered: Vec<String> =
        (0..4).map(|_| gate.entered_within(Duration::from_secs(2), &running.handle)).collect();
    entered.sort();
    assert_eq!(entered, names, "all four long-lived connections are served at once");
    let s = running.handle.stats();
    assert_eq!((s.workers_total, s.workers_busy, s.queue_depth), (4, 4, 0), "{s:?}");

    gate.release(4);
    for (c, name) in clients.iter_mut().zip(names) {
        assert_eq!(read_line(c), format!("{name}\n"));
    }
    running.stop().unwrap();
}

#[test]
fn pool_overflow_block_holds_newcomers_in_backlog() {
    let _serial = serial();
    let gate = Gate::new();
    // Overflow::Block is the default.
    let pool = ThreadPool::new(1).queue(1);
    let server = TcpServer::builder().strategy(pool).bind("127.0.0.1:0", gate.handler()).unwrap();
    let running = run(server);
    let addr = running.inet();
    let stats = || running.handle.stats();

    let mut c1 = client(addr, "c1");
    assert_eq!(gate.entered(), "c1");
    let mut c2 = client(addr, "c2");
    eventually("the second connection is queued", || {
        let s = stats();
        s.accepted == 2 && s.queue_depth == 1
    });
    let mut c3 = client(addr, "c3");
    gate.assert_none_enters("worker busy, queue full");
    let s = stats();
    assert_eq!((s.accepted, s.queue_depth, s.workers_busy), (2, 1, 1), "the third waits in the backlog: {s:?}");

    gate.release(1);
    assert_eq!(read_line(&mut c1), "c1\n");
    assert_eq!(gate.entered(), "c2");
    eventually("the third connection is accepted into the freed queue place", || {
        let s = stats();
        s.accepted == 3 && s.queue_depth == 1
    });
    gate.release(2);
    assert_eq!(read_line(&mut c2), "c2\n");
    assert_eq!(gate.entered(), "c3");
    assert_eq!(read_line(&mut c3), "c3\n");
    eventually("all three complete", || stats().completed == 3);
    let s = stats();
    assert_eq!((s.accepted, s.rejected, s.queue_depth, s.handler_errors), (3, 0, 0, 0), "{s:?}");
    assert_eq!(gate.peak(), 1);
    running.stop().unwrap();
}

#[test]
fn pool_overflow_reject_closes_newcomers_at_once() {
    let _serial = serial();
    let gate = Gate::new();
    let pool = ThreadPool::new(1).queue(0).overflow(Overflow::Reject);
    let server = TcpServer::builder().strategy(pool).bind("127.0.0.1:0", gate.handler()).unwrap();
    let running = run(server);
    let addr = running.inet();
    let stats = || running.handle.stats();

    // Warm up until the worker has served one request and is back waiting
    // for work (see pool_overflow_reject_serves_the_first_connection_after_start
    // for what happens right after start).
    let warm = || {
        let c = client(addr, "warm");
        let entered = gate.entered_rx.recv_timeout(QUIET).ok();
        entered.map(|name| (name, c))
    };
    let (name, mut warm) = eventually_value("a warm-up connection served", warm, Option::is_some).unwrap();
    assert_eq!(name, "warm");
    gate.release(1);
    assert_eq!(read_line(&mut warm), "warm\n");
    eventually("the worker is free", || {
        let s = stats();
        s.completed == 1 && s.workers_busy == 0
    });
    let s0 = stats();

    let mut c1 = client(addr, "c1");
    assert_eq!(gate.entered_within(TIMEOUT, &running.handle), "c1", "the idle worker takes it");
    assert_eq!(stats().rejected, s0.rejected);

    // The only worker is busy and there is no queue: closed at once.
    let mut c2 = tcp_connect(addr);
    // The server may have closed it already: a failed write is fine too.
    let _ = c2.write_all(b"c2\n");
    let mut buf = [0u8; 16];
    match c2.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("a rejected connection is closed (EOF or reset), got {other:?}"),
    }
    let s = stats();
    assert_eq!((s.accepted, s.rejected), (s0.accepted + 2, s0.rejected + 1), "{s:?}");
    gate.assert_none_enters("a rejected connection never reaches a handler");

    // Rejecting does not stall the accept loop: newcomers that sent a
    // request and keep their end open are closed one after another at
    // once (milliseconds), not after the half-second linger an answered
    // connection gets (20 of them would take 10 s then).
    const NEWCOMERS: u64 = 20;
    let start = Instant::now();
    let mut held = Vec::new();
    for i in 0..NEWCOMERS {
        let mut c = tcp_connect(addr);
        let _ = c.write_all(format!("r{i}\n").as_bytes());
        match c.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("rejected connection {i}: expected EOF or reset, got {other:?}"),
        }
        held.push(c);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "{NEWCOMERS} rejections took {took:?}: the accept loop lingered on each");
    assert_eq!(stats().rejected, s0.rejected + 1 + NEWCOMERS);
    drop(held);

    gate.release(1);
    assert_eq!(read_line(&mut c1), "c1\n");
    eventually("the worker is free again", || {
        let s = stats();
        s.completed == 2 && s.workers_busy == 0
    });
    let mut c3 = client(addr, "c3");
    assert_eq!(gate.entered_within(TIMEOUT, &running.handle), "c3", "served again once the worker is free");
    gate.release(1);
    assert_eq!(read_line(&mut c3), "c3\n");
    let s = stats();
    assert_eq!((s.accepted, s.rejected), (s0.accepted + 3 + NEWCOMERS, s0.rejected + 1 + NEWCOMERS), "{s:?}");
    running.stop().unwrap();
}

#[test]
fn pool_overflow_reject_serves_the_first_connection_after_start() {
    let _serial = serial();
    let gate = Gate::new();
    let pool = ThreadPool::new(1).queue(0).overflow(Overflow::Reject);
    let server = TcpServer::builder().strategy(pool).bind("127.0.0.1:0", gate.handler()).unwrap();
    // A client already waiting when serving starts: no worker is busy, so
    // nothing justifies rejecting it.
    let mut c1 = client(server.server_address().as_inet().unwrap(), "c1");
    let running = run(server);
    assert_eq!(gate.entered_within(TIMEOUT, &running.handle), "c1");
    assert_eq!(running.handle.stats().rejected, 0);
    gate.release(1);
    assert_eq!(read_line(&mut c1), "c1\n");
    running.stop().unwrap();
}

fn micros_now() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()
}

// The unrelated child is ported from CPython's Lib/test/test_socketserver.py
// (simple_subprocess around test_ForkingTCPServer: "a custom child process is
// not waited on", bpo-1540386).
#[test]
fn forking_max_children_serialises_and_never_reaps_unrelated_children() {
    let _serial = serial();
    // Started before the server: a server reaping with waitpid(-1) while its
    // own children run would take this one's exit status.
    // (0.3 s: it exits while the server's three 150 ms children run.)
    let mut unrelated = std::process::Command::new("sleep").arg("0.3").spawn().expect("run sleep");

    // Answers one line and returns (never waits for the client's EOF, which a
    // forked child would not see: it inherits the test's client sockets).
    let handler = |req: &mut StreamRequest| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        let start = micros_now();
        // A request that takes a while: overlapping children would show.
        thread::sleep(Duration::from_millis(150));
        let end = micros_now();
        writeln!(req, "{} {} {start} {end}", line.trim_end(), std::process::id())
    };
    let server = TcpServer::builder().strategy(Forking::new().max_children(1)).bind("127.0.0.1:0", handler).unwrap();
    let running = run(server);
    let addr = running.inet();

    // Watch workers_total while the requests run.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (handle, watching) = (running.handle.clone(), Arc::clone(&watching));
        thread::spawn(move || {
            let mut most = 0;
            while watching.load(SeqCst) {
                most = most.max(handle.stats().workers_total);
                thread::sleep(Duration::from_millis(1)); // a sampling period
            }
            most
        })
    };

    let names = ["f0", "f1", "f2"];
    let mut clients: Vec<TcpStream> = names.iter().map(|n| client(addr, n)).collect();
    let mut spans = Vec::new();
    for (c, name) in clients.iter_mut().zip(names) {
        let reply = read_line(c);
        let f: Vec<&str> = reply.split_whitespace().collect();
        assert_eq!(f.len(), 4, "reply {reply:?}");
        assert_eq!(f[0], name);
        let pid: u32 = f[1].parse().unwrap();
        assert_ne!(pid, std::process::id(), "handled in a child process");
        spans.push((f[2].parse::<u128>().unwrap(), f[3].parse::<u128>().unwrap(), pid));
    }
    eventually("every child is reaped", || {
        let s = running.handle.stats();
        s.completed == 3 && s.workers_total == 0 && s.active == 0
    });
    watching.store(false, SeqCst);
    let most = watcher.join().unwrap();
    assert_eq!(most, 1, "max_children(1): never more than one child at once");

    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "children overlapped: {:?} and {:?}", w[0], w[1]);
        assert_ne!(w[0].2, w[1].2, "a new child per request");
    }

    let status = unrelated.wait().expect("the unrelated child is still ours to wait for (not reaped by the server)");
    assert!(status.success(), "its real exit status: {status:?}");
    let s = running.handle.stats();
    assert_eq!((s.accepted, s.handler_errors), (3, 0), "{s:?}");
    running.stop().unwrap();
}

#[test]
fn sync_serves_one_request_at_a_time_in_the_serving_thread() {
    let _serial = serial();
    let (entered_tx, entered_rx) = unbounded::<(String, thread::ThreadId)>();
    let (release_tx, release_rx) = unbounded::<()>();
    let handler = move |req: &mut StreamRequest| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        let _ = entered_tx.send((line.trim_end().to_string(), thread::current().id()));
        release_rx.recv_timeout(TIMEOUT).map_err(|_| io::Error::other("never released"))?;
        req.write_all(line.as_bytes())
    };
    let server = TcpServer::bind("127.0.0.1:0", handler).unwrap();
    let handle = server.handle();
    let addr = server.server_address().as_inet().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let serving = thread::spawn(move || {
        tid_tx.send(thread::current().id()).unwrap();
        server.serve_forever()
    });
    let serve_thread = tid_rx.recv().unwrap();

    let mut a = client(addr, "a");
    let (name, tid) = entered_rx.recv_timeout(TIMEOUT).expect("the first request is handled");
    assert_eq!(name, "a");
    assert_eq!(tid, serve_thread, "handled in the thread running serve_forever");
    let mut b = client(addr, "b");
    assert!(entered_rx.recv_timeout(QUIET).is_err(), "a second request started while the first runs");
    assert_eq!(handle.stats().accepted, 1);

    release_tx.send(()).unwrap();
    assert_eq!(read_line(&mut a), "a\n");
    let (name, tid) = entered_rx.recv_timeout(TIMEOUT).expect("the second request is handled next");
    assert_eq!(name, "b");
    assert_eq!(tid, serve_thread);
    release_tx.send(()).unwrap();
    assert_eq!(read_line(&mut b), "b\n");

    handle.shutdown();
    serving.join().unwrap().unwrap();
    let s = handle.stats();
    assert_eq!((s.accepted, s.completed, s.workers_total), (2, 2, 0), "{s:?}");
}
