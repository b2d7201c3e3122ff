//! The deadlines of parked connections: one ordered set, and at most one
//! entry per connection and kind of timer. The connection keeps the time of
//! its queued entry (changed only under the set's lock) and its state word
//! a bit that says one is queued, so that:
//!
//! * a park whose deadline is no earlier than the queued entry's changes
//!   nothing and takes no lock (the entry comes up early, and the monitor
//!   queues it again for the real deadline): a connection that parks
//!   100,000 times in an hour of idle timeout has one entry, not 100,000;
//! * a park with an earlier deadline (a read timeout in a request, after
//!   an idle timeout at a boundary) moves the entry;
//! * a close removes the connection's entries at once, so the set holds no
//!   more entries than there are connections (two each at most, during a
//!   shutdown) and its memory goes when they do.

use std::collections::BTreeSet;

use super::state::Timer;

/// One queued deadline, in nanoseconds from the reactor's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) at: u64,
    pub(crate) token: u64,
    pub(crate) timer: Timer,
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<Entry>,
}

impl Timers {
    /// Queues an entry; `true` if it is now the earliest (the monitor,
    /// asleep until a later one, must be woken).
    pub(crate) fn push(&mut self, entry: Entry) -> bool {
        let earliest = self.next().is_none_or(|at| entry.at < at);
        self.set.insert(entry);
        earliest
    }

    /// Takes an entry out; whether it was there.
    pub(crate) fn remove(&mut self, entry: &Entry) -> bool {
        self.set.remove(entry)
    }

    /// The earliest entry, if it is due by `now`.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<Entry> {
        match self.set.first() {
            Some(e) if e.at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    pub(crate) fn next(&self) -> Option<u64> {
        self.set.first().map(|e| e.at)
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn entry(at: u64, token: u64) -> Entry {
        Entry { at, token, timer: Timer::Deadline }
    }

    #[test]
    fn entries_come_up_in_deadline_order_whatever_order_they_were_queued_in() {
        let mut timers = Timers::default();
        assert!(timers.push(entry(3600, 1)));
        assert!(timers.push(entry(100, 2)), "earlier: the monitor is woken");
        assert!(!timers.push(entry(7200, 3)));
        assert_eq!(timers.next(), Some(100));
        assert_eq!(timers.pop_due(99), None);
        assert_eq!(timers.pop_due(4000).map(|e| e.token), Some(2));
        assert_eq!(timers.pop_due(4000).map(|e| e.token), Some(1));
        assert_eq!(timers.pop_due(4000), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn an_entry_moves_and_goes_exactly() {
        let mut timers = Timers::default();
        timers.push(entry(3600, 1));
        timers.push(entry(3600, 2));
        // Connection 1 parks in a request with a 5 s read timeout: moved.
        assert!(timers.remove(&entry(3600, 1)));
        assert!(timers.push(entry(5, 1)));
        assert_eq!(timers.len(), 2);
        // Connection 2 closes: its entry goes with it.
        assert!(timers.remove(&entry(3600, 2)));
        assert!(!timers.remove(&entry(3600, 2)));
        assert_eq!(timers.pop_due(10).map(|e| e.token), Some(1));
        assert_eq!(timers.len(), 0);
    }
}
