//! The timeout arithmetic of a stream request, apart from any socket: given
//! the server's read and idle timeouts, a handler's deadline and when the
//! peer last sent something, how long may the next read wait, and what did
//! a read that timed out run into. The clock is passed in, so every case is
//! tested without sleeping.

use std::time::{Duration, Instant};

/// Per-connection timeout settings from the builder.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimeoutPolicy {
    /// The peer has sent nothing for this long while the handler waits to
    /// read: the connection is closed.
    pub(crate) idle: Option<Duration>,
    /// A single read that waits this long fails; the connection stays open.
    pub(crate) read: Option<Duration>,
    /// A write that makes no progress for this long fails.
    pub(crate) write: Option<Duration>,
}

impl TimeoutPolicy {
    /// The receive timeout the socket is configured with: the shorter of the
    /// read and idle timeouts (either alone, or none).
    pub(crate) fn receive(&self) -> Option<Duration> {
        shorter(self.read, self.idle)
    }

    /// The send timeout the socket is configured with: the shorter of the
    /// write and idle timeouts — a peer that takes nothing for the idle
    /// timeout is as idle as one that sends nothing.
    pub(crate) fn send(&self) -> Option<Duration> {
        shorter(self.write, self.idle)
    }

    /// The idle timeout when it spans several reads (a shorter read timeout
    /// ends each one first), so that when data last came must be kept.
    fn idle_across_reads(&self) -> Option<Duration> {
        self.idle.filter(|idle| self.read.is_some_and(|read| read < *idle))
    }
}

fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a read that timed out ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// The handler's read deadline passed.
    Deadline,
    /// The peer was silent for the idle timeout: the connection must close.
    Idle(Duration),
    /// One read waited for the read timeout; the connection stays open.
    Read,
}

/// The read timeouts of one connection.
#[derive(Clone, Debug)]
pub(crate) struct ReadTimeouts {
    policy: TimeoutPolicy,
    deadline: Option<Instant>,
    /// When the peer last sent anything (or the connection began); kept up
    /// to date only when the idle timeout spans reads, so that the common
    /// read reads no clock.
    last_data: Instant,
}

impl ReadTimeouts {
    pub(crate) fn new(policy: TimeoutPolicy, now: Instant) -> ReadTimeouts {
        ReadTimeouts { policy, deadline: None, last_data: now }
    }

    pub(crate) fn policy(&self) -> &TimeoutPolicy {
        &self.policy
    }

    /// The handler's read deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The socket's configured receive timeout.
    pub(crate) fn receive(&self) -> Option<Duration> {
        self.policy.receive()
    }

    /// Sets or clears the handler's deadline; returns the receive timeout to
    /// put back on the socket when a deadline is cleared (reads under it set
    /// shorter ones).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) -> Option<Option<Duration>> {
        let restore = (deadline.is_none() && self.deadline.is_some()).then(|| self.policy.receive());
        self.deadline = deadline;
        restore
    }

    /// How long the next read may wait, when that differs from the
    /// socket's configured receive timeout (`Ok(None)`: leave it); or
    /// `Err(Deadline)` when the deadline has passed already.
    pub(crate) fn next_wait(&self, now: impl Fn() -> Instant) -> Result<Option<Duration>, Expired> {
        let receive = self.policy.receive();
        let idle = self.policy.idle_across_reads();
        if self.deadline.is_none() && idle.is_none() {
            return Ok(None);
        }
        let now = now();
        let mut wait = None;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(Expired::Deadline);
            }
            wait = Some(receive.map_or(left, |t| t.min(left)));
        }
        if let Some(idle) = idle {
            // Zero once it has passed: the read fails at once, as idle.
            let left = idle.saturating_sub(now.saturating_duration_since(self.last_data));
            // (Without a deadline, `wait` is the read timeout, the shorter.)
            wait = Some(wait.or(receive).map_or(left, |w| w.min(left)));
        }
        Ok(wait)
    }

    /// Data came: the idle clock starts again.
    pub(crate) fn data_came(&mut self, now: impl Fn() -> Instant) {
        if self.policy.idle_across_reads().is_some() {
            self.last_data = now();
        }
    }

    /// What a read that waited in vain ran into.
    pub(crate) fn expired(&self, now: impl Fn() -> Instant) -> Expired {
        let now = now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Expired::Deadline;
        }
        let Some(idle) = self.policy.idle else { return Expired::Read };
        let idle_passed = match self.policy.idle_across_reads() {
            Some(idle) => now.saturating_duration_since(self.last_data) >= idle,
            // The socket's timeout is the idle timeout itself.
            None => true,
        };
        if idle_passed { Expired::Idle(idle) } else { Expired::Read }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timeouts(idle: Option<u64>, read: Option<u64>) -> (ReadTimeouts, Instant) {
        let t0 = Instant::now();
        (ReadTimeouts::new(TimeoutPolicy { idle: idle.map(ms), read: read.map(ms), write: None }, t0), t0)
    }

    #[test]
    fn the_socket_receives_with_the_shorter_timeout() {
        let p = |idle: Option<u64>, read: Option<u64>, write: Option<u64>| TimeoutPolicy {
            idle: idle.map(ms),
            read: read.map(ms),
            write: write.map(ms),
        };
        assert_eq!(p(Some(300), Some(60), None).receive(), Some(ms(60)));
        assert_eq!(p(Some(30), Some(60), None).receive(), Some(ms(30)));
        assert_eq!(p(None, Some(60), None).receive(), Some(ms(60)));
        assert_eq!(TimeoutPolicy::default().receive(), None);
        // Writes: the idle timeout bounds them too (a peer that takes nothing).
        assert_eq!(p(Some(300), None, None).send(), Some(ms(300)));
        assert_eq!(p(Some(300), None, Some(100)).send(), Some(ms(100)));
        assert_eq!(p(None, Some(60), Some(500)).send(), Some(ms(500)));
        assert_eq!(p(None, Some(60), None).send(), None);
    }

    #[test]
    fn without_deadline_or_idle_across_reads_no_clock_is_read() {
        for (idle, read) in [(None, None), (Some(100), None), (None, Some(100)), (Some(100), Some(200))] {
            let (mut t, _) = timeouts(idle, read);
            let no_clock = || -> Instant { panic!("the clock was read") };
            assert_eq!(t.next_wait(no_clock), Ok(None));
            t.data_came(no_clock);
        }
    }

    #[test]
    fn a_deadline_bounds_the_wait_and_then_fails_reads() {
        let (mut t, t0) = timeouts(None, Some(100));
        assert_eq!(t.set_deadline(Some(t0 + ms(250))), None);
        assert_eq!(t.next_wait(|| t0), Ok(Some(ms(100))), "the read timeout is shorter");
        assert_eq!(t.next_wait(|| t0 + ms(200)), Ok(Some(ms(50))), "what is left of the deadline");
        assert_eq!(t.next_wait(|| t0 + ms(250)), Err(Expired::Deadline));
        assert_eq!(t.expired(|| t0 + ms(250)), Expired::Deadline);
        assert_eq!(t.expired(|| t0 + ms(100)), Expired::Read, "a read timeout before the deadline");
        assert_eq!(t.set_deadline(None), Some(Some(ms(100))), "clearing it restores the socket's timeout");
        assert_eq!(t.set_deadline(None), None, "nothing to restore twice");
    }

    #[test]
    fn the_idle_timeout_spans_reads_cut_short_by_the_read_timeout() {
        let (mut t, t0) = timeouts(Some(300), Some(60));
        assert_eq!(t.next_wait(|| t0), Ok(Some(ms(60))));
        assert_eq!(t.expired(|| t0 + ms(60)), Expired::Read, "silent for 60 ms: only a read timeout");
        assert_eq!(t.next_wait(|| t0 + ms(280)), Ok(Some(ms(20))), "the read waits only what idle has left");
        assert_eq!(t.expired(|| t0 + ms(300)), Expired::Idle(ms(300)));
        t.data_came(|| t0 + ms(290));
        assert_eq!(t.expired(|| t0 + ms(350)), Expired::Read, "data reset the idle clock");
        assert_eq!(t.next_wait(|| t0 + ms(600)), Ok(Some(ms(0))), "passed: a read that does not wait");
    }

    #[test]
    fn an_idle_timeout_alone_is_the_socket_timeout_and_any_expiry_is_idle() {
        let (t, t0) = timeouts(Some(200), None);
        assert_eq!(t.next_wait(|| t0), Ok(None));
        assert_eq!(t.expired(|| t0 + ms(200)), Expired::Idle(ms(200)));
        let (t, t0) = timeouts(None, Some(200));
        assert_eq!(t.expired(|| t0 + ms(200)), Expired::Read);
    }

    #[test]
    fn deadline_and_idle_together_take_the_nearer() {
        let (mut t, t0) = timeouts(Some(300), Some(100));
        t.set_deadline(Some(t0 + ms(50)));
        assert_eq!(t.next_wait(|| t0), Ok(Some(ms(50))));
        t.set_deadline(Some(t0 + ms(1000)));
        assert_eq!(t.next_wait(|| t0 + ms(250)), Ok(Some(ms(50))), "idle has 50 ms left");
    }
}
