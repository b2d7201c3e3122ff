//! **Idea: message boundaries on a stream — length-prefixed framing.**
//!
//! The tutorials' remote command: the client sends a command line, the
//! server runs it and sends back its output. TCP delivers bytes, not
//! messages: two sends may arrive as one read, one as two (the tutorials'
//! "sticky packet" problem). So each message goes as a 4-byte big-endian
//! length, then the bytes — Python's `struct.pack('!I', n)` — which
//! `socketserver::framing::LengthPrefixed` writes and reads, with a maximum
//! size checked before anything is allocated.
//!
//! ```text
//! cargo run --example remote_command -- server 127.0.0.1:9001 ls date uname
//! cargo run --example remote_command -- client 127.0.0.1:9001 ls -l /tmp
//! ```
//! The server runs only the programs named on its command line, without a
//! shell, with whatever arguments the client sends: it is a lesson, not a
//! sandbox. `apps/src/remote_command.rs` is the hardened version (time
//! limits, output streamed as it comes, exit status, a supervisor that
//! kills what a command leaves behind, refusal of programs that run others).

use std::io::{self, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use socketserver::framing::LengthPrefixed;
use socketserver::{StreamRequest, TcpServer, ThreadPool};

/// The largest frame either side accepts: a command line, or its output.
const MAX_FRAME: usize = 1024 * 1024;

/// Runs one command line, if its program is allowed: stdout, then stderr.
fn run(line: &str, allowed: &[String]) -> Vec<u8> {
    let mut words = line.split_whitespace();
    let Some(program) = words.next() else { return b"error: an empty command\n".to_vec() };
    if !allowed.iter().any(|a| a == program) {
        return format!("error: {program} is not allowed\n").into_bytes();
    }
    let output = Command::new(program).args(words).stdin(Stdio::null()).output();
    match output {
        Ok(out) => [out.stdout, out.stderr].concat(),
        Err(e) => format!("error: {program}: {e}\n").into_bytes(),
    }
}

/// A connection: frames in, a frame out for each, until the client closes.
fn serve(req: &mut StreamRequest, allowed: &[String]) -> io::Result<()> {
    let codec = LengthPrefixed::new(MAX_FRAME);
    let mut frame = Vec::new();
    // `false`: the client closed between frames (a frame cut short, or
    // one longer than MAX_FRAME, is an error that ends the connection).
    while codec.read_frame(req, &mut frame)? {
        let line = String::from_utf8_lossy(&frame);
        eprintln!("{}: {}", req.peer_addr(), socketserver::Escaped(&frame));
        let mut output = run(&line, allowed);
        output.truncate(MAX_FRAME);
        codec.write_frame(req, &output)?;
    }
    Ok(())
}

/// The client: one command line out, one frame of output back.
fn client(addr: &str, command: &[String]) -> io::Result<()> {
    let codec = LengthPrefixed::new(MAX_FRAME);
    let mut stream = TcpStream::connect(addr)?;
    codec.write_frame(&mut stream, command.join(" ").as_bytes())?;
    let mut output = Vec::new();
    if !codec.read_frame(&mut stream, &mut output)? {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    io::stdout().write_all(&output)
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("server"), Some(addr)) => {
            let allowed = args[2..].to_vec();
            // A command holds its connection's thread while it runs: a pool.
            let server = TcpServer::builder()
                .strategy(ThreadPool::new(2))
                .bind(addr.as_str(), move |req: &mut StreamRequest| serve(req, &allowed))?;
            println!("listening {}", server.server_address());
            server.handle().shutdown_on_signal()?;
            server.serve_forever()
        }
        (Some("client"), Some(addr)) => client(addr, &args[2..]),
        _ => {
            eprintln!("usage: remote_command server ADDR PROGRAM... | client ADDR COMMAND...");
            std::process::exit(2);
        }
    }
}
