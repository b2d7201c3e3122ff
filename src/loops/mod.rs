//! The loops that take work from a server's socket — the stream accept
//! loop ([`accept`]) and the datagram receive loop ([`receive`]) — over a
//! narrow [`Core`]: the options, the shared state (counters, shutdown,
//! waker) and nothing else of the server. Accept errors are handled by one
//! policy ([`errors`]) wherever they happen.
//!
//! [`Endpoint`] and [`Kind`] are public traits in this private module: a
//! transport names them (`Transport::Request: Kind`), so they are reachable,
//! but nobody outside can name them, implement them or call their methods,
//! whose signatures use the crate's private types on purpose.
#![allow(private_interfaces, reason = "sealed traits: their methods take crate-private types")]

pub(crate) mod accept;
mod admit;
pub(crate) mod errors;
mod event;
pub(crate) mod receive;

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use parking_lot::Mutex;

use self::errors::{AcceptErrors, Next};
use crate::deadline::Deadline;
use crate::handle::ServerHandle;
use crate::net::Address;
use crate::options::Options;
use crate::request::Request;
use crate::service::Service;
use crate::shutdown::Shared;
use crate::strategy::{Executor, Run, Strategy};
use crate::sys;

/// What taking one connection or datagram from the socket came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// A request, run or handed to the strategy.
    Request,
    /// Refused by `verify_request`.
    Refused,
    /// Came, but cannot be served: an oversized datagram, a connection that
    /// could not be set up.
    Dropped,
    /// Nothing of a peer's: a wake-up of the server's own.
    Nothing,
}

/// How many connections or datagrams the loop takes per wake-up before it
/// looks at the shutdown flag and the hooks again.
pub(crate) const BATCH: usize = 64;

/// What the loops need of a server.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) opts: Options,
    pub(crate) shared: Arc<Shared>,
}

impl Core {
    pub(crate) fn handle(&self) -> ServerHandle {
        ServerHandle { shared: Arc::clone(&self.shared) }
    }

    pub(crate) fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether another connection or datagram may be taken now.
    pub(crate) fn can_accept<R: Request>(&self, executor: &Executor<R>) -> bool {
        let active = self.shared.stats.active.load(SeqCst);
        self.opts.max_connections.is_none_or(|max| active < max) && executor.has_capacity()
    }

    fn accept_errors(&self) -> AcceptErrors<'_> {
        AcceptErrors::new(&self.shared.name, &self.shared.stats, self.shared.waker.stop_fd())
    }
}

/// A server's socket with what its kind needs to serve it: the stream
/// listener or the datagram socket. Sealed (a public trait in a private
/// module): the transports name it, nobody else can.
pub trait Endpoint: AsRawFd + std::os::fd::AsFd + fmt::Debug + Send + Sync + 'static {
    /// What a handler of this endpoint is given.
    type Request: Request;

    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<Address>;

    /// Listens, if it is a listener that does not yet (Python's `server_activate`).
    fn activate(&self, _core: &Core) -> io::Result<()> {
        Ok(())
    }

    /// `serve_forever`: serves with `strategy` until a shutdown, then
    /// drains. `kept` holds the executor a `handle_request` may have
    /// started. (The strategy picks the way: [`Serving`].)
    fn serve<S: Strategy>(
        &self,
        core: &Arc<Core>,
        service: &Arc<Service<Self::Request>>,
        strategy: &S,
        kept: &Mutex<Option<Executor<Self::Request>>>,
    ) -> io::Result<()>;

    /// Takes one connection or datagram, if there is one, and runs it
    /// through `executor`.
    fn take_one(
        &self,
        core: &Core,
        service: &Arc<Service<Self::Request>>,
        executor: &Executor<Self::Request>,
    ) -> io::Result<Taken>;
}

/// A socket and what `serve_forever` serves it with: what a strategy runs
/// on. Each endpoint implements [`Serve`](crate::strategy::Serve) for it.
pub(crate) struct Serving<'a, E: Endpoint> {
    pub(crate) endpoint: &'a E,
    pub(crate) core: &'a Arc<Core>,
    pub(crate) service: &'a Arc<Service<E::Request>>,
    /// The executor a `handle_request` may have started.
    pub(crate) kept: &'a Mutex<Option<Executor<E::Request>>>,
}

impl<E: Endpoint> Serving<'_, E> {
    /// The executor a `handle_request` kept, or `strategy`'s, started now.
    pub(crate) fn executor(&self, strategy: &impl Run) -> io::Result<Executor<E::Request>> {
        match self.kept.lock().take() {
            Some(e) => Ok(e),
            None => strategy.start(self.service),
        }
    }
}

/// Ties a request type to the endpoint that produces it, so that a
/// transport names one and gets the other.
pub trait Kind: Request {
    /// The endpoint whose handlers get this request.
    type Endpoint: Endpoint<Request = Self>;
}

/// `service_actions` on a clock of its own: at most once per
/// `service_interval` (Python's `poll_interval`, 0.5 s by default), on the
/// thread of `serve_forever`, however busy or idle the server is. With no
/// hook set there is no clock: the loops wait for nothing but work.
pub(crate) struct ServiceClock {
    every: std::time::Duration,
    /// When the hook is due next; `None`: never (no hook, or an interval
    /// past any clock: `Duration::MAX`).
    next: Option<Instant>,
}

impl ServiceClock {
    pub(crate) fn new<R>(core: &Core, service: &Service<R>) -> ServiceClock {
        let every = core.opts.service_interval;
        let next = if service.has_service_actions() { Instant::now().checked_add(every) } else { None };
        ServiceClock { every, next }
    }

    /// How long a loop may wait for work before the hook is due (`None`:
    /// as long as it likes).
    pub(crate) fn timeout(&self) -> Option<std::time::Duration> {
        self.next.map(|next| next.saturating_duration_since(Instant::now()))
    }

    /// Runs the hook if it is due, and sets the next time from now: a
    /// hook or a request that ran long delays the next run, it never
    /// brings on a burst of runs to catch up.
    pub(crate) fn tick<R>(&mut self, service: &Service<R>) {
        let Some(next) = self.next else { return };
        if Instant::now() < next {
            return;
        }
        service.service_actions();
        self.next = Instant::now().checked_add(self.every);
    }

    /// Waits until the server stops, running the hook when it is due: the
    /// `serve_forever` thread of the strategies whose threads take the
    /// work themselves (`Event`, a datagram pool's receivers).
    pub(crate) fn wait_for_stop<R>(&mut self, shared: &Shared, service: &Service<R>) -> io::Result<()> {
        while !shared.stopping() {
            sys::poll(&[shared.waker.stop_fd()], &mut [false], self.timeout())?;
            self.tick(service);
        }
        Ok(())
    }
}

/// The loop of `serve_forever` for every strategy that takes work through
/// an executor: wait until the socket is readable or the waker fires (or
/// `service_actions` is due), then `take` connections or datagrams while
/// capacity allows. Returns at the shutdown.
pub(crate) fn run<R: Request>(
    fd: RawFd,
    core: &Core,
    service: &Service<R>,
    executor: &Executor<R>,
    mut take: impl FnMut() -> io::Result<Taken>,
) -> io::Result<()> {
    let shared = &core.shared;
    let fds = [fd, shared.waker.stop_fd(), shared.waker.notify_fd()];
    let mut errors = core.accept_errors();
    let mut clock = ServiceClock::new(core, service);
    loop {
        if shared.stopping() {
            return Ok(());
        }
        executor.reap();
        if !core.can_accept(executor) {
            shared.wait_for_capacity(|| core.can_accept(executor))?;
            continue;
        }
        let mut ready = [false; 3];
        sys::poll(&fds, &mut ready, clock.timeout())?;
        if ready[2] {
            shared.waker.drain_notify();
        }
        if ready[0] {
            take_batch(core, executor, &mut errors, &mut take)?;
        }
        clock.tick(service);
    }
}

fn take_batch<R: Request>(
    core: &Core,
    executor: &Executor<R>,
    errors: &mut AcceptErrors<'_>,
    take: &mut impl FnMut() -> io::Result<Taken>,
) -> io::Result<()> {
    for _ in 0..BATCH {
        if core.shared.stopping() || !core.can_accept(executor) {
            return Ok(());
        }
        match take() {
            Ok(_) => errors.succeeded(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => {
                if errors.failed(e)? == Next::Paused {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Runs the loop with `executor`, calls `stopped` (a listener refuses
/// newcomers from then on; a datagram socket answers what is queued), then
/// drains: the common `serve` of every endpoint and strategy that hands
/// work to an executor.
pub(crate) fn serve_with<R: Request>(
    fd: RawFd,
    core: &Core,
    service: &Service<R>,
    executor: Executor<R>,
    mut take: impl FnMut(&Executor<R>) -> io::Result<Taken>,
    stopped: impl FnOnce(&Executor<R>),
) -> io::Result<()> {
    let result = run(fd, core, service, &executor, || take(&executor));
    if !core.shared.stopping() {
        core.shared.request_stop(core.opts.grace);
    }
    stopped(&executor);
    executor.finish(&core.shared);
    result
}

/// Python's `handle_request`: waits (at most the `timeout`) for one
/// connection or datagram and makes one attempt at it — served, refused,
/// dropped or failed, the call is over, as in CPython.
pub(crate) fn handle_request<E: Endpoint>(
    endpoint: &E,
    core: &Core,
    service: &Arc<Service<E::Request>>,
    executor: &Executor<E::Request>,
) -> io::Result<Handled> {
    executor.reap();
    let shared = &core.shared;
    let deadline = Deadline::within(Instant::now(), core.opts.timeout);
    let fds = [endpoint.as_raw_fd(), shared.waker.stop_fd()];
    loop {
        if shared.stopping() {
            return Ok(Handled::ShutDown);
        }
        let left = deadline.left(Instant::now());
        let mut ready = [false; 2];
        if sys::poll(&fds, &mut ready, left)? == 0 {
            service.handle_timeout();
            return Ok(Handled::TimedOut);
        }
        if !ready[0] {
            continue;
        }
        return match endpoint.take_one(core, service, executor) {
            Ok(Taken::Request) => Ok(Handled::Served),
            Ok(Taken::Refused) => Ok(Handled::Refused),
            Ok(Taken::Dropped) => Ok(Handled::Dropped),
            // A wake-up of the server's own, or another process took it
            // first: nothing was attempted.
            Ok(Taken::Nothing) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => core.accept_errors().failed(e).map(|_| Handled::Dropped),
        };
    }
}

/// What one [`Server::handle_request`](crate::Server::handle_request) call
/// did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handled {
    /// A request was taken and run through the strategy (under `Threading`
    /// or a pool it may still be running).
    Served,
    /// `verify_request` refused the peer.
    Refused,
    /// A connection or datagram came but could not be served: an oversized
    /// datagram, a connection that could not be set up, an accept that
    /// failed for the peer's reasons.
    Dropped,
    /// Nothing came within the `timeout`; `handle_timeout` was called.
    TimedOut,
    /// A shutdown ended the wait.
    ShutDown,
}
