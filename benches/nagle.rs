//! Nagle's algorithm against a handler's writes: the latency of one answer
//! of 100 B to 100 kB, written in 1,000-byte pieces, with `nodelay` off and
//! on (Threading and Event; one client, closed loop, 200 requests or 4 s a
//! cell). With the writes coalesced, an answer that fits the write buffer
//! leaves in one segment either way; a longer one leaves in several, and
//! with Nagle on the last waits for the peer's delayed ACK (about 40 ms).
//!
//! `cargo bench --bench nagle`

use socketserver::{Event, StreamRequest, TcpServer, Threading};
use std::io::{BufRead, BufReader, Write};
use std::time::Instant;
fn main() {
    for size in [100usize, 9_000, 20_000, 100_000] {
        for nodelay in [false, true] {
            for ev in [false, true] {
                let b = TcpServer::builder().nodelay(nodelay);
                let h = move |req: &mut StreamRequest| {
                    while let Some(_line) = req.next_line()? {
                        let piece = vec![b'x'; 1000];
                        let mut left = size;
                        while left > 0 {
                            let n = left.min(1000);
                            req.write_all(&piece[..n])?;
                            left -= n;
                        }
                        req.write_all(b"\n")?;
                    }
                    Ok(())
                };
                let bg = if ev {
                    b.strategy(Event::new()).bind("127.0.0.1:0", h).unwrap().spawn().unwrap()
                } else {
                    b.strategy(Threading::new()).bind("127.0.0.1:0", h).unwrap().spawn().unwrap()
                };
                let c = std::net::TcpStream::connect(bg.server_address().as_inet().unwrap()).unwrap();
                let mut w = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                let mut lat = Vec::new();
                let mut line = Vec::new();
                let t0 = Instant::now();
                while lat.len() < 200 && t0.elapsed().as_secs() < 4 {
                    let t = Instant::now();
                    w.write_all(b"get\n").unwrap();
                    line.clear();
                    r.read_until(b'\n', &mut line).unwrap();
                    lat.push(t.elapsed().as_micros());
                }
                lat.sort();
                println!(
                    "reply {size:>6} B  nodelay {nodelay:5} {}: n={} p50 {} µs p99 {} µs",
                    if ev { "event" } else { "threading" },
                    lat.len(),
                    lat[lat.len() / 2],
                    lat[lat.len() * 99 / 100]
                );
                drop(w);
                drop(r);
                bg.stop().unwrap();
            }
        }
    }
}
