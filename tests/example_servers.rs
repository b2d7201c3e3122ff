//! The echo_server and time_server examples, run in-process under several
//! strategies, each read from its `--strategy` flag; and the bundled time server (`Strftime`) over TCP
//! under the event strategy.

mod util;

#[path = "../examples/echo_server.rs"]
#[allow(dead_code)]
mod echo_server;
#[path = "../examples/time_server.rs"]
#[allow(dead_code)]
mod time_server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use socketserver::servers::{MAX_TIME_REQUEST, Strftime};
use socketserver::{AnyStrategy, Event, Synchronous, TcpServer, ThreadPool, Threading};
use util::*;

fn cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get) as u64
}

/// The most threads an event server may have when its handlers are quick:
/// its pollers (a CPU each), and a few more a busy machine may make it
/// start for a handler that looked blocked (they retire after 10 s).
fn thread_bound() -> u64 {
    2 * cpus() + 2
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn echoes_several_clients_at_once(running: &Running) {
    let mut a = tcp_connect(running.inet());
    let mut b = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut a, b"from a"), b"from a");
    assert_eq!(round_trip(&mut b, b"from b"), b"from b");
    let big = vec![42u8; 1 << 20];
    let mut c = tcp_connect(running.inet());
    let writer = {
        let mut w = c.try_clone().unwrap();
        let big = big.clone();
        std::thread::spawn(move || w.write_all(&big).unwrap())
    };
    let mut back = vec![0u8; big.len()];
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back, big);
    assert_eq!(round_trip(&mut a, b"a again"), b"a again");
    drop((a, b, c));
    wait_for("every connection to end", || running.handle.stats().active == 0);
    assert_eq!(running.handle.stats().handler_errors, 0);
}

#[test]
fn echo_server_example_runs_under_the_event_strategy_by_default() {
    let server = echo_server::bind("127.0.0.1:0").unwrap();
    assert!(matches!(server.strategy(), AnyStrategy::Event(_)), "{}", server.strategy());
    let running = run(server);
    echoes_several_clients_at_once(&running);
    running.stop().unwrap();
}

#[test]
fn echo_server_example_echoes_several_clients_at_once_on_a_pool_and_threads() {
    for strategy in [ThreadPool::default().into(), Threading::new().into()] {
        let running = run(echo_server::bind_with("127.0.0.1:0", strategy).unwrap());
        echoes_several_clients_at_once(&running);
        running.stop().unwrap();
    }
}

/// Under the event strategy, echo connections between messages are parked:
/// counted in `parked`, with no thread each (the server's threads stay at
/// its pollers however many connections wait), and each resumes when it
/// sends again.
#[test]
fn echo_server_example_parks_idle_connections_under_event() {
    let running = run(echo_server::bind_with("127.0.0.1:0", Event::new().into()).unwrap());
    let n = 2 * thread_bound() + 8;
    let mut clients: Vec<TcpStream> = (0..n).map(|_| tcp_connect(running.inet())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("hello from {i}");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    wait_for("every connection to park", || running.handle.stats().parked == n);
    let stats = running.handle.stats();
    assert!(stats.workers_total <= thread_bound(), "{} threads for {n} idle connections", stats.workers_total);
    assert_eq!(stats.workers_busy, 0);
    // Each resumes, in any order, and parks again.
    for (i, c) in clients.iter_mut().enumerate().rev() {
        let msg = format!("again from {i}\n");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    wait_for("every connection to park again", || running.handle.stats().parked == n);
    // A parked connection's end reaches its handler: it finishes and closes.
    drop(clients.pop());
    wait_for("the closed one to end", || running.handle.stats().active == n - 1);
    assert_eq!(running.handle.stats().parked, n - 1);
    drop(clients);
    wait_for("all to end", || running.handle.stats().active == 0);
    assert_eq!(running.handle.stats().parked, 0);
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}

/// `--strategy` is read as `AnyStrategy` reads it; a bad one is an error
/// that names it and lists the choices.
#[test]
fn echo_server_example_takes_its_strategy_from_the_command_line() {
    use echo_server::parse_args;
    let args = |s: &[&str]| parse_args(&s.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    assert_eq!(args(&[]).unwrap(), (echo_server::DEFAULT_ADDR.to_string(), Event::new().into()));
    assert_eq!(
        args(&["[::1]:0", "--strategy", "pool"]).unwrap(),
        ("[::1]:0".to_string(), ThreadPool::default().into())
    );
    assert_eq!(args(&["--strategy", "threading"]).unwrap().1, Threading::new().into());
    assert_eq!(args(&["--strategy", "pool(4-64)"]).unwrap().1, ThreadPool::new(4).max_workers(64).into());
    assert_eq!(
        args(&["--strategy", "event(2)", "x:1"]).unwrap(),
        ("x:1".to_string(), Event::new().pollers(2).max_workers(2).into())
    );
    for bad in [&["--strategy"][..], &["--strategy", "fork"], &["--bogus"], &["a:1", "b:2"]] {
        assert!(args(bad).is_err(), "{bad:?}");
    }
    let e = args(&["--strategy", "fork"]).unwrap_err();
    assert!(e.starts_with("\"fork\" is not a strategy") && e.contains("sync, threading"), "{e}");
}

fn renders_formats_and_reports_bad_ones(running: &Running) {
    let c = udp_client();
    let year = String::from_utf8(udp_round_trip(&c, running.inet(), b"%Y")).unwrap();
    assert!(year.len() == 4 && year.chars().all(|ch| ch.is_ascii_digit()), "{year}");
    let default = String::from_utf8(udp_round_trip(&c, running.inet(), b"")).unwrap();
    assert!(default.starts_with(&year) && default.len() == 19, "{default}");
    let bad = String::from_utf8(udp_round_trip(&c, running.inet(), b"\xff\xfe")).unwrap();
    assert!(bad.starts_with("error:"), "{bad}");
}

#[test]
fn time_server_example_renders_formats_and_reports_bad_ones() {
    let server = time_server::bind("127.0.0.1:0").unwrap();
    assert!(matches!(server.strategy(), AnyStrategy::Synchronous(_)), "{}", server.strategy());
    let running = run(server);
    renders_formats_and_reports_bad_ones(&running);
    running.stop().unwrap();
}

/// Under the event strategy a datagram server has a receiver per CPU (its
/// pollers), each answering what it receives: many clients at once are all
/// answered, and the receivers are the only threads.
#[test]
fn time_server_example_under_event_answers_from_a_receiver_per_cpu() {
    let running = run(time_server::bind_with("127.0.0.1:0", Event::new().into()).unwrap());
    renders_formats_and_reports_bad_ones(&running);
    let askers: Vec<_> = (0..8)
        .map(|i| {
            let to = running.inet();
            std::thread::spawn(move || {
                let c = udp_client();
                for _ in 0..25 {
                    let answer = udp_round_trip(&c, to, format!("{i} %Y").as_bytes());
                    assert!(answer.starts_with(format!("{i} 20").as_bytes()), "{answer:?}");
                }
            })
        })
        .collect();
    for a in askers {
        a.join().unwrap();
    }
    // A request counts as completed just after its reply has gone.
    wait_for("every request to be counted", || running.handle.stats().completed == 3 + 8 * 25);
    assert_eq!(running.handle.stats().workers_total, cpus(), "a receiver per CPU");
    running.stop().unwrap();
}

#[test]
fn time_server_example_takes_its_strategy_from_the_command_line() {
    use time_server::parse_args;
    let args = |s: &[&str]| parse_args(&s.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    assert_eq!(args(&[]).unwrap(), (time_server::DEFAULT_ADDR.to_string(), Synchronous.into()));
    let cases: [(&str, AnyStrategy); 5] = [
        ("sync", Synchronous.into()),
        ("pool", ThreadPool::default().into()),
        ("threading", Threading::new().into()),
        ("event", Event::new().into()),
        ("pool(4)", ThreadPool::new(4).into()),
    ];
    for (name, want) in cases {
        assert_eq!(args(&["127.0.0.1:0", "--strategy", name]).unwrap().1, want);
    }
    let e = args(&["--strategy", "epoll"]).unwrap_err();
    assert!(e.starts_with("\"epoll\" is not a strategy") && e.contains("event(N-M)"), "{e}");
}

// ------------------------------------------- the bundled time server, TCP

fn strftime_under_event(handler: Strftime) -> Running {
    run(TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", handler).unwrap())
}

fn read_line(c: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while c.read(&mut byte).expect("a line") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn year() -> String {
    socketserver::servers::render_time(b"%Y").unwrap()
}

/// Lines pipelined in one write are all answered, in order, before the
/// connection parks; then it parks, and resumes with its next line.
#[test]
fn strftime_under_event_answers_pipelined_lines_then_parks_and_resumes() {
    let running = strftime_under_event(Strftime::new());
    let mut c = tcp_connect(running.inet());
    c.write_all(b"a %Y\nb %Y\r\n\nc %%\n").unwrap();
    let year = year();
    assert_eq!(read_line(&mut c), format!("a {year}"));
    assert_eq!(read_line(&mut c), format!("b {year}"));
    assert_eq!(read_line(&mut c).len(), "2026-11-22 05:03:42".len(), "an empty line: the default format");
    assert_eq!(read_line(&mut c), "c %");
    wait_for("the connection to park", || running.handle.stats().parked == 1);
    for i in 0..3 {
        c.write_all(format!("{i} %Y\n").as_bytes()).unwrap();
        assert_eq!(read_line(&mut c), format!("{i} {year}"));
        wait_for("the connection to park again", || running.handle.stats().parked == 1);
    }
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}

/// A line that comes in pieces (each while the connection is parked with
/// the pieces before it, a CR and its LF apart) is one request: one answer.
#[test]
fn strftime_under_event_joins_a_line_split_across_writes() {
    let running = strftime_under_event(Strftime::new());
    let mut c = tcp_connect(running.inet());
    wait_for("the new connection to park", || running.handle.stats().parked == 1);
    c.write_all(b"split %").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(b"Y").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(b" here\r").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(b"\n").unwrap();
    assert_eq!(read_line(&mut c), format!("split {} here", year()));
    wait_for("the connection to park after the line", || running.handle.stats().parked == 1);
    c.write_all(b"%Y").unwrap();
    c.write_all(b"\n%%\n").unwrap();
    assert_eq!(read_line(&mut c), year());
    assert_eq!(read_line(&mut c), "%");
    running.stop().unwrap();
}

/// Many connections wait between lines with no thread each, and each
/// resumes; the limits of a line hold under the event strategy too: one
/// too long is refused and closed, one not complete in time is told so.
#[test]
fn strftime_under_event_parks_idle_connections_and_keeps_its_limits() {
    let running = strftime_under_event(Strftime::new().request_timeout(Some(Duration::from_millis(300))));
    let n = 2 * thread_bound() + 8;
    let mut clients: Vec<TcpStream> = (0..n).map(|_| tcp_connect(running.inet())).collect();
    let year = year();
    for c in &mut clients {
        c.write_all(b"%Y\n").unwrap();
        assert_eq!(read_line(c), year);
    }
    wait_for("every connection to park", || running.handle.stats().parked == n);
    let stats = running.handle.stats();
    assert!(stats.workers_total <= thread_bound(), "{} threads for {n} idle connections", stats.workers_total);
    for c in clients.iter_mut().rev() {
        c.write_all(b"%Y!\n").unwrap();
        assert_eq!(read_line(c), format!("{year}!"));
    }
    // Too long: an error line, then the end.
    let long = clients.pop().unwrap();
    let mut long = long;
    let mut line = vec![b'x'; MAX_TIME_REQUEST + 10];
    line.push(b'\n');
    long.write_all(&line).unwrap();
    assert!(read_line(&mut long).starts_with("error: request line longer than"));
    assert_eq!(long.read(&mut [0u8; 16]).unwrap_or(0), 0);
    // Not complete in time: an error line, then the end.
    let mut slow = clients.pop().unwrap();
    let started = Instant::now();
    slow.write_all(b"%Y").unwrap();
    assert_eq!(read_line(&mut slow), "error: request line not complete in time; closing");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(slow.read(&mut [0u8; 16]).unwrap_or(0), 0);
    // The others are still served.
    for c in &mut clients {
        c.write_all(b"%Y\n").unwrap();
        assert_eq!(read_line(c), year);
    }
    drop(clients);
    wait_for("all to end", || running.handle.stats().active == 0);
    assert_eq!(running.handle.stats().parked, 0);
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}
