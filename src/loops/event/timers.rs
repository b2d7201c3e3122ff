//! The deadlines of parked connections: one heap, and at most one entry per
//! connection and kind of timer (the state word's `IDLE_TIMER` and
//! `DRAIN_TIMER` bits say whether it is there). A park does not queue an
//! entry when one is queued already; when an entry comes due, the monitor
//! reads the connection's real deadline and queues it again if that is
//! later (the connection ran and parked since). So the heap grows with the
//! connections, not with their requests: a connection that parks 100,000
//! times in an hour of idle timeout has one entry, not 100,000.
//!
//! A closed connection's entries stay until they come up or the heap is
//! compacted: compaction runs when more than half of the entries (and at
//! least [`COMPACT_MIN`]) are dead, so dead entries never outnumber live
//! ones by much and memory returns when clients leave.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::state::Timer;

/// Below this many dead entries, they are left to come up on their own.
pub(crate) const COMPACT_MIN: usize = 1024;

/// One queued deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) at: Instant,
    pub(crate) token: u64,
    pub(crate) timer: Timer,
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Entries whose connection has closed (an upper bound: a close may
    /// count an entry a compaction already dropped).
    dead: usize,
}

impl Timers {
    /// Queues an entry; `true` if it is now the earliest (the monitor,
    /// asleep until a later one, must be woken).
    pub(crate) fn push(&mut self, entry: Entry) -> bool {
        let earliest = self.next().is_none_or(|at| entry.at < at);
        self.heap.push(Reverse(entry));
        earliest
    }

    /// The earliest entry, if it is due by `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// `n` entries belong to a connection that closed.
    pub(crate) fn died(&mut self, n: usize) {
        self.dead += n;
    }

    /// A dead entry came up (and was dropped).
    pub(crate) fn dropped_dead(&mut self) {
        self.dead = self.dead.saturating_sub(1);
    }

    /// Drops the dead entries (`live(token)` is false for them) when they
    /// are many, and gives their memory back. Returns how many went.
    pub(crate) fn compact(&mut self, live: impl Fn(u64) -> bool) -> usize {
        if self.dead < COMPACT_MIN || self.dead * 2 < self.heap.len() {
            return 0;
        }
        let before = self.heap.len();
        self.heap.retain(|Reverse(e)| live(e.token));
        self.dead = 0;
        if self.heap.capacity() > 2 * self.heap.len() + COMPACT_MIN {
            self.heap.shrink_to(self.heap.len() * 2);
        }
        before - self.heap.len()
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn capacity(&self) -> usize {
        self.heap.capacity()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(at: Instant, token: u64) -> Entry {
        Entry { at, token, timer: Timer::Idle }
    }

    #[test]
    fn entries_come_up_in_deadline_order_whatever_order_they_were_queued_in() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        assert!(timers.push(entry(t0 + Duration::from_secs(3600), 1)));
        assert!(timers.push(entry(t0 + Duration::from_millis(100), 2)), "earlier: the monitor is woken");
        assert!(!timers.push(entry(t0 + Duration::from_secs(7200), 3)));
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(4000)).map(|e| e.token), Some(2));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(4000)).map(|e| e.token), Some(1));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(4000)), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn compaction_waits_for_many_dead_then_returns_the_memory() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for token in 0..100_000 {
            timers.push(entry(t0 + Duration::from_secs(3600), token));
        }
        timers.died(COMPACT_MIN - 1);
        assert_eq!(timers.compact(|_| false), 0, "a few dead entries are left to come up");
        // The clients leave: all but 10 connections close.
        timers.died(100_000 - 10 - (COMPACT_MIN - 1));
        assert_eq!(timers.compact(|token| token < 10), 99_990);
        assert_eq!(timers.len(), 10);
        assert!(timers.capacity() < 2 * COMPACT_MIN + 100, "memory returned: {}", timers.capacity());
        // Half dead is not yet enough.
        for token in 10..3000 {
            timers.push(entry(t0, token));
        }
        timers.died(COMPACT_MIN);
        assert_eq!(timers.compact(|_| true), 0);
    }
}
