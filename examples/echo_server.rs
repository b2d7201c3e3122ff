//! The echo server of every socket tutorial, written as a user of the crate
//! would write it: a `RequestHandler` of our own on a thread pool.
//!
//! ```text
//! cargo run --release --example echo_server            # 127.0.0.1:9999
//! cargo run --release --example echo_server -- [::1]:0 # any address
//! ```
//! Talk to it with `socketserver client --tcp 127.0.0.1:9999`, `nc`, or
//! Python: `socket.create_connection(("127.0.0.1", 9999)).sendall(b"hi")`.
//! Ctrl-C stops it: connections in flight get 5 s to finish.

use std::io::{self, Read, Write};

use socketserver::{RequestHandler, StreamRequest, ThreadPoolTcpServer};

/// Sends back every byte it receives until the client closes.
pub struct EchoHandler;

impl RequestHandler<StreamRequest> for EchoHandler {
    fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
        log::info!("{} connected", req.peer_addr());
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match req.read(&mut buf)? {
                0 => return Ok(()),
                n => req.write_all(&buf[..n])?,
            }
        }
    }

    fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
        log::info!("{} left", req.peer_addr());
        Ok(())
    }
}

/// Binds the echo server on `addr`.
pub fn bind(addr: &str) -> io::Result<ThreadPoolTcpServer> {
    ThreadPoolTcpServer::bind(addr, EchoHandler)
}

#[allow(dead_code)] // the tests include this file as a module
fn main() {
    // Logs (the library's errors included) on stderr; RUST_LOG=debug for more.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9999".to_string());
    let server = match bind(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: {e}");
            std::process::exit(1);
        }
    };
    println!("listening tcp {}", server.server_address());
    if let Err(e) = server.handle().shutdown_on_signal().and_then(|()| server.serve_forever()) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}
