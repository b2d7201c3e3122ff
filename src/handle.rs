//! [`ServerHandle`]: stop a server, read its counters, from any thread.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shared;
use crate::stats::Stats;

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
    /// The accept loop wakes at once and accepts nothing more. A connection
    /// waiting between requests is still waited on for the [drain
    /// window](crate::Builder::drain_window): a request that raced the
    /// shutdown is served, a quiet connection closes when the window ends.
    /// Requests already accepted (queued ones included) run to completion;
    /// when the grace period ends, every connection still open is shut down
    /// so that blocked handlers return, and forked children are killed.
    /// `serve_forever` returns when all of it is done. Calling it before
    /// `serve_forever` makes the next `serve_forever` return at once.
    pub fn shutdown(&self) {
        self.shared.request_stop(self.shared.grace);
    }

    /// Like [`shutdown`](Self::shutdown) with a grace period of `grace`
    /// (`Duration::ZERO`: close every connection now; `Duration::MAX`: wait
    /// for every request however long it takes). A second call can
    /// shorten the deadline of a shutdown under way, not lengthen it.
    pub fn shutdown_with_grace(&self, grace: Duration) {
        self.shared.request_stop(grace);
    }

    /// Stops serving because another process serves this socket now — the
    /// successor a restart handed it to
    /// ([`activation::Successor`](crate::activation::Successor)), once it
    /// said it serves. Like [`shutdown`](Self::shutdown) (requests in
    /// flight finish, connections between requests get the drain window),
    /// except that the socket is left as it is: a TCP listener is not shut
    /// down (connections waiting in its backlog are the successor's to
    /// accept) and a Unix socket file is not removed.
    pub fn hand_over(&self) {
        self.shared.hand_over();
        self.shared.request_stop(self.shared.grace);
    }

    /// Waits until a shutdown is asked for (by a signal, a handle, a hand-
    /// over), for at most `timeout` (`None` or `Some(Duration::MAX)`: no
    /// limit); returns whether one was. For what a process does as it
    /// begins to drain, such as telling its service manager (`STOPPING=1`).
    pub fn wait_shutdown_requested(&self, timeout: Option<Duration>) -> bool {
        self.shared.wait_stop_requested(timeout)
    }

    /// Whether [`hand_over`](Self::hand_over) was called.
    pub fn is_handed_over(&self) -> bool {
        self.shared.handed_over()
    }

    /// Whether a shutdown has been asked for and the server has not finished it.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.stopping()
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Has SIGINT (Ctrl-C), SIGTERM and SIGHUP shut this server down.
    ///
    /// The crate keeps one process-wide hub (the `ctrlc` crate allows one
    /// handler per process) that every server subscribed here shares: a
    /// signal shuts all of them down with their grace periods; a second
    /// signal closes everything at once. A server subscribed after the
    /// process was signalled is shut down at once. A signal that was
    /// ignored when this is first called — SIGHUP under `nohup`, SIGINT for
    /// a shell's background job — stays ignored. Nothing is installed
    /// unless this is called.
    ///
    /// # Errors
    /// Fails if another signal handler was installed through `ctrlc` or the
    /// OS refuses the handler.
    pub fn shutdown_on_signal(&self) -> io::Result<()> {
        crate::signals::subscribe(&self.shared)
    }
}
