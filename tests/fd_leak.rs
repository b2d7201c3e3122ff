//! Port of CPython's test_tcpserver_bind_leak (Issue #22435): a failed bind
//! must close its socket. Alone in this file (its own process) so that no
//! other test opens descriptors while it counts them.

mod util;

use socketserver::{TcpServer, UdpServer, UnixStreamServer};
use util::*;

#[test]
fn failed_binds_leak_no_descriptors() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let udp_taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uaddr = udp_taken.local_addr().unwrap();
    let dir = TempDir::new("fdleak");
    // A path in a folder that does not exist: the socket is made, then its
    // bind fails (a regular file in the way would fail before any socket).
    let unbindable = dir.join("missing").join("s.sock");
    let before = open_fds();
    for _ in 0..1024 {
        assert!(TcpServer::builder().reuse_address(false).bind(addr, echo_lines).is_err());
        assert!(UdpServer::bind(uaddr, echo_datagram).is_err());
        let err = UnixStreamServer::bind(&unbindable, echo_lines).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    }
    assert_eq!(open_fds(), before);
    // A server that binds and closes leaks nothing either.
    for _ in 0..100 {
        drop(TcpServer::bind("127.0.0.1:0", echo_lines).unwrap());
    }
    assert_eq!(open_fds(), before);
}
