//! Polling slots: how many threads may wait in epoll and take work
//! (`Event::pollers`, Go's Ps), and who holds each one.
//!
//! A thread polls only while it holds a slot. A handler that blocks keeps
//! its thread but loses its slot: the monitor retakes it (or the thread
//! gives it up at the library's blocking hint) and hands it to an idle
//! thread, or a new one. When the handler returns, its thread takes a free
//! slot if there is one and otherwise parks as idle (last in, first out)
//! until a slot is handed to it or its keep-alive passes. So however many
//! handlers block, the threads in epoll stay at the slot count: with a
//! thread per blocked handler all waiting in epoll, each event woke a
//! thread of its own (a context switch per request), and the switches took
//! half of the server's CPU under mixed load.
//!
//! Two words, each changed only by the named transitions below:
//!
//! * a poller's run word ([`Run`]): a count bumped at each handler start
//!   and end (odd while in a handler) and the [`RETAKEN`] bit, set while the
//!   thread holds no slot. The retake is a compare-and-swap against the run
//!   the monitor saw twice, and the end of a run a `fetch_add` that reads
//!   the bit: exactly one of them wins — the handler ended first (its
//!   thread keeps the slot) or the retake came first (the slot is the
//!   monitor's to hand on, and the thread learns it at the end of the run).
//! * the free slots ([`Free`]): slots no thread holds. Given by whoever
//!   took a slot from a thread; taken by a `fetch_update` that never goes
//!   below zero.
//!
//! Slots are conserved: held + free is the slot count at every step (loom
//! checks the races: a retake against the run's end, a blocking hint
//! against a retake, two threads taking the last free slot).

use super::sync::{AtomicU64, AtomicUsize, Ordering::SeqCst};

/// Set in a run word while its thread holds no slot.
pub(super) const RETAKEN: u64 = 1 << 63;

/// A poller's run word.
#[derive(Debug)]
pub(super) struct Run(AtomicU64);

impl Run {
    /// A new thread's word: no slot yet (it takes a free one first).
    pub(super) fn without_slot() -> Run {
        Run(AtomicU64::new(RETAKEN))
    }

    pub(super) fn load(&self) -> u64 {
        self.0.load(SeqCst)
    }

    /// A handler starts on this thread (with a slot or without: a thread
    /// whose slot was retaken finishes the connection it holds).
    pub(super) fn begin(&self) {
        self.0.fetch_add(1, SeqCst);
    }

    /// The handler returned: whether the thread still holds its slot.
    pub(super) fn end(&self) -> bool {
        self.0.fetch_add(1, SeqCst) & RETAKEN == 0
    }

    /// The monitor takes the slot of a thread it saw in run `seen` (a
    /// handler running, slot held) twice: only if that run still goes on.
    pub(super) fn retake(&self, seen: u64) -> bool {
        seen % 2 == 1 && seen & RETAKEN == 0 && self.0.compare_exchange(seen, seen | RETAKEN, SeqCst, SeqCst).is_ok()
    }

    /// The thread gives its slot up itself, in a handler that is about to
    /// wait (the blocking hint): `false` if it holds none (retaken, or
    /// given up already in this run).
    pub(super) fn give_up(&self) -> bool {
        self.0.fetch_update(SeqCst, SeqCst, |w| (w % 2 == 1 && w & RETAKEN == 0).then_some(w | RETAKEN)).is_ok()
    }

    /// The thread took a free slot (between handlers: only it writes then).
    pub(super) fn reclaim(&self) {
        self.0.fetch_and(!RETAKEN, SeqCst);
    }

    /// The thread gives its slot back between handlers (a boost slot the
    /// monitor asked back): nobody else writes the word then, since a
    /// retake needs a handler running.
    pub(super) fn hand_back(&self) {
        self.0.fetch_or(RETAKEN, SeqCst);
    }
}

/// Whether a run word's thread holds a slot.
pub(super) fn holds(word: u64) -> bool {
    word & RETAKEN == 0
}

/// Whether a run word's thread is in a handler.
pub(super) fn in_handler(word: u64) -> bool {
    word % 2 == 1
}

/// Slots to be taken out of play: a boost slot whose holder gives it back
/// at its next turn between handlers (see [`Boost`]).
#[derive(Debug, Default)]
pub(super) struct Shrink(AtomicUsize);

impl Shrink {
    pub(super) fn ask(&self) {
        self.0.fetch_add(1, SeqCst);
    }

    /// A holder between handlers answers one request to give a slot back.
    pub(super) fn answer(&self) -> bool {
        self.0.load(SeqCst) > 0 && self.0.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// Slots in play at most, per poller.
pub(super) const BOOST: usize = 4;

/// How many slots are in play: `pollers`, plus boost slots while handlers
/// block that the library cannot see. A slot moves only when the monitor
/// finds its handler blocked, up to ~0.1 ms after the handler began; with
/// one slot per CPU that wait stalls everything the slot would have
/// served, and with a handler blocking every few requests the slots spend
/// more time waiting for the monitor than serving (pinned to one CPU, 10 %
/// of requests sleeping 5 ms: 52k requests/s with one slot, 108k with
/// four). So each look that takes a slot while nobody is left waiting in
/// epoll adds one, up to four per poller, and a second without a slot
/// taken takes one back. (One handler blocking at a time, with another
/// slot's thread in epoll, adds none.) With nothing blocking there
/// is no boost: a slot more than the CPUs costs a wake-up per event (15 %
/// more CPU per request, pinned, with two slots for one CPU).
#[derive(Debug)]
pub(super) struct Boost {
    pub(super) base: usize,
    pub(super) most: usize,
    /// Slots in play now.
    pub(super) now: usize,
}

impl Boost {
    pub(super) fn new(pollers: usize) -> Boost {
        Boost { base: pollers, most: pollers.saturating_mul(BOOST), now: pollers }
    }

    /// More slots are in play than `pollers`.
    pub(super) fn boosted(&self) -> bool {
        self.now > self.base
    }

    /// After a look: `grow`, it took slots from blocked handlers that held
    /// every slot; `quiet`, none was taken for a second. How many slots to
    /// add (positive) or take back.
    pub(super) fn adjust(&mut self, grow: bool, quiet: bool) -> isize {
        if grow && self.now < self.most {
            self.now += 1;
            1
        } else if !grow && quiet && self.now > self.base {
            self.now -= 1;
            -1
        } else {
            0
        }
    }
}

/// The slots no thread holds.
#[derive(Debug)]
pub(super) struct Free(AtomicUsize);

impl Free {
    /// All `n` free: each polling thread takes one as it starts.
    pub(super) fn new(n: usize) -> Free {
        Free(AtomicUsize::new(n))
    }

    pub(super) fn load(&self) -> usize {
        self.0.load(SeqCst)
    }

    /// Takes a free slot, if there is one.
    pub(super) fn take(&self) -> bool {
        self.0.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// A slot taken from a thread (retaken, given up, or its thread left).
    pub(super) fn give(&self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_retake_after_the_run_ended_fails_and_the_thread_keeps_its_slot() {
        let run = Run::without_slot();
        run.reclaim();
        run.begin();
        let seen = run.load();
        assert!(run.end(), "not retaken: still held");
        assert!(!run.retake(seen), "that run is over");
        assert!(holds(run.load()));
    }

    #[test]
    fn a_retake_in_the_run_takes_the_slot_and_the_end_says_so() {
        let run = Run::without_slot();
        run.reclaim();
        run.begin();
        let seen = run.load();
        assert!(run.retake(seen));
        assert!(!run.retake(seen), "once");
        assert!(!run.give_up(), "nothing left to give up");
        assert!(!run.end(), "the thread learns it lost the slot");
        assert!(!holds(run.load()));
        run.reclaim();
        assert!(holds(run.load()) && !in_handler(run.load()));
    }

    #[test]
    fn no_retake_between_handlers_or_without_a_slot() {
        let run = Run::without_slot();
        assert!(!run.retake(run.load()), "no slot");
        run.reclaim();
        assert!(!run.retake(run.load()), "between handlers");
        assert!(!run.give_up(), "between handlers");
    }

    #[test]
    fn a_boost_grows_while_handlers_block_and_shrinks_back_when_quiet() {
        let mut boost = Boost::new(2);
        assert_eq!(boost.adjust(false, true), 0, "nothing to take back");
        for _ in 0..6 {
            assert_eq!(boost.adjust(true, false), 1);
        }
        assert_eq!(boost.now, 8);
        assert_eq!(boost.adjust(true, false), 0, "at most four per poller");
        assert_eq!(boost.adjust(false, false), 0, "not quiet for long enough");
        for _ in 0..6 {
            assert_eq!(boost.adjust(false, true), -1);
        }
        assert_eq!(boost.adjust(false, true), 0, "never below the pollers");
        assert_eq!(boost.now, 2);
        let shrink = Shrink::default();
        assert!(!shrink.answer());
        shrink.ask();
        assert!(shrink.answer());
        assert!(!shrink.answer(), "once");
    }

    #[test]
    fn free_slots_never_go_below_zero() {
        let free = Free::new(1);
        assert!(free.take());
        assert!(!free.take());
        free.give();
        assert!(free.take());
        assert_eq!(free.load(), 0);
    }
}

/// The races under every interleaving `loom` finds. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p socketserver --lib --release loom`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A handler ends while the monitor retakes its slot (and hands it on
    /// to a free slot) and its thread, learning it lost it, takes a free
    /// one: the slot is held or free, exactly once, in every order.
    #[test]
    fn a_retake_racing_the_end_of_the_run_conserves_the_slot() {
        loom::model(|| {
            let run = Arc::new(Run::without_slot());
            let free = Arc::new(Free::new(1));
            assert!(free.take());
            run.reclaim();
            run.begin();
            let seen = run.load();
            let monitor = {
                let (run, free) = (Arc::clone(&run), Arc::clone(&free));
                thread::spawn(move || {
                    if run.retake(seen) {
                        free.give();
                    }
                })
            };
            let kept = run.end();
            let held_after = kept || {
                // Lost it: take one back if one is free (perhaps before
                // the monitor gave it: then the thread would park idle).
                let took = free.take();
                if took {
                    run.reclaim();
                }
                took
            };
            monitor.join().unwrap();
            let held = usize::from(held_after);
            assert_eq!(held + free.load(), 1, "the one slot is held or free, never both or neither");
            assert_eq!(holds(run.load()), held_after);
        });
    }

    /// The blocking hint and the monitor's retake at once: one of them
    /// takes the slot.
    #[test]
    fn a_blocking_hint_racing_a_retake_frees_the_slot_once() {
        loom::model(|| {
            let run = Arc::new(Run::without_slot());
            let free = Arc::new(Free::new(0));
            run.reclaim();
            run.begin();
            let seen = run.load();
            let monitor = {
                let (run, free) = (Arc::clone(&run), Arc::clone(&free));
                thread::spawn(move || {
                    if run.retake(seen) {
                        free.give();
                    }
                })
            };
            if run.give_up() {
                free.give();
            }
            monitor.join().unwrap();
            assert_eq!(free.load(), 1);
            assert!(!run.end());
        });
    }

    /// A boost slot asked back while its holder's handler ends and the
    /// monitor, which saw that handler run, tries to retake it: the slot
    /// leaves play once — given back by the holder between handlers, or
    /// retaken — never both.
    #[test]
    fn a_slot_asked_back_racing_a_retake_leaves_once() {
        loom::model(|| {
            let run = Arc::new(Run::without_slot());
            let free = Arc::new(Free::new(0));
            let shrink = Arc::new(Shrink::default());
            run.reclaim();
            run.begin();
            let seen = run.load();
            shrink.ask();
            let monitor = {
                let (run, free) = (Arc::clone(&run), Arc::clone(&free));
                thread::spawn(move || {
                    if run.retake(seen) {
                        free.give();
                    }
                })
            };
            let mut handed_back = false;
            if run.end() && shrink.answer() {
                run.hand_back();
                handed_back = true;
            }
            monitor.join().unwrap();
            assert!(!holds(run.load()), "out of play either way");
            assert_eq!(usize::from(handed_back) + free.load(), 1, "once");
        });
    }

    /// Two threads after the last free slot: one gets it.
    #[test]
    fn two_takers_of_one_free_slot() {
        loom::model(|| {
            let free = Arc::new(Free::new(1));
            let other = {
                let free = Arc::clone(&free);
                thread::spawn(move || free.take())
            };
            let mine = free.take();
            let theirs = other.join().unwrap();
            assert!(mine ^ theirs);
            assert_eq!(free.load(), 0);
        });
    }
}
