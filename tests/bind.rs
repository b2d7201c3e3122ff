//! Binding: addresses, socket options, activation, adopted sockets, Unix files.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;

use socketserver::{Address, StreamRequest, TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};
use util::*;

#[test]
fn port_zero_resolves_to_the_real_port() {
    let server = TcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    let addr = server.server_address().as_inet().unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let udp = UdpServer::bind(("127.0.0.1", 0), echo_datagram).unwrap();
    assert_ne!(udp.server_address().as_inet().unwrap().port(), 0);
}

#[test]
fn bind_errors_name_the_address_and_the_cause() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = TcpServer::bind(addr, echo_lines).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()) && msg.contains("tcp"), "{msg}");

    let err = TcpServer::bind("no-such-host.invalid:80", echo_lines).unwrap_err();
    assert!(err.to_string().contains("no-such-host.invalid"), "{err}");

    let err = UnixStreamServer::bind("/nonexistent-dir/x.sock", echo_lines).unwrap_err();
    assert!(err.to_string().contains("/nonexistent-dir/x.sock"), "{err}");
}

/// Reuse-address is on by default for TCP: a server restarted on the same
/// port while its old connections sit in TIME_WAIT binds fine.
#[test]
fn restart_on_the_same_port_despite_time_wait() {
    let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| req.write_all(b"bye\n")).unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let mut c = tcp_connect(addr);
    server.handle_request().unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    // The server closed first: its side of the connection is in TIME_WAIT.
    drop(server);
    let again = TcpServer::bind(addr, echo_lines).expect("rebinding with SO_REUSEADDR");
    drop(again);
    // Without it, the same restart fails.
    let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| req.write_all(b"bye\n")).unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let mut c = tcp_connect(addr);
    server.handle_request().unwrap();
    c.read_to_string(&mut s).unwrap();
    drop(server);
    let err = TcpServer::builder().reuse_address(false).bind(addr, echo_lines).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
}

#[test]
fn reuse_port_lets_two_servers_share_a_port() {
    let a = TcpServer::builder().reuse_port(true).bind("127.0.0.1:0", echo_lines).unwrap();
    let addr = a.server_address().as_inet().unwrap();
    let b = TcpServer::builder().reuse_port(true).bind(addr, echo_lines).unwrap();
    assert_eq!(b.server_address(), a.server_address());
    // And not without it.
    assert!(TcpServer::bind(addr, echo_lines).is_err());
    // A Unix server cannot have it: `UnixStreamServer::builder().reuse_port(..)`
    // does not compile (the kind checks in src/builder.rs).
}

/// UDP servers do not set SO_REUSEADDR by default: a second server on a
/// busy UDP port fails instead of stealing part of its datagrams.
#[test]
fn udp_port_in_use_is_an_error() {
    let a = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let err = UdpServer::bind(a.server_address().as_inet().unwrap(), echo_datagram).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
}

#[test]
fn bind_without_activate_refuses_until_server_activate() {
    let server = TcpServer::builder().activate(false).bind("127.0.0.1:0", echo_lines).unwrap();
    let addr = server.server_address().as_inet().unwrap();
    assert_eq!(TcpStream::connect(addr).unwrap_err().kind(), ErrorKind::ConnectionRefused);
    server.server_activate().unwrap();
    let mut c = tcp_connect(addr);
    c.write_all(b"hi\nquit\n").unwrap();
    server.handle_request().unwrap();
    let mut echoed = String::new();
    c.read_to_string(&mut echoed).unwrap();
    assert_eq!(echoed, "hi\n");
}

#[test]
fn serves_an_adopted_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TcpServer::builder().from_socket(listener, echo_lines).unwrap();
    assert_eq!(server.server_address(), &Address::Inet(addr));
    let running = run(server);
    let mut c = tcp_connect(addr);
    assert_eq!(round_trip(&mut c, b"adopted\n"), b"adopted\n");
    c.write_all(b"quit\n").unwrap();
    running.stop().unwrap();
}

/// Stopping a server that adopted a listener leaves the listener working
/// for whoever else holds it (systemd, the process it is handed over to).
#[test]
fn stopping_a_server_leaves_an_adopted_listener_to_its_other_holders() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let kept = listener.try_clone().unwrap();
    let server = TcpServer::builder().from_socket(listener, echo_lines).unwrap();
    let running = run(server);
    let mut c = tcp_connect(addr);
    assert_eq!(round_trip(&mut c, b"served\n"), b"served\n");
    c.write_all(b"quit\n").unwrap();
    running.stop().unwrap();
    // The other holder accepts a newcomer on the same socket.
    kept.set_nonblocking(false).unwrap();
    let newcomer = tcp_connect(addr);
    let (accepted, peer) = kept.accept().expect("the kept listener still accepts");
    assert_eq!(peer, newcomer.local_addr().unwrap());
    drop(accepted);
}

#[test]
fn unix_server_removes_a_stale_socket_file_but_not_a_live_one_or_a_regular_file() {
    let dir = TempDir::new("stale");
    let path = dir.join("stale.sock");
    // A socket file nobody listens on any more: a crashed server's.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = UnixStreamServer::bind(&path, echo_lines).expect("stale file replaced");

    // While it lives, a second server on the same path is refused...
    let err = UnixStreamServer::bind(&path, echo_lines).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    // ...and the first one still works.
    let running = run(server);
    let mut c = unix_connect(&path);
    assert_eq!(round_trip(&mut c, b"alive\n"), b"alive\n");
    c.write_all(b"quit\n").unwrap();
    running.stop().unwrap();
    assert!(!path.exists(), "removed on close");

    // A path that is not a socket is never deleted.
    let file = dir.join("notes.txt");
    std::fs::write(&file, "precious").unwrap();
    let err = UnixStreamServer::bind(&file, echo_lines).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    // Datagram servers do the same.
    let dpath = dir.join("d.sock");
    drop(std::os::unix::net::UnixDatagram::bind(&dpath).unwrap());
    let d = UnixDatagramServer::bind(&dpath, echo_datagram).expect("stale datagram file replaced");
    assert!(UnixDatagramServer::bind(&dpath, echo_datagram).is_err());
    drop(d);
    assert!(!dpath.exists());
}

#[test]
fn unix_server_leaves_a_replaced_file_alone() {
    let dir = TempDir::new("replaced");
    let path = dir.join("s.sock");
    let server = UnixStreamServer::bind(&path, echo_lines).unwrap();
    // Someone else removes our file and binds their own in its place.
    std::fs::remove_file(&path).unwrap();
    let theirs = UnixListener::bind(&path).unwrap();
    drop(server);
    assert!(path.exists(), "closing must not delete another server's file");
    drop(theirs);
}

/// An accept error that is neither skipped nor backed off ends
/// `serve_forever` with that error: here a socket that was bound but never
/// listens (accept: EINVAL).
#[test]
fn an_unexpected_accept_error_ends_serve_forever_with_it() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let server = TcpServer::builder().from_socket(TcpListener::from(socket), echo_lines).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(server.serve_forever()));
    let result = rx.recv_timeout(TIMEOUT).expect("serve_forever kept going after a fatal accept error");
    let err = result.expect_err("serve_forever returned Ok");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("Invalid argument"), "the OS error is kept in the message: {err}");
}

/// Python's combined names exist and are the server kinds they say.
#[test]
fn the_python_combined_names_bind_what_they_say() {
    use socketserver::{
        ForkingTcpServer, ForkingUdpServer, ForkingUnixDatagramServer, ForkingUnixStreamServer,
        ThreadPoolUnixDatagramServer, ThreadingUdpServer, ThreadingUnixDatagramServer, ThreadingUnixStreamServer,
    };
    let dir = TempDir::new("aliases");
    let udp = run(ThreadingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap());
    assert_eq!(udp_round_trip(&udp_client(), udp.inet(), b"threading udp"), b"threading udp");
    udp.stop().unwrap();
    let unix = run(ThreadingUnixStreamServer::bind(dir.join("s.sock"), echo_lines).unwrap());
    let mut c = std::os::unix::net::UnixStream::connect(dir.join("s.sock")).unwrap();
    assert_eq!(round_trip(&mut c, b"threading unix\n"), b"threading unix\n");
    c.write_all(b"quit\n").unwrap();
    unix.stop().unwrap();
    for (name, server) in [
        ("threading", run(ThreadingUnixDatagramServer::bind(dir.join("d1.sock"), echo_datagram).unwrap())),
        ("pool", run(ThreadPoolUnixDatagramServer::bind(dir.join("d2.sock"), echo_datagram).unwrap())),
    ] {
        let client = unix_dgram_client(&dir, &format!("{name}-client.sock"));
        let to = server.addr.as_path().expect("a Unix address").to_path_buf();
        client.send_to(name.as_bytes(), &to).unwrap();
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], name.as_bytes());
        server.stop().unwrap();
    }
    // The forking ones serve one request each, in a child.
    let _serial = serial();
    let tcp = ForkingTcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    let _: &socketserver::Forking = tcp.strategy();
    let mut c = tcp_connect(tcp.server_address().as_inet().unwrap());
    tcp.handle_request().unwrap();
    assert_eq!(round_trip(&mut c, b"forking tcp\n"), b"forking tcp\n");
    c.write_all(b"quit\n").unwrap();
    tcp.server_close();
    let udp = ForkingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let client = udp_client();
    client.send_to(b"forking udp", udp.server_address().as_inet().unwrap()).unwrap();
    udp.handle_request().unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"forking udp");
    udp.server_close();
    let unix = ForkingUnixStreamServer::bind(dir.join("f.sock"), echo_lines).unwrap();
    let mut c = std::os::unix::net::UnixStream::connect(dir.join("f.sock")).unwrap();
    unix.handle_request().unwrap();
    assert_eq!(round_trip(&mut c, b"forking unix\n"), b"forking unix\n");
    c.write_all(b"quit\n").unwrap();
    unix.server_close();
    let dgram = ForkingUnixDatagramServer::bind(dir.join("fd.sock"), echo_datagram).unwrap();
    let client = unix_dgram_client(&dir, "forking-client.sock");
    client.send_to(b"forking unix-dgram", dir.join("fd.sock")).unwrap();
    dgram.handle_request().unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"forking unix-dgram");
    dgram.server_close();
}

/// The library installs no signal handler unless asked
/// (`ServerHandle::shutdown_on_signal`): serving leaves SIGINT and SIGTERM
/// as they were.
#[test]
fn no_signal_handler_is_installed_unless_asked() {
    let server = TcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    let running = run(server);
    let mut c = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut c, b"x\n"), b"x\n");
    c.write_all(b"quit\n").unwrap();
    running.stop().unwrap();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is a valid value; with a null new
        // action, sigaction only reads the current one into `old`.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) }, 0);
        assert_eq!(old.sa_sigaction, libc::SIG_DFL, "signal {sig} has a handler");
    }
}

/// Without a `handle_error` hook, a handler's error is logged and the
/// server serves on (Python's default).
#[test]
fn by_default_a_handler_error_is_logged_and_serving_goes_on() {
    let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        if line == "fail\n" {
            return Err(std::io::Error::other("failing on purpose"));
        }
        req.write_all(line.as_bytes())
    })
    .unwrap();
    let running = run(server);
    let mut bad = tcp_connect(running.inet());
    bad.write_all(b"fail\n").unwrap();
    assert_eq!(bad.read(&mut [0u8; 8]).unwrap(), 0, "closed after the error");
    let mut good = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut good, b"fine\n"), b"fine\n");
    assert_eq!(running.handle.stats().handler_errors, 1);
    running.stop().unwrap();
}
