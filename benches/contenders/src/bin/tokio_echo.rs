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
//! `tokio_echo --tcp 127.0.0.1:0 --udp 127.0.0.1:0` prints
//! `listening tcp ADDR` / `listening udp ADDR` like `socketserver echo`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

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
                        Ok((stream, _)) => {
                            tokio::spawn(echo(stream, args.sleep_slow, args.inline));
                        }
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

async fn echo(mut stream: TcpStream, sleep_slow: Option<Duration>, inline: bool) {
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
                _ => die(&format!("unknown argument {flag}")),
            }
        }
        if args.tcp.is_none() && args.udp.is_none() {
            die(
                "usage: tokio_echo [--tcp ADDR] [--udp ADDR] [--threads N | --current-thread] [--udp-tasks N] [--backlog N] [--sleep-slow MS [--inline]]",
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
