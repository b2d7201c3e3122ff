//! A tokio echo server: multi-thread runtime (one worker per CPU unless
//! `--threads N`; `--current-thread` for the single-threaded runtime), one
//! task per TCP connection with a 16 KiB buffer, and `--udp-tasks N` tasks
//! (default: the runtime's worker count) each `recv_from`/`send_to` on one
//! shared UDP socket. The listen backlog is tokio's (1,024) unless
//! `--backlog N`. SIGINT (Ctrl-C): the runtime is dropped, which cancels
//! every task, and the process exits.
//!
//! `--sleep-slow MS` (TCP, for `socketserver bench tcp-mixed`): a read
//! whose first byte is `S` blocks MS milliseconds before its echo, standing
//! for a blocking call in a handler — in `spawn_blocking`, the idiomatic
//! way, or with `--inline` on the worker itself (`std::thread::sleep`, the
//! common mistake: the worker's other connections wait too).
//!
//! `--tls-cert PEM --tls-key PEM` (issue 19's peer): the TCP side speaks
//! TLS with tokio-rustls (rustls 0.23, ring provider, rustls's defaults:
//! TLS 1.3 and 1.2, its cipher suites in its order, two TLS 1.3 session
//! tickets after each handshake), the handshake in the connection's task,
//! `TCP_NODELAY` on (as `socketserver echo`).
//!
//! `tokio_echo --tcp 127.0.0.1:0 --udp 127.0.0.1:0` prints
//! `listening tcp ADDR` / `listening udp ADDR` like `socketserver echo`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn main() {
    let args = Args::parse();
    let mut rt = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let (Some(n), false) = (args.threads, args.current_thread) {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build().unwrap_or_else(|e| die(&format!("runtime: {e}")));
    let workers = rt.metrics().num_workers();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)),
        (None, None) => None,
        _ => die("--tls-cert and --tls-key go together"),
    };
    rt.block_on(async {
        let tcp = match &args.tcp {
            Some(a) => Some(listen(a, args.backlog).await.unwrap_or_else(|e| die(&format!("tcp {a}: {e}")))),
            None => None,
        };
        let udp = match &args.udp {
            Some(a) => Some(Arc::new(UdpSocket::bind(a).await.unwrap_or_else(|e| die(&format!("udp {a}: {e}"))))),
            None => None,
        };
        if let Some(l) = &tcp {
            println!("listening tcp {}", l.local_addr().expect("local address"));
        }
        if let Some(s) = &udp {
            println!("listening udp {}", s.local_addr().expect("local address"));
        }
        std::io::stdout().flush().expect("stdout");

        if let Some(socket) = udp {
            for _ in 0..args.udp_tasks.unwrap_or(workers) {
                let socket = Arc::clone(&socket);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    loop {
                        if let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                            let _ = socket.send_to(&buf[..n], peer).await;
                        }
                    }
                });
            }
        }
        if let Some(listener) = tcp {
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => match &tls {
                            None => {
                                tokio::spawn(echo(stream, args.sleep_slow, args.inline));
                            }
                            Some(acceptor) => {
                                // TCP_NODELAY, as ours: a handshake's
                                // session tickets and the first echo are
                                // separate small writes, which Nagle's
                                // algorithm holds for the client's
                                // delayed ACK (40 ms).
                                let _ = stream.set_nodelay(true);
                                let accept = acceptor.accept(stream);
                                let (sleep_slow, inline) = (args.sleep_slow, args.inline);
                                tokio::spawn(async move {
                                    if let Ok(stream) = accept.await {
                                        echo(stream, sleep_slow, inline).await;
                                    }
                                });
                            }
                        },
                        Err(e) => {
                            eprintln!("tokio_echo: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            });
        }
        let _ = tokio::signal::ctrl_c().await;
    });
    // Dropping the runtime cancels the connection tasks.
}

/// `TcpListener::bind` (backlog 1024), or with `--backlog N` that backlog.
async fn listen(addr: &str, backlog: Option<u32>) -> std::io::Result<TcpListener> {
    let Some(backlog) = backlog else { return TcpListener::bind(addr).await };
    let addr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "resolves to nothing"))?;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A TLS acceptor serving the certificate chain and key of these PEM files.
fn tls_acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .unwrap_or_else(|e| die(&format!("--tls-cert {cert}: {e}")));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| die(&format!("--tls-key {key}: {e}")));
    // The ring provider, as the library's `tls` feature (deprecated in
    // rustls 0.23.48 for lacking post-quantum key exchange: X25519 here).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .unwrap_or_else(|e| die(&format!("TLS configuration: {e}")));
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, sleep_slow: Option<Duration>, inline: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let (Some(d), b'S') = (sleep_slow, buf[0]) {
                    if inline {
                        std::thread::sleep(d);
                    } else if tokio::task::spawn_blocking(move || std::thread::sleep(d)).await.is_err() {
                        return;
                    }
                }
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct Args {
    tcp: Option<String>,
    udp: Option<String>,
    threads: Option<usize>,
    udp_tasks: Option<usize>,
    current_thread: bool,
    backlog: Option<u32>,
    sleep_slow: Option<Duration>,
    inline: bool,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            tcp: None,
            udp: None,
            threads: None,
            udp_tasks: None,
            current_thread: false,
            backlog: None,
            sleep_slow: None,
            inline: false,
            tls_cert: None,
            tls_key: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| die(&format!("{flag} needs a value")));
            match flag.as_str() {
                "--tcp" => args.tcp = Some(value()),
                "--udp" => args.udp = Some(value()),
                "--threads" => args.threads = Some(value().parse().unwrap_or_else(|_| die("--threads N"))),
                "--udp-tasks" => args.udp_tasks = Some(value().parse().unwrap_or_else(|_| die("--udp-tasks N"))),
                "--current-thread" => args.current_thread = true,
                "--backlog" => args.backlog = Some(value().parse().unwrap_or_else(|_| die("--backlog N"))),
                "--sleep-slow" => args.sleep_slow = Some(millis(&value()).unwrap_or_else(|| die("--sleep-slow MS"))),
                "--inline" => args.inline = true,
                "--tls-cert" => args.tls_cert = Some(value()),
                "--tls-key" => args.tls_key = Some(value()),
                _ => die(&format!("unknown argument {flag}")),
            }
        }
        if args.tcp.is_none() && args.udp.is_none() {
            die(
                "usage: tokio_echo [--tcp ADDR] [--udp ADDR] [--threads N | --current-thread] [--udp-tasks N] [--backlog N] [--sleep-slow MS [--inline]] [--tls-cert PEM --tls-key PEM]",
            );
        }
        args
    }
}

/// Milliseconds, fractions allowed.
fn millis(v: &str) -> Option<Duration> {
    v.parse::<f64>().ok().and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
}

fn die(msg: &str) -> ! {
    eprintln!("tokio_echo: {msg}");
    std::process::exit(2)
}
