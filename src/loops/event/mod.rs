//! The event strategy's loop: connections parked in one `epoll` set
//! between requests, holding no thread and no read buffer; polling threads
//! that run a ready connection's handler themselves (no hand-off per
//! request); a monitor that keeps the timers of parked connections and
//! notices a handler that blocks, handing what its thread had not started
//! to another poller, up to `max_workers` threads.
//!
//! One file per job:
//! * [`state`]: a connection's state word and its named transitions (the
//!   only code that changes it), model-checked with `loom`;
//! * [`registry`]: connections by generation-carrying token;
//! * [`timers`]: one ordered set of deadlines, at most one entry per connection
//!   and kind;
//! * [`slots`]: the polling slots (`pollers` of them): who may wait in
//!   epoll, and the transitions that take a slot from a blocked handler;
//! * [`poller`]: the polling threads: wait in epoll while holding a slot,
//!   accept, run handlers, park; without a slot, park as idle, retire;
//! * [`monitor`]: the monitor thread: expire timers, start threads for
//!   blocked pollers, resume accepting after a back-off.
//!
//! This file holds what they share: the reactor, a connection, and the
//! start and the drain of the loop.

mod monitor;
mod poller;
mod registry;
mod slots;
mod state;
mod timers;

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use self::poller::Poller;
use self::registry::Registry;
use self::state::{Due, Park, State, Timer};
use self::timers::{Entry, Timers};
use super::Core;
use super::errors::Backoff;
use crate::deadline::Deadline;
use crate::net::Listener;
use crate::request::{ParkKind, StreamRequest};
use crate::service::Service;
use crate::strategy::{self, Event};
use crate::sys::epoll::{Epoll, EventFd, Interest};

/// The atomics the state word is made of: `loom`'s when model-checking.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
}

/// No deadline.
const NEVER: u64 = u64::MAX;

/// Tokens that are not connections.
const LISTENER: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;
const CAPACITY: u64 = u64::MAX - 2;

/// A connection's request while it is parked.
struct Parked {
    req: Box<StreamRequest>,
    /// `setup` has run.
    started: bool,
    /// What it waits for (its close, when `req.is_closing()`).
    kind: ParkKind,
}

/// One connection the reactor holds.
struct Conn {
    state: State,
    /// The request, while parked.
    parked: Mutex<Option<Parked>>,
    /// When it last parked, and its deadline then (`NEVER`: none), in
    /// nanoseconds from the reactor's start; whether that park was at a
    /// request boundary (where the drain window applies). Written by its
    /// runner before the park's transition, read by the monitor to tell
    /// whether a timer entry is due.
    parked_at: AtomicU64,
    deadline: AtomicU64,
    boundary: AtomicBool,
    /// The time of its queued entry per timer (`Timer::index`), `NEVER`
    /// when none; changed only under the timers' lock.
    queued: [AtomicU64; 2],
    /// It is registered for writability too (its answer waits for the
    /// peer, or its close lingers); only its runner changes it.
    writing: AtomicBool,
    /// An event said the peer closed (or the connection failed): its end of
    /// stream may be waiting behind the bytes a read returns, and no event
    /// will say so again.
    hup: AtomicBool,
}

/// What a park asks of a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arm {
    No,
    /// Newly armed: no entry is queued for it.
    New,
    /// Queued, but for later than this park's deadline: move it.
    Earlier,
}

/// Work besides epoll events: stolen from a blocked thread, or due timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// Run the connection (an event a blocked poller had not got to).
    Ready(u64),
    /// Run the connection again: it served its turn's budget and yielded
    /// (the poller that takes it looks at epoll before its next queued
    /// work, so that a connection queued again and again starves nobody).
    Yielded(u64),
    /// The connection sat parked past this timer's deadline; the monitor
    /// took it (`RUNNING`) for a poller to expire, or serve if its request
    /// came meanwhile.
    Expire(u64, Timer),
}

struct Reactor {
    core: Arc<Core>,
    service: Arc<Service<StreamRequest>>,
    config: Event,
    listener: Listener,
    epoll: Epoll,
    /// Wakes one waiting poller per signal (edge-triggered).
    wake: EventFd,
    conns: RwLock<Registry<Arc<Conn>>>,
    ready: Mutex<VecDeque<Work>>,
    /// Lock order: `timers`, then `conns`.
    timers: Mutex<Timers>,
    /// The clock of `parked_at` and `stopped_at`.
    epoch: Instant,
    /// When the shutdown came (nanoseconds from `epoch`); the drain window
    /// of a connection parked before it runs from then.
    stopped_at: AtomicU64,
    /// The monitor sleeps on it.
    tick: Condvar,
    pollers: Mutex<Vec<Arc<Poller>>>,
    /// Polling threads alive (started and not yet gone).
    alive: sync::AtomicUsize,
    /// Polling slots no thread holds.
    free: slots::Free,
    /// Threads without a slot or a handler, last parked last.
    idle: Mutex<Vec<std::thread::Thread>>,
    /// Polling threads waiting in epoll now.
    waiting: std::sync::atomic::AtomicUsize,
    stopping: AtomicBool,
    exit: AtomicBool,
    /// The listener is disarmed until capacity frees up.
    full: AtomicBool,
    /// The monitor sleeps longer than a look (no handler was running when
    /// it went to sleep): a handler that starts and could strand something
    /// wakes it.
    resting: AtomicBool,
    /// The accept errors' back-off episode, kept between batches.
    backoff: Mutex<Backoff>,
    /// Accepting is paused (out of descriptors) until then: the monitor
    /// re-arms the listener.
    accept_paused: Mutex<Option<Instant>>,
    /// The blocking hint every connection gets (made once: it holds the
    /// reactor weakly).
    hint: std::sync::OnceLock<crate::request::BlockingHint>,
}

/// Serves `listener` by the event strategy until the shutdown, then drains
/// by the drain rule; `stopped` runs once accepting has stopped.
pub(crate) fn serve(
    listener: &Listener,
    core: &Arc<Core>,
    service: &Arc<Service<StreamRequest>>,
    config: &Event,
    stopped: impl FnOnce(),
) -> io::Result<()> {
    let shared = &core.shared;
    let reactor = Arc::new(Reactor {
        core: Arc::clone(core),
        service: Arc::clone(service),
        config: config.clone(),
        listener: listener.try_clone()?,
        epoll: Epoll::new()?,
        wake: EventFd::new()?,
        conns: RwLock::new(Registry::default()),
        ready: Mutex::new(VecDeque::new()),
        timers: Mutex::new(Timers::default()),
        epoch: Instant::now(),
        stopped_at: AtomicU64::new(0),
        tick: Condvar::new(),
        pollers: Mutex::new(Vec::new()),
        alive: sync::AtomicUsize::new(0),
        free: slots::Free::new(config.pollers.max(1)),
        idle: Mutex::new(Vec::new()),
        waiting: std::sync::atomic::AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        exit: AtomicBool::new(false),
        full: AtomicBool::new(false),
        resting: AtomicBool::new(false),
        backoff: Mutex::new(Backoff::default()),
        accept_paused: Mutex::new(None),
        hint: std::sync::OnceLock::new(),
    });
    reactor.epoll.add(reactor.wake.as_raw_fd(), WAKE, Interest::READ_EDGE_ONLY)?;
    reactor.epoll.add(shared.waker.notify_fd(), CAPACITY, Interest::READ_EDGE_ONLY)?;
    reactor.epoll.add(reactor.listener.as_raw_fd(), LISTENER, Interest::READ_ONESHOT)?;
    let mut started = Ok(());
    for _ in 0..config.pollers.max(1) {
        if let Err(e) = reactor.spawn_poller() {
            started = Err(e);
            break;
        }
    }
    let monitor = Arc::clone(&reactor);
    if let Err(e) = strategy::spawn(shared, "socketserver-monitor", 256 * 1024, move || monitor.monitor()) {
        started = started.and(Err(e));
    }
    if let Err(e) = started {
        shared.request_stop(Duration::ZERO);
        reactor.finish(stopped);
        return Err(crate::error::context(e, format_args!("{}: cannot start the event loop's threads", shared.name)));
    }
    let waited = super::ServiceClock::new(core, service).wait_for_stop(shared, service);
    reactor.finish(stopped);
    waited
}

impl Reactor {
    /// Nanoseconds from the reactor's start (never 0 once anything ran).
    fn now_nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos().min(u128::from(u64::MAX)) as u64
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch.checked_add(Duration::from_nanos(nanos)).unwrap_or(self.epoch)
    }

    /// Whether a parked connection is past `timer`'s deadline at `now`, and
    /// if not, when it will be (`None`: the timer does not apply to its
    /// park).
    fn due(&self, conn: &Conn, timer: Timer, now: Instant) -> (Due, Option<Instant>) {
        let at = self.deadline(conn, timer);
        match at {
            None => (Due::Never, None),
            Some(at) if at <= now => (Due::Now, Some(at)),
            Some(at) => (Due::Later, Some(at)),
        }
    }

    /// When a parked connection is due for `timer`; `None`: never.
    fn deadline(&self, conn: &Conn, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::Deadline => match conn.deadline.load(SeqCst) {
                NEVER => None,
                at => Some(self.instant(at)),
            },
            Timer::Drain => {
                if !conn.boundary.load(SeqCst) || !self.stopping.load(SeqCst) {
                    return None;
                }
                let parked = self.instant(conn.parked_at.load(SeqCst));
                let stopped = self.instant(self.stopped_at.load(SeqCst));
                Deadline::after(parked.max(stopped), self.core.opts.drain_window).instant()
            }
        }
    }

    fn spawn_poller(self: &Arc<Self>) -> io::Result<()> {
        let poller = Arc::new(Poller::default());
        self.pollers.lock().push(Arc::clone(&poller));
        self.alive.fetch_add(1, SeqCst);
        self.core.shared.stats.workers_total.fetch_add(1, SeqCst);
        let me = Arc::clone(self);
        let started = Arc::clone(&poller);
        let spawned = strategy::spawn(&self.core.shared, "socketserver-poller", self.config.stack_size, move || {
            me.poll_loop(&started);
        });
        if let Err(e) = spawned {
            poller.gone.store(true, SeqCst);
            self.alive.fetch_sub(1, SeqCst);
            self.core.shared.stats.workers_total.fetch_sub(1, SeqCst);
            return Err(e);
        }
        Ok(())
    }

    /// After the shutdown: stop accepting, let parked connections drain by
    /// the window and running ones by the grace period, then stop the
    /// threads.
    fn finish(self: &Arc<Self>, stopped: impl FnOnce()) {
        let shared = &self.core.shared;
        self.stopped_at.store(self.now_nanos(Instant::now()), SeqCst);
        self.stopping.store(true, SeqCst);
        let _ = self.epoll.delete(self.listener.as_raw_fd());
        stopped();
        // Every connection gets the window from now (one that runs now gets
        // it from its park: `park` arms the drain timer while stopping).
        {
            let mut timers = self.timers.lock();
            let conns = self.conns.read();
            let mut earliest = false;
            for token in conns.tokens() {
                let Some(conn) = conns.get(token) else { continue };
                if conn.state.arm(Timer::Drain) {
                    // A connection that does not wait at a boundary now
                    // gets the window from its next park there.
                    let at = self.deadline(conn, Timer::Drain).unwrap_or_else(Instant::now);
                    earliest |=
                        self.queue(&mut timers, conn, Entry { at: self.now_nanos(at), token, timer: Timer::Drain });
                }
            }
            if earliest {
                self.tick.notify_all();
            }
        }
        shared.wait_drained(|| self.conns.read().len() == 0);
        // Every poller must see the exit: a level-triggered descriptor wakes
        // them all (an edge would wake one). The monitor, under the lock it
        // checks the flag with, or it could miss the wake-up and sleep on.
        {
            let _timers = self.timers.lock();
            self.exit.store(true, SeqCst);
            self.tick.notify_all();
        }
        // Idle threads look at the flag after going on the stack.
        for idle in self.idle.lock().drain(..) {
            idle.unpark();
        }
        match EventFd::new() {
            Ok(exit) => {
                exit.signal();
                let _ = self.epoll.add(exit.as_raw_fd(), WAKE, Interest::READ_LEVEL);
                shared.wait_drained(|| shared.threads.load(SeqCst) == 0);
            }
            Err(e) => {
                log::error!("{}: cannot wake the polling threads to leave: {e}", shared.name);
                shared.wait_drained(|| shared.threads.load(SeqCst) == 0);
            }
        }
    }

    /// Adds a new connection, parked and not started; `None` if it cannot
    /// be watched (it is closed).
    fn register(&self, req: StreamRequest) -> Option<u64> {
        let fd = req.fd();
        let conn = Arc::new(Conn {
            state: State::new(),
            parked: Mutex::new(Some(Parked { req: Box::new(req), started: false, kind: ParkKind::Boundary })),
            parked_at: AtomicU64::new(self.now_nanos(Instant::now())),
            deadline: AtomicU64::new(NEVER),
            boundary: AtomicBool::new(false),
            writing: AtomicBool::new(false),
            queued: [AtomicU64::new(NEVER), AtomicU64::new(NEVER)],
            hup: AtomicBool::new(false),
        });
        let token = self.conns.write().insert(Arc::clone(&conn));
        if let Err(e) = self.epoll.add(fd, token, Interest::READ_EDGE) {
            log::error!("{}: cannot watch a connection: {e}", self.core.name());
            let conn = self.conns.write().remove(token);
            let parked = conn.and_then(|c| c.parked.lock().take());
            if let Some(p) = parked {
                self.service.release(*p.req);
            }
            return None;
        }
        Some(token)
    }

    /// Parks a connection its runner is done with for now: its request
    /// stored, its deadline and timers set, its interest in writability as
    /// the park needs. `Err`: notified meanwhile, the request is given back
    /// to run again.
    fn park(
        &self,
        token: u64,
        conn: &Conn,
        parked: Parked,
        deadline: Option<Instant>,
    ) -> Result<(), Box<StreamRequest>> {
        let now = Instant::now();
        let closing = parked.req.is_closing();
        let kind = parked.kind;
        let wants_write = closing || kind == ParkKind::Write;
        if wants_write != conn.writing.load(Relaxed) {
            let interest = if wants_write { Interest::READ_WRITE_EDGE } else { Interest::READ_EDGE };
            // Re-armed: what the socket can do now is reported again.
            if self.epoll.modify(parked.req.fd(), token, interest).is_ok() {
                conn.writing.store(wants_write, Relaxed);
            }
        }
        let boundary = matches!(kind, ParkKind::Boundary | ParkKind::Yield) && !closing;
        let counted = parked.started && !closing;
        conn.parked_at.store(self.now_nanos(now), SeqCst);
        conn.deadline.store(deadline.map_or(NEVER, |at| self.now_nanos(at).min(NEVER - 1)), SeqCst);
        conn.boundary.store(boundary, SeqCst);
        *conn.parked.lock() = Some(parked);
        let stats = &self.core.shared.stats;
        if counted {
            stats.parked.fetch_add(1, Relaxed);
        }
        let drain = boundary && self.stopping.load(SeqCst);
        match conn.state.park(deadline.is_some(), drain) {
            Park::Again => {
                if counted {
                    stats.parked.fetch_sub(1, Relaxed);
                }
                match conn.parked.lock().take() {
                    Some(p) => Err(p.req),
                    None => Ok(()), // cannot be: nobody else takes it while RUNNING
                }
            }
            Park::Parked { idle: armed, drain, .. } => {
                let earlier = !armed
                    && deadline.is_some_and(|d| self.now_nanos(d) < conn.queued[Timer::Deadline.index()].load(SeqCst));
                let deadline = if armed {
                    Arm::New
                } else if earlier {
                    Arm::Earlier
                } else {
                    Arm::No
                };
                let drain = if drain { Arm::New } else { Arm::No };
                if deadline != Arm::No || drain != Arm::No {
                    self.arm(token, conn, deadline, drain);
                }
                Ok(())
            }
        }
    }

    /// Queues (or moves earlier) the timer entries of a park: `deadline`,
    /// the connection's own (newly armed, or earlier than the one queued);
    /// `drain`, the drain window's (newly armed).
    fn arm(&self, token: u64, conn: &Conn, deadline: Arm, drain: Arm) {
        let mut timers = self.timers.lock();
        let mut earliest = false;
        for (arm, timer) in [(deadline, Timer::Deadline), (drain, Timer::Drain)] {
            if arm == Arm::No {
                continue;
            }
            // (A timer newly armed that no longer applies is queued for now:
            // it comes up and is dropped, clearing its bit.)
            let at = self.now_nanos(self.deadline(conn, timer).unwrap_or_else(Instant::now));
            let queued = conn.queued[timer.index()].load(SeqCst);
            match (arm, queued) {
                (Arm::New, _) => {}
                // Fired since (taken, or queued again for this deadline).
                (_, NEVER) => continue,
                (_, queued) if at >= queued => continue,
                (_, queued) => {
                    timers.remove(&Entry { at: queued, token, timer });
                }
            }
            earliest |= self.queue(&mut timers, conn, Entry { at, token, timer });
        }
        if earliest {
            self.tick.notify_one();
        }
    }

    /// Queues an entry and notes it in its connection; whether it is now
    /// the earliest.
    fn queue(&self, timers: &mut Timers, conn: &Conn, entry: Entry) -> bool {
        conn.queued[entry.timer.index()].store(entry.at, SeqCst);
        timers.push(entry)
    }

    /// Takes a connection out of the registry, and its timer entries out of
    /// the timers. Its descriptor leaves the epoll set when it is closed (no
    /// `EPOLL_CTL_DEL`: it is the last handle but for a moment's upgrade by
    /// the force-closer, whose stale event finds no token).
    fn forget(&self, token: u64) {
        // Bound first: the registry's guard must be gone before the timers'
        // lock is taken (lock order: timers, then conns).
        let removed = self.conns.write().remove(token);
        let Some(conn) = removed else { return };
        if conn.state.timers() == 0 {
            return;
        }
        let mut timers = self.timers.lock();
        for timer in [Timer::Deadline, Timer::Drain] {
            let at = conn.queued[timer.index()].swap(NEVER, SeqCst);
            if at != NEVER {
                timers.remove(&Entry { at, token, timer });
            }
        }
    }

    /// Hands work to a poller: one waiting in epoll is woken; if none is,
    /// the monitor sees the queue at its next look.
    fn push_work(&self, work: Work) {
        self.ready.lock().push_back(work);
        self.wake.signal();
    }

    /// Wakes the monitor if it sleeps longer than a look.
    fn wake_monitor(&self) {
        if self.resting.load(SeqCst) && self.resting.swap(false, SeqCst) {
            // Under the lock it waits with: it cannot miss both the flag
            // and the wake-up.
            let _timers = self.timers.lock();
            self.tick.notify_one();
        }
    }

    /// Test-only: widens a race window (see [`windows`]).
    #[cfg(test)]
    fn window(&self, at: windows::Window) {
        windows::reach(self.core.name(), at);
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn window(&self, _: windows::Window) {}
}

/// Test-only hooks that widen race windows: a test registers a hook for
/// its server (by name) and the reactor calls it at the named points.
pub(crate) mod windows {
    /// Where a hook is called.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) enum Window {
        /// The monitor has just taken a connection whose timer came due.
        Expire,
        /// An idle thread waited its keep-alive for a slot and retires.
        Retire,
        /// A poller (holding a slot) is about to wait in epoll.
        Wait,
        /// A poller's wait in epoll returned.
        Waited,
        /// A poller took events from epoll and has not started them.
        Batch,
        /// The monitor is about to look at the pollers.
        Look,
    }

    #[cfg(test)]
    type Hook = std::sync::Arc<dyn Fn(Window) + Send + Sync>;

    #[cfg(test)]
    static HOOKS: parking_lot::Mutex<Vec<(String, Hook)>> = parking_lot::Mutex::new(Vec::new());

    /// Calls `hook` at every window of the server named `name` until the
    /// returned guard drops.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn hook(name: &str, hook: impl Fn(Window) + Send + Sync + 'static) -> Guard {
        HOOKS.lock().push((name.to_string(), std::sync::Arc::new(hook)));
        Guard(name.to_string())
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) struct Guard(String);

    #[cfg(all(test, not(loom)))]
    impl Drop for Guard {
        fn drop(&mut self) {
            HOOKS.lock().retain(|(n, _)| *n != self.0);
        }
    }

    #[cfg(test)]
    pub(crate) fn reach(name: &str, at: Window) {
        let hooks: Vec<Hook> = HOOKS.lock().iter().filter(|(n, _)| n == name).map(|(_, h)| h.clone()).collect();
        for h in hooks {
            h(at);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
