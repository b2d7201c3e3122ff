//! Echo through in-process servers, one per strategy (`Synchronous`, `Threading`,
//! `ThreadPool` and `Event` with their defaults), bound to 127.0.0.1:0 with the bundled
//! `servers::Echo` handler and `TCP_NODELAY`:
//!
//! * `echo_rtt_64B/{strategy}`: one connection, write 64 bytes, read them
//!   back — the round trip of a single client (requests/s);
//! * `connect_per_request_64B/{strategy}`: connect, write 64 bytes,
//!   half-close, read the echo and the end of stream, close (connections/s).
//!
//! `cargo bench --bench echo` (well under a minute). For many concurrent
//! clients and other servers see `benches/compare.sh`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use socketserver::servers::Echo;
use socketserver::{AnyStrategy, Event, ServerHandle, TcpServer, ThreadPool, Threading};

const SIZE: usize = 64;

struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn start(strategy: AnyStrategy) -> Running {
        let server = TcpServer::builder().strategy(strategy).nodelay(true).bind("127.0.0.1:0", Echo).expect("bind");
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

fn strategies() -> [(&'static str, AnyStrategy); 4] {
    [
        ("sync", socketserver::Synchronous.into()),
        ("threading", Threading::new().into()),
        ("pool", ThreadPool::default().into()),
        ("event", Event::new().into()),
    ]
}

fn echo_rtt(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_rtt_64B");
    group.throughput(Throughput::Elements(1));
    let out = [b'x'; SIZE];
    for (name, strategy) in strategies() {
        let server = Running::start(strategy);
        let mut conn = TcpStream::connect(server.addr).expect("connect");
        conn.set_nodelay(true).expect("nodelay");
        let mut back = [0u8; SIZE];
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                conn.write_all(&out).expect("write");
                conn.read_exact(&mut back).expect("read");
            });
        });
        drop(conn);
        drop(server);
    }
    group.finish();
}

fn connect_per_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("connect_per_request_64B");
    group.throughput(Throughput::Elements(1));
    let out = [b'x'; SIZE];
    for (name, strategy) in strategies() {
        let server = Running::start(strategy);
        let mut back = Vec::with_capacity(SIZE);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut conn = TcpStream::connect(server.addr).expect("connect");
                conn.set_nodelay(true).expect("nodelay");
                conn.write_all(&out).expect("write");
                conn.shutdown(Shutdown::Write).expect("half-close");
                back.clear();
                conn.read_to_end(&mut back).expect("read");
                assert_eq!(back.len(), SIZE);
            });
        });
        drop(server);
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = echo_rtt, connect_per_request
}
criterion_main!(benches);
