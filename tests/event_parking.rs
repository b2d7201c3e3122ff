//! Under the event strategy a connection that waits costs no thread in the
//! middle of a request too: a line or a frame in pieces, a PROXY header in
//! pieces, an answer the peer does not take. Each test holds more such
//! connections than the event loop may have threads, and checks that an
//! honest client is served meanwhile and that the slow ones are served
//! whole (or timed out as their timeouts say) once their bytes come.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::num::NonZeroUsize;
use std::time::Duration;

use socketserver::proxy::ProxyProtocol;
use socketserver::servers::{Echo, Strftime};
use socketserver::{Event, StreamRequest, TcpServer};
use util::*;

/// Thread counts are the process's: one test at a time counts them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// More connections than the event loop's thread bound: if each held a
/// thread, the bound would be broken.
const SLOW: usize = 64;

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

/// The names of this process's threads, for a failure's message.
fn thread_names() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names.join(", ")
}

/// The threads the event loop may add: pollers (a CPU each), a monitor,
/// and a few a busy machine may start for a handler that looked blocked.
fn thread_bound() -> usize {
    2 * std::thread::available_parallelism().map_or(1, NonZeroUsize::get) + 4
}

fn read_line(c: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match c.read(&mut byte)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ if byte[0] == b'\n' => return Ok(String::from_utf8(line).unwrap()),
            _ => line.push(byte[0]),
        }
    }
}

fn year() -> String {
    socketserver::servers::render_time(b"%Y").unwrap()
}

/// 64 clients each send half a time request and stop: no thread each, an
/// honest client is answered meanwhile, and each half-request, completed,
/// gets its whole answer (its first half kept across the parks).
#[test]
fn half_lines_park_with_no_thread_and_are_answered_whole() {
    let _one = ONE_AT_A_TIME.lock();
    let before = threads();
    let running = run(TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", Strftime::new()).unwrap());
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| tcp_connect(running.inet())).collect();
    for c in &mut slow {
        c.write_all(b"year %").unwrap();
    }
    eventually("the half lines to park", || running.handle.stats().parked as usize == SLOW);
    let added = threads() - before;
    assert!(added <= thread_bound(), "{added} threads for {SLOW} half lines: {}", thread_names());
    let mut honest = tcp_connect(running.inet());
    honest.write_all(b"%Y\n").unwrap();
    assert_eq!(read_line(&mut honest).unwrap(), year());
    for c in &mut slow {
        c.write_all(b"Y\n").unwrap();
    }
    for c in &mut slow {
        assert_eq!(read_line(c).unwrap(), format!("year {}", year()));
    }
    assert_eq!(running.handle.stats().handler_errors, 0);
}

/// The request timeout bounds a slow request as a whole: a byte every
/// 20 ms (each resuming the parked connection, which reads its request
/// again from the top) does not restart it, and the client is told.
#[test]
fn the_request_timeout_bounds_a_request_that_trickles_in() {
    let _one = ONE_AT_A_TIME.lock();
    let handler = Strftime::new().request_timeout(Some(Duration::from_millis(300)));
    let running = run(TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", handler).unwrap());
    let mut c = tcp_connect(running.inet());
    let mut reader = c.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(read_line(&mut reader)));
    // At most 10 s of trickle (500 bytes); the answer must come long before.
    let answer = (0..500).find_map(|_| {
        if c.write_all(b"x").is_err() {
            return Some(rx.recv_timeout(TIMEOUT).unwrap());
        }
        rx.recv_timeout(Duration::from_millis(20)).ok()
    });
    let answer = answer.expect("the request was never timed out: each byte restarted its timeout").unwrap();
    assert!(answer.contains("not complete in time"), "{answer}");
}

/// Length-prefixed frames looked at with `fill_at_least` after
/// `wait_for_data`: a frame in pieces (half its length, then half its body)
/// parks the connection (no thread), and is read whole.
#[test]
fn a_frame_in_pieces_parks_and_is_read_whole() {
    let _one = ONE_AT_A_TIME.lock();
    fn frames(req: &mut StreamRequest) -> io::Result<()> {
        while req.wait_for_data()? {
            let head = req.fill_at_least(4)?;
            if head.len() < 4 {
                return Ok(());
            }
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let frame = req.fill_at_least(4 + len)?;
            if frame.len() < 4 + len {
                return Ok(());
            }
            let answer = frame[..4 + len].to_vec();
            req.consume(4 + len);
            req.write_all(&answer)?;
        }
        Ok(())
    }
    let before = threads();
    let running = run(TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", frames).unwrap());
    let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| tcp_connect(running.inet())).collect();
    for c in &mut slow {
        c.write_all(&[0, 0]).unwrap(); // half a length
    }
    eventually("the half lengths to park", || running.handle.stats().parked as usize == SLOW);
    let parks = running.handle.stats();
    for c in &mut slow {
        c.write_all(&[(body.len() >> 8) as u8, body.len() as u8]).unwrap();
        c.write_all(&body[..500]).unwrap(); // half a body
    }
    // Each resumes (and parks again) for what came.
    eventually("the half bodies to park", || {
        let s = running.handle.stats();
        s.parked as usize == SLOW && s.workers_busy == 0 && s.accepted == parks.accepted
    });
    let added = threads() - before;
    assert!(added <= thread_bound(), "{added} threads for {SLOW} half frames: {}", thread_names());
    for c in &mut slow {
        c.write_all(&body[500..]).unwrap();
        let mut back = vec![0u8; 4 + body.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back[4..], &body[..]);
    }
    assert_eq!(running.handle.stats().handler_errors, 0);
}

/// A fixed-size record read with one `read_exact` after `wait_for_data`:
/// it consumes nothing until the record is whole, so its pieces park.
#[test]
fn a_record_read_with_read_exact_parks_in_pieces() {
    let _one = ONE_AT_A_TIME.lock();
    fn records(req: &mut StreamRequest) -> io::Result<()> {
        while req.wait_for_data()? {
            let mut record = [0u8; 16];
            req.read_exact(&mut record)?;
            record.reverse();
            req.write_all(&record)?;
        }
        Ok(())
    }
    let before = threads();
    let running = run(TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", records).unwrap());
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| tcp_connect(running.inet())).collect();
    for c in &mut slow {
        c.write_all(b"0123456").unwrap();
    }
    eventually("the half records to park", || running.handle.stats().parked as usize == SLOW);
    let added = threads() - before;
    assert!(added <= thread_bound(), "{added} threads for {SLOW} half records: {}", thread_names());
    for c in &mut slow {
        c.write_all(b"789abcdef").unwrap();
        let mut back = [0u8; 16];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"fedcba9876543210");
    }
}

/// Trusted proxies that send half a PROXY header: no thread each, an honest
/// client is served, and the halves fail at the header timeout (counted).
#[test]
fn half_proxy_headers_park_until_their_timeout() {
    let _one = ONE_AT_A_TIME.lock();
    let trusted = ProxyProtocol::trusting(|p| p.as_inet().is_some_and(|a| a.ip().is_loopback()))
        .header_timeout(Duration::from_millis(500));
    let before = threads();
    let server = TcpServer::builder().strategy(Event::new()).proxy_protocol(trusted).bind("127.0.0.1:0", Echo);
    let running = run(server.unwrap());
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| tcp_connect(running.inet())).collect();
    for c in &mut slow {
        c.write_all(b"PROXY TCP4 192.0.2.1 ").unwrap();
    }
    eventually("the half headers to be taken", || running.handle.stats().accepted as usize >= SLOW);
    let added = threads() - before;
    assert!(added <= thread_bound(), "{added} threads for {SLOW} half headers: {}", thread_names());
    let mut honest = tcp_connect(running.inet());
    honest.write_all(b"PROXY TCP4 192.0.2.9 192.0.2.10 5000 80\r\nhello\n").unwrap();
    assert_eq!(read_line(&mut honest).unwrap(), "hello");
    eventually("the half headers to time out", || running.handle.stats().proxy_errors as usize == SLOW);
    for c in &mut slow {
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty(), "nothing is echoed to a connection without a header");
    }
}

/// Echo clients that send and never read: their answers wait in the
/// backlog (then in TCP's flow control), not on threads; an honest client
/// is served meanwhile; and a slow reader gets every byte back in order.
#[test]
fn echo_clients_that_never_read_hold_no_thread() {
    let _one = ONE_AT_A_TIME.lock();
    let before = threads();
    let running = run(TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", Echo).unwrap());
    let chunk = vec![b'x'; 64 * 1024];
    let mut stuck: Vec<TcpStream> = (0..SLOW).map(|_| tcp_connect(running.inet())).collect();
    for c in &mut stuck {
        c.set_nonblocking(true).unwrap();
        // Until the kernel takes no more (both sides' buffers full), at
        // most 16 MiB each.
        for _ in 0..256 {
            if c.write(&chunk).is_err() {
                break;
            }
        }
    }
    let added = threads() - before;
    assert!(added <= thread_bound(), "{added} threads for {SLOW} clients that never read: {}", thread_names());
    let mut honest = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut honest, b"hello"), b"hello");
    // A slow reader gets what it sent, in order, once it reads.
    let mut one = tcp_connect(running.inet());
    let sent: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut w = one.try_clone().unwrap();
        let sent = sent.clone();
        std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(200)); // let the answer pile up first
    let mut back = Vec::new();
    one.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == sent, "{} bytes back of {}", back.len(), sent.len());
    drop(stuck);
}

/// At `max_workers`, with every thread blocked in a handler, newcomers are
/// still accepted and registered (the monitor takes the events nobody can),
/// and their requests are served as soon as a thread is free. Nobody
/// accepted before: the listener's event waited in epoll until a handler
/// ended.
#[test]
fn at_max_workers_newcomers_are_accepted_and_wait_their_turn() {
    let _one = ONE_AT_A_TIME.lock();
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let (blocked_tx, blocked_rx) = crossbeam_channel::unbounded::<()>();
    let handler = move |req: &mut StreamRequest| -> io::Result<()> {
        while req.wait_for_data()? {
            let Some(line) = req.next_line()? else { break };
            if line == "block" {
                blocked_tx.send(()).unwrap();
                // Past the test's own waits (a failing test drops the sender).
                let _ = release_rx.recv_timeout(3 * TIMEOUT);
            }
            req.write_all(format!("{line}\n").as_bytes())?;
        }
        Ok(())
    };
    let event = Event::new().pollers(1).max_workers(2);
    let running = run(TcpServer::builder().strategy(event).bind("127.0.0.1:0", handler).unwrap());
    let mut blockers: Vec<TcpStream> = (0..2).map(|_| tcp_connect(running.inet())).collect();
    for b in &mut blockers {
        b.write_all(b"block\n").unwrap();
        blocked_rx.recv_timeout(TIMEOUT).expect("the handler blocks");
    }
    let accepted = running.handle.stats().accepted;
    let mut newcomers: Vec<TcpStream> = (0..3).map(|_| tcp_connect(running.inet())).collect();
    for n in &mut newcomers {
        n.write_all(b"hello\n").unwrap();
    }
    eventually("the newcomers to be accepted while every thread is blocked", || {
        running.handle.stats().accepted == accepted + 3
    });
    assert_eq!(running.handle.stats().workers_total, 2, "no thread past max_workers");
    release_tx.send(()).unwrap();
    release_tx.send(()).unwrap();
    for n in &mut newcomers {
        assert_eq!(read_line(n).unwrap(), "hello");
    }
    for b in &mut blockers {
        assert_eq!(read_line(b).unwrap(), "block");
    }
}

/// A peer that keeps its connection busy (50,000 pipelined requests that
/// need no answer) does not keep its poller to itself: after a budget of
/// requests in one turn the connection goes to the back of the queue,
/// behind what epoll has, so another client is answered while the first
/// is still being served. (The one poller served every request the busy
/// peer had sent before it looked at epoll again; under load from other
/// processes such a run also looked blocked to the monitor, which started
/// threads for it.)
#[test]
fn a_busy_connection_does_not_keep_its_poller_to_itself() {
    let _one = ONE_AT_A_TIME.lock();
    const N: usize = 50_000;
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let order = std::sync::Arc::clone(&answered);
    let handler = move |req: &mut StreamRequest| -> io::Result<()> {
        while req.wait_for_data()? {
            let Some(line) = req.next_line()? else { break };
            if line != "a" {
                order.lock().unwrap().push(line.clone());
                req.write_all(format!("{line}\n").as_bytes())?;
            }
        }
        Ok(())
    };
    let running = run(TcpServer::builder().strategy(Event::new().pollers(1)).bind("127.0.0.1:0", handler).unwrap());
    let mut other = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut other, b"b\n"), b"b\n");
    let mut busy = tcp_connect(running.inet());
    let mut requests = b"start\n".to_vec();
    requests.extend(b"a\n".repeat(N));
    requests.extend(b"done\n");
    busy.write_all(&requests).unwrap();
    // The poller is in the busy peer's requests now.
    assert_eq!(read_line(&mut busy).unwrap(), "start");
    other.write_all(b"c\n").unwrap();
    assert_eq!(read_line(&mut other).unwrap(), "c");
    assert_eq!(read_line(&mut busy).unwrap(), "done");
    let order = answered.lock().unwrap().clone();
    assert_eq!(order, ["b", "start", "c", "done"], "the other client waited for all {N} of the busy peer's requests");
}
