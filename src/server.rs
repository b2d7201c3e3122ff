//! The generic server: its builder, `serve_forever`, `handle_request` and the
//! hooks Python lets a subclass override.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{Shutdown, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Instant;

use parking_lot::Mutex;
use socket2::SockRef;

use crate::accept::{self, Action, Backoff};
use crate::address::Address;
use crate::builder::{Builder, Options};
use crate::handler::{DatagramRequest, RequestHandler, Stream, StreamPolicy, StreamRequest};
use crate::service::{AnyHandler, Hooks, Job, Service};
use crate::shutdown::{ServerHandle, Shared};
use crate::stats::{Counters, Stats};
use crate::strategy::{self, AnyStrategy, Executor, Strategy};
use crate::sys;
use crate::transport::{Endpoint, Listener, SocketFile, Tcp, Transport, Udp, UnixDatagram, UnixStream};

/// How many connections or datagrams the loop takes per wake-up before it
/// looks at the shutdown flag and the hooks again.
pub(crate) const BATCH: usize = 64;

/// A server: one socket of kind `T` ([`Tcp`], [`Udp`], [`UnixStream`],
/// [`UnixDatagram`]) served with strategy `S`.
///
/// Usually named through an alias: [`TcpServer`](crate::TcpServer),
/// [`ThreadingTcpServer`](crate::ThreadingTcpServer), ... Create one with
/// `bind` (defaults) or [`builder`](Self::builder) (options), run it with
/// [`serve_forever`](Self::serve_forever), stop it through a
/// [`ServerHandle`]. Dropping the server closes its socket and removes its
/// Unix socket file.
pub struct Server<T, S = strategy::Sync> {
    pub(crate) endpoint: Endpoint,
    pub(crate) address: Address,
    pub(crate) service: Arc<Service>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) strategy: AnyStrategy,
    pub(crate) opts: Options,
    /// The strategy started by `handle_request`, kept between calls.
    pub(crate) executor: Mutex<Option<Executor>>,
    pub(crate) serving: AtomicBool,
    pub(crate) listening: AtomicBool,
    /// The TCP listener was shut down and must listen again (and be bound
    /// again if the kernel released its port).
    pub(crate) rebind: AtomicBool,
    /// The socket came from `from_listener`/`from_socket`: others may share
    /// it, so it is never shut down, and datagram pools poll rather than
    /// wake themselves through it.
    pub(crate) adopted: bool,
    /// A fatal error from a datagram receiver thread.
    pub(crate) fatal: Arc<Mutex<Option<io::Error>>>,
    /// Wakes datagram pool workers blocked in `recvfrom`; made on first use
    /// and kept, so that its leftovers are known on a later run.
    pub(crate) wake: std::sync::OnceLock<Option<crate::datagram::WakeSender>>,
    pub(crate) _socket_file: Option<SocketFile>,
    pub(crate) _marker: PhantomData<fn() -> (T, S)>,
}

impl<T, S> fmt::Debug for Server<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl<S: Strategy> Server<Tcp, S> {
    /// Binds a TCP server with default options; see [`Builder::bind`](Builder#method.bind).
    ///
    /// # Errors
    /// An error naming the address and the cause.
    pub fn bind<A, H>(addr: A, handler: H) -> io::Result<Self>
    where
        A: ToSocketAddrs + fmt::Debug,
        H: RequestHandler<StreamRequest>,
    {
        Self::builder().bind(addr, handler)
    }
}

impl<S: Strategy> Server<Udp, S> {
    /// Binds a UDP server with default options.
    ///
    /// # Errors
    /// An error naming the address and the cause.
    pub fn bind<A, H>(addr: A, handler: H) -> io::Result<Self>
    where
        A: ToSocketAddrs + fmt::Debug,
        H: RequestHandler<DatagramRequest>,
    {
        Self::builder().bind(addr, handler)
    }
}

impl<S: Strategy> Server<UnixStream, S> {
    /// Binds a Unix-stream server with default options.
    ///
    /// # Errors
    /// An error naming the path and the cause.
    pub fn bind<P: AsRef<Path>, H: RequestHandler<StreamRequest>>(path: P, handler: H) -> io::Result<Self> {
        Self::builder().bind(path, handler)
    }
}

impl<S: Strategy> Server<UnixDatagram, S> {
    /// Binds a Unix-datagram server with default options.
    ///
    /// # Errors
    /// An error naming the path and the cause.
    pub fn bind<P: AsRef<Path>, H: RequestHandler<DatagramRequest>>(path: P, handler: H) -> io::Result<Self> {
        Self::builder().bind(path, handler)
    }
}

impl<T: Transport, S: Strategy> Server<T, S> {
    pub(crate) fn new(
        endpoint: Endpoint,
        handler: AnyHandler,
        hooks: Hooks,
        strategy: AnyStrategy,
        opts: Options,
        socket_file: Option<SocketFile>,
        listening: bool,
    ) -> io::Result<Self> {
        let address = endpoint.local_addr()?;
        let shared = Shared::new(opts.grace, format!("{} {}", T::NAME, address))?;
        let service = Arc::new(Service { handler, hooks, shared: Arc::clone(&shared) });
        Ok(Server {
            endpoint,
            address,
            service,
            shared,
            strategy,
            opts,
            executor: Mutex::new(None),
            serving: AtomicBool::new(false),
            listening: AtomicBool::new(listening),
            rebind: AtomicBool::new(false),
            adopted: false,
            fatal: Arc::new(Mutex::new(None)),
            wake: std::sync::OnceLock::new(),
            _socket_file: socket_file,
            _marker: PhantomData,
        })
    }

    /// A builder with default options and `S::default()` as the strategy.
    pub fn builder() -> Builder<T, S> {
        Builder::new(S::default())
    }

    /// The address the server is bound to, with port 0 resolved to the real port.
    pub fn server_address(&self) -> &Address {
        &self.address
    }

    /// A handle to stop the server or read its counters from anywhere.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: Arc::clone(&self.shared) }
    }

    /// Same as `self.handle().shutdown()`.
    pub fn shutdown(&self) {
        self.handle().shutdown();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// The strategy this server runs.
    pub fn strategy(&self) -> &AnyStrategy {
        &self.strategy
    }

    /// Starts listening, for a server built with `activate(false)` (Python's
    /// `server_activate`). Does nothing if it already listens.
    ///
    /// # Errors
    /// As `listen(2)`.
    pub fn server_activate(&self) -> io::Result<()> {
        if let Endpoint::Stream(l) = &self.endpoint
            && !self.listening.load(SeqCst)
        {
            let listen = || {
                if let (true, Some(addr)) = (self.rebind.load(SeqCst), self.address.as_inet()) {
                    // Shutting the listener down released its port if the
                    // kernel chose it (port 0); a port asked for by number
                    // stays bound and must not be bound twice.
                    // (EINVAL: it is still bound.)
                    match SockRef::from(l).bind(&addr.into()) {
                        Err(e) if !sys::is_already_bound(&e) => return Err(e),
                        _ => {}
                    }
                }
                l.listen(self.opts.backlog)
            };
            listen().map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", self.address)))?;
            self.rebind.store(false, SeqCst);
            self.listening.store(true, SeqCst);
        }
        Ok(())
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
        let result = match (&self.endpoint, &self.strategy) {
            (Endpoint::Datagram(socket), AnyStrategy::ThreadPool(pool)) if !self.opts.datagram_handoff => {
                self.serve_datagram_workers(socket, pool)
            }
            (endpoint, _) => {
                let executor = match self.executor.lock().take() {
                    Some(e) => e,
                    None => Executor::start(&self.strategy, &self.service)?,
                };
                let result = match endpoint {
                    Endpoint::Stream(listener) => {
                        self.serve_loop(listener.as_raw_fd(), &executor, || self.accept_one(listener, &executor))
                    }
                    Endpoint::Datagram(socket) => {
                        let mut scratch = None;
                        self.serve_loop(socket.as_raw_fd(), &executor, || {
                            self.receive_one(socket, &executor, &mut scratch)
                        })
                    }
                };
                if !self.shared.stopping() {
                    self.shared.request_stop(self.opts.grace);
                }
                self.stop_listening();
                executor.finish(&self.service);
                result
            }
        };
        self.shared.reset();
        result
    }

    /// Waits for and handles one request (Python's `handle_request`),
    /// through the strategy: under `Threading` it may still be running when
    /// this returns. Waits at most [`timeout`](Builder::timeout), then calls
    /// `handle_timeout`. A [`shutdown`](Self::shutdown) ends the wait at
    /// once, and one requested while nothing was serving makes this return
    /// at once; either way this call consumes it, and the next one serves.
    ///
    /// # Errors
    /// While `serve_forever` runs; on a fatal accept or receive error.
    pub fn handle_request(&self) -> io::Result<()> {
        let _serving = self.begin_serving()?;
        let result = self.handle_one_request();
        if self.shared.stopping() {
            // Requested before or during this call (from a handler, say):
            // it ended this call, and must not end every later one.
            self.shared.reset();
        }
        result
    }

    fn handle_one_request(&self) -> io::Result<()> {
        self.server_activate()?;
        let mut slot = self.executor.lock();
        if slot.is_none() {
            *slot = Some(Executor::start(&self.strategy, &self.service)?);
        }
        let Some(executor) = slot.as_ref() else { unreachable!("started above") };
        executor.reap();
        let deadline = self.opts.timeout.map(|t| Instant::now() + t);
        let fds = [self.endpoint.fd(), self.shared.waker.stop_fd()];
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let mut ready = [false; 2];
            if sys::poll(&fds, &mut ready, left)? == 0 {
                self.service.call_hook(&self.service.hooks.handle_timeout, "handle_timeout");
                return Ok(());
            }
            if !ready[0] {
                continue;
            }
            let taken = match &self.endpoint {
                Endpoint::Stream(listener) => self.accept_one(listener, executor),
                Endpoint::Datagram(socket) => self.receive_one(socket, executor, &mut None),
            };
            match taken {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => match accept::classify(&e) {
                    Action::Fatal => return Err(self.fatal_error(e)),
                    _ => log::warn!("{}: {e}", self.shared.name),
                },
            }
        }
    }

    /// Closes the server (Python's `server_close`): finishes requests that
    /// `handle_request` started, closes the socket, removes the Unix socket
    /// file. Dropping the server does the same.
    pub fn server_close(self) {}

    fn begin_serving(&self) -> io::Result<ServingGuard<'_>> {
        if self.serving.swap(true, SeqCst) {
            return Err(io::Error::new(io::ErrorKind::ResourceBusy, format!("{}: already serving", self.shared.name)));
        }
        Ok(ServingGuard(&self.serving))
    }

    pub(crate) fn can_accept(&self, executor: &Executor) -> bool {
        let active = self.shared.stats.active.load(SeqCst);
        self.opts.max_connections.is_none_or(|max| active < max) && executor.has_capacity()
    }

    /// The loop of `serve_forever`: wait until the socket is readable or
    /// the waker fires (never on a timer, unless `service_interval` asks),
    /// then `take` connections or datagrams while capacity allows.
    pub(crate) fn serve_loop(
        &self,
        fd: RawFd,
        executor: &Executor,
        mut take: impl FnMut() -> io::Result<bool>,
    ) -> io::Result<()> {
        let shared = &self.shared;
        let fds = [fd, shared.waker.stop_fd(), shared.waker.notify_fd()];
        let mut backoff = Backoff::default();
        loop {
            if shared.stopping() {
                return Ok(());
            }
            executor.reap();
            if !self.can_accept(executor) {
                shared.wait_for_capacity(|| self.can_accept(executor))?;
                continue;
            }
            let mut ready = [false; 3];
            sys::poll(&fds, &mut ready, self.opts.service_interval)?;
            if ready[2] {
                shared.waker.drain_notify();
            }
            if ready[0] {
                self.take_batch(executor, &mut backoff, &mut take)?;
            }
            self.service.call_hook(&self.service.hooks.service_actions, "service_actions");
        }
    }

    fn take_batch(
        &self,
        executor: &Executor,
        backoff: &mut Backoff,
        take: &mut impl FnMut() -> io::Result<bool>,
    ) -> io::Result<()> {
        for _ in 0..BATCH {
            if self.shared.stopping() || !self.can_accept(executor) {
                return Ok(());
            }
            match take() {
                Ok(_) => {
                    if backoff.in_episode() {
                        let errors = backoff.reset();
                        log::warn!("{}: accepting again after {errors} error(s)", self.shared.name);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    if !self.on_accept_error(e, backoff)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts and sorts an accept/receive error; returns whether to go on at
    /// once (`false` after a back-off pause), or the error if it is fatal.
    pub(crate) fn on_accept_error(&self, e: io::Error, backoff: &mut Backoff) -> io::Result<bool> {
        Counters::bump(&self.shared.stats.accept_errors);
        match accept::classify(&e) {
            Action::Skip => {
                log::debug!("{}: skipping a failed accept: {e}", self.shared.name);
                Ok(true)
            }
            Action::BackOff => {
                let (wait, first) = backoff.step();
                if first {
                    log::warn!(
                        "{}: accept failed: {e}; backing off (5 ms doubling to 1 s) until it succeeds",
                        self.shared.name
                    );
                }
                let mut ready = [false];
                sys::poll(&[self.shared.waker.stop_fd()], &mut ready, Some(wait))?;
                Ok(false)
            }
            Action::Fatal => Err(self.fatal_error(e)),
        }
    }

    fn fatal_error(&self, e: io::Error) -> io::Error {
        log::error!("{}: giving up: {e}", self.shared.name);
        io::Error::new(e.kind(), format!("{}: {e}", self.shared.name))
    }

    /// Accepts one connection and hands it to the strategy. `Ok(false)`: it
    /// was refused or could not be configured.
    fn accept_one(&self, listener: &Listener, executor: &Executor) -> io::Result<bool> {
        let (stream, peer) = listener.accept()?;
        let shared = &self.shared;
        Counters::bump(&shared.stats.accepted);
        if !self.service.verify(&peer) {
            Counters::bump(&shared.stats.refused);
            log::debug!("{}: refused {peer}", shared.name);
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(false);
        }
        let policy = match self.configure(&stream) {
            Ok(p) => p,
            Err(e) => {
                self.service
                    .handle_error(&peer, &io::Error::new(e.kind(), format!("cannot configure the connection: {e}")));
                return Ok(false);
            }
        };
        shared.track(stream.as_raw_fd());
        let request = StreamRequest::new(stream, peer, self.handle(), policy, shared.acquire());
        if shared.stopping() {
            // Taken from the backlog during a drain: the deadline applies.
            shared.ensure_watchdog();
        }
        executor.dispatch(Job::Stream(request));
        Ok(true)
    }

    fn configure(&self, stream: &Stream) -> io::Result<StreamPolicy> {
        let o = &self.opts;
        if let (true, Stream::Tcp(s)) = (o.nodelay, stream) {
            s.set_nodelay(true)?;
        }
        let receive = match (o.read_timeout, o.idle_timeout) {
            (Some(r), Some(i)) => Some(r.min(i)),
            (r, i) => r.or(i),
        };
        if receive.is_some() {
            stream.set_read_timeout(receive)?;
        }
        if o.write_timeout.is_some() {
            stream.set_write_timeout(o.write_timeout)?;
        }
        Ok(StreamPolicy {
            idle: o.idle_timeout,
            read_timeout: o.read_timeout,
            receive_timeout: receive,
            read_buffer: o.read_buffer,
            write_buffer: o.write_buffer,
        })
    }

    /// After the loop: refuse new TCP connections at once (those still in
    /// the kernel's backlog are reset) rather than leave clients hanging
    /// until the socket closes.
    fn stop_listening(&self) {
        let Endpoint::Stream(listener) = &self.endpoint else { return };
        if self.adopted {
            // Shutting it down would end it for every process holding it
            // (systemd, the server being handed over to): newcomers wait in
            // its backlog instead.
            return;
        }
        if let Listener::Tcp(l) = listener {
            // Linux answers SYNs to a shut-down listener with a reset, and
            // frees its port: `server_activate` binds it again.
            if SockRef::from(l).shutdown(Shutdown::Read).is_ok() {
                self.listening.store(false, SeqCst);
                self.rebind.store(true, SeqCst);
            }
        }
    }
}

impl<T, S> AsRawFd for Server<T, S> {
    /// The listening (or datagram) socket: Python's `fileno()`.
    fn as_raw_fd(&self) -> RawFd {
        self.endpoint.fd()
    }
}

impl<T, S> Drop for Server<T, S> {
    fn drop(&mut self) {
        if let Some(executor) = self.executor.get_mut().take() {
            self.shared.request_stop(self.opts.grace);
            executor.finish(&self.service);
            self.shared.reset();
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
    use crate::strategy::Threading;

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
                let guard = server.executor.lock();
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
        let guard = server.executor.lock();
        let Some(Executor::Threading(threads)) = guard.as_ref() else { panic!("no threading executor") };
        assert!(threads.unjoined() <= 1, "{} threads kept", threads.unjoined());
    }
}
