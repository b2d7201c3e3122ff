//! Dispatch: how long from a client's `connect` until its handler runs and
//! its first byte is back, through the public API only, for each strategy
//! that hands a connection to another thread, against a hand-written
//! `std::thread::spawn` per connection:
//!
//! * `dispatch/threading`: a thread started per connection (Python's
//!   ThreadingMixIn);
//! * `dispatch/pool_queue0`: a pool of 2 workers, queue 0 — the connection is
//!   handed only to an idle worker (a rendezvous);
//! * `dispatch/pool`: the default pool (a bounded crossbeam queue);
//! * `dispatch/event`: the event strategy (the polling thread that learns of
//!   the connection runs its handler: no hand-off);
//! * `dispatch/std_spawn`: `TcpListener::accept` and `thread::spawn`.
//!
//! Each iteration is one connection: connect, read the handler's one byte,
//! close. The TCP handshake is in every figure; the differences between the
//! contenders are the hand-off. `cargo bench --bench dispatch` (under a
//! minute); `-- --quick` for a rougher pass.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use socketserver::{AnyStrategy, Event, ServerHandle, StreamRequest, TcpServer, ThreadPool, Threading};

struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn start(strategy: AnyStrategy) -> Running {
        let server = TcpServer::builder()
            .strategy(strategy)
            .nodelay(true)
            .bind("127.0.0.1:0", |req: &mut StreamRequest| req.write_all(b"!"))
            .expect("bind");
        let addr = server.server_address().as_inet().expect("an IP server");
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.serve_forever());
        Running { addr, handle, thread: Some(thread) }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown_with_grace(Duration::ZERO);
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("serve_forever");
        }
    }
}

/// The hand-written contender: accept, spawn, write one byte. It runs until
/// the process ends (the bench is its only user).
fn std_spawn() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let _ = (&stream).write_all(b"!");
            });
        }
    });
    addr
}

fn one_connection(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).expect("connect");
    let mut byte = [0u8; 1];
    c.read_exact(&mut byte).expect("the handler's byte");
    start.elapsed()
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    let two = 2;
    let contenders: [(&str, AnyStrategy); 4] = [
        ("threading", Threading::new().into()),
        ("pool_queue0", ThreadPool::new(two).queue(0).into()),
        ("pool", ThreadPool::default().into()),
        ("event", Event::new().into()),
    ];
    for (name, strategy) in contenders {
        let server = Running::start(strategy);
        group.bench_function(name, |b| b.iter_custom(|n| (0..n).map(|_| one_connection(server.addr)).sum()));
    }
    let addr = std_spawn();
    group.bench_function("std_spawn", |b| b.iter_custom(|n| (0..n).map(|_| one_connection(addr)).sum()));
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
