//! TLS through the command (issue 19): `socketserver echo|time
//! --tls-cert/--tls-key` served to `openssl s_client` and to `socketserver
//! client --tls`, mutual TLS with `--tls-client-ca`, `--handshake-timeout`,
//! PEM files that cannot be used, and SIGINT with TLS clients in a closed
//! loop. Certificates are made here with rcgen: a CA, a server certificate
//! it signs (localhost, 127.0.0.1), client certificates of that CA and of
//! another.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use util::process::{Proc, TempDir};
use util::tools::require_tool;
use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_socketserver");

/// The PEM files of a test: `ca.pem`, `server.pem`/`server.key` (signed by
/// the CA), `client.pem`/`client.key` (signed by the CA) and
/// `stranger.pem`/`stranger.key` (signed by another CA, `other-ca.pem`).
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let ca = issuer("socketserver test CA");
        let other = issuer("another CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
        let leaf = |names: Vec<String>, cn: &str, by: &CertifiedIssuer<'static, KeyPair>, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, by).unwrap();
            std::fs::write(dir.join(&format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(&format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost", &ca, "server");
        leaf(vec!["client.example".into()], "a client", &ca, "client");
        leaf(vec!["stranger.example".into()], "a stranger", &other, "stranger");
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

fn issuer(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// `socketserver ARGS` with TLS from `pki`, its `listening` lines read.
fn serve(pki: &Pki, args: &[&str]) -> Proc {
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--tls-cert", &cert, "--tls-key", &key]);
    Proc::command(&all)
}

/// `socketserver client ARGS` with `input` on stdin: (exit code, stdout, stderr).
fn client(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// `openssl s_client` (with `target`: `-connect ADDR` or `-unix PATH`)
/// sends `line` and must see it come back as a line: true if it did within
/// TIMEOUT.
fn openssl_echo(openssl: &Path, target: &[&str], ca: &str, line: &str) -> bool {
    let mut child = Command::new(openssl)
        .arg("s_client")
        .args(target)
        .args(["-CAfile", ca, "-verify_return_error", "-servername", "localhost", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l == line => {
                seen = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// The echo over TLS on TCP and on a Unix stream socket, to openssl's own
/// client (verifying our certificate against the CA); the UDP listener
/// next to them stays plaintext.
#[test]
fn echo_serves_tls_to_openssl_s_client_on_tcp_and_unix() {
    let Some(openssl) = require_tool("openssl", "openssl") else { return };
    let pki = Pki::new("tls-openssl");
    let sock = pki.path("echo.sock");
    let server =
        serve(&pki, &["echo", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--unix", &sock, "--log-level", "warn"]);
    let tcp = server.listening_on("tcp");
    let udp = server.listening_on("udp");
    server.listening_on("unix");
    assert!(
        openssl_echo(&openssl, &["-connect", &tcp], &pki.path("ca.pem"), "hello over tcp"),
        "{}",
        server.stderr_text()
    );
    assert!(
        openssl_echo(&openssl, &["-unix", &sock], &pki.path("ca.pem"), "hello over unix"),
        "{}",
        server.stderr_text()
    );
    // UDP: plaintext, as before.
    let (code, out, err) = client(&["--udp", &udp], "plain datagram\n");
    assert_eq!((code, out.as_str()), (0, "plain datagram\n"), "{err}");
}

/// `socketserver client --tls --ca` against the echo (TCP and Unix) and the
/// time server; without --ca our private CA is not trusted; a plaintext
/// client gets no echo from a TLS listener.
#[test]
fn client_tls_talks_to_echo_and_time_servers() {
    let pki = Pki::new("tls-client");
    let ca = pki.path("ca.pem");
    let sock = pki.path("echo.sock");
    let echo = serve(&pki, &["echo", "--tcp", "127.0.0.1:0", "--unix", &sock, "--log-level", "off"]);
    let tcp = echo.listening_on("tcp");
    echo.listening_on("unix");
    let (code, out, err) = client(&["--tcp", &tcp, "--tls", "--ca", &ca], "one\ntwo\n");
    assert_eq!((code, out.as_str()), (0, "one\ntwo\n"), "{err}");
    let localhost = tcp.replace("127.0.0.1", "localhost");
    let (code, out, err) = client(&["--tcp", &localhost, "--tls", "--ca", &ca], "by name\n");
    assert_eq!((code, out.as_str()), (0, "by name\n"), "{err}");
    let (code, out, err) = client(&["--unix", &sock, "--tls", "--ca", &ca, "--server-name", "localhost"], "unix\n");
    assert_eq!((code, out.as_str()), (0, "unix\n"), "{err}");
    // A line longer than the socket buffers, both ways at once.
    let long = "x".repeat(1 << 20) + "\n";
    let (code, out, err) = client(&["--tcp", &tcp, "--tls", "--ca", &ca], &long);
    assert_eq!(code, 0, "{err}");
    assert!(out == long, "the long line came back as {} bytes", out.len());

    // Not trusted: the Mozilla roots do not include our CA.
    let (code, out, err) = client(&["--tcp", &tcp, "--tls"], "x\n");
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("certificate"), "{err}");
    // The wrong name: the certificate is for localhost and 127.0.0.1.
    let (code, _, err) = client(&["--tcp", &tcp, "--tls", "--ca", &ca, "--server-name", "example.com"], "x\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate"), "{err}");
    // Plaintext to a TLS listener: no echo.
    let (_, out, _) = client(&["--tcp", &tcp, "--timeout", "2"], "plain\n");
    assert_ne!(out, "plain\n");

    let time = serve(&pki, &["time", "--tcp", "127.0.0.1:0", "--log-level", "off"]);
    let tcp = time.listening_on("tcp");
    let (code, out, err) = client(&["--tcp", &tcp, "--tls", "--ca", &ca], "%Y\n");
    assert_eq!(code, 0, "{err}");
    let year = out.trim();
    assert!(year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()), "{out:?}");
}

/// Mutual TLS: with --tls-client-ca, a client certificate of that CA is
/// served, one of another CA or none at all is not.
#[test]
fn mutual_tls_takes_the_right_client_certificate_only() {
    let pki = Pki::new("tls-mutual");
    let (ca, client_ca) = (pki.path("ca.pem"), pki.path("ca.pem"));
    let server = serve(&pki, &["echo", "--tcp", "127.0.0.1:0", "--tls-client-ca", &client_ca, "--log-level", "warn"]);
    let tcp = server.listening_on("tcp");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let (code, out, err) = client(&["--tcp", &tcp, "--tls", "--ca", &ca, "--cert", &cert, "--key", &key], "me\n");
    assert_eq!((code, out.as_str()), (0, "me\n"), "{err}");

    let (cert, key) = (pki.path("stranger.pem"), pki.path("stranger.key"));
    let (code, out, err) = client(&["--tcp", &tcp, "--tls", "--ca", &ca, "--cert", &cert, "--key", &key], "me\n");
    assert_eq!((code, out.as_str()), (1, ""), "a stranger's certificate was served: {err}");
    let (code, out, err) = client(&["--tcp", &tcp, "--tls", "--ca", &ca], "me\n");
    assert_eq!((code, out.as_str()), (1, ""), "a client without a certificate was served: {err}");
    server.expect_stderr("TLS handshake");
}

/// A PEM file that is missing or holds no certificate: exit 2 before
/// anything is served, the file named, no panic.
#[test]
fn a_bad_pem_file_is_a_clear_error() {
    let pki = Pki::new("tls-bad");
    let missing = pki.path("missing.pem");
    let key = pki.path("server.key");
    let cases: [(&[&str], &str); 4] = [
        (&["--tls-cert", &missing, "--tls-key", &key], "missing.pem"),
        // A key where the certificate should be.
        (&["--tls-cert", &key, "--tls-key", &key], "server.key"),
        (&["--tls-cert", &pki.path("server.pem"), "--tls-key", &pki.path("ca.pem")], "ca.pem"),
        (
            &["--tls-cert", &pki.path("server.pem"), "--tls-key", &key, "--tls-client-ca", &pki.path("nope.pem")],
            "nope.pem",
        ),
    ];
    for (tls, named) in cases {
        let mut args = vec!["echo", "--tcp", "127.0.0.1:0"];
        args.extend_from_slice(tls);
        let out = run_briefly(Command::new(BIN).args(&args).env("RUST_BACKTRACE", "1"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} listened: {}", String::from_utf8_lossy(&out.stdout));
        assert!(err.contains(named), "{args:?}: the error does not name {named}: {err}");
        assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    }
    // --tls-key alone is a usage error.
    let out = Command::new(BIN).args(["echo", "--tls-key", &key]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `cmd` to its end, or kills it after TIMEOUT (a server that
/// started serving instead of refusing its files: exit code `None`).
fn run_briefly(cmd: &mut Command) -> std::process::Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kill(2) on our own child, which the waiting thread has not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            rx.recv().unwrap()
        }
    }
}

/// --handshake-timeout: a client that connects and sends nothing is
/// closed when it passes (default 10 s).
#[test]
fn a_silent_client_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new("tls-timeout");
    let server = serve(&pki, &["echo", "--tcp", "127.0.0.1:0", "--handshake-timeout", "0.5", "--log-level", "off"]);
    let tcp = server.listening_on("tcp");
    let mut s = TcpStream::connect(&tcp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let got = s.read(&mut buf);
    let took = start.elapsed();
    let closed = matches!(&got, Ok(0)) || matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(closed && took < Duration::from_secs(4), "not closed after {took:?}: {got:?}");
    assert!(took >= Duration::from_millis(400), "closed after {took:?}, before the timeout");
}

fn tls_client_config(ca: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(config: &Arc<rustls::ClientConfig>, addr: &str) -> TlsStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// 16 TLS clients doing line round trips in a closed loop; SIGINT in the
/// middle; each goes on for 20 round trips after the signal, then sends
/// close_notify. No line is lost, each connection ends with the server's
/// close_notify (a clean end of stream, not a cut), and the process exits 0.
#[test]
fn tls_closed_loop_clients_lose_no_line_across_sigint() {
    let pki = Pki::new("tls-drain");
    let config = tls_client_config(&pki.path("ca.pem"));
    for strategy in ["event", "pool"] {
        let mut server = serve(
            &pki,
            &[
                "echo",
                "--tcp",
                "127.0.0.1:0",
                "--strategy",
                strategy,
                "--grace",
                "30",
                "--drain-window",
                "2",
                "--log-level",
                "off",
            ],
        );
        let addr = server.listening_on("tcp");
        let at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let round_trips = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..16)
            .map(|id| {
                let (at, round_trips, config, addr) =
                    (Arc::clone(&at), Arc::clone(&round_trips), config.clone(), addr.clone());
                std::thread::spawn(move || {
                    let mut s = BufReader::new(tls_connect(&config, &addr));
                    let (mut sent, mut answered, mut after_signal) = (0u64, 0u64, 0u64);
                    for i in 0.. {
                        if after_signal >= 20 {
                            break;
                        }
                        let line = format!("client {id} line {i}\n");
                        s.get_mut().write_all(line.as_bytes()).unwrap();
                        sent += 1;
                        after_signal += u64::from(at.lock().unwrap().is_some());
                        let mut back = String::new();
                        match s.read_line(&mut back) {
                            Ok(_) if back == line => answered += 1,
                            _ => break,
                        }
                        round_trips.fetch_add(1, Ordering::Relaxed);
                    }
                    // Done: close_notify; the server answers with its own.
                    s.get_mut().conn.send_close_notify();
                    let _ = s.get_mut().flush();
                    let mut rest = Vec::new();
                    let clean = s.read_to_end(&mut rest).is_ok() && rest.is_empty();
                    let _ = s.get_mut().sock.shutdown(Shutdown::Both);
                    (sent, answered, after_signal, clean)
                })
            })
            .collect();
        eventually(&format!("{strategy}: 1,000 TLS round trips"), || round_trips.load(Ordering::Relaxed) >= 1_000);
        server.signal(libc::SIGINT);
        *at.lock().unwrap() = Some(Instant::now());
        let (mut sent, mut answered) = (0, 0);
        for c in clients {
            let (s, a, after, clean) = c.join().unwrap();
            assert_eq!(s, a, "{strategy}: a TLS client lost {} line(s)", s - a);
            assert!(after > 0, "{strategy}: a client sent nothing after the signal");
            assert!(clean, "{strategy}: a TLS connection did not end with close_notify");
            sent += s;
            answered += a;
        }
        assert_eq!(server.exit_code(TIMEOUT), 0, "{}", server.stderr_text());
        eprintln!("{strategy}: {sent} lines sent over TLS, {answered} answered, 0 lost");
    }
}
