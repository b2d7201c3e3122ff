//! What a handler is given and the order its methods run in.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use socketserver::{Address, DatagramRequest, RequestHandler, StreamRequest, TcpServer, ThreadingTcpServer, UdpServer};
use util::*;

/// Records the phases it goes through; fails where it is told to.
struct Phases {
    log: Arc<Mutex<Vec<&'static str>>>,
    fail_setup: bool,
    fail_handle: bool,
    panic_handle: bool,
}

impl RequestHandler<StreamRequest> for Phases {
    fn setup(&self, _req: &mut StreamRequest) -> io::Result<()> {
        self.log.lock().unwrap().push("setup");
        if self.fail_setup { Err(io::Error::other("setup failed")) } else { Ok(()) }
    }
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        self.log.lock().unwrap().push("handle");
        req.write_all(b"hi\n")?;
        if self.panic_handle {
            panic!("handle panicked on purpose");
        }
        if self.fail_handle { Err(io::Error::other("handle failed")) } else { Ok(()) }
    }
    fn finish(&self, _req: &mut StreamRequest) -> io::Result<()> {
        self.log.lock().unwrap().push("finish");
        Ok(())
    }
}

fn phases_for(fail_setup: bool, fail_handle: bool, panic_handle: bool) -> (Vec<&'static str>, Vec<String>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let errs = Arc::clone(&errors);
    let server = TcpServer::builder()
        .handle_error(move |_, _peer, e| errs.lock().unwrap().push(e.to_string()))
        .bind("127.0.0.1:0", Phases { log: Arc::clone(&log), fail_setup, fail_handle, panic_handle })
        .unwrap();
    let mut client = tcp_connect(server.server_address().as_inet().unwrap());
    server.handle_request().unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    let phases = log.lock().unwrap().clone();
    let errors = errors.lock().unwrap().clone();
    (phases, errors)
}

#[test]
fn setup_handle_finish_run_in_order() {
    let (phases, errors) = phases_for(false, false, false);
    assert_eq!(phases, ["setup", "handle", "finish"]);
    assert!(errors.is_empty());
}

#[test]
fn finish_runs_when_handle_fails_or_panics() {
    let (phases, errors) = phases_for(false, true, false);
    assert_eq!(phases, ["setup", "handle", "finish"]);
    assert_eq!(errors, ["handle failed"]);

    let (phases, errors) = phases_for(false, false, true);
    assert_eq!(phases, ["setup", "handle", "finish"]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("handler panicked: handle panicked on purpose"), "{errors:?}");
}

/// `handle` fails and then `finish` panics: neither is lost. Both reach
/// `handle_error`; the request counts once in `handler_errors`, the panic in
/// `panics`.
#[test]
fn a_panic_in_finish_after_a_failed_handle_is_reported_too() {
    struct FailThenPanic;
    impl RequestHandler<StreamRequest> for FailThenPanic {
        fn handle(&self, _req: &mut StreamRequest) -> io::Result<()> {
            Err(io::Error::other("handle failed"))
        }
        fn finish(&self, _req: &mut StreamRequest) -> io::Result<()> {
            panic!("finish panicked on purpose")
        }
    }
    let errors = Arc::new(Mutex::new(Vec::new()));
    let errs = Arc::clone(&errors);
    let server = TcpServer::builder()
        .handle_error(move |_, _peer, e| errs.lock().unwrap().push(e.to_string()))
        .bind("127.0.0.1:0", FailThenPanic)
        .unwrap();
    let mut client = tcp_connect(server.server_address().as_inet().unwrap());
    server.handle_request().unwrap();
    client.read_to_end(&mut Vec::new()).unwrap();
    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0], "handle failed");
    assert!(errors[1].contains("handler panicked: finish panicked on purpose"), "{errors:?}");
    let stats = server.stats();
    assert_eq!((stats.handler_errors, stats.panics, stats.completed), (1, 1, 1), "{stats:?}");
}

#[test]
fn finish_does_not_run_when_setup_fails() {
    let (phases, errors) = phases_for(true, false, false);
    assert_eq!(phases, ["setup"]);
    assert_eq!(errors, ["setup failed"]);
}

#[test]
fn one_handler_value_is_shared_by_all_threads() {
    struct Counter(std::sync::atomic::AtomicUsize);
    impl RequestHandler<StreamRequest> for Counter {
        fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            writeln!(req, "{n}")
        }
    }
    let server = ThreadingTcpServer::bind("127.0.0.1:0", Counter(0.into())).unwrap();
    let running = run(server);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let mut c = tcp_connect(running.inet());
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        seen.push(s.trim().parse::<usize>().unwrap());
    }
    seen.sort();
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    running.stop().unwrap();
}

#[test]
fn stream_request_reads_lines_exact_bytes_and_iterates() {
    let (tx, rx) = mpsc::channel();
    let server = TcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        let mut exact = [0u8; 5];
        req.read_exact(&mut exact)?;
        let rest: Vec<String> = req.lines().collect::<io::Result<_>>()?;
        tx.send((line, exact, rest, req.peer_addr().clone(), req.local_addr()?)).unwrap();
        Ok(())
    })
    .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let mut c = tcp_connect(addr);
    // Written in pieces that do not match the boundaries the handler reads.
    c.write_all(b"first li").unwrap();
    c.write_all(b"ne\n12").unwrap();
    c.write_all(b"345second\r\nthird\nfourth").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    server.handle_request().unwrap();
    let (line, exact, rest, peer, local) = rx.recv().unwrap();
    assert_eq!(line, "first line\n");
    assert_eq!(&exact, b"12345");
    assert_eq!(rest, ["second", "third", "fourth"]);
    assert_eq!(peer, Address::Inet(c.local_addr().unwrap()));
    assert_eq!(local, Address::Inet(addr));
}

/// Port of CPython's SocketWriterTest.test_write: a write returns only when
/// all of it is sent (16 MiB + 1 here, more than any socket buffer), and the
/// first small write reaches the client without a flush.
#[test]
fn writes_are_sent_whole_and_at_once() {
    const BIG: usize = 16 * 1024 * 1024 + 1;
    let (tx, rx) = mpsc::channel();
    let server = TcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
        let sent1 = req.write(b"write data\n")?;
        let mut received = String::new();
        req.read_line(&mut received)?;
        let sent2 = req.write(&vec![0u8; BIG])?;
        tx.send((sent1, received, sent2)).unwrap();
        Ok(())
    })
    .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = io::BufReader::new(tcp_connect(addr));
        let mut first = String::new();
        // Arrives before the client answers: nothing waits for a flush.
        c.read_line(&mut first).unwrap();
        c.get_mut().write_all(b"client response\n").unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        (first, rest.len(), rest.iter().all(|&b| b == 0))
    });
    server.handle_request().unwrap();
    let (sent1, received, sent2) = rx.recv().unwrap();
    let (first, rest_len, zeros) = client.join().unwrap();
    assert_eq!(sent1, 11);
    assert_eq!(first, "write data\n");
    assert_eq!(received, "client response\n");
    assert_eq!(sent2, BIG);
    assert_eq!(rest_len, BIG);
    assert!(zeros);
}

#[test]
fn buffered_writes_are_flushed_after_finish() {
    // The handler writes, then waits: with buffering nothing may reach the
    // client until it is done.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let server = TcpServer::builder()
        .write_buffer(64 * 1024)
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            for i in 0..1000 {
                writeln!(req, "line {i}")?;
            }
            release_rx.lock().unwrap().recv_timeout(TIMEOUT).map_err(io::Error::other)?;
            Ok(())
        })
        .unwrap();
    let mut c = tcp_connect(server.server_address().as_inet().unwrap());
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.handle_request());
        c.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
        let early = c.read(&mut [0u8; 16]);
        assert!(
            matches!(&early, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
            "bytes arrived before the handler was done: {early:?}"
        );
        release_tx.send(()).unwrap();
        serving.join().unwrap().unwrap();
    });
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert_eq!(all.lines().count(), 1000);
    assert_eq!(all.lines().last(), Some("line 999"));
}

#[test]
fn datagram_request_gives_data_peer_and_reply_and_sends_nothing_unasked() {
    // The handler answers only datagrams that say "answer": Python would send
    // an empty datagram for the others; we must send nothing.
    let server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
        if req.data() == b"answer" {
            let reply = format!("to {}", req.peer_addr());
            req.reply(reply.as_bytes())?;
        }
        Ok(())
    })
    .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let running = run(server);
    let c = udp_client();
    c.send_to(b"silence", addr).unwrap();
    c.send_to(b"answer", addr).unwrap();
    let mut buf = [0u8; 100];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!(from, addr);
    // The first datagram back is the answer: no empty reply came before it.
    assert_eq!(&buf[..n], format!("to {}", c.local_addr().unwrap()).as_bytes());
    running.stop().unwrap();
}

/// A length-prefixed frame written straight to the request leaves in one
/// vectored write: header and body arrive together, so Nagle's algorithm
/// and delayed ACKs cannot hold the body back (~40 ms per round trip).
#[test]
fn a_frame_written_to_the_request_arrives_in_one_segment() {
    use socketserver::framing::LengthPrefixed;
    let (tx, rx) = mpsc::channel();
    let server = TcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
        let codec = LengthPrefixed::new(1024);
        let mut frame = Vec::new();
        while codec.read_frame(req, &mut frame)? {
            codec.write_frame(req, b"reply body")?;
        }
        tx.send(()).unwrap();
        Ok(())
    })
    .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let running = run(server);
    let mut c = tcp_connect(addr);
    let codec = LengthPrefixed::new(1024);
    let mut frame = Vec::new();
    for _ in 0..3 {
        let mut request = Vec::new();
        codec.write_frame(&mut request, b"ping").unwrap();
        c.write_all(&request).unwrap();
        // The header and the body come in a single read.
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"\0\0\0\x0areply body", "the frame was split");
        assert!(!codec.read_frame(&mut &buf[n..n], &mut frame).unwrap());
    }
    drop(c);
    rx.recv().unwrap();
    running.stop().unwrap();
}

/// Python's `for line in self.rfile: self.wfile.write(...)`, written with
/// `next_line`: owned lines, so the body writes to the request; `\r\n` and
/// `\n` both end a line, a last line without one is still a line.
#[test]
fn next_line_gives_owned_lines_the_body_can_answer() {
    let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
        while let Some(line) = req.next_line()? {
            writeln!(req, "[{line}]")?;
        }
        Ok(())
    })
    .unwrap();
    let mut c = tcp_connect(server.server_address().as_inet().unwrap());
    c.write_all(b"one\ntwo\r\n\nlast").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    server.handle_request().unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert_eq!(all, "[one]\n[two]\n[]\n[last]\n");
}

#[test]
fn next_line_refuses_lines_too_long_or_not_utf8() {
    for (input, want) in [(vec![b'x'; socketserver::MAX_LINE + 1], "longer than"), (b"\xff\xfe\n".to_vec(), "UTF-8")] {
        let (tx, rx) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            tx.send(req.next_line().map_err(|e| (e.kind(), e.to_string()))).unwrap();
            Ok(())
        })
        .unwrap();
        let mut c = tcp_connect(server.server_address().as_inet().unwrap());
        c.write_all(&input).unwrap();
        c.write_all(b"\n").unwrap();
        server.handle_request().unwrap();
        let (kind, text) = rx.recv_timeout(TIMEOUT).unwrap().unwrap_err();
        assert_eq!(kind, io::ErrorKind::InvalidData);
        assert!(text.contains(want), "{text}");
    }
    // Exactly MAX_LINE bytes is a line.
    let (tx, rx) = mpsc::channel();
    let server = TcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
        tx.send(req.next_line().map(|l| l.map(|l| l.len())).map_err(|e| e.to_string())).unwrap();
        Ok(())
    })
    .unwrap();
    let mut c = tcp_connect(server.server_address().as_inet().unwrap());
    c.write_all(&[b'y'; socketserver::MAX_LINE]).unwrap();
    c.write_all(b"\r\n").unwrap();
    server.handle_request().unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), Ok(Some(socketserver::MAX_LINE)));
}

/// With a write buffer, bytes written through the socket a request hands
/// out — `fill_buf_and_stream`, `socket`, `try_clone` — never overtake bytes
/// still in the buffer.
#[test]
fn writes_through_the_socket_never_overtake_buffered_writes() {
    let server = TcpServer::builder()
        .write_buffer(64 * 1024)
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            req.write_all(b"1")?;
            let (data, mut stream) = req.fill_buf_and_stream()?;
            assert_eq!(data, b"go");
            stream.write_all(b"2")?;
            req.write_all(b"3")?;
            let mut socket = req.socket()?;
            socket.write_all(b"4")?;
            req.write_all(b"5")?;
            req.try_clone()?.write_all(b"6")?;
            req.write_all(b"7")?;
            Ok(())
        })
        .unwrap();
    let mut c = tcp_connect(server.server_address().as_inet().unwrap());
    c.write_all(b"go").unwrap();
    server.handle_request().unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert_eq!(all, "1234567");
}
