//! Concurrency strategies: where a request runs. Chosen independently of the
//! socket kind, as Python's mix-ins are.

mod executor;
mod forking;
mod pool;
mod text;
mod threading;

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

pub(crate) use executor::{Executor, Run, Serve, spawn};
pub use text::ParseStrategyError;

/// The default stack of a worker or request thread: enough for ordinary
/// handlers, small enough that thousands of idle connections stay cheap.
/// Only the pages a thread touches count towards RSS.
pub const DEFAULT_STACK_SIZE: usize = 512 * 1024;

/// A pool's queue, unless set.
const DEFAULT_QUEUE: usize = 256;
/// How long a surplus pool or event thread waits for work, unless set.
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// The most children of a forking server, unless set (Python's 40).
const DEFAULT_MAX_CHILDREN: usize = 40;

/// A concurrency strategy: [`Synchronous`], [`Threading`], [`ThreadPool`],
/// [`Forking`], [`Event`], or [`AnyStrategy`] to choose one at run time.
///
/// The trait is sealed: the five strategies are the ones the server knows
/// how to drive. The server keeps its strategy as its type parameter says
/// (`Server<Tcp, ThreadPool>` holds a `ThreadPool`), starts it and serves
/// with it; an [`AnyStrategy`] does what the strategy it holds does. Each
/// is written as text as [`AnyStrategy`] writes it (`pool(4-64)`).
pub trait Strategy: executor::Run + Clone + Default + Send + Sync + fmt::Debug + fmt::Display + 'static {}

/// One request at a time, in the thread that called `serve_forever`
/// (Python's plain `TCPServer`/`UDPServer`, which its documentation calls
/// synchronous): a client that sends nothing holds up every other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synchronous;

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

    /// At most `n` request threads at once (at least 1: `bind` refuses 0);
    /// at the cap the server stops accepting (the kernel's backlog holds
    /// newcomers) until one finishes.
    pub fn max_threads(mut self, n: usize) -> Self {
        self.max_threads = Some(n);
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
            queue: DEFAULT_QUEUE,
            overflow: Overflow::Block,
            keep_alive: DEFAULT_KEEP_ALIVE,
            stack_size: DEFAULT_STACK_SIZE,
        }
    }
}

impl ThreadPool {
    /// A pool of exactly `workers` threads (raise the ceiling with
    /// [`max_workers`](Self::max_workers)); other settings as `default()`.
    /// At least 1: `bind` refuses a pool of 0 with an `InvalidInput` error.
    ///
    /// ```
    /// let pool = socketserver::ThreadPool::new(4).max_workers(64).queue(128);
    /// ```
    pub fn new(workers: usize) -> Self {
        ThreadPool { min: workers, max: workers, ..Self::default() }
    }

    /// The number of workers kept even when idle (started with the server).
    /// Raises `max_workers` to match if needed.
    pub fn workers(mut self, n: usize) -> Self {
        self.min = n;
        self.max = self.max.max(self.min);
        self
    }

    /// The most workers the pool grows to. Lowers `workers` to match if needed.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max = n;
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

    /// How long a worker above the minimum waits for work before it retires
    /// (`Duration::MAX`: never; zero: as soon as it finds none).
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
/// server stops accepting until a child exits. Each child is reaped by its
/// pid, so children the program started elsewhere are never reaped by the
/// server. Children still running when the grace period of a shutdown ends
/// are killed.
///
/// The parent keeps one reaper thread, however many children run: it
/// watches every child's report pipe in one `epoll` set, and reaps each
/// child as it exits. It starts with the first child and ends with the
/// last, so an idle forking server holds no thread. The errors a child
/// reports (its handler's errors and panics) reach `handle_error`, the log
/// and [`Stats`](crate::Stats) from that thread, one child after another.
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
        Forking { max_children: DEFAULT_MAX_CHILDREN }
    }
}

impl Forking {
    /// A process per request, at most 40 at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` children at once (at least 1: `bind` refuses 0).
    pub fn max_children(mut self, n: usize) -> Self {
        self.max_children = n;
        self
    }
}

/// Connections wait between requests parked in the kernel's readiness set
/// (`epoll`), holding no thread and no read buffer; a few polling threads —
/// one per CPU by default — run the handler of whichever connection is
/// ready, in the thread that learned it (no hand-off per request), then
/// park it again. Apache's event MPM and Jetty's "eat what you kill", for
/// blocking handlers.
///
/// Handlers keep their contract: [`StreamRequest::wait_for_data`](crate::StreamRequest::wait_for_data)
/// is the request boundary. When nothing is buffered or readable there, it
/// returns `false` (and [`at_eof`](crate::StreamRequest::at_eof) says
/// whether that was the peer's end), the handler returns, and `handle` is
/// called again on the same request when bytes arrive — so a handler keeps
/// what must outlive a parked period in the request's
/// [state](crate::StreamRequest::state_mut), not in its locals. `setup`
/// runs once before the first `handle`, `finish` once at the end.
///
/// After `wait_for_data`, until the handler consumes or writes anything, a
/// read that must wait parks the connection too, for a request that comes
/// in pieces: [`next_line`](crate::StreamRequest::next_line),
/// [`read_line`](crate::StreamRequest::read_line),
/// [`read_line_limited`](crate::StreamRequest::read_line_limited),
/// [`fill_at_least`](crate::StreamRequest::fill_at_least) (a frame's
/// header, looked at without consuming) and `read_exact` consume nothing
/// until what they return is whole, so a slow client costs no thread. The
/// read returns a `WouldBlock` error to be returned with `?`; `handle` is
/// called again from the top when more comes, and reads the same bytes
/// again — so do nothing between `wait_for_data` and the first read you
/// could not do twice. The read, idle and request timeouts (a
/// [read deadline](crate::StreamRequest::set_read_deadline) set once per
/// request) bound a parked request as they bound a waiting one. Reads after
/// the handler consumed part of a request wait on the thread, as under any
/// other strategy (with every timeout): a handler that never calls
/// `wait_for_data` runs as under a pool. The `while let Some(line) =
/// req.next_line()?` loop of the other strategies is such a handler — its
/// connection keeps a thread while idle (`Stats::parked` stays 0); written
/// for this strategy it reads:
///
/// ```no_run
/// use socketserver::{Event, StreamRequest, TcpServer};
/// use std::io::Write;
///
/// let server = TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", |req: &mut StreamRequest| {
///     // `false`: parked (called again when bytes come) or closed (`at_eof`).
///     // Return at once either way: anything written here is written again
///     // at every park.
///     while req.wait_for_data()? {
///         let Some(line) = req.next_line()? else { break };
///         writeln!(req, "{}", line.to_uppercase())?;
///     }
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Writes never wait for a slow reader on a polling thread: what the socket
/// will not take waits in the connection's backlog (up to 256 KiB, or the
/// write buffer), sent as the peer takes it while the connection is parked
/// and reads nothing more; past that a write waits on its thread. The close
/// (the backlog, then the lingering read that keeps a reset from destroying
/// the answer) runs on the loop too.
///
/// `pollers` threads wait in epoll at most (one per polling slot; up to four
/// times as many while handlers the library cannot see blocking take every
/// slot, for a second after the last one was found). A handler
/// that blocks (a read after consuming, a lock, a sleep) keeps its thread
/// but loses its slot, with what it had not started, to an idle thread or
/// a new one: at once when it waits in the library's own I/O or inside
/// [`StreamRequest::blocking`](crate::StreamRequest::blocking); otherwise
/// when the monitor finds it blocked (within about 0.1 ms while handlers
/// block, a few ms after a quiet spell); up to `max_workers` threads in
/// all, and at that limit new connections are still accepted and wait
/// their turn. A thread whose handler returns with no slot free parks as
/// idle, and retires after `keep_alive`. The timeouts of parked connections cost no
/// thread and one timer entry each, however many requests they serve. For
/// datagram servers this strategy is the pool's: `pollers` threads receive
/// and handle datagrams themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub(crate) pollers: usize,
    pub(crate) max_workers: usize,
    pub(crate) keep_alive: Duration,
    pub(crate) stack_size: usize,
}

impl Default for Event {
    /// A polling slot per CPU, threads growing to 512 while handlers block
    /// (tokio's cap on its blocking threads: a thread per handler asleep
    /// at once, and the pollers beside them), idle threads retiring after
    /// 10 s.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Event {
            pollers: cpus,
            max_workers: 512.max(cpus),
            keep_alive: DEFAULT_KEEP_ALIVE,
            stack_size: DEFAULT_STACK_SIZE,
        }
    }
}

impl Event {
    /// A polling thread per CPU; other settings as `default()`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The polling slots: threads that wait in epoll, kept even when idle
    /// (at least 1; raises `max_workers` to match).
    pub fn pollers(mut self, n: usize) -> Self {
        self.pollers = n;
        self.max_workers = self.max_workers.max(self.pollers);
        self
    }

    /// The most threads while handlers block (lowers `pollers` to match).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = n;
        self.pollers = self.pollers.min(self.max_workers);
        self
    }

    /// How long an idle thread (one without a slot) waits for one before it
    /// retires
    /// (`Duration::MAX`: never; zero: as soon as it finds none).
    pub fn keep_alive(mut self, idle: Duration) -> Self {
        self.keep_alive = idle;
        self
    }

    /// The stack size of each thread, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// The pool a datagram server runs for this strategy: `pollers`
    /// receivers that handle what they receive.
    pub(crate) fn as_pool(&self) -> ThreadPool {
        ThreadPool {
            min: self.pollers,
            max: self.max_workers.max(self.pollers),
            stack_size: self.stack_size,
            keep_alive: self.keep_alive,
            ..ThreadPool::default()
        }
    }
}

/// A strategy chosen at run time, e.g. from a command-line flag: it is read
/// from text with [`FromStr`](std::str::FromStr) (`"pool(4-64)".parse()`)
/// and written as text with `Display`, each the inverse of the other.
///
/// | text | strategy |
/// |---|---|
/// | `sync` or `synchronous` | [`Synchronous`] |
/// | `threading` | [`Threading::new()`]: a thread per request, no cap |
/// | `threading(N)` | at most N threads at once ([`Threading::max_threads`]) |
/// | `pool` | [`ThreadPool::default()`]: a worker per CPU (at least 2), growing to 256 |
/// | `pool(N)`, `pool(N-M)` | N workers ([`ThreadPool::new`]), or N growing to M |
/// | `forking`, `forking(N)` | [`Forking`]: at most 40 children, or N |
/// | `event` | [`Event::new()`]: a polling slot per CPU, up to 512 threads |
/// | `event(N)`, `event(N-M)` | N polling threads, at most N threads or M |
///
/// The other settings follow the count inside the parentheses, apart by
/// spaces: `queue=N` and `overflow=block` or `reject` (pool), `keep-alive=`
/// a whole number of `s`, `ms`, `us` or `ns` (pool, event), `stack=` bytes
/// or `K`, `M`, `G` (threading, pool, event); e.g. `pool(4-64 queue=128
/// overflow=reject)`, `threading(stack=1M)`. Counts are at least 1.
/// `Display` writes the counts of a pool, forking and event strategy, and
/// every other setting that is not the default: `pool` reads back as
/// `pool(2-256)` on a machine of 2 CPUs. Any other text is a
/// [`ParseStrategyError`] that names it and lists the choices.
///
/// ```
/// use socketserver::{AnyStrategy, ThreadPool};
///
/// let strategy: AnyStrategy = "pool(4-64 queue=128)".parse()?;
/// assert_eq!(strategy, ThreadPool::new(4).max_workers(64).queue(128).into());
/// assert_eq!(strategy.to_string(), "pool(4-64 queue=128)");
/// let bad = "pool(0)".parse::<AnyStrategy>().unwrap_err().to_string();
/// assert!(bad.starts_with(r#""pool(0)" is not a strategy: "#) && bad.contains("event(N-M)"), "{bad}");
/// # Ok::<(), socketserver::ParseStrategyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyStrategy {
    /// See [`Synchronous`].
    Synchronous(Synchronous),
    /// See [`Threading`].
    Threading(Threading),
    /// See [`ThreadPool`].
    ThreadPool(ThreadPool),
    /// See [`Forking`].
    Forking(Forking),
    /// See [`Event`].
    Event(Event),
}

impl Default for AnyStrategy {
    fn default() -> Self {
        AnyStrategy::Synchronous(Synchronous)
    }
}

impl AnyStrategy {
    /// The most threads the strategy runs handlers on at once: 1 for
    /// [`Synchronous`] (the serving thread), the cap of [`Threading`], the
    /// `max_workers` of a [`ThreadPool`] or of [`Event`]; `None` when
    /// nothing bounds them ([`Threading`] without a cap) or handlers run in
    /// processes ([`Forking`]). For checking a strategy read from text
    /// against what the system can start, say.
    ///
    /// ```
    /// let strategy: socketserver::AnyStrategy = "pool(4-64)".parse()?;
    /// assert_eq!(strategy.max_threads(), Some(64));
    /// # Ok::<(), socketserver::ParseStrategyError>(())
    /// ```
    pub fn max_threads(&self) -> Option<usize> {
        match self {
            AnyStrategy::Synchronous(_) => Some(1),
            AnyStrategy::Threading(t) => t.max_threads,
            AnyStrategy::ThreadPool(p) => Some(p.max),
            AnyStrategy::Forking(_) => None,
            AnyStrategy::Event(e) => Some(e.max_workers),
        }
    }

}

macro_rules! strategy {
    ($($t:ident),*) => {$(
        impl Strategy for $t {}
        impl From<$t> for AnyStrategy {
            fn from(s: $t) -> AnyStrategy {
                AnyStrategy::$t(s)
            }
        }
    )*};
}
strategy!(Synchronous, Threading, ThreadPool, Forking, Event);

impl Strategy for AnyStrategy {}
