//! The "no framework" floor: a hand-written echo server on std alone.
//!
//! TCP: one thread per connection (std's default stack), a 16 KiB buffer,
//! echo until end of stream. UDP: `--udp-threads N` threads (default: the
//! number of CPUs) each `recv_from`/`send_to` on the same socket.
//! No signal handling: SIGINT ends the process at once (the default action).
//!
//! `--sleep-slow MS` (TCP, for `socketserver bench tcp-mixed`): a read
//! whose first byte is `S` sleeps MS milliseconds before its echo.
//!
//! `std_echo --tcp 127.0.0.1:0 --udp 127.0.0.1:0 [--udp-threads N] [--backlog N]`
//! prints `listening tcp ADDR` / `listening udp ADDR` like `socketserver
//! echo`. The listen backlog is std's (128) unless `--backlog N`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

fn main() {
    let args = Args::parse();
    let tcp = args.tcp.map(|a| listen(&a, args.backlog).unwrap_or_else(|e| die(&format!("tcp {a}: {e}"))));
    let udp = args.udp.map(|a| UdpSocket::bind(&a).unwrap_or_else(|e| die(&format!("udp {a}: {e}"))));
    if let Some(l) = &tcp {
        println!("listening tcp {}", l.local_addr().expect("local address"));
    }
    if let Some(s) = &udp {
        println!("listening udp {}", s.local_addr().expect("local address"));
    }
    std::io::stdout().flush().expect("stdout");

    if let Some(socket) = udp {
        for _ in 0..args.udp_threads {
            let socket = socket.try_clone().expect("clone the UDP socket");
            std::thread::spawn(move || {
                let mut buf = [0u8; 65_536];
                loop {
                    if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], peer);
                    }
                }
            });
        }
    }
    match tcp {
        Some(listener) => {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let sleep_slow = args.sleep_slow;
                        if let Err(e) = std::thread::Builder::new().spawn(move || echo(stream, sleep_slow)) {
                            eprintln!("std_echo: cannot start a thread: {e}");
                        }
                    }
                    Err(e) => {
                        eprintln!("std_echo: accept: {e}");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        None => loop {
            std::thread::park();
        },
    }
}

/// `TcpListener::bind`, or with `--backlog N` the same with that backlog.
fn listen(addr: &str, backlog: Option<i32>) -> std::io::Result<TcpListener> {
    let Some(backlog) = backlog else { return TcpListener::bind(addr) };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "resolves to nothing"))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn echo(mut stream: TcpStream, sleep_slow: Option<Duration>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let (Some(d), b'S') = (sleep_slow, buf[0]) {
                    std::thread::sleep(d);
                }
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

struct Args {
    tcp: Option<String>,
    udp: Option<String>,
    udp_threads: usize,
    backlog: Option<i32>,
    sleep_slow: Option<Duration>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            tcp: None,
            udp: None,
            udp_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            backlog: None,
            sleep_slow: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| die(&format!("{flag} needs a value")));
            match flag.as_str() {
                "--tcp" => args.tcp = Some(value()),
                "--udp" => args.udp = Some(value()),
                "--udp-threads" => args.udp_threads = value().parse().unwrap_or_else(|_| die("--udp-threads N")),
                "--backlog" => args.backlog = Some(value().parse().unwrap_or_else(|_| die("--backlog N"))),
                "--sleep-slow" => args.sleep_slow = Some(millis(&value()).unwrap_or_else(|| die("--sleep-slow MS"))),
                _ => die(&format!("unknown argument {flag}")),
            }
        }
        if args.tcp.is_none() && args.udp.is_none() {
            die("usage: std_echo [--tcp ADDR] [--udp ADDR] [--udp-threads N] [--backlog N] [--sleep-slow MS]");
        }
        args
    }
}

/// Milliseconds, fractions allowed.
fn millis(v: &str) -> Option<Duration> {
    v.parse::<f64>().ok().and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
}

fn die(msg: &str) -> ! {
    eprintln!("std_echo: {msg}");
    std::process::exit(2)
}
