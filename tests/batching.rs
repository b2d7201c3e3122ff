//! Datagrams in batches (pool and `Event` receivers: `recvmmsg`, replies
//! with `sendmmsg`): order, truncation, the amplification bound, replies a
//! peer cannot take, and that batches happen at all.
//!
//! Each test holds its first datagram's handler at a gate, so that what the
//! client sends next queues on the socket and is received in batches when
//! the gate opens.

mod util;

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use socketserver::{AnyStrategy, DatagramRequest, Event, ThreadPool, UdpServer, UnixDatagramServer};
use util::*;

/// One receiver each, so that a client's replies can keep its order (with
/// several receivers side by side, datagrams of one client may be handled
/// by two of them at once, in either order).
fn one_receiver() -> [AnyStrategy; 2] {
    [ThreadPool::new(1).into(), Event::new().pollers(1).into()]
}

/// Holds the first handler until opened, and says when it is held.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    held: Mutex<Option<mpsc::Sender<()>>>,
}

impl Gate {
    fn new() -> (Arc<Gate>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Gate { open: Mutex::new(false), opened: Condvar::new(), held: Mutex::new(Some(tx)) }), rx)
    }

    fn pass(&self) {
        if let Some(tx) = self.held.lock().unwrap().take() {
            tx.send(()).unwrap();
        }
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Echoes each datagram, the first held at the gate.
fn gated_echo(gate: &Arc<Gate>) -> impl Fn(&mut DatagramRequest) -> io::Result<()> + Send + Sync + 'static {
    let gate = Arc::clone(gate);
    move |req: &mut DatagramRequest| {
        gate.pass();
        req.reply(req.data())
    }
}

fn recv(c: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let n = c.recv(&mut buf).expect("a reply");
    buf[..n].to_vec()
}

/// Each client sends `0`, then — once the server holds the first datagram it
/// got — `1..=per` back to back; the replies must come in that order.
fn replies_keep_each_clients_order(strategy: AnyStrategy, clients: usize, per: usize) {
    let (gate, held) = Gate::new();
    let server = UdpServer::builder().strategy(strategy.clone()).bind("127.0.0.1:0", gated_echo(&gate)).unwrap();
    let running = run(server);
    let to = running.inet();
    let cs: Vec<UdpSocket> = (0..clients).map(|_| udp_client()).collect();
    for c in &cs {
        c.send_to(b"0", to).unwrap();
    }
    held.recv_timeout(TIMEOUT).expect("the first datagram reached the handler");
    for i in 1..=per {
        for c in &cs {
            c.send_to(i.to_string().as_bytes(), to).unwrap();
        }
    }
    gate.open();
    for (k, c) in cs.iter().enumerate() {
        let got: Vec<String> = (0..=per).map(|_| String::from_utf8(recv(c)).unwrap()).collect();
        let want: Vec<String> = (0..=per).map(|i| i.to_string()).collect();
        assert_eq!(got, want, "client {k} under {strategy}: its replies out of order");
    }
    let stats = running.handle.stats();
    assert_eq!(stats.accepted, (clients * (per + 1)) as u64, "{stats:?}");
    assert!(stats.datagram_batches < stats.accepted, "queued datagrams came in batches: {stats:?}");
    running.stop().unwrap();
}

#[test]
fn one_clients_replies_keep_its_order_through_batches() {
    for strategy in one_receiver() {
        replies_keep_each_clients_order(strategy, 1, 100);
    }
}

#[test]
fn several_clients_each_keep_their_order_through_batches() {
    for strategy in one_receiver() {
        replies_keep_each_clients_order(strategy, 4, 25);
    }
}

/// A burst queued while the receiver is busy is taken several datagrams to
/// a receive call: with one `recvfrom` per datagram the calls would equal
/// the datagrams.
#[test]
fn a_queued_burst_is_received_in_batches() {
    for strategy in one_receiver() {
        let (gate, held) = Gate::new();
        let server = UdpServer::builder().strategy(strategy.clone()).bind("127.0.0.1:0", gated_echo(&gate)).unwrap();
        let running = run(server);
        let c = udp_client();
        c.send_to(b"first", running.inet()).unwrap();
        held.recv_timeout(TIMEOUT).unwrap();
        let before = running.handle.stats();
        for i in 0..64u8 {
            c.send_to(&[i], running.inet()).unwrap();
        }
        gate.open();
        assert_eq!(recv(&c), b"first");
        for i in 0..64u8 {
            assert_eq!(recv(&c), [i]);
        }
        let after = running.handle.stats();
        let calls = after.datagram_batches - before.datagram_batches;
        // 64 queued: 32 to a call, so 2 (3 at most should a datagram have
        // been late); never 64.
        assert!(calls <= 4, "{calls} receive calls for 64 queued datagrams under {strategy}: {after:?}");
        running.stop().unwrap();
    }
}

/// In one batch: a datagram that fits, one longer than `max_datagram_size`
/// (reported with its real length, counted, not handled), and one after it,
/// which is answered.
#[test]
fn a_truncated_datagram_in_a_batch_is_reported_and_its_neighbours_answered() {
    for strategy in one_receiver() {
        let (gate, held) = Gate::new();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let e = Arc::clone(&errors);
        let server = UdpServer::builder()
            .strategy(strategy.clone())
            .max_datagram_size(100)
            .handle_error(move |_, _, err| e.lock().unwrap().push((err.kind(), err.to_string())))
            .bind("127.0.0.1:0", gated_echo(&gate))
            .unwrap();
        let running = run(server);
        let c = udp_client();
        c.send_to(b"first", running.inet()).unwrap();
        held.recv_timeout(TIMEOUT).unwrap();
        c.send_to(b"before", running.inet()).unwrap();
        c.send_to(&[7u8; 500], running.inet()).unwrap();
        c.send_to(b"after", running.inet()).unwrap();
        let before = running.handle.stats();
        gate.open();
        assert_eq!(recv(&c), b"first");
        assert_eq!(recv(&c), b"before");
        assert_eq!(recv(&c), b"after", "the datagram after the oversized one is answered");
        let stats = running.handle.stats();
        assert_eq!(stats.oversized, 1, "{stats:?}");
        assert_eq!(
            stats.datagram_batches - before.datagram_batches,
            1,
            "the three queued datagrams came in one batch: {stats:?}"
        );
        let errors = errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, ErrorKind::InvalidData);
        assert!(
            errors[0].1.contains("datagram of 500 bytes exceeds max_datagram_size (100 bytes)"),
            "its real length is reported: {errors:?}"
        );
        running.stop().unwrap();
    }
}

/// A reply larger than 3 times its request on the wire is refused in a
/// batch as it is alone; the others of the batch go out.
#[test]
fn the_amplification_bound_holds_in_a_batch() {
    for strategy in one_receiver() {
        let (gate, held) = Gate::new();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&refused);
        let g = Arc::clone(&gate);
        let server = UdpServer::builder()
            .strategy(strategy.clone())
            .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
                g.pass();
                if req.data() == b"big" {
                    // 3 × (3 + 28) − 28 = 65 bytes at most.
                    let e = req.reply(&[b'x'; 66]).unwrap_err();
                    r.lock().unwrap().push(e.kind());
                    return req.reply(&[b'y'; 65]);
                }
                req.reply(req.data())
            })
            .unwrap();
        let running = run(server);
        let c = udp_client();
        c.send_to(b"first", running.inet()).unwrap();
        held.recv_timeout(TIMEOUT).unwrap();
        for m in [&b"a"[..], b"big", b"b"] {
            c.send_to(m, running.inet()).unwrap();
        }
        gate.open();
        assert_eq!(recv(&c), b"first");
        assert_eq!(recv(&c), b"a");
        assert_eq!(recv(&c), vec![b'y'; 65], "the largest reply allowed");
        assert_eq!(recv(&c), b"b");
        assert_eq!(*refused.lock().unwrap(), [ErrorKind::InvalidInput]);
        running.stop().unwrap();
    }
}

/// Replies a peer cannot take now are dropped and counted, each, and the
/// server never waits for it. Over UDP on loopback a send never finds the
/// server's own buffer full (loopback hands each datagram on at once and
/// frees its send buffer), so the peer here is a Unix-datagram client
/// that never reads: its queue holds 10 datagrams (`max_dgram_qlen`), and
/// a send to it beyond that fails with `EAGAIN` at once. The first batch's
/// replies go out in one `sendmmsg` that the kernel cuts short: the ones
/// after are tried, dropped and counted.
#[test]
fn replies_a_peer_cannot_take_are_dropped_and_counted_without_waiting() {
    for strategy in one_receiver() {
        let dir = TempDir::new("batchdrop");
        let (gate, held) = Gate::new();
        let server = UnixDatagramServer::builder()
            .strategy(strategy.clone())
            .bind(dir.join("server.sock"), gated_echo(&gate))
            .unwrap();
        let running = run(server);
        let to = running.path();
        let deaf = UnixDatagram::bind(dir.join("deaf.sock")).unwrap();
        deaf.send_to(b"first", &to).unwrap();
        held.recv_timeout(TIMEOUT).unwrap();
        // Fill the server's queue while its receiver is held (a Unix
        // datagram socket takes about 11).
        deaf.set_nonblocking(true).unwrap();
        let mut sent = 1u64;
        while deaf.send_to(&sent.to_be_bytes(), &to).is_ok() {
            sent += 1;
        }
        assert!(sent > 8, "only {sent} queued");
        gate.open();
        // More, each sent as the server takes it: every reply finds the
        // deaf client's queue full.
        deaf.set_nonblocking(false).unwrap();
        deaf.set_write_timeout(Some(TIMEOUT)).unwrap();
        for _ in 0..50 {
            deaf.send_to(&sent.to_be_bytes(), &to).unwrap();
            sent += 1;
        }
        // The server still answers others at once.
        let other = unix_dgram_client(&dir, "other.sock");
        other.send_to(b"still here", &to).unwrap();
        let mut buf = [0u8; 64];
        let n = other.recv(&mut buf).expect("an answer while the deaf client's replies are dropped");
        assert_eq!(&buf[..n], b"still here");
        eventually("every request of the deaf client completed", || running.handle.stats().completed > sent);
        deaf.set_nonblocking(true).unwrap();
        let mut delivered = 0u64;
        while deaf.recv(&mut buf).is_ok() {
            delivered += 1;
        }
        let stats = running.handle.stats();
        assert!(stats.replies_dropped > 0, "{stats:?}");
        assert_eq!(delivered + stats.replies_dropped, sent, "each reply delivered or counted as dropped: {stats:?}");
        let stopped = Instant::now();
        running.stop().unwrap();
        assert!(stopped.elapsed() < Duration::from_secs(5), "the shutdown waited on nothing");
    }
}

/// Datagrams queued at the shutdown are taken in batches and answered, and
/// a wake-up datagram inside a batch is skipped, not answered.
#[test]
fn datagrams_queued_at_the_shutdown_are_answered_in_batches() {
    for strategy in one_receiver() {
        let (gate, held) = Gate::new();
        let server = UdpServer::builder().strategy(strategy.clone()).bind("127.0.0.1:0", gated_echo(&gate)).unwrap();
        let running = run(server);
        let to: SocketAddr = running.inet();
        let c = udp_client();
        c.send_to(b"first", to).unwrap();
        held.recv_timeout(TIMEOUT).unwrap();
        for i in 0..20u8 {
            c.send_to(&[i], to).unwrap();
        }
        let handle = running.handle.clone();
        let stopper = std::thread::spawn(move || running.stop());
        // The shutdown is under way (its wake-ups queue behind the 20) when
        // the gate opens.
        eventually("the shutdown began", || handle.is_shutting_down());
        gate.open();
        let mut got = HashMap::new();
        assert_eq!(recv(&c), b"first");
        for _ in 0..20 {
            *got.entry(recv(&c)).or_insert(0) += 1;
        }
        for i in 0..20u8 {
            assert_eq!(got.get(&vec![i]), Some(&1), "{got:?}");
        }
        stopper.join().unwrap().unwrap();
        let stats = handle.stats();
        assert_eq!((stats.accepted, stats.completed), (21, 21), "no wake-up taken for a request: {stats:?}");
    }
}

/// The request holds its receiver's outbox behind a lock, not a `RefCell`:
/// a handler may still share `&DatagramRequest` with scoped threads.
#[test]
fn a_datagram_request_stays_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<DatagramRequest>();
}

/// A handler that takes long (here: until the test lets it go, and at least
/// 200 µs) sends the replies held before it before the next handler starts:
/// the next one, as slow, never holds them back.
#[test]
fn a_slow_handler_does_not_hold_back_the_replies_before_the_next() {
    for strategy in one_receiver() {
        let (started_tx, started) = mpsc::channel::<Vec<u8>>();
        let (permit, permits) = mpsc::channel::<()>();
        let (started_tx, permits) = (Mutex::new(started_tx), Mutex::new(permits));
        let server = UdpServer::builder()
            .strategy(strategy.clone())
            .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
                let began = Instant::now();
                started_tx.lock().unwrap().send(req.data().to_vec()).unwrap();
                permits.lock().unwrap().recv().unwrap();
                while began.elapsed() < Duration::from_micros(200) {
                    std::hint::spin_loop();
                }
                req.reply(req.data())
            })
            .unwrap();
        let running = run(server);
        let (c, to) = (udp_client(), running.inet());
        c.send_to(b"first", to).unwrap();
        assert_eq!(started.recv_timeout(TIMEOUT).unwrap(), b"first");
        // Queued behind the running handler: the next batch.
        c.send_to(b"d1", to).unwrap();
        c.send_to(b"d2", to).unwrap();
        permit.send(()).unwrap();
        assert_eq!(recv(&c), b"first");
        assert_eq!(started.recv_timeout(TIMEOUT).unwrap(), b"d1");
        permit.send(()).unwrap();
        assert_eq!(started.recv_timeout(TIMEOUT).unwrap(), b"d2");
        // d2's handler is running, held: d1's reply is out already.
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(recv(&c), b"d1", "d1's reply was held while the next handler ran, under {strategy}");
        permit.send(()).unwrap();
        assert_eq!(recv(&c), b"d2");
        assert_eq!(running.handle.stats().datagram_batches, 2, "d1 and d2 came in one batch");
        running.stop().unwrap();
    }
}

/// A batch taken in the drain is answered whole, even when its handlers
/// outlast the drain window: its datagrams have left the socket's queue
/// (which a successor may share) and reached the server. (They were
/// dropped, uncounted, once the window passed: with a 30 ms window and
/// 15 ms handlers, 2 of 12 were answered.)
#[test]
fn a_batch_taken_in_the_drain_is_answered_whole() {
    for strategy in one_receiver() {
        let (gate, held) = Gate::new();
        let echo = gated_echo(&gate);
        let server = UdpServer::builder()
            .strategy(strategy.clone())
            .drain_window(Duration::from_millis(30))
            .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
                if req.data() != b"first" {
                    std::thread::sleep(Duration::from_millis(15));
                }
                echo(req)
            })
            .unwrap();
        let running = run(server);
        let to: SocketAddr = running.inet();
        let c = udp_client();
        c.send_to(b"first", to).unwrap();
        held.recv_timeout(TIMEOUT).unwrap();
        for i in 0..12u8 {
            c.send_to(&[i], to).unwrap();
        }
        let handle = running.handle.clone();
        let stopper = std::thread::spawn(move || running.stop());
        eventually("the shutdown began", || handle.is_shutting_down());
        gate.open();
        assert_eq!(recv(&c), b"first");
        let answered: Vec<Vec<u8>> = (0..12).map(|_| recv(&c)).collect();
        assert_eq!(answered, (0..12u8).map(|i| vec![i]).collect::<Vec<_>>(), "{strategy}");
        stopper.join().unwrap().unwrap();
        let stats = handle.stats();
        assert_eq!((stats.accepted, stats.completed), (13, 13), "{stats:?}");
    }
}
