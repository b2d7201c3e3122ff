//! A server's shared state: its counters, the shutdown flag and the waker
//! that ends the loop's wait at once, the drain with its deadline, the
//! tracker that force-closes connections when the grace period ends, and the
//! children a forking server has to kill then.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::deadline::Deadline;
use crate::net::Stream;
use crate::stats::Counters;
use crate::sys;
use crate::sys::process::Children;

/// How long, after the grace period ends and every connection has been shut
/// down, the server still waits for handlers to return before it stops
/// waiting for them (a handler blocked on something other than its socket).
pub(crate) const FORCE_WAIT: Duration = Duration::from_secs(1);

/// A self-pipe: writing a byte makes the read end readable, which ends a
/// `poll` on it. `stop` stays readable until reset (every thread waiting on it
/// sees it); `notify` is drained by the one loop that waits on it.
#[derive(Debug)]
pub(crate) struct Waker {
    stop_rx: UnixStream,
    stop_tx: UnixStream,
    notify_rx: UnixStream,
    notify_tx: UnixStream,
}

impl Waker {
    fn new() -> io::Result<Waker> {
        let (stop_rx, stop_tx) = UnixStream::pair()?;
        let (notify_rx, notify_tx) = UnixStream::pair()?;
        for s in [&stop_rx, &stop_tx, &notify_rx, &notify_tx] {
            s.set_nonblocking(true)?;
        }
        Ok(Waker { stop_rx, stop_tx, notify_rx, notify_tx })
    }

    pub(crate) fn stop_fd(&self) -> RawFd {
        self.stop_rx.as_raw_fd()
    }

    pub(crate) fn notify_fd(&self) -> RawFd {
        self.notify_rx.as_raw_fd()
    }

    fn stop(&self) {
        // A full pipe already wakes everyone: WouldBlock is success here.
        let _ = (&self.stop_tx).write(&[1]);
    }

    fn reset_stop(&self) {
        drain(&self.stop_rx);
    }

    pub(crate) fn notify(&self) {
        let _ = (&self.notify_tx).write(&[1]);
    }

    pub(crate) fn drain_notify(&self) {
        drain(&self.notify_rx);
    }
}

fn drain(mut rx: &UnixStream) {
    let mut buf = [0u8; 64];
    while let Ok(n) = rx.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

#[derive(Debug, Default)]
struct Drain {
    /// A shutdown was asked for and is not finished.
    requested: bool,
    /// When its grace period ends; `None` with `requested`: never (a grace
    /// period of `Duration::MAX`, Python's `block_on_close`).
    deadline: Option<Instant>,
    watchdog: bool,
    /// When the grace period ran out and connections were shut down.
    forced_at: Option<Instant>,
    /// Shutdowns asked for so far (kept across a reset): a waiter that
    /// wakes after the server finished and reset still sees its shutdown.
    requests: u64,
}

impl Drain {
    /// Asks for a shutdown with `grace`: a later request may shorten the
    /// deadline, never lengthen it.
    fn request(&mut self, grace: Duration) {
        let new = Deadline::after(Instant::now(), grace).instant();
        self.deadline = match (self.requested, self.deadline, new) {
            (false, _, new) => new,
            (true, Some(old), Some(new)) => Some(old.min(new)),
            (true, old, new) => old.or(new),
        };
        self.requested = true;
        self.requests += 1;
    }
}

/// State shared by a server, its loops, workers, requests and handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Counters,
    pub(crate) waker: Waker,
    stop: AtomicBool,
    /// The accept loop is parked until capacity frees up.
    waiting: AtomicBool,
    /// Threads the strategy runs (pool workers, request threads, the reaper).
    pub(crate) threads: AtomicUsize,
    /// Open connections, by descriptor, held weakly: the request owns the
    /// socket. Upgrading one keeps the descriptor open while the tracker
    /// shuts it down, so it can never be a number the OS has since given to
    /// another socket.
    tracker: Mutex<HashMap<RawFd, Weak<Stream>>>,
    /// Children of a forking server.
    pub(crate) children: Children,
    drain: Mutex<Drain>,
    drain_cv: Condvar,
    pub(crate) grace: Duration,
    pub(crate) name: String,
    /// The socket was handed to another process, which serves it now: it is
    /// not shut down, nor its Unix socket file removed, when serving stops.
    handed_over: AtomicBool,
}

impl Shared {
    pub(crate) fn new(grace: Duration, name: String) -> io::Result<Arc<Shared>> {
        Ok(Arc::new(Shared {
            stats: Counters::default(),
            waker: Waker::new()?,
            stop: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            threads: AtomicUsize::new(0),
            tracker: Mutex::new(HashMap::new()),
            children: Children::default(),
            drain: Mutex::new(Drain::default()),
            drain_cv: Condvar::new(),
            grace,
            name,
            handed_over: AtomicBool::new(false),
        }))
    }

    /// Marks the socket as served by another process now.
    pub(crate) fn hand_over(&self) {
        self.handed_over.store(true, SeqCst);
    }

    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over.load(SeqCst)
    }

    /// Waits until a shutdown is asked for, or `timeout` passes; whether it was.
    pub(crate) fn wait_stop_requested(&self, timeout: Option<Duration>) -> bool {
        let deadline = Deadline::within(Instant::now(), timeout).instant();
        let mut d = self.drain.lock();
        let seen = d.requests;
        while !self.stopping() && d.requests == seen {
            match deadline {
                Some(deadline) => {
                    if self.drain_cv.wait_until(&mut d, deadline).timed_out() {
                        return self.stopping() || d.requests != seen;
                    }
                }
                None => self.drain_cv.wait(&mut d),
            }
        }
        true
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// Takes one unit of in-flight work (a connection or a datagram).
    pub(crate) fn acquire(self: &Arc<Self>) -> Slot {
        self.stats.active.fetch_add(1, SeqCst);
        Slot { shared: Arc::clone(self) }
    }

    /// Says the accept loop waits for capacity (`true`): a released slot
    /// then notifies.
    pub(crate) fn set_waiting(&self, on: bool) {
        self.waiting.store(on, SeqCst);
    }

    /// Wakes the accept loop if it is parked waiting for capacity.
    pub(crate) fn capacity_freed(&self) {
        if self.waiting.load(SeqCst) {
            self.waker.notify();
        }
    }

    /// Parks the accept loop until `ready()` holds or something wakes it.
    /// The flag is raised before `ready` is checked again, so a release that
    /// happens in between is not lost.
    pub(crate) fn wait_for_capacity(&self, ready: impl Fn() -> bool) -> io::Result<()> {
        self.waiting.store(true, SeqCst);
        let result = if ready() || self.stopping() {
            Ok(())
        } else {
            let fds = [self.waker.stop_fd(), self.waker.notify_fd()];
            sys::poll(&fds, &mut [false; 2], None).map(drop)
        };
        self.waiting.store(false, SeqCst);
        self.waker.drain_notify();
        result
    }

    /// Like [`wait_for_capacity`](Self::wait_for_capacity) during a shutdown
    /// (the stop descriptor, readable now, is not waited on): until
    /// `ready()` or `until`. Returns `ready()`.
    pub(crate) fn wait_for_capacity_until(&self, ready: impl Fn() -> bool, until: Deadline) -> bool {
        self.waiting.store(true, SeqCst);
        while !ready() {
            let left = until.left(Instant::now());
            if left.is_some_and(|l| l.is_zero()) || sys::poll(&[self.waker.notify_fd()], &mut [false], left).is_err() {
                break;
            }
            self.waker.drain_notify();
        }
        self.waiting.store(false, SeqCst);
        ready()
    }

    /// A strategy thread or reaper ended: wake a drain waiting for the last
    /// one, or — during a shutdown — for some of them (the datagram
    /// receivers, while a pool `handle_request` started lives on).
    pub(crate) fn thread_exited(&self) {
        if self.threads.fetch_sub(1, SeqCst) == 1 || self.stopping() {
            self.notify_drain();
        }
    }

    fn notify_drain(&self) {
        let _guard = self.drain.lock();
        self.drain_cv.notify_all();
    }

    pub(crate) fn track(&self, stream: &Arc<Stream>) {
        self.tracker.lock().insert(stream.as_raw_fd(), Arc::downgrade(stream));
    }

    /// Forgets connection `fd`; its owner calls this before it closes it.
    pub(crate) fn untrack(&self, fd: RawFd) {
        self.tracker.lock().remove(&fd);
    }

    /// Requests a shutdown whose grace period is `grace`; a later request may
    /// shorten the deadline, never lengthen it. Connections waiting for a
    /// request see the stop descriptor and drain by the drain window
    /// (`StreamRequest`); requests under way get the grace period.
    pub(crate) fn request_stop(self: &Arc<Self>, grace: Duration) {
        let mut d = self.drain.lock();
        d.request(grace);
        self.stop.store(true, SeqCst);
        self.waker.stop();
        self.drain_cv.notify_all();
        if self.stats.active.load(SeqCst) > 0 {
            self.start_watchdog(&mut d);
        }
    }

    /// The open connections, kept open while in hand.
    fn tracked(&self) -> Vec<Arc<Stream>> {
        self.tracker.lock().values().filter_map(Weak::upgrade).collect()
    }

    /// Makes sure someone enforces the deadline while work is in flight.
    pub(crate) fn ensure_watchdog(self: &Arc<Self>) {
        let mut d = self.drain.lock();
        if self.stats.active.load(SeqCst) > 0 {
            self.start_watchdog(&mut d);
        }
    }

    fn start_watchdog(self: &Arc<Self>, d: &mut Drain) {
        if d.watchdog || d.forced_at.is_some() {
            return;
        }
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("socketserver-shutdown".into())
            .stack_size(64 * 1024)
            .spawn(move || shared.watchdog());
        // Without it, the deadline is still enforced by `wait_drained`
        // (serve_forever's own wait); nothing is logged under the lock.
        d.watchdog = spawned.is_ok();
    }

    fn watchdog(&self) {
        let mut d = self.drain.lock();
        while d.requested {
            if d.forced_at.is_some() || self.stats.active.load(SeqCst) == 0 {
                break;
            }
            match d.deadline {
                Some(deadline) if Instant::now() >= deadline => {
                    let (closed, killed) = self.force_close(&mut d);
                    drop(d);
                    self.log_forced(closed, killed);
                    d = self.drain.lock();
                    break;
                }
                Some(deadline) => {
                    self.drain_cv.wait_until(&mut d, deadline);
                }
                None => self.drain_cv.wait(&mut d),
            }
        }
        d.watchdog = false;
    }

    /// Shuts down every open connection and kills every child; returns how
    /// many of each, for the caller to log once it holds no lock.
    fn force_close(&self, d: &mut Drain) -> (usize, usize) {
        d.forced_at = Some(Instant::now());
        let open = self.tracked();
        let killed = self.children.kill_all();
        for stream in &open {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.drain_cv.notify_all();
        (open.len(), killed)
    }

    fn log_forced(&self, closed: usize, killed: usize) {
        if closed > 0 || killed > 0 {
            log::warn!(
                "{}: grace period over: closed {closed} connection(s), killed {killed} child process(es)",
                self.name,
            );
        }
    }

    /// Waits until `done()` holds, forcing connections closed at the grace
    /// deadline (if the watchdog has not already), then waiting at most
    /// [`FORCE_WAIT`] more. Returns whether everything finished.
    pub(crate) fn wait_drained(self: &Arc<Self>, done: impl Fn() -> bool) -> bool {
        self.ensure_watchdog();
        let mut d = self.drain.lock();
        if !d.requested {
            d.request(self.grace);
        }
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            let until = match (d.forced_at, d.deadline) {
                (Some(at), _) => Some(at + FORCE_WAIT),
                (None, Some(deadline)) if now >= deadline => {
                    let (closed, killed) = self.force_close(&mut d);
                    drop(d);
                    self.log_forced(closed, killed);
                    d = self.drain.lock();
                    continue;
                }
                (None, deadline) => deadline,
            };
            match until {
                Some(until) if d.forced_at.is_some() && now >= until => return done(),
                Some(until) => {
                    self.drain_cv.wait_until(&mut d, until);
                }
                None => self.drain_cv.wait(&mut d),
            }
        }
    }

    /// Forgets the finished shutdown so that the server can serve again.
    pub(crate) fn reset(&self) {
        let mut d = self.drain.lock();
        *d = Drain { watchdog: d.watchdog, requests: d.requests, ..Drain::default() };
        self.stop.store(false, SeqCst);
        self.waker.reset_stop();
        // A watchdog waiting for the old deadline sees there is none.
        self.drain_cv.notify_all();
    }
}

/// One unit of in-flight work; dropping it releases the unit.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let before = self.shared.stats.active.fetch_sub(1, SeqCst);
        self.shared.capacity_freed();
        if before == 1 && self.shared.stopping() {
            self.shared.notify_drain();
        }
    }
}
