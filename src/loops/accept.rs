//! The stream accept loop: take connections from the listener, check them
//! (`verify_request`), configure them, and hand each to the strategy as a
//! [`StreamRequest`]. After serving, the listener refuses newcomers at once.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use parking_lot::Mutex;
use socket2::SockRef;

use super::admit::{Accepted, accept_request};
use super::{Core, Endpoint, Kind, Serving, Taken};
use crate::error::context;
use crate::net::{Address, Listener};
use crate::request::StreamRequest;
use crate::service::Service;
use crate::strategy::{Event, Executor, Run, Serve, Strategy, ThreadPool};
use crate::sys;

/// A stream server's listener and its state across runs.
#[derive(Debug)]
pub struct StreamEndpoint {
    listener: Listener,
    /// Where it is bound, to bind again after a shutdown released the port.
    address: Address,
    listening: AtomicBool,
    /// The TCP listener was shut down and must listen again (and be bound
    /// again if the kernel released its port).
    rebind: AtomicBool,
    /// Made elsewhere (systemd, a hand-off, a `SO_REUSEPORT` sibling):
    /// others may hold it too, so it is never shut down.
    adopted: bool,
}

impl StreamEndpoint {
    /// A listener this server bound (listening already, or after `activate`).
    pub(crate) fn bound(listener: Listener, listening: bool) -> io::Result<StreamEndpoint> {
        let address = listener.local_addr()?;
        Ok(StreamEndpoint {
            listener,
            address,
            listening: AtomicBool::new(listening),
            rebind: AtomicBool::new(false),
            adopted: false,
        })
    }

    /// A listener made elsewhere; it should be listening already.
    pub(crate) fn adopted(listener: Listener) -> io::Result<StreamEndpoint> {
        listener.set_nonblocking(true)?;
        Ok(StreamEndpoint { adopted: true, ..StreamEndpoint::bound(listener, true)? })
    }

    /// Accepts one connection and hands it to the strategy.
    fn accept_one(
        &self,
        core: &Core,
        service: &Service<StreamRequest>,
        executor: &Executor<StreamRequest>,
    ) -> io::Result<Taken> {
        Ok(match accept_request(&self.listener, core, service)? {
            Accepted::Request(request) => {
                executor.dispatch(request);
                Taken::Request
            }
            Accepted::Refused => Taken::Refused,
            Accepted::Dropped => Taken::Dropped,
        })
    }

    /// After the loop: refuse new TCP connections at once (those still in
    /// the kernel's backlog are reset) rather than leave clients hanging
    /// until the socket closes.
    fn stop_listening(&self, core: &Core) {
        if self.adopted || core.shared.handed_over() {
            // Shutting it down would end it for every process holding it
            // (systemd, the successor it was handed over to): newcomers wait
            // in its backlog, for the successor or a sibling to accept.
            return;
        }
        if let Listener::Tcp(l) = &self.listener {
            // Linux answers SYNs to a shut-down listener with a reset, and
            // frees its port: `activate` binds it again.
            if SockRef::from(l).shutdown(Shutdown::Read).is_ok() {
                self.listening.store(false, SeqCst);
                self.rebind.store(true, SeqCst);
            }
        }
    }
}

impl std::os::fd::AsFd for StreamEndpoint {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl AsRawFd for StreamEndpoint {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Endpoint for StreamEndpoint {
    type Request = StreamRequest;

    fn local_addr(&self) -> io::Result<Address> {
        self.listener.local_addr()
    }

    fn activate(&self, core: &Core) -> io::Result<()> {
        if self.listening.load(SeqCst) {
            return Ok(());
        }
        let listen = || {
            if let (true, Listener::Tcp(l), Some(addr)) =
                (self.rebind.load(SeqCst), &self.listener, self.address.as_inet())
            {
                // Shutting the listener down released its port if the kernel
                // chose it (port 0); a port asked for by number stays bound
                // and must not be bound twice (EINVAL: it is still bound).
                match SockRef::from(l).bind(&addr.into()) {
                    Err(e) if !sys::is_already_bound(&e) => return Err(e),
                    _ => {}
                }
            }
            self.listener.listen(core.opts.backlog)
        };
        listen().map_err(|e| context(e, format_args!("cannot listen on {}", self.address)))?;
        self.rebind.store(false, SeqCst);
        self.listening.store(true, SeqCst);
        Ok(())
    }

    fn serve<S: Strategy>(
        &self,
        core: &Arc<Core>,
        service: &Arc<Service<StreamRequest>>,
        strategy: &S,
        kept: &Mutex<Option<Executor<StreamRequest>>>,
    ) -> io::Result<()> {
        strategy.serve(&Serving { endpoint: self, core, service, kept })
    }

    fn take_one(
        &self,
        core: &Core,
        service: &Arc<Service<StreamRequest>>,
        executor: &Executor<StreamRequest>,
    ) -> io::Result<Taken> {
        self.accept_one(core, service, executor)
    }
}

/// A listener: every strategy through the accept loop and its executor,
/// but `Event`, which runs its own loop.
impl Serve<StreamRequest> for Serving<'_, StreamEndpoint> {
    fn with_executor(&self, strategy: &impl Run) -> io::Result<()> {
        let Serving { endpoint, core, service, .. } = *self;
        super::serve_with(
            endpoint.as_raw_fd(),
            core,
            service,
            self.executor(strategy)?,
            |executor| endpoint.accept_one(core, service, executor),
            |_| endpoint.stop_listening(core),
        )
    }

    fn with_pool(&self, pool: &ThreadPool) -> io::Result<()> {
        self.with_executor(pool)
    }

    fn with_event(&self, event: &Event) -> io::Result<()> {
        let Serving { endpoint, core, service, .. } = *self;
        super::event::serve(&endpoint.listener, core, service, event, || endpoint.stop_listening(core))
    }
}

impl Kind for StreamRequest {
    type Endpoint = StreamEndpoint;
}
