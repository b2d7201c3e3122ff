//! Opens N TCP connections to an echo server and holds them, idle.
//!
//! `hold_conns ADDR N [--verify-timeout SECS] [--release]`
//!
//! Connections are opened one after another (so that a small listen backlog,
//! such as Python's 5, does not turn the test into one of SYN retries). On
//! each, one 64-byte round trip checks that a handler is really serving it;
//! after the first round trip that does not come back within the timeout
//! (default 2 s; a `Sync` server serves one connection at a time), the rest
//! are only connected. Then it prints
//! `held N failed F served S` and keeps them open until killed — or, with
//! `--release`, closes them and exits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!("usage: hold_conns ADDR N [--verify-timeout SECS] [--release]");
        std::process::exit(2)
    };
    let addr: SocketAddr = args.next().and_then(|a| a.parse().ok()).unwrap_or_else(|| usage());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or_else(|| usage());
    let mut timeout = Duration::from_secs(2);
    let mut release = false;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--verify-timeout" => {
                let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or_else(|| usage());
                timeout = Duration::from_secs_f64(secs);
            }
            "--release" => release = true,
            _ => usage(),
        }
    }

    let mut held = Vec::with_capacity(n);
    let (mut failed, mut served) = (0usize, 0usize);
    let mut verify = true;
    let out = [b'h'; 64];
    let mut back = [0u8; 64];
    for _ in 0..n {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => {
                if failed == 0 {
                    eprintln!("hold_conns: connect: {e}");
                }
                failed += 1;
                continue;
            }
        };
        if verify {
            let ok = s.set_read_timeout(Some(timeout)).is_ok()
                && s.write_all(&out).is_ok()
                && s.read_exact(&mut back).is_ok()
                && back == out;
            if ok {
                served += 1;
            } else {
                verify = false;
            }
        }
        held.push(s);
    }
    println!("held {} failed {failed} served {served}", held.len());
    std::io::stdout().flush().expect("stdout");
    if release {
        return;
    }
    loop {
        std::thread::park();
    }
}
