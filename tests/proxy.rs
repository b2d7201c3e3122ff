//! The PROXY protocol (v1 and v2): behind HAProxy, handlers and
//! `verify_request` see the client the header names; peers not trusted to
//! send one are refused; a bad, slow or cut-short header closes only its own
//! connection, counted, and the server keeps serving. Under every strategy
//! that keeps connections in this process.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ppp::v2;
use socketserver::proxy::ProxyProtocol;
use socketserver::{AnyStrategy, Event, StreamRequest, TcpServer, ThreadPool, Threading, UnixStreamServer};
use util::*;

fn strategies() -> Vec<AnyStrategy> {
    vec![Threading::new().into(), ThreadPool::new(2).into(), Event::new().pollers(1).into()]
}

/// Answers with who it thinks the client is, and what the client sent.
fn whois(req: &mut StreamRequest) -> std::io::Result<()> {
    let (peer, local) = (req.peer_addr().clone(), req.local_addr()?);
    writeln!(req, "{peer} -> {local}")?;
    while let Some(line) = req.next_line()? {
        writeln!(req, "{line}")?;
    }
    Ok(())
}

fn loopback_only() -> ProxyProtocol {
    ProxyProtocol::trusting(|proxy| proxy.as_inet().is_some_and(|a| a.ip().is_loopback()))
}

fn v2_header(source: &str, destination: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    let destination: SocketAddr = destination.parse().unwrap();
    v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, v2::Protocol::Stream, (source, destination))
        .build()
        .unwrap()
}

fn read_all(s: &mut impl Read) -> String {
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_handler_sees_the_client_a_v1_header_names() {
    for strategy in strategies() {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .proxy_protocol(loopback_only())
            .bind("127.0.0.1:0", whois)
            .unwrap();
        let s = run(server);
        let mut c = tcp_connect(s.inet());
        // The header and the first request in one segment, as HAProxy may send them.
        c.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nhello\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut c), "192.0.2.7:40000 -> 198.51.100.1:443\nhello\n", "{strategy}");
        s.stop().unwrap();
    }
}

#[test]
fn a_v2_header_sent_a_byte_at_a_time_is_read_whole() {
    for strategy in strategies() {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .proxy_protocol(loopback_only())
            .bind("127.0.0.1:0", whois)
            .unwrap();
        let s = run(server);
        let mut c = tcp_connect(s.inet());
        c.set_nodelay(true).unwrap();
        for b in v2_header("[2001:db8::5]:1234", "[2001:db8::1]:80") {
            c.write_all(&[b]).unwrap();
        }
        c.write_all(b"after\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut c), "[2001:db8::5]:1234 -> [2001:db8::1]:80\nafter\n", "{strategy}");
        s.stop().unwrap();
    }
}

/// `LOCAL` (HAProxy's health checks with `check-send-proxy`): the proxy's own addresses stand.
#[test]
fn a_local_header_keeps_the_connections_own_addresses() {
    let server = TcpServer::builder().proxy_protocol(loopback_only()).bind("127.0.0.1:0", whois).unwrap();
    let s = run(server);
    let local = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Local,
        v2::Protocol::Unspecified,
        v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    let mut c = tcp_connect(s.inet());
    c.write_all(&local).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let me = c.local_addr().unwrap();
    assert_eq!(read_all(&mut c), format!("{me} -> {}\n", s.inet()));
    s.stop().unwrap();
}

/// A client that reached the server directly must not claim another address.
#[test]
fn a_peer_not_trusted_to_send_a_header_is_refused() {
    for strategy in strategies() {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .proxy_protocol(ProxyProtocol::trusting(|proxy| {
                proxy.as_inet().is_some_and(|a| a.ip() == std::net::Ipv4Addr::new(127, 0, 0, 9))
            }))
            .bind("127.0.0.1:0", whois)
            .unwrap();
        let s = run(server);
        let mut c = tcp_connect(s.inet());
        let _ = c.write_all(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nhi\n");
        assert_eq!(read_all(&mut c), "", "{strategy}: refused without an answer");
        let stats = s.handle.stats();
        assert_eq!((stats.proxy_refused, stats.completed), (1, 0), "{strategy}: {stats:?}");
        s.stop().unwrap();
    }
}

/// `verify_request` is asked about the client, not the proxy.
#[test]
fn verify_request_sees_the_client_from_the_header() {
    for strategy in strategies() {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .proxy_protocol(loopback_only())
            .verify_request(|client| client.as_inet().is_some_and(|a| a.ip().to_string().starts_with("192.0.2.")))
            .bind("127.0.0.1:0", whois)
            .unwrap();
        let s = run(server);
        let mut banned = tcp_connect(s.inet());
        banned.write_all(b"PROXY TCP4 203.0.113.9 198.51.100.1 5 443\r\nhi\n").unwrap();
        assert_eq!(read_all(&mut banned), "", "{strategy}");
        let mut welcome = tcp_connect(s.inet());
        welcome.write_all(b"PROXY TCP4 192.0.2.9 198.51.100.1 5 443\r\n").unwrap();
        welcome.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut welcome), "192.0.2.9:5 -> 198.51.100.1:443\n", "{strategy}");
        eventually_value("the welcome connection completes", || s.handle.stats(), |st| st.completed == 1);
        let stats = s.handle.stats();
        assert_eq!((stats.refused, stats.proxy_refused), (1, 0), "{strategy}: {stats:?}");
        s.stop().unwrap();
    }
}

/// Garbage, a header that never ends, one cut short, one that never comes:
/// each closes its own connection, counted; the server serves the next.
#[test]
fn bad_headers_close_their_connection_and_the_server_goes_on() {
    for strategy in strategies() {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .proxy_protocol(loopback_only().header_timeout(Duration::from_millis(200)))
            .bind("127.0.0.1:0", whois)
            .unwrap();
        let s = run(server);
        let mut garbage = tcp_connect(s.inet());
        garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_all(&mut garbage), "", "{strategy}");
        let mut endless = tcp_connect(s.inet());
        let _ = endless.write_all(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat());
        assert_eq!(read_all(&mut endless), "", "{strategy}");
        let mut cut = tcp_connect(s.inet());
        cut.write_all(b"PROXY TCP4 192.0.2.1 ").unwrap();
        cut.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut cut), "", "{strategy}");
        let mut silent = tcp_connect(s.inet());
        let started = Instant::now();
        assert_eq!(read_all(&mut silent), "", "{strategy}: closed at the header timeout");
        assert!(started.elapsed() >= Duration::from_millis(150), "{strategy}: {:?}", started.elapsed());
        let mut good = tcp_connect(s.inet());
        good.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 7 8\r\n").unwrap();
        good.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut good), "192.0.2.1:7 -> 192.0.2.2:8\n", "{strategy}");
        eventually_value("the good connection completes", || s.handle.stats(), |st| st.completed == 1);
        let stats = s.handle.stats();
        assert_eq!((stats.proxy_errors, stats.handler_errors), (4, 0), "{strategy}: {stats:?}");
        s.stop().unwrap();
    }
}

/// A health check that only connects and closes is no error.
#[test]
fn a_connection_closed_before_any_byte_is_not_an_error() {
    let server = TcpServer::builder().proxy_protocol(loopback_only()).bind("127.0.0.1:0", whois).unwrap();
    let s = run(server);
    for _ in 0..3 {
        drop(tcp_connect(s.inet()));
    }
    let mut good = tcp_connect(s.inet());
    good.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 7 8\r\n").unwrap();
    good.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut good), "192.0.2.1:7 -> 192.0.2.2:8\n");
    eventually_value("all four accepted", || s.handle.stats(), |st| st.accepted == 4 && st.completed == 1);
    let stats = s.handle.stats();
    assert_eq!((stats.proxy_errors, stats.handler_errors), (0, 0), "{stats:?}");
    s.stop().unwrap();
}

/// HAProxy can reach a server over a Unix socket too; the header then says
/// where the client came from over the network.
#[test]
fn a_unix_stream_server_takes_the_header() {
    let dir = TempDir::new("proxy-unix");
    let server = UnixStreamServer::builder()
        .proxy_protocol(ProxyProtocol::trusting(|_| true))
        .bind(dir.join("s.sock"), whois)
        .unwrap();
    let s = run(server);
    let mut c = UnixStream::connect(s.path()).unwrap();
    c.write_all(&v2_header("192.0.2.44:999", "192.0.2.1:80")).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut c), "192.0.2.44:999 -> 192.0.2.1:80\n");
    s.stop().unwrap();
}

/// Without the PROXY protocol, a header is just bytes for the handler.
#[test]
fn without_the_option_a_header_is_the_connections_own_bytes() {
    let server = TcpServer::bind("127.0.0.1:0", whois).unwrap();
    let s = run(server);
    let mut c = tcp_connect(s.inet());
    c.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 7 8\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let me = c.local_addr().unwrap();
    assert_eq!(read_all(&mut c), format!("{me} -> {}\nPROXY TCP4 192.0.2.1 192.0.2.2 7 8\n", s.inet()));
    s.stop().unwrap();
}
