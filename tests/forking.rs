//! A forked child takes no lock another thread of the server may hold: a
//! child that fails reports through its exit status and a pipe, never
//! through the logger (its own process, for the global logger).

mod util;

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketserver::{Forking, StreamRequest, TcpServer};
use util::*;

/// A logger whose every line takes one lock, as env_logger takes stderr's.
struct LockingLogger {
    lock: Arc<Mutex<()>>,
    lines: Mutex<Vec<String>>,
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
    let lock = Arc::new(Mutex::new(()));
    let logger: &'static LockingLogger =
        Box::leak(Box::new(LockingLogger { lock: Arc::clone(&lock), lines: Mutex::new(Vec::new()) }));
    log::set_logger(logger).unwrap();
    log::set_max_level(log::LevelFilter::Error);

    // The default handle_error: it logs.
    let server = TcpServer::builder()
        .strategy(Forking::new())
        .bind("127.0.0.1:0", |_: &mut StreamRequest| Err(io::Error::other("the handler failed on purpose")))
        .unwrap();
    let handle = server.handle();
    let mut c = tcp_connect(server.server_address().as_inet().unwrap());

    let held = lock.lock().unwrap();
    let server = run(server);
    // The child has run the handler and closed the connection.
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 0);
    drop(held);

    let deadline = Instant::now() + TIMEOUT;
    while handle.stats().completed < 1 {
        assert!(Instant::now() < deadline, "the child never exited: it waited on the logger's lock");
        std::thread::sleep(Duration::from_millis(5));
    }
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
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        })
        .unwrap();
    let mut c = tcp_connect(server.server_address().as_inet().unwrap());
    server.handle_request().unwrap();
    let mut hi = [0u8; 3];
    c.read_exact(&mut hi).unwrap();
    assert_eq!(children().len(), 1, "the child serves after handle_request returned");
    server.server_close();
    assert_eq!(children(), Vec::<String>::new(), "a child outlived server_close");
}
