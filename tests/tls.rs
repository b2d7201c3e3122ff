//! TLS on stream servers (feature `tls`), with real clients: rustls,
//! `openssl s_client` and Python's `ssl`; and hostile peers: silent, garbage,
//! a ClientHello cut in half, a byte at a time, a flood of aborted
//! handshakes. Every test here takes `serial()`: some fork, and some count
//! this process's threads and descriptors.
#![cfg(feature = "tls")]

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socketserver::tls::rustls::pki_types::{CertificateDer, ServerName};
use socketserver::tls::{self, rustls};
use socketserver::{AnyStrategy, Event, Forking, StreamRequest, Synchronous, TcpServer, ThreadPool, Threading};
use socketserver::{UnixStreamServer, proxy::ProxyProtocol};
use util::tools::require_tool;
use util::*;

/// A CA, a server certificate for `localhost` and 127.0.0.1 signed by it, a
/// client certificate signed by it, and a client certificate from another
/// CA, as PEM files.
struct Pki {
    dir: TempDir,
    client_der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let dir = TempDir::new("tls");
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let (ca, rogue) = (ca("test CA"), ca("rogue CA"));
        let leaf = |names: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>, file: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names).unwrap().signed_by(&key, issuer).unwrap();
            std::fs::write(dir.join(&format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(&format!("{file}.key")), key.serialize_pem()).unwrap();
            cert.der().clone()
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], &ca, "server");
        // The same names, renewed (another key, another certificate).
        leaf(vec!["localhost".into(), "127.0.0.1".into()], &ca, "renewed");
        let client_der = leaf(vec!["client.test".into()], &ca, "client");
        leaf(vec!["rogue.test".into()], &rogue, "rogue");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, client_der }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The server's config; with `mutual`, clients must show a certificate
    /// from the test CA.
    fn server(&self, mutual: bool) -> rustls::ServerConfig {
        let ca = self.path("ca.pem");
        tls::server_config_from_pem(&self.path("server.pem"), &self.path("server.key"), mutual.then_some(ca.as_path()))
            .unwrap()
    }

    /// A rustls client trusting the test CA, showing `cert` (`"client"`,
    /// `"rogue"`) if given.
    fn client(&self, cert: Option<&str>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut config = match cert {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

type Client<S> = rustls::StreamOwned<rustls::ClientConnection, S>;

fn tls_over<S: Read + Write>(config: Arc<rustls::ClientConfig>, sock: S) -> Client<S> {
    let name = ServerName::try_from("localhost").unwrap();
    Client::new(rustls::ClientConnection::new(config, name).unwrap(), sock)
}

fn tls_tcp(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Client<TcpStream> {
    tls_over(config, tcp_connect(addr))
}

fn read_line<S: Read>(s: &mut S) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if s.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
}

fn strategies() -> Vec<AnyStrategy> {
    vec![
        Synchronous.into(),
        Threading::new().into(),
        ThreadPool::new(2).into(),
        Forking::new().into(),
        Event::new().into(),
    ]
}

/// Lines echoed over TLS, with the TLS version and SNI the handler saw in
/// front of the first: under each of the five strategies, over TCP, and
/// over a Unix stream under `Event` and `Threading`.
#[test]
fn lines_are_echoed_over_tls_under_every_strategy() {
    let _serial = serial();
    let pki = Pki::new();
    let config = Arc::new(pki.server(false));
    for strategy in strategies() {
        let name = format!("{strategy:?}");
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(config.clone())
            .bind("127.0.0.1:0", describe_then_echo)
            .unwrap();
        let running = run(server);
        let mut c = tls_tcp(pki.client(None, &[]), running.inet());
        c.write_all(b"hello\nworld\n").unwrap();
        assert_eq!(read_line(&mut c).unwrap(), "sni=localhost version=TLSv1_3 certs=0", "{name}");
        assert_eq!(read_line(&mut c).unwrap(), "hello", "{name}");
        assert_eq!(read_line(&mut c).unwrap(), "world", "{name}");
        c.write_all(b"quit\n").unwrap();
        let mut rest = Vec::new();
        assert!(c.read_to_end(&mut rest).is_ok(), "{name}: a clean close (close_notify)");
        drop(c);
        let handle = running.handle.clone();
        running.stop().unwrap();
        // (Under `Forking`, the child's exit code says its handshake completed.)
        assert_eq!((handle.stats().tls_handshakes, handle.stats().completed), (1, 1), "{name}");
    }
    for strategy in [AnyStrategy::from(Event::new()), Threading::new().into()] {
        let dir = TempDir::new("tls-unix");
        let server = UnixStreamServer::builder()
            .strategy(strategy.clone())
            .tls(config.clone())
            .bind(dir.join("s.sock"), describe_then_echo)
            .unwrap();
        let running = run(server);
        let mut c = tls_over(pki.client(None, &[]), unix_connect(&running.path()));
        c.write_all(b"over unix\n").unwrap();
        assert_eq!(read_line(&mut c).unwrap(), "sni=localhost version=TLSv1_3 certs=0", "{strategy:?}");
        assert_eq!(read_line(&mut c).unwrap(), "over unix", "{strategy:?}");
        c.write_all(b"quit\n").unwrap();
        drop(c);
        let handle = running.handle.clone();
        running.stop().unwrap();
        assert_eq!(handle.stats().tls_handshakes, 1, "{strategy:?}");
    }
}

/// What the handshake settled, as a line; then lines echoed (parking
/// between them under `Event`) until `quit`.
fn describe_then_echo(req: &mut StreamRequest) -> io::Result<()> {
    #[derive(Default)]
    struct Described(bool);
    if std::mem::replace(&mut req.state_mut::<Described>().0, true) {
        // Called again after a park (`Event`): said already.
        return echo_parked_lines(req);
    }
    let Some(info) = req.tls() else { return Err(io::Error::other("no TLS info")) };
    let line = format!(
        "sni={} version={} certs={}",
        info.server_name().unwrap_or("-"),
        info.protocol_version().map_or("-".to_string(), |v| format!("{v:?}")),
        info.peer_certificates().len()
    );
    writeln!(req, "{line}")?;
    echo_parked_lines(req)
}

/// Pushes `data` through a TLS client on a non-blocking socket while
/// reading what comes back, until `expect` bytes came (or `TIMEOUT`).
fn pump<S: Read + Write>(c: &mut Client<S>, data: &[u8], expect: usize) -> Vec<u8> {
    let start = Instant::now();
    let mut sent = 0;
    let mut got = Vec::with_capacity(expect);
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < expect {
        assert!(start.elapsed() < TIMEOUT, "only {} of {expect} bytes came back", got.len());
        let mut progress = false;
        if sent < data.len() && !c.conn.wants_write() {
            let n = c.conn.writer().write(&data[sent..(sent + 16 * 1024).min(data.len())]).unwrap();
            sent += n;
        }
        while c.conn.wants_write() {
            match c.conn.write_tls(&mut c.sock) {
                Ok(_) => progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        match c.conn.read_tls(&mut c.sock) {
            Ok(0) => panic!("the server closed after {} bytes", got.len()),
            Ok(_) => {
                c.conn.process_new_packets().unwrap();
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        loop {
            match c.conn.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("plaintext: {e}"),
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    got
}

/// A mebibyte of lines, sent at once and echoed while it is sent, comes
/// back whole — under `Event` (plaintext rustls decrypted beyond what a
/// read took, and records still in the socket, must not let a connection
/// park) and under `Threading` (nor make a boundary wait for the socket).
#[test]
fn a_mebibyte_is_echoed_whole() {
    let _serial = serial();
    let pki = Pki::new();
    let data: Vec<u8> = (0..16_384).flat_map(|i| format!("{i:063}\n").into_bytes()).collect();
    assert_eq!(data.len(), 1 << 20);
    for strategy in [AnyStrategy::from(Event::new()), Threading::new().into()] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .bind("127.0.0.1:0", echo_parked_lines)
            .unwrap();
        let running = run(server);
        let mut c = tls_tcp(pki.client(None, &[]), running.inet());
        c.sock.set_nonblocking(true).unwrap();
        let got = pump(&mut c, &data, data.len());
        assert!(got == data, "{strategy:?}: the echo differs");
        drop(c);
        running.stop().unwrap();
    }
}

/// Lines pipelined in TLS records sent at once are all answered: a
/// connection whose socket still holds records rustls has not read (it
/// reads 4 KiB at a time, and a TLS read stops at its first plaintext) must
/// not park under `Event` (epoll will not report those bytes again), and a
/// boundary must not wait for the socket while rustls holds decrypted lines
/// (`Threading`). Round A: a short line's record, then a 10 KB line's; the
/// first read gives the short line alone. Round B: one record of 64 lines
/// of 64 bytes; the first read of the 2 KiB read buffer takes 32 whole ones
/// and leaves the rest in rustls, none in the socket. (Under `Event` A comes
/// first, while the read buffer is 2 KiB; under `Threading` B, for the same
/// reason: the 10 KB line grows it.)
#[test]
fn pipelined_records_are_all_answered() {
    let _serial = serial();
    let pki = Pki::new();
    let round_a = vec![format!("{:099}\n", 0), format!("{:09999}\n", 1)];
    let round_b: Vec<String> = (0..64).map(|i| format!("{i:063}\n")).collect();
    for (strategy, rounds) in [
        (AnyStrategy::from(Event::new()), [(&round_a, false), (&round_b, true)]),
        (Threading::new().into(), [(&round_b, true), (&round_a, false)]),
    ] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .bind("127.0.0.1:0", echo_parked_lines)
            .unwrap();
        let running = run(server);
        let mut c = tls_tcp(pki.client(None, &[]), running.inet());
        c.write_all(b"hello\n").unwrap();
        assert_eq!(read_line(&mut c).unwrap(), "hello");
        c.sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for (n, (lines, one_record)) in rounds.into_iter().enumerate() {
            let mut wire = Vec::new();
            let mut records: Vec<String> = lines.clone();
            if one_record {
                records = vec![lines.concat()];
            }
            for record in &records {
                c.conn.writer().write_all(record.as_bytes()).unwrap();
                while c.conn.wants_write() {
                    c.conn.write_tls(&mut wire).unwrap();
                }
            }
            c.sock.write_all(&wire).unwrap();
            for (i, line) in lines.iter().enumerate() {
                match read_line(&mut c) {
                    Ok(got) => assert_eq!(got.len() + 1, line.len(), "{strategy:?}, round {n}, line {i}"),
                    Err(e) => panic!("{strategy:?}, round {n}: no answer to line {i}: {e}"),
                }
            }
        }
        drop(c);
        running.stop().unwrap();
    }
}

/// TLS 1.0 and 1.1 are refused by the server (the client is allowed them:
/// security level 0), and counted.
#[test]
fn tls_1_0_and_1_1_are_refused() {
    let _serial = serial();
    let Some(openssl) = require_tool("openssl", "openssl") else { return };
    let pki = Pki::new();
    let server = TcpServer::builder().strategy(Event::new()).tls(pki.server(false)).bind("127.0.0.1:0", echo_lines);
    let running = run(server.unwrap());
    for (i, flag) in ["-tls1", "-tls1_1"].into_iter().enumerate() {
        let out = Command::new(&openssl)
            .args(["s_client", "-connect", &running.inet().to_string(), flag, "-cipher", "DEFAULT:@SECLEVEL=0"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{flag}: the handshake succeeded:\n{text}");
        let failures = i as u64 + 1;
        eventually("the refusal counted", || running.handle.stats().tls_handshake_failures == failures);
        // The server's alert, not a refusal of the client's own.
        assert!(text.contains("SSL alert number"), "{flag}:\n{text}");
    }
    assert_eq!(running.handle.stats().tls_handshakes, 0);
    // And TLS 1.2 is served, through the same client.
    let mut child = Command::new(&openssl)
        .args(["s_client", "-connect", &running.inet().to_string(), "-tls1_2", "-quiet", "-CAfile"])
        .arg(pki.path("ca.pem"))
        .args(["-servername", "localhost", "-verify_return_error"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"over tls 1.2\nquit\n").unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = child.wait();
    assert_eq!(out, "over tls 1.2\n");
    running.stop().unwrap();
}

/// Mutual TLS: no client certificate, or one from another CA, is refused
/// in the handshake (the handler never runs); the right one is accepted,
/// and the handler sees its chain.
#[test]
fn mutual_tls_takes_the_right_client_certificate_only() {
    let _serial = serial();
    let pki = Pki::new();
    let server = TcpServer::builder()
        .strategy(Event::new())
        .tls(pki.server(true))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let certs = req.tls().map(|t| t.peer_certificates().to_vec()).unwrap_or_default();
            let first = certs.first().map_or(0, |c| c.len());
            writeln!(req, "{} {first}", certs.len())
        })
        .unwrap();
    let running = run(server);
    for (cert, failures) in [(None, 1), (Some("rogue"), 2)] {
        let mut c = tls_tcp(pki.client(cert, &[]), running.inet());
        // (Under TLS 1.3 the client's handshake ends before the server
        // judges its certificate: the refusal comes with the first read.)
        let _ = c.write_all(b"hi\n");
        let mut got = Vec::new();
        assert!(c.read_to_end(&mut got).is_err() || got.is_empty(), "{cert:?}: served: {got:?}");
        eventually("the refusal counted", || running.handle.stats().tls_handshake_failures == failures);
    }
    let mut c = tls_tcp(pki.client(Some("client"), &[]), running.inet());
    assert_eq!(read_line(&mut c).unwrap(), format!("1 {}", pki.client_der.len()));
    // Through openssl too.
    if let Some(openssl) = require_tool("openssl", "openssl") {
        let out = Command::new(openssl)
            .args(["s_client", "-connect", &running.inet().to_string(), "-quiet", "-CAfile"])
            .arg(pki.path("ca.pem"))
            .arg("-cert")
            .arg(pki.path("client.pem"))
            .arg("-key")
            .arg(pki.path("client.key"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        // (openssl sends the CA's certificate after the client's.)
        let got = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(got.ends_with(&format!(" {}\n", pki.client_der.len())), "{got}");
    }
    let handle = running.handle.clone();
    running.stop().unwrap();
    // Every completed handshake was served; the two refused ones never were.
    let stats = handle.stats();
    assert!(stats.tls_handshakes >= 1 && stats.completed == stats.tls_handshakes, "{stats:?}");
    assert_eq!(stats.tls_handshake_failures, 2);
}

/// The name the client asked for (SNI) and the protocol ALPN settled reach
/// the handler; `verify_tls` sees them first and can refuse.
#[test]
fn sni_and_alpn_reach_verify_tls_and_the_handler() {
    let _serial = serial();
    let pki = Pki::new();
    let mut config = pki.server(false);
    config.alpn_protocols = vec![b"h2".to_vec(), b"x-line".to_vec()];
    let server = TcpServer::builder()
        .strategy(Threading::new())
        .tls(config)
        .verify_tls(|_peer, tls| tls.alpn_protocol() != Some(b"h2"))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let (sni, alpn) = match req.tls() {
                Some(t) => (t.server_name().map(str::to_owned), t.alpn_protocol().map(<[u8]>::to_vec)),
                None => (None, None),
            };
            writeln!(req, "{sni:?} {:?}", alpn.map(String::from_utf8))
        })
        .unwrap();
    let running = run(server);
    let mut c = tls_tcp(pki.client(None, &[b"x-line"]), running.inet());
    assert_eq!(read_line(&mut c).unwrap(), r#"Some("localhost") Some(Ok("x-line"))"#);
    drop(c);
    // Refused by `verify_tls`: closed before the handler (with close_notify).
    let mut c = tls_tcp(pki.client(None, &[b"h2"]), running.inet());
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got, "");
    eventually("the refusal counted", || running.handle.stats().refused == 1);
    // Python's ssl module, asking for a name and a protocol of its own.
    if let Some(python) = require_tool("python3", "python3") {
        let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
ctx.set_alpn_protocols(["x-line"])
with ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2]))), server_hostname="localhost") as s:
    print(s.recv(100).decode(), end="")
"#;
        let out = Command::new(python)
            .args(["-c", script, "127.0.0.1", &running.inet().port().to_string()])
            .arg(pki.path("ca.pem"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "Some(\"localhost\") Some(Ok(\"x-line\"))\n");
    }
    running.stop().unwrap();
}

/// A graceful close sends `close_notify`: Python's `ssl`, told not to take
/// a bare end of stream for one, reads a clean end — after an answer (the
/// handler returned) and after the drain window of a shutdown, under
/// `Event` and `Threading`.
#[test]
fn a_graceful_close_sends_close_notify() {
    let _serial = serial();
    let Some(python) = require_tool("python3", "python3") else { return };
    let pki = Pki::new();
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2]))), server_hostname="localhost", suppress_ragged_eofs=False)
s.sendall(b"one\n")
got = b""
try:
    while True:
        data = s.recv(100)
        if not data:
            break
        got += data
    print(got.decode().strip(), "clean")
except ssl.SSLEOFError:
    print(got.decode().strip(), "no close_notify")
"#;
    for strategy in [AnyStrategy::from(Event::new()), Threading::new().into()] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .bind("127.0.0.1:0", |req: &mut StreamRequest| {
                if let Some(line) = req.next_line()? {
                    writeln!(req, "{line}")?;
                }
                Ok(())
            })
            .unwrap();
        let running = run(server);
        let out = Command::new(&python)
            .args(["-c", script, "127.0.0.1", &running.inet().port().to_string()])
            .arg(pki.path("ca.pem"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "one clean\n", "{strategy:?}");
        running.stop().unwrap();
    }
    // The drain: a connection idle between requests at the shutdown ends
    // with close_notify when the window passes.
    for strategy in [AnyStrategy::from(Event::new()), Threading::new().into()] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .drain_window(Duration::from_millis(50))
            .bind("127.0.0.1:0", echo_parked_lines)
            .unwrap();
        let running = run(server);
        let mut c = tls_tcp(pki.client(None, &[]), running.inet());
        c.write_all(b"before\n").unwrap();
        assert_eq!(read_line(&mut c).unwrap(), "before");
        running.handle.shutdown();
        let mut rest = Vec::new();
        let end = c.read_to_end(&mut rest);
        assert!(end.is_ok() && rest.is_empty(), "{strategy:?}: {end:?} {rest:?} (UnexpectedEof: no close_notify)");
        let mut running = running;
        running.join().unwrap();
    }
}

/// A shutdown with 16 TLS clients in a closed loop (each sends a line,
/// waits for its answer, thinks 0-200 ms, around a 100 ms drain window):
/// every line the server read was answered, and every connection ended
/// between two lines with `close_notify` — the drain rule, over TLS.
#[test]
fn a_shutdown_with_sixteen_tls_clients_loses_no_line() {
    let _serial = serial();
    let pki = Pki::new();
    for strategy in [AnyStrategy::from(Event::new()), ThreadPool::new(4).max_workers(32).into()] {
        // Every line the server read, counted as it reads it.
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = read.clone();
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .drain_window(Duration::from_millis(100))
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                while req.wait_for_data()? {
                    let Some(line) = req.next_line()? else { break };
                    counted.fetch_add(1, Ordering::SeqCst);
                    writeln!(req, "{line}")?;
                }
                Ok(())
            })
            .unwrap();
        let running = run(server);
        let barrier = Arc::new(std::sync::Barrier::new(17));
        let clients: Vec<_> = (0..16)
            .map(|i| {
                let config = pki.client(None, &[]);
                let addr = running.inet();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut c = tls_tcp(config, addr);
                    c.sock.set_read_timeout(Some(TIMEOUT)).unwrap();
                    let mut answered = 0u64;
                    let mut lost = None;
                    let mut first = true;
                    loop {
                        let line = format!("{i} {answered}");
                        if c.write_all(format!("{line}\n").as_bytes()).and_then(|()| c.flush()).is_err() {
                            break; // never sent: the connection had ended
                        }
                        match read_line(&mut c) {
                            Ok(got) if got == line => answered += 1,
                            Ok(got) => panic!("client {i}: {got:?} for {line:?}"),
                            Err(e) => {
                                lost = Some(format!("{line}: {e}"));
                                break;
                            }
                        }
                        if first {
                            first = false;
                            barrier.wait();
                        }
                        let think = (i as u64 * 37 + answered * 53) % 200;
                        std::thread::sleep(Duration::from_millis(think));
                    }
                    (answered, lost)
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(Duration::from_millis(100));
        running.handle.shutdown();
        let mut running = running;
        running.join().unwrap();
        let mut total = 0;
        for client in clients {
            let (answered, lost) = client.join().unwrap();
            assert!(answered > 0);
            // The end came between two lines, with close_notify (a bare
            // end of stream would be rustls's "closed connection without
            // sending TLS close_notify").
            if let Some(lost) = lost {
                assert!(lost.ends_with("unexpected end of file"), "{strategy:?}: {lost}");
            }
            total += answered;
        }
        // No line the server read went unanswered: a last line a client
        // wrote and saw no answer to was never read (the server had closed).
        assert_eq!(read.load(Ordering::SeqCst), total, "{strategy:?}");
        let stats = running.handle.stats();
        assert_eq!(stats.tls_handshakes, 16, "{strategy:?}");
        assert!(total > 16, "{strategy:?}: {total}");
    }
}

/// A hand-over (what a SIGHUP restart does with `activation::Successor`,
/// here in one process: the successor is a server made `from_socket` on the
/// same listener) picks up a renewed certificate: the successor builds its
/// own `ServerConfig`. The old server's client, between two lines at the
/// hand-over, is answered and then closed with `close_notify`.
#[test]
fn a_successor_serves_with_its_own_renewed_certificate() {
    let _serial = serial();
    let pki = Pki::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let successor_socket = listener.try_clone().unwrap();
    let old = TcpServer::builder()
        .strategy(Event::new())
        .tls(pki.server(false))
        .drain_window(Duration::from_millis(300))
        .from_socket(listener, echo_parked_lines)
        .unwrap();
    let old = run(old);
    let mut before = tls_tcp(pki.client(None, &[]), addr);
    before.write_all(b"one\n").unwrap();
    assert_eq!(read_line(&mut before).unwrap(), "one");
    let server_cert = |c: &Client<TcpStream>| c.conn.peer_certificates().map(|certs| certs[0].clone());
    let first = server_cert(&before);
    // The successor reads the renewed files.
    let renewed = tls::server_config_from_pem(&pki.path("renewed.pem"), &pki.path("renewed.key"), None).unwrap();
    let new = TcpServer::builder()
        .strategy(Event::new())
        .tls(renewed)
        .from_socket(successor_socket, echo_parked_lines)
        .unwrap();
    let new = run(new);
    old.handle.hand_over();
    // Within the drain window, the old server's client is still answered.
    before.write_all(b"two\n").unwrap();
    assert_eq!(read_line(&mut before).unwrap(), "two");
    let mut rest = Vec::new();
    assert!(before.read_to_end(&mut rest).is_ok() && rest.is_empty(), "a clean end");
    let mut old = old;
    old.join().unwrap();
    let mut after = tls_tcp(pki.client(None, &[]), addr);
    after.write_all(b"three\n").unwrap();
    assert_eq!(read_line(&mut after).unwrap(), "three");
    let second = server_cert(&after);
    assert!(first.is_some() && second.is_some() && first != second, "the renewed certificate is served");
    drop(after);
    new.stop().unwrap();
}

/// The raw socket is not handed out under TLS: what is written there would
/// bypass the encryption.
#[test]
fn the_raw_socket_is_refused_under_tls() {
    let _serial = serial();
    let pki = Pki::new();
    let server = TcpServer::builder()
        .strategy(Threading::new())
        .tls(pki.server(false))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let kinds = [
                req.socket().map(drop).map_err(|e| e.kind()),
                req.try_clone().map(drop).map_err(|e| e.kind()),
                req.fill_buf_and_stream().map(drop).map_err(|e| e.kind()),
            ];
            writeln!(req, "{kinds:?}")
        })
        .unwrap();
    let running = run(server);
    let mut c = tls_tcp(pki.client(None, &[]), running.inet());
    assert_eq!(read_line(&mut c).unwrap(), "[Err(Unsupported), Err(Unsupported), Err(Unsupported)]");
    running.stop().unwrap();
}

/// The PROXY header comes before the TLS bytes: the handler (and
/// `verify_request`) see the client it names, under `Event` and `Threading`.
#[test]
fn a_proxy_header_comes_before_tls() {
    let _serial = serial();
    let pki = Pki::new();
    for strategy in [AnyStrategy::from(Event::new()), Threading::new().into()] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .proxy_protocol(ProxyProtocol::trusting(|_| true))
            .verify_request(|peer| peer.to_string() == "192.0.2.7:4242")
            .bind("127.0.0.1:0", |req: &mut StreamRequest| {
                let peer = req.peer_addr().to_string();
                writeln!(req, "{peer}")
            })
            .unwrap();
        let running = run(server);
        let mut sock = tcp_connect(running.inet());
        sock.write_all(b"PROXY TCP4 192.0.2.7 192.0.2.1 4242 443\r\n").unwrap();
        let mut c = tls_over(pki.client(None, &[]), sock);
        assert_eq!(read_line(&mut c).unwrap(), "192.0.2.7:4242", "{strategy:?}");
        running.stop().unwrap();
    }
}

/// The idle timeout holds over TLS: a client that completes its handshake
/// and says nothing is closed and counted.
#[test]
fn the_idle_timeout_holds_over_tls() {
    let _serial = serial();
    let pki = Pki::new();
    for strategy in [AnyStrategy::from(Event::new()), Threading::new().into()] {
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .idle_timeout(Duration::from_millis(200))
            .bind("127.0.0.1:0", echo_parked_lines)
            .unwrap();
        let running = run(server);
        let mut c = tls_tcp(pki.client(None, &[]), running.inet());
        c.write_all(b"one\n").unwrap();
        assert_eq!(read_line(&mut c).unwrap(), "one");
        let start = Instant::now();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(start.elapsed() < Duration::from_secs(3), "{strategy:?}: {:?}", start.elapsed());
        eventually("idle close counted", || running.handle.stats().idle_closed == 1);
        running.stop().unwrap();
    }
}

/// The read and write timeouts hold over TLS: a line that never ends
/// fails its read with `TimedOut`, an answer the client never takes fails
/// its write with `TimedOut` — reported through `handle_error`, under
/// `Event` and `Threading`.
#[test]
fn read_and_write_timeouts_hold_over_tls() {
    let _serial = serial();
    let pki = Pki::new();
    for strategy in [AnyStrategy::from(Event::new()), Threading::new().into()] {
        let (tx, rx) = std::sync::mpsc::channel::<(io::ErrorKind, String)>();
        let tx = std::sync::Mutex::new(tx);
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .read_timeout(Duration::from_millis(200))
            .write_timeout(Duration::from_millis(200))
            .handle_error(move |_, _, e| {
                let _ = tx.lock().unwrap().send((e.kind(), e.to_string()));
            })
            .bind("127.0.0.1:0", |req: &mut StreamRequest| {
                while req.wait_for_data()? {
                    let Some(line) = req.next_line()? else { break };
                    if line == "flood" {
                        let chunk = vec![b'x'; 64 * 1024];
                        loop {
                            req.write_all(&chunk)?;
                        }
                    }
                    writeln!(req, "{line}")?;
                }
                Ok(())
            })
            .unwrap();
        let running = run(server);
        // A line that never ends.
        let mut c = tls_tcp(pki.client(None, &[]), running.inet());
        c.write_all(b"no end").unwrap();
        let (kind, text) = rx.recv_timeout(TIMEOUT).unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut, "{strategy:?}: {text}");
        assert!(text.contains("timed out"), "{strategy:?}: {text}");
        drop(c);
        // An answer never taken.
        let mut c = tls_tcp(pki.client(None, &[]), running.inet());
        c.write_all(b"flood\n").unwrap();
        let (kind, text) = rx.recv_timeout(TIMEOUT).unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut, "{strategy:?}: {text}");
        assert!(text.starts_with("write to") && text.contains("timed out"), "{strategy:?}: {text}");
        drop(c);
        running.stop().unwrap();
    }
}

/// The configuration from PEM files prefers X25519 (rustls's `ring`
/// provider lists P-384 first, five times the handshake's CPU).
#[test]
fn the_pem_configuration_prefers_x25519() {
    let pki = Pki::new();
    for mutual in [false, true] {
        let groups: Vec<_> = pki.server(mutual).crypto_provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups.first(), Some(&rustls::NamedGroup::X25519), "{groups:?}");
        assert_eq!(groups.len(), 3, "no group dropped: {groups:?}");
    }
}

/// Reading a bad PEM file fails with an error that names it.
#[test]
fn pem_errors_name_the_file() {
    let pki = Pki::new();
    let missing = pki.path("missing.pem");
    let e = tls::server_config_from_pem(&missing, &pki.path("server.key"), None).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    for (cert, key, ca) in [
        (garbage.as_path(), pki.path("server.key"), None),
        (pki.path("server.pem").as_path(), garbage.clone(), None),
        (pki.path("server.pem").as_path(), pki.path("server.key"), Some(garbage.as_path())),
    ] {
        let e = tls::server_config_from_pem(cert, &key, ca).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("garbage.pem"), "{e}");
    }
    // A key that is not the certificate's.
    let e = tls::server_config_from_pem(&pki.path("server.pem"), &pki.path("client.key"), None).unwrap_err();
    assert!(e.to_string().contains("server.pem") && e.to_string().contains("client.key"), "{e}");
}

// ---------------------------------------------------------------- hostile peers

/// This process's threads.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A ClientHello, as a rustls client sends it.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(pki.client(None, &[]), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// A thousand clients that connect and send nothing hold no thread and do
/// not delay an honest one, under `Event` with default settings.
#[test]
fn a_thousand_silent_clients_delay_no_honest_one() {
    let _serial = serial();
    let _ = socketserver::raise_fd_limit();
    let pki = Pki::new();
    let before = threads();
    let server =
        TcpServer::builder().strategy(Event::new()).tls(pki.server(false)).bind("127.0.0.1:0", echo_parked_lines);
    let running = run(server.unwrap());
    let silent: Vec<TcpStream> = (0..1000).map(|_| tcp_connect(running.inet())).collect();
    eventually("all accepted", || running.handle.stats().accepted >= 1000);
    let start = Instant::now();
    let mut c = tls_tcp(pki.client(None, &[]), running.inet());
    c.write_all(b"honest\n").unwrap();
    assert_eq!(read_line(&mut c).unwrap(), "honest");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "the honest client waited {took:?}");
    let grown = threads() - before;
    assert!(grown <= 2 * cpus() + 4, "{grown} threads for 1,001 connections");
    // (The poller that answered may not have left the handler yet: the
    // answer reaches the client before its run ends.)
    eventually("no handler running", || running.handle.stats().workers_busy == 0);
    drop(silent);
    drop(c);
    running.stop().unwrap();
    // Under `Threading` too, silent clients cost only their own threads:
    // the accept loop never waits for a handshake.
    let server = TcpServer::builder().strategy(Threading::new()).tls(pki.server(false)).bind("127.0.0.1:0", echo_lines);
    let running = run(server.unwrap());
    let silent: Vec<TcpStream> = (0..50).map(|_| tcp_connect(running.inet())).collect();
    eventually("all accepted", || running.handle.stats().accepted >= 50);
    let mut c = tls_tcp(pki.client(None, &[]), running.inet());
    c.write_all(b"honest\n").unwrap();
    assert_eq!(read_line(&mut c).unwrap(), "honest");
    drop(silent);
    drop(c);
    running.stop().unwrap();
}

/// Garbage in place of a ClientHello, a ClientHello cut in half, and one
/// sent a byte every 100 ms: each closed within the handshake timeout
/// (300 ms here), holding no thread meanwhile, and counted.
#[test]
fn bad_and_slow_handshakes_end_within_the_timeout() {
    let _serial = serial();
    let pki = Pki::new();
    let hello = client_hello(&pki);
    let timeout = Duration::from_millis(300);
    for strategy in [AnyStrategy::from(Event::new()), Threading::new().into()] {
        let event = matches!(strategy, AnyStrategy::Event(_));
        let server = TcpServer::builder()
            .strategy(strategy.clone())
            .tls(pki.server(false))
            .handshake_timeout(timeout)
            .bind("127.0.0.1:0", echo_parked_lines)
            .unwrap();
        let running = run(server);
        // Garbage: refused at once.
        let mut garbage = tcp_connect(running.inet());
        garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let start = Instant::now();
        let _ = garbage.read_to_end(&mut Vec::new());
        assert!(start.elapsed() < timeout, "{strategy:?}: garbage took {:?}", start.elapsed());
        let before = threads();
        // Half a ClientHello: closed at the timeout.
        let mut half = tcp_connect(running.inet());
        half.write_all(&hello[..hello.len() / 2]).unwrap();
        let start = Instant::now();
        // A byte every 100 ms, on its own thread.
        let addr = running.inet();
        let slow_hello = hello.clone();
        let slow = std::thread::spawn(move || {
            let mut s = tcp_connect(addr);
            s.set_nonblocking(true).unwrap();
            let start = Instant::now();
            for b in &slow_hello {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                let mut probe = [0u8; 1];
                match s.read(&mut probe) {
                    Ok(_) => break,                                              // closed (or an alert)
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue, // still open
                    Err(_) => break,
                }
            }
            start.elapsed()
        });
        if event {
            std::thread::sleep(Duration::from_millis(150));
            // Mid-handshake, all three wait with no thread of their own.
            assert_eq!(running.handle.stats().workers_busy, 0, "a handshake holds a thread");
            // (One more: the slow client's own thread.)
            assert!(threads() <= before + 1, "{} threads more", threads() - before);
        }
        let _ = half.read_to_end(&mut Vec::new());
        let took = start.elapsed();
        assert!(took >= timeout - Duration::from_millis(50) && took < timeout * 4, "{strategy:?}: half took {took:?}");
        let took = slow.join().unwrap();
        assert!(took < timeout * 4, "{strategy:?}: a byte a second took {took:?}");
        eventually("three failures counted", || running.handle.stats().tls_handshake_failures == 3);
        assert_eq!(running.handle.stats().tls_handshakes, 0);
        running.stop().unwrap();
    }
}

/// A flood of 2,000 clients that begin a handshake and abort it leaves no
/// descriptor behind; the failures are counted, and logged at most once a
/// second.
#[test]
fn a_handshake_flood_leaves_no_descriptor_behind() {
    let _serial = serial();
    capture_logs();
    let flood_began = Instant::now();
    let _ = socketserver::raise_fd_limit();
    let pki = Pki::new();
    let hello = client_hello(&pki);
    let server =
        TcpServer::builder().strategy(Event::new()).tls(pki.server(false)).bind("127.0.0.1:0", echo_parked_lines);
    let running = run(server.unwrap());
    // The server is up (its epoll set, its threads) once it has served one.
    let mut c = tls_tcp(pki.client(None, &[]), running.inet());
    c.write_all(b"first\n").unwrap();
    assert_eq!(read_line(&mut c).unwrap(), "first");
    drop(c);
    eventually("the first gone", || running.handle.stats().active == 0);
    let baseline = open_fds();
    for round in 0..20 {
        let clients: Vec<TcpStream> = (0..100)
            .map(|i| {
                let s = tcp_connect(running.inet());
                if i % 2 == 0 {
                    let _ = (&s).write_all(&hello[..hello.len() / 2]);
                }
                s
            })
            .collect();
        for s in clients {
            // Abort: a reset, not a FIN.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
        let _ = round;
    }
    eventually("all 2,000 taken", || running.handle.stats().accepted >= 2000);
    let handle = running.handle.clone();
    eventually_value("every descriptor closed", || (open_fds(), baseline, handle.stats()), |(n, ..)| *n <= baseline);
    eventually("every connection gone", || running.handle.stats().active == 0);
    let stats = running.handle.stats();
    assert!(stats.tls_handshake_failures >= 1000, "{stats:?}");
    let lines = logged_containing("TLS handshake failed");
    let seconds = flood_began.elapsed().as_secs() as usize;
    assert!(!lines.is_empty() && lines.len() <= seconds + 2, "{} lines in {seconds} s", lines.len());
    // Still serving.
    let mut c = tls_tcp(pki.client(None, &[]), running.inet());
    c.write_all(b"still here\n").unwrap();
    assert_eq!(read_line(&mut c).unwrap(), "still here");
    drop(c);
    running.stop().unwrap();
}
