//! A strategy at work: where each request of kind `R` runs.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use super::AnyStrategy;
use super::forking::Children;
use super::pool::Pool;
use super::threading::Threads;
use crate::request::Request;
use crate::service::Service;
use crate::shutdown::Shared;

/// A running strategy.
#[derive(Debug)]
pub(crate) enum Executor<R> {
    Synchronous(Arc<Service<R>>),
    Threading(Threads<R>),
    Pool(Pool<R>),
    Forking(Children<R>),
}

impl<R: Request> Executor<R> {
    pub(crate) fn start(strategy: &AnyStrategy, service: &Arc<Service<R>>) -> io::Result<Executor<R>> {
        Ok(match strategy {
            AnyStrategy::Synchronous(_) => Executor::Synchronous(Arc::clone(service)),
            AnyStrategy::Threading(t) => Executor::Threading(Threads::new(t, service)),
            AnyStrategy::ThreadPool(p) => Executor::Pool(Pool::start(p, service)?),
            AnyStrategy::Forking(f) => Executor::Forking(Children::new(f, service)?),
            // `serve_forever` runs the event loop (streams) or its receivers
            // (datagrams); `handle_request` takes one request and runs it
            // here, as a synchronous server does.
            AnyStrategy::Event(_) => Executor::Synchronous(Arc::clone(service)),
        })
    }

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
