//! **Idea: a header, then a body of the size it announced.**
//!
//! The tutorials' file transfer: before the file's bytes, a header says
//! what comes — here one text line, `PUT NAME SIZE` or `GET NAME`, read
//! with `socketserver::framing::Lines` (bounded: a line without an end
//! cannot eat memory). The body is then exactly SIZE bytes, read with
//! `Read::take`: nothing of the next request is taken for file data.
//!
//! ```text
//! cargo run --example file_transfer -- server 127.0.0.1:9002 /tmp/served
//! cargo run --example file_transfer -- put 127.0.0.1:9002 ./photo.jpg
//! cargo run --example file_transfer -- get 127.0.0.1:9002 photo.jpg
//! ```
//! Names are checked (letters, digits, `.`, `_`, `-`; not starting with
//! `.`), so a client cannot write outside the folder. The hardened version,
//! `apps/src/file_transfer.rs`, adds SHA-256 verification, progress,
//! uploads into temporary files renamed only when whole, size limits and
//! deadlines for slow clients.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use socketserver::framing::Lines;
use socketserver::{StreamRequest, TcpServer, ThreadPool};

/// The longest header line.
const MAX_HEADER: usize = 1024;
/// The largest upload the server takes.
const MAX_SIZE: u64 = 100 * 1024 * 1024;

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// A name that stays in the served folder and shows as it is.
fn checked(name: &str) -> io::Result<&str> {
    let fine = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    match name.bytes().all(fine) && !name.is_empty() && !name.starts_with('.') {
        true => Ok(name),
        false => Err(bad("a name is letters, digits, '.', '_' or '-', not starting with '.'")),
    }
}

/// One request per connection: a header line, then the body either way.
fn serve(req: &mut StreamRequest, dir: &Path) -> io::Result<()> {
    let mut header = Vec::new();
    if !Lines::new(MAX_HEADER).read_line(req, &mut header)? {
        return Ok(()); // closed before asking anything
    }
    let header = String::from_utf8(header).map_err(|_| bad("the header is not UTF-8"))?;
    let words: Vec<&str> = header.split(' ').collect();
    match words[..] {
        ["PUT", name, size] => {
            let size: u64 = size.parse().map_err(|_| bad("the size is not a number"))?;
            if size > MAX_SIZE {
                return writeln!(req, "error: at most {MAX_SIZE} bytes");
            }
            let mut file = File::create(dir.join(checked(name)?))?;
            // Exactly `size` bytes: what the header announced, no more.
            let copied = io::copy(&mut req.take(size), &mut file)?;
            if copied < size {
                return Err(bad("the upload ended early"));
            }
            writeln!(req, "OK {copied}")
        }
        ["GET", name] => match File::open(dir.join(checked(name)?)) {
            Ok(mut file) => {
                writeln!(req, "OK {}", file.metadata()?.len())?;
                io::copy(&mut file, req).map(drop)
            }
            Err(e) => writeln!(req, "error: {e}"),
        },
        _ => writeln!(req, "error: send PUT NAME SIZE or GET NAME"),
    }
}

/// The server's answer line: `OK N`, N returned; anything else an error.
fn answer(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let size = line.trim_end().strip_prefix("OK ").and_then(|n| n.parse().ok());
    size.ok_or_else(|| io::Error::other(line.trim_end().to_string()))
}

fn put(addr: &str, path: &Path) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| bad("no file name"))?;
    let mut file = File::open(path)?;
    let mut stream = TcpStream::connect(addr)?;
    writeln!(stream, "PUT {name} {}", file.metadata()?.len())?;
    io::copy(&mut file, &mut stream)?;
    println!("uploaded {name}: {} bytes", answer(&mut BufReader::new(stream))?);
    Ok(())
}

fn get(addr: &str, name: &str) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    writeln!(stream, "GET {}", checked(name)?)?;
    let mut reader = BufReader::new(stream);
    let size = answer(&mut reader)?;
    let copied = io::copy(&mut reader.take(size), &mut File::create(name)?)?;
    println!("downloaded {name}: {copied} of {size} bytes");
    Ok(())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words[..] {
        ["server", addr, dir] => {
            let dir = PathBuf::from(dir);
            // A transfer holds its connection's thread: a pool of workers.
            let server = TcpServer::builder()
                .strategy(ThreadPool::new(2))
                .bind(addr, move |req: &mut StreamRequest| serve(req, &dir))?;
            println!("listening {}", server.server_address());
            server.handle().shutdown_on_signal()?;
            server.serve_forever()
        }
        ["put", addr, file] => put(addr, Path::new(file)),
        ["get", addr, name] => get(addr, name),
        _ => {
            eprintln!("usage: file_transfer server ADDR DIR | put ADDR FILE | get ADDR NAME");
            std::process::exit(2);
        }
    }
}
