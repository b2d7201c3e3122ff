//! The echo server of every socket tutorial, written as a user of the crate
//! would write it: a `RequestHandler` of our own, under the event strategy
//! by default — an echo connection is idle most of its life, and a parked
//! connection holds no thread — or on a thread pool, or a thread per
//! connection.
//!
//! ```text
//! cargo run --release --example echo_server                        # 127.0.0.1:9999, event
//! cargo run --release --example echo_server -- [::1]:0             # any address
//! cargo run --release --example echo_server -- --strategy pool     # or threading, 'pool(4-64)'...
//! ```
//! Talk to it with `socketserver client --tcp 127.0.0.1:9999`, `nc`, or
//! Python: `socket.create_connection(("127.0.0.1", 9999)).sendall(b"hi")`.
//! Ctrl-C stops it: connections in flight get 5 s to finish.

use std::io::{self, Read, Write};

use socketserver::transport::Tcp;
use socketserver::{AnyStrategy, Event, RequestHandler, Server, StreamRequest, TcpServer};

/// The server's default address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9999";

/// Sends back every byte it receives until the client closes.
pub struct EchoHandler;

impl RequestHandler<StreamRequest> for EchoHandler {
    fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
        log::info!("{} connected", req.peer_addr());
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        // `wait_for_data` is the request boundary. Under the event strategy,
        // with nothing to read it returns `false` and the connection is
        // parked without a thread; `handle` is called again when bytes
        // come (nothing here outlives a call, so nothing is kept). Under
        // the others it waits; `false` is the end of the stream.
        while req.wait_for_data()? {
            // What is buffered: this read never waits.
            let n = req.read(&mut buf)?;
            req.write_all(&buf[..n])?;
        }
        Ok(())
    }

    fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
        log::info!("{} left", req.peer_addr());
        Ok(())
    }
}

/// Binds the echo server on `addr`, under the event strategy.
///
/// # Errors
/// The address cannot be bound.
pub fn bind(addr: &str) -> io::Result<Server<Tcp, AnyStrategy>> {
    bind_with(addr, Event::new().into())
}

/// Binds the echo server on `addr`, served as `strategy` says.
///
/// # Errors
/// The address cannot be bound.
pub fn bind_with(addr: &str, strategy: AnyStrategy) -> io::Result<Server<Tcp, AnyStrategy>> {
    TcpServer::builder().strategy(strategy).bind(addr, EchoHandler)
}

/// The usage text.
pub const USAGE: &str = "usage: echo_server [ADDR] [--strategy STRATEGY]   (event, pool, threading, 'pool(4-64)'...)";

/// Parses the arguments after the program name: the address and the
/// strategy (as [`AnyStrategy`] reads it; event unless given).
///
/// # Errors
/// A message for the user; print it with [`USAGE`].
pub fn parse_args(args: &[String]) -> Result<(String, AnyStrategy), String> {
    let (mut addr, mut strategy) = (None, Event::new().into());
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
            eprintln!("echo_server: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let server = match bind_with(&addr, strategy) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: {e}");
            std::process::exit(1);
        }
    };
    println!("listening tcp {} ({})", server.server_address(), server.strategy());
    if let Err(e) = server.handle().shutdown_on_signal().and_then(|()| server.serve_forever()) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}
