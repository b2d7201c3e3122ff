//! Echo over every socket kind under every strategy.
//!
//! Ported from CPython's Lib/test/test_socketserver.py (SocketServerTest:
//! test_TCPServer, test_ThreadingTCPServer, test_ForkingTCPServer,
//! test_UnixStreamServer, ..., test_UDPServer, test_ThreadingUDPServer,
//! test_ForkingUDPServer, test_UnixDatagramServer, ...): each starts the
//! server, has clients send a message and read it back, then shuts it down.

mod util;

use std::io::{self, Write};

use std::thread;

use socketserver::{AnyStrategy, Forking, Synchronous, ThreadPool, Threading};
use socketserver::{TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};
use util::*;

const MSG: &[u8] = b"We are the knights who say Ni!\n";
const CLIENTS: usize = 3;

fn strategies() -> Vec<AnyStrategy> {
    vec![Synchronous.into(), Threading::new().into(), ThreadPool::new(2).max_workers(4).into(), Forking::new().into()]
}

#[test]
fn tcp_echo_every_strategy() {
    let _serial = serial();
    for strategy in strategies() {
        let server = TcpServer::builder().strategy(strategy.clone()).bind("127.0.0.1:0", echo_lines).unwrap();
        let running = run(server);
        let addr = running.inet();
        // Clients one after another work under every strategy, Synchronous included.
        for _ in 0..CLIENTS {
            let mut c = tcp_connect(addr);
            assert_eq!(round_trip(&mut c, MSG), MSG, "{strategy}");
            assert_eq!(round_trip(&mut c, b"second message\n"), b"second message\n", "{strategy}");
            c.write_all(b"quit\n").unwrap();
        }
        running.stop().unwrap();
    }
}

#[test]
fn tcp_echo_concurrent_clients_on_concurrent_strategies() {
    let _serial = serial();
    for strategy in strategies().into_iter().skip(1) {
        let server = TcpServer::builder().strategy(strategy.clone()).bind("127.0.0.1:0", echo_lines).unwrap();
        let running = run(server);
        let addr = running.inet();
        // Both connections open at once: a Synchronous server would serve only one.
        let mut a = tcp_connect(addr);
        let mut b = tcp_connect(addr);
        assert_eq!(round_trip(&mut a, b"a1\n"), b"a1\n", "{strategy}");
        assert_eq!(round_trip(&mut b, b"b1\n"), b"b1\n", "{strategy}");
        assert_eq!(round_trip(&mut a, b"a2\n"), b"a2\n", "{strategy}");
        a.write_all(b"quit\n").unwrap();
        b.write_all(b"quit\n").unwrap();
        running.stop().unwrap();
    }
}

#[test]
fn tcp_echo_ipv6() {
    let _serial = serial();
    let server = match TcpServer::builder().strategy(Threading::new()).bind("[::1]:0", echo_lines) {
        Ok(server) => server,
        // No IPv6 loopback on this machine: say so where a passing test's
        // output is still shown (libtest captures `eprintln!`, not stderr).
        Err(e)
            if matches!(e.kind(), io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported)
                || matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)) =>
        {
            let _ = writeln!(io::stderr(), "tcp_echo_ipv6: SKIPPED: no IPv6 loopback here ({e})");
            return;
        }
        Err(e) => panic!("binding [::1]:0 failed: {e}"),
    };
    let running = run(server);
    assert!(running.inet().is_ipv6());
    let mut c = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut c, MSG), MSG);
    c.write_all(b"quit\n").unwrap();
    running.stop().unwrap();
}

#[test]
fn unix_stream_echo_every_strategy() {
    let _serial = serial();
    let dir = TempDir::new("echo");
    for (i, strategy) in strategies().into_iter().enumerate() {
        let path = dir.join(&format!("s{i}.sock"));
        let server = UnixStreamServer::builder().strategy(strategy.clone()).bind(&path, echo_lines).unwrap();
        let running = run(server);
        assert_eq!(running.path(), path);
        for _ in 0..CLIENTS {
            let mut c = unix_connect(&path);
            assert_eq!(round_trip(&mut c, MSG), MSG, "{strategy}");
            c.write_all(b"quit\n").unwrap();
        }
        running.stop().unwrap();
        assert!(!path.exists(), "{strategy}: the socket file is removed on close");
    }
}

#[test]
fn udp_echo_every_strategy() {
    let _serial = serial();
    for strategy in strategies() {
        let server = UdpServer::builder().strategy(strategy.clone()).bind("127.0.0.1:0", echo_datagram).unwrap();
        let running = run(server);
        let addr = running.inet();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                thread::spawn(move || {
                    let c = udp_client();
                    let msg = format!("datagram {i}");
                    assert_eq!(udp_round_trip(&c, addr, msg.as_bytes()), msg.as_bytes());
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        running.stop().unwrap();
    }
}

#[test]
fn unix_datagram_echo_every_strategy() {
    let _serial = serial();
    let dir = TempDir::new("dgram");
    for (i, strategy) in strategies().into_iter().enumerate() {
        let path = dir.join(&format!("d{i}.sock"));
        let server = UnixDatagramServer::builder().strategy(strategy.clone()).bind(&path, echo_datagram).unwrap();
        let running = run(server);
        let client = unix_dgram_client(&dir, &format!("c{i}.sock"));
        for _ in 0..CLIENTS {
            client.send_to(MSG, &path).unwrap();
            let mut buf = [0u8; 256];
            let n = client.recv(&mut buf).expect("a reply");
            assert_eq!(&buf[..n], MSG, "{strategy}");
        }
        running.stop().unwrap();
        assert!(!path.exists(), "{strategy}: the socket file is removed on close");
    }
}
