//! Running one request through a handler: setup → handle → finish, each
//! guarded against panics, errors reported through `handle_error`. Generic
//! over the request, so that a stream server and a datagram server share it
//! with no run-time check of which is which.

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::escaped::Escaped;
use crate::handler::RequestHandler;
use crate::net::Address;
use crate::request::{Preamble, Request};
use crate::shutdown::Shared;
use crate::stats::Counters;

type VerifyFn = dyn Fn(&Address) -> bool + Send + Sync;
type ErrorFn<R> = dyn Fn(Option<&mut R>, &Address, &io::Error) + Send + Sync;
type ActionFn = dyn Fn() + Send + Sync;
#[cfg(feature = "tls")]
pub(crate) type VerifyTlsFn = dyn Fn(&Address, &crate::tls::TlsInfo) -> bool + Send + Sync;

/// Python's overridable server methods, as closures.
pub(crate) struct Hooks<R> {
    pub(crate) verify_request: Option<Arc<VerifyFn>>,
    pub(crate) handle_error: Option<Arc<ErrorFn<R>>>,
    pub(crate) handle_timeout: Option<Arc<ActionFn>>,
    pub(crate) service_actions: Option<Arc<ActionFn>>,
    /// After the TLS handshake (and `verify_request`): whether to serve.
    #[cfg(feature = "tls")]
    pub(crate) verify_tls: Option<Arc<VerifyTlsFn>>,
}

impl<R> Default for Hooks<R> {
    fn default() -> Self {
        Hooks {
            verify_request: None,
            handle_error: None,
            handle_timeout: None,
            service_actions: None,
            #[cfg(feature = "tls")]
            verify_tls: None,
        }
    }
}

impl<R> fmt::Debug for Hooks<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("verify_request", &self.verify_request.is_some())
            .field("handle_error", &self.handle_error.is_some())
            .field("handle_timeout", &self.handle_timeout.is_some())
            .field("service_actions", &self.service_actions.is_some())
            .finish()
    }
}

/// Where one turn of an event-strategy request left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Parked: call again when bytes arrive.
    Parked,
    /// Parked before its handler ran (the rest of its PROXY header): call
    /// again, as the first turn, when bytes arrive.
    Waiting,
    /// Concluded: release it.
    Done(Outcome),
    /// Refused before its handler ran (its PROXY header named a client
    /// `verify_request` refused, or was bad): dropped, not completed.
    Refused,
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

impl Failure {
    /// Each error in it, as `handle_error` is given it, with how it ended.
    fn into_errors(self, out: &mut Vec<(io::Error, Outcome)>) {
        match self {
            Failure::Error(e) => out.push((e, Outcome::Failed)),
            Failure::Panic(msg) => out.push((io::Error::other(format!("handler panicked: {msg}")), Outcome::Panicked)),
            Failure::Both(handled, finished) => {
                handled.into_errors(out);
                finished.into_errors(out);
            }
        }
    }
}

/// Everything a worker needs to run requests of kind `R`.
pub(crate) struct Service<R> {
    pub(crate) handler: Arc<dyn RequestHandler<R>>,
    pub(crate) hooks: Hooks<R>,
    pub(crate) shared: Arc<Shared>,
    /// Peers cause the errors the default `handle_error` logs: at most one
    /// line a second, the rest counted into the next.
    pub(crate) throttle: Throttle,
}

/// A rate limit on log lines that peers cause, taken without a lock: one
/// line per episode, then one a second at most while it lasts, each saying
/// how many it stands for.
#[derive(Debug)]
pub(crate) struct Throttle {
    start: std::time::Instant,
    /// Milliseconds after `start` before which nothing more is logged.
    next: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Throttle {
    const EVERY: u64 = 1000;

    pub(crate) fn new() -> Throttle {
        Throttle {
            start: std::time::Instant::now(),
            next: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, standing for `n` lines held back since the last
    /// one; `None`: held back (counted).
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next.load(Relaxed);
        if now >= next && self.next.compare_exchange(next, now + Self::EVERY, Relaxed, Relaxed).is_ok() {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

impl<R> fmt::Debug for Service<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service").field("hooks", &self.hooks).finish_non_exhaustive()
    }
}

/// Exit codes of a forked child whose request was never admitted (beyond
/// [`Outcome`]'s 0-2; a child killed by signal N exits as 128 + N).
pub(crate) const CHILD_REFUSED: i32 = 3;
/// The peer closed before its PROXY header (a health check): not counted.
pub(crate) const CHILD_CLOSED: i32 = 4;
/// The PROXY header failed; the report says how.
pub(crate) const CHILD_PREAMBLE_FAILED: i32 = 5;
/// The TLS handshake failed; the report says how.
pub(crate) const CHILD_TLS_FAILED: i32 = 6;
/// Added to a child's exit code (one of the above, or an [`Outcome`]) when
/// its TLS handshake completed, for the parent to count it (below the
/// 128 + N of a child killed by a signal).
pub(crate) const CHILD_TLS_DONE: i32 = 16;

/// Whether a request may run, once what comes before it has been read.
#[derive(Debug)]
pub(crate) enum Admission {
    Admitted,
    /// `verify_request` refused the client the PROXY header names.
    Refused,
    /// The peer closed before sending anything.
    Closed,
    /// The header was malformed, incomplete in time, or cut short.
    Failed(io::Error),
    /// Not read whole yet (the event strategy parks the connection).
    Pending,
    /// The TLS handshake failed or timed out.
    TlsFailed(io::Error),
}

impl<R> Service<R> {
    /// Counts (and logs, throttled) a request that was not admitted.
    pub(crate) fn not_admitted(&self, peer: &dyn fmt::Display, admission: Admission) {
        let stats = &self.shared.stats;
        match admission {
            Admission::Admitted | Admission::Closed | Admission::Pending => {}
            Admission::Refused => {
                Counters::bump(&stats.refused);
                log::debug!("{}: refused {peer}", self.shared.name);
            }
            Admission::Failed(err) => {
                Counters::bump(&stats.proxy_errors);
                self.warn_closed(peer, &err);
            }
            Admission::TlsFailed(err) => {
                Counters::bump(&stats.tls_handshake_failures);
                self.warn_closed(peer, &err);
            }
        }
    }

    /// Logs a connection a peer's preamble cost: at most one line a second,
    /// saying how many it stands for.
    fn warn_closed(&self, peer: &dyn fmt::Display, err: &io::Error) {
        if let Some(held) = self.throttle.admit() {
            let more = match held {
                0 => String::new(),
                n => format!(" (and {n} more error(s) not logged since the last)"),
            };
            let err = Escaped::text(&err.to_string()).to_string();
            log::warn!("{}: closed a connection from {peer}: {err}{more}", self.shared.name);
        }
    }

    /// Counts a completed TLS handshake (once its request is admitted or refused).
    pub(crate) fn count_handshake(&self) {
        Counters::bump(&self.shared.stats.tls_handshakes);
    }
}

impl<R: Request> Service<R> {
    /// Runs one request to the end, reports its errors, then releases it
    /// (closing a connection). It counts as completed only after all that.
    pub(crate) fn run(&self, mut req: R) -> Outcome {
        if !self.admit(&mut req) {
            return Outcome::Ok;
        }
        let outcome = self.serve(&mut req);
        drop(req);
        self.shared.stats.completed.fetch_add(1, Relaxed);
        outcome
    }

    /// Runs a request the caller keeps (a datagram receiver reuses its buffer).
    pub(crate) fn run_in_place(&self, req: &mut R) -> Outcome {
        let outcome = self.serve(req);
        self.shared.stats.completed.fetch_add(1, Relaxed);
        outcome
    }

    fn serve(&self, req: &mut R) -> Outcome {
        match self.run_phases(req) {
            Ok(()) => Outcome::Ok,
            Err(failure) => self.report(req, failure),
        }
    }

    /// Runs a request in a forked child, which must take no lock another
    /// thread of the parent may have held: nothing is logged and no hook
    /// but `verify_request` (which must see the client a PROXY header
    /// names) and `verify_tls` (the child's handshake) runs here. Each error is written to `report` (one line each,
    /// raw `write(2)`) for the parent to pass to `handle_error`; the
    /// returned exit code is an [`Outcome`] or, for a request never
    /// admitted, one of the `CHILD_*` codes, for the parent to count.
    pub(crate) fn run_in_child(&self, mut req: R, report: &std::os::fd::OwnedFd) -> i32 {
        let code = self.run_in_child_inner(&mut req, report);
        if req.tls_handshaken() { code + CHILD_TLS_DONE } else { code }
    }

    fn run_in_child_inner(&self, req: &mut R, report: &std::os::fd::OwnedFd) -> i32 {
        let mut outcome = Outcome::Ok;
        match self.admission(req) {
            Admission::Admitted => {}
            Admission::Refused => {
                // Whom `verify_request` refused: the client the header named.
                crate::sys::process::write_raw(report, req.peer().to_string().as_bytes());
                return CHILD_REFUSED;
            }
            Admission::Closed | Admission::Pending => return CHILD_CLOSED,
            Admission::Failed(err) => {
                crate::sys::process::write_raw(report, Escaped::text(&err.to_string()).to_string().as_bytes());
                return CHILD_PREAMBLE_FAILED;
            }
            Admission::TlsFailed(err) => {
                crate::sys::process::write_raw(report, Escaped::text(&err.to_string()).to_string().as_bytes());
                return CHILD_TLS_FAILED;
            }
        }
        if let Err(failure) = self.run_phases(req) {
            let mut errors = Vec::new();
            failure.into_errors(&mut errors);
            let mut text = String::new();
            for (err, how) in errors {
                // One line each: escaped (the parent logs it escaped
                // again, which changes nothing).
                text.push_str(&Escaped::text(&err.to_string()).to_string());
                text.push('\n');
                outcome = worse(outcome, how);
            }
            crate::sys::process::write_raw(report, text.as_bytes());
        }
        outcome as i32
    }

    fn run_phases(&self, req: &mut R) -> Result<(), Failure> {
        req.begin();
        let h = self.handler.as_ref();
        if let Err(failure) = guarded(|| h.setup(req)) {
            // No `finish` after a failed `setup`, but what it wrote goes out,
            // as after `handle` (the peer may be gone: nothing to report).
            let _ = req.flush();
            return Err(failure);
        }
        let handled = guarded(|| h.handle(req));
        self.conclude(req, handled)
    }

    /// One turn of a request the event strategy runs: `setup` first (when
    /// `first`), then `handle`. A handler that returns because its
    /// connection parked is called again when bytes arrive; otherwise the
    /// request is concluded (`finish`, errors reported) and the caller
    /// releases it with [`release`](Self::release).
    pub(crate) fn step(&self, req: &mut R, first: bool) -> Step {
        let h = self.handler.as_ref();
        if first {
            let admission = self.admission(req);
            if !matches!(admission, Admission::Pending) && req.tls_handshaken() {
                self.count_handshake();
            }
            match admission {
                Admission::Admitted => {}
                Admission::Pending => return Step::Waiting,
                other => {
                    self.not_admitted(req.peer(), other);
                    return Step::Refused;
                }
            }
            req.begin();
            if let Err(failure) = guarded(|| h.setup(req)) {
                return Step::Done(self.report(req, failure));
            }
        }
        let handled = guarded(|| h.handle(req));
        // Parked: the handler returned `Ok` after `wait_for_data` said
        // `false`, or returned the park's error from a read (`?`), or an
        // error made of it; a panic is never a park.
        if !matches!(handled, Err(Failure::Panic(_))) && req.parked() {
            return Step::Parked;
        }
        match self.conclude(req, handled) {
            Ok(()) => Step::Done(Outcome::Ok),
            Err(failure) => Step::Done(self.report(req, failure)),
        }
    }

    /// Closes a request [`step`](Self::step) concluded, and counts it.
    pub(crate) fn release(&self, req: R) {
        drop(req);
        self.shared.stats.completed.fetch_add(1, Relaxed);
    }

    /// Reads what comes before the request (a PROXY header) and, when it
    /// names the client, asks `verify_request` about that client. `false`:
    /// the request is refused (counted) and the handler must not run.
    fn admit(&self, req: &mut R) -> bool {
        let admission = self.admission(req);
        if req.tls_handshaken() {
            self.count_handshake();
        }
        match admission {
            Admission::Admitted => true,
            other => {
                self.not_admitted(req.peer(), other);
                false
            }
        }
    }

    /// `admit`'s decision alone: nothing counted, nothing logged (a forked
    /// child decides, its parent counts).
    fn admission(&self, req: &mut R) -> Admission {
        match req.preamble() {
            Preamble::None => self.verify_tls(req),
            Preamble::Read if self.verify(req.peer()) => self.verify_tls(req),
            Preamble::Read => Admission::Refused,
            Preamble::Closed => Admission::Closed,
            Preamble::Failed(err) => Admission::Failed(err),
            Preamble::TlsFailed(err) => Admission::TlsFailed(err),
            Preamble::Pending => Admission::Pending,
        }
    }

    /// `verify_tls`, when set, on a request whose handshake is done.
    fn verify_tls(&self, req: &R) -> Admission {
        #[cfg(feature = "tls")]
        if let (Some(hook), Some(info)) = (&self.hooks.verify_tls, req.tls_info()) {
            let peer = req.peer();
            return match catch_unwind(AssertUnwindSafe(|| hook(peer, info))) {
                Ok(true) => Admission::Admitted,
                Ok(false) => Admission::Refused,
                Err(p) => {
                    let err = io::Error::other(format!("verify_tls panicked: {}", panic_message(&p)));
                    self.handle_error(None, peer, &err);
                    Admission::Refused
                }
            };
        }
        let _ = req;
        Admission::Admitted
    }

    /// After `handle`: `finish`, then what the failures mean.
    fn conclude(&self, req: &mut R, handled: Result<(), Failure>) -> Result<(), Failure> {
        let h = self.handler.as_ref();
        let finished = guarded(|| h.finish(req));
        let mut result = match (handled, finished) {
            (Err(h), Err(f)) => Err(Failure::Both(Box::new(h), Box::new(f))),
            (handled, finished) => handled.and(finished),
        };
        if matches!(&result, Err(Failure::Error(e)) if req.closed_for_idleness(e)) {
            // Counted in `idle_closed`; not the handler's failure.
            log::debug!("{}: closed idle connection from {}", self.shared.name, req.peer());
            result = Ok(());
        }
        if matches!(&result, Err(Failure::Error(e)) if ended_by_peer(e)) {
            // The peer reset the connection, or closed it while we wrote:
            // the normal end of a connection, counted, not an error.
            Counters::bump(&self.shared.stats.resets);
            log::debug!("{}: {} ended the connection", self.shared.name, req.peer());
            result = Ok(());
        }
        let flushed = req.flush();
        result.and(flushed.map_err(Failure::Error))
    }

    /// Reports a request's failure: counted once in `handler_errors`, each
    /// error or panic in it passed to `handle_error` with the request, which
    /// is still open (the hook may answer on it).
    fn report(&self, req: &mut R, failure: Failure) -> Outcome {
        let stats = &self.shared.stats;
        Counters::bump(&stats.handler_errors);
        let mut errors = Vec::new();
        failure.into_errors(&mut errors);
        let peer = req.peer().clone();
        let mut outcome = Outcome::Ok;
        for (err, how) in errors {
            if how == Outcome::Panicked {
                Counters::bump(&stats.panics);
            }
            self.handle_error(Some(&mut *req), &peer, &err);
            outcome = worse(outcome, how);
        }
        // What the hook answered goes out before the request is closed (the
        // peer may be gone: nothing to report about that).
        let _ = req.flush();
        outcome
    }
}

/// The peer reset the connection or closed it while we wrote to it.
fn ended_by_peer(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe)
}

/// A panic outranks an error, which outranks success.
fn worse(a: Outcome, b: Outcome) -> Outcome {
    if a == Outcome::Panicked || b == Outcome::Panicked {
        Outcome::Panicked
    } else if a == Outcome::Failed || b == Outcome::Failed {
        Outcome::Failed
    } else {
        Outcome::Ok
    }
}

impl<R> Service<R> {
    /// Calls the user's `handle_error` (with the request, when there is one
    /// still open), or logs; a panic in it is contained too.
    pub(crate) fn handle_error(&self, req: Option<&mut R>, peer: &Address, err: &io::Error) {
        match &self.hooks.handle_error {
            Some(hook) => {
                if catch_unwind(AssertUnwindSafe(|| hook(req, peer, err))).is_err() {
                    let err = Escaped::text(&err.to_string()).to_string();
                    log::error!("{}: handle_error panicked while reporting: {err}", self.shared.name);
                }
            }
            None => {
                let Some(held) = self.throttle.admit() else { return };
                let more = match held {
                    0 => String::new(),
                    n => format!(" (and {n} more error(s) not logged since the last)"),
                };
                // An error's text may hold what the peer sent: one line, escaped.
                let err = Escaped::text(&err.to_string()).to_string();
                if log::max_level() == log::LevelFilter::Off {
                    // No logger: one line on stderr, as Python prints its
                    // traceback — never waiting for it.
                    let line =
                        format!("socketserver: {}: error handling request from {peer}: {err}{more}", self.shared.name);
                    crate::sys::stderr_line_now(&line);
                } else {
                    log::error!("{}: error handling request from {peer}: {err}{more}", self.shared.name);
                }
            }
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
                        None,
                        peer,
                        &io::Error::other(format!("verify_request panicked: {}", panic_message(&p))),
                    );
                    false
                }
            },
        }
    }

    pub(crate) fn handle_timeout(&self) {
        self.call_hook(&self.hooks.handle_timeout, "handle_timeout");
    }

    pub(crate) fn service_actions(&self) {
        self.call_hook(&self.hooks.service_actions, "service_actions");
    }

    pub(crate) fn has_service_actions(&self) -> bool {
        self.hooks.service_actions.is_some()
    }

    fn call_hook(&self, hook: &Option<Arc<ActionFn>>, name: &str) {
        if let Some(hook) = hook
            && let Err(p) = catch_unwind(AssertUnwindSafe(|| hook()))
        {
            log::error!("{}: {name} panicked: {}", self.shared.name, Escaped::text(&panic_message(&p)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_admits_one_line_a_second_and_counts_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.admit(), Some(0), "the first line of an episode");
        for _ in 0..99 {
            assert_eq!(t.admit(), None);
        }
        // A second later (moved, not waited for): one line standing for 99.
        t.next.store(0, Relaxed);
        assert_eq!(t.admit(), Some(99));
        assert_eq!(t.admit(), None);
    }
}
