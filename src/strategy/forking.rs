//! A process per request. Each child is waited for by a small reaper thread
//! that calls `waitpid` on that child's pid only, so the server never reaps
//! children the program started elsewhere, and never leaves zombies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use super::Forking;
use crate::service::{Job, Outcome, Service};
use crate::stats::Counters;
use crate::sys;

const REAPER_STACK: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Children {
    config: Forking,
    service: Arc<Service>,
    live: Arc<AtomicUsize>,
}

impl Children {
    pub(crate) fn new(config: &Forking, service: &Arc<Service>) -> Children {
        Children { config: config.clone(), service: Arc::clone(service), live: Arc::new(AtomicUsize::new(0)) }
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.live.load(SeqCst) < self.config.max_children
    }

    pub(crate) fn dispatch(&self, job: Job) {
        let shared = &self.service.shared;
        // The child runs the request without touching the parent's locks or
        // counters (`detach_for_child`) and exits.
        let mut job = Some(job);
        let forked = sys::fork_child(|| {
            let Some(mut job) = job.take() else { return Outcome::Failed as i32 };
            job.detach_for_child();
            self.service.run(job) as i32
        });
        let Some(job) = job else { return };
        match forked {
            Err(e) => {
                Counters::bump(&shared.stats.rejected);
                log::error!("{}: fork failed, closing the request from {}: {e}", shared.name, job.peer());
            }
            Ok(pid) => {
                self.live.fetch_add(1, SeqCst);
                shared.stats.workers_total.fetch_add(1, SeqCst);
                shared.track_child(pid);
                let slot = job.release_to_child();
                let service = Arc::clone(&self.service);
                let live = Arc::clone(&self.live);
                let reap = move || {
                    // Untracked while still a zombie, then reaped: the
                    // force-closer never signals a pid already reused.
                    let exited = sys::wait_child_exited(pid);
                    service.shared.untrack_child(pid);
                    let status = exited.and_then(|()| sys::wait_child(pid));
                    let stats = &service.shared.stats;
                    Counters::bump(&stats.completed);
                    match status {
                        Ok(0) => {}
                        Ok(code) => {
                            Counters::bump(&stats.handler_errors);
                            if code == Outcome::Panicked as i32 {
                                Counters::bump(&stats.panics);
                            }
                        }
                        Err(e) => log::error!("{}: waitpid({pid}) failed: {e}", service.shared.name),
                    }
                    live.fetch_sub(1, SeqCst);
                    stats.workers_total.fetch_sub(1, SeqCst);
                    drop(slot);
                    service.shared.capacity_freed();
                };
                // Shared so that the closure can still run here if no thread starts.
                let reap = Arc::new(parking_lot::Mutex::new(Some(reap)));
                let in_thread = Arc::clone(&reap);
                let spawned = super::spawn(shared, "socketserver-reaper", REAPER_STACK, move || {
                    if let Some(f) = in_thread.lock().take() {
                        f();
                    }
                });
                if let Err(e) = spawned {
                    log::error!("{}: cannot start a reaper thread ({e}); waiting for child {pid} inline", shared.name);
                    if let Some(f) = reap.lock().take() {
                        f();
                    }
                }
            }
        }
    }

    pub(crate) fn finish(self) -> bool {
        let shared = &self.service.shared;
        shared.wait_drained(|| self.live.load(SeqCst) == 0 && shared.threads.load(SeqCst) == 0)
    }
}
