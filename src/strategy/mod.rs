//! Concurrency strategies: where a request runs. Chosen independently of the
//! socket kind, as Python's mix-ins are.

mod forking;
mod pool;
mod threading;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::service::{Job, Service};

pub(crate) use pool::{Pool, Runner};

/// The default stack of a worker or request thread: enough for ordinary
/// handlers, small enough that thousands of idle connections stay cheap.
/// Only the pages a thread touches count towards RSS.
pub const DEFAULT_STACK_SIZE: usize = 512 * 1024;

mod sealed {
    pub trait Sealed {
        fn to_any(&self) -> super::AnyStrategy;
    }
}

/// A concurrency strategy: [`Sync`], [`Threading`], [`ThreadPool`],
/// [`Forking`], or [`AnyStrategy`] to choose one at run time.
///
/// The trait is sealed: the four strategies are the ones the server knows
/// how to drive.
pub trait Strategy: sealed::Sealed + Clone + Default + Send + std::marker::Sync + fmt::Debug + 'static {}

/// One request at a time, in the thread that called `serve_forever`
/// (Python's plain `TCPServer`/`UDPServer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sync;

/// A new thread per request (Python's `ThreadingMixIn`), optionally capped:
/// at the cap the server stops accepting until a thread finishes. Finished
/// threads are joined as the server goes, never kept until close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Threading {
    pub(crate) max_threads: Option<usize>,
    pub(crate) stack_size: usize,
}

impl Default for Threading {
    fn default() -> Self {
        Threading { max_threads: None, stack_size: DEFAULT_STACK_SIZE }
    }
}

impl Threading {
    /// A thread per request, no cap.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` request threads at once; at the cap the server stops
    /// accepting (the kernel's backlog holds newcomers) until one finishes.
    pub fn max_threads(mut self, n: NonZeroUsize) -> Self {
        self.max_threads = Some(n.get());
        self
    }

    /// The stack size of each request thread, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }
}

/// What a [`ThreadPool`] does with a request when every worker is busy, no
/// more may be started and the queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Stop accepting until a worker takes a queued request; the kernel's
    /// listen backlog absorbs the burst and nothing is dropped.
    #[default]
    Block,
    /// Accept the newcomer and close it at once, counted in `Stats::rejected`.
    Reject,
}

/// Worker threads fed through a bounded `crossbeam_channel` (Python has no
/// pool).
///
/// The pool starts `workers` threads and grows on demand, when a request
/// arrives and no worker is idle, up to `max_workers`; workers above the
/// minimum retire after `keep_alive` without work. Long-lived connections
/// therefore do not starve the queue, while threads stay bounded. When all
/// `max_workers` are busy, requests wait in a queue of `queue` places; when
/// that is full too, [`Overflow`] decides.
///
/// For datagram servers, `workers` threads (at most `max_connections`)
/// receive on the socket directly and each handles its own datagram — no
/// hand-off, no copy per datagram; `max_workers`, the queue and the
/// overflow policy do not apply there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadPool {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) queue: usize,
    pub(crate) overflow: Overflow,
    pub(crate) keep_alive: Duration,
    pub(crate) stack_size: usize,
}

impl Default for ThreadPool {
    /// As many workers as CPUs (at least 2), growing to 256, a queue of 256,
    /// `Overflow::Block`, idle workers retiring after 10 s.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, NonZeroUsize::get).max(2);
        ThreadPool {
            min: cpus,
            max: 256.max(cpus),
            queue: 256,
            overflow: Overflow::Block,
            keep_alive: Duration::from_secs(10),
            stack_size: DEFAULT_STACK_SIZE,
        }
    }
}

impl ThreadPool {
    /// A pool of exactly `workers` threads (raise the ceiling with
    /// [`max_workers`](Self::max_workers)); other settings as `default()`.
    pub fn new(workers: NonZeroUsize) -> Self {
        ThreadPool { min: workers.get(), max: workers.get(), ..Self::default() }
    }

    /// The number of workers kept even when idle (started with the server).
    /// Raises `max_workers` to match if needed.
    pub fn workers(mut self, n: NonZeroUsize) -> Self {
        self.min = n.get();
        self.max = self.max.max(self.min);
        self
    }

    /// The most workers the pool grows to. Lowers `workers` to match if needed.
    pub fn max_workers(mut self, n: NonZeroUsize) -> Self {
        self.max = n.get();
        self.min = self.min.min(self.max);
        self
    }

    /// Places in the queue in front of the workers (0: hand over only to an
    /// idle worker).
    pub fn queue(mut self, capacity: usize) -> Self {
        self.queue = capacity;
        self
    }

    /// What to do when workers and queue are all taken.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// How long a worker above the minimum waits for work before it retires.
    pub fn keep_alive(mut self, idle: Duration) -> Self {
        self.keep_alive = idle;
        self
    }

    /// The stack size of each worker, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }
}

/// A new process per request (Python's `ForkingMixIn`), at most
/// `max_children` at once (40 by default, as in Python); at the limit the
/// server stops accepting until a child exits. Each child is waited for by
/// its pid, so children the program started elsewhere are never reaped by
/// the server. Children still running when the grace period of a shutdown
/// ends are killed.
///
/// The child runs the handler and exits without returning to the server
/// loop. As with any `fork` in a threaded program, a handler in the child
/// should not rely on locks other threads of the parent may have held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forking {
    pub(crate) max_children: usize,
}

impl Default for Forking {
    fn default() -> Self {
        Forking { max_children: 40 }
    }
}

impl Forking {
    /// A process per request, at most 40 at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` children at once.
    pub fn max_children(mut self, n: NonZeroUsize) -> Self {
        self.max_children = n.get();
        self
    }
}

/// A strategy chosen at run time, e.g. from a command-line flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyStrategy {
    /// See [`Sync`].
    Sync(Sync),
    /// See [`Threading`].
    Threading(Threading),
    /// See [`ThreadPool`].
    ThreadPool(ThreadPool),
    /// See [`Forking`].
    Forking(Forking),
}

impl Default for AnyStrategy {
    fn default() -> Self {
        AnyStrategy::Sync(Sync)
    }
}

impl fmt::Display for AnyStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyStrategy::Sync(_) => f.write_str("sync"),
            AnyStrategy::Threading(_) => f.write_str("threading"),
            AnyStrategy::ThreadPool(p) => write!(f, "pool({}-{})", p.min, p.max),
            AnyStrategy::Forking(_) => f.write_str("forking"),
        }
    }
}

macro_rules! strategy {
    ($($t:ident),*) => {$(
        impl sealed::Sealed for $t {
            fn to_any(&self) -> AnyStrategy {
                AnyStrategy::$t(self.clone())
            }
        }
        impl Strategy for $t {}
        impl From<$t> for AnyStrategy {
            fn from(s: $t) -> AnyStrategy {
                AnyStrategy::$t(s)
            }
        }
    )*};
}
strategy!(Sync, Threading, ThreadPool, Forking);

impl sealed::Sealed for AnyStrategy {
    fn to_any(&self) -> AnyStrategy {
        self.clone()
    }
}
impl Strategy for AnyStrategy {}

pub(crate) fn to_any<S: Strategy>(s: &S) -> AnyStrategy {
    sealed::Sealed::to_any(s)
}

/// A running strategy.
#[derive(Debug)]
pub(crate) enum Executor {
    Sync(Arc<Service>),
    Threading(threading::Threads),
    Pool(Pool),
    Forking(forking::Children),
}

impl Executor {
    pub(crate) fn start(strategy: &AnyStrategy, service: &Arc<Service>) -> std::io::Result<Executor> {
        Ok(match strategy {
            AnyStrategy::Sync(_) => Executor::Sync(Arc::clone(service)),
            AnyStrategy::Threading(t) => Executor::Threading(threading::Threads::new(t, service)),
            AnyStrategy::ThreadPool(p) => Executor::Pool(Pool::start(p, service)?),
            AnyStrategy::Forking(f) => Executor::Forking(forking::Children::new(f, service)),
        })
    }

    /// Whether another request can be taken now without waiting.
    pub(crate) fn has_capacity(&self) -> bool {
        match self {
            Executor::Sync(_) => true,
            Executor::Threading(t) => t.has_capacity(),
            Executor::Pool(p) => p.has_capacity(),
            Executor::Forking(c) => c.has_capacity(),
        }
    }

    /// Runs `job` (inline under `Sync`) or hands it over.
    pub(crate) fn dispatch(&self, job: Job) {
        match self {
            Executor::Sync(service) => {
                service.run(job);
            }
            Executor::Threading(t) => t.dispatch(job),
            Executor::Pool(p) => p.dispatch(job),
            Executor::Forking(c) => c.dispatch(job),
        }
    }

    /// Joins request threads that have finished.
    pub(crate) fn reap(&self) {
        if let Executor::Threading(t) = self {
            t.reap();
        }
    }

    /// Lets everything in flight finish (forcing it at the grace deadline);
    /// returns whether every thread and child ended.
    pub(crate) fn finish(self, service: &Arc<Service>) -> bool {
        let shared = &service.shared;
        let done = match self {
            Executor::Sync(_) => {
                shared.wait_drained(|| shared.stats.active.load(std::sync::atomic::Ordering::SeqCst) == 0)
            }
            Executor::Threading(t) => t.finish(),
            Executor::Pool(p) => p.finish(),
            Executor::Forking(c) => c.finish(),
        };
        if !done {
            log::warn!(
                "{}: {} thread(s) did not return after the grace period and the connections were closed; leaving them",
                shared.name,
                shared.threads.load(std::sync::atomic::Ordering::SeqCst)
            );
        }
        done
    }
}

/// Starts a thread through `std::thread::Builder`, so that failure is an
/// error, counting it in `Shared::threads` until it ends.
pub(crate) fn spawn(
    shared: &Arc<crate::shutdown::Shared>,
    name: &str,
    stack_size: usize,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering::SeqCst;
    shared.threads.fetch_add(1, SeqCst);
    let guard_shared = Arc::clone(shared);
    let result = std::thread::Builder::new().name(name.to_string()).stack_size(stack_size).spawn(move || {
        struct Exit(Arc<crate::shutdown::Shared>);
        impl Drop for Exit {
            fn drop(&mut self) {
                self.0.thread_exited();
            }
        }
        let _exit = Exit(guard_shared);
        f();
    });
    if result.is_err() {
        shared.thread_exited();
    }
    result
}
