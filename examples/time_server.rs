//! The tutorials' UDP time server: each datagram is a strftime format, the
//! reply is the local time rendered with it (an empty one means
//! `%Y-%m-%d %X`). Written with a `RequestHandler` of our own.
//!
//! ```text
//! cargo run --example time_server            # udp 127.0.0.1:9000
//! echo '%H:%M' | socketserver client --udp 127.0.0.1:9000
//! ```
//! Or from Python, as in the tutorial:
//! ```python
//! import socket
//! s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
//! s.sendto(b"%Y-%m-%d %X", ("127.0.0.1", 9000))
//! print(s.recv(1024).decode())
//! ```

use std::io;

use socketserver::servers::render_time;
use socketserver::{DatagramRequest, RequestHandler, UdpServer};

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

/// Binds the time server on `addr`.
pub fn bind(addr: &str) -> io::Result<UdpServer> {
    UdpServer::bind(addr, TimeHandler)
}

#[allow(dead_code)] // the tests include this file as a module
fn main() {
    // Logs (the library's errors included) on stderr; RUST_LOG=debug for more.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let server = match bind(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("time_server: {e}");
            std::process::exit(1);
        }
    };
    println!("listening udp {}", server.server_address());
    if let Err(e) = server.handle().shutdown_on_signal().and_then(|()| server.serve_forever()) {
        eprintln!("time_server: {e}");
        std::process::exit(1);
    }
}
