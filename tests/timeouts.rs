//! Per-connection timeouts and socket options.

mod util;

use std::io::{self, ErrorKind, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use socketserver::{StreamRequest, TcpServer, ThreadPool};
use util::*;

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let (tx, rx) = mpsc::channel();
    let server = TcpServer::builder()
        .strategy(ThreadPool::default())
        .idle_timeout(Duration::from_millis(100))
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            let result = echo_stream(req);
            tx.send(result.as_ref().map_err(|e| (e.kind(), e.to_string())).copied()).unwrap();
            result
        })
        .unwrap();
    let running = run(server);
    let mut c = tcp_connect(running.inet());
    // Active clients are served...
    assert_eq!(round_trip(&mut c, b"still here"), b"still here");
    // ...then silence: the server closes the connection.
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0);
    let (kind, msg) = rx.recv().unwrap().unwrap_err();
    assert_eq!(kind, ErrorKind::TimedOut);
    assert!(msg.contains("idle timeout"), "{msg}");
    assert_eq!(running.handle.stats().idle_closed, 1);
    assert_eq!(running.handle.stats().handler_errors, 0, "an idle close is not the handler's failure");
    running.stop().unwrap();
}

/// With a read timeout shorter than the idle timeout, a handler that
/// retries its reads after each read timeout is still closed once the peer
/// has been silent for the idle timeout.
#[test]
fn the_idle_timeout_holds_when_the_read_timeout_is_shorter() {
    let (tx, rx) = mpsc::channel();
    let server = TcpServer::builder()
        .read_timeout(Duration::from_millis(60))
        .idle_timeout(Duration::from_millis(300))
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            let mut buf = [0u8; 16];
            let mut read_timeouts = 0;
            let start = std::time::Instant::now();
            let outcome = loop {
                match req.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::TimedOut && !e.to_string().contains("idle timeout") => {
                        read_timeouts += 1;
                        if read_timeouts > 100 {
                            break Err("never closed for idleness".to_string());
                        }
                    }
                    Err(e) => break Err(e.to_string()),
                }
            };
            tx.send((outcome, read_timeouts, start.elapsed())).unwrap();
            Ok(())
        })
        .unwrap();
    let running = run(server);
    let mut c = tcp_connect(running.inet());
    c.write_all(b"x").unwrap();
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0, "the server closed the silent connection");
    let (outcome, read_timeouts, took) = rx.recv_timeout(TIMEOUT).unwrap();
    let msg = outcome.unwrap_err();
    assert!(msg.contains("idle timeout"), "{msg}");
    assert!(read_timeouts >= 2, "the shorter read timeout still applied: {read_timeouts}");
    assert!(took >= Duration::from_millis(290), "closed before the idle timeout: {took:?}");
    assert_eq!(running.handle.stats().idle_closed, 1);
    running.stop().unwrap();
}

#[test]
fn a_read_timeout_is_reported_to_the_handler_and_the_connection_stays_open() {
    let server = TcpServer::builder()
        .read_timeout(Duration::from_millis(50))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut buf = [0u8; 16];
            let err = req.read(&mut buf).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TimedOut);
            // The handler decides: it tells the client and reads on.
            req.write_all(b"timed out, still listening\n")?;
            let n = req.read(&mut buf)?;
            req.write_all(&buf[..n])
        })
        .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = io::BufReader::new(tcp_connect(addr));
        let mut line = String::new();
        io::BufRead::read_line(&mut c, &mut line).unwrap();
        c.get_mut().write_all(b"late").unwrap();
        let mut rest = String::new();
        c.read_to_string(&mut rest).unwrap();
        (line, rest)
    });
    server.handle_request().unwrap();
    let (line, rest) = client.join().unwrap();
    assert_eq!(line, "timed out, still listening\n");
    assert_eq!(rest, "late");
    assert_eq!(server.stats().idle_closed, 0);
    assert_eq!(server.stats().handler_errors, 0);
}

#[test]
fn a_write_timeout_stops_a_peer_that_does_not_read() {
    let (tx, rx) = mpsc::channel();
    let server = TcpServer::builder()
        .write_timeout(Duration::from_millis(100))
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            let chunk = vec![0u8; 1 << 20];
            let result = (0..1000).try_for_each(|_| req.write_all(&chunk));
            tx.send(result.map_err(|e| e.kind())).unwrap();
            Ok(())
        })
        .unwrap();
    let c = tcp_connect(server.server_address().as_inet().unwrap());
    server.handle_request().unwrap();
    assert_eq!(rx.recv().unwrap(), Err(ErrorKind::TimedOut));
    drop(c);
}

#[test]
fn nodelay_is_set_on_accepted_connections_unless_turned_off() {
    // (`None`: the default, which is on: writes are coalesced, see tests/writes.rs.)
    for on in [None, Some(false), Some(true)] {
        let (tx, rx) = mpsc::channel();
        let builder = TcpServer::builder();
        let builder = match on {
            Some(on) => builder.nodelay(on),
            None => builder,
        };
        let server = builder
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                let s = req.socket()?.as_tcp().expect("a TCP server gives TCP streams");
                tx.send(s.nodelay()?).unwrap();
                Ok(())
            })
            .unwrap();
        let _c = tcp_connect(server.server_address().as_inet().unwrap());
        server.handle_request().unwrap();
        assert_eq!(rx.recv().unwrap(), on.unwrap_or(true), "nodelay({on:?})");
    }
}
