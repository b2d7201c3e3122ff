//! The monitor thread: expires the timers of parked connections, notices
//! pollers blocked in a handler (handing what they had not started to
//! others, and starting threads when nobody is left to poll), and resumes
//! accepting after a back-off.
//!
//! It looks every [`STUCK_AFTER`] while a handler runs, and otherwise sleeps
//! until the next deadline with `resting` raised: the first handler that
//! starts and could strand something (nobody else waits in epoll, or its
//! thread holds events it has not started) wakes it, whatever timers are
//! queued. A look costs a few atomic loads per poller; `/proc` is read only
//! for a poller newly found in the same handler run, never again for one
//! already counted as stuck, so 256 threads blocked in `sleep` cost about
//! what one does.

use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use super::poller::{NO_CLOCK, Poller};
use super::state::Fired;
use super::timers::Entry;
use super::windows::Window;
use super::{CAPACITY, LISTENER, NEVER, Reactor, WAKE, Work};
use crate::sys;
use crate::sys::epoll::Events;

/// How long a handler may run before the monitor counts its thread as
/// blocked and lets another poll in its place.
pub(super) const STUCK_AFTER: Duration = Duration::from_millis(2);
/// A thread still in one handler but runnable (preempted, or computing) is
/// only counted as stuck after this many looks in a row: a busy machine
/// preempts pollers all the time, and more threads would not help.
const RUNNABLE_STRIKES: u32 = 10;
/// Events the monitor takes per look when it polls for blocked pollers.
const EVENTS: usize = 64;

/// What one look at the pollers found.
#[derive(Clone, Copy, Debug)]
struct Look {
    /// In one handler since the last look (blocked), or said so.
    stuck: usize,
    /// Started, not yet in their loop.
    starting: usize,
    /// Waiting in epoll.
    waiting: usize,
    alive: usize,
    /// Work queued for whoever polls next.
    queued: usize,
    max_workers: usize,
}

/// What the monitor does about a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Nothing,
    /// Start this many polling threads.
    Start(usize),
    /// Every thread is blocked and no more may start: take what epoll has
    /// for them (accept and register newcomers, queue what is ready).
    PollForThem,
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

/// When pollers are blocked and nobody polls (or work waits that nobody
/// takes), as many threads start as are blocked, for the work nobody has
/// started (at least one, to poll): a burst of requests that all block
/// doubles the threads each look rather than adding one, and a poller
/// caught for a moment in a system call with a batch in hand adds one, not
/// a thread per connection of it. At `max_workers`, the monitor polls for
/// them.
fn plan(look: &Look) -> Plan {
    let free = look.alive.saturating_sub(look.stuck);
    let nobody_polls = look.waiting == 0 && look.starting == 0 && (free == 0 || look.queued > 0);
    if look.stuck == 0 || !nobody_polls {
        return Plan::Nothing;
    }
    match look.max_workers.saturating_sub(look.alive) {
        0 => Plan::PollForThem,
        room => Plan::Start(look.queued.min(look.stuck).max(1).min(room)),
    }
}

impl Reactor {
    pub(super) fn monitor(self: &Arc<Self>) {
        let mut events = Events::with_capacity(EVENTS);
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
                while let Some(entry) = timers.pop_due(now_nanos) {
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
            self.queue_expired(expired);
            let busy = self.watch_pollers(&mut events);
            timers = self.timers.lock();
            // Read again under the lock it will wait with: a timer set
            // while the lock was free was notified to nobody.
            let paused = *self.accept_paused.lock();
            let next = [timers.next().map(|at| self.instant(at)), paused].into_iter().flatten().min();
            // Resting (asleep past a look) only while no handler runs,
            // checked after raising the flag: a handler that starts after
            // the check sees the flag and wakes it.
            let mut look = busy;
            if !look {
                self.resting.store(true, SeqCst);
                look = self.pollers.lock().iter().any(|p| p.run.load(SeqCst) % 2 == 1);
            }
            let until = match (next, look) {
                (Some(at), true) => Some(at.min(Instant::now() + STUCK_AFTER)),
                (Some(at), false) => Some(at),
                (None, true) => Some(Instant::now() + STUCK_AFTER),
                (None, false) => None,
            };
            if !self.exit.load(SeqCst) {
                match until {
                    Some(at) => {
                        self.tick.wait_until(&mut timers, at);
                    }
                    None => self.tick.wait(&mut timers),
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

    /// Looks at every poller: one in the same handler run as a look ago is
    /// blocked — what it took from epoll and not started goes to another,
    /// and when nobody is left to poll, new threads start. Returns whether
    /// any poller is in a handler.
    fn watch_pollers(self: &Arc<Self>, events: &mut Events) -> bool {
        self.window(Window::Look);
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
                if run % 2 == 0 {
                    continue;
                }
                busy = true;
                if p.stuck.load(SeqCst) == run {
                    // Counted already, in this same run: nothing to read,
                    // and nothing in its batch (taken when it was counted;
                    // only the poller itself adds to it, between handlers).
                    stuck += 1;
                    continue;
                }
                let seen = p.seen.swap(run, SeqCst);
                if seen != run {
                    p.strikes.store(0, SeqCst);
                    continue;
                }
                // Blocked in a system call, or runnable for long.
                let runnable = sys::thread_runnable(p.tid.load(SeqCst));
                let strikes = if runnable { p.strikes.fetch_add(1, SeqCst) + 1 } else { RUNNABLE_STRIKES };
                if runnable && strikes == 1 {
                    p.strike_cpu.store(cpu_nanos(p), SeqCst);
                    p.strike_at.store(self.now_nanos(Instant::now()), SeqCst);
                }
                if runnable && strikes >= RUNNABLE_STRIKES && self.starved(p) {
                    // Runnable but hardly running: the CPUs are taken (by
                    // other processes, or other pollers), and a new thread
                    // would wait for one too. Count again from here.
                    p.strikes.store(0, SeqCst);
                    continue;
                }
                if strikes >= RUNNABLE_STRIKES {
                    p.stuck.store(run, SeqCst);
                    stuck += 1;
                    stolen.extend(p.batch.lock().drain(..));
                }
            }
        }
        if !stolen.is_empty() {
            self.ready.lock().extend(stolen.into_iter().map(Work::Ready));
            self.wake.signal();
        }
        let look = Look {
            stuck,
            starting,
            waiting: self.waiting.load(SeqCst),
            alive: self.alive.load(SeqCst),
            queued: self.ready.lock().len(),
            max_workers: self.config.max_workers,
        };
        match plan(&look) {
            _ if self.exit.load(SeqCst) => {}
            Plan::Nothing => {}
            Plan::Start(n) => {
                for _ in 0..n {
                    if let Err(e) = self.spawn_poller() {
                        log::warn!("{}: cannot start another polling thread: {e}", self.core.name());
                        break;
                    }
                }
            }
            Plan::PollForThem => self.poll_for_the_blocked(events),
        }
        busy
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn look(stuck: usize, waiting: usize, alive: usize, queued: usize) -> Look {
        Look { stuck, starting: 0, waiting, alive, queued, max_workers: 8 }
    }

    #[test]
    fn nothing_starts_while_someone_polls_or_nobody_is_stuck() {
        assert_eq!(plan(&look(0, 0, 2, 5)), Plan::Nothing, "nobody stuck");
        assert_eq!(plan(&look(1, 1, 2, 0)), Plan::Nothing, "one polls");
        assert_eq!(plan(&Look { starting: 1, ..look(2, 0, 2, 3) }), Plan::Nothing, "one is starting");
        assert_eq!(plan(&look(1, 0, 2, 0)), Plan::Nothing, "one free, about to poll, nothing queued");
    }

    #[test]
    fn as_many_start_as_are_stuck_for_the_queued_work_within_the_room() {
        assert_eq!(plan(&look(2, 0, 2, 0)), Plan::Start(1), "to poll");
        assert_eq!(plan(&look(2, 0, 2, 20)), Plan::Start(2), "a burst doubles, not a thread per event");
        assert_eq!(plan(&look(1, 0, 2, 3)), Plan::Start(1), "work waits though one is free");
        assert_eq!(plan(&look(7, 0, 7, 7)), Plan::Start(1), "the room left");
    }

    #[test]
    fn a_runnable_thread_that_hardly_ran_is_starved_not_computing() {
        let ms = Duration::from_millis;
        assert!(starved(ms(2), ms(20)), "a tenth of the time on a CPU");
        assert!(!starved(ms(19), ms(20)), "computing");
        assert!(!starved(ms(10), ms(20)), "half is enough to count as computing");
    }

    #[test]
    fn at_max_workers_the_monitor_polls_for_the_blocked() {
        assert_eq!(plan(&look(8, 0, 8, 0)), Plan::PollForThem);
        assert_eq!(plan(&look(8, 0, 8, 30)), Plan::PollForThem);
    }
}
