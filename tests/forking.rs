//! A forked child takes no lock another thread of the server may hold: a
//! child that fails reports through its exit status and a pipe, never
//! through the logger (its own process, for the global logger).

mod util;

use std::io::{self, Read};
use std::sync::Mutex;
use std::time::Duration;

use socketserver::{Forking, StreamRequest, TcpServer};
use util::*;

/// A logger whose every line takes one lock, as env_logger takes stderr's.
struct LockingLogger {
    lock: Mutex<()>,
    lines: Mutex<Vec<String>>,
}

/// The process's logger, installed once (the tests here take turns).
fn logger() -> &'static LockingLogger {
    static LOGGER: std::sync::OnceLock<&'static LockingLogger> = std::sync::OnceLock::new();
    LOGGER.get_or_init(|| {
        let logger: &'static LockingLogger =
            Box::leak(Box::new(LockingLogger { lock: Mutex::new(()), lines: Mutex::new(Vec::new()) }));
        log::set_logger(logger).unwrap();
        logger
    })
}

impl log::Log for LockingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let _held = self.lock.lock().unwrap();
        self.lines.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

/// With the logger's lock held by another thread while the child runs, a
/// child that logged its handler's error would wait on that lock for ever
/// (it is a copy, and nobody in the child will release it). It must exit;
/// the parent reports the error, with its text, once the lock is free.
#[test]
fn a_failing_child_never_waits_on_a_lock_held_at_fork_time() {
    let _serial = serial();
    let logger = logger();
    log::set_max_level(log::LevelFilter::Error);

    // The default handle_error: it logs.
    let server = TcpServer::builder()
        .strategy(Forking::new())
        .bind("127.0.0.1:0", |_: &mut StreamRequest| Err(io::Error::other("the handler failed on purpose")))
        .unwrap();
    let handle = server.handle();
    let mut c = tcp_connect(server.server_address().as_inet().unwrap());

    let held = logger.lock.lock().unwrap();
    let server = run(server);
    // The child has run the handler and closed the connection.
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 0);
    drop(held);

    eventually("the child to exit (not to wait on the logger's lock)", || handle.stats().completed >= 1);
    let stats = handle.stats();
    assert_eq!((stats.handler_errors, stats.panics), (1, 0));
    let lines = logger.lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("error handling request from") && l.ends_with("the handler failed on purpose")),
        "{lines:?}"
    );
    server.stop().unwrap();
}

/// The children of this process, from every thread's `children` list (Linux).
fn children() -> Vec<String> {
    let mut all = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        all.extend(list.split_whitespace().map(str::to_string));
    }
    all
}

/// CPython bpo-31151: no child process may remain after `server_close`.
/// `handle_request` forks a child that is still serving when it returns;
/// closing the server waits for it and reaps it.
#[test]
fn no_child_remains_after_server_close() {
    let _serial = serial();
    let server = TcpServer::builder()
        .strategy(Forking::new())
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            std::io::Write::write_all(req, b"hi\n")?;
            // Still serving when handle_request returns: until the client
            // says bye (a 200 ms sleep alone ended first under load)...
            req.read_line(&mut String::new())?;
            // ...and when server_close is called (the scenario).
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        })
        .unwrap();
    let mut c = tcp_connect(server.server_address().as_inet().unwrap());
    server.handle_request().unwrap();
    let mut hi = [0u8; 3];
    c.read_exact(&mut hi).unwrap();
    assert_eq!(children().len(), 1, "the child serves after handle_request returned");
    std::io::Write::write_all(&mut c, b"bye\n").unwrap();
    server.server_close();
    assert_eq!(children(), Vec::<String>::new(), "a child outlived server_close");
}

/// Behind a PROXY header under `Forking`, the child reads the header and
/// asks `verify_request` about the client it names: what it refuses and
/// the headers that fail are counted in the parent's `stats()` (they were
/// counted in the child's copy, and lost), and the child logs none of it —
/// here with every level on and the logger's lock held while the children
/// run: a child that logged would wait for ever (it did: "refused" at
/// debug, the bad header at warn, and the library's own debug line for a
/// connection reset). The parent logs them once the lock is free.
#[test]
fn behind_a_proxy_children_decide_and_the_parent_counts() {
    let _serial = serial();
    let logger = logger();
    log::set_max_level(log::LevelFilter::Debug);
    let server = TcpServer::builder()
        .strategy(Forking::new())
        .proxy_protocol(socketserver::proxy::ProxyProtocol::trusting(|proxy| {
            proxy.as_inet().is_some_and(|a| a.ip().is_loopback())
        }))
        .verify_request(|client| client.as_inet().is_some_and(|a| a.ip().to_string() != "203.0.113.9"))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let client = req.peer_addr().to_string();
            if client.starts_with("192.0.2.77:") {
                // Taken for the peer's reset: a normal end, which the
                // library notes at debug level — in the child.
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            std::io::Write::write_all(req, format!("{client}\n").as_bytes())
        })
        .unwrap();
    let handle = server.handle();
    let addr = server.server_address().as_inet().unwrap();
    let server = run(server);
    let held = logger.lock.lock().unwrap();
    let send = |bytes: &[u8]| {
        let mut c = tcp_connect(addr);
        std::io::Write::write_all(&mut c, bytes).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).map(|_| answer)
    };
    let banned = send(b"PROXY TCP4 203.0.113.9 198.51.100.1 5 443\r\nhi\n");
    let garbage = send(b"GET / HTTP/1.1\r\n\r\n");
    let welcome = send(b"PROXY TCP4 192.0.2.9 198.51.100.1 5 443\r\n");
    let reset = send(b"PROXY TCP4 192.0.2.77 198.51.100.1 5 443\r\n");
    drop(held);
    assert_eq!(banned.expect("the refused connection is closed by its child"), "");
    assert_eq!(garbage.expect("the bad header's connection is closed by its child"), "");
    assert_eq!(welcome.expect("the admitted client is served"), "192.0.2.9:5\n");
    assert_eq!(reset.expect("a child that would log at debug exits all the same"), "");
    let counted = |s: socketserver::Stats| (s.refused, s.proxy_errors, s.completed, s.handler_errors);
    eventually_value(
        "the counts (refused, proxy_errors, completed, errors)",
        || counted(handle.stats()),
        |c| *c == (1, 1, 2, 0),
    );
    // Counted first, then logged, by the reapers: wait for the lines too.
    eventually_value(
        "the parent's lines",
        || logger.lines.lock().unwrap().clone(),
        |lines| {
            lines.iter().any(|l| l.contains("refused 203.0.113.9:5"))
                && lines.iter().any(|l| l.contains("closed a connection from"))
        },
    );
    log::set_max_level(log::LevelFilter::Error);
    server.stop().unwrap();
}

/// The threads of this process (Linux).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Opens `n` connections to a forking server whose handlers say `ready`
/// and then wait for a `quit` line; returns them once every child is up.
fn children_waiting(addr: std::net::SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    let clients: Vec<_> = (0..n).map(|_| tcp_connect(addr)).collect();
    for mut c in &clients {
        let mut ready = [0u8; 6];
        c.read_exact(&mut ready).unwrap();
        assert_eq!(&ready, b"ready\n");
    }
    clients
}

/// One reaper watches every child: the parent's threads do not grow with
/// its children (there was a thread per child, reading that child's pipe:
/// 50 children, 50 more threads). Errors reported through the pipes still
/// reach the parent's counters once the children end.
#[test]
fn the_parent_keeps_one_reaper_whatever_the_number_of_children() {
    let _serial = serial();
    const N: usize = 50;
    let server = TcpServer::builder()
        .strategy(Forking::new().max_children(N + 1))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            std::io::Write::write_all(req, b"ready\n")?;
            let line = req.next_line()?;
            match line.as_deref() {
                Some("fail") => Err(io::Error::other("failed on purpose")),
                _ => Ok(()),
            }
        })
        .unwrap();
    let handle = server.handle();
    let addr = server.server_address().as_inet().unwrap();
    let server = run(server);

    let one = children_waiting(addr, 1);
    let with_one = threads();
    let many = children_waiting(addr, N - 1);
    assert_eq!(children().len(), N);
    let with_many = threads();
    assert!(with_many <= with_one + 2, "{with_one} threads with one child, {with_many} with {N}");

    for (i, mut c) in one.into_iter().chain(many).enumerate() {
        let line: &[u8] = if i % 2 == 0 { b"fail\n" } else { b"quit\n" };
        std::io::Write::write_all(&mut c, line).unwrap();
    }
    let counted = |s: socketserver::Stats| (s.completed, s.handler_errors, s.workers_total);
    eventually_value("(completed, errors, workers)", || counted(handle.stats()), |c| *c == (N as u64, N as u64 / 2, 0));
    assert_eq!(children(), Vec::<String>::new());
    server.stop().unwrap();
}

/// A child's errors reach the parent whole, one line each on the pipe: a
/// line break in one is escaped (it was replaced by a space), so the
/// parent's log shows it as the other strategies do.
#[test]
fn a_childs_error_with_a_line_break_is_logged_escaped() {
    let _serial = serial();
    let logger = logger();
    log::set_max_level(log::LevelFilter::Error);
    let server = TcpServer::builder()
        .strategy(Forking::new())
        .bind("127.0.0.1:0", |_: &mut StreamRequest| Err(io::Error::other("first\n[ERROR] forged\r\x1b[2K")))
        .unwrap();
    let handle = server.handle();
    let c = tcp_connect(server.server_address().as_inet().unwrap());
    let server = run(server);
    eventually("the child to end", || handle.stats().completed >= 1);
    let lines = logger.lines.lock().unwrap().clone();
    let ours: Vec<_> = lines.iter().filter(|l| l.contains("forged")).collect();
    assert_eq!(ours.len(), 1, "{lines:?}");
    assert!(ours[0].ends_with(r"first\n[ERROR] forged\r\x1b[2K"), "{ours:?}");
    drop(c);
    server.stop().unwrap();
}
