//! The tutorials' UDP time server: each datagram is a strftime format, the
//! reply is the local time rendered with it (an empty one means
//! `%Y-%m-%d %X`). Written with a `RequestHandler` of our own.
//!
//! ```text
//! cargo run --example time_server                          # udp 127.0.0.1:9000
//! cargo run --example time_server -- --strategy event      # sync (default), pool, threading, 'pool(4)'...
//! echo '%H:%M' | socketserver client --udp 127.0.0.1:9000
//! ```
//! One datagram is one request, so nothing waits between requests: the
//! strategy only says how many threads receive and answer — one (`sync`,
//! the default, as Python's `UDPServer`), a pool of receivers (`pool`, and
//! `event`, which for datagrams is a receiver per CPU), or a thread per
//! datagram (`threading`).
//!
//! Or from Python, as in the tutorial:
//! ```python
//! import socket
//! s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
//! s.sendto(b"%Y-%m-%d %X", ("127.0.0.1", 9000))
//! print(s.recv(1024).decode())
//! ```

use std::io;

use socketserver::UdpServer;
use socketserver::servers::render_time;
use socketserver::transport::Udp;
use socketserver::{AnyStrategy, DatagramRequest, RequestHandler, Server, Synchronous};

/// The server's default address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9000";

/// Answers each datagram with the time, or with `error: ...`.
pub struct TimeHandler;

impl RequestHandler<DatagramRequest> for TimeHandler {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        // `render_time` never panics, whatever the bytes: unknown
        // specifiers are copied, invalid UTF-8 is an error we report.
        let answer = match render_time(req.data()) {
            Ok(time) => time,
            Err(e) => format!("error: {e}"),
        };
        req.reply(answer.as_bytes())
    }
}

/// Binds the time server on `addr`: one datagram at a time.
///
/// # Errors
/// The address cannot be bound.
pub fn bind(addr: &str) -> io::Result<Server<Udp, AnyStrategy>> {
    bind_with(addr, Synchronous.into())
}

/// Binds the time server on `addr`, served as `strategy` says.
///
/// # Errors
/// The address cannot be bound.
pub fn bind_with(addr: &str, strategy: AnyStrategy) -> io::Result<Server<Udp, AnyStrategy>> {
    UdpServer::builder().strategy(strategy).bind(addr, TimeHandler)
}

/// The usage text.
pub const USAGE: &str =
    "usage: time_server [ADDR] [--strategy STRATEGY]   (sync, pool, threading, event, 'pool(4)'...)";

/// Parses the arguments after the program name: the address and the
/// strategy (as [`AnyStrategy`] reads it; sync unless given).
///
/// # Errors
/// A message for the user; print it with [`USAGE`].
pub fn parse_args(args: &[String]) -> Result<(String, AnyStrategy), String> {
    let (mut addr, mut strategy) = (None, Synchronous.into());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--strategy" => {
                strategy = it.next().ok_or("--strategy needs a value")?.parse().map_err(|e| format!("{e}"))?
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            other if addr.is_none() => addr = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok((addr.unwrap_or_else(|| DEFAULT_ADDR.to_string()), strategy))
}

#[allow(dead_code)] // the tests include this file as a module
fn main() {
    // Logs (the library's errors included) on stderr; RUST_LOG=debug for more.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, strategy) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("time_server: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let server = match bind_with(&addr, strategy) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("time_server: {e}");
            std::process::exit(1);
        }
    };
    println!("listening udp {} ({})", server.server_address(), server.strategy());
    if let Err(e) = server.handle().shutdown_on_signal().and_then(|()| server.serve_forever()) {
        eprintln!("time_server: {e}");
        std::process::exit(1);
    }
}
