//! Stopping a server: the [`ServerHandle`], the waker that ends the loop's wait
//! at once, the tracker that force-closes connections when the grace period
//! ends, and the process-wide signal hub.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::stats::{Counters, Stats};
use crate::sys;

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
    /// When the grace period of the current shutdown ends.
    deadline: Option<Instant>,
    watchdog: bool,
    /// When the grace period ran out and connections were shut down.
    forced_at: Option<Instant>,
}

/// State shared by a server, its workers, its requests and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Counters,
    pub(crate) waker: Waker,
    stop: AtomicBool,
    /// The accept loop is parked until capacity frees up.
    waiting: AtomicBool,
    /// Threads the strategy runs (pool workers, request threads, reapers).
    pub(crate) threads: AtomicUsize,
    /// Open connections, and whether each is idle: its handler waits in
    /// `StreamRequest::wait_for_data` for a request to begin.
    tracker: Mutex<HashMap<RawFd, bool>>,
    children: Mutex<HashSet<libc::pid_t>>,
    drain: Mutex<Drain>,
    drain_cv: Condvar,
    pub(crate) grace: Duration,
    pub(crate) name: String,
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
            children: Mutex::new(HashSet::new()),
            drain: Mutex::new(Drain::default()),
            drain_cv: Condvar::new(),
            grace,
            name,
        }))
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// Takes one unit of in-flight work (a connection or a datagram).
    pub(crate) fn acquire(self: &Arc<Self>) -> Slot {
        self.stats.active.fetch_add(1, SeqCst);
        Slot { shared: Arc::clone(self) }
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

    /// A strategy thread or reaper ended: wake a drain waiting for the last one.
    pub(crate) fn thread_exited(&self) {
        if self.threads.fetch_sub(1, SeqCst) == 1 {
            self.notify_drain();
        }
    }

    fn notify_drain(&self) {
        let _guard = self.drain.lock();
        self.drain_cv.notify_all();
    }

    pub(crate) fn track(&self, fd: RawFd) {
        self.tracker.lock().insert(fd, false);
    }

    /// Marks connection `fd` idle (waiting for a request) or busy. Returns
    /// false, leaving it busy, when it would go idle during a shutdown: an
    /// idle connection is not served any more then.
    pub(crate) fn set_idle(&self, fd: RawFd, idle: bool) -> bool {
        let mut tracker = self.tracker.lock();
        if idle && self.stopping() {
            return false;
        }
        if let Some(state) = tracker.get_mut(&fd) {
            *state = idle;
        }
        true
    }

    pub(crate) fn untrack(&self, fd: RawFd) {
        self.tracker.lock().remove(&fd);
    }

    pub(crate) fn track_child(&self, pid: libc::pid_t) {
        self.children.lock().insert(pid);
    }

    pub(crate) fn untrack_child(&self, pid: libc::pid_t) {
        self.children.lock().remove(&pid);
    }

    /// Requests a shutdown whose grace period is `grace`; a later request may
    /// shorten the deadline, never lengthen it.
    pub(crate) fn request_stop(self: &Arc<Self>, grace: Duration) {
        let mut d = self.drain.lock();
        let deadline = Instant::now() + grace;
        d.deadline = Some(d.deadline.map_or(deadline, |old| old.min(deadline)));
        self.stop.store(true, SeqCst);
        self.waker.stop();
        // Idle connections are not in flight: end their wait now — unless a
        // request has begun to arrive (its handler is about to read it).
        // Only the read side is shut, so bytes already queued are still
        // read and answered.
        for (&fd, _) in self.tracker.lock().iter().filter(|(_, idle)| **idle) {
            let mut ready = [false];
            if sys::poll(&[fd], &mut ready, Some(Duration::ZERO)).is_ok_and(|n| n == 0) {
                sys::shutdown_fd(fd, std::net::Shutdown::Read);
            }
        }
        self.drain_cv.notify_all();
        if self.stats.active.load(SeqCst) > 0 {
            self.start_watchdog(&mut d);
        }
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
        match spawned {
            Ok(_) => d.watchdog = true,
            Err(e) => log::error!("{}: cannot start the shutdown watchdog: {e}", self.name),
        }
    }

    fn watchdog(&self) {
        let mut d = self.drain.lock();
        while let Some(deadline) = d.deadline {
            if d.forced_at.is_some() || self.stats.active.load(SeqCst) == 0 {
                break;
            }
            if Instant::now() >= deadline {
                self.force_close(&mut d);
                break;
            }
            self.drain_cv.wait_until(&mut d, deadline);
        }
        d.watchdog = false;
    }

    fn force_close(&self, d: &mut Drain) {
        d.forced_at = Some(Instant::now());
        let fds = self.tracker.lock();
        let children = self.children.lock();
        if !fds.is_empty() || !children.is_empty() {
            log::warn!(
                "{}: grace period over: closing {} connection(s), killing {} child process(es)",
                self.name,
                fds.len(),
                children.len()
            );
        }
        // The lock is held while shutting down, so no owner can close (and the
        // OS reuse) a descriptor under our feet.
        for &fd in fds.keys() {
            sys::shutdown_fd(fd, std::net::Shutdown::Both);
        }
        for &pid in children.iter() {
            sys::kill_child(pid);
        }
        self.drain_cv.notify_all();
    }

    /// Waits until `done()` holds, forcing connections closed at the grace
    /// deadline (if the watchdog has not already), then waiting at most
    /// [`FORCE_WAIT`] more. Returns whether everything finished.
    pub(crate) fn wait_drained(self: &Arc<Self>, done: impl Fn() -> bool) -> bool {
        self.ensure_watchdog();
        let mut d = self.drain.lock();
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            let until = match d.forced_at {
                Some(at) => at + FORCE_WAIT,
                None => {
                    let deadline = *d.deadline.get_or_insert(now + self.grace);
                    if now >= deadline {
                        self.force_close(&mut d);
                        continue;
                    }
                    deadline
                }
            };
            if d.forced_at.is_some() && now >= until {
                return done();
            }
            self.drain_cv.wait_until(&mut d, until);
        }
    }

    /// Forgets the finished shutdown so that the server can serve again.
    pub(crate) fn reset(&self) {
        let mut d = self.drain.lock();
        d.deadline = None;
        d.forced_at = None;
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

/// A cloneable handle to a running server: stop it, read its counters.
///
/// Every method works from any thread — a handler of the same server
/// included, under any strategy — and returns at once: `shutdown` asks the
/// server to stop and never waits for it, so it cannot deadlock (Python's
/// `shutdown()` blocks until `serve_forever` ends, which hangs when called
/// from the serving thread).
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use socketserver::{StreamRequest, ThreadingTcpServer};
/// use std::io::Write;
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
///     req.write_all(b"bye\n")?;
///     req.server().shutdown(); // stop after this request
///     Ok(())
/// })?;
/// server.serve_forever()?; // returns once the request above is done
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ServerHandle {
    /// Asks the server to stop, with the grace period set by the builder
    /// ([`Builder::grace_period`](crate::Builder::grace_period), 5 s by default).
    ///
    /// The accept loop wakes at once and accepts nothing more. Requests
    /// already accepted (queued ones included) run to completion; when the
    /// grace period ends, every connection still open is shut down so that
    /// blocked handlers return, and forked children are killed.
    /// `serve_forever` returns when all of it is done. Calling it before
    /// `serve_forever` makes the next `serve_forever` return at once.
    pub fn shutdown(&self) {
        self.shared.request_stop(self.shared.grace);
    }

    /// Like [`shutdown`](Self::shutdown) with a grace period of `grace`
    /// (`Duration::ZERO`: close every connection now). A second call can
    /// shorten the deadline of a shutdown under way, not lengthen it.
    pub fn shutdown_with_grace(&self, grace: Duration) {
        self.shared.request_stop(grace);
    }

    /// Whether a shutdown has been asked for and the server has not finished it.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.stopping()
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Has SIGINT (Ctrl-C) and SIGTERM shut this server down.
    ///
    /// The crate keeps one process-wide hub (the `ctrlc` crate allows one
    /// handler per process) that every server subscribed here shares: a
    /// signal shuts all of them down with their grace periods; a second
    /// signal closes everything at once. A server subscribed after the
    /// process was signalled is shut down at once. Nothing is installed
    /// unless this is called.
    ///
    /// # Errors
    /// Fails if another signal handler was installed through `ctrlc` or the
    /// OS refuses the handler.
    pub fn shutdown_on_signal(&self) -> io::Result<()> {
        // Registered before the handler is installed, so that no signal can
        // find the hub without this server; and a server registered after
        // a signal arrived stops at once.
        {
            let mut hub = HUB.lock();
            // Servers come and go: forget the dropped ones as new ones come.
            hub.servers.retain(|w| w.strong_count() > 0);
            let me = Arc::downgrade(&self.shared);
            if !hub.servers.iter().any(|w| w.ptr_eq(&me)) {
                hub.servers.push(me);
            }
            if hub.signals > 0 {
                self.shared.request_stop(self.shared.grace);
            }
        }
        install_signal_handler()
    }
}

/// The servers signals shut down, and how many signals came.
struct Hub {
    servers: Vec<Weak<Shared>>,
    signals: usize,
}

static HUB: Mutex<Hub> = Mutex::new(Hub { servers: Vec::new(), signals: 0 });

fn on_signal() {
    let mut hub = HUB.lock();
    hub.signals += 1;
    hub.servers.retain(|w| w.strong_count() > 0);
    log::info!("signal received: shutting down {} server(s)", hub.servers.len());
    for shared in hub.servers.iter().filter_map(Weak::upgrade) {
        // A second signal during a drain ends the grace period.
        let grace = if shared.stopping() { Duration::ZERO } else { shared.grace };
        shared.request_stop(grace);
    }
}

fn install_signal_handler() -> io::Result<()> {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock();
    if !*installed {
        ctrlc::set_handler(on_signal)
            .map_err(|e| io::Error::other(format!("cannot install the SIGINT/SIGTERM handler: {e}")))?;
        *installed = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribing twice counts once, and servers that are gone are
    /// forgotten as others subscribe: the hub does not grow with churn.
    #[test]
    fn the_signal_hub_forgets_dropped_servers_and_counts_each_once() {
        for _ in 0..20 {
            let server = crate::TcpServer::bind("127.0.0.1:0", |_: &mut crate::StreamRequest| Ok(())).unwrap();
            let handle = server.handle();
            handle.shutdown_on_signal().unwrap();
            handle.shutdown_on_signal().unwrap();
            assert_eq!(HUB.lock().servers.len(), 1);
        }
    }
}
