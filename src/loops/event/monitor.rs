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

use super::state::Fired;
use super::timers::Entry;
use super::windows::Window;
use super::{NEVER, Reactor, Work};
use crate::sys;

/// How long a handler may run before the monitor counts its thread as
/// blocked and lets another poll in its place.
pub(super) const STUCK_AFTER: Duration = Duration::from_millis(2);
/// A thread still in one handler but runnable (preempted, or computing) is
/// only counted as stuck after this many looks in a row: a busy machine
/// preempts pollers all the time, and more threads would not help.
const RUNNABLE_STRIKES: u32 = 10;

impl Reactor {
    pub(super) fn monitor(self: &Arc<Self>) {
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
            let busy = self.watch_pollers();
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
                if run % 2 == 0 {
                    continue;
                }
                busy = true;
                if p.stuck.load(SeqCst) == run {
                    // Counted already, in this same run: nothing to read.
                    stuck += 1;
                    stolen.extend(p.batch.lock().drain(..));
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
                if strikes >= RUNNABLE_STRIKES {
                    p.stuck.store(run, SeqCst);
                    stuck += 1;
                    stolen.extend(p.batch.lock().drain(..));
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
