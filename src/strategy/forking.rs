//! A process per request. Each child is waited for by a small reaper thread
//! that waits for that child's pid only, so the server never reaps children
//! the program started elsewhere, and never leaves zombies.
//!
//! The child runs the handler and nothing of the server's that takes a lock
//! (a lock another thread held at fork time would stay locked for ever in
//! the child): it logs nothing and calls no hook. It reports each error as a
//! line on a pipe, written with raw `write(2)`, and how the request ended as
//! its exit code; the reaper passes the errors to `handle_error`.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use super::Forking;
use crate::net::Address;
use crate::request::Request;
use crate::service::{Admission, CHILD_CLOSED, CHILD_PREAMBLE_FAILED, CHILD_REFUSED, Outcome, Service};
use crate::stats::Counters;
use crate::sys::process;

const REAPER_STACK: usize = 64 * 1024;

pub(crate) struct Children<R> {
    config: Forking,
    service: Arc<Service<R>>,
    live: Arc<AtomicUsize>,
}

impl<R> std::fmt::Debug for Children<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Children").field("config", &self.config).field("live", &self.live).finish()
    }
}

impl<R: Request> Children<R> {
    pub(crate) fn new(config: &Forking, service: &Arc<Service<R>>) -> Children<R> {
        Children { config: config.clone(), service: Arc::clone(service), live: Arc::new(AtomicUsize::new(0)) }
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.live.load(SeqCst) < self.config.max_children
    }

    // The one use of `unsafe` outside `sys`: forking is the strategy's job,
    // and `fork`'s precondition is about what the child runs, which only
    // this function knows.
    #[allow(unsafe_code)]
    pub(crate) fn dispatch(&self, req: R) {
        let shared = &self.service.shared;
        let peer = req.peer().clone();
        let (report_rx, report_tx) = match process::pipe() {
            Ok(pair) => pair,
            Err(e) => {
                Counters::bump(&shared.stats.rejected);
                let err = crate::error::context(e, "cannot make a pipe for a child; the request was closed");
                self.service.handle_error(None, &peer, &err);
                return;
            }
        };
        let mut req = Some(req);
        // SAFETY: the child runs the request through `run_in_child`, which
        // takes none of the server's locks (no logging, no hooks, counters
        // detached by `detach_for_child`), writes its report with raw
        // write(2) and exits.
        let forked = unsafe {
            shared.children.spawn(|| {
                // Every `log!` in this process is off from here: a macro
                // checks the level (an atomic) before it takes any lock,
                // and the logger's lock may be held by a thread that is
                // not here to release it.
                log::set_max_level(log::LevelFilter::Off);
                let Some(mut req) = req.take() else { return Outcome::Failed as i32 };
                req.detach_for_child();
                self.service.run_in_child(req, &report_tx)
            })
        };
        // The parent's copy of the write end: closed now, so that the pipe
        // ends when the child does (later children never inherit it).
        drop(report_tx);
        let Some(req) = req else { return };
        let pid = match forked {
            Ok(pid) => pid,
            Err(e) => {
                Counters::bump(&shared.stats.rejected);
                let err = crate::error::context(e, "cannot fork; the request was closed");
                self.service.handle_error(None, &peer, &err);
                return;
            }
        };
        self.live.fetch_add(1, SeqCst);
        shared.stats.workers_total.fetch_add(1, SeqCst);
        let slot = req.release_to_child();
        let service = Arc::clone(&self.service);
        let live = Arc::clone(&self.live);
        let reap = move || {
            let mut report = Vec::new();
            let _ = std::fs::File::from(report_rx).take(64 * 1024).read_to_end(&mut report);
            let status = service.shared.children.wait(pid);
            let stats = &service.shared.stats;
            // A request never admitted is not completed, as elsewhere.
            let completed = !matches!(status, Ok(CHILD_REFUSED | CHILD_CLOSED | CHILD_PREAMBLE_FAILED));
            match status {
                Ok(0) => {}
                // Never admitted: counted as the other strategies count it,
                // here, where logging is safe.
                Ok(CHILD_REFUSED) => {
                    let client = String::from_utf8_lossy(&report).to_string();
                    service.not_admitted(&client, Admission::Refused);
                }
                Ok(CHILD_CLOSED) => {}
                Ok(CHILD_PREAMBLE_FAILED) => {
                    let why = String::from_utf8_lossy(&report).trim().to_string();
                    service.not_admitted(&peer, Admission::Failed(std::io::Error::other(why)));
                }
                Ok(code) => {
                    Counters::bump(&stats.handler_errors);
                    if code == Outcome::Panicked as i32 {
                        Counters::bump(&stats.panics);
                    }
                    report_errors(&service, &peer, &report, code);
                }
                Err(e) => log::error!("{}: waitpid({pid}) failed: {e}", service.shared.name),
            }
            if completed {
                Counters::bump(&stats.completed);
            }
            live.fetch_sub(1, SeqCst);
            stats.workers_total.fetch_sub(1, SeqCst);
            drop(slot);
            service.shared.capacity_freed();
        };
        // Shared so that the closure can still run here if no thread starts.
        let reap = Arc::new(parking_lot::Mutex::new(Some(reap)));
        let in_thread = Arc::clone(&reap);
        let spawned = super::spawn(shared, "socketserver-reaper", REAPER_STACK, move || {
            if let Some(f) = in_thread.lock().take() {
                f();
            }
        });
        if let Err(e) = spawned {
            log::error!("{}: cannot start a reaper thread ({e}); waiting for child {pid} inline", shared.name);
            if let Some(f) = reap.lock().take() {
                f();
            }
        }
    }

    pub(crate) fn finish(self) -> bool {
        let shared = &self.service.shared;
        shared.wait_drained(|| self.live.load(SeqCst) == 0 && shared.threads.load(SeqCst) == 0)
    }
}

/// Passes what a failed child reported to `handle_error`: one error per
/// line, or — a child killed before it could say — its exit status.
fn report_errors<R>(service: &Service<R>, peer: &Address, report: &[u8], code: i32) {
    let text = String::from_utf8_lossy(report);
    let mut lines = text.lines().filter(|l| !l.is_empty()).peekable();
    if lines.peek().is_none() {
        let err = std::io::Error::other(format!("the child serving the request exited with status {code}"));
        service.handle_error(None, peer, &err);
    }
    for line in lines {
        service.handle_error(None, peer, &std::io::Error::other(line.to_string()));
    }
}
