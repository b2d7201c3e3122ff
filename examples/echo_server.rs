//! **Idea: a handler of your own, and choosing how it is served.**
//!
//! The echo server of every socket tutorial: a `RequestHandler` that sends
//! back what it reads, served as `--strategy` says (read by `AnyStrategy`'s
//! `FromStr`: `event`, the default, `pool`, `threading`, `'pool(4-64)'`...).
//!
//! ```text
//! cargo run --example echo_server                          # 127.0.0.1:9999
//! cargo run --example echo_server -- [::1]:0 --strategy pool
//! nc 127.0.0.1 9999                                        # or socketserver client --tcp
//! ```
//!
//! Under `event` a connection with nothing to read is parked in epoll and
//! holds no thread: `wait_for_data` returns `false` at that request
//! boundary, and `handle` is called again when bytes come. The hardened
//! applications built on the same calls are in `apps/` (for instance
//! `apps/src/chat.rs`).

use std::io::{self, Read, Write};

use socketserver::{AnyStrategy, Event, RequestHandler, StreamRequest, TcpServer};

struct EchoHandler;

impl RequestHandler<StreamRequest> for EchoHandler {
    fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
        eprintln!("{} connected", req.peer_addr());
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        // Under `event`: `false` when nothing is buffered (park me). Under
        // the others it waits; `false` is then the end of the stream.
        while req.wait_for_data()? {
            let n = req.read(&mut buf)?; // what is buffered: never waits
            req.write_all(&buf[..n])?;
        }
        Ok(())
    }

    fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
        eprintln!("{} left", req.peer_addr());
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9999".to_string();
    let mut strategy = AnyStrategy::from(Event::new());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--strategy" => strategy = args.next().ok_or("--strategy needs a value")?.parse()?,
            _ => addr = arg,
        }
    }
    let server = TcpServer::builder().strategy(strategy).bind(addr.as_str(), EchoHandler)?;
    println!("listening {} ({})", server.server_address(), server.strategy());
    // Ctrl-C or SIGTERM: stop accepting, let connections finish, return.
    server.handle().shutdown_on_signal()?;
    Ok(server.serve_forever()?)
}
