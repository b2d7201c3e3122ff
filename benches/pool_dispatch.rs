//! Pool dispatch: submit→run latency and jobs/s of the server's thread pool
//! (`socketserver::bench_support::Pool`, the real `strategy::Pool` code)
//! against two hand-rolled pools with the same number of workers:
//!
//! * `mpsc_mutex`: the Rust book's pool — `std::sync::mpsc::sync_channel` and
//!   the receiver behind an `Arc<Mutex<Receiver>>`, locked for each `recv`;
//! * `pl_condvar`: a `parking_lot::Mutex<VecDeque>` with a `not_empty` and a
//!   `not_full` `Condvar`.
//!
//! Capacity means the same for all three: at most `cap` jobs wait in the
//! queue, and with 0 a job is only handed to an idle worker
//! (`crossbeam_channel::bounded(0)` / `sync_channel(0)` rendezvous; for the
//! deque, "fewer queued jobs than workers waiting").
//!
//! Every contender runs the same job: a timestamp (`Option<Instant>`); the
//! worker adds the time since submission to a sum and bumps a counter.
//!
//! * `latency/w{W}/cap{C}`: one job in flight at a time; the measured time is
//!   the sum of submit→start-of-run intervals, as taken by the worker.
//! * `throughput/w{W}/cap{C}`: one producer submits as fast as it can; the
//!   time runs until the last job has run. Reported as jobs/s.
//!
//! `cargo bench --bench pool_dispatch` (about 2 minutes);
//! add `-- --quick` for a rougher, faster pass.

use std::collections::VecDeque;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

type Job = Option<Instant>;

/// What every worker does with a job: note how long it waited, count it.
#[derive(Default)]
struct Probe {
    done: AtomicU64,
    waited_ns: AtomicU64,
}

impl Probe {
    fn run(&self, job: Job) {
        if let Some(submitted) = job {
            self.waited_ns.fetch_add(submitted.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Release);
    }

    /// Spins briefly, then yields, until `n` jobs have run in all.
    fn wait_done(&self, n: u64) {
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < n {
            if spins < 64 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                thread::yield_now();
            }
        }
    }
}

trait Dispatch {
    fn submit(&self, job: Job);
    fn finish(self: Box<Self>);
}

// --- ours ------------------------------------------------------------------

struct Ours(socketserver::bench_support::Pool<Job>);

impl Ours {
    fn start(workers: usize, cap: usize, probe: &Arc<Probe>) -> Ours {
        let probe = Arc::clone(probe);
        let workers = NonZeroUsize::new(workers).expect("at least one worker");
        Ours(socketserver::bench_support::Pool::new(workers, cap, move |job| probe.run(job)).expect("start pool"))
    }
}

impl Dispatch for Ours {
    fn submit(&self, job: Job) {
        self.0.submit(job);
    }
    fn finish(self: Box<Self>) {
        self.0.finish();
    }
}

// --- the Rust book's pool ---------------------------------------------------

struct MpscMutex {
    tx: Option<mpsc::SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl MpscMutex {
    fn start(workers: usize, cap: usize, probe: &Arc<Probe>) -> MpscMutex {
        let (tx, rx) = mpsc::sync_channel::<Job>(cap);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let workers = (0..workers)
            .map(|_| {
                let rx = Arc::clone(&rx);
                let probe = Arc::clone(probe);
                thread::spawn(move || {
                    loop {
                        // The lock is held while waiting in `recv`, released
                        // before the job runs (the book's `let` statement).
                        let message = rx.lock().expect("not poisoned").recv();
                        match message {
                            Ok(job) => probe.run(job),
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        MpscMutex { tx: Some(tx), workers }
    }
}

impl Dispatch for MpscMutex {
    fn submit(&self, job: Job) {
        self.tx.as_ref().expect("open").send(job).expect("workers alive");
    }
    fn finish(mut self: Box<Self>) {
        drop(self.tx.take());
        for w in self.workers.drain(..) {
            w.join().expect("worker");
        }
    }
}

// --- parking_lot Mutex<VecDeque> + Condvar -----------------------------------

struct QueueState {
    jobs: VecDeque<Job>,
    /// Workers blocked in `pop` that no queued job is meant for yet.
    waiting: usize,
    closed: bool,
}

struct Queue {
    state: parking_lot::Mutex<QueueState>,
    not_empty: parking_lot::Condvar,
    not_full: parking_lot::Condvar,
    cap: usize,
}

impl Queue {
    fn has_room(&self, s: &QueueState) -> bool {
        if self.cap == 0 { s.jobs.len() < s.waiting } else { s.jobs.len() < self.cap }
    }

    fn push(&self, job: Job) {
        let mut s = self.state.lock();
        while !self.has_room(&s) {
            self.not_full.wait(&mut s);
        }
        s.jobs.push_back(job);
        drop(s);
        self.not_empty.notify_one();
    }

    fn pop(&self) -> Option<Job> {
        let mut s = self.state.lock();
        loop {
            if let Some(job) = s.jobs.pop_front() {
                drop(s);
                self.not_full.notify_one();
                return Some(job);
            }
            if s.closed {
                return None;
            }
            s.waiting += 1;
            if self.cap == 0 {
                // A taker is available: a producer waiting for one may go.
                self.not_full.notify_one();
            }
            self.not_empty.wait(&mut s);
            s.waiting -= 1;
        }
    }
}

struct PlCondvar {
    queue: Arc<Queue>,
    workers: Vec<JoinHandle<()>>,
}

impl PlCondvar {
    fn start(workers: usize, cap: usize, probe: &Arc<Probe>) -> PlCondvar {
        let queue = Arc::new(Queue {
            state: parking_lot::Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(cap),
                waiting: 0,
                closed: false,
            }),
            not_empty: parking_lot::Condvar::new(),
            not_full: parking_lot::Condvar::new(),
            cap,
        });
        let workers = (0..workers)
            .map(|_| {
                let queue = Arc::clone(&queue);
                let probe = Arc::clone(probe);
                thread::spawn(move || {
                    while let Some(job) = queue.pop() {
                        probe.run(job);
                    }
                })
            })
            .collect();
        PlCondvar { queue, workers }
    }
}

impl Dispatch for PlCondvar {
    fn submit(&self, job: Job) {
        self.queue.push(job);
    }
    fn finish(mut self: Box<Self>) {
        self.queue.state.lock().closed = true;
        self.queue.not_empty.notify_all();
        for w in self.workers.drain(..) {
            w.join().expect("worker");
        }
    }
}

// --- the benchmarks ----------------------------------------------------------

const WORKERS: [usize; 2] = [2, 4];
const CAPACITIES: [usize; 4] = [0, 1, 64, 1024];
type Start = fn(usize, usize, &Arc<Probe>) -> Box<dyn Dispatch>;
const CONTENDERS: [(&str, Start); 3] = [
    ("socketserver", |w, c, p| Box::new(Ours::start(w, c, p))),
    ("mpsc_mutex", |w, c, p| Box::new(MpscMutex::start(w, c, p))),
    ("pl_condvar", |w, c, p| Box::new(PlCondvar::start(w, c, p))),
];

fn latency(c: &mut Criterion) {
    for workers in WORKERS {
        for cap in CAPACITIES {
            let mut group = c.benchmark_group(format!("latency/w{workers}/cap{cap}"));
            for (name, start) in CONTENDERS {
                let probe = Arc::new(Probe::default());
                let pool = start(workers, cap, &probe);
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter_custom(|iters| {
                        let waited_before = probe.waited_ns.load(Ordering::Acquire);
                        let mut done = probe.done.load(Ordering::Acquire);
                        for _ in 0..iters {
                            pool.submit(Some(Instant::now()));
                            done += 1;
                            probe.wait_done(done);
                        }
                        Duration::from_nanos(probe.waited_ns.load(Ordering::Acquire) - waited_before)
                    });
                });
                pool.finish();
            }
            group.finish();
        }
    }
}

fn throughput(c: &mut Criterion) {
    for workers in WORKERS {
        for cap in CAPACITIES {
            let mut group = c.benchmark_group(format!("throughput/w{workers}/cap{cap}"));
            group.throughput(Throughput::Elements(1));
            for (name, start) in CONTENDERS {
                let probe = Arc::new(Probe::default());
                let pool = start(workers, cap, &probe);
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter_custom(|iters| {
                        let target = probe.done.load(Ordering::Acquire) + iters;
                        let started = Instant::now();
                        for _ in 0..iters {
                            pool.submit(black_box(None));
                        }
                        probe.wait_done(target);
                        started.elapsed()
                    });
                });
                pool.finish();
            }
            group.finish();
        }
    }
}

fn config() -> Criterion {
    // 48 benchmarks: keep each short so that the file runs in a few minutes.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = latency, throughput
}
criterion_main!(benches);
