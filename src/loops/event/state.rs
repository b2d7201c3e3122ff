//! The state of one connection under the event strategy: one atomic word,
//! changed only by the named read-modify-write transitions below, each of
//! which returns what happened (tokio's `runtime/task/state.rs` is the
//! model). Nothing else writes the word, so every interleaving of events,
//! timers and the thread that runs the connection is one of the orders
//! these transitions allow — `loom` checks them (`cargo test --lib` under
//! `RUSTFLAGS="--cfg loom"`, run by `.ci/run`).
//!
//! The word:
//!
//! | bits | name | meaning |
//! |---|---|---|
//! | 0 | `RUNNING` | one thread owns the connection's request; clear: parked, no thread |
//! | 1 | `NOTIFIED` | bytes (or a hang-up) came while it ran: run it again before parking |
//! | 2 | `DEADLINE_TIMER` | an entry for its own deadline (idle, read, request, write, linger) is in the timer set (at most one) |
//! | 3 | `DRAIN_TIMER` | a drain-window entry for it is in the timer set (at most one) |
//! | 8.. | generation | counts parks: a timer decided at one park never acts at a later one |
//!
//! The connection's other atomics (in `Conn`, `mod.rs`) are plain loads
//! and stores, each safe by who may write it: `parked_at`, `deadline`,
//! `boundary` and `writing` only by the thread that holds `RUNNING`, before
//! `park`'s release publishes them (a timer reads them in `fire` only while
//! the word says parked); `queued` only under the timers' lock; `hup` is
//! only ever set, never cleared.

use super::sync::{AtomicU64, Ordering::*};

const RUNNING: u64 = 1 << 0;
const NOTIFIED: u64 = 1 << 1;
const GEN_SHIFT: u32 = 8;
const GEN_ONE: u64 = 1 << GEN_SHIFT;

/// Which of a parked connection's deadlines a timer entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// The connection's own deadline, set at its park: the idle timeout at
    /// a boundary, the read and request timeouts in a request, the write
    /// timeout while its answer waits for the peer, the end of a lingering
    /// close.
    Deadline,
    /// The drain window at a shutdown, from the park or the shutdown (for a
    /// connection parked at a request boundary).
    Drain,
}

impl Timer {
    /// Its place in per-timer arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            Timer::Deadline => 0,
            Timer::Drain => 1,
        }
    }

    const fn bit(self) -> u64 {
        match self {
            Timer::Deadline => 1 << 2,
            Timer::Drain => 1 << 3,
        }
    }
}

/// What [`State::notify`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Notify {
    /// It was parked: the caller now runs it.
    Run,
    /// Another thread runs it and will run it again before it parks.
    Runner,
}

/// What [`State::park`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Park {
    /// Notified while it ran: still the caller's, run it again.
    Again,
    /// Parked at `generation`; the caller queues an entry for each timer
    /// armed here (none was in the timer set for it).
    Parked { generation: u64, idle: bool, drain: bool },
}

/// Whether a parked connection is past a timer's deadline (read from what
/// its runner stored before parking).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Past it: expire.
    Now,
    /// Not yet (it ran and parked again since): queue the entry again.
    Later,
    /// The timer does not apply to this park: drop the entry.
    Never,
}

/// What [`State::fire`] did with a timer entry that came due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Fired {
    /// It runs, or the timer does not apply to its park: the entry is
    /// dropped (a park that needs it arms another).
    Disarmed,
    /// Parked, but its deadline is later than the entry's (it ran and
    /// parked again since): queue the entry again for the deadline.
    Later,
    /// Parked past its deadline: now the caller's (`RUNNING`) to expire.
    Expire,
}

/// One connection's state word.
#[derive(Debug)]
pub(crate) struct State(AtomicU64);

impl State {
    /// A new connection: parked, generation 0, no timer (queued to run at
    /// once by whoever accepted it).
    pub(crate) fn new() -> State {
        State(AtomicU64::new(0))
    }

    /// Bytes came (or the connection is new, or work was handed over):
    /// take a parked connection to run it, or tell its runner to go round
    /// again.
    pub(crate) fn notify(&self) -> Notify {
        let prev = self.0.fetch_or(RUNNING, AcqRel);
        if prev & RUNNING == 0 {
            return Notify::Run;
        }
        // Running: mark it notified. The runner clears `NOTIFIED` only in
        // `park`, which then keeps running, so the mark is never lost; if
        // it parked in between, `RUNNING` is clear and we take it instead.
        let mut cur = prev | RUNNING;
        loop {
            let next = if cur & RUNNING == 0 { cur | RUNNING } else { cur | NOTIFIED };
            match self.0.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                Ok(_) if cur & RUNNING == 0 => return Notify::Run,
                Ok(_) => return Notify::Runner,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The runner is done for now: park (no thread), or go on if notified.
    /// `idle` / `drain`: those timers apply to this park; each is armed
    /// (reported in the result) unless an entry for it is in the timer set.
    pub(crate) fn park(&self, idle: bool, drain: bool) -> Park {
        let mut cur = self.0.load(Acquire);
        loop {
            debug_assert!(cur & RUNNING != 0, "only the runner parks");
            if cur & NOTIFIED != 0 {
                match self.0.compare_exchange_weak(cur, cur & !NOTIFIED, AcqRel, Acquire) {
                    Ok(_) => return Park::Again,
                    Err(actual) => {
                        cur = actual;
                        continue;
                    }
                }
            }
            let arm_idle = idle && cur & Timer::Deadline.bit() == 0;
            let arm_drain = drain && cur & Timer::Drain.bit() == 0;
            let mut next = (cur & !RUNNING).wrapping_add(GEN_ONE);
            if arm_idle {
                next |= Timer::Deadline.bit();
            }
            if arm_drain {
                next |= Timer::Drain.bit();
            }
            match self.0.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                Ok(_) => return Park::Parked { generation: next >> GEN_SHIFT, idle: arm_idle, drain: arm_drain },
                Err(actual) => cur = actual,
            }
        }
    }

    /// A timer entry of kind `timer` came due. `due(generation)` says
    /// whether the connection, parked at that generation, is past its
    /// deadline for it.
    pub(crate) fn fire(&self, timer: Timer, mut due: impl FnMut(u64) -> Due) -> Fired {
        let mut cur = self.0.load(Acquire);
        loop {
            debug_assert!(cur & timer.bit() != 0, "an entry in the timer set has its bit set");
            let (next, fired) = if cur & RUNNING != 0 {
                (cur & !timer.bit(), Fired::Disarmed)
            } else {
                match due(cur >> GEN_SHIFT) {
                    Due::Now => ((cur | RUNNING) & !timer.bit(), Fired::Expire),
                    Due::Never => (cur & !timer.bit(), Fired::Disarmed),
                    Due::Later => return Fired::Later,
                }
            };
            match self.0.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                Ok(_) => return fired,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Arms `timer` outside a park (the drain window, for every connection
    /// at the shutdown): `true` if the caller must queue its entry (none
    /// was in the timer set).
    pub(crate) fn arm(&self, timer: Timer) -> bool {
        self.0.fetch_or(timer.bit(), AcqRel) & timer.bit() == 0
    }

    /// How many entries the timer set holds for it (when it is closed: that many
    /// become dead).
    pub(crate) fn timers(&self) -> usize {
        let s = self.0.load(Acquire);
        usize::from(s & Timer::Deadline.bit() != 0) + usize::from(s & Timer::Drain.bit() != 0)
    }

    /// Whether a thread runs it.
    #[cfg(test)]
    pub(crate) fn running(&self) -> bool {
        self.0.load(Acquire) & RUNNING != 0
    }
}

/// `Now` when true, else `Later`.
#[cfg(test)]
fn at(due: bool) -> Due {
    if due { Due::Now } else { Due::Later }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_timer_that_does_not_apply_is_dropped_and_armed_again_at_the_next_park() {
        let s = State::new();
        assert_eq!(s.notify(), Notify::Run);
        assert!(matches!(s.park(false, true), Park::Parked { drain: true, .. }));
        assert_eq!(s.fire(Timer::Drain, |_| Due::Never), Fired::Disarmed);
        assert_eq!(s.timers(), 0);
        assert!(!s.running(), "still parked");
        assert_eq!(s.notify(), Notify::Run);
        assert!(matches!(s.park(false, true), Park::Parked { drain: true, .. }));
    }

    #[test]
    fn a_notify_takes_a_parked_connection_and_marks_a_running_one() {
        let s = State::new();
        assert_eq!(s.notify(), Notify::Run);
        assert_eq!(s.notify(), Notify::Runner);
        assert_eq!(s.notify(), Notify::Runner, "marked twice is marked once");
        assert_eq!(s.park(false, false), Park::Again, "the mark makes the runner go round");
        assert_eq!(s.park(false, false), Park::Parked { generation: 1, idle: false, drain: false });
        assert!(!s.running());
        assert_eq!(s.notify(), Notify::Run);
    }

    #[test]
    fn a_timer_is_armed_once_however_often_it_parks() {
        let s = State::new();
        assert_eq!(s.notify(), Notify::Run);
        assert_eq!(s.park(true, false), Park::Parked { generation: 1, idle: true, drain: false });
        for generation in 2..100 {
            assert_eq!(s.notify(), Notify::Run);
            assert_eq!(s.park(true, false), Park::Parked { generation, idle: false, drain: false });
        }
        assert_eq!(s.timers(), 1);
        assert!(!s.arm(Timer::Deadline));
        assert!(s.arm(Timer::Drain));
        assert_eq!(s.timers(), 2);
    }

    #[test]
    fn a_due_timer_takes_the_connection_once() {
        let s = State::new();
        assert_eq!(s.notify(), Notify::Run);
        let Park::Parked { generation, .. } = s.park(true, false) else { panic!("parks") };
        assert_eq!(s.fire(Timer::Deadline, |g| at(g == generation)), Fired::Expire);
        assert!(s.running());
        assert_eq!(s.timers(), 0, "the expired entry is gone");
        assert_eq!(s.notify(), Notify::Runner, "an event now only marks it");
    }

    #[test]
    fn a_timer_of_an_earlier_park_never_expires_a_later_one() {
        let s = State::new();
        assert_eq!(s.notify(), Notify::Run);
        let Park::Parked { generation: first, .. } = s.park(true, false) else { panic!("parks") };
        assert_eq!(s.notify(), Notify::Run);
        assert!(matches!(s.park(true, false), Park::Parked { idle: false, .. }));
        assert_eq!(s.fire(Timer::Deadline, |g| at(g == first)), Fired::Later, "still parked: queued again");
        assert!(!s.running());
    }

    #[test]
    fn a_timer_that_finds_it_running_is_dropped_and_the_next_park_arms_again() {
        let s = State::new();
        assert_eq!(s.notify(), Notify::Run);
        assert!(matches!(s.park(true, false), Park::Parked { idle: true, .. }));
        assert_eq!(s.notify(), Notify::Run);
        assert_eq!(s.fire(Timer::Deadline, |_| Due::Now), Fired::Disarmed);
        assert_eq!(s.timers(), 0);
        assert!(matches!(s.park(true, false), Park::Parked { idle: true, .. }));
    }

    #[test]
    fn the_generation_wraps_without_touching_the_flags() {
        let s = State(AtomicU64::new(!0xff | RUNNING));
        assert!(matches!(s.park(false, false), Park::Parked { generation: 0, .. }));
        assert!(!s.running());
    }
}

/// The transitions under every interleaving `loom` can find. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p socketserver --lib --release loom`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;
    use loom::thread;

    /// An event that comes while the runner parks is never lost: either
    /// the runner goes round again, or the event's thread takes it.
    #[test]
    fn park_and_notify() {
        loom::model(|| {
            let s = Arc::new(State::new());
            assert_eq!(s.notify(), Notify::Run);
            let s2 = Arc::clone(&s);
            let event = thread::spawn(move || s2.notify());
            let parked = s.park(true, false);
            let by_event = event.join().unwrap();
            match (parked, by_event) {
                (Park::Again, Notify::Runner) => assert!(s.running()),
                (Park::Parked { .. }, Notify::Run) => assert!(s.running()),
                other => panic!("lost or doubled: {other:?}"),
            }
        });
    }

    /// A due timer and an event race for a parked connection: exactly one
    /// takes it, and an event that loses marks it (the expiring runner
    /// sees the bytes: nothing that arrived is dropped).
    #[test]
    fn expire_and_notify() {
        loom::model(|| {
            let s = Arc::new(State::new());
            assert_eq!(s.notify(), Notify::Run);
            let Park::Parked { generation, .. } = s.park(true, false) else { panic!("parks") };
            let s2 = Arc::clone(&s);
            let event = thread::spawn(move || s2.notify());
            let fired = s.fire(Timer::Deadline, |g| at(g == generation));
            let by_event = event.join().unwrap();
            match (fired, by_event) {
                (Fired::Expire, Notify::Runner) | (Fired::Disarmed, Notify::Run) => {}
                other => panic!("both or neither took it: {other:?}"),
            }
            assert!(s.running());
            // Whoever has it parks; a mark left by the event makes it go round.
            let again = matches!(s.park(false, false), Park::Again);
            assert_eq!(again, fired == Fired::Expire, "the expiring runner goes round for the event");
        });
    }

    /// A timer fires while its connection runs and parks again: the entry
    /// is either dropped before the park (which arms a new one) or kept
    /// for the new deadline — one entry in the timer set either way.
    #[test]
    fn fire_and_park() {
        loom::model(|| {
            let s = Arc::new(State::new());
            assert_eq!(s.notify(), Notify::Run);
            assert!(matches!(s.park(true, false), Park::Parked { idle: true, .. }));
            assert_eq!(s.notify(), Notify::Run);
            let s2 = Arc::clone(&s);
            let runner = thread::spawn(move || s2.park(true, false));
            // Not due at the new park's generation.
            let fired = s.fire(Timer::Deadline, |g| at(g == 0));
            let parked = runner.join().unwrap();
            let entries = match fired {
                Fired::Disarmed => 0,
                Fired::Later => 1,
                Fired::Expire => panic!("expired a connection parked since"),
            } + usize::from(matches!(parked, Park::Parked { idle: true, .. }));
            assert_eq!(entries, 1, "{fired:?} {parked:?}");
            assert_eq!(s.timers(), 1);
        });
    }

    /// Two events and a timer at once: the connection is run by one thread
    /// at a time, and once all are done it is running (someone owns it).
    #[test]
    fn two_events_and_a_timer() {
        loom::model(|| {
            let s = Arc::new(State::new());
            assert_eq!(s.notify(), Notify::Run);
            let Park::Parked { generation, .. } = s.park(true, false) else { panic!("parks") };
            let owners = Arc::new(AtomicBool::new(false));
            let spawn = |s: Arc<State>, owners: Arc<AtomicBool>| {
                thread::spawn(move || {
                    if s.notify() == Notify::Run {
                        assert!(!owners.swap(true, SeqCst), "two runners");
                    }
                })
            };
            let a = spawn(Arc::clone(&s), Arc::clone(&owners));
            let b = spawn(Arc::clone(&s), Arc::clone(&owners));
            if s.fire(Timer::Deadline, |g| at(g == generation)) == Fired::Expire {
                assert!(!owners.swap(true, SeqCst), "two runners");
            }
            a.join().unwrap();
            b.join().unwrap();
            assert!(owners.load(SeqCst) && s.running());
        });
    }
}
