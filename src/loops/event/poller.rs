//! The polling threads: each, while it holds a polling slot (see
//! [`slots`](super::slots)), waits in the one epoll set, accepts when the
//! listener is ready, and runs a ready connection's handler itself until
//! the connection parks or ends. A thread whose slot was taken while its
//! handler blocked takes a free one afterwards, or parks as idle until one
//! is handed to it; an idle thread retires after `keep_alive`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::slots::{self, Run};
use super::state::{Notify, Timer};
use super::windows::Window;
use super::{CAPACITY, Conn, LISTENER, Parked, Reactor, WAKE, Work};
use crate::deadline::Deadline;
use crate::loops::admit::{Accepted, accept_request};
use crate::loops::errors::{AcceptErrors, Verdict};
use crate::request::{BlockingHint, CloseStep, ParkKind, StreamRequest};
use crate::service::Step;
use crate::sys;
use crate::sys::epoll::{Events, Interest};

/// Connections accepted per wake-up of the listener.
const ACCEPT_BATCH: usize = 64;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 64;

/// A polling thread, as the monitor sees it.
#[derive(Debug)]
pub(super) struct Poller {
    /// Odd while it runs a handler, bumped at each start and end; whether
    /// it holds a polling slot (see [`slots`](super::slots)). A thread
    /// without one is not looked at: the monitor's cost does not grow with
    /// the threads that stay blocked.
    pub(super) run: Run,
    /// What the monitor saw at its last look.
    pub(super) seen: AtomicU64,
    /// When its latest handler run began (nanoseconds from the reactor's
    /// start), stored before the run's `begin`.
    pub(super) started: AtomicU64,
    /// Events it has taken from epoll and not started yet.
    pub(super) batch: Mutex<VecDeque<u64>>,
    /// It has left.
    pub(super) gone: AtomicBool,
    /// Its thread id, to tell blocked (sleeping) from preempted (runnable);
    /// 0 until its thread is in its loop.
    pub(super) tid: AtomicI32,
    /// Looks that found it in its current handler run, long and runnable
    /// (0: not watched since the run began, or since it was found starved).
    pub(super) strikes: AtomicU32,
    /// Its CPU-time clock (`NO_CLOCK`: none), and its CPU time and the time
    /// (from the reactor's start) at the first of those looks: a runnable
    /// thread that had little CPU since is starved, not computing.
    pub(super) cpu_clock: AtomicI64,
    pub(super) strike_cpu: AtomicU64,
    pub(super) strike_at: AtomicU64,
}

/// `Poller::cpu_clock` when the thread's clock could not be had.
pub(super) const NO_CLOCK: i64 = i64::MIN;

impl Default for Poller {
    fn default() -> Self {
        Poller {
            run: Run::without_slot(),
            seen: AtomicU64::new(0),
            started: AtomicU64::new(0),
            batch: Mutex::new(VecDeque::new()),
            gone: AtomicBool::new(false),
            tid: AtomicI32::new(0),
            strikes: AtomicU32::new(0),
            cpu_clock: AtomicI64::new(NO_CLOCK),
            strike_cpu: AtomicU64::new(0),
            strike_at: AtomicU64::new(0),
        }
    }
}

/// What a thread without a slot found.
enum Found {
    Slot,
    /// Its keep-alive passed with none: it leaves.
    Retire,
    Exit,
}

impl Reactor {
    pub(super) fn poll_loop(self: &Arc<Self>, me: &Arc<Poller>) {
        if let Some(clock) = sys::thread_cpu_clock() {
            me.cpu_clock.store(i64::from(clock), SeqCst);
        }
        // Counted as starting (the monitor starts no other for the free
        // slot it came for) until it has tried to take one.
        if self.free.take() {
            me.run.reclaim();
        }
        me.tid.store(sys::thread_id(), SeqCst);
        CURRENT.with(|c| *c.borrow_mut() = Some(Arc::clone(me)));
        let mut events = Events::with_capacity(EVENTS);
        // After a piece of queued work, what epoll has is taken (without
        // waiting) before the next piece: a connection that yields and is
        // queued again must not keep the events of others waiting.
        let mut look_first = false;
        loop {
            if self.exit.load(SeqCst) {
                break;
            }
            if slots::holds(me.run.load()) && self.shrink.answer() {
                // A boost slot the monitor takes back: out of play, and
                // this thread without a slot.
                me.run.hand_back();
            }
            if !slots::holds(me.run.load()) {
                match self.find_slot(me) {
                    Found::Slot => continue,
                    Found::Retire => {
                        self.window(Window::Retire);
                        break;
                    }
                    Found::Exit => break,
                }
            }
            let (work, more) = match look_first {
                true => (None, false),
                false => {
                    let mut ready = self.ready.lock();
                    let work = ready.pop_front();
                    (work, !ready.is_empty())
                }
            };
            if let Some(work) = work {
                // Wake-ups signalled back to back reach one waiter (the
                // eventfd is one ready item until a waiter takes it): pass
                // one on while work is left, or one thread does it all.
                if more && self.waiting.load(SeqCst) > 0 {
                    self.wake.signal();
                }
                // (Only a connection that yielded is queued again and again.)
                look_first = matches!(work, Work::Yielded(_));
                self.do_work(me, work);
                continue;
            }
            let timeout = look_first.then_some(Duration::ZERO);
            look_first = false;
            self.waiting.fetch_add(1, SeqCst);
            self.window(Window::Wait);
            let waited = self.epoll.wait(&mut events, timeout);
            self.window(Window::Waited);
            self.waiting.fetch_sub(1, SeqCst);
            match waited {
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
            if events.len() > 0 {
                self.window(Window::Batch);
            }
            // (A thread whose slot was retaken meanwhile has had its batch
            // taken too: it finds it empty.)
            loop {
                let next = me.batch.lock().pop_front();
                let Some(token) = next else { break };
                self.dispatch(me, token);
            }
        }
        CURRENT.with(|c| c.borrow_mut().take());
        me.gone.store(true, SeqCst);
        if slots::holds(me.run.load()) {
            // Leaving with its slot (the exit, or epoll failed): it is free.
            self.free.give();
        }
        self.alive.fetch_sub(1, SeqCst);
        self.core.shared.stats.workers_total.fetch_sub(1, SeqCst);
        // One fewer to poll: if the rest are all in handlers, the monitor
        // must be looking.
        self.wake_monitor();
    }

    fn dispatch(self: &Arc<Self>, me: &Poller, token: u64) {
        match token {
            WAKE => {}
            LISTENER => self.accept_batch(Some(me)),
            CAPACITY => {
                self.core.shared.waker.drain_notify();
                self.rearm_listener();
            }
            token => self.run(me, token),
        }
    }

    fn do_work(self: &Arc<Self>, me: &Poller, work: Work) {
        match work {
            Work::Ready(token) | Work::Yielded(token) => self.dispatch(me, token),
            Work::Expire(token, timer) => {
                // Already RUNNING: the monitor took it.
                let Some(conn) = self.conns.read().get(token).cloned() else { return };
                self.run_owned(me, token, &conn, Some(timer));
            }
        }
    }

    /// Accepts up to a batch of connections, registers each, and queues it
    /// to run (its `setup` and first `handle` run at once, as Python's).
    /// Out of descriptors, it leaves the listener disarmed and the monitor
    /// arms it again after the back-off: no poller sleeps, and one episode
    /// is logged once, however many batches it spans.
    pub(super) fn accept_batch(self: &Arc<Self>, me: Option<&Poller>) {
        let core = &self.core;
        let mut kept = self.backoff.lock();
        let stop_fd = core.shared.waker.stop_fd();
        let mut errors = AcceptErrors::resume(core.name(), &core.shared.stats, stop_fd, std::mem::take(&mut *kept));
        let mut paused = None;
        for _ in 0..ACCEPT_BATCH {
            if self.stopping.load(SeqCst) || !self.can_accept() {
                break;
            }
            match accept_request(&self.listener, core, &self.service) {
                Ok(Accepted::Request(mut req)) => {
                    errors.succeeded();
                    req.set_parking(self.blocking_hint());
                    match (self.register(req), me) {
                        (Some(token), Some(me)) => me.batch.lock().push_back(token),
                        // The monitor, taking events for blocked pollers: the
                        // first poller free starts it.
                        (Some(token), None) => self.ready.lock().push_back(Work::Ready(token)),
                        (None, _) => {}
                    }
                }
                Ok(Accepted::Refused | Accepted::Dropped) => errors.succeeded(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => match errors.judge(e) {
                    Ok(Verdict::Skip) => {}
                    Ok(Verdict::Pause(wait)) => {
                        paused = Some(Instant::now() + wait);
                        break;
                    }
                    Err(e) => {
                        log::error!("{}: the event loop stops accepting: {e}", core.name());
                        *kept = errors.into_backoff();
                        core.shared.request_stop(core.opts.grace);
                        return;
                    }
                },
            }
        }
        *kept = errors.into_backoff();
        drop(kept);
        match paused {
            Some(until) => {
                *self.accept_paused.lock() = Some(until);
                let _timers = self.timers.lock();
                self.resting.store(false, SeqCst);
                self.tick.notify_one();
            }
            None => self.rearm_listener(),
        }
    }

    fn can_accept(&self) -> bool {
        let active = self.core.shared.stats.active.load(SeqCst);
        self.core.opts.max_connections.is_none_or(|max| active < max)
    }

    /// Arms the listener again, unless the server is stopping, full (then
    /// freed capacity re-arms it) or backing off (then the monitor does).
    pub(super) fn rearm_listener(&self) {
        if self.stopping.load(SeqCst) || self.accept_paused.lock().is_some() {
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

    /// Bytes came (or the connection is new, or work was handed over): run
    /// it here, or tell the thread that runs it to go on.
    fn run(self: &Arc<Self>, me: &Poller, token: u64) {
        let Some(conn) = self.conns.read().get(token).cloned() else { return };
        match conn.state.notify() {
            Notify::Run => self.run_owned(me, token, &conn, None),
            Notify::Runner => {}
        }
    }

    /// Runs a connection this thread owns (`RUNNING`) until it parks or
    /// ends. `expired`: the monitor took it for this timer — unless what it
    /// waited for came meanwhile (bytes, or the peer's end, waiting to be
    /// read; room for its answer): then it goes on, not expired.
    fn run_owned(self: &Arc<Self>, me: &Poller, token: u64, conn: &Arc<Conn>, expired: Option<Timer>) {
        let Some(Parked { mut req, mut started, kind }) = conn.parked.lock().take() else { return };
        req.resumed(conn.hup.load(SeqCst));
        let stats = &self.core.shared.stats;
        if req.is_closing() {
            self.close(token, conn, req, expired.is_some());
            return;
        }
        // Counted as parked from its first park on.
        stats.parked.fetch_sub(u64::from(started), Relaxed);
        if let Some(timer) = expired {
            match (timer, kind) {
                (_, ParkKind::Write) => req.expire(kind),
                // A yielded connection is queued to run, its request perhaps
                // buffered: it is not idle.
                (_, ParkKind::Yield) => {}
                _ if sys::readable_now(req.fd()) => {}
                (Timer::Drain, _) => req.expire_drained(),
                (Timer::Deadline, kind) => req.expire(kind),
            }
        }
        if req.has_backlog() {
            // The answer goes out before the handler runs again.
            if req.send_backlog_now().is_err() {
                self.close(token, conn, req, true);
                return;
            }
            if req.has_backlog() && expired.is_none() {
                let deadline = req.park_deadline(ParkKind::Write, Instant::now());
                let parked = Parked { req, started, kind: ParkKind::Write };
                match self.park(token, conn, parked, deadline) {
                    Ok(()) => return,
                    Err(again) => req = again,
                }
            }
        }
        loop {
            // Events in hand while another poller waits: they go to it now,
            // before this handler runs (it may block, and the monitor would
            // only notice at its next look).
            if self.waiting.load(Relaxed) > 0 {
                self.share_batch(me);
            }
            me.started.store(self.now_nanos(Instant::now()), SeqCst);
            me.run.begin();
            // The monitor is only needed if this handler could strand
            // something: nobody else waits in epoll, or this thread holds
            // events it has not started.
            if self.resting.load(Relaxed) && (self.waiting.load(SeqCst) == 0 || !me.batch.lock().is_empty()) {
                self.wake_monitor();
            }
            stats.workers_busy.fetch_add(1, Relaxed);
            let step = self.service.step(&mut req, !started);
            stats.workers_busy.fetch_sub(1, Relaxed);
            // (Without its slot now, the thread still finishes this
            // connection's turn: it owns it.)
            me.run.end();
            let kind = match step {
                Step::Refused => {
                    self.forget(token);
                    return; // dropped: closed, never completed
                }
                Step::Waiting => ParkKind::Preamble,
                Step::Done(_) => {
                    self.close(token, conn, req, false);
                    return;
                }
                Step::Parked => {
                    started = true;
                    match req.park() {
                        Ok(kind) => kind,
                        Err(_) => {
                            self.close(token, conn, req, false);
                            return;
                        }
                    }
                }
            };
            if kind == ParkKind::Boundary && !req.buffered().is_empty() {
                continue; // read past the park: serve it before parking
            }
            let deadline = req.park_deadline(kind, Instant::now());
            match self.park(token, conn, Parked { req, started, kind }, deadline) {
                Ok(()) if kind == ParkKind::Yield => {
                    // To the back of the queue: others first.
                    self.push_work(Work::Yielded(token));
                    return;
                }
                Ok(()) => return,
                Err(again) => {
                    // Bytes came while it ran: on again, here.
                    req = again;
                    req.resumed(conn.hup.load(SeqCst));
                }
            }
        }
    }

    /// Ends a connection on the loop: its backlog sent and its close
    /// lingering as the socket allows, parked in between, never waiting on
    /// this thread (a close used to linger here for up to 500 ms, and a
    /// buffered answer to a peer that does not read blocked the poller for
    /// ever). `expired`: its deadline passed, give up.
    fn close(&self, token: u64, conn: &Conn, mut req: Box<StreamRequest>, expired: bool) {
        loop {
            let CloseStep::Wait(until) = req.close_step(Instant::now(), expired) else {
                self.forget(token);
                self.service.release(*req);
                return;
            };
            let parked = Parked { req, started: true, kind: ParkKind::Write };
            match self.park(token, conn, parked, until) {
                Ok(()) => return,
                Err(again) => req = again,
            }
        }
    }

    /// Hands the events this poller took and has not started to the
    /// shared queue, and wakes one waiting poller (which passes a wake-up
    /// on while work is left).
    fn share_batch(&self, me: &Poller) {
        let mut batch = me.batch.lock();
        if batch.is_empty() {
            return;
        }
        self.ready.lock().extend(batch.drain(..).map(Work::Ready));
        drop(batch);
        self.wake.signal();
    }

    /// What a request under this loop calls before it waits on its thread
    /// (see [`Reactor::blocking`]): one for all, cloned per connection.
    fn blocking_hint(self: &Arc<Self>) -> BlockingHint {
        let hint = self.hint.get_or_init(|| {
            let reactor = Arc::downgrade(self);
            Arc::new(move || {
                if let Some(reactor) = reactor.upgrade() {
                    reactor.blocking();
                }
            })
        });
        Arc::clone(hint)
    }

    /// The handler on this thread is about to wait in the library's own I/O
    /// (a read it cannot park, a write past the backlog) or said it will
    /// (`StreamRequest::blocking`): its slot goes at once to the idle thread
    /// that parked last, or a new one, and what it had not started to the
    /// others — the hand-off Go makes at `entersyscallblock`, not at the
    /// monitor's next look. At `max_workers` the monitor looks at once (it
    /// polls for them).
    fn blocking(self: &Arc<Self>) {
        let Some(me) = CURRENT.with(|c| c.borrow().clone()) else { return };
        if !me.run.give_up() {
            return; // not in a handler, or holding no slot (given up already in this run)
        }
        self.share_batch(&me);
        self.free.give();
        if self.unpark_idle() {
            return;
        }
        if self.alive.load(SeqCst) < self.config.max_workers && !self.exit.load(SeqCst) {
            match self.spawn_poller() {
                Ok(()) => return,
                Err(e) => log::warn!("{}: cannot start another polling thread: {e}", self.core.name()),
            }
        }
        let _timers = self.timers.lock();
        self.resting.store(false, SeqCst);
        self.tick.notify_one();
    }

    /// A thread without a slot: takes a free one, or parks as idle (last
    /// in, first out) until one is handed to it, its keep-alive passes (it
    /// retires) or the loop exits.
    fn find_slot(&self, me: &Poller) -> Found {
        let deadline = Deadline::after(Instant::now(), self.config.keep_alive);
        let id = std::thread::current().id();
        loop {
            if self.free.take() {
                me.run.reclaim();
                return Found::Slot;
            }
            // On the stack before the exit and the free slots are read
            // again: whoever raises either after this finds it there.
            self.idle.lock().push(std::thread::current());
            let took = self.free.take();
            if took || self.exit.load(SeqCst) {
                self.idle.lock().retain(|t| t.id() != id);
                if took {
                    me.run.reclaim();
                    return Found::Slot;
                }
                return Found::Exit;
            }
            match deadline.left(Instant::now()) {
                None => std::thread::park(),
                Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                Some(_) => {}
            }
            // Handed a slot (popped), timed out, or woken for nothing:
            // off the stack either way; past the keep-alive, a last look.
            self.idle.lock().retain(|t| t.id() != id);
            if deadline.passed(Instant::now()) {
                if !self.free.take() {
                    return Found::Retire;
                }
                me.run.reclaim();
                return Found::Slot;
            }
        }
    }

    /// Hands a free slot to the idle thread that parked last; `false`: none
    /// is idle.
    pub(super) fn unpark_idle(&self) -> bool {
        let idle = self.idle.lock().pop();
        idle.map(|thread| thread.unpark()).is_some()
    }
}

thread_local! {
    /// The poller this thread is, for the blocking hint.
    static CURRENT: std::cell::RefCell<Option<Arc<Poller>>> = const { std::cell::RefCell::new(None) };
}
