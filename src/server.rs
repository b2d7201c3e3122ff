//! [`Server`]: one socket of a transport, served with a strategy —
//! `serve_forever`, `handle_request`, and Python's `server_*` methods.
//! Built by the [`Builder`](crate::Builder).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use parking_lot::Mutex;

use crate::handle::ServerHandle;
use crate::handler::RequestHandler;
use crate::loops::{self, Core, Endpoint, Handled, Kind};
use crate::net::Address;
use crate::net::bind::SocketFile;
use crate::options::Options;
use crate::service::{Hooks, Service};
use crate::shutdown::Shared;
use crate::stats::Stats;
use crate::strategy::{self, Executor, Strategy};
use crate::transport::Transport;

type EndpointOf<T> = <<T as Transport>::Request as Kind>::Endpoint;

/// A server: one socket of kind `T` ([`Tcp`](crate::transport::Tcp),
/// [`Udp`](crate::transport::Udp), [`UnixStream`](crate::transport::UnixStream),
/// [`UnixDatagram`](crate::transport::UnixDatagram)) served with strategy `S`.
///
/// Usually named through an alias: [`TcpServer`](crate::TcpServer),
/// [`ThreadingTcpServer`](crate::ThreadingTcpServer), ... Create one with
/// `bind` (defaults) or [`builder`](Self::builder) (options), run it with
/// [`serve_forever`](Self::serve_forever), stop it through a
/// [`ServerHandle`]. Dropping the server closes its socket and removes its
/// Unix socket file.
pub struct Server<T: Transport, S = strategy::Synchronous> {
    endpoint: EndpointOf<T>,
    core: Arc<Core>,
    address: Address,
    service: Arc<Service<T::Request>>,
    strategy: S,
    /// The strategy started by `handle_request`, kept between calls.
    kept: Mutex<Option<Executor<T::Request>>>,
    serving: AtomicBool,
    socket_file: Option<SocketFile>,
}

impl<T: Transport, S: fmt::Debug> fmt::Debug for Server<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// What the builder hands over to make a server.
pub(crate) struct Parts<T: Transport, S> {
    pub(crate) endpoint: EndpointOf<T>,
    pub(crate) socket_file: Option<SocketFile>,
    pub(crate) handler: Arc<dyn RequestHandler<T::Request>>,
    pub(crate) hooks: Hooks<T::Request>,
    pub(crate) strategy: S,
    pub(crate) opts: Options,
}

impl<T: Transport, S: Strategy> Server<T, S> {
    pub(crate) fn assemble(parts: Parts<T, S>) -> io::Result<Self> {
        let address = parts.endpoint.local_addr()?;
        let shared = Shared::new(parts.opts.grace, format!("{} {}", T::NAME, address))?;
        let service = Arc::new(Service {
            handler: parts.handler,
            hooks: parts.hooks,
            shared: Arc::clone(&shared),
            throttle: crate::service::Throttle::new(),
        });
        Ok(Server {
            endpoint: parts.endpoint,
            core: Arc::new(Core { opts: parts.opts, shared }),
            address,
            service,
            strategy: parts.strategy,
            kept: Mutex::new(None),
            serving: AtomicBool::new(false),
            socket_file: parts.socket_file,
        })
    }

    /// The address the server is bound to, with port 0 resolved to the real port.
    pub fn server_address(&self) -> &Address {
        &self.address
    }

    /// A handle to stop the server or read its counters from anywhere.
    pub fn handle(&self) -> ServerHandle {
        self.core.handle()
    }

    /// Same as `self.handle().shutdown()`.
    pub fn shutdown(&self) {
        self.handle().shutdown();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.core.shared.stats.snapshot()
    }

    /// The strategy this server runs.
    pub fn strategy(&self) -> &S {
        &self.strategy
    }

    /// Starts listening, for a server built with `activate(false)` (Python's
    /// `server_activate`). Does nothing if it already listens, or for a
    /// datagram server.
    ///
    /// # Errors
    /// As `listen(2)`.
    pub fn server_activate(&self) -> io::Result<()> {
        self.endpoint.activate(&self.core)
    }

    /// Serves until a [`ServerHandle::shutdown`], then drains: requests in
    /// flight finish within the grace period, then their connections are
    /// shut down; it returns when every worker, thread and child is done.
    ///
    /// The loop blocks until the socket is readable or the handle wakes it;
    /// it never polls on a timer.
    ///
    /// # Errors
    /// When `serve_forever` is already running on another thread; when an
    /// accept error is neither transient nor a resource shortage (those are
    /// skipped or backed off); when the strategy cannot start its threads.
    pub fn serve_forever(&self) -> io::Result<()> {
        let _serving = self.begin_serving()?;
        self.server_activate()?;
        let result = self.endpoint.serve(&self.core, &self.service, &self.strategy, &self.kept);
        self.core.shared.reset();
        result
    }

    /// Waits for and handles one request (Python's `handle_request`),
    /// through the strategy: under `Threading` it may still be running when
    /// this returns. Waits at most [`timeout`](crate::Builder::timeout), then
    /// calls `handle_timeout`. A [`shutdown`](Self::shutdown) ends the wait
    /// at once, and one requested while nothing was serving makes this
    /// return at once; either way this call consumes it, and the next one
    /// serves.
    ///
    /// Returns what happened: [`Handled::Served`], `Refused` (by
    /// `verify_request`), `Dropped` (an oversized datagram, a connection that
    /// could not be set up), `TimedOut` (after `handle_timeout`, which runs
    /// only then), `ShutDown`.
    ///
    /// # Errors
    /// While `serve_forever` runs; on a fatal accept or receive error.
    pub fn handle_request(&self) -> io::Result<Handled> {
        let _serving = self.begin_serving()?;
        let result = self.handle_one_request();
        if self.core.shared.stopping() {
            // Requested before or during this call (from a handler, say):
            // it ended this call, and must not end every later one.
            self.core.shared.reset();
        }
        result
    }

    fn handle_one_request(&self) -> io::Result<Handled> {
        self.server_activate()?;
        let mut kept = self.kept.lock();
        let executor = match kept.take() {
            Some(e) => e,
            None => self.strategy.start(&self.service)?,
        };
        let executor = kept.insert(executor);
        loops::handle_request(&self.endpoint, &self.core, &self.service, executor)
    }

    /// Closes the server (Python's `server_close`): finishes requests that
    /// `handle_request` started, closes the socket, removes the Unix socket
    /// file. Dropping the server does the same.
    pub fn server_close(self) {}

    fn begin_serving(&self) -> io::Result<ServingGuard<'_>> {
        if self.serving.swap(true, SeqCst) {
            return Err(io::Error::new(io::ErrorKind::ResourceBusy, format!("{}: already serving", self.core.name())));
        }
        Ok(ServingGuard(&self.serving))
    }
}

impl<T: Transport, S: Strategy> Server<T, S> {
    /// Runs [`serve_forever`](Self::serve_forever) on a thread of its own
    /// and gives back what a caller needs of it: where it listens, its
    /// handle, and a way to stop it and wait — what a test or a program
    /// embedding a server would otherwise write by hand.
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// use std::io::{Read, Write};
    /// use std::net::TcpStream;
    ///
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
    ///     while let Some(line) = req.next_line()? {
    ///         writeln!(req, "{}", line.to_uppercase())?;
    ///     }
    ///     Ok(())
    /// })?
    /// .spawn()?;
    /// let mut client = TcpStream::connect(server.server_address())?;
    /// client.write_all(b"hello\n")?;
    /// client.shutdown(std::net::Shutdown::Write)?;
    /// let mut answer = String::new();
    /// client.read_to_string(&mut answer)?;
    /// assert_eq!(answer, "HELLO\n");
    /// server.stop()?; // shut down, wait for serve_forever, and give its result
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self) -> io::Result<ServerThread>
    where
        T: Send,
    {
        let handle = self.handle();
        let address = self.address.clone();
        let name = format!("serve {}", self.core.name());
        let thread = std::thread::Builder::new().name(name).spawn(move || self.serve_forever())?;
        Ok(ServerThread { handle, address, thread: Some(thread) })
    }
}

/// A server running on a thread of its own: from [`Server::spawn`].
/// Dropping it shuts the server down and waits for it.
#[derive(Debug)]
pub struct ServerThread {
    handle: ServerHandle,
    address: Address,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl ServerThread {
    /// Where the server listens.
    pub fn server_address(&self) -> &Address {
        &self.address
    }

    /// Its handle: shut it down, read its counters.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Shuts the server down (its grace period applies), waits for
    /// `serve_forever` to return, and gives its final counters: every
    /// request has been concluded and counted, every connection closed,
    /// every child reaped. (Only a handler still running when the grace
    /// period ended under `Threading`, which cannot be stopped, may count
    /// later.)
    ///
    /// ```
    /// # use socketserver::{servers::Echo, TcpServer};
    /// let server = TcpServer::bind("127.0.0.1:0", Echo)?.spawn()?;
    /// let stats = server.stop()?;
    /// assert_eq!(stats.active, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// `serve_forever`'s error; an error if it panicked.
    pub fn stop(mut self) -> io::Result<Stats> {
        self.handle.shutdown();
        self.wait()?;
        Ok(self.handle.stats())
    }

    /// Waits for `serve_forever` to return (after a shutdown asked
    /// elsewhere: a signal, a handler) and gives its result and, as
    /// [`stop`](Self::stop) does, the final counters.
    ///
    /// # Errors
    /// `serve_forever`'s error; an error if it panicked.
    pub fn join(mut self) -> io::Result<Stats> {
        self.wait()?;
        Ok(self.handle.stats())
    }

    fn wait(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("serve_forever panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.shutdown();
            let _ = self.wait();
        }
    }
}

impl<T: Transport, S> AsRawFd for Server<T, S> {
    /// The listening (or datagram) socket: Python's `fileno()`.
    fn as_raw_fd(&self) -> RawFd {
        self.endpoint.as_raw_fd()
    }
}

impl<T: Transport, S> AsFd for Server<T, S> {
    /// The listening (or datagram) socket, e.g. to hand it to a successor.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.endpoint.as_fd()
    }
}

impl<T: Transport, S> Drop for Server<T, S> {
    fn drop(&mut self) {
        if self.core.shared.handed_over()
            && let Some(file) = self.socket_file.take()
        {
            file.keep(); // the successor serves it now
        }
        if let Some(executor) = self.kept.get_mut().take() {
            let shared = &self.core.shared;
            shared.request_stop(self.core.opts.grace);
            executor.finish(shared);
            shared.reset();
        }
    }
}

struct ServingGuard<'a>(&'a AtomicBool);

impl Drop for ServingGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::request::StreamRequest;
    use crate::strategy::Threading;
    use crate::transport::Tcp;

    /// Port of CPython's test_threads_reaped: finished request threads are
    /// joined as the server goes, not kept until `server_close`.
    #[test]
    fn finished_request_threads_are_joined_as_the_server_goes() {
        let server = Server::<Tcp, Threading>::bind("127.0.0.1:0", |req: &mut StreamRequest| {
            std::io::Write::write_all(req, b"x")
        })
        .unwrap();
        let addr = server.server_address().as_inet().unwrap();
        let threads_done = || {
            // Bounded wait for the request thread to report itself done:
            // EOF on the client comes a moment before that.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let guard = server.kept.lock();
                let Some(Executor::Threading(threads)) = guard.as_ref() else { panic!("no threading executor") };
                if threads.live() == 0 || std::time::Instant::now() > deadline {
                    return threads.unjoined();
                }
                drop(guard);
                std::thread::yield_now();
            }
        };
        for i in 0..50 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            server.handle_request().unwrap();
            // The thread has answered and closed before the next request.
            c.read_to_end(&mut Vec::new()).unwrap();
            // Finished threads from earlier requests were joined by this
            // handle_request; only this request's own thread may remain.
            let kept = threads_done();
            assert!(kept <= 1, "request {i}: {kept} threads kept");
        }
        let guard = server.kept.lock();
        let Some(Executor::Threading(threads)) = guard.as_ref() else { panic!("no threading executor") };
        assert!(threads.unjoined() <= 1, "{} threads kept", threads.unjoined());
    }
}
