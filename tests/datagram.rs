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
            .handle_error(move |_, _, err| e.lock().unwrap().push((err.kind(), err.to_string())));
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
        // Pool workers receive side by side: the one with the 101 bytes may
        // report after the third datagram is answered.
        eventually_value("both errors reported", || errors.lock().unwrap().clone(), |e| e.len() >= 2);
        let errors = errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|(k, _)| *k == ErrorKind::InvalidData));
        // (In either order: pool workers receive side by side.)
        assert!(errors.iter().any(|(_, m)| m.contains("5000 bytes")), "the real size is reported on Linux: {errors:?}");
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
        .handle_error(move |_, peer, err| e.lock().unwrap().push(format!("{peer}: {err}")))
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
    eventually("the error reported", || !errors.lock().unwrap().is_empty());
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

    let pool = || ThreadPool::new(3);
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

/// A pool that `handle_request` started lives on until the server closes;
/// the shutdown of a later `serve_forever` waits for its receivers only,
/// not for those idle workers (it waited the whole grace period and a
/// second more; with `grace_period(Duration::MAX)`, for ever).
#[test]
fn a_datagram_pool_shuts_down_at_once_after_handle_request() {
    let grace = Duration::from_secs(3);
    let bound = UdpServer::builder().strategy(pool2()).grace_period(grace).bind("127.0.0.1:0", echo_datagram).unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    // Adopted: its receivers poll, and the shutdown waits for them to drain.
    let adopted =
        UdpServer::builder().strategy(pool2()).grace_period(grace).from_socket(socket, echo_datagram).unwrap();
    for server in [bound, adopted] {
        let addr = server.server_address().as_inet().unwrap();
        let client = udp_client();
        client.send_to(b"one", addr).unwrap();
        assert_eq!(server.handle_request().unwrap(), socketserver::Handled::Served);
        let mut buf = [0u8; 8];
        assert_eq!(client.recv(&mut buf).unwrap(), 3, "answered by the pool handle_request started");
        let running = run(server);
        assert_eq!(udp_round_trip(&client, addr, b"two"), b"two");
        let start = std::time::Instant::now();
        running.stop().unwrap();
        assert!(start.elapsed() < Duration::from_secs(1), "the shutdown took {:?}", start.elapsed());
    }
}

fn pool2() -> ThreadPool {
    ThreadPool::new(2)
}

/// The datagrams that woke the pool at shutdown are not requests: a worker
/// still busy when the shutdown came leaves some in the queue, and the next
/// run skips them (not handled, not counted).
#[test]
fn wake_ups_left_over_from_a_shutdown_never_reach_the_handler() {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler_seen = Arc::clone(&seen);
    let server = UdpServer::builder()
        .strategy(pool2())
        .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
            handler_seen.lock().unwrap().push(req.data().to_vec());
            if req.data() == b"hold" {
                entered_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv_timeout(TIMEOUT).unwrap();
            }
            req.reply(req.data())
        })
        .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let c = udp_client();
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.serve_forever());
        c.send_to(b"hold", addr).unwrap();
        entered_rx.recv_timeout(TIMEOUT).unwrap();
        // The idle worker is woken and leaves; the busy one is sent
        // wake-ups until it is done, which it is only after a few rounds.
        server.shutdown();
        eventually_value("the idle worker to wake and leave", || server.stats(), |s| s.workers_total <= 1);
        release_tx.send(()).unwrap();
        serving.join().unwrap().unwrap();
    });
    let mut buf = [0u8; 16];
    assert_eq!(c.recv(&mut buf).unwrap(), 4, "the held request was answered");
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.serve_forever());
        assert_eq!(udp_round_trip(&c, addr, b"next"), b"next");
        server.shutdown();
        serving.join().unwrap().unwrap();
    });
    assert_eq!(*seen.lock().unwrap(), [b"hold".to_vec(), b"next".to_vec()]);
    assert_eq!(server.stats().accepted, 2, "{:?}", server.stats());
}

/// In a SO_REUSEPORT group the kernel may route a datagram to a sibling
/// socket, so wake-ups sent to our address could reach another server (and
/// ours would never wake). The pool then waits in `poll` instead: stopping
/// one member sends the others nothing.
#[test]
fn stopping_one_reuse_port_member_sends_the_others_nothing() {
    for round in 0..6 {
        let empties = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let e = Arc::clone(&empties);
        let a = UdpServer::builder().strategy(pool2()).reuse_port(true).bind("127.0.0.1:0", echo_datagram).unwrap();
        let addr = a.server_address().as_inet().unwrap();
        let b = UdpServer::builder()
            .strategy(pool2())
            .reuse_port(true)
            .bind(addr, move |req: &mut DatagramRequest| {
                if req.data().is_empty() {
                    e.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                req.reply(req.data())
            })
            .unwrap();
        let (a, b) = (run(a), run(b));
        a.stop().unwrap();
        // Whatever reaches the group now goes to `b`: it answers.
        assert_eq!(udp_round_trip(&udp_client(), addr, b"b"), b"b");
        b.stop().unwrap();
        assert_eq!(empties.load(std::sync::atomic::Ordering::SeqCst), 0, "round {round}");
    }
}
