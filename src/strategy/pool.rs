//! The thread pool: workers fed through a bounded crossbeam channel, growing
//! on demand and shrinking when idle.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use super::{Overflow, ThreadPool};
use crate::request::Request;
use crate::service::Service;
use crate::stats::Counters;

/// How long the accept loop waits on a hand-off that should complete at once
/// before it looks again (a worker may have retired in between).
const HANDOFF_RETRY: Duration = Duration::from_millis(10);

struct Inner<R> {
    config: ThreadPool,
    service: Arc<Service<R>>,
    rx: Receiver<R>,
    /// Workers alive.
    total: AtomicUsize,
    /// Jobs handed over and not yet finished: queued, in transit, running.
    /// Raised by the dispatcher before the hand-off, lowered by the worker
    /// after the job, so it never lags behind a burst.
    assigned: AtomicUsize,
    next_id: AtomicUsize,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// A running pool.
pub(crate) struct Pool<R> {
    tx: Sender<R>,
    inner: Arc<Inner<R>>,
}

impl<R> std::fmt::Debug for Pool<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl<R: Request> Pool<R> {
    pub(crate) fn start(config: &ThreadPool, service: &Arc<Service<R>>) -> io::Result<Pool<R>> {
        let (tx, rx) = crossbeam_channel::bounded(config.queue);
        let inner = Arc::new(Inner {
            config: config.clone(),
            service: Arc::clone(service),
            rx,
            total: AtomicUsize::new(0),
            assigned: AtomicUsize::new(0),
            next_id: AtomicUsize::new(0),
            handles: Mutex::new(Vec::new()),
        });
        let pool = Pool { tx, inner };
        for _ in 0..config.min {
            pool.inner.spawn_worker()?;
        }
        Ok(pool)
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.inner.config.overflow == Overflow::Reject || !self.inner.saturated()
    }

    pub(crate) fn dispatch(&self, job: R) {
        let inner = &self.inner;
        let stats = &inner.service.shared.stats;
        if inner.config.overflow == Overflow::Reject && inner.saturated() {
            Counters::bump(&stats.rejected);
            log::debug!("{}: pool full, rejecting {}", inner.service.shared.name, job.peer());
            return; // dropping the job closes the connection
        }
        // Counted before the hand-off, so that the next dispatch already
        // knows this job needs a worker — even before any worker wakes.
        let assigned = inner.assigned.fetch_add(1, SeqCst) + 1;
        if assigned > inner.total.load(SeqCst)
            && inner.total.load(SeqCst) < inner.config.max
            && let Err(e) = inner.spawn_worker()
        {
            log::error!("{}: cannot start a pool worker: {e}", inner.service.shared.name);
        }
        stats.queued.fetch_add(1, SeqCst);
        // The common case — room in the queue, or a worker waiting — needs
        // no clock and no timer.
        let mut job = match self.tx.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(job)) => job,
            Err(TrySendError::Disconnected(_)) => {
                stats.queued.fetch_sub(1, SeqCst);
                inner.assigned.fetch_sub(1, SeqCst);
                return;
            }
        };
        loop {
            match self.tx.send_timeout(job, HANDOFF_RETRY) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(j)) => {
                    // A worker retired, or could not be started: try again.
                    job = j;
                    if inner.assigned.load(SeqCst) > inner.total.load(SeqCst)
                        && inner.total.load(SeqCst) < inner.config.max
                    {
                        let _ = inner.spawn_worker();
                    }
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    stats.queued.fetch_sub(1, SeqCst);
                    inner.assigned.fetch_sub(1, SeqCst);
                    return;
                }
            }
        }
    }

    /// Closes the queue and waits for the workers to serve what is in it.
    pub(crate) fn finish(self) -> bool {
        let Pool { tx, inner } = self;
        drop(tx);
        let shared = &inner.service.shared;
        let done = shared.wait_drained(|| inner.total.load(SeqCst) == 0);
        let handles = std::mem::take(&mut *inner.handles.lock());
        for h in handles {
            if done || h.is_finished() {
                let _ = h.join();
            }
        }
        done
    }
}

impl<R: Request> Inner<R> {
    /// Every worker the pool may have is taken and the queue is full.
    fn saturated(&self) -> bool {
        self.assigned.load(SeqCst) >= self.config.max + self.config.queue
    }

    fn spawn_worker(self: &Arc<Self>) -> io::Result<()> {
        let shared = &self.service.shared;
        self.total.fetch_add(1, SeqCst);
        shared.stats.workers_total.fetch_add(1, SeqCst);
        let id = self.next_id.fetch_add(1, SeqCst);
        let me = Arc::clone(self);
        let name = format!("socketserver-worker-{id}");
        match super::spawn(shared, &name, self.config.stack_size, move || me.work()) {
            Ok(handle) => {
                let mut handles = self.handles.lock();
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
                Ok(())
            }
            Err(e) => {
                self.total.fetch_sub(1, SeqCst);
                shared.stats.workers_total.fetch_sub(1, SeqCst);
                Err(e)
            }
        }
    }

    fn work(&self) {
        let stats = &self.service.shared.stats;
        loop {
            let received = if self.total.load(SeqCst) > self.config.min {
                self.rx.recv_timeout(self.config.keep_alive)
            } else {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            match received {
                Ok(job) => {
                    stats.queued.fetch_sub(1, SeqCst);
                    stats.workers_busy.fetch_add(1, SeqCst);
                    self.service.run(job);
                    stats.workers_busy.fetch_sub(1, SeqCst);
                    self.assigned.fetch_sub(1, SeqCst);
                    self.service.shared.capacity_freed();
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.retire() {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.total.fetch_sub(1, SeqCst);
                    stats.workers_total.fetch_sub(1, SeqCst);
                    return;
                }
            }
        }
    }

    /// Leaves the pool if it has more than its minimum and nothing is queued.
    fn retire(&self) -> bool {
        let min = self.config.min;
        if self.total.fetch_update(SeqCst, SeqCst, |t| (t > min).then(|| t - 1)).is_err() {
            return false;
        }
        // A job arrived while we were leaving, or one was counted that no
        // worker is left to take (the dispatcher raises `assigned` before it
        // reads `total`, we lower `total` before we read `assigned`: one of
        // us sees the other): stay.
        if !self.rx.is_empty() || self.assigned.load(SeqCst) > self.total.load(SeqCst) {
            self.total.fetch_add(1, SeqCst);
            return false;
        }
        self.service.shared.stats.workers_total.fetch_sub(1, SeqCst);
        true
    }
}
