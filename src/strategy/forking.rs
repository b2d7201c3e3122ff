//! A process per request, and one reaper thread for all of them.
//!
//! The child runs the handler and nothing of the server's that takes a lock
//! (a lock another thread held at fork time would stay locked for ever in
//! the child): it logs nothing and calls no hook. It reports each error as a
//! line on a pipe, written with raw `write(2)`, and how the request ended as
//! its exit code.
//!
//! The parent watches every child's pipe in one `epoll` set, from one
//! reaper thread, whatever the number of children: it collects what each
//! child reports and, at the pipe's end (the child exiting), reaps that
//! child by its pid (never one the program started elsewhere) and passes
//! its errors to `handle_error`. The thread starts with the first child and
//! ends with the last, so an idle server keeps none, and a server shutting
//! down waits for it as for its children.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use super::Forking;
use crate::net::Address;
use crate::request::Request;
use crate::service::{
    Admission, CHILD_CLOSED, CHILD_PREAMBLE_FAILED, CHILD_REFUSED, CHILD_TLS_DONE, CHILD_TLS_FAILED, Outcome, Service,
};
use crate::shutdown::Slot;
use crate::stats::Counters;
use crate::sys::epoll::{Epoll, EventFd, Events, Interest};
use crate::sys::process;

/// The reaper runs `handle_error` and the logger: a stack for user hooks.
const REAPER_STACK: usize = super::DEFAULT_STACK_SIZE;
/// What the parent keeps of a child's report; the rest is read and dropped,
/// so that a child never waits on a full pipe.
const REPORT_MAX: usize = 64 * 1024;
/// How often a child whose pipe has ended, but that has not exited yet (it
/// is exiting: the pipe closes a little before the process is a zombie),
/// is looked at again: from the first to the second, doubling.
const RECHECK_FIRST: Duration = Duration::from_millis(1);
const RECHECK_MAX: Duration = Duration::from_millis(100);
/// The token of the reaper's wake-up in its set (children count from 0).
const WAKE: u64 = u64::MAX;

pub(crate) struct Children<R> {
    config: Forking,
    service: Arc<Service<R>>,
    live: Arc<AtomicUsize>,
    reaper: Arc<Reaper>,
}

impl<R> std::fmt::Debug for Children<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Children").field("config", &self.config).field("live", &self.live).finish()
    }
}

/// Every child not yet reaped, and the `epoll` set of their pipes.
struct Reaper {
    epoll: Epoll,
    /// In the set: wakes the reaper for a child it must look at on a timer.
    wake: EventFd,
    state: parking_lot::Mutex<Watched>,
}

#[derive(Default)]
struct Watched {
    /// By the token of the child's pipe in the set.
    children: HashMap<u64, Child>,
    /// Children looked at on a timer: their pipe has ended (or could not be
    /// added to the set).
    polled: Vec<u64>,
    next_token: u64,
    /// A thread runs [`reap`]: it ends (setting this back) under the lock
    /// when `children` is empty, so a child added meanwhile starts another.
    running: bool,
}

/// A child not yet reaped, with what it has reported so far.
struct Child {
    pid: libc::pid_t,
    /// The read end, non-blocking.
    pipe: File,
    report: Vec<u8>,
    peer: Address,
    /// The request's unit of in-flight work, released once reaped.
    slot: Option<Slot>,
}

impl Child {
    /// Reads what the child wrote since the last call, without waiting;
    /// `true` when the pipe has ended (every copy of the write end closed:
    /// the child exited or is exiting).
    fn read_report(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        // Bounded: a child writing without pause is read again at the next
        // wake-up (the set is level-triggered), after the other children.
        for _ in 0..16 {
            match (&self.pipe).read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    let room = REPORT_MAX - self.report.len();
                    self.report.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
        false
    }
}

impl<R: Request> Children<R> {
    pub(crate) fn new(config: &Forking, service: &Arc<Service<R>>) -> io::Result<Children<R>> {
        let context = |e| crate::error::context(e, "cannot make the forking reaper's epoll set");
        let epoll = Epoll::new().map_err(context)?;
        let wake = EventFd::new().map_err(context)?;
        epoll.add(wake.as_raw_fd(), WAKE, Interest::READ_EDGE_ONLY).map_err(context)?;
        Ok(Children {
            config: config.clone(),
            service: Arc::clone(service),
            live: Arc::new(AtomicUsize::new(0)),
            reaper: Arc::new(Reaper { epoll, wake, state: parking_lot::Mutex::new(Watched::default()) }),
        })
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
        let pipe = process::pipe().and_then(|(rx, tx)| process::set_nonblocking(&rx).map(|()| (rx, tx)));
        let (report_rx, report_tx) = match pipe {
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
        self.watch(Child { pid, pipe: File::from(report_rx), report: Vec::new(), peer, slot });
    }

    /// Hands a new child to the reaper, starting it if none runs.
    fn watch(&self, child: Child) {
        let shared = &self.service.shared;
        let pid = child.pid;
        let (unwatched, start) = {
            let mut w = self.reaper.state.lock();
            let token = w.next_token;
            w.next_token += 1;
            let added = self.reaper.epoll.add(child.pipe.as_raw_fd(), token, Interest::READ_LEVEL);
            if added.is_err() {
                w.polled.push(token);
            }
            w.children.insert(token, child);
            (added.err(), !std::mem::replace(&mut w.running, true))
        };
        if let Some(e) = unwatched {
            self.reaper.wake.signal();
            log::warn!("{}: cannot watch child {pid}'s pipe ({e}); looking at it on a timer", shared.name);
        }
        if !start {
            return;
        }
        let (reaper, service, live) = (Arc::clone(&self.reaper), Arc::clone(&self.service), Arc::clone(&self.live));
        let spawned = super::spawn(shared, "socketserver-reaper", REAPER_STACK, move || reap(&reaper, &service, &live));
        if let Err(e) = spawned {
            log::error!("{}: cannot start the reaper thread ({e}); waiting for the children here", shared.name);
            reap(&self.reaper, &self.service, &self.live);
        }
    }

    pub(crate) fn finish(self) -> bool {
        let shared = &self.service.shared;
        shared.wait_drained(|| self.live.load(SeqCst) == 0 && shared.threads.load(SeqCst) == 0)
    }
}

/// The reaper: reads every child's report as it comes and reaps each child
/// once its pipe has ended and it has exited; returns when no child is left.
fn reap<R>(reaper: &Reaper, service: &Service<R>, live: &AtomicUsize) {
    let mut events = Events::with_capacity(64);
    let mut recheck = RECHECK_FIRST;
    let mut epoll_failed = false;
    loop {
        let timeout = {
            let mut w = reaper.state.lock();
            let w = &mut *w;
            if w.children.is_empty() {
                w.running = false;
                return;
            }
            if epoll_failed {
                w.polled = w.children.keys().copied().collect();
            }
            (!w.polled.is_empty()).then_some(recheck)
        };
        let ready = if epoll_failed {
            std::thread::sleep(timeout.unwrap_or(RECHECK_MAX));
            0
        } else {
            match reaper.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(e) => {
                    log::error!(
                        "{}: the reaper's epoll_wait failed ({e}); looking at children on a timer",
                        service.shared.name
                    );
                    epoll_failed = true;
                    continue;
                }
            }
        };
        let mut ended = Vec::new();
        {
            let mut w = reaper.state.lock();
            let w = &mut *w;
            for token in events.tokens().take(ready) {
                let Some(child) = w.children.get_mut(&token) else { continue };
                if child.read_report() && !w.polled.contains(&token) {
                    let _ = reaper.epoll.delete(child.pipe.as_raw_fd());
                    w.polled.push(token);
                    recheck = RECHECK_FIRST;
                }
            }
            let children = &mut w.children;
            w.polled.retain(|token| {
                let Some(child) = children.get_mut(token) else { return false };
                child.read_report();
                match service.shared.children.try_wait(child.pid) {
                    Ok(None) => true,
                    status => {
                        if let Some(child) = children.remove(token) {
                            ended.push((child, status.map(|code| code.unwrap_or(-1))));
                        }
                        false
                    }
                }
            });
            if ended.is_empty() && !w.polled.is_empty() {
                recheck = (recheck * 2).min(RECHECK_MAX);
            }
        }
        for (child, status) in ended {
            conclude(service, live, child, status);
        }
    }
}

/// Counts and reports how a reaped child's request ended, then releases it.
fn conclude<R>(service: &Service<R>, live: &AtomicUsize, child: Child, status: io::Result<i32>) {
    let Child { pid, report, peer, slot, .. } = child;
    let stats = &service.shared.stats;
    // A child whose TLS handshake completed says so in its exit code.
    let status = status.map(|code| match code {
        CHILD_TLS_DONE..128 => {
            service.count_handshake();
            code - CHILD_TLS_DONE
        }
        code => code,
    });
    // A request never admitted is not completed, as elsewhere.
    let completed =
        !matches!(status, Ok(CHILD_REFUSED | CHILD_CLOSED | CHILD_PREAMBLE_FAILED | CHILD_TLS_FAILED));
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
            service.not_admitted(&peer, Admission::Failed(io::Error::other(why)));
        }
        Ok(CHILD_TLS_FAILED) => {
            let why = String::from_utf8_lossy(&report).trim().to_string();
            service.not_admitted(&peer, Admission::TlsFailed(io::Error::other(why)));
        }
        Ok(code) => {
            Counters::bump(&stats.handler_errors);
            if code == Outcome::Panicked as i32 {
                Counters::bump(&stats.panics);
            }
            report_errors(service, &peer, &report, code);
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
