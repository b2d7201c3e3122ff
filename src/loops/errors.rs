//! What to do when `accept` (or `recv` on a datagram server) fails: the one
//! policy every loop uses.
//!
//! Python's loop retries at once, so a process out of descriptors spins at
//! 100% CPU. Here errors are sorted into three kinds: the peer's problem
//! (skip it), a shortage of resources (back off: 5 ms, doubling to 1 s,
//! reset on success, logged once per episode), and everything else (the
//! server cannot go on: `serve_forever` returns the error).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::error::context;
use crate::stats::Counters;
use crate::sys;

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

/// After an accept error: take the next one at once, or after a pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Skipped: go on.
    Now,
    /// Backed off (the pause is over, or a shutdown cut it short).
    Paused,
}

/// What [`AcceptErrors::judge`] decided, for a loop that must not sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Skipped: go on.
    Skip,
    /// Take nothing more for this long.
    Pause(Duration),
}

/// One loop's accept errors: counted, sorted, backed off and logged the
/// same way wherever they happen.
#[derive(Debug)]
pub(crate) struct AcceptErrors<'a> {
    name: &'a str,
    counters: &'a Counters,
    /// Readable when the server stops: ends a back-off pause early.
    stop_fd: RawFd,
    backoff: Backoff,
}

impl<'a> AcceptErrors<'a> {
    pub(crate) fn new(name: &'a str, counters: &'a Counters, stop_fd: RawFd) -> Self {
        Self::resume(name, counters, stop_fd, Backoff::default())
    }

    /// Goes on with an episode a loop kept between its turns (the event
    /// strategy accepts in batches, on whichever poller is woken).
    pub(crate) fn resume(name: &'a str, counters: &'a Counters, stop_fd: RawFd, backoff: Backoff) -> Self {
        AcceptErrors { name, counters, stop_fd, backoff }
    }

    /// The episode so far, for the next [`resume`](Self::resume).
    pub(crate) fn into_backoff(self) -> Backoff {
        self.backoff
    }

    /// A connection or datagram was taken: an episode of errors is over.
    pub(crate) fn succeeded(&mut self) {
        if self.backoff.in_episode() {
            let errors = self.backoff.reset();
            log::warn!("{}: accepting again after {errors} error(s)", self.name);
        }
    }

    /// Counts and sorts an error; skips it, backs off, or returns it (with
    /// the server's name) when it is fatal.
    pub(crate) fn failed(&mut self, e: io::Error) -> io::Result<Next> {
        match self.judge(e)? {
            Verdict::Skip => Ok(Next::Now),
            Verdict::Pause(wait) => {
                sys::poll(&[self.stop_fd], &mut [false], Some(wait))?;
                Ok(Next::Paused)
            }
        }
    }

    /// As [`failed`](Self::failed), but the caller pauses (the event loop
    /// disarms its listener for the pause rather than sleep on a poller).
    pub(crate) fn judge(&mut self, e: io::Error) -> io::Result<Verdict> {
        Counters::bump(&self.counters.accept_errors);
        match classify(&e) {
            Action::Skip => {
                log::debug!("{}: skipping a failed accept: {e}", self.name);
                Ok(Verdict::Skip)
            }
            Action::BackOff => {
                let (wait, first) = self.backoff.step();
                if first {
                    log::warn!(
                        "{}: accept failed: {e}; backing off (5 ms doubling to 1 s) until it succeeds",
                        self.name
                    );
                }
                Ok(Verdict::Pause(wait))
            }
            Action::Fatal => Err(fatal(self.name, e)),
        }
    }
}

/// An error the server cannot serve past: logged once, returned with the
/// server's name.
pub(crate) fn fatal(name: &str, e: io::Error) -> io::Error {
    log::error!("{name}: giving up: {e}");
    context(e, name)
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
        assert_eq!(classify(&os(libc::ECONNREFUSED)), Action::Skip);
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

    /// The policy in isolation: skips go on at once and are counted, a
    /// shortage pauses (cut short here by a readable stop descriptor), a
    /// fatal error comes back with the server's name and its cause intact.
    #[test]
    fn the_policy_counts_skips_pauses_and_gives_up_with_the_cause() {
        let counters = Counters::default();
        let (stop_rx, stop_tx) = std::os::unix::net::UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &stop_tx, b"x").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stop_rx);
        let mut errors = AcceptErrors::new("tcp 127.0.0.1:1", &counters, fd);
        let os = io::Error::from_raw_os_error;
        assert_eq!(errors.failed(os(libc::ECONNABORTED)).unwrap(), Next::Now);
        assert_eq!(errors.failed(os(libc::EMFILE)).unwrap(), Next::Paused);
        assert!(errors.backoff.in_episode());
        errors.succeeded();
        assert!(!errors.backoff.in_episode(), "a success ends the episode");
        // An episode kept between turns goes on doubling.
        assert_eq!(errors.judge(os(libc::EMFILE)).unwrap(), Verdict::Pause(BACKOFF_START));
        let kept = errors.into_backoff();
        let mut errors = AcceptErrors::resume("tcp 127.0.0.1:1", &counters, fd, kept);
        assert_eq!(errors.judge(os(libc::EMFILE)).unwrap(), Verdict::Pause(2 * BACKOFF_START));
        errors.succeeded();
        let fatal = errors.failed(os(libc::EBADF)).unwrap_err();
        assert!(fatal.to_string().starts_with("tcp 127.0.0.1:1: "), "{fatal}");
        let cause = fatal.get_ref().and_then(|e| e.source()).and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(cause.and_then(io::Error::raw_os_error), Some(libc::EBADF));
        assert_eq!(counters.accept_errors.load(std::sync::atomic::Ordering::Relaxed), 5);
    }
}
