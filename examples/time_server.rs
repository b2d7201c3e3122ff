//! **Idea: a datagram server — one datagram is one request.**
//!
//! The tutorials' UDP time server: each datagram is a strftime format, the
//! reply the local time rendered with it (an empty one: `%Y-%m-%d %X`).
//! A plain function is a handler; `req.data()` is the datagram and
//! `req.reply` answers its sender.
//!
//! ```text
//! cargo run --example time_server                   # udp 127.0.0.1:9000
//! echo '%H:%M' | socketserver client --udp 127.0.0.1:9000
//! ```
//! Or from Python, as in the tutorial:
//! ```python
//! import socket
//! s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
//! s.sendto(b"%Y-%m-%d %X", ("127.0.0.1", 9000))
//! print(s.recv(1024).decode())
//! ```
//! Nothing waits between datagrams, so one thread serves them all
//! (`UdpServer`'s default, as Python's). A reply may be at most 3 times
//! its request on the wire (`req.max_reply()`): a forged source address
//! cannot turn the server into an amplifier. The UDP chat relay in
//! `apps/src/chat.rs` is the hardened datagram application.

use std::io;

use socketserver::servers::render_time;
use socketserver::{DatagramRequest, UdpServer};

fn tell_the_time(req: &mut DatagramRequest) -> io::Result<()> {
    // `render_time` never panics, whatever the bytes: unknown specifiers
    // are copied; text that is not UTF-8 is an error we report.
    let answer = match render_time(req.data()) {
        Ok(time) => time,
        Err(e) => format!("error: {e}"),
    };
    req.reply(answer.as_bytes())
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let server = UdpServer::builder().bind(addr.as_str(), tell_the_time)?;
    println!("listening udp {}", server.server_address());
    server.handle().shutdown_on_signal()?;
    server.serve_forever()
}
