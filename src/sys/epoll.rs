//! `epoll(7)`, the kernel's readiness set, for the event strategy: several
//! threads may wait on one set at once (which `mio`'s `Poll::poll(&mut
//! self)` and `polling`'s one-waiter rule do not allow), and each ready
//! connection is reported to one of them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::deadline::Deadline;

/// What a registration waits for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Interest(u32);

impl Interest {
    /// Readable, or hung up; edge-triggered: reported once per arrival.
    pub(crate) const READ_EDGE: Interest = Interest((libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32);
    /// Readable or writable, or hung up; edge-triggered: for a connection
    /// whose answer waits for the peer to take it, or whose close lingers.
    pub(crate) const READ_WRITE_EDGE: Interest =
        Interest((libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32);
    /// Readable, reported to one waiter, then disarmed until re-armed.
    pub(crate) const READ_ONESHOT: Interest = Interest((libc::EPOLLIN | libc::EPOLLONESHOT) as u32);
    /// Readable, reported to every waiter for as long as it stays readable.
    pub(crate) const READ_LEVEL: Interest = Interest(libc::EPOLLIN as u32);
    /// Readable, edge-triggered: one arrival, one waiter.
    pub(crate) const READ_EDGE_ONLY: Interest = Interest((libc::EPOLLIN | libc::EPOLLET) as u32);
}

/// An epoll set.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor epoll_create1 just returned, owned by no one else.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut event = libc::epoll_event { events: interest.0, u64: token };
        // SAFETY: `event` is valid for the call; the kernel checks `fd` (an
        // invalid one is EBADF, never memory unsafety).
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    pub(crate) fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest(0))
    }

    /// Waits for events, at most `timeout` (`None`: for ever); fills
    /// `events` and returns how many: 0 only when the timeout passed. A
    /// signal that interrupts the wait (`EINTR`) does not end it: it goes
    /// on for what is left of the timeout, so that a caller never takes an
    /// interruption for a timeout (a surplus poller retired on one).
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = Deadline::within(Instant::now(), timeout);
        let cap = events.buf.len() as libc::c_int;
        loop {
            let ms = deadline.poll_millis(Instant::now());
            // SAFETY: `events.buf` has room for `cap` events and lives for the call.
            let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.buf.as_mut_ptr(), cap, ms) };
            if n == 0 && deadline.early(Instant::now()) {
                continue; // longer than one wait can be
            }
            if n >= 0 {
                events.len = n as usize;
                return Ok(events.len);
            }
            events.len = 0;
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Room for the events one wait reports.
pub(crate) struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("len", &self.len).finish()
    }
}

impl Events {
    pub(crate) fn with_capacity(n: usize) -> Events {
        Events { buf: vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)], len: 0 }
    }

    /// How many events the last wait reported.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The tokens of the events of the last wait.
    pub(crate) fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.buf[..self.len].iter().map(|e| e.u64)
    }

    /// The tokens of the events of the last wait that say the peer closed
    /// (its end of stream is there to read), hung up or failed.
    pub(crate) fn hangups(&self) -> impl Iterator<Item = u64> + '_ {
        let hangup = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        self.buf[..self.len].iter().filter(move |e| e.events & hangup != 0).map(|e| e.u64)
    }
}

/// A counter descriptor (`eventfd`) to wake waiters: readable while non-zero.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor eventfd just returned, owned by no one else.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Adds one: readable (again); an edge for edge-triggered waiters.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64; a full counter (EAGAIN)
        // is still readable, which is all a wake-up needs.
        unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Resets it to zero (not readable).
    #[cfg(test)]
    pub(crate) fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN when already zero.
        unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut n).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_is_reported_once_and_a_level_while_it_lasts() {
        let ep = Epoll::new().unwrap();
        let edge = EventFd::new().unwrap();
        let level = EventFd::new().unwrap();
        ep.add(edge.as_raw_fd(), 1, Interest::READ_EDGE_ONLY).unwrap();
        ep.add(level.as_raw_fd(), 2, Interest::READ_LEVEL).unwrap();
        let mut events = Events::with_capacity(8);
        assert_eq!(ep.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        edge.signal();
        level.signal();
        ep.wait(&mut events, Some(Duration::from_secs(1))).unwrap();
        let mut got: Vec<u64> = events.tokens().collect();
        got.sort();
        assert_eq!(got, [1, 2]);
        ep.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.tokens().collect::<Vec<_>>(), [2], "the edge once, the level again");
        level.clear();
        edge.signal();
        ep.wait(&mut events, Some(Duration::from_secs(1))).unwrap();
        assert_eq!(events.tokens().collect::<Vec<_>>(), [1], "a new edge");
        ep.delete(edge.as_raw_fd()).unwrap();
        edge.signal();
        assert_eq!(ep.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    }

    extern "C" fn nothing(_: libc::c_int) {}

    /// A signal that interrupts the wait is not its timeout: the wait goes
    /// on for the rest of it (it returned 0 at once, and a surplus poller
    /// retired as if its keep-alive had passed).
    #[test]
    fn a_signal_does_not_end_a_wait_before_its_timeout() {
        // SAFETY: installs a handler that does nothing, for a signal nothing
        // else in the test process uses; no SA_RESTART, so waits see EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = nothing as *const () as usize;
            assert_eq!(libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut()), 0);
        }
        let ep = Epoll::new().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            let mut events = Events::with_capacity(1);
            let start = std::time::Instant::now();
            let n = ep.wait(&mut events, Some(Duration::from_millis(300))).unwrap();
            (n, start.elapsed())
        });
        let thread = rx.recv().unwrap();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(5));
            if waiter.is_finished() {
                break;
            }
            // SAFETY: the thread is alive (not finished) and handles SIGURG.
            unsafe { libc::pthread_kill(thread, libc::SIGURG) };
        }
        let (n, waited) = waiter.join().unwrap();
        assert_eq!(n, 0);
        assert!(waited >= Duration::from_millis(300), "the wait ended after {waited:?}, at a signal");
    }
}
