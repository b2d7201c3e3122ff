//! The opt-in SIGINT/SIGTERM hub. In its own file: it installs a
//! process-wide handler and sends signals to this test process.

mod util;

use std::io::Read;
use std::time::{Duration, Instant};

use socketserver::{StreamRequest, TcpServer, Threading, UdpServer};
use util::*;

fn raise(sig: libc::c_int) {
    // SAFETY: sending a signal to our own process; the handler is installed.
    let rc = unsafe { libc::kill(libc::getpid(), sig) };
    assert_eq!(rc, 0);
}

#[test]
fn a_signal_shuts_down_every_subscribed_server_and_a_second_one_forces_it() {
    let tcp = TcpServer::builder().strategy(Threading::new()).bind("127.0.0.1:0", echo_lines).unwrap();
    let udp = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    // A handler that never returns on its own (a request begun, never
    // finished: not between requests), and a long grace period.
    let stuck = TcpServer::builder()
        .strategy(Threading::new())
        .grace_period(Duration::from_secs(60))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut buf = [0u8; 1];
            req.read_exact(&mut buf)?;
            let _ = req.read(&mut buf);
            Ok(())
        })
        .unwrap();
    for handle in [tcp.handle(), udp.handle(), stuck.handle()] {
        handle.shutdown_on_signal().unwrap();
    }
    let mut tcp = run(tcp);
    let mut udp = run(udp);
    let mut stuck = run(stuck);
    assert_eq!(udp_round_trip(&udp_client(), udp.inet(), b"up"), b"up");
    let mut client = tcp_connect(stuck.inet());
    std::io::Write::write_all(&mut client, b"x").unwrap();
    eventually("the stuck connection active", || stuck.handle.stats().active > 0);

    // The first signal stops them all; the idle ones return at once, the
    // stuck one starts draining.
    raise(libc::SIGTERM);
    tcp.join().unwrap();
    udp.join().unwrap();
    eventually("the stuck server draining", || stuck.handle.is_shutting_down());
    // The second signal ends the grace period.
    let start = Instant::now();
    raise(libc::SIGINT);
    stuck.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "the second signal did not force the shutdown");

    // A server that subscribes after the process was signalled stops at once.
    let late = TcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    late.handle().shutdown_on_signal().unwrap();
    late.serve_forever().unwrap();
}
