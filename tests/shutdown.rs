//! Stopping a server: from any thread, at once, gracefully, within a deadline.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use socketserver::{AnyStrategy, Forking, StreamRequest, Synchronous, TcpServer, ThreadPool, Threading, UdpServer};
use util::*;

fn retry_connect(addr: std::net::SocketAddr) -> std::net::TcpStream {
    eventually_value("a connection to the server", || std::net::TcpStream::connect(addr), Result::is_ok).unwrap()
}

fn read_one_line(c: &mut std::net::TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    line
}

fn pool(n: usize) -> ThreadPool {
    ThreadPool::new(n)
}

/// Port of CPython's test_shutdown (Issue #2302): 20 servers, each shut down
/// right after its serving thread starts — often before `serve_forever`
/// runs. Every one must stop; none may hang.
#[test]
fn twenty_servers_started_and_shut_down_at_once() {
    let _serial = serial();
    let mut threads = Vec::new();
    for i in 0..20 {
        let strategy: AnyStrategy = if i % 2 == 0 { Synchronous.into() } else { pool(2).into() };
        let server = TcpServer::builder().strategy(strategy).bind("127.0.0.1:0", echo_stream).unwrap();
        let handle = server.handle();
        threads.push(std::thread::spawn(move || server.serve_forever()));
        handle.shutdown();
    }
    for t in threads {
        t.join().unwrap().unwrap();
    }
}

#[test]
fn shutdown_before_serve_forever_makes_it_return_at_once_and_can_serve_again() {
    let _serial = serial();
    let server = TcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    server.shutdown();
    server.serve_forever().unwrap();
    // The request was consumed: the server serves again, and stops again.
    let addr = server.server_address().as_inet().unwrap();
    let running = run(server);
    // The listener is activated again when `serve_forever` starts.
    let mut c = retry_connect(addr);
    assert_eq!(round_trip(&mut c, b"again\n"), b"again\n");
    c.write_all(b"quit\n").unwrap();
    running.stop().unwrap();
}

/// A port asked for by number stays the server's across runs: after a
/// shutdown, `serve_forever` listens on it again (the kernel keeps such a
/// port bound when the listener is shut down, unlike a port 0 one).
#[test]
fn a_server_on_a_fixed_port_serves_again_after_shutdown() {
    let _serial = serial();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = TcpServer::bind(("127.0.0.1", port), echo_lines).unwrap();
    let addr = server.server_address().as_inet().unwrap();
    assert_eq!(addr.port(), port);
    for run in 0..3 {
        std::thread::scope(|s| {
            let serving = s.spawn(|| server.serve_forever());
            let mut c = retry_connect(addr);
            let msg = format!("run {run}\n");
            assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes());
            c.write_all(b"quit\n").unwrap();
            server.shutdown();
            serving.join().unwrap().unwrap_or_else(|e| panic!("run {run}: {e}"));
        });
    }
}

/// Python's `shutdown()` called from a handler of a synchronous server
/// deadlocks (it waits for the loop the handler is blocking). Ours returns.
#[test]
fn shutdown_from_a_handler_under_sync_does_not_deadlock() {
    let _serial = serial();
    for strategy in [AnyStrategy::from(Synchronous), Threading::new().into(), pool(2).into()] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .bind("127.0.0.1:0", |req: &mut StreamRequest| {
                req.server().shutdown();
                req.write_all(b"stopping\n")
            })
            .unwrap();
        let mut running = run(server);
        let mut c = tcp_connect(running.inet());
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "stopping\n", "{strategy}");
        running.join().unwrap();
    }
}

/// `service_actions` is a periodic hook: at most once per `service_interval`
/// however many requests come (it ran after every wake-up: 5,468 times in
/// 6 s under load), and while idle too, under every strategy (it never ran
/// under `Event`, nor on a datagram pool); a shutdown still ends the loop
/// at once.
#[test]
fn service_actions_runs_once_per_interval_busy_or_idle() {
    let _serial = serial();
    const EVERY: Duration = Duration::from_millis(50);
    let strategies: Vec<AnyStrategy> = vec![
        Synchronous.into(),
        Threading::new().into(),
        pool(2).into(),
        Forking::new().into(),
        socketserver::Event::new().into(),
    ];
    for (udp, strategy) in strategies.iter().map(|s| (false, s)).chain(strategies.iter().map(|s| (true, s))) {
        let name = format!("{} {strategy}", if udp { "udp" } else { "tcp" });
        let (tx, rx) = mpsc::channel::<Instant>();
        let tx = std::sync::Mutex::new(tx);
        let hook = move || {
            let _ = tx.lock().unwrap().send(Instant::now());
        };
        let running = start(udp, strategy, EVERY, hook);
        // Idle, it runs.
        rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("{name}: service_actions never ran while idle"));
        // Busy (a request at a time, 300 of them or 0.3 s), no more often.
        let (busy_from, udp_client) = (Instant::now(), udp_client());
        let mut tcp = (!udp).then(|| tcp_connect(running.inet()));
        for _ in 0..300 {
            match &mut tcp {
                Some(c) => assert_eq!(round_trip(c, b"x"), b"x", "{name}"),
                None => assert_eq!(udp_round_trip(&udp_client, running.inet(), b"x"), b"x", "{name}"),
            }
            if busy_from.elapsed() > Duration::from_millis(300) {
                break;
            }
        }
        drop(tcp);
        let mut last = rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("{name}: service_actions stopped"));
        running.stop().unwrap();
        for at in rx.try_iter() {
            assert!(at - last >= EVERY, "{name}: service_actions ran {:?} after the last run", at - last);
            last = at;
        }
        // A shutdown does not wait for the clock: with the hook due only in
        // 60 s, a loop that waited for it would take a minute; at once is
        // milliseconds, and the bound (TIMEOUT) is far from both.
        let waiting = start(udp, strategy, Duration::from_secs(60), || {});
        match udp {
            false => assert_eq!(round_trip(&mut tcp_connect(waiting.inet()), b"x"), b"x", "{name}"),
            true => assert_eq!(udp_round_trip(&udp_client, waiting.inet(), b"x"), b"x", "{name}"),
        }
        let stop_asked = Instant::now();
        waiting.stop().unwrap();
        assert!(stop_asked.elapsed() < TIMEOUT, "{name}: the shutdown waited for the clock");
    }
}

/// A UDP or TCP echo server under `strategy` with the hook on its clock.
fn start(udp: bool, strategy: &AnyStrategy, every: Duration, hook: impl Fn() + Send + Sync + 'static) -> Running {
    if udp {
        run(UdpServer::builder()
            .strategy(strategy.clone())
            .service_interval(every)
            .service_actions(hook)
            .bind("127.0.0.1:0", echo_datagram)
            .unwrap())
    } else {
        run(TcpServer::builder()
            .strategy(strategy.clone())
            .service_interval(every)
            .service_actions(hook)
            .bind("127.0.0.1:0", echo_stream)
            .unwrap())
    }
}

#[test]
fn in_flight_requests_finish_within_the_grace_period() {
    let _serial = serial();
    for strategy in [AnyStrategy::from(Synchronous), Threading::new().into(), pool(2).into()] {
        let (entered_tx, entered_rx) = mpsc::channel();
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .grace_period(Duration::from_secs(10))
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                let mut line = String::new();
                req.read_line(&mut line)?;
                entered_tx.send(()).unwrap();
                // Still working when the shutdown arrives...
                eventually("the shutdown", || req.server().is_shutting_down());
                // ...and for a while after it (widens the window in which
                // a server that did not wait would close the connection).
                std::thread::sleep(Duration::from_millis(50));
                write!(req, "done: {line}")
            })
            .unwrap();
        let mut running = run(server);
        let mut c = tcp_connect(running.inet());
        c.write_all(b"work\n").unwrap();
        entered_rx.recv().unwrap();
        running.handle.shutdown();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "done: work\n", "{strategy}");
        running.join().unwrap();
    }
}

#[test]
fn at_the_deadline_blocked_handlers_are_unblocked_and_serve_forever_returns() {
    let _serial = serial();
    let strategies: Vec<AnyStrategy> =
        vec![Synchronous.into(), Threading::new().into(), pool(2).into(), Forking::new().into()];
    for strategy in strategies {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .grace_period(Duration::from_millis(200))
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                // A request begun (its first byte read), then blocked for
                // ever: the client never sends the rest. (A handler that has
                // read nothing yet is between requests: the drain window,
                // not the grace period, bounds it.)
                let mut buf = [0u8; 1];
                req.read_exact(&mut buf)?;
                let _ = req.read(&mut buf);
                Ok(())
            })
            .unwrap();
        let mut running = run(server);
        let mut c = tcp_connect(running.inet());
        c.write_all(b"x").unwrap();
        // Accepted and in flight (in a thread, a worker or a child).
        eventually("the connection active", || running.handle.stats().active == 1);
        let start = Instant::now();
        running.handle.shutdown();
        running.join().unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(150), "{strategy}: returned before the grace period: {took:?}");
        assert!(took < Duration::from_secs(5), "{strategy}: not forced at the deadline: {took:?}");
        drop(c);
    }
}

#[test]
fn queued_connections_are_served_during_the_drain() {
    let _serial = serial();
    let release = Arc::new(Barrier::new(2));
    let r = Arc::clone(&release);
    let first = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&first);
    let server = TcpServer::builder()
        .strategy(pool(1).queue(4))
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            if f.fetch_add(1, Ordering::SeqCst) == 0 {
                r.wait(); // the first request holds the only worker
            }
            req.write_all(b"served\n")
        })
        .unwrap();
    let mut running = run(server);
    let addr = running.inet();
    let mut a = BufReader::new(tcp_connect(addr));
    let mut b = BufReader::new(tcp_connect(addr));
    // Wait until the second one sits in the queue.
    eventually("the second connection queued", || running.handle.stats().queue_depth == 1);
    running.handle.shutdown();
    release.wait();
    let mut line = String::new();
    a.read_line(&mut line).unwrap();
    assert_eq!(line, "served\n");
    line.clear();
    b.read_line(&mut line).unwrap();
    assert_eq!(line, "served\n", "a queued connection was dropped by the shutdown");
    running.join().unwrap();
}

#[test]
fn after_shutdown_new_tcp_connections_are_refused() {
    let _serial = serial();
    let server = TcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    let addr = server.server_address().as_inet().unwrap();
    server.shutdown();
    server.serve_forever().unwrap();
    // The server object still exists, but it no longer accepts.
    let err = std::net::TcpStream::connect(addr).map(|mut s| {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"x\n").and_then(|_| s.read(&mut [0u8; 4]))
    });
    // Refused at connect, or (a connection already in the kernel's queue)
    // reset or closed without an answer; never left waiting.
    match err {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(Ok(0)) => {}
        Ok(Err(e)) => assert!(
            matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
            "neither refused nor closed: {e}"
        ),
        Ok(Ok(n)) => panic!("served {n} bytes after shutdown"),
    }
}

#[test]
fn shutdown_wakes_a_datagram_pool_and_handle_request_timeout_calls_handle_timeout() {
    let _serial = serial();
    let server = UdpServer::builder().strategy(pool(3)).bind("127.0.0.1:0", echo_datagram).unwrap();
    let running = run(server);
    let c = udp_client();
    assert_eq!(udp_round_trip(&c, running.inet(), b"x"), b"x");
    running.stop().unwrap();

    let timeouts = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&timeouts);
    let server = TcpServer::builder()
        .timeout(Duration::from_millis(20))
        .handle_timeout(move || {
            t.fetch_add(1, Ordering::SeqCst);
        })
        .bind("127.0.0.1:0", echo_stream)
        .unwrap();
    server.handle_request().unwrap();
    assert_eq!(timeouts.load(Ordering::SeqCst), 1);
}

/// A shutdown asked for by a handler during `handle_request` ends that call
/// and no more: the next call waits (and times out) as usual, the one after
/// serves the client waiting.
#[test]
fn a_shutdown_during_handle_request_does_not_end_later_calls() {
    let _serial = serial();
    let timeouts = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&timeouts);
    let server = TcpServer::builder()
        .timeout(Duration::from_millis(100))
        .handle_timeout(move || {
            t.fetch_add(1, Ordering::SeqCst);
        })
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?;
            if line == "stop\n" {
                req.server().shutdown();
            }
            req.write_all(line.as_bytes())
        })
        .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let mut first = tcp_connect(addr);
    first.write_all(b"stop\n").unwrap();
    server.handle_request().unwrap();
    assert_eq!(read_one_line(&mut first), "stop\n");
    // Nobody connects: this call waits for its timeout.
    server.handle_request().unwrap();
    assert_eq!(timeouts.load(Ordering::SeqCst), 1, "the second call timed out");
    let mut second = tcp_connect(addr);
    second.write_all(b"served\n").unwrap();
    server.handle_request().unwrap();
    assert_eq!(read_one_line(&mut second), "served\n");
    // And a shutdown while nothing serves makes the next call return at
    // once, without waiting or calling handle_timeout.
    server.shutdown();
    server.handle_request().unwrap();
    assert_eq!(timeouts.load(Ordering::SeqCst), 1);
    server.handle_request().unwrap();
    assert_eq!(timeouts.load(Ordering::SeqCst), 2);
}

/// After the grace period the connections are shut down; handlers that then
/// take a moment to finish (up to a second) are still waited for, whoever
/// noticed the deadline first.
#[test]
fn handlers_unblocked_at_the_deadline_are_waited_for() {
    let _serial = serial();
    for strategy in [AnyStrategy::from(Threading::new()), pool(2).into()] {
        for _ in 0..3 {
            let finished = Arc::new(AtomicUsize::new(0));
            let f = Arc::clone(&finished);
            let server = TcpServer::builder()
                .strategy(strategy.clone())
                .grace_period(Duration::from_millis(100))
                .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                    let _ = req.read(&mut [0u8; 8]); // until the server shuts the connection
                    // Cleaning up, slowly: what must be waited for (the
                    // behaviour under test, not synchronisation).
                    std::thread::sleep(Duration::from_millis(300));
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap();
            let mut running = run(server);
            let _c = tcp_connect(running.inet());
            eventually("the connection active", || running.handle.stats().active == 1);
            running.handle.shutdown();
            running.join().unwrap();
            assert_eq!(finished.load(Ordering::SeqCst), 1, "{strategy}: serve_forever returned before the handler");
        }
    }
}

/// A handler that waits for requests with `wait_for_data` marks its
/// connection idle between requests: a shutdown closes idle connections at
/// once, while a request already begun gets the grace period and its answer.
#[test]
fn idle_connections_close_at_once_and_requests_begun_are_finished() {
    let _serial = serial();
    // Requests are 8 bytes; the answer is the request reversed.
    let server = TcpServer::builder()
        .strategy(Threading::new())
        .grace_period(Duration::from_secs(30))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            while req.wait_for_data()? {
                let mut request = [0u8; 8];
                req.read_exact(&mut request)?;
                request.reverse();
                req.write_all(&request)?;
            }
            Ok(())
        })
        .unwrap();
    let mut running = run(server);
    let addr = running.inet();
    let mut idle = tcp_connect(addr);
    assert_eq!(round_trip(&mut idle, b"12345678"), b"87654321");
    let mut begun = tcp_connect(addr);
    begun.write_all(b"abcd").unwrap(); // half a request
    eventually("both connections active", || running.handle.stats().active == 2);
    let start = Instant::now();
    running.handle.shutdown();
    // The idle one is closed at once...
    assert_eq!(idle.read(&mut [0u8; 8]).unwrap(), 0);
    assert!(start.elapsed() < Duration::from_secs(5));
    // ...the begun one is finished and answered, then closed as idle.
    begun.write_all(b"efgh").unwrap();
    let mut answer = [0u8; 8];
    begun.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"hgfedcba");
    assert_eq!(begun.read(&mut [0u8; 8]).unwrap(), 0);
    running.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "the 30 s grace period was waited out");
    // A request that arrived just before the shutdown is still answered:
    // the handler, busy with the first, is held until the second request
    // is sent and the shutdown asked.
    let (busy_tx, busy_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (busy_tx, go_rx) = (std::sync::Mutex::new(busy_tx), std::sync::Mutex::new(go_rx));
    let server = TcpServer::builder()
        .strategy(Threading::new())
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            while req.wait_for_data()? {
                let _ = busy_tx.lock().unwrap().send(()); // busy with something...
                let _ = go_rx.lock().unwrap().recv_timeout(TIMEOUT); // ...until let go
                let mut request = [0u8; 8];
                req.read_exact(&mut request)?;
                req.write_all(&request)?;
            }
            Ok(())
        })
        .unwrap();
    let mut running = run(server);
    let mut c = tcp_connect(running.inet());
    c.write_all(b"one.....").unwrap();
    busy_rx.recv_timeout(TIMEOUT).expect("the handler busy with the first request");
    c.write_all(b"two.....").unwrap(); // queued while the handler is busy
    running.handle.shutdown();
    go_tx.send(()).unwrap();
    go_tx.send(()).unwrap(); // the second request's turn
    let mut both = [0u8; 16];
    c.read_exact(&mut both).unwrap();
    assert_eq!(&both, b"one.....two.....");
    running.join().unwrap();
}

/// A request of two lines: after the first, the second is read in the
/// middle of the request (not at a boundary), so only the grace period
/// bounds the wait for it.
fn two_lines(req: &mut StreamRequest) -> std::io::Result<()> {
    let Some(first) = req.next_line()? else { return Ok(()) };
    let Some(second) = req.next_line()? else { return Ok(()) };
    writeln!(req, "{first}+{second}")
}

/// Python's `block_on_close = True`: with `grace_period(Duration::MAX)` a
/// shutdown waits for every request to finish, however long it takes —
/// under Threading, ThreadPool and Forking.
#[test]
fn no_deadline_waits_for_every_request_as_pythons_block_on_close() {
    let _serial = serial();
    for strategy in [AnyStrategy::from(Threading::new()), pool(2).into(), Forking::new().into()] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .grace_period(Duration::MAX)
            .bind("127.0.0.1:0", two_lines)
            .unwrap();
        let running = run(server);
        let mut c = tcp_connect(running.inet());
        c.write_all(b"start\n").unwrap();
        eventually("the connection active", || running.handle.stats().active == 1);
        running.handle.shutdown();
        // Well past the drain window and any deadline a default would set
        // soon: the request is still waited for. (The quiet period of a
        // "must not be cut" check.)
        std::thread::sleep(Duration::from_millis(400));
        c.write_all(b"go\n").unwrap();
        assert_eq!(read_one_line(&mut c), "start+go\n", "{strategy}");
        let mut running = running;
        running.join().unwrap();
    }
}

/// Python's `daemon_threads = True` (nothing waited for): with
/// `grace_period(Duration::ZERO)` every connection is shut down at once and
/// `serve_forever` returns — under Threading, ThreadPool and Forking.
#[test]
fn zero_grace_waits_for_nothing_as_pythons_daemon_threads() {
    let _serial = serial();
    for strategy in [AnyStrategy::from(Threading::new()), pool(2).into(), Forking::new().into()] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .grace_period(Duration::ZERO)
            .bind("127.0.0.1:0", two_lines)
            .unwrap();
        let running = run(server);
        let mut c = tcp_connect(running.inet());
        c.write_all(b"start\n").unwrap();
        eventually("the connection active", || running.handle.stats().active == 1);
        let start = Instant::now();
        running.handle.shutdown();
        let mut running = running;
        running.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(2), "{strategy}: took {:?}", start.elapsed());
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{strategy}: the request was not cut: {rest:?}");
    }
}

/// `ServerThread::stop` gives the final counters: every request concluded
/// and counted, nothing active — even for handlers still in `finish` when
/// their clients had their answers, and for forked children not yet reaped
/// (read from the handle right after the answers, they lagged: `active 3,
/// completed 0` was seen).
#[test]
fn stop_gives_the_final_counters() {
    const CLIENTS: u64 = 3;
    let strategies: [AnyStrategy; 5] = [
        Synchronous.into(),
        Threading::new().into(),
        pool(2).into(),
        Forking::new().into(),
        socketserver::Event::new().into(),
    ];
    struct SlowFinish;
    impl socketserver::RequestHandler<StreamRequest> for SlowFinish {
        fn handle(&self, req: &mut StreamRequest) -> std::io::Result<()> {
            let line = req.next_line()?.unwrap_or_default();
            writeln!(req, "{line}")?;
            req.flush()
        }
        fn finish(&self, _req: &mut StreamRequest) -> std::io::Result<()> {
            // The client has its answer; the request is not done yet.
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        }
    }
    for strategy in strategies {
        let name = strategy.to_string();
        let server = TcpServer::builder().strategy(strategy).bind("127.0.0.1:0", SlowFinish).unwrap().spawn().unwrap();
        let addr = server.server_address().as_inet().unwrap();
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let mut c = retry_connect(addr);
            writeln!(c, "hello {i}").unwrap();
            assert_eq!(read_one_line(&mut c), format!("hello {i}\n"), "{name}");
            clients.push(c);
        }
        let stats = server.stop().unwrap();
        assert_eq!((stats.accepted, stats.completed, stats.active), (CLIENTS, CLIENTS, 0), "{name}: {stats:?}");
        assert_eq!(stats.handler_errors, 0, "{name}: {stats:?}");
    }
}
