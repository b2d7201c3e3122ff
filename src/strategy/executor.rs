//! A strategy at work: what the server does with its strategy ([`Run`]),
//! the way `serve_forever` runs it on a socket ([`Serve`]), and the
//! [`Executor`] it starts, where each request of kind `R` runs.
#![allow(private_interfaces, private_bounds, reason = "sealed trait: its methods take crate-private types")]

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use super::{AnyStrategy, Event, Forking, Synchronous, ThreadPool, Threading};
use super::forking::Children;
use super::pool::Pool;
use super::threading::Threads;
use crate::request::Request;
use crate::service::Service;
use crate::shutdown::Shared;

/// Does the same with whichever strategy an [`AnyStrategy`] holds.
macro_rules! each {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnyStrategy::Synchronous($s) => $body,
            AnyStrategy::Threading($s) => $body,
            AnyStrategy::ThreadPool($s) => $body,
            AnyStrategy::Forking($s) => $body,
            AnyStrategy::Event($s) => $body,
        }
    };
}

/// A running strategy: its threads, pool or children.
#[derive(Debug)]
pub(crate) enum Executor<R> {
    Synchronous(Arc<Service<R>>),
    Threading(Threads<R>),
    Pool(Pool<R>),
    Forking(Children<R>),
}

/// What a server does with its strategy `S` (the `Server<T, S>` type
/// parameter, stored as it is): check it at bind, start its executor, run
/// `serve_forever` with it. The supertrait that seals
/// [`Strategy`](super::Strategy): a public trait in a private module, which
/// nobody outside can name, implement or call.
pub trait Run: Sized {
    /// Settings that cannot work: a count of 0 where one is needed.
    fn check(&self) -> io::Result<()>;

    /// Starts the executor that runs requests: `handle_request`'s, and
    /// `serve_forever`'s unless the strategy takes its requests itself.
    fn start<R: Request>(&self, service: &Arc<Service<R>>) -> io::Result<Executor<R>>;

    /// Runs `serve_forever` on a socket: through the executor, unless the
    /// strategy says otherwise.
    fn serve<R: Request>(&self, on: &impl Serve<R>) -> io::Result<()> {
        on.with_executor(self)
    }
}

/// The ways `serve_forever` runs a strategy on a server's socket. The loops
/// implement it for each kind of socket and the strategy ([`Run::serve`])
/// calls the one it needs: the strategy decides which way, the socket's
/// kind how.
pub(crate) trait Serve<R: Request> {
    /// Takes requests and hands each to an executor: the one a
    /// `handle_request` kept, or `strategy`'s, started now.
    fn with_executor(&self, strategy: &impl Run) -> io::Result<()>;
    /// A [`ThreadPool`]: through its executor on a listener; on a datagram
    /// socket, workers that receive themselves.
    fn with_pool(&self, pool: &ThreadPool) -> io::Result<()>;
    /// [`Event`]: the event loop on a listener; on a datagram socket, the
    /// pool's receivers.
    fn with_event(&self, event: &Event) -> io::Result<()>;
}

impl Run for Synchronous {
    fn check(&self) -> io::Result<()> {
        Ok(())
    }
    fn start<R: Request>(&self, service: &Arc<Service<R>>) -> io::Result<Executor<R>> {
        Ok(Executor::Synchronous(Arc::clone(service)))
    }
}

impl Run for Threading {
    fn check(&self) -> io::Result<()> {
        match self.max_threads {
            Some(0) => Err(invalid("Threading::max_threads(0): at least one request thread is needed")),
            _ => Ok(()),
        }
    }
    fn start<R: Request>(&self, service: &Arc<Service<R>>) -> io::Result<Executor<R>> {
        Ok(Executor::Threading(Threads::new(self, service)))
    }
}

impl Run for ThreadPool {
    fn check(&self) -> io::Result<()> {
        if self.max == 0 {
            return Err(invalid("ThreadPool::max_workers(0): a pool needs at least one worker"));
        }
        if self.min == 0 {
            return Err(invalid("ThreadPool::new(0) or workers(0): a pool needs at least one worker"));
        }
        Ok(())
    }
    fn start<R: Request>(&self, service: &Arc<Service<R>>) -> io::Result<Executor<R>> {
        Ok(Executor::Pool(Pool::start(self, service)?))
    }
    fn serve<R: Request>(&self, on: &impl Serve<R>) -> io::Result<()> {
        on.with_pool(self)
    }
}

impl Run for Forking {
    fn check(&self) -> io::Result<()> {
        match self.max_children {
            0 => Err(invalid("Forking::max_children(0): at least one child process is needed")),
            _ => Ok(()),
        }
    }
    fn start<R: Request>(&self, service: &Arc<Service<R>>) -> io::Result<Executor<R>> {
        Ok(Executor::Forking(Children::new(self, service)?))
    }
}

impl Run for Event {
    fn check(&self) -> io::Result<()> {
        if self.max_workers == 0 {
            return Err(invalid("Event::max_workers(0): at least one thread is needed"));
        }
        if self.pollers == 0 {
            return Err(invalid("Event::pollers(0): at least one polling thread is needed"));
        }
        Ok(())
    }
    /// `serve_forever` runs the event loop (streams) or its receivers
    /// (datagrams); `handle_request` takes one request and runs it here, as
    /// a synchronous server does.
    fn start<R: Request>(&self, service: &Arc<Service<R>>) -> io::Result<Executor<R>> {
        Ok(Executor::Synchronous(Arc::clone(service)))
    }
    fn serve<R: Request>(&self, on: &impl Serve<R>) -> io::Result<()> {
        on.with_event(self)
    }
}

/// The strategy chosen at run time does what the one it holds does.
impl Run for AnyStrategy {
    fn check(&self) -> io::Result<()> {
        each!(self, s => s.check())
    }
    fn start<R: Request>(&self, service: &Arc<Service<R>>) -> io::Result<Executor<R>> {
        each!(self, s => s.start(service))
    }
    fn serve<R: Request>(&self, on: &impl Serve<R>) -> io::Result<()> {
        each!(self, s => s.serve(on))
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

impl<R: Request> Executor<R> {
    /// Whether another request can be taken now without waiting.
    pub(crate) fn has_capacity(&self) -> bool {
        match self {
            Executor::Synchronous(_) => true,
            Executor::Threading(t) => t.has_capacity(),
            Executor::Pool(p) => p.has_capacity(),
            Executor::Forking(c) => c.has_capacity(),
        }
    }

    /// Runs `req` (inline under `Synchronous`) or hands it over.
    pub(crate) fn dispatch(&self, req: R) {
        match self {
            Executor::Synchronous(service) => {
                service.run(req);
            }
            Executor::Threading(t) => t.dispatch(req),
            Executor::Pool(p) => p.dispatch(req),
            Executor::Forking(c) => c.dispatch(req),
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
    pub(crate) fn finish(self, shared: &Arc<Shared>) -> bool {
        let done = match self {
            Executor::Synchronous(_) => shared.wait_drained(|| shared.stats.active.load(SeqCst) == 0),
            Executor::Threading(t) => t.finish(),
            Executor::Pool(p) => p.finish(),
            Executor::Forking(c) => c.finish(),
        };
        if !done {
            log::warn!(
                "{}: {} thread(s) did not return after the grace period and the connections were closed; leaving them",
                shared.name,
                shared.threads.load(SeqCst)
            );
        }
        done
    }
}

/// Starts a thread through `std::thread::Builder`, so that failure is an
/// error, counting it in `Shared::threads` until it ends.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    name: &str,
    stack_size: usize,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    shared.threads.fetch_add(1, SeqCst);
    let guard_shared = Arc::clone(shared);
    let result = std::thread::Builder::new().name(name.to_string()).stack_size(stack_size).spawn(move || {
        struct Exit(Arc<Shared>);
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
