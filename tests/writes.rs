//! A handler's writes go out whole and never hang: pieces written with
//! `write!` leave as one segment, and what is buffered is sent before the
//! server waits for the peer, when the handler returns and when its error
//! hook answers — under every strategy.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socketserver::{AnyStrategy, Event, Forking, StreamRequest, Synchronous, TcpServer, ThreadPool, Threading};
use util::*;

fn strategies() -> Vec<(&'static str, AnyStrategy)> {
    vec![
        ("sync", Synchronous.into()),
        ("threading", Threading::new().into()),
        ("pool", ThreadPool::new(2).into()),
        ("forking", Forking::new().into()),
        ("event", Event::new().into()),
    ]
}

/// The README's first handler, as written.
fn readme_handler(req: &mut StreamRequest) -> io::Result<()> {
    let peer = req.peer_addr().to_string();
    while let Some(line) = req.next_line()? {
        writeln!(req, "{} bytes from {peer}", line.len())?;
    }
    Ok(())
}

/// Data segments this socket has received (Linux `TCP_INFO`).
fn data_segments_in(s: &TcpStream) -> u32 {
    // SAFETY: an all-zero `tcp_info` is valid; getsockopt writes at most
    // `len` bytes into it and the descriptor is a live TCP socket.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc =
            libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &raw mut len);
        assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
        info.tcpi_data_segs_in
    }
}

fn client(addr: std::net::SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let c = tcp_connect(addr);
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let r = BufReader::new(c.try_clone().unwrap());
    (c, r)
}

fn answer(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap_or_else(|e| panic!("no answer: {e}"));
    line
}

/// `writeln!(req, "{} bytes from {peer}", ...)` is three writes; each answer
/// must still reach the client as one segment, and before the server waits
/// for the next line (the client waits for it before sending that line).
#[test]
fn an_answer_written_in_pieces_leaves_in_one_segment() {
    const ROUNDS: u32 = 20;
    for (name, strategy) in strategies() {
        let server = run(TcpServer::builder().strategy(strategy).bind("127.0.0.1:0", readme_handler).unwrap());
        let (mut c, mut r) = client(server.inet());
        // The handshake carries no data: count from here.
        let before = data_segments_in(&c);
        for i in 0..ROUNDS {
            writeln!(c, "request {i}").unwrap();
            let line = answer(&mut r);
            assert!(
                line.starts_with(&format!("{} bytes from 127.0.0.1:", format!("request {i}").len())),
                "{name}: {line:?}"
            );
        }
        let segments = data_segments_in(&c) - before;
        assert_eq!(segments, ROUNDS, "{name}: {ROUNDS} answers came in {segments} segments");
        drop((c, r));
        server.stop().unwrap();
    }
}

/// With an explicit write buffer far larger than any answer, a handler that
/// never flushes still gets its answer out before it waits for the next
/// request (it hung under Threading and ThreadPool: the buffer went out
/// only when full or after `finish`).
#[test]
fn a_handler_that_never_flushes_does_not_hang() {
    for (name, strategy) in strategies() {
        let server = run(TcpServer::builder()
            .strategy(strategy)
            .write_buffer(1 << 20)
            .bind("127.0.0.1:0", |req: &mut StreamRequest| {
                while req.wait_for_data()? {
                    let Some(line) = req.next_line()? else { break };
                    write!(req, "got ")?;
                    req.write_all(line.as_bytes())?;
                    req.write_all(b"\n")?;
                }
                Ok(())
            })
            .unwrap());
        let (mut c, mut r) = client(server.inet());
        for i in 0..3 {
            writeln!(c, "line {i}").unwrap();
            assert_eq!(answer(&mut r), format!("got line {i}\n"), "{name}");
        }
        drop((c, r));
        server.stop().unwrap();
    }
}

/// An answer longer than the write buffer, written in pieces, arrives whole
/// and in order (the buffer goes out each time it fills).
#[test]
fn an_answer_longer_than_the_buffer_arrives_whole() {
    const PIECES: usize = 100;
    let piece: Vec<u8> = (0..3000).map(|i| b'a' + (i % 26) as u8).collect();
    let expected: Vec<u8> = piece.iter().copied().cycle().take(piece.len() * PIECES).collect();
    for (name, strategy) in strategies() {
        let piece = piece.clone();
        let server = run(TcpServer::builder()
            .strategy(strategy)
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                while let Some(line) = req.next_line()? {
                    for _ in 0..PIECES {
                        req.write_all(&piece)?;
                    }
                    writeln!(req, "{line}")?;
                }
                Ok(())
            })
            .unwrap());
        let (mut c, mut r) = client(server.inet());
        for i in 0..2 {
            writeln!(c, "end {i}").unwrap();
            let mut got = vec![0; expected.len()];
            r.read_exact(&mut got).unwrap();
            assert!(got == expected, "{name}: the long answer came out of order");
            assert_eq!(answer(&mut r), format!("end {i}\n"), "{name}");
        }
        drop((c, r));
        server.stop().unwrap();
    }
}

/// What `handle_error` writes to the failed request reaches the peer before
/// the connection closes. (Not under Forking: the hook runs in the parent,
/// after the child, without the request.)
#[test]
fn what_the_error_hook_answers_is_sent() {
    for (name, strategy) in strategies().into_iter().filter(|(name, _)| *name != "forking") {
        let server = run(TcpServer::builder()
            .strategy(strategy)
            .handle_error(|req, _peer, err| {
                if let Some(req) = req {
                    let _ = writeln!(req, "error: {err}");
                }
            })
            .bind("127.0.0.1:0", |req: &mut StreamRequest| {
                req.next_line()?;
                Err(io::Error::other("no such key"))
            })
            .unwrap());
        let (mut c, mut r) = client(server.inet());
        writeln!(c, "GET x").unwrap();
        let mut all = String::new();
        r.read_to_string(&mut all).unwrap();
        assert_eq!(all, "error: no such key\n", "{name}");
        drop((c, r));
        server.stop().unwrap();
    }
}

/// Under Event, a handler that writes a prompt and then waits for the rest
/// of a line that came in part is not called again from the top: the prompt
/// is written once (a buffered write is as seen as a sent one).
#[test]
fn a_buffered_write_is_never_repeated_by_a_park() {
    let server = run(TcpServer::builder()
        .strategy(Event::new())
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            while req.wait_for_data()? {
                write!(req, "> ")?;
                let Some(line) = req.next_line()? else { break };
                writeln!(req, "{line}")?;
            }
            Ok(())
        })
        .unwrap());
    let (mut c, mut r) = client(server.inet());
    c.write_all(b"hel").unwrap();
    // (Time for the server to take the half line: without it, the test
    // still passes, it just does not look at the park.)
    std::thread::sleep(Duration::from_millis(100));
    c.write_all(b"lo\n").unwrap();
    assert_eq!(answer(&mut r), "> hello\n");
    drop((c, r));
    server.stop().unwrap();
}
