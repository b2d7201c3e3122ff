//! What a new user trips over, each fixed: a Python-style `read_line` loop
//! stops at once on a shutdown, per-connection state across `setup`,
//! `handle` and `finish`, errors visible without a logger, an outcome from
//! `handle_request`, plain numbers for pool sizes, a connectable server
//! address, a server run in the background with a handle.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketserver::{Handled, RequestHandler, StreamRequest, TcpServer, ThreadPool, ThreadPoolTcpServer, UdpServer};
use util::*;

/// The handler the `RequestHandler` docs taught, `while
/// req.read_line(..)? > 0`, with one client connected and quiet: `serve_forever` returned
/// 5.0 s after `shutdown()` (the whole grace period); a read that starts
/// with nothing buffered is a request boundary, so it returns at once
/// (the drain window, 100 ms).
#[test]
fn a_read_line_handler_lets_the_server_stop_at_once() {
    let server = TcpServer::builder()
        .strategy(socketserver::Threading::new())
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                req.write_all(line.to_uppercase().as_bytes())?;
                line.clear();
            }
            Ok(())
        })
        .unwrap()
        .spawn()
        .unwrap();
    let mut c = TcpStream::connect(server.server_address()).unwrap();
    c.write_all(b"hi\n").unwrap();
    let mut back = [0u8; 3];
    c.read_exact(&mut back).unwrap();
    let start = Instant::now();
    server.stop().unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "stopping took {took:?} (the grace period is 5 s)");
}

/// Per-connection state, as Python keeps it in `self`: set in `setup`,
/// counted in `handle`, read in `finish`.
#[test]
fn state_set_in_setup_is_there_in_finish() {
    #[derive(Default)]
    struct Visit {
        greeted: bool,
        lines: usize,
    }
    struct Counter;
    impl RequestHandler<StreamRequest> for Counter {
        fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
            req.state_mut::<Visit>().greeted = true;
            writeln!(req, "hello")
        }
        fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
            while let Some(line) = req.next_line()? {
                req.state_mut::<Visit>().lines += 1;
                writeln!(req, "{line}")?;
            }
            Ok(())
        }
        fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
            let visit = req.take_state::<Visit>().unwrap_or_default();
            writeln!(req, "greeted {} lines {}", visit.greeted, visit.lines)
        }
    }
    let dir = TempDir::new("newcomer-unix");
    let path = dir.join("counter.sock");
    let server = socketserver::ThreadingUnixStreamServer::bind(&path, Counter).unwrap().spawn().unwrap();
    for n in [3, 1] {
        let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        for i in 0..n {
            writeln!(c, "line {i}").unwrap();
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = String::new();
        c.read_to_string(&mut all).unwrap();
        assert!(all.ends_with(&format!("greeted true lines {n}\n")), "{all}");
    }
    server.stop().unwrap();
}

/// `handle_request` says what happened, and `handle_timeout` runs only on
/// a real timeout (it ran for a refused request too).
#[test]
fn handle_request_says_what_happened() {
    let timeouts = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&timeouts);
    let refuse_next = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = Arc::clone(&refuse_next);
    let server = TcpServer::builder()
        .timeout(Duration::from_millis(100))
        .handle_timeout(move || {
            t.fetch_add(1, Ordering::SeqCst);
        })
        .verify_request(move |_| !r.load(Ordering::SeqCst))
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().clone();

    assert_eq!(server.handle_request().unwrap(), Handled::TimedOut);
    assert_eq!(timeouts.load(Ordering::SeqCst), 1);

    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(b"quit\n").unwrap();
    assert_eq!(server.handle_request().unwrap(), Handled::Served);

    refuse_next.store(true, Ordering::SeqCst);
    let _refused = TcpStream::connect(&addr).unwrap();
    assert_eq!(server.handle_request().unwrap(), Handled::Refused);
    assert_eq!(timeouts.load(Ordering::SeqCst), 1, "handle_timeout ran for a refused request");

    server.shutdown();
    assert_eq!(server.handle_request().unwrap(), Handled::ShutDown);

    let udp = UdpServer::builder()
        .max_datagram_size(4)
        .handle_error(|_, _, _| {})
        .bind("127.0.0.1:0", echo_datagram)
        .unwrap();
    let client = udp_client();
    client.send_to(b"too long", udp.server_address()).unwrap();
    assert_eq!(udp.handle_request().unwrap(), Handled::Dropped);
}

/// Pool sizes are plain numbers; 0 is refused at bind with a clear error.
#[test]
fn pool_sizes_are_plain_numbers_and_zero_is_refused() {
    let server: ThreadPoolTcpServer =
        TcpServer::builder().strategy(ThreadPool::new(4).max_workers(64)).bind("127.0.0.1:0", echo_lines).unwrap();
    assert_eq!(server.strategy(), &ThreadPool::new(4).max_workers(64));
    for (strategy, says) in [
        (socketserver::AnyStrategy::from(ThreadPool::new(0)), "a pool needs at least one worker"),
        (ThreadPool::new(2).max_workers(0).into(), "a pool needs at least one worker"),
        (socketserver::Threading::new().max_threads(0).into(), "at least one request thread"),
        (socketserver::Forking::new().max_children(0).into(), "at least one child"),
        (socketserver::Event::new().pollers(0).into(), "at least one polling thread"),
    ] {
        let err = TcpServer::builder().strategy(strategy.clone()).bind("127.0.0.1:0", echo_lines).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{strategy}");
        assert!(err.to_string().contains(says), "{strategy}: {err}");
    }
}

/// `server_address()` is what `TcpStream::connect` takes; a Unix address
/// says clearly that it is not an IP one.
#[test]
fn the_server_address_is_connectable() {
    let server = TcpServer::bind("127.0.0.1:0", echo_lines).unwrap().spawn().unwrap();
    let mut c = TcpStream::connect(server.server_address()).unwrap();
    assert_eq!(round_trip(&mut c, b"x\n"), b"x\n");
    c.write_all(b"quit\n").unwrap();
    server.stop().unwrap();
    let dir = TempDir::new("newcomer-addr");
    let unix = socketserver::UnixStreamServer::bind(dir.join("s.sock"), echo_lines).unwrap();
    let err = TcpStream::connect(unix.server_address()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("not an IP"), "{err}");
}

/// Without a logger, a handler's error is one line on stderr (Python prints
/// its traceback; we printed nothing). Checked in a child process: its
/// stderr is the test's to read.
#[test]
fn without_a_logger_an_error_is_one_line_on_stderr() {
    if std::env::var_os("SOCKETSERVER_TEST_NO_LOGGER_CHILD").is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["no_logger_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("SOCKETSERVER_TEST_NO_LOGGER_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| l.contains("error handling request")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("the handler failed on purpose"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

/// The child of the test above: no logger installed, a failing handler.
#[test]
fn no_logger_child() {
    if std::env::var_os("SOCKETSERVER_TEST_NO_LOGGER_CHILD").is_none() {
        return;
    }
    let server =
        TcpServer::bind("127.0.0.1:0", |_: &mut StreamRequest| Err(io::Error::other("the handler failed on purpose")))
            .unwrap();
    let _c = TcpStream::connect(server.server_address()).unwrap();
    assert_eq!(server.handle_request().unwrap(), Handled::Served);
}

/// Closures need their parameter's type written (`|req: &mut
/// StreamRequest|`): the server takes any `RequestHandler`, and Rust infers
/// a closure's parameter types only from an `Fn` bound. The docs say so
/// where they introduce closures; this shows the form that compiles.
#[test]
fn a_closure_handler_names_its_request_type() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let server = TcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
        let mut line = String::new();
        BufRead::read_line(req, &mut line)?;
        s.lock().unwrap().push(line);
        Ok(())
    })
    .unwrap();
    let mut c = TcpStream::connect(server.server_address()).unwrap();
    c.write_all(b"typed\n").unwrap();
    server.handle_request().unwrap();
    assert_eq!(*seen.lock().unwrap(), ["typed\n"]);
}
