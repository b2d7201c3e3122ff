//! `handle_request` makes one attempt, as CPython's does: a connection or
//! datagram that is refused, oversized or fails to be taken ends the call.
//! (No `timeout` is set: the old loop waited for another request for ever.)

mod util;

use std::sync::mpsc;
use std::thread;

use socketserver::{Server, TcpServer, Transport, UdpServer};
use util::*;

/// Runs `handle_request` on a thread and says whether it returned in time.
fn returns<T: Transport>(server: Server<T>, poke: impl FnOnce()) -> bool {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = server.handle_request();
        let _ = tx.send(r.is_ok());
    });
    poke();
    rx.recv_timeout(TIMEOUT).unwrap_or(false)
}

#[test]
fn a_refused_connection_ends_handle_request() {
    let server = TcpServer::builder().verify_request(|_| false).bind("127.0.0.1:0", echo_lines).unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let mut c = None;
    assert!(returns(server, || c = Some(tcp_connect(addr))), "handle_request went on waiting after a refusal");
}

#[test]
fn a_refused_datagram_ends_handle_request() {
    let server = UdpServer::builder().verify_request(|_| false).bind("127.0.0.1:0", echo_datagram).unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let client = udp_client();
    assert!(returns(server, || drop(client.send_to(b"hello", addr))), "went on waiting after a refused datagram");
}

#[test]
fn an_oversized_datagram_ends_handle_request() {
    let server = UdpServer::builder()
        .max_datagram_size(8)
        .handle_error(|_, _, _| {})
        .bind("127.0.0.1:0", echo_datagram)
        .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let client = udp_client();
    assert!(returns(server, || drop(client.send_to(&[0u8; 9], addr))), "went on waiting after an oversized datagram");
}
