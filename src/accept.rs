//! What to do when `accept` (or `recv` on a datagram server) fails.
//!
//! Python's loop retries at once, so a process out of descriptors spins at
//! 100% CPU. Here errors are sorted into three kinds: the peer's problem
//! (skip it), a shortage of resources (back off: 5 ms, doubling to 1 s,
//! reset on success, logged once per episode), and everything else (the
//! server cannot go on: `serve_forever` returns the error).

use std::io;
use std::time::Duration;

/// What the loop does about an accept error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// The connection died before we took it, or a signal interrupted us:
    /// try the next one.
    Skip,
    /// Out of descriptors, buffers or memory: wait, then try again.
    BackOff,
    /// Anything else ends `serve_forever` with the error.
    Fatal,
}

pub(crate) fn classify(e: &io::Error) -> Action {
    if matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return Action::Skip;
    }
    match e.raw_os_error() {
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) => Action::Skip,
        // Linux reports these from accept for errors of the new connection
        // (man 2 accept: "should be treated like EAGAIN by retrying").
        Some(libc::ENETDOWN | libc::ENOPROTOOPT | libc::EHOSTDOWN | libc::ENONET | libc::EHOSTUNREACH)
        | Some(libc::EOPNOTSUPP | libc::ENETUNREACH | libc::ETIMEDOUT) => Action::Skip,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Action::BackOff,
        // Datagram sockets: an ICMP error from an earlier reply surfaces on recv.
        Some(libc::ECONNREFUSED) => Action::Skip,
        _ => Action::Fatal,
    }
}

pub(crate) const BACKOFF_START: Duration = Duration::from_millis(5);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Exponential back-off across one episode of resource errors.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
    episode_errors: u64,
}

impl Backoff {
    /// A success ends the episode; returns the number of errors it had.
    pub(crate) fn reset(&mut self) -> u64 {
        self.next = None;
        std::mem::take(&mut self.episode_errors)
    }

    /// The wait after one more error, and whether this error starts the episode.
    pub(crate) fn step(&mut self) -> (Duration, bool) {
        let first = self.next.is_none();
        let wait = self.next.unwrap_or(BACKOFF_START);
        self.next = Some((wait * 2).min(BACKOFF_MAX));
        self.episode_errors += 1;
        (wait, first)
    }

    pub(crate) fn in_episode(&self) -> bool {
        self.next.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify(&os(libc::ECONNABORTED)), Action::Skip);
        assert_eq!(classify(&os(libc::EINTR)), Action::Skip);
        assert_eq!(classify(&os(libc::EPROTO)), Action::Skip);
        for e in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(classify(&os(e)), Action::BackOff, "errno {e}");
        }
        assert_eq!(classify(&os(libc::EBADF)), Action::Fatal);
        assert_eq!(classify(&os(libc::EINVAL)), Action::Fatal);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..10).map(|_| b.step()).collect();
        assert_eq!(waits[0], (Duration::from_millis(5), true));
        assert_eq!(waits[1], (Duration::from_millis(10), false));
        assert_eq!(waits[7].0, Duration::from_millis(640));
        assert_eq!(waits[8].0, BACKOFF_MAX);
        assert_eq!(waits[9].0, BACKOFF_MAX);
        assert_eq!(b.reset(), 10);
        assert_eq!(b.step(), (Duration::from_millis(5), true));
    }
}
