//! Running one request through a handler: setup → handle → finish, each
//! guarded against panics, errors reported through `handle_error`.

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::address::Address;
use crate::handler::{DatagramRequest, RequestHandler, StreamRequest};
use crate::shutdown::Shared;
use crate::stats::Counters;

/// A unit of work for a strategy: an accepted connection or a received datagram.
#[derive(Debug)]
pub(crate) enum Job {
    Stream(StreamRequest),
    Datagram(DatagramRequest),
}

impl Job {
    /// Prepares the copy of a job that a forked child runs: the child must
    /// not touch the parent's locks or counters when it drops the request.
    pub(crate) fn detach_for_child(&mut self) {
        match self {
            Job::Stream(req) => {
                req.tracked = false;
                std::mem::forget(req.slot.take());
            }
            Job::Datagram(req) => std::mem::forget(req.slot.take()),
        }
    }

    /// Drops the parent's copy of a job handed to a child, keeping the slot
    /// that counts it as in flight until the child is reaped.
    pub(crate) fn release_to_child(self) -> Option<crate::shutdown::Slot> {
        match self {
            Job::Stream(mut req) => {
                req.linger = false;
                req.slot.take()
            }
            Job::Datagram(mut req) => req.slot.take(),
        }
    }

    pub(crate) fn peer(&self) -> &Address {
        match self {
            Job::Stream(r) => r.peer_addr(),
            Job::Datagram(r) => r.peer_addr(),
        }
    }
}

pub(crate) type StreamHandler = Arc<dyn RequestHandler<StreamRequest>>;
pub(crate) type DatagramHandler = Arc<dyn RequestHandler<DatagramRequest>>;

/// The user's handler, for one of the two request kinds.
#[derive(Clone)]
pub(crate) enum AnyHandler {
    Stream(StreamHandler),
    Datagram(DatagramHandler),
}

type VerifyFn = dyn Fn(&Address) -> bool + Send + Sync;
type ErrorFn = dyn Fn(&Address, &io::Error) + Send + Sync;
type ActionFn = dyn Fn() + Send + Sync;

/// Python's overridable server methods, as closures.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) verify_request: Option<Arc<VerifyFn>>,
    pub(crate) handle_error: Option<Arc<ErrorFn>>,
    pub(crate) handle_timeout: Option<Arc<ActionFn>>,
    pub(crate) service_actions: Option<Arc<ActionFn>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("verify_request", &self.verify_request.is_some())
            .field("handle_error", &self.handle_error.is_some())
            .field("handle_timeout", &self.handle_timeout.is_some())
            .field("service_actions", &self.service_actions.is_some())
            .finish()
    }
}

/// How a request ended; a forked child turns it into its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok = 0,
    Failed = 1,
    Panicked = 2,
}

enum Failure {
    Error(io::Error),
    Panic(String),
    /// `handle` failed, then `finish` failed too: both are reported.
    Both(Box<Failure>, Box<Failure>),
}

/// Everything a worker needs to run requests.
pub(crate) struct Service {
    pub(crate) handler: AnyHandler,
    pub(crate) hooks: Hooks,
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service").field("hooks", &self.hooks).finish_non_exhaustive()
    }
}

impl Service {
    /// Runs one request to the end and releases it (closing a connection).
    pub(crate) fn run(&self, job: Job) -> Outcome {
        let result = match (&self.handler, job) {
            (AnyHandler::Stream(h), Job::Stream(mut req)) => {
                req.linger = true;
                let mut r = run_phases(h.as_ref(), &mut req);
                if req.idle_closed() && matches!(&r, Err(Failure::Error(e)) if e.kind() == io::ErrorKind::TimedOut) {
                    // Counted in `idle_closed`; not the handler's failure.
                    log::debug!("{}: closed idle connection from {}", self.shared.name, req.peer_addr());
                    r = Ok(());
                }
                let flushed = req.flush_pending();
                if r.is_ok() {
                    r = flushed.map_err(Failure::Error);
                }
                r.map_err(|f| (f, req.peer_addr().clone()))
            }
            (AnyHandler::Datagram(h), Job::Datagram(mut req)) => {
                run_phases(h.as_ref(), &mut req).map_err(|f| (f, req.peer_addr().clone()))
            }
            (_, job) => {
                Err((Failure::Error(io::Error::other("request kind does not match the handler")), job.peer().clone()))
            }
        };
        self.shared.stats.completed.fetch_add(1, Relaxed);
        match result {
            Ok(()) => Outcome::Ok,
            Err((failure, peer)) => self.report(&peer, failure),
        }
    }

    /// Runs a datagram request that the caller keeps (its buffer is reused).
    pub(crate) fn run_datagram(&self, h: &dyn RequestHandler<DatagramRequest>, req: &mut DatagramRequest) {
        let result = run_phases(h, req);
        self.shared.stats.completed.fetch_add(1, Relaxed);
        if let Err(f) = result {
            self.report(&req.peer.clone(), f);
        }
    }

    /// Reports a request's failure: counted once in `handler_errors`, each
    /// error or panic in it passed to `handle_error`.
    fn report(&self, peer: &Address, failure: Failure) -> Outcome {
        Counters::bump(&self.shared.stats.handler_errors);
        self.report_each(peer, failure)
    }

    fn report_each(&self, peer: &Address, failure: Failure) -> Outcome {
        let stats = &self.shared.stats;
        let (err, outcome) = match failure {
            Failure::Error(e) => (e, Outcome::Failed),
            Failure::Panic(msg) => {
                Counters::bump(&stats.panics);
                (io::Error::other(format!("handler panicked: {msg}")), Outcome::Panicked)
            }
            Failure::Both(handled, finished) => {
                let first = self.report_each(peer, *handled);
                let second = self.report_each(peer, *finished);
                return if first == Outcome::Panicked { first } else { second };
            }
        };
        self.handle_error(peer, &err);
        outcome
    }

    /// Calls the user's `handle_error`, or logs; a panic in it is contained too.
    pub(crate) fn handle_error(&self, peer: &Address, err: &io::Error) {
        match &self.hooks.handle_error {
            Some(hook) => {
                if catch_unwind(AssertUnwindSafe(|| hook(peer, err))).is_err() {
                    log::error!("{}: handle_error panicked while reporting: {err}", self.shared.name);
                }
            }
            None => log::error!("{}: error handling request from {peer}: {err}", self.shared.name),
        }
    }

    /// Python's `verify_request`: true when no hook is set.
    pub(crate) fn verify(&self, peer: &Address) -> bool {
        match &self.hooks.verify_request {
            None => true,
            Some(hook) => match catch_unwind(AssertUnwindSafe(|| hook(peer))) {
                Ok(ok) => ok,
                Err(p) => {
                    self.handle_error(
                        peer,
                        &io::Error::other(format!("verify_request panicked: {}", panic_message(&p))),
                    );
                    false
                }
            },
        }
    }

    pub(crate) fn call_hook(&self, hook: &Option<Arc<ActionFn>>, name: &str) {
        if let Some(hook) = hook
            && let Err(p) = catch_unwind(AssertUnwindSafe(|| hook()))
        {
            log::error!("{}: {name} panicked: {}", self.shared.name, panic_message(&p));
        }
    }
}

fn run_phases<R: 'static>(h: &dyn RequestHandler<R>, req: &mut R) -> Result<(), Failure> {
    guarded(|| h.setup(req))?;
    let handled = guarded(|| h.handle(req));
    let finished = guarded(|| h.finish(req));
    match (handled, finished) {
        (Err(h), Err(f)) => Err(Failure::Both(Box::new(h), Box::new(f))),
        (handled, finished) => handled.and(finished),
    }
}

fn guarded(f: impl FnOnce() -> io::Result<()>) -> Result<(), Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(payload) => Err(Failure::Panic(panic_message(&payload))),
    }
}

pub(crate) fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
