//! The datagram receive loop, and the pool workers that receive for
//! themselves (no hand-off, no copy per datagram).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{SockAddr, SockRef, Socket, Type};

use super::errors::{self, Next};
use super::{Core, Endpoint, Kind, Serving, Taken};
use crate::deadline::Deadline;
use crate::net::{Address, DatagramSocket};
use crate::request::DatagramRequest;
use crate::request::{Outbox, REPLY_HOLD, SLOW_HANDLER};
use crate::service::Service;
use crate::shutdown::FORCE_WAIT;
use crate::stats::Counters;
use crate::strategy::{self, Event, Executor, Run, Serve, Strategy, ThreadPool};
use crate::sys;
use crate::sys::mmsg::{RecvBatch, Wait};

/// A datagram server's socket and its state across runs.
#[derive(Debug)]
pub struct DatagramEndpoint {
    socket: Arc<DatagramSocket>,
    /// Made elsewhere, or shared with other processes: pool workers poll
    /// rather than wake themselves through it.
    adopted: bool,
    /// Wakes pool workers blocked in `recvfrom`; made on first use and kept,
    /// so that its leftovers are known on a later run.
    wake: OnceLock<Option<WakeSender>>,
}

impl DatagramEndpoint {
    pub(crate) fn bound(socket: DatagramSocket) -> DatagramEndpoint {
        DatagramEndpoint { socket: Arc::new(socket), adopted: false, wake: OnceLock::new() }
    }

    pub(crate) fn adopted(socket: DatagramSocket) -> DatagramEndpoint {
        DatagramEndpoint { adopted: true, ..DatagramEndpoint::bound(socket) }
    }

    fn new_request(&self, core: &Core) -> DatagramRequest {
        // One byte more than the limit, so that even without MSG_TRUNC an
        // oversized datagram shows as longer than the limit.
        let buf = vec![0; max_size(core, &self.socket) + 1];
        DatagramRequest::new(buf, Arc::clone(&self.socket), core.handle(), core.opts.max_datagram_reply)
    }

    fn wake_from(&self) -> Option<&SockAddr> {
        self.wake.get().and_then(Option::as_ref).map(|w| &w.from)
    }

    /// Receives one datagram into `scratch` and handles it there
    /// (`Synchronous`) or hands a copy to the strategy. `Ok(false)`: dropped.
    fn receive_one(
        &self,
        core: &Core,
        service: &Service<DatagramRequest>,
        executor: &Executor<DatagramRequest>,
        scratch: &mut Option<DatagramRequest>,
    ) -> io::Result<Taken> {
        let req = scratch.get_or_insert_with(|| self.new_request(core));
        let taken = receive_into(core, service, req, true, self.wake_from())?;
        if taken != Taken::Request {
            return Ok(taken);
        }
        if let Executor::Synchronous(_) = executor {
            req.slot = Some(core.shared.acquire());
            service.run_in_place(req);
            req.slot = None;
        } else {
            let mut job = req.detached_copy();
            job.slot = Some(core.shared.acquire());
            executor.dispatch(job);
        }
        Ok(Taken::Request)
    }

    /// After the loop stopped: answers the datagrams already queued on the
    /// socket, for at most the drain window (without waiting for more).
    fn answer_queued(
        &self,
        core: &Core,
        service: &Service<DatagramRequest>,
        executor: &Executor<DatagramRequest>,
        scratch: &mut Option<DatagramRequest>,
    ) {
        let until = Deadline::after(Instant::now(), core.opts.drain_window);
        while !until.passed(Instant::now()) {
            executor.reap();
            if !core.shared.wait_for_capacity_until(|| core.can_accept(executor), until) {
                return;
            }
            match self.receive_one(core, service, executor, scratch) {
                Ok(_) => {}
                Err(e) if errors::classify(&e) == errors::Action::Skip => {}
                Err(_) => return, // nothing queued, or nothing more to do
            }
        }
    }

    /// `ThreadPool` on a datagram socket: the workers receive themselves.
    fn serve_receivers(
        &self,
        core: &Arc<Core>,
        service: &Arc<Service<DatagramRequest>>,
        pool: &ThreadPool,
    ) -> io::Result<()> {
        let shared = &core.shared;
        // Each receiver handles one datagram at a time: capping receivers
        // at `max_connections` caps datagrams in flight.
        let receivers = core.opts.max_connections.map_or(pool.min, |max| pool.min.min(max));
        // Blocking receives need a wake-up only we send, to a socket only we
        // read: not one shared with other processes (adopted, or a
        // SO_REUSEPORT group, where the kernel may route it elsewhere).
        let wake = if self.adopted || core.opts.reuse_port {
            None
        } else {
            self.wake.get_or_init(|| WakeSender::new(&self.socket)).as_ref()
        };
        let fatal = Arc::new(Mutex::new(None));
        // The receivers still running: not every thread of the server, as a
        // pool that `handle_request` started lives on until the server closes.
        let receiving = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::with_capacity(receivers);
        for id in 0..receivers {
            let worker =
                Receiver::new(core, service, self.new_request(core), &fatal, &receiving, wake.map(|w| w.from.clone()));
            shared.stats.workers_total.fetch_add(1, SeqCst);
            receiving.fetch_add(1, SeqCst);
            match strategy::spawn(shared, &format!("socketserver-udp-{id}"), pool.stack_size, move || worker.run()) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.stats.workers_total.fetch_sub(1, SeqCst);
                    receiving.fetch_sub(1, SeqCst);
                    shared.request_stop(Duration::ZERO);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(crate::error::context(e, format_args!("{}: cannot start pool workers", shared.name)));
                }
            }
        }
        super::ServiceClock::new(core, service).wait_for_stop(shared, service)?;
        let receiving = || receiving.load(SeqCst);
        let done = match wake {
            Some(wake) => wake.wake_receivers(receiving, core.opts.grace.saturating_add(FORCE_WAIT)),
            None => shared.wait_drained(|| receiving() == 0),
        };
        for h in handles {
            if done || h.is_finished() {
                let _ = h.join();
            }
        }
        match fatal.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl std::os::fd::AsFd for DatagramEndpoint {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for DatagramEndpoint {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl Endpoint for DatagramEndpoint {
    type Request = DatagramRequest;

    fn local_addr(&self) -> io::Result<Address> {
        self.socket.local_addr()
    }

    fn serve<S: Strategy>(
        &self,
        core: &Arc<Core>,
        service: &Arc<Service<DatagramRequest>>,
        strategy: &S,
        kept: &Mutex<Option<Executor<DatagramRequest>>>,
    ) -> io::Result<()> {
        strategy.serve(&Serving { endpoint: self, core, service, kept })
    }

    fn take_one(
        &self,
        core: &Core,
        service: &Arc<Service<DatagramRequest>>,
        executor: &Executor<DatagramRequest>,
    ) -> io::Result<Taken> {
        self.receive_one(core, service, executor, &mut None)
    }
}

/// A datagram socket: the receive loop and an executor, but for a pool and
/// `Event`, whose workers receive themselves.
impl Serve<DatagramRequest> for Serving<'_, DatagramEndpoint> {
    fn with_executor(&self, strategy: &impl Run) -> io::Result<()> {
        let Serving { endpoint, core, service, .. } = *self;
        let scratch = std::cell::RefCell::new(None);
        super::serve_with(
            endpoint.as_raw_fd(),
            core,
            service,
            self.executor(strategy)?,
            |executor| endpoint.receive_one(core, service, executor, &mut scratch.borrow_mut()),
            |executor| endpoint.answer_queued(core, service, executor, &mut scratch.borrow_mut()),
        )
    }

    fn with_pool(&self, pool: &ThreadPool) -> io::Result<()> {
        self.endpoint.serve_receivers(self.core, self.service, pool)
    }

    fn with_event(&self, event: &Event) -> io::Result<()> {
        self.endpoint.serve_receivers(self.core, self.service, &event.as_pool())
    }
}

impl Kind for DatagramRequest {
    type Endpoint = DatagramEndpoint;
}

/// The longest datagram the server takes: the builder's, or what the
/// transport carries.
fn max_size(core: &Core, socket: &DatagramSocket) -> usize {
    core.opts.max_datagram_size.unwrap_or_else(|| match socket.local_addr() {
        Ok(Address::Inet(a)) if a.is_ipv6() => crate::net::MAX_UDP6_PAYLOAD,
        Ok(Address::Inet(_)) => crate::net::MAX_UDP_PAYLOAD,
        _ => crate::net::MAX_UNIX_DATAGRAM,
    })
}

/// What a shutdown's wake-up datagram holds. Recognised by its bytes, not
/// only by its sender: a socket handed to a successor is shared, and the
/// successor, which cannot know the old process's sender, may receive one
/// of them — it must not answer it as a request. (A client that sends
/// exactly these bytes has its datagram dropped.)
const WAKE_UP: &[u8] = b"\0socketserver: wake up\0";

/// Whether the `len` bytes received into `buf` (as many as fit) are a wake-up.
fn is_wake_up(buf: &[u8], len: usize) -> bool {
    let fit = len.min(buf.len());
    len == WAKE_UP.len() && buf[..fit] == WAKE_UP[..fit]
}

/// Receives one datagram into `req` (without blocking if `dontwait`): a
/// request, or one oversized (reported), refused by `verify_request`, or a
/// wake-up from `wake_from` (not counted).
fn receive_into(
    core: &Core,
    service: &Service<DatagramRequest>,
    req: &mut DatagramRequest,
    dontwait: bool,
    wake_from: Option<&SockAddr>,
) -> io::Result<Taken> {
    let (len, from) = sys::recv_from(SockRef::from(&*req.socket), &mut req.buf, dontwait)?;
    Ok(admit(core, service, req, len, from, wake_from))
}

/// Takes the datagram of `len` bytes from `from` whose bytes (as many as
/// fit) are in `req.buf`: a request, or one oversized (reported), refused
/// by `verify_request`, or a wake-up (not counted).
fn admit(
    core: &Core,
    service: &Service<DatagramRequest>,
    req: &mut DatagramRequest,
    len: usize,
    from: SockAddr,
    wake_from: Option<&SockAddr>,
) -> Taken {
    if is_wake_up(&req.buf, len) || (len == 0 && wake_from == Some(&from)) {
        return Taken::Nothing;
    }
    let stats = &core.shared.stats;
    let max = req.buf.len() - 1;
    Counters::bump(&stats.accepted);
    let peer = Address::from_sockaddr(&from);
    if len > max {
        Counters::bump(&stats.oversized);
        // Linux reports the real length (MSG_TRUNC); elsewhere a full buffer
        // only says it was longer.
        let shown = if cfg!(target_os = "linux") { format!("{len} bytes") } else { format!("more than {max} bytes") };
        let err = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("datagram of {shown} exceeds max_datagram_size ({max} bytes); dropped unhandled"),
        );
        service.handle_error(None, &peer, &err);
        return Taken::Dropped;
    }
    if !service.verify(&peer) {
        Counters::bump(&stats.refused);
        return Taken::Refused;
    }
    req.len = len;
    req.peer_raw = from;
    req.peer = peer;
    Taken::Request
}

/// The most datagrams a receiver takes in one call. 32 rather than 64: see
/// BENCHMARKS.md, "Batched datagrams (issue 20)".
const BATCH: usize = 32;
/// The most bytes of buffers a receiver's batch holds: as many slots of
/// `max_datagram_size + 1` bytes as fit, 1 to [`BATCH`] — 16 at UDP's
/// default 65,507, 32 up to 32 KiB. Address space more than memory: the
/// buffers are one zeroed allocation, mapped lazily, so small datagrams
/// make only the first page of each slot resident.
const BATCH_BYTES: usize = 1 << 20;

/// How many datagrams of at most `slot` bytes a receiver's batch holds.
fn batch_slots(slot: usize) -> usize {
    (BATCH_BYTES / slot.max(1)).clamp(1, BATCH)
}

/// A pool worker that receives datagrams itself, in batches.
struct Receiver {
    core: Arc<Core>,
    service: Arc<Service<DatagramRequest>>,
    /// The request each datagram of a batch is copied into and handled in;
    /// it holds the batch's replies (its outbox) until the batch ends.
    request: DatagramRequest,
    batch: RecvBatch,
    fatal: Arc<Mutex<Option<io::Error>>>,
    /// Receivers running, this one included until `run` ends.
    receiving: Arc<AtomicUsize>,
    /// Where the shutdown's wake-ups come from, in blocking mode.
    wake_from: Option<SockAddr>,
}

impl Receiver {
    fn new(
        core: &Arc<Core>,
        service: &Arc<Service<DatagramRequest>>,
        mut request: DatagramRequest,
        fatal: &Arc<Mutex<Option<io::Error>>>,
        receiving: &Arc<AtomicUsize>,
        wake_from: Option<SockAddr>,
    ) -> Receiver {
        let slot = request.buf.len();
        request.outbox = Some(Mutex::new(Outbox::default()));
        Receiver {
            core: Arc::clone(core),
            service: Arc::clone(service),
            request,
            batch: RecvBatch::new(batch_slots(slot), slot),
            fatal: Arc::clone(fatal),
            receiving: Arc::clone(receiving),
            wake_from,
        }
    }

    /// Receives and handles datagrams until the shutdown, a batch at a
    /// time: one `recvmmsg` takes what is queued (up to the batch's size),
    /// the datagrams are handled in order, and their replies go out
    /// together. With a wake-up sender it waits in `recvmmsg` itself
    /// (`MSG_WAITFORONE`: for the first datagram, not for a full batch) and
    /// the shutdown wakes it with a datagram of its own; without, it waits
    /// in `poll` on the socket and the shutdown pipe.
    fn run(mut self) {
        let blocking = self.wake_from.is_some();
        let wait = if blocking { Wait::ForOne } else { Wait::No };
        let core = Arc::clone(&self.core);
        let shared = &core.shared;
        let fds = [self.request.socket.as_raw_fd(), shared.waker.stop_fd()];
        let mut errors = core.accept_errors();
        while !shared.stopping() {
            let received = self.batch.receive(self.request.socket.as_fd(), wait);
            match received {
                Ok(n) => {
                    Counters::bump(&shared.stats.datagram_batches);
                    if self.handle_batch(n) {
                        errors.succeeded();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing queued (or an adopted socket in non-blocking mode).
                    if let Err(e) = sys::poll(&fds, &mut [false; 2], None) {
                        self.fail(errors::fatal(core.name(), e));
                        break;
                    }
                }
                Err(e) => match errors.failed(e) {
                    Ok(Next::Now | Next::Paused) => {}
                    Err(e) => {
                        self.fail(e);
                        break;
                    }
                },
            }
        }
        // Shutting down: answer what is already queued, receiving for at
        // most the drain window, without waiting for more. A batch taken is
        // answered whole, even past the window: its datagrams have left the
        // socket's queue (one that a successor may share) and reached the
        // server, and nothing that did is dropped unanswered. (At most a
        // batch's handlers past the window; the grace period bounds it.)
        let until = Deadline::after(Instant::now(), core.opts.drain_window);
        while !until.passed(Instant::now()) {
            match self.batch.receive(self.request.socket.as_fd(), Wait::No) {
                Ok(n) => {
                    Counters::bump(&shared.stats.datagram_batches);
                    self.handle_batch(n);
                }
                Err(e) if errors::classify(&e) == errors::Action::Skip => {}
                Err(_) => break,
            }
        }
        shared.stats.workers_total.fetch_sub(1, SeqCst);
        self.receiving.fetch_sub(1, SeqCst);
    }

    /// Handles the `n` datagrams of the batch in the order they came, then
    /// sends their replies. Returns whether one was a request.
    ///
    /// Replies are held until the batch's end, or until 64 are held, but a
    /// handler never starts with replies held that waited [`REPLY_HOLD`]
    /// (1 ms) or that were made before a handler that took
    /// [`SLOW_HANDLER`] (100 µs): a batch is what was already queued, so a
    /// reply waits for at most the handlers of its batch; handlers that
    /// block (a database call each) send each reply before the next one
    /// starts; and a first slow handler after fast ones holds back only
    /// the replies of the last millisecond before it. One clock read per
    /// handler, at its end.
    fn handle_batch(&mut self, n: usize) -> bool {
        let mut any = false;
        let mut last = Instant::now();
        let mut slow = false;
        for i in 0..n {
            let Some(d) = self.batch.get(i) else { break };
            let fit = d.data.len().min(self.request.buf.len());
            self.request.buf[..fit].copy_from_slice(&d.data[..fit]);
            // The slot is `max + 1` bytes: a cut datagram shows as longer
            // than the limit even were its real length not reported.
            let len = if d.truncated { d.len.max(fit) } else { d.len };
            let taken = admit(&self.core, &self.service, &mut self.request, len, d.from, self.wake_from.as_ref());
            if taken == Taken::Request {
                any = true;
                if slow || self.outbox_waited(last) >= REPLY_HOLD {
                    self.flush_replies();
                }
                self.handle();
                let now = Instant::now();
                slow = now.saturating_duration_since(last) >= SLOW_HANDLER;
                if let Some(outbox) = &self.request.outbox {
                    outbox.lock().stamp(now);
                }
                last = now;
            }
        }
        self.flush_replies();
        any
    }

    fn outbox_waited(&self, now: Instant) -> Duration {
        self.request.outbox.as_ref().map_or(Duration::ZERO, |o| o.lock().waited(now))
    }

    /// Sends the held replies; reports those that failed (but for a full
    /// socket: dropped and counted) to `handle_error`.
    fn flush_replies(&mut self) {
        let Some(outbox) = &self.request.outbox else { return };
        let mut outbox = outbox.lock();
        outbox.flush(&self.request.socket, &self.core.shared.stats.replies_dropped);
        for (to, e) in outbox.failed.drain(..) {
            let e = crate::error::context(e, "a datagram reply held for its batch could not be sent");
            self.service.handle_error(None, &Address::from_sockaddr(&to), &e);
        }
    }

    fn handle(&mut self) {
        let shared = &self.core.shared;
        self.request.slot = Some(shared.acquire());
        shared.stats.workers_busy.fetch_add(1, SeqCst);
        self.service.run_in_place(&mut self.request);
        shared.stats.workers_busy.fetch_sub(1, SeqCst);
        self.request.slot = None;
    }

    /// Ends serving with `e` (already logged, with the server's name).
    fn fail(&self, e: io::Error) {
        self.fatal.lock().get_or_insert(e);
        self.core.shared.request_stop(self.core.shared.grace);
    }
}

/// How a shutdown reaches pool workers blocked in `recvfrom`: empty
/// datagrams to the server's own socket from a socket of ours, whose
/// address tells them apart from any client's.
#[derive(Debug)]
pub(crate) struct WakeSender {
    sender: Socket,
    /// The sender's address, as the workers see it.
    from: SockAddr,
    /// The server socket's address (loopback for a wildcard bind).
    to: SockAddr,
}

static WAKE_SENDERS: AtomicUsize = AtomicUsize::new(0);

impl WakeSender {
    /// `None` when the socket has no address we can send to, or no sender
    /// with an address of its own can be made (then workers poll).
    fn new(socket: &DatagramSocket) -> Option<WakeSender> {
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
        // A wake-up must never wait: the server's own queue may be full
        // (a flood, or handlers stuck), and the shutdown must go on.
        sender.set_nonblocking(true).ok()?;
        sender.bind(&bind).ok()?;
        let from = sender.local_addr().ok()?;
        if from.as_socket().is_none() && from.as_abstract_namespace().is_none() {
            return None; // not Linux: the Unix sender would be unnamed
        }
        Some(WakeSender { sender, from, to })
    }

    /// Sends wake-up datagrams (the bytes of `WAKE_UP`, one per receiver
    /// still receiving) until every receiver has ended (each sees the
    /// shutdown and leaves), for at most `limit`. Returns whether they all
    /// ended. Extra wake-ups left in the queue are recognised by their bytes
    /// and skipped on a later run.
    fn wake_receivers(&self, receiving: impl Fn() -> usize, limit: Duration) -> bool {
        let deadline = Deadline::after(Instant::now(), limit);
        let mut pause = Duration::from_millis(1);
        loop {
            let left = receiving();
            if left == 0 {
                return true;
            }
            if deadline.passed(Instant::now()) {
                return false;
            }
            for _ in 0..left {
                let _ = self.sender.send_to(WAKE_UP, &self.to);
            }
            // Shutdown only: the receivers leave within microseconds of a wake.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
