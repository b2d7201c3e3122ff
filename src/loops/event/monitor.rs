//! The monitor thread: expires the timers of parked connections, notices
//! pollers blocked in a handler (taking their polling slot and what they
//! had not started, and handing the slot to an idle thread or a new one),
//! and resumes accepting after a back-off.
//!
//! While a handler runs on a thread holding a slot it looks every
//! [`QUICK_LOOK`] after a look that found one blocked in a handler run
//! [`LONG_RUN`] or longer, or after a handler woke it, doubling to [`STUCK_AFTER`] while looks
//! find nothing (Go's `sysmon`: quick while handlers block, cheap while
//! they do not); otherwise it sleeps until the
//! next deadline with `resting` raised: the first handler that starts and
//! could strand something (nobody else waits in epoll, or its thread holds
//! events it has not started) wakes it, whatever timers are queued. A look
//! costs a few atomic loads per slot holder; a thread's `/proc` stat is
//! read only for a slot holder 50 µs or more into a handler run, and
//! threads without a slot are not looked at, so 256 threads blocked in
//! `sleep` cost about what one does.

use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use super::poller::{NO_CLOCK, Poller};
use super::slots;
use super::state::Fired;
use super::timers::Entry;
use super::windows::Window;
use super::{CAPACITY, LISTENER, NEVER, Reactor, WAKE, Work};
use crate::sys;
use crate::sys::epoll::Events;

/// The longest a look waits while a handler runs: how long a handler may
/// run, once handlers have not blocked for a while, before the monitor
/// counts its thread as blocked and lets another poll in its place.
pub(super) const STUCK_AFTER: Duration = Duration::from_millis(2);
/// The look after one that found a long handler run (or after a handler
/// woke the monitor): handlers are blocking, and the next one is handed on
/// within about [`LONG_RUN`] and this.
pub(super) const QUICK_LOOK: Duration = Duration::from_micros(50);
/// A handler run at least this long at a look is long: blocked (its thread
/// asleep in a system call), its slot is taken at once; runnable, after
/// [`RUNNABLE_AFTER`].
const LONG_RUN: Duration = Duration::from_micros(50);
/// A thread still in one handler but runnable (preempted, or computing)
/// loses its slot only after it has been seen so this long, and not when
/// it hardly had a CPU meanwhile: a busy machine preempts pollers all the
/// time, and more threads would not help.
const RUNNABLE_AFTER: Duration = Duration::from_millis(20);
/// How long without a slot taken from a blocked handler before a boost slot
/// is taken back (one per look).
const BOOST_HOLD: Duration = Duration::from_secs(1);
/// Connections taken for expiry per hold of the timers' lock.
const EXPIRE_BATCH: usize = 256;
/// Events the monitor takes per look when it polls for blocked pollers.
const EVENTS: usize = 64;

/// What one look at the pollers found, after it took the slots of the
/// blocked.
#[derive(Clone, Copy, Debug)]
struct Look {
    /// Slots no thread holds.
    free: usize,
    /// Threads parked as idle (each takes a slot handed to it).
    idle: usize,
    /// Started, not yet in their loop (each takes a free slot first).
    starting: usize,
    /// Waiting in epoll.
    waiting: usize,
    alive: usize,
    max_workers: usize,
}

/// What the monitor does about a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    /// Idle threads to unpark for free slots.
    wake: usize,
    /// Threads to start for the free slots left, within `max_workers`.
    start: usize,
    /// Slots are free, nobody waits in epoll and no thread can come: take
    /// what epoll has for them (accept and register newcomers, queue what
    /// is ready) until a handler returns and its thread takes a slot.
    poll_for_them: bool,
}

/// Free slots go to idle threads first (no thread start), then to new
/// threads, within `max_workers`; threads already starting take theirs.
fn plan(look: &Look) -> Plan {
    let wake = look.free.min(look.idle);
    let left = (look.free - wake).saturating_sub(look.starting);
    let start = left.min(look.max_workers.saturating_sub(look.alive));
    let poll_for_them = look.free > 0 && look.waiting == 0 && wake + start + look.starting == 0;
    Plan { wake, start, poll_for_them }
}

/// A thread that used less than half of `wall` on a CPU, while runnable
/// throughout, was waiting for one: starved, not computing.
fn starved(used: Duration, wall: Duration) -> bool {
    used * 2 < wall
}

/// A poller's CPU time so far in nanoseconds (0 when it cannot be read).
fn cpu_nanos(p: &Poller) -> u64 {
    match p.cpu_clock.load(SeqCst) {
        NO_CLOCK => 0,
        clock => sys::cpu_time(clock as libc::clockid_t).map_or(0, |t| t.as_nanos().min(u128::from(u64::MAX)) as u64),
    }
}

impl Reactor {
    pub(super) fn monitor(self: &Arc<Self>) {
        sys::precise_timers();
        let mut events = Events::with_capacity(EVENTS);
        let mut every = STUCK_AFTER;
        let mut boost = slots::Boost::new(self.config.pollers.max(1));
        let mut last_retake = Instant::now();
        let mut timers = self.timers.lock();
        loop {
            if self.exit.load(SeqCst) {
                return;
            }
            let now = Instant::now();
            let now_nanos = self.now_nanos(now);
            let mut expired = Vec::new();
            {
                let conns = self.conns.read();
                while expired.len() < EXPIRE_BATCH
                    && let Some(entry) = timers.pop_due(now_nanos)
                {
                    // (A closed connection's entries went with it.)
                    let Some(conn) = conns.get(entry.token) else { continue };
                    let queued = &conn.queued[entry.timer.index()];
                    if queued.load(SeqCst) != entry.at {
                        continue; // not its entry (cannot be: moved entries are removed)
                    }
                    queued.store(NEVER, SeqCst);
                    let mut later = None;
                    let fired = conn.state.fire(entry.timer, |_generation| {
                        let (due, at) = self.due(conn, entry.timer, now);
                        later = at;
                        due
                    });
                    match fired {
                        Fired::Disarmed => {}
                        Fired::Expire => {
                            self.window(Window::Expire);
                            expired.push(Work::Expire(entry.token, entry.timer));
                        }
                        Fired::Later => {
                            // Parked again since: queued for its real deadline.
                            let at = later.map_or(now_nanos, |at| self.now_nanos(at));
                            self.queue(&mut timers, conn, Entry { at, ..entry });
                        }
                    }
                }
            }
            let resume_accepting = {
                let mut paused = self.accept_paused.lock();
                let due = paused.is_some_and(|at| at <= now);
                if due {
                    *paused = None;
                }
                due
            };
            drop(timers);
            if resume_accepting {
                self.rearm_listener();
            }
            let more = expired.len() == EXPIRE_BATCH;
            self.queue_expired(expired);
            if more {
                // The pollers close these while the next are taken (a shutdown
                // expires every idle connection at once: 10,000 of them used
                // to be taken under the timers' lock that closing needs).
                timers = self.timers.lock();
                continue;
            }
            let Watched { busy, long } = self.watch_pollers(&mut events, &mut boost, &mut last_retake);
            every = if long { QUICK_LOOK } else { (every * 2).min(STUCK_AFTER) };
            timers = self.timers.lock();
            // Read again under the lock it will wait with: a timer set
            // while the lock was free was notified to nobody.
            let paused = *self.accept_paused.lock();
            // A boost slot is taken back a second after the last slot taken
            // from a blocked handler, resting or not.
            let unboost = boost.boosted().then(|| (last_retake + BOOST_HOLD).max(Instant::now() + STUCK_AFTER));
            let next = [timers.next().map(|at| self.instant(at)), paused, unboost].into_iter().flatten().min();
            // Resting (asleep past a look) only while no handler runs,
            // checked after raising the flag: a handler that starts after
            // the check sees the flag and wakes it; and only once the looks
            // have backed off to `STUCK_AFTER` (a few ms without handlers):
            // under a stream of short handlers, resting at the first look
            // that found none had every next handler wake it, and the
            // monitor took the CPU from the pollers (half the context
            // switches of closing 10,000 connections at a shutdown).
            let mut look = busy || every < STUCK_AFTER;
            if !look {
                self.resting.store(true, SeqCst);
                look = self.pollers.lock().iter().any(|p| {
                    let run = p.run.load();
                    slots::in_handler(run) && slots::holds(run)
                });
            }
            let until = match (next, look) {
                (Some(at), true) => Some(at.min(Instant::now() + every)),
                (Some(at), false) => Some(at),
                (None, true) => Some(Instant::now() + every),
                (None, false) => None,
            };
            if !self.exit.load(SeqCst) {
                let woken = match until {
                    Some(at) => !self.tick.wait_until(&mut timers, at).timed_out(),
                    None => {
                        self.tick.wait(&mut timers);
                        true
                    }
                };
                // Woken from a rest by a handler that could strand work (or
                // a blocking hint): look quickly from here.
                if woken && !look {
                    every = QUICK_LOOK;
                }
            }
            self.resting.store(false, SeqCst);
        }
    }

    /// Every poller is blocked and no more may start: takes what epoll has,
    /// without waiting, so that newcomers are still accepted and registered
    /// (parked, unstarted) and what is ready waits in the queue for the
    /// first poller free. It runs no handler itself.
    fn poll_for_the_blocked(self: &Arc<Self>, events: &mut Events) {
        if !matches!(self.epoll.wait(events, Some(Duration::ZERO)), Ok(n) if n > 0) {
            return;
        }
        for token in events.hangups() {
            if let Some(conn) = self.conns.read().get(token) {
                conn.hup.store(true, SeqCst);
            }
        }
        let tokens: Vec<u64> = events.tokens().collect();
        for token in tokens {
            match token {
                WAKE => {}
                LISTENER => self.accept_batch(None),
                CAPACITY => {
                    self.core.shared.waker.drain_notify();
                    self.rearm_listener();
                }
                token => self.ready.lock().push_back(Work::Ready(token)),
            }
        }
        // A thread with a slot may be back in epoll by now (or have been
        // signalled to take queued work: this took its wake-up): work in the
        // queue must not wait for it to wake on its own.
        if !self.ready.lock().is_empty() {
            self.wake.signal();
        }
    }

    /// Whether a poller runnable for its last looks had a CPU for less than
    /// half of that time (`false` when its CPU time cannot be read).
    fn starved(&self, p: &Poller) -> bool {
        let now = self.now_nanos(Instant::now());
        let wall = now.saturating_sub(p.strike_at.load(SeqCst));
        let used = cpu_nanos(p).saturating_sub(p.strike_cpu.load(SeqCst));
        p.cpu_clock.load(SeqCst) != NO_CLOCK && starved(Duration::from_nanos(used), Duration::from_nanos(wall))
    }

    /// Queues connections taken for expiry, and wakes pollers once each,
    /// not once per connection.
    fn queue_expired(&self, expired: Vec<Work>) {
        if expired.is_empty() {
            return;
        }
        let n = expired.len();
        self.ready.lock().extend(expired);
        for _ in 0..n.min(self.alive.load(SeqCst)) {
            self.wake.signal();
        }
    }

    /// Looks at every thread holding a slot: one in a handler run
    /// [`LONG_RUN`] or older, blocked (or runnable for [`RUNNABLE_AFTER`]),
    /// loses its slot and what it took from epoll and has not started; the
    /// boost grows or shrinks; free slots go to idle threads or new ones,
    /// and when none can come and nobody polls, the monitor polls.
    fn watch_pollers(
        self: &Arc<Self>,
        events: &mut Events,
        boost: &mut slots::Boost,
        last_retake: &mut Instant,
    ) -> Watched {
        self.window(Window::Look);
        let mut busy = false;
        let mut long = false;
        let mut retaken = 0;
        // Threads still starting will take a slot: not counted twice.
        let mut starting = 0;
        let mut stolen = Vec::new();
        let now = self.now_nanos(Instant::now());
        {
            let mut pollers = self.pollers.lock();
            pollers.retain(|p| !p.gone.load(SeqCst));
            for p in pollers.iter() {
                if p.tid.load(SeqCst) == 0 {
                    starting += 1;
                    continue;
                }
                let run = p.run.load();
                if !slots::in_handler(run) || !slots::holds(run) {
                    continue;
                }
                busy = true;
                if p.seen.swap(run, SeqCst) != run {
                    p.strikes.store(0, SeqCst); // a new run
                }
                // (Stored before the run began: at least this run's start.)
                let age = now.saturating_sub(p.started.load(SeqCst));
                if age < LONG_RUN.as_nanos() as u64 {
                    continue;
                }
                // Blocked in a system call, or runnable for long.
                // (By path, not a file each thread keeps open: threads come
                // and go, and a descriptor each is a leak to whoever counts.)
                let runnable = sys::thread_runnable(p.tid.load(SeqCst));
                // Only a blocked one makes the looks quick: a runnable one
                // is not taken before `RUNNABLE_AFTER`, and under plain load
                // a preempted poller (pinned, its CPU shared) kept the
                // monitor looking every 50 µs, taking that CPU from it.
                long |= !runnable;
                if runnable {
                    // Watched from its first runnable look on.
                    if p.strikes.fetch_add(1, SeqCst) == 0 {
                        p.strike_cpu.store(cpu_nanos(p), SeqCst);
                        p.strike_at.store(now, SeqCst);
                    }
                    if now.saturating_sub(p.strike_at.load(SeqCst)) < RUNNABLE_AFTER.as_nanos() as u64 {
                        continue;
                    }
                    if self.starved(p) {
                        // Runnable but hardly running: the CPUs are taken (by
                        // other processes, or other pollers), and a new thread
                        // would wait for one too. Watch again from here.
                        p.strikes.store(0, SeqCst);
                        continue;
                    }
                }
                // (The run may have ended since: then it keeps its slot.)
                if p.run.retake(run) {
                    retaken += 1;
                    stolen.extend(p.batch.lock().drain(..));
                }
            }
        }
        if !stolen.is_empty() {
            self.ready.lock().extend(stolen.into_iter().map(Work::Ready));
            self.wake.signal();
        }
        for _ in 0..retaken {
            self.free.give();
        }
        let looked = Instant::now();
        if retaken > 0 {
            *last_retake = looked;
        }
        // A boost only when the blocked handlers took every slot (nobody
        // left in epoll): one handler blocking at a time is served by the
        // slot handed on, and needs no more.
        let saturated = retaken > 0 && self.waiting.load(SeqCst) == 0;
        match boost.adjust(saturated, looked.saturating_duration_since(*last_retake) >= BOOST_HOLD) {
            1 => self.free.give(),
            -1 if self.free.take() => {}
            -1 => {
                // A holder answers at its next turn between handlers: one
                // waiting in epoll is woken for it.
                self.shrink.ask();
                self.wake.signal();
            }
            _ => {}
        }
        let look = Look {
            free: self.free.load(),
            idle: self.idle.lock().len(),
            starting,
            waiting: self.waiting.load(SeqCst),
            alive: self.alive.load(SeqCst),
            max_workers: self.config.max_workers,
        };
        let plan = plan(&look);
        if self.exit.load(SeqCst) {
            return Watched { busy, long };
        }
        for _ in 0..plan.wake {
            if !self.unpark_idle() {
                break;
            }
        }
        for _ in 0..plan.start {
            if let Err(e) = self.spawn_poller() {
                log::warn!("{}: cannot start another polling thread: {e}", self.core.name());
                break;
            }
        }
        if plan.poll_for_them {
            self.poll_for_the_blocked(events);
        }
        // Looking on while slots wait for a thread that only a returning
        // handler can be.
        Watched { busy: busy || plan.poll_for_them, long }
    }
}

/// What [`Reactor::watch_pollers`] saw.
struct Watched {
    /// A thread holding a slot is in a handler (or free slots wait for a
    /// thread): look again soon.
    busy: bool,
    /// A thread holding a slot was blocked in a handler run [`LONG_RUN`] or
    /// longer: look again quickly.
    long: bool,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn look(free: usize, idle: usize, waiting: usize, alive: usize) -> Look {
        Look { free, idle, starting: 0, waiting, alive, max_workers: 8 }
    }

    #[test]
    fn nothing_to_do_without_free_slots() {
        let p = plan(&look(0, 3, 0, 5));
        assert_eq!(p, Plan { wake: 0, start: 0, poll_for_them: false });
    }

    #[test]
    fn free_slots_go_to_idle_threads_first_then_new_ones() {
        assert_eq!(plan(&look(2, 1, 0, 5)), Plan { wake: 1, start: 1, poll_for_them: false });
        assert_eq!(plan(&look(1, 3, 0, 5)), Plan { wake: 1, start: 0, poll_for_them: false });
        let starting = Look { starting: 1, ..look(2, 0, 0, 5) };
        assert_eq!(plan(&starting), Plan { wake: 0, start: 1, poll_for_them: false }, "one is on its way");
    }

    #[test]
    fn new_threads_stop_at_max_workers_and_then_the_monitor_polls() {
        assert_eq!(plan(&look(3, 0, 0, 7)), Plan { wake: 0, start: 1, poll_for_them: false }, "the room left");
        assert_eq!(plan(&look(1, 0, 0, 8)), Plan { wake: 0, start: 0, poll_for_them: true });
        assert_eq!(plan(&look(1, 0, 1, 8)), Plan { wake: 0, start: 0, poll_for_them: false }, "one polls");
    }

    #[test]
    fn a_runnable_thread_that_hardly_ran_is_starved_not_computing() {
        let ms = Duration::from_millis;
        assert!(starved(ms(2), ms(20)), "a tenth of the time on a CPU");
        assert!(!starved(ms(19), ms(20)), "computing");
        assert!(!starved(ms(10), ms(20)), "half is enough to count as computing");
    }
}
