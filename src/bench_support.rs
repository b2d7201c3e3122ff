//! The server's thread pool driven with closures instead of requests, so
//! that `benches/` can measure dispatch through the real code. Not part of
//! the API: hidden, and free to change.

use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shared;
use crate::strategy::{Runner, ThreadPool};

struct FnRunner<J> {
    f: Box<dyn Fn(J) + Send + Sync>,
    shared: Arc<Shared>,
}

impl<J: Send + 'static> Runner for FnRunner<J> {
    type Job = J;
    fn run(&self, job: J) {
        (self.f)(job);
    }
    fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    fn describe(&self, _job: &J) -> String {
        "a job".to_string()
    }
}

/// A fixed-size pool of `workers` threads behind a queue of `queue` places.
pub struct Pool<J: Send + 'static> {
    pool: crate::strategy::Pool<FnRunner<J>>,
}

impl<J: Send + 'static> std::fmt::Debug for Pool<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.pool.fmt(f)
    }
}

impl<J: Send + 'static> Pool<J> {
    /// Starts the workers; each job is passed to `run` on one of them.
    ///
    /// # Errors
    /// If a thread cannot be started.
    pub fn new(workers: NonZeroUsize, queue: usize, run: impl Fn(J) + Send + Sync + 'static) -> io::Result<Self> {
        let shared = Shared::new(Duration::from_secs(5), "bench pool".to_string())?;
        let runner = Arc::new(FnRunner { f: Box::new(run), shared });
        let pool = crate::strategy::Pool::start(&ThreadPool::new(workers).queue(queue), &runner)?;
        Ok(Pool { pool })
    }

    /// Hands `job` to a worker, waiting while the queue is full.
    pub fn submit(&self, job: J) {
        self.pool.dispatch(job);
    }

    /// Lets the workers finish what is queued, then joins them.
    pub fn finish(self) {
        self.pool.finish();
    }
}
