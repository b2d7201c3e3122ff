//! `Builder::max_connections`: at the limit the server stops accepting (or
//! receiving) until a request finishes; the kernel holds newcomers, nothing
//! is dropped.
//!
//! The limit is checked by the server loop for stream servers under every
//! strategy and for datagram servers whose loop receives (`can_accept` in
//! src/server.rs); its documentation promises it for datagrams too ("at most
//! `n` connections (or datagrams) in flight"), so the datagram tests hold
//! both the loop-receiving strategies (Threading) and the pool, whose workers
//! receive on the socket themselves, to it.

mod util;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};
use socketserver::{DatagramRequest, StreamRequest, TcpServer, ThreadPool, Threading, UdpServer};
use util::*;

/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

/// Reads one line (up to and including `\n`, or to EOF) byte by byte.
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte).expect("read a line") == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8(line).unwrap()
}

/// Reports the client's first line on `entered`, then echoes lines (that
/// one included) until `quit` or EOF.
fn announcing_echo(entered: Sender<String>) -> impl Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync + 'static {
    move |req: &mut StreamRequest| {
        let mut line = String::new();
        if req.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let _ = entered.send(line.trim_end().to_string());
        req.write_all(line.as_bytes())?;
        echo_lines(req)
    }
}

#[test]
fn max_connections_holds_the_third_connection_until_one_closes() {
    // A pool with workers to spare: the limit, not the pool, holds the third.
    let pool = ThreadPool::new(4);
    for strategy in [socketserver::AnyStrategy::from(Threading::new()), pool.into()] {
        max_connections_hold_the_third(strategy);
    }
}

fn max_connections_hold_the_third(strategy: socketserver::AnyStrategy) {
    let (entered_tx, entered) = unbounded();
    let server = TcpServer::builder()
        .strategy(strategy)
        .max_connections(2)
        .bind("127.0.0.1:0", announcing_echo(entered_tx))
        .unwrap();
    let running = run(server);
    let addr = running.inet();
    let names = ["c0", "c1", "c2"];
    let mut clients: Vec<Option<TcpStream>> = names
        .iter()
        .map(|n| {
            let mut c = tcp_connect(addr);
            c.write_all(format!("{n}\n").as_bytes()).unwrap();
            Some(c)
        })
        .collect();
    let index = |name: &str| names.iter().position(|n| *n == name).unwrap();

    let a = index(&entered.recv_timeout(TIMEOUT).expect("a first connection served"));
    let b = index(&entered.recv_timeout(TIMEOUT).expect("a second connection served"));
    assert_ne!(a, b);
    if let Ok(name) = entered.recv_timeout(QUIET) {
        panic!("{name} was served past max_connections(2): {:?}", running.handle.stats());
    }
    let s = running.handle.stats();
    assert_eq!((s.accepted, s.active), (2, 2), "the third connection waits in the backlog: {s:?}");
    for i in [a, b] {
        let c = clients[i].as_mut().unwrap();
        assert_eq!(read_line(c), format!("{}\n", names[i]));
        assert_eq!(round_trip(c, b"still open\n"), b"still open\n");
    }

    // The first closes: its handler sees EOF and returns, freeing a place.
    drop(clients[a].take());
    let third = index(&entered.recv_timeout(TIMEOUT).expect("the third connection served once one closes"));
    assert!(third != a && third != b);
    let c = clients[third].as_mut().unwrap();
    assert_eq!(read_line(c), format!("{}\n", names[third]), "its early line was kept, nothing dropped");
    for i in [b, third] {
        let c = clients[i].as_mut().unwrap();
        assert_eq!(round_trip(c, b"bye\n"), b"bye\n");
        c.write_all(b"quit\n").unwrap();
    }
    eventually_value("every connection completes", || running.handle.stats(), |s| s.completed == 3 && s.active == 0);
    let s = running.handle.stats();
    assert_eq!((s.accepted, s.rejected, s.handler_errors), (3, 0, 0), "{s:?}");
    running.stop().unwrap();
}

/// A datagram handler that reports the datagram, waits to be released, then
/// echoes it.
fn gated_datagram(
    entered: Sender<Vec<u8>>,
    release: Receiver<()>,
) -> impl Fn(&mut DatagramRequest) -> io::Result<()> + Send + Sync + 'static {
    move |req: &mut DatagramRequest| {
        let _ = entered.send(req.data().to_vec());
        release.recv_timeout(TIMEOUT).map_err(|_| io::Error::other("never released"))?;
        req.reply(req.data())
    }
}

/// Two datagrams with `max_connections(1)`: the second is received only
/// once the first is handled, and both are answered.
fn datagram_limit<S: socketserver::Strategy>(strategy: S) {
    let (entered_tx, entered) = unbounded();
    let (release, release_rx) = unbounded();
    let name = format!("{strategy:?}");
    let server = UdpServer::builder()
        .strategy(strategy)
        .max_connections(1)
        .bind("127.0.0.1:0", gated_datagram(entered_tx, release_rx))
        .unwrap();
    let running = run(server);
    let addr = running.inet();
    let client = udp_client();
    client.send_to(b"d1", addr).unwrap();
    assert_eq!(entered.recv_timeout(TIMEOUT).expect("the first datagram handled"), b"d1");
    client.send_to(b"d2", addr).unwrap();
    if let Ok(d) = entered.recv_timeout(QUIET) {
        panic!(
            "{name}: datagram {:?} handled while another is in flight, past max_connections(1): {:?}",
            String::from_utf8_lossy(&d),
            running.handle.stats()
        );
    }
    let s = running.handle.stats();
    assert_eq!((s.accepted, s.active), (1, 1), "{name}: the second datagram waits in the socket buffer: {s:?}");

    release.send(()).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = client.recv_from(&mut buf).expect("the first reply");
    assert_eq!(&buf[..n], b"d1");
    assert_eq!(entered.recv_timeout(TIMEOUT).expect("the second datagram handled"), b"d2", "{name}: not dropped");
    release.send(()).unwrap();
    let (n, _) = client.recv_from(&mut buf).expect("the second reply");
    assert_eq!(&buf[..n], b"d2");
    eventually_value("both datagrams complete", || running.handle.stats(), |s| s.completed == 2 && s.active == 0);
    running.stop().unwrap();
}

#[test]
fn max_connections_limits_datagrams_in_flight_under_threading() {
    datagram_limit(Threading::new());
}

#[test]
fn max_connections_limits_datagrams_in_flight_under_a_pool() {
    datagram_limit(ThreadPool::new(2));
}
