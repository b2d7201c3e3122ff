//! Slow and silent clients cannot pin workers for ever.
//!
//! What happens, exactly:
//! * A silent client (connects, sends nothing, or stops mid-request) is
//!   closed after the idle timeout, if one is set.
//! * A slowloris (one byte every few hundred ms) resets any idle timeout;
//!   the time server bounds it with its request timeout: a line must be
//!   whole within that time of its first byte, or the client gets an
//!   `error:` line and is closed. Other handlers can do the same with
//!   `StreamRequest::set_read_deadline`.
//! * With no timeout at all, each such client holds one worker for as long
//!   as it likes: the pool grows to `max_workers`, then connections wait in
//!   the queue and then in the kernel backlog (Overflow::Block), or are
//!   closed (Overflow::Reject); `max_connections` caps them outright. The
//!   server never runs out of threads, and well-behaved clients already
//!   connected keep being served.

mod util;

use std::io::{BufRead, BufReader, Read, Write};

use std::time::{Duration, Instant};

use socketserver::servers::Strftime;
use socketserver::{TcpServer, ThreadPool};
use util::*;

fn ask_time(addr: std::net::SocketAddr) -> String {
    let mut c = BufReader::new(tcp_connect(addr));
    c.get_mut().write_all(b"%Y\n").unwrap();
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    line
}

#[test]
fn a_slowloris_is_cut_off_by_the_request_timeout_while_others_are_served() {
    let server = TcpServer::builder()
        .strategy(ThreadPool::new(2))
        .bind("127.0.0.1:0", Strftime::new().request_timeout(Some(Duration::from_millis(300))))
        .unwrap();
    let running = run(server);
    let addr = running.inet();
    let mut slow = tcp_connect(addr);
    let start = Instant::now();
    let mut answer = Vec::new();
    // One byte every 50 ms — well inside any idle timeout — never a newline.
    loop {
        if slow.write_all(b"%").is_err() {
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        match slow.read(&mut [0u8; 0][..]).and_then(|_| {
            let mut buf = [0u8; 256];
            slow.read(&mut buf).map(|n| answer.extend_from_slice(&buf[..n]))
        }) {
            Ok(()) if answer.ends_with(b"\n") => break,
            _ => {}
        }
        assert!(start.elapsed() < TIMEOUT, "the slow client was never cut off");
        // Meanwhile everyone else is answered.
        assert_eq!(ask_time(addr).len(), 5);
    }
    let answer = String::from_utf8(answer).unwrap();
    assert_eq!(answer, "error: request line not complete in time; closing\n");
    assert!(start.elapsed() >= Duration::from_millis(250), "cut off before the request timeout");
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(slow.read(&mut [0u8; 16]).unwrap(), 0, "closed after the error line");
    running.stop().unwrap();
}

#[test]
fn a_client_that_stops_mid_request_is_closed_by_the_idle_timeout() {
    let server = TcpServer::builder()
        .strategy(ThreadPool::new(1))
        .idle_timeout(Duration::from_millis(200))
        .bind("127.0.0.1:0", Strftime::new().request_timeout(None))
        .unwrap();
    let running = run(server);
    let mut stalled = tcp_connect(running.inet());
    stalled.write_all(b"%Y-%m").unwrap(); // half a request, then silence
    let mut rest = Vec::new();
    assert_eq!(stalled.read_to_end(&mut rest).unwrap(), 0);
    assert!(rest.is_empty());
    // The only worker is free again.
    assert_eq!(ask_time(running.inet()).len(), 5);
    let stats = running.handle.stats();
    assert_eq!(stats.idle_closed, 1);
    assert_eq!(stats.handler_errors, 0);
    running.stop().unwrap();
}

#[test]
fn without_timeouts_slow_clients_hold_workers_up_to_the_pool_maximum_and_the_rest_wait() {
    let server = TcpServer::builder()
        .strategy(ThreadPool::new(1).max_workers(2).queue(0))
        .bind("127.0.0.1:0", Strftime::new().request_timeout(None))
        .unwrap();
    let running = run(server);
    let addr = running.inet();
    // Two silent clients take both workers.
    let mut silent: Vec<_> = (0..2).map(|_| tcp_connect(addr)).collect();
    for s in &mut silent {
        s.write_all(b"%").unwrap();
    }
    eventually("both workers held by the silent clients", || running.handle.stats().workers_busy >= 2);
    // A third client is not served while they hold on: it waits in the
    // backlog (nothing is dropped)...
    let mut waiting = BufReader::new(tcp_connect(addr));
    waiting.get_mut().write_all(b"%Y\n").unwrap();
    waiting.get_mut().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut line = String::new();
    assert!(waiting.read_line(&mut line).is_err(), "served while every worker was held: {line:?}");
    assert_eq!(running.handle.stats().workers_total, 2, "the pool stays within max_workers");
    // ...and is served as soon as one of them lets go.
    drop(silent.pop());
    waiting.get_mut().set_read_timeout(Some(TIMEOUT)).unwrap();
    line.clear();
    waiting.read_line(&mut line).unwrap();
    assert_eq!(line.len(), 5, "{line:?}");
    drop((silent, waiting));
    running.stop().unwrap();
}
