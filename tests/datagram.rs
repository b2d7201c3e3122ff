//! Datagram servers: sizes, truncation, Unix peers.

mod util;

use std::io::ErrorKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketserver::{DatagramRequest, MAX_UDP_PAYLOAD, ThreadPool, UdpServer, UnixDatagramServer};
use util::*;

#[test]
fn the_largest_udp_payload_arrives_whole_by_default() {
    let server = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let running = run(server);
    let c = udp_client();
    let big: Vec<u8> = (0..MAX_UDP_PAYLOAD).map(|i| (i % 251) as u8).collect();
    assert_eq!(udp_round_trip(&c, running.inet(), &big), big);
    assert_eq!(udp_round_trip(&c, running.inet(), b""), b"", "an empty datagram is a datagram too");
    running.stop().unwrap();
}

/// Python reads `max_packet_size` bytes and hands the handler a truncated
/// datagram as if it were whole. Here it is reported and dropped.
#[test]
fn oversized_datagrams_are_reported_never_truncated() {
    for pool in [false, true] {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let e = Arc::clone(&errors);
        let handled = Arc::new(Mutex::new(Vec::new()));
        let h = Arc::clone(&handled);
        let builder = UdpServer::builder()
            .max_datagram_size(100)
            .handle_error(move |_, err| e.lock().unwrap().push((err.kind(), err.to_string())));
        let handler = move |req: &mut DatagramRequest| {
            h.lock().unwrap().push(req.data().len());
            req.reply(b"handled")
        };
        let running = if pool {
            run(builder.strategy(ThreadPool::default()).bind("127.0.0.1:0", handler).unwrap())
        } else {
            run(builder.bind("127.0.0.1:0", handler).unwrap())
        };
        let c = udp_client();
        c.send_to(&[7u8; 101], running.inet()).unwrap();
        c.send_to(&[7u8; 5000], running.inet()).unwrap();
        assert_eq!(udp_round_trip(&c, running.inet(), &[1u8; 100]), b"handled");
        assert_eq!(*handled.lock().unwrap(), [100], "only the datagram that fits reached the handler");
        let errors = errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|(k, _)| *k == ErrorKind::InvalidData));
        assert!(errors[1].1.contains("5000 bytes"), "the real size is reported on Linux: {}", errors[1].1);
        assert_eq!(running.handle.stats().oversized, 2);
        running.stop().unwrap();
    }
}

#[test]
fn unix_datagram_peers_are_answered_at_their_path_and_unnamed_ones_get_an_error() {
    let dir = TempDir::new("unixpeer");
    let path = dir.join("server.sock");
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = Arc::clone(&errors);
    let server = UnixDatagramServer::builder()
        .handle_error(move |peer, err| e.lock().unwrap().push(format!("{peer}: {err}")))
        .bind(&path, |req: &mut DatagramRequest| {
            let answer = format!("hello {}", req.peer_addr());
            req.reply(answer.as_bytes())
        })
        .unwrap();
    let running = run(server);
    let named = unix_dgram_client(&dir, "client.sock");
    named.send_to(b"hi", &path).unwrap();
    let mut buf = [0u8; 256];
    let n = named.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), format!("hello {}", dir.join("client.sock").display()));

    let unnamed = std::os::unix::net::UnixDatagram::unbound().unwrap();
    unnamed.send_to(b"hi", &path).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while errors.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    let errors = errors.lock().unwrap().clone();
    assert!(errors[0].contains("(unnamed)") && errors[0].contains("unnamed"), "{errors:?}");
    running.stop().unwrap();
}

/// Pool workers wait in `recvfrom` itself; a shutdown wakes them with
/// datagrams sent to the socket — also when it is bound to a wildcard
/// address, is a Unix socket, or was adopted in non-blocking mode.
#[test]
fn datagram_pools_wake_from_recvfrom_at_shutdown() {
    use socketserver::ThreadPool;
    use std::num::NonZeroUsize;
    let pool = || ThreadPool::new(NonZeroUsize::new(3).unwrap());
    let check = |running: util::Running, send: &dyn Fn()| {
        send();
        let start = std::time::Instant::now();
        running.stop().unwrap();
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    };

    let wildcard = run(UdpServer::builder().strategy(pool()).bind("0.0.0.0:0", echo_datagram).unwrap());
    let port = wildcard.inet().port();
    check(wildcard, &|| {
        let c = udp_client();
        assert_eq!(udp_round_trip(&c, ([127, 0, 0, 1], port).into(), b"hi"), b"hi");
    });

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let adopted = run(UdpServer::builder().strategy(pool()).from_socket(socket, echo_datagram).unwrap());
    let addr = adopted.inet();
    check(adopted, &|| assert_eq!(udp_round_trip(&udp_client(), addr, b"nb"), b"nb"));

    let dir = TempDir::new("wake");
    let path = dir.join("pool.sock");
    let unix = run(UnixDatagramServer::builder().strategy(pool()).bind(&path, echo_datagram).unwrap());
    let client = unix_dgram_client(&dir, "c.sock");
    check(unix, &|| {
        client.send_to(b"u", &path).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
    });
}
