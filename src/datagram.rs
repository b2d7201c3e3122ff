//! Datagram servers: the receive loop, and the pool workers that receive
//! for themselves.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{SockAddr, SockRef, Socket, Type};

use crate::accept::{self, Action, Backoff};
use crate::address::Address;
use crate::handler::{DatagramRequest, DatagramSocket};
use crate::server::Server;
use crate::service::{AnyHandler, Job, Service};
use crate::shutdown::{FORCE_WAIT, Shared};
use crate::stats::Counters;
use crate::strategy::{self, Executor, Strategy, ThreadPool};
use crate::sys;
use crate::transport::Transport;

impl<T: Transport, S: Strategy> Server<T, S> {
    fn datagram_buffer(&self) -> Vec<u8> {
        // One byte more than the limit, so that even without MSG_TRUNC an
        // oversized datagram shows as longer than the limit.
        vec![0; self.opts.max_datagram_size + 1]
    }

    /// Receives one datagram into `scratch` and handles it there (`Sync`)
    /// or hands a copy to the strategy. `Ok(false)`: dropped.
    pub(crate) fn receive_one(
        &self,
        socket: &Arc<DatagramSocket>,
        executor: &Executor,
        scratch: &mut Option<DatagramRequest>,
    ) -> io::Result<bool> {
        let req = scratch
            .get_or_insert_with(|| DatagramRequest::new(self.datagram_buffer(), Arc::clone(socket), self.handle()));
        if !self.receive_into(socket, req)? {
            return Ok(false);
        }
        if let Executor::Sync(_) = executor {
            let AnyHandler::Datagram(h) = &self.service.handler else { unreachable!("datagram server") };
            req.slot = Some(self.shared.acquire());
            self.service.run_datagram(h.as_ref(), req);
            req.slot = None;
        } else {
            let mut job = DatagramRequest::new(req.data().to_vec(), Arc::clone(socket), self.handle());
            job.len = req.len;
            job.peer_raw = req.peer_raw.clone();
            job.peer = req.peer.clone();
            job.slot = Some(self.shared.acquire());
            executor.dispatch(Job::Datagram(job));
        }
        Ok(true)
    }

    /// Receives into `req`; `Ok(false)` when the datagram was oversized or refused.
    fn receive_into(&self, socket: &DatagramSocket, req: &mut DatagramRequest) -> io::Result<bool> {
        let wake_from = self.wake.get().and_then(Option::as_ref).map(|w| &w.from);
        receive_into(&self.service, self.opts.max_datagram_size, socket, req, true, wake_from)
    }

    /// `ThreadPool` on a datagram socket: the workers receive themselves.
    pub(crate) fn serve_datagram_workers(&self, socket: &Arc<DatagramSocket>, pool: &ThreadPool) -> io::Result<()> {
        let shared = &self.shared;
        // Each receiver handles one datagram at a time: capping receivers
        // at `max_connections` caps datagrams in flight.
        let receivers = self.opts.max_connections.map_or(pool.min, |max| pool.min.min(max));
        // Blocking receives need a wake-up only we send, to a socket only we
        // read: not one shared with other processes (adopted, or a
        // SO_REUSEPORT group, where the kernel may route it elsewhere).
        let wake = if self.adopted || self.opts.reuse_port {
            None
        } else {
            self.wake.get_or_init(|| WakeSender::new(socket)).as_ref()
        };
        let mut handles = Vec::with_capacity(receivers);
        for id in 0..receivers {
            let worker = DatagramWorker {
                service: Arc::clone(&self.service),
                socket: Arc::clone(socket),
                request: DatagramRequest::new(self.datagram_buffer(), Arc::clone(socket), self.handle()),
                max: self.opts.max_datagram_size,
                fatal: Arc::clone(&self.fatal),
                wake_from: wake.map(|w| w.from.clone()),
            };
            shared.stats.workers_total.fetch_add(1, SeqCst);
            let run = move || worker.run();
            match strategy::spawn(shared, &format!("socketserver-udp-{id}"), pool.stack_size, run) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.stats.workers_total.fetch_sub(1, SeqCst);
                    shared.request_stop(Duration::ZERO);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(io::Error::new(e.kind(), format!("{}: cannot start pool workers: {e}", shared.name)));
                }
            }
        }
        let mut ready = [false];
        while !shared.stopping() {
            sys::poll(&[shared.waker.stop_fd()], &mut ready, None)?;
        }
        let done = match wake {
            Some(wake) => wake.wake_receivers(shared, self.opts.grace + FORCE_WAIT),
            None => shared.wait_drained(|| shared.threads.load(SeqCst) == 0),
        };
        for h in handles {
            if done || h.is_finished() {
                let _ = h.join();
            }
        }
        match self.fatal.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Receives one datagram into `req` (without blocking if `dontwait`);
/// `Ok(false)` when it was oversized (reported), refused by
/// `verify_request`, or a wake-up from `wake_from` (not counted).
fn receive_into(
    service: &Service,
    max: usize,
    socket: &DatagramSocket,
    req: &mut DatagramRequest,
    dontwait: bool,
    wake_from: Option<&SockAddr>,
) -> io::Result<bool> {
    let (len, from) = sys::recv_from(SockRef::from(socket), &mut req.buf, dontwait)?;
    if len == 0 && wake_from == Some(&from) {
        return Ok(false);
    }
    let stats = &service.shared.stats;
    Counters::bump(&stats.accepted);
    let peer = Address::from_sockaddr(&from);
    if len > max {
        Counters::bump(&stats.oversized);
        let shown = if len > req.buf.len() { format!("{len} bytes") } else { format!("more than {max} bytes") };
        let err = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("datagram of {shown} exceeds max_datagram_size ({max} bytes); dropped unhandled"),
        );
        service.handle_error(&peer, &err);
        return Ok(false);
    }
    if !service.verify(&peer) {
        Counters::bump(&stats.refused);
        return Ok(false);
    }
    req.len = len;
    req.peer_raw = from;
    req.peer = peer;
    Ok(true)
}

/// A pool worker that receives datagrams itself.
struct DatagramWorker {
    service: Arc<Service>,
    socket: Arc<DatagramSocket>,
    request: DatagramRequest,
    max: usize,
    fatal: Arc<Mutex<Option<io::Error>>>,
    /// Where the shutdown's wake-ups come from, in blocking mode.
    wake_from: Option<SockAddr>,
}

impl DatagramWorker {
    /// Receives and handles datagrams until the shutdown. With `blocking`
    /// it waits in `recvfrom` itself — one system call per datagram — and
    /// the shutdown wakes it with a datagram of its own (`wake`); without,
    /// it waits in `poll` on the socket and the shutdown pipe.
    fn run(mut self) {
        let blocking = self.wake_from.is_some();
        let shared = Arc::clone(&self.service.shared);
        let AnyHandler::Datagram(handler) = self.service.handler.clone() else { unreachable!("datagram server") };
        let fds = [self.socket.as_raw_fd(), shared.waker.stop_fd()];
        let mut backoff = Backoff::default();
        while !shared.stopping() {
            let received = receive_into(
                &self.service,
                self.max,
                &self.socket,
                &mut self.request,
                !blocking,
                self.wake_from.as_ref(),
            );
            if shared.stopping() {
                break; // the wake-up, or a datagram that came after the shutdown
            }
            match received {
                Ok(false) => {}
                Ok(true) => {
                    backoff.reset();
                    self.request.slot = Some(shared.acquire());
                    shared.stats.workers_busy.fetch_add(1, SeqCst);
                    self.service.run_datagram(handler.as_ref(), &mut self.request);
                    shared.stats.workers_busy.fetch_sub(1, SeqCst);
                    self.request.slot = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing queued (or an adopted socket in non-blocking mode).
                    if let Err(e) = sys::poll(&fds, &mut [false; 2], None) {
                        self.fail(e);
                        break;
                    }
                }
                Err(e) => {
                    Counters::bump(&shared.stats.accept_errors);
                    match accept::classify(&e) {
                        Action::Skip => {}
                        Action::BackOff => {
                            let (wait, first) = backoff.step();
                            if first {
                                log::warn!("{}: receive failed: {e}; backing off", shared.name);
                            }
                            let _ = sys::poll(&fds[1..], &mut [false], Some(wait));
                        }
                        Action::Fatal => {
                            self.fail(e);
                            break;
                        }
                    }
                }
            }
        }
        shared.stats.workers_total.fetch_sub(1, SeqCst);
    }

    fn fail(&self, e: io::Error) {
        let shared = &self.service.shared;
        log::error!("{}: giving up: {e}", shared.name);
        self.fatal.lock().get_or_insert(io::Error::new(e.kind(), format!("{}: {e}", shared.name)));
        shared.request_stop(shared.grace);
    }
}

/// How a shutdown reaches pool workers blocked in `recvfrom`: empty
/// datagrams to the server's own socket from a socket of ours, whose
/// address tells them apart from any client's.
#[derive(Debug)]
pub(crate) struct WakeSender {
    sender: Socket,
    /// The sender's address, as the workers see it.
    pub(crate) from: SockAddr,
    /// The server socket's address (loopback for a wildcard bind).
    to: SockAddr,
}

static WAKE_SENDERS: AtomicUsize = AtomicUsize::new(0);

impl WakeSender {
    /// `None` when the socket has no address we can send to, or no sender
    /// with an address of its own can be made (then workers poll).
    pub(crate) fn new(socket: &DatagramSocket) -> Option<WakeSender> {
        let (to, bind) = match socket.local_addr().ok()? {
            Address::Inet(mut addr) => {
                if addr.ip().is_unspecified() {
                    addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
                }
                let any_port = std::net::SocketAddr::new(addr.ip(), 0);
                (SockAddr::from(addr), SockAddr::from(any_port))
            }
            Address::Unix(Some(path)) => {
                // An abstract name (Linux): no file to clean up, and unique.
                let name = format!("\0socketserver-wake-{}-{}", std::process::id(), WAKE_SENDERS.fetch_add(1, SeqCst));
                (SockAddr::unix(path).ok()?, SockAddr::unix(name).ok()?)
            }
            Address::Unix(None) => return None,
        };
        let sender = Socket::new(to.domain(), Type::DGRAM, None).ok()?;
        sender.bind(&bind).ok()?;
        let from = sender.local_addr().ok()?;
        if from.as_socket().is_none() && from.as_abstract_namespace().is_none() {
            return None; // not Linux: the Unix sender would be unnamed
        }
        Some(WakeSender { sender, from, to })
    }

    /// Sends empty datagrams until every receiver has ended (each sees the
    /// shutdown and leaves), for at most `limit`. Returns whether they all
    /// ended. Extra wake-ups left in the queue are skipped on a later run.
    fn wake_receivers(&self, shared: &Shared, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        loop {
            let left = shared.threads.load(SeqCst);
            if left == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            for _ in 0..left {
                let _ = self.sender.send_to(&[], &self.to);
            }
            // Shutdown only: the receivers leave within microseconds of a wake.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
