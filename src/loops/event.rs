//! The event strategy's loop: connections parked in one `epoll` set
//! between requests, holding no thread and no read buffer; polling threads
//! that run a ready connection's handler themselves (no hand-off per
//! request); a monitor that keeps the idle and drain timers of parked
//! connections (one FIFO queue per timeout, as Apache's event MPM) and
//! notices a handler that blocks, handing what its thread had not started
//! to another poller, up to `max_workers` threads.
//!
//! A connection's state is an atomic: `PARKED` (its request stored, no
//! thread), `RUNNING` (one thread has its request), `NOTIFIED` (bytes came
//! while it ran: run it again before parking). Events, timers and stolen
//! work all go through the same transition, so a request is only ever run
//! by one thread.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::Core;
use super::accept::{Accepted, accept_request};
use super::errors::{AcceptErrors, Next};
use crate::net::Listener;
use crate::request::StreamRequest;
use crate::service::{Service, Step};
use crate::strategy::{self, Event};
use crate::sys;
use crate::sys::epoll::{Epoll, EventFd, Events, Interest};

/// Tokens that are not connections.
const LISTENER: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;
const CAPACITY: u64 = u64::MAX - 2;

/// How long a handler may run before the monitor counts its thread as
/// blocked and lets another poll in its place.
const STUCK_AFTER: Duration = Duration::from_millis(2);
/// A thread still in one handler but runnable (preempted, or computing) is
/// only counted as stuck after this many looks in a row: a busy machine
/// preempts pollers all the time, and more threads would not help.
const RUNNABLE_STRIKES: u32 = 10;
/// Connections accepted per wake-up of the listener.
const ACCEPT_BATCH: usize = 64;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 64;

const PARKED: u8 = 0;
const RUNNING: u8 = 1;
const NOTIFIED: u8 = 2;

/// One connection the reactor holds.
struct Conn {
    state: AtomicU8,
    /// The request, while parked; `started`: `setup` has run.
    parked: Mutex<Option<(Box<StreamRequest>, bool)>>,
    /// Counts parks, so that a timer set at one park does not close the
    /// connection at a later one.
    seq: AtomicU64,
    /// An event said the peer closed (or the connection failed): its end of
    /// stream may be waiting behind the bytes a read returns, and no event
    /// will say so again.
    hup: AtomicBool,
}

/// Work besides epoll events: stolen from a blocked thread, or due timers.
#[derive(Clone, Copy, Debug)]
enum Work {
    /// Run the connection (an event a blocked poller had not got to).
    Ready(u64),
    /// The connection sat parked for the idle timeout: close it.
    Idle(u64),
    /// The connection sat parked through the drain window: close it.
    Drained(u64),
}

/// A FIFO of deadlines: every entry gets now + the same timeout, so the
/// front is always the next to expire. Stale entries (the connection ran
/// since) are skipped when they come up.
#[derive(Debug, Default)]
struct Fifo(VecDeque<(Instant, u64, u64)>);

impl Fifo {
    fn due(&mut self, now: Instant) -> Option<(u64, u64)> {
        match self.0.front() {
            Some(&(at, token, seq)) if at <= now => {
                self.0.pop_front();
                Some((token, seq))
            }
            _ => None,
        }
    }

    fn next(&self) -> Option<Instant> {
        self.0.front().map(|&(at, _, _)| at)
    }
}

#[derive(Debug, Default)]
struct Timers {
    idle: Fifo,
    drain: Fifo,
}

/// A polling thread, as the monitor sees it.
#[derive(Default)]
struct Poller {
    /// Odd while it runs a handler; bumped at each start and end.
    run: AtomicU64,
    /// What the monitor saw at its last look.
    seen: AtomicU64,
    /// Events it has taken from epoll and not started yet.
    batch: Mutex<VecDeque<u64>>,
    /// It has left.
    gone: AtomicBool,
    /// Its thread id, to tell blocked (sleeping) from preempted (runnable);
    /// 0 until its thread is in its loop.
    tid: std::sync::atomic::AtomicI32,
    /// Looks in a row that found it in the same handler run, runnable.
    strikes: std::sync::atomic::AtomicU32,
}

/// Connections by token: index in the low 32 bits, generation in the high.
#[derive(Default)]
struct Slab {
    slots: Vec<(u32, Option<Arc<Conn>>)>,
    free: Vec<u32>,
    len: usize,
}

impl Slab {
    fn insert(&mut self, conn: Arc<Conn>) -> u64 {
        self.len += 1;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = Some(conn);
        (u64::from(slot.0) << 32) | u64::from(index)
    }

    fn get(&self, token: u64) -> Option<&Arc<Conn>> {
        let (generation, index) = ((token >> 32) as u32, token as u32);
        match self.slots.get(index as usize) {
            Some((g, Some(conn))) if *g == generation => Some(conn),
            _ => None,
        }
    }

    fn remove(&mut self, token: u64) -> Option<Arc<Conn>> {
        let (generation, index) = ((token >> 32) as u32, token as u32);
        match self.slots.get_mut(index as usize) {
            Some((g, conn @ Some(_))) if *g == generation => {
                self.len -= 1;
                self.free.push(index);
                conn.take()
            }
            _ => None,
        }
    }

    fn tokens(&self) -> Vec<u64> {
        let live = self.slots.iter().enumerate().filter(|(_, (_, c))| c.is_some());
        live.map(|(i, (g, _))| (u64::from(*g) << 32) | i as u64).collect()
    }
}

struct Reactor {
    core: Arc<Core>,
    service: Arc<Service<StreamRequest>>,
    config: Event,
    listener: Listener,
    epoll: Epoll,
    /// Wakes one waiting poller per signal (edge-triggered).
    wake: EventFd,
    conns: RwLock<Slab>,
    ready: Mutex<VecDeque<Work>>,
    timers: Mutex<Timers>,
    /// The monitor sleeps on it.
    tick: Condvar,
    pollers: Mutex<Vec<Arc<Poller>>>,
    alive: AtomicUsize,
    waiting: AtomicUsize,
    stopping: AtomicBool,
    exit: AtomicBool,
    /// The listener is disarmed until capacity frees up.
    full: AtomicBool,
    /// The monitor sleeps with nothing to time and nobody in a handler: the
    /// next handler to start wakes it.
    monitor_idle: AtomicBool,
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
        conns: RwLock::new(Slab::default()),
        ready: Mutex::new(VecDeque::new()),
        timers: Mutex::new(Timers::default()),
        tick: Condvar::new(),
        pollers: Mutex::new(Vec::new()),
        alive: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        exit: AtomicBool::new(false),
        full: AtomicBool::new(false),
        monitor_idle: AtomicBool::new(false),
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
    while !shared.stopping() {
        sys::poll(&[shared.waker.stop_fd()], &mut [false], None)?;
    }
    reactor.finish(stopped);
    Ok(())
}

impl Reactor {
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
        self.stopping.store(true, SeqCst);
        let _ = self.epoll.delete(self.listener.as_raw_fd());
        stopped();
        // Every connection gets the window from now; one that runs now gets
        // it again when it parks (`park` sees `stopping`).
        let window = self.core.opts.drain_window;
        let tokens = self.conns.read().tokens();
        {
            let now = Instant::now();
            let mut timers = self.timers.lock();
            for token in tokens {
                if let Some(conn) = self.conns.read().get(token) {
                    timers.drain.0.push_back((now + window, token, conn.seq.load(SeqCst)));
                }
            }
        }
        self.tick.notify_all();
        shared.wait_drained(|| self.conns.read().len == 0);
        // Every poller must see the exit: a level-triggered descriptor wakes
        // them all (an edge would wake one). The monitor, under the lock it
        // checks the flag with, or it could miss the wake-up and sleep on.
        {
            let _timers = self.timers.lock();
            self.exit.store(true, SeqCst);
            self.tick.notify_all();
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

    fn poll_loop(self: &Arc<Self>, me: &Arc<Poller>) {
        me.tid.store(sys::thread_id(), SeqCst);
        let mut events = Events::with_capacity(EVENTS);
        loop {
            if self.exit.load(SeqCst) {
                break;
            }
            let (work, more) = {
                let mut ready = self.ready.lock();
                let work = ready.pop_front();
                (work, !ready.is_empty())
            };
            if let Some(work) = work {
                // Wake-ups signalled back to back reach one waiter (the
                // eventfd is one ready item until a waiter takes it): pass
                // one on while work is left, or one thread does it all.
                if more && self.waiting.load(SeqCst) > 0 {
                    self.wake.signal();
                }
                self.do_work(me, work);
                continue;
            }
            let surplus = self.alive.load(SeqCst) > self.config.pollers;
            self.waiting.fetch_add(1, SeqCst);
            let waited = self.epoll.wait(&mut events, surplus.then_some(self.config.keep_alive));
            self.waiting.fetch_sub(1, SeqCst);
            match waited {
                Ok(0) if surplus && self.retire() => break,
                Ok(_) => {}
                Err(e) => {
                    log::error!("{}: epoll_wait failed: {e}", self.core.name());
                    break;
                }
            }
            // Before anyone runs them: an event that says the peer closed
            // is the last one the connection gets.
            for token in events.hangups() {
                if let Some(conn) = self.conns.read().get(token) {
                    conn.hup.store(true, SeqCst);
                }
            }
            me.batch.lock().extend(events.tokens());
            loop {
                let next = me.batch.lock().pop_front();
                let Some(token) = next else { break };
                self.dispatch(me, token);
            }
        }
        me.gone.store(true, SeqCst);
        self.alive.fetch_sub(1, SeqCst);
        self.core.shared.stats.workers_total.fetch_sub(1, SeqCst);
    }

    /// A surplus poller that waited `keep_alive` for nothing leaves.
    fn retire(&self) -> bool {
        let target = self.config.pollers;
        self.alive.fetch_update(SeqCst, SeqCst, |n| (n > target).then_some(n)).is_ok()
    }

    fn dispatch(self: &Arc<Self>, me: &Poller, token: u64) {
        match token {
            WAKE => {}
            LISTENER => self.accept_batch(me),
            CAPACITY => {
                self.core.shared.waker.drain_notify();
                self.rearm_listener();
            }
            token => self.run(me, token),
        }
    }

    fn do_work(self: &Arc<Self>, me: &Poller, work: Work) {
        match work {
            Work::Ready(token) => self.dispatch(me, token),
            Work::Idle(token) | Work::Drained(token) => {
                // Already RUNNING: the monitor took it from PARKED.
                let Some(conn) = self.conns.read().get(token).cloned() else { return };
                self.run_owned(me, token, &conn, Some(work));
            }
        }
    }

    /// Accepts up to a batch of connections, registers each, and queues it
    /// to run (its `setup` and first `handle` run at once, as Python's).
    fn accept_batch(self: &Arc<Self>, me: &Poller) {
        let core = &self.core;
        let mut errors = AcceptErrors::new(core.name(), &core.shared.stats, core.shared.waker.stop_fd());
        for _ in 0..ACCEPT_BATCH {
            if self.stopping.load(SeqCst) || !self.can_accept() {
                break;
            }
            match accept_request(&self.listener, core, &self.service) {
                Ok(Accepted::Request(mut req)) => {
                    errors.succeeded();
                    req.set_parking(true);
                    if let Some(token) = self.register(req) {
                        me.batch.lock().push_back(token);
                    }
                }
                Ok(Accepted::Refused | Accepted::Dropped) => errors.succeeded(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => match errors.failed(e) {
                    Ok(Next::Now) => {}
                    Ok(Next::Paused) => break,
                    Err(e) => {
                        log::error!("{}: the event loop stops accepting: {e}", core.name());
                        core.shared.request_stop(core.opts.grace);
                        return;
                    }
                },
            }
        }
        self.rearm_listener();
    }

    fn can_accept(&self) -> bool {
        let active = self.core.shared.stats.active.load(SeqCst);
        self.core.opts.max_connections.is_none_or(|max| active < max)
    }

    /// Arms the listener again, unless the server is stopping or full
    /// (then freed capacity re-arms it).
    fn rearm_listener(&self) {
        if self.stopping.load(SeqCst) {
            return;
        }
        let shared = &self.core.shared;
        if !self.can_accept() {
            self.full.store(true, SeqCst);
            shared.set_waiting(true);
            if !self.can_accept() {
                return; // a release after the flag was raised notifies
            }
        }
        self.full.store(false, SeqCst);
        shared.set_waiting(false);
        let _ = self.epoll.modify(self.listener.as_raw_fd(), LISTENER, Interest::READ_ONESHOT);
    }

    /// Adds a new connection, parked and not started; `None` if it cannot
    /// be watched (it is closed).
    fn register(&self, req: StreamRequest) -> Option<u64> {
        let fd = req.fd();
        let conn = Arc::new(Conn {
            state: AtomicU8::new(PARKED),
            parked: Mutex::new(Some((Box::new(req), false))),
            seq: AtomicU64::new(0),
            hup: AtomicBool::new(false),
        });
        let token = self.conns.write().insert(Arc::clone(&conn));
        if let Err(e) = self.epoll.add(fd, token, Interest::READ_EDGE) {
            log::error!("{}: cannot watch a connection: {e}", self.core.name());
            let conn = self.conns.write().remove(token);
            let req = conn.and_then(|c| c.parked.lock().take());
            if let Some((req, _)) = req {
                self.service.release(*req);
            }
            return None;
        }
        Some(token)
    }

    /// Bytes came (or the connection is new): run it here, or tell the
    /// thread that runs it to go on.
    fn run(self: &Arc<Self>, me: &Poller, token: u64) {
        let Some(conn) = self.conns.read().get(token).cloned() else { return };
        let mut state = conn.state.load(Acquire);
        loop {
            let next = match state {
                PARKED => RUNNING,
                RUNNING => NOTIFIED,
                _ => return,
            };
            match conn.state.compare_exchange(state, next, AcqRel, Acquire) {
                Ok(_) if next == RUNNING => break,
                Ok(_) => return, // the runner will go round again
                Err(now) => state = now,
            }
        }
        self.run_owned(me, token, &conn, None);
    }

    /// Runs a connection this thread owns (`RUNNING`) until it parks or ends.
    fn run_owned(self: &Arc<Self>, me: &Poller, token: u64, conn: &Arc<Conn>, expired: Option<Work>) {
        let Some((mut req, mut started)) = conn.parked.lock().take() else { return };
        req.resumed(conn.hup.load(SeqCst));
        // Counted as parked from its first park on.
        self.core.shared.stats.parked.fetch_sub(u64::from(started), Relaxed);
        match expired {
            Some(Work::Idle(_)) => req.expire_idle(),
            Some(Work::Drained(_)) => req.expire_drained(),
            _ => {}
        }
        let stats = &self.core.shared.stats;
        loop {
            me.run.fetch_add(1, SeqCst);
            // The monitor is only needed if this handler could strand
            // something: nobody else waits in epoll, or this thread holds
            // events it has not started.
            if self.monitor_idle.load(Relaxed)
                && (self.waiting.load(SeqCst) == 0 || !me.batch.lock().is_empty())
                && self.monitor_idle.swap(false, SeqCst)
            {
                // Marked busy first, then the wake-up, under the timers'
                // lock: the monitor cannot miss both.
                let _timers = self.timers.lock();
                self.tick.notify_one();
            }
            stats.workers_busy.fetch_add(1, Relaxed);
            let step = self.service.step(&mut req, !started);
            stats.workers_busy.fetch_sub(1, Relaxed);
            me.run.fetch_add(1, SeqCst);
            started = true;
            if step == Step::Refused {
                self.conns.write().remove(token);
                return; // dropped: closed, never completed
            }
            if step != Step::Parked || req.park().is_err() {
                self.close(token, req);
                return;
            }
            if !req.buffered().is_empty() {
                continue; // read past the park: serve it before parking
            }
            let seq = conn.seq.fetch_add(1, SeqCst) + 1;
            *conn.parked.lock() = Some((req, started));
            stats.parked.fetch_add(1, Relaxed);
            match conn.state.compare_exchange(RUNNING, PARKED, AcqRel, Acquire) {
                Ok(_) => {
                    self.set_timers(token, seq);
                    return;
                }
                Err(_) => {
                    // Bytes came while it ran: on again, here.
                    conn.state.store(RUNNING, SeqCst);
                    stats.parked.fetch_sub(1, Relaxed);
                    let Some((r, _)) = conn.parked.lock().take() else { return };
                    req = r;
                    req.resumed(conn.hup.load(SeqCst));
                }
            }
        }
    }

    /// The idle timeout of a parked connection, and the drain window when
    /// stopping: a queued deadline each, no thread, no timer of its own.
    fn set_timers(&self, token: u64, seq: u64) {
        let idle = self.core.opts.idle_timeout;
        let stopping = self.stopping.load(SeqCst);
        if idle.is_none() && !stopping {
            return;
        }
        let now = Instant::now();
        let mut timers = self.timers.lock();
        let was_empty = timers.idle.0.is_empty() && timers.drain.0.is_empty();
        if let Some(idle) = idle {
            timers.idle.0.push_back((now + idle, token, seq));
        }
        if stopping {
            timers.drain.0.push_back((now + self.core.opts.drain_window, token, seq));
        }
        drop(timers);
        if was_empty {
            self.tick.notify_one();
        }
    }

    /// Ends a connection. Its descriptor leaves the epoll set when it is
    /// closed (no `EPOLL_CTL_DEL`: it is the last handle but for a moment's
    /// upgrade by the force-closer, whose stale event finds no token).
    fn close(&self, token: u64, req: Box<StreamRequest>) {
        self.conns.write().remove(token);
        self.service.release(*req);
    }

    /// Hands work to a poller: one waiting in epoll is woken; if none is,
    /// the monitor sees the queue at its next look.
    fn push_work(&self, work: Work) {
        self.ready.lock().push_back(work);
        self.wake.signal();
    }

    /// The monitor: timers of parked connections, and polling threads
    /// stuck in a handler.
    fn monitor(self: &Arc<Self>) {
        let mut timers = self.timers.lock();
        loop {
            if self.exit.load(SeqCst) {
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some((token, seq)) = timers.idle.due(now) {
                due.push(Work::Idle(token).with_seq(seq));
            }
            while let Some((token, seq)) = timers.drain.due(now) {
                due.push(Work::Drained(token).with_seq(seq));
            }
            drop(timers);
            self.expire_all(due);
            let busy = self.watch_pollers();
            timers = self.timers.lock();
            // Read again under the lock it will wait with: a timer set
            // while the lock was free was notified to nobody (the drain
            // window's, set at the shutdown, then never expired: the
            // process waited out the grace period).
            let next = [timers.idle.next(), timers.drain.next()].into_iter().flatten().min();
            let until = match (next, busy) {
                (Some(at), true) => Some(at.min(Instant::now() + STUCK_AFTER)),
                (Some(at), false) => Some(at),
                (None, true) => Some(Instant::now() + STUCK_AFTER),
                (None, false) => None,
            };
            match until {
                Some(at) => {
                    self.tick.wait_until(&mut timers, at);
                }
                None => {
                    // Nothing to time: sleep until a timer is set, a handler
                    // starts, or the exit.
                    self.monitor_idle.store(true, SeqCst);
                    if self.pollers.lock().iter().all(|p| p.run.load(SeqCst) % 2 == 0) && !self.exit.load(SeqCst) {
                        self.tick.wait(&mut timers);
                    }
                    self.monitor_idle.store(false, SeqCst);
                }
            }
        }
    }

    /// Due timers: each connection still parked as it was when its timer
    /// was set is taken (`RUNNING`) and queued to close; the pollers are
    /// woken once each, not once per connection.
    fn expire_all(&self, due: Vec<(Work, u64)>) {
        let mut taken = Vec::new();
        {
            let conns = self.conns.read();
            for (work, seq) in due {
                let (Work::Idle(token) | Work::Drained(token) | Work::Ready(token)) = work;
                let Some(conn) = conns.get(token) else { continue };
                if conn.seq.load(SeqCst) != seq
                    || conn.state.compare_exchange(PARKED, RUNNING, AcqRel, Acquire).is_err()
                {
                    continue;
                }
                if conn.seq.load(SeqCst) != seq {
                    // Resumed and parked again in between: not idle after all.
                    conn.state.store(PARKED, SeqCst);
                    continue;
                }
                taken.push(work);
            }
        }
        if taken.is_empty() {
            return;
        }
        let n = taken.len();
        self.ready.lock().extend(taken);
        for _ in 0..n.min(self.alive.load(SeqCst)) {
            self.wake.signal();
        }
    }

    /// Looks at every poller: one in the same handler run as a tick ago is
    /// blocked — what it took from epoll and not started goes to another,
    /// and when nobody is left to poll, a new thread starts. Returns
    /// whether any poller is in a handler.
    fn watch_pollers(self: &Arc<Self>) -> bool {
        let mut busy = false;
        let mut stuck = 0;
        // Threads still starting will take work or poll: not counted twice.
        let mut starting = 0;
        let mut stolen = Vec::new();
        {
            let mut pollers = self.pollers.lock();
            pollers.retain(|p| !p.gone.load(SeqCst));
            for p in pollers.iter() {
                if p.tid.load(SeqCst) == 0 {
                    starting += 1;
                    continue;
                }
                let run = p.run.load(SeqCst);
                let seen = p.seen.swap(run, SeqCst);
                if run % 2 == 1 {
                    busy = true;
                    if seen != run {
                        p.strikes.store(0, SeqCst);
                        continue;
                    }
                    // Blocked in a system call, or runnable for long.
                    let runnable = sys::thread_runnable(p.tid.load(SeqCst));
                    let strikes = if runnable { p.strikes.fetch_add(1, SeqCst) + 1 } else { RUNNABLE_STRIKES };
                    if strikes >= RUNNABLE_STRIKES {
                        stuck += 1;
                        stolen.extend(p.batch.lock().drain(..));
                    }
                }
            }
        }
        for token in stolen {
            self.push_work(Work::Ready(token));
        }
        let queued = self.ready.lock().len();
        let alive = self.alive.load(SeqCst);
        let free = alive.saturating_sub(stuck);
        let nobody_polls = self.waiting.load(SeqCst) == 0 && starting == 0 && (free == 0 || queued > 0);
        if stuck > 0 && nobody_polls && !self.exit.load(SeqCst) {
            // As many threads as are blocked, for the work nobody has
            // started (at least one, to poll): a burst of requests that
            // all block doubles the threads each look rather than adding
            // one, and a poller caught for a moment in a system call with
            // a batch in hand adds one, not a thread per connection of it.
            let room = self.config.max_workers.saturating_sub(alive);
            for _ in 0..queued.min(stuck).max(1).min(room) {
                if let Err(e) = self.spawn_poller() {
                    log::warn!("{}: cannot start another polling thread: {e}", self.core.name());
                    break;
                }
            }
        }
        busy
    }
}

impl Work {
    fn with_seq(self, seq: u64) -> (Work, u64) {
        (self, seq)
    }
}
