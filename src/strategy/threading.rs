//! A thread per request; finished threads are joined as the server goes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::Threading;
use crate::request::Request;
use crate::service::Service;
use crate::stats::Counters;

pub(crate) struct Threads<R> {
    config: Threading,
    service: Arc<Service<R>>,
    live: Arc<AtomicUsize>,
    next_id: AtomicU64,
    running: Mutex<HashMap<u64, JoinHandle<()>>>,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
}

impl<R> std::fmt::Debug for Threads<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<R: Request> Threads<R> {
    pub(crate) fn new(config: &Threading, service: &Arc<Service<R>>) -> Threads<R> {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Threads {
            config: config.clone(),
            service: Arc::clone(service),
            live: Arc::new(AtomicUsize::new(0)),
            next_id: AtomicU64::new(0),
            running: Mutex::new(HashMap::new()),
            done_tx,
            done_rx,
        }
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.config.max_threads.is_none_or(|max| self.live.load(SeqCst) < max)
    }

    pub(crate) fn dispatch(&self, req: R) {
        let shared = &self.service.shared;
        let peer = req.peer().clone();
        let id = self.next_id.fetch_add(1, SeqCst);
        let service = Arc::clone(&self.service);
        let live = Arc::clone(&self.live);
        let done = self.done_tx.clone();
        live.fetch_add(1, SeqCst);
        shared.stats.workers_total.fetch_add(1, SeqCst);
        // Held across the spawn so the thread cannot report itself done
        // before its handle is in the map.
        let mut running = self.running.lock();
        let spawned = super::spawn(shared, "socketserver-request", self.config.stack_size, move || {
            service.run(req);
            let _ = done.send(id);
            live.fetch_sub(1, SeqCst);
            service.shared.stats.workers_total.fetch_sub(1, SeqCst);
            service.shared.capacity_freed();
        });
        match spawned {
            Ok(handle) => {
                running.insert(id, handle);
            }
            Err(e) => {
                drop(running);
                self.live.fetch_sub(1, SeqCst);
                shared.stats.workers_total.fetch_sub(1, SeqCst);
                Counters::bump(&shared.stats.rejected);
                // As Python's ThreadingMixIn: the failure reaches handle_error.
                let err = crate::error::context(e, "cannot start a request thread; the request was closed");
                self.service.handle_error(None, &peer, &err);
            }
        }
    }

    /// Joins every thread that has reported itself done.
    pub(crate) fn reap(&self) {
        let mut running = None;
        for id in self.done_rx.try_iter() {
            let map = running.get_or_insert_with(|| self.running.lock());
            if let Some(h) = map.remove(&id) {
                let _ = h.join();
            }
        }
    }

    /// The number of request threads still running.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.live.load(SeqCst)
    }

    /// The number of request threads not yet joined.
    #[cfg(test)]
    pub(crate) fn unjoined(&self) -> usize {
        self.running.lock().len()
    }

    pub(crate) fn finish(self) -> bool {
        let shared = &self.service.shared;
        let done = shared.wait_drained(|| self.live.load(SeqCst) == 0);
        self.reap();
        if !done {
            // The stragglers are left running; their handles are dropped.
            self.running.lock().clear();
        }
        done
    }
}
