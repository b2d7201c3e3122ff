//! The one rule for every duration the crate is given — a builder setting,
//! a strategy's `keep_alive`, a grace period, a timeout passed to a call:
//! **`Duration::MAX` means for ever, and `Duration::ZERO` means not at
//! all.** `Duration::MAX` is the documented "for ever" (Python's
//! `block_on_close` is `grace_period(Duration::MAX)`), so no duration may
//! ever be added to an [`Instant`] with `+`, which panics past the clock's
//! range: a [`Deadline`] saturates to [`Deadline::NEVER`] instead, and the
//! waits the OS takes (`poll`, `epoll_wait` in milliseconds, a socket's
//! timeout in nanoseconds) are made from it here, where "longer than the OS
//! can say" is waited in several goes rather than cut short.

use std::time::{Duration, Instant};

/// When a wait ends: at an instant, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// No end: the wait lasts until what it waits for happens.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// `wait` from `now`; never when the clock cannot reach it
    /// (`Duration::MAX`, or anything else too long to add).
    pub(crate) fn after(now: Instant, wait: Duration) -> Deadline {
        Deadline(now.checked_add(wait))
    }

    /// As [`after`](Self::after), with `None` (no limit) never.
    pub(crate) fn within(now: Instant, wait: Option<Duration>) -> Deadline {
        wait.map_or(Deadline::NEVER, |wait| Deadline::after(now, wait))
    }

    /// The instant, or `None` for never: the `Option<Instant>` the crate's
    /// deadlines are kept as.
    pub(crate) fn instant(self) -> Option<Instant> {
        self.0
    }

    /// Whether it has come at `now` (never, for [`NEVER`](Self::NEVER)).
    pub(crate) fn passed(self, now: Instant) -> bool {
        self.0.is_some_and(|at| now >= at)
    }

    /// What is left of it at `now`; `None`: for ever.
    pub(crate) fn left(self, now: Instant) -> Option<Duration> {
        self.0.map(|at| at.saturating_duration_since(now))
    }

    /// The timeout `poll` and `epoll_wait` take for what is left at `now`:
    /// -1 for never; whole milliseconds rounded up, so that a wait of
    /// 0.4 ms does not become a busy 0; at most `c_int::MAX` (24.8 days) —
    /// a wait that ends there before the deadline must be made again, as
    /// [`early`](Self::early) tells.
    pub(crate) fn poll_millis(self, now: Instant) -> libc::c_int {
        self.left(now).map_or(-1, millis)
    }

    /// Whether a wait that timed out at `now` ended before the deadline (it
    /// was longer than the OS takes): wait again, not a timeout.
    pub(crate) fn early(self, now: Instant) -> bool {
        !self.passed(now)
    }
}

/// `left` in whole milliseconds for `poll`, rounded up and capped.
fn millis(left: Duration) -> libc::c_int {
    let ms = left.as_millis().saturating_add(u128::from(!left.subsec_nanos().is_multiple_of(1_000_000)));
    ms.min(libc::c_int::MAX as u128) as libc::c_int
}

/// A socket's timeout in nanoseconds, as [`Stream`](crate::Stream) keeps it:
/// [`FOREVER_NANOS`] for `None` or one too long for a `u64` of nanoseconds
/// (584 years, `Duration::MAX` included); 0 is "do not wait".
pub(crate) fn timeout_nanos(t: Option<Duration>) -> u64 {
    t.and_then(|t| u64::try_from(t.as_nanos()).ok()).map_or(FOREVER_NANOS, |n| n.min(FOREVER_NANOS - 1))
}

/// The stored timeout back as a duration (`None`: for ever).
pub(crate) fn timeout_from_nanos(nanos: u64) -> Option<Duration> {
    (nanos != FOREVER_NANOS).then(|| Duration::from_nanos(nanos))
}

/// A stored socket timeout that means for ever.
pub(crate) const FOREVER_NANOS: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_too_far_for_the_clock_is_never_not_a_panic() {
        let now = Instant::now();
        assert_eq!(Deadline::after(now, Duration::MAX), Deadline::NEVER);
        assert_eq!(Deadline::within(now, Some(Duration::MAX)), Deadline::NEVER);
        assert_eq!(Deadline::within(now, None), Deadline::NEVER);
        assert!(!Deadline::NEVER.passed(now + Duration::from_secs(1 << 40)));
        assert_eq!(Deadline::NEVER.left(now), None);
        assert_eq!(Deadline::NEVER.poll_millis(now), -1);
    }

    #[test]
    fn zero_has_passed_at_once_and_polls_without_waiting() {
        let now = Instant::now();
        let d = Deadline::after(now, Duration::ZERO);
        assert!(d.passed(now));
        assert!(!d.early(now));
        assert_eq!(d.poll_millis(now), 0);
        assert_eq!(d.left(now), Some(Duration::ZERO));
    }

    #[test]
    fn poll_waits_round_up_and_cap_and_a_capped_wait_ends_early() {
        let now = Instant::now();
        assert_eq!(Deadline::after(now, Duration::from_nanos(1)).poll_millis(now), 1, "never a busy 0");
        assert_eq!(Deadline::after(now, Duration::from_micros(400)).poll_millis(now), 1);
        assert_eq!(Deadline::after(now, Duration::from_micros(1500)).poll_millis(now), 2);
        assert_eq!(Deadline::after(now, Duration::from_millis(7)).poll_millis(now), 7);
        let far = Deadline::after(now, Duration::from_secs(100 * 365 * 86_400));
        assert_ne!(far, Deadline::NEVER, "a century is a real deadline");
        assert_eq!(far.poll_millis(now), libc::c_int::MAX);
        assert!(far.early(now + Duration::from_millis(libc::c_int::MAX as u64)), "24.8 days in, wait again");
    }

    #[test]
    fn socket_timeouts_keep_zero_and_take_max_as_for_ever() {
        assert_eq!(timeout_nanos(None), FOREVER_NANOS);
        assert_eq!(timeout_nanos(Some(Duration::MAX)), FOREVER_NANOS);
        assert_eq!(timeout_from_nanos(timeout_nanos(Some(Duration::MAX))), None);
        assert_eq!(timeout_from_nanos(timeout_nanos(Some(Duration::ZERO))), Some(Duration::ZERO));
        assert_eq!(timeout_from_nanos(timeout_nanos(Some(Duration::from_millis(3)))), Some(Duration::from_millis(3)));
        // The longest a u64 of nanoseconds says, one short of for ever.
        let long = Duration::from_nanos(u64::MAX);
        assert_eq!(timeout_from_nanos(timeout_nanos(Some(long))), Some(Duration::from_nanos(u64::MAX - 1)));
    }
}
