//! Handler errors and panics are reported and contained; refused peers are
//! closed without reaching the handler.
//!
//! Ported from CPython's Lib/test/test_socketserver.py ErrorHandlerTest
//! (test_sync_handled, test_threading_handled, test_forking_handled): the
//! handler runs once, `handle_error` runs once, the server carries on. And
//! from test_shutdown_request_called_if_verify_request_false: a refused
//! request is shut down exactly once.

mod util;

use std::io::{self, Read, Write};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketserver::{AnyStrategy, Forking, StreamRequest, Synchronous, TcpServer, ThreadPool, Threading, UdpServer};
use util::*;

fn strategies() -> Vec<AnyStrategy> {
    vec![Synchronous.into(), Threading::new().into(), ThreadPool::new(2).into(), Forking::new().into()]
}

/// A handler that fails (odd requests) or panics (even ones) after saying
/// something; a healthy request says "ok".
fn faulty(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    req.read_line(&mut line)?;
    match line.trim() {
        "fail" => {
            req.write_all(b"failing\n")?;
            Err(io::Error::new(io::ErrorKind::InvalidData, "Test error"))
        }
        "panic" => {
            req.write_all(b"panicking\n")?;
            panic!("Test panic")
        }
        _ => req.write_all(b"ok\n"),
    }
}

fn ask(addr: std::net::SocketAddr, what: &str) -> String {
    let mut c = tcp_connect(addr);
    c.write_all(format!("{what}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn handler_errors_and_panics_are_reported_and_the_server_keeps_serving() {
    let _serial = serial();
    for strategy in strategies() {
        let reported = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&reported);
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .handle_error(move |_, _peer, e| r.lock().unwrap().push(e.to_string()))
            .bind("127.0.0.1:0", faulty)
            .unwrap();
        let running = run(server);
        let addr = running.inet();
        if let AnyStrategy::ThreadPool(_) = strategy {
            eventually("the pool to start", || running.handle.stats().workers_total == 2);
        }
        assert_eq!(ask(addr, "fail"), "failing\n", "{strategy}");
        // A forked child's errors reach the hook when its parent reaps it,
        // which can be after the client saw the end of stream: wait, so
        // that the two reports keep the order of the requests.
        eventually("the first error to be reported", || !reported.lock().unwrap().is_empty());
        assert_eq!(ask(addr, "panic"), "panicking\n", "{strategy}");
        assert_eq!(ask(addr, "fine"), "ok\n", "{strategy}: serves on after a panic");
        eventually("the counters", || running.handle.stats().completed == 3);
        let stats = running.handle.stats();
        assert_eq!(stats.handler_errors, 2, "{strategy}");
        assert_eq!(stats.panics, 1, "{strategy}");
        if let AnyStrategy::ThreadPool(_) = strategy {
            assert_eq!(stats.workers_total, 2, "the pool lost a worker to the panic");
        }
        // Forked children report through a pipe: the parent's hook sees the same.
        let reported = reported.lock().unwrap().clone();
        assert_eq!(reported.len(), 2, "{strategy}: {reported:?}");
        assert_eq!(reported[0], "Test error");
        assert_eq!(reported[1], "handler panicked: Test panic");
        running.stop().unwrap();
    }
}

#[test]
fn datagram_handler_errors_are_reported_too() {
    let _serial = serial();
    let errors = Arc::new(AtomicUsize::new(0));
    let e = Arc::clone(&errors);
    let server = UdpServer::builder()
        .handle_error(move |_, _, _| {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .bind("127.0.0.1:0", |req: &mut socketserver::DatagramRequest| {
            if req.data() == b"panic" {
                panic!("datagram panic");
            }
            req.reply(req.data())
        })
        .unwrap();
    let running = run(server);
    let c = udp_client();
    c.send_to(b"panic", running.inet()).unwrap();
    assert_eq!(udp_round_trip(&c, running.inet(), b"after"), b"after");
    assert_eq!(errors.load(Ordering::SeqCst), 1);
    assert_eq!(running.handle.stats().panics, 1);
    running.stop().unwrap();
}

#[test]
fn a_panic_in_handle_error_itself_is_contained() {
    let _serial = serial();
    let server =
        TcpServer::builder().handle_error(|_, _, _| panic!("the hook fails too")).bind("127.0.0.1:0", faulty).unwrap();
    let running = run(server);
    assert_eq!(ask(running.inet(), "fail"), "failing\n");
    assert_eq!(ask(running.inet(), "fine"), "ok\n");
    running.stop().unwrap();
}

#[test]
fn verify_request_refuses_before_the_handler_runs() {
    let _serial = serial();
    for strategy in strategies() {
        let handled = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&handled);
        let asked = Arc::new(AtomicUsize::new(0));
        let a = Arc::clone(&asked);
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .verify_request(move |_peer| {
                a.fetch_add(1, Ordering::SeqCst);
                false
            })
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                h.fetch_add(1, Ordering::SeqCst);
                req.write_all(b"should not happen\n")
            })
            .unwrap();
        let running = run(server);
        let mut c = tcp_connect(running.inet());
        let mut got = Vec::new();
        // Shut down and closed: end of stream (or a reset), never an answer.
        let _ = c.read_to_end(&mut got);
        assert!(got.is_empty(), "{strategy}");
        eventually("the refusal to be counted", || running.handle.stats().refused == 1);
        assert_eq!(asked.load(Ordering::SeqCst), 1, "{strategy}: verify_request called exactly once");
        assert_eq!(handled.load(Ordering::SeqCst), 0, "{strategy}");
        let stats = running.handle.stats();
        assert_eq!((stats.accepted, stats.refused, stats.completed, stats.active), (1, 1, 0, 0), "{strategy}");
        running.stop().unwrap();
    }
}

#[test]
fn verify_request_sees_the_peer_and_refuses_datagrams() {
    let _serial = serial();
    let server = UdpServer::builder()
        .verify_request(|peer| peer.as_inet().is_some_and(|a| a.port() % 2 == 0))
        .bind("127.0.0.1:0", echo_datagram)
        .unwrap();
    let running = run(server);
    let (mut even, mut odd) = (None, None);
    while even.is_none() || odd.is_none() {
        let c = udp_client();
        let port = c.local_addr().unwrap().port();
        if port.is_multiple_of(2) {
            even.get_or_insert(c)
        } else {
            odd.get_or_insert(c)
        };
    }
    let (even, odd) = (even.unwrap(), odd.unwrap());
    odd.send_to(b"refused", running.inet()).unwrap();
    assert_eq!(udp_round_trip(&even, running.inet(), b"allowed"), b"allowed");
    eventually("the refusal", || running.handle.stats().refused == 1);
    odd.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    assert!(odd.recv(&mut [0u8; 16]).is_err(), "a refused datagram got an answer");
    running.stop().unwrap();
}

/// Panics in `setup` and in `finish`, not only in `handle`, under every
/// strategy: reported, counted, contained; no worker lost; the next request
/// is served.
#[test]
fn panics_in_setup_and_finish_are_contained_under_every_strategy() {
    let _serial = serial();
    use socketserver::RequestHandler;

    /// Panics in `setup` when the client says "setup", in `finish` (after
    /// the answer) when it says "finish".
    #[derive(Default)]
    struct Fragile {
        finish_panics_for: std::sync::Mutex<std::collections::HashSet<socketserver::Address>>,
    }
    impl RequestHandler<StreamRequest> for Fragile {
        fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
            let mut line = String::new();
            req.read_line(&mut line)?;
            match line.trim() {
                "setup" => {
                    req.write_all(b"setup panics\n")?;
                    panic!("setup panic");
                }
                "finish" => {
                    self.finish_panics_for.lock().unwrap().insert(req.peer_addr().clone());
                }
                _ => {}
            }
            req.write_all(line.as_bytes())
        }
        fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
            req.write_all(b"handled\n")
        }
        fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
            if self.finish_panics_for.lock().unwrap().remove(req.peer_addr()) {
                panic!("finish panic");
            }
            Ok(())
        }
    }

    for strategy in strategies() {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .handle_error(|_, _, _| {})
            .bind("127.0.0.1:0", Fragile::default())
            .unwrap();
        let running = run(server);
        let addr = running.inet();
        if let AnyStrategy::ThreadPool(_) = strategy {
            eventually("the pool to start", || running.handle.stats().workers_total == 2);
        }
        let mut expected_panics = 0;
        for round in 0..6 {
            let what = ["setup", "hello", "finish"][round % 3];
            let mut c = tcp_connect(addr);
            c.write_all(format!("{what}\n").as_bytes()).unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            if what == "setup" {
                // finish does not run after a failed setup.
                assert_eq!(answer, "setup panics\n", "{strategy}");
            } else {
                assert_eq!(answer, format!("{what}\nhandled\n"), "{strategy}");
            }
            expected_panics += u64::from(what != "hello");
        }
        eventually("the counters", || running.handle.stats().completed == 6);
        let stats = running.handle.stats();
        assert_eq!(stats.panics, expected_panics, "{strategy}");
        assert_eq!(stats.handler_errors, expected_panics, "{strategy}");
        if let AnyStrategy::ThreadPool(_) = strategy {
            assert_eq!(stats.workers_total, 2, "{strategy}: the pool lost workers");
        }
        running.stop().unwrap();
    }
}

/// Python's `handle_error(request, client_address)` runs before the request
/// is shut down: the hook gets the request still open and can answer on it.
/// Under `Forking` the request lives in the child: the hook gets `None`,
/// the peer and the error's text.
#[test]
fn handle_error_gets_the_open_request_and_can_answer_it() {
    let _serial = serial();
    for strategy in strategies() {
        let forking = matches!(strategy, AnyStrategy::Forking(_));
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .handle_error(|req, peer, err| {
                if let Some(req) = req {
                    assert_eq!(req.peer_addr(), peer);
                    let _ = writeln!(req, "error: {err}");
                }
            })
            .bind("127.0.0.1:0", faulty)
            .unwrap();
        let running = run(server);
        let answer = ask(running.inet(), "fail");
        if forking {
            assert_eq!(answer, "failing\n", "{strategy}");
        } else {
            assert_eq!(answer, "failing\nerror: Test error\n", "{strategy}");
            assert_eq!(ask(running.inet(), "panic"), "panicking\nerror: handler panicked: Test panic\n");
        }
        running.stop().unwrap();
    }
}

/// A request counts as completed only once its errors have been reported:
/// whoever waits for `completed` sees every `handle_error` call done.
#[test]
fn a_request_counts_as_completed_only_after_its_errors_are_reported() {
    let _serial = serial();
    for strategy in strategies() {
        let handle = Arc::new(std::sync::OnceLock::<socketserver::ServerHandle>::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (Arc::clone(&handle), Arc::clone(&seen));
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .handle_error(move |_, _, _| s.lock().unwrap().push(h.get().map(|h| h.stats().completed)))
            .bind("127.0.0.1:0", faulty)
            .unwrap();
        handle.set(server.handle()).unwrap();
        let running = run(server);
        assert_eq!(ask(running.inet(), "fail"), "failing\n");
        eventually("the request to complete", || running.handle.stats().completed == 1);
        assert_eq!(*seen.lock().unwrap(), [Some(0)], "{strategy}: reported after it counted as completed");
        running.stop().unwrap();
    }
}

/// As in CPython's ThreadingMixIn, a request thread that cannot be started
/// reaches `handle_error` (the request is closed and counted as rejected).
#[test]
fn a_request_thread_that_cannot_start_reaches_handle_error() {
    let reported = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&reported);
    // A stack no system can give: starting the thread fails.
    let server = TcpServer::builder()
        .strategy(Threading::new().stack_size(1 << 46))
        .handle_error(move |req, _, e| r.lock().unwrap().push((req.is_some(), e.to_string())))
        .bind("127.0.0.1:0", faulty)
        .unwrap();
    let running = run(server);
    let mut c = tcp_connect(running.inet());
    c.write_all(b"fine\n").unwrap();
    assert_eq!(c.read(&mut [0u8; 8]).unwrap_or(0), 0, "the request is closed unserved");
    eventually("the report", || !reported.lock().unwrap().is_empty());
    let reported = reported.lock().unwrap().clone();
    assert!(!reported[0].0, "no request to give");
    assert!(reported[0].1.starts_with("cannot start a request thread"), "{reported:?}");
    assert_eq!(running.handle.stats().rejected, 1);
    running.stop().unwrap();
}
