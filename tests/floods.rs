//! Connection floods: thousands of connections that reset at once, close
//! without a word, or send half a message and vanish. Well-behaved clients
//! are answered throughout, and the server's descriptors return to where
//! they were. Alone in its file (its own process) so that descriptor counts
//! are the server's and this test's only.

mod util;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};
use socketserver::{TcpServer, ThreadPool};
use util::*;

const FLOOD: usize = 2000;

fn connect_raw(addr: SocketAddr) -> Option<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.connect_timeout(&addr.into(), TIMEOUT).ok()?;
    Some(s)
}

#[test]
fn floods_do_not_stop_well_behaved_clients_and_leak_no_descriptors() {
    let server = TcpServer::builder()
        .strategy(ThreadPool::default())
        .idle_timeout(Duration::from_secs(5))
        .handle_error(|_, _, _| {}) // resets and broken pipes are expected here
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let running = run(server);
    let addr = running.inet();
    // Let the pool start its workers before counting.
    eventually("the pool's workers", || running.handle.stats().workers_total > 0);
    let baseline = open_fds();

    // Well-behaved clients talk all through the floods: one on a connection
    // it keeps, one that connects anew for every request (through the same
    // accept queue as the floods).
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let fresh_answered = Arc::new(AtomicU64::new(0));
    let probe = {
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
        std::thread::spawn(move || {
            let mut c = tcp_connect(addr);
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let msg = format!("probe {i}\n");
                assert_eq!(
                    round_trip(&mut c, msg.as_bytes()),
                    msg.as_bytes(),
                    "a well-behaved client was not answered"
                );
                answered.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            c.write_all(b"quit\n").unwrap();
        })
    };
    let fresh_probe = {
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&fresh_answered));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mut c = tcp_connect(addr);
                assert_eq!(round_trip(&mut c, b"new\n"), b"new\n", "a new well-behaved client was not answered");
                c.write_all(b"quit\n").unwrap();
                answered.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Both are under way before the floods start.
    eventually("both probes under way", || {
        answered.load(Ordering::SeqCst) > 0 && fresh_answered.load(Ordering::SeqCst) > 0
    });
    let before = (answered.load(Ordering::SeqCst), fresh_answered.load(Ordering::SeqCst));

    // 1. Connections reset at once (SO_LINGER 0: RST instead of FIN).
    for _ in 0..FLOOD {
        if let Some(s) = connect_raw(addr) {
            s.set_linger(Some(Duration::ZERO)).unwrap();
        }
    }
    // 2. Connections closed without sending anything.
    for _ in 0..FLOOD {
        drop(connect_raw(addr));
    }
    // 3. Half a message, then gone — some politely, some with a reset.
    for i in 0..FLOOD / 4 {
        if let Some(s) = connect_raw(addr) {
            let _ = SockRef::from(&s).send(b"half a mess");
            if i % 2 == 0 {
                s.set_linger(Some(Duration::ZERO)).unwrap();
            }
        }
    }
    let during = (answered.load(Ordering::SeqCst) - before.0, fresh_answered.load(Ordering::SeqCst) - before.1);
    stop.store(true, Ordering::SeqCst);
    probe.join().unwrap();
    fresh_probe.join().unwrap();
    println!("during the floods: {} round trips on a kept connection, {} on new ones", during.0, during.1);
    assert!(during.0 > 0, "the well-behaved client got no answers during the floods");
    assert!(during.1 > 0, "no new well-behaved client was served during the floods");

    // Everything the floods opened is closed again.
    eventually_value(
        &format!("every connection closed and the descriptors back to {baseline}"),
        || (open_fds(), running.handle.stats()),
        |(fds, stats)| stats.active == 0 && *fds <= baseline,
    );
    // The floods reached the server (not a vacuous test): at least the
    // resets, each of which it saw. Not all 4,500: a connection whose
    // handshake the kernel completed while the accept queue was full, and
    // which its client closed at once, is reset by the kernel and never
    // accepted (3,503 in one run, with `ListenOverflows` counted).
    let stats = running.handle.stats();
    assert!(stats.accepted as usize >= FLOOD && stats.resets as usize >= FLOOD / 2, "{stats:?}");
    // And the server still serves.
    let mut c = tcp_connect(addr);
    assert_eq!(round_trip(&mut c, b"after\n"), b"after\n");
    c.write_all(b"quit\n").unwrap();
    eprintln!(
        "floods: {stats:?}; {} + {} probe round trips during the floods (kept + new connections); fds back to {baseline}",
        during.0, during.1
    );
    running.stop().unwrap();
}
