//! Python's `socketserver`, rebuilt in Rust for production: a server type
//! per socket kind, a handler you write, and a concurrency strategy chosen
//! independently.
//!
//! ```no_run
//! use socketserver::{StreamRequest, ThreadingTcpServer};
//! use std::io::{self, Write};
//!
//! fn main() -> io::Result<()> {
//!     let server = ThreadingTcpServer::bind("127.0.0.1:9999", |req: &mut StreamRequest| {
//!         // Python's `for line in self.rfile:`; each line is a request.
//!         while let Some(line) = req.next_line()? {
//!             writeln!(req, "{line}")?;
//!         }
//!         Ok(()) // the client closed: done
//!     })?;
//!     server.handle().shutdown_on_signal()?; // Ctrl-C: drain, then return
//!     server.serve_forever()
//! }
//! ```
//!
//! # The pieces, as Python names them
//!
//! | Python | here |
//! |---|---|
//! | `TCPServer`, `UDPServer`, `UnixStreamServer`, `UnixDatagramServer` | [`TcpServer`], [`UdpServer`], [`UnixStreamServer`], [`UnixDatagramServer`]: one generic [`Server`] over a [`Transport`] |
//! | `ThreadingMixIn`, `ForkingMixIn` | strategies [`Threading`], [`Forking`], plus [`Synchronous`] (the default), [`ThreadPool`] and [`Event`] |
//! | `ThreadingTCPServer`, `ForkingUDPServer`, ... | the aliases [`ThreadingTcpServer`], [`ForkingUdpServer`], ... |
//! | `BaseRequestHandler` (`setup`, `handle`, `finish`) | [`RequestHandler`]; closures are handlers too |
//! | `self.x = ...` in a handler | [`StreamRequest::state_mut`]: per-connection state |
//! | `StreamRequestHandler` (`rfile`, `wfile`) | [`StreamRequest`]: buffered reads, writes sent whole |
//! | `DatagramRequestHandler` | [`DatagramRequest`]: the packet, the peer, [`reply`](DatagramRequest::reply) |
//! | `serve_forever`, `handle_request`, `shutdown` | [`Server::serve_forever`], [`Server::handle_request`] (says what it did: [`Handled`]), [`ServerHandle::shutdown`] |
//! | `threading.Thread(target=server.serve_forever)` | [`Server::spawn`] |
//! | `verify_request`, `handle_error`, `handle_timeout`, `service_actions` | [`Builder`] hooks of the same names |
//!
//! A closure handler names its request's type, `|req: &mut StreamRequest|`
//! or `|req: &mut DatagramRequest|`: a server takes any [`RequestHandler`],
//! and Rust infers a closure's parameter types only from a plain `Fn`
//! bound, so it cannot infer them here.
//!
//! # Cookbook: the five programs a newcomer writes first
//!
//! An upper-case line server on a pool, run in the background:
//!
//! ```
//! use socketserver::{StreamRequest, TcpServer, ThreadPool};
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpStream;
//!
//! let server = TcpServer::builder()
//!     .strategy(ThreadPool::new(4).max_workers(64))
//!     .bind("127.0.0.1:0", |req: &mut StreamRequest| {
//!         while let Some(line) = req.next_line()? {
//!             writeln!(req, "{}", line.to_uppercase())?;
//!         }
//!         Ok(())
//!     })?
//!     .spawn()?;
//! let mut client = TcpStream::connect(server.server_address())?;
//! client.write_all(b"hello\n")?;
//! let mut answer = String::new();
//! BufReader::new(&client).read_line(&mut answer)?;
//! assert_eq!(answer, "HELLO\n");
//! server.stop()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A UDP time server (the bundled [`servers::Strftime`] renders any strftime
//! format; this one answers the time of day):
//!
//! ```
//! use socketserver::{DatagramRequest, UdpServer};
//! use std::net::UdpSocket;
//! use std::time::SystemTime;
//!
//! let server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
//!     let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
//!     req.reply(format!("{}", secs % 86_400).as_bytes())
//! })?
//! .spawn()?;
//! let client = UdpSocket::bind("127.0.0.1:0")?;
//! client.send_to(b"time?", server.server_address())?;
//! let mut buf = [0u8; 32];
//! let n = client.recv(&mut buf)?;
//! assert!(std::str::from_utf8(&buf[..n]).unwrap().parse::<u64>().is_ok());
//! server.stop()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A Unix server with a per-connection counter, kept across `setup`,
//! `handle` and `finish` as Python keeps `self.count`:
//!
//! ```
//! use socketserver::{RequestHandler, StreamRequest, ThreadingUnixStreamServer};
//! use std::io::{self, Read, Write};
//! use std::os::unix::net::UnixStream;
//!
//! #[derive(Default)]
//! struct Count(usize);
//!
//! struct Counter;
//!
//! impl RequestHandler<StreamRequest> for Counter {
//!     fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
//!         while let Some(_line) = req.next_line()? {
//!             req.state_mut::<Count>().0 += 1;
//!         }
//!         Ok(())
//!     }
//!     fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
//!         let n = req.state_mut::<Count>().0;
//!         writeln!(req, "{n} lines")
//!     }
//! }
//!
//! let path = std::env::temp_dir().join(format!("counter-{}.sock", std::process::id()));
//! let server = ThreadingUnixStreamServer::bind(&path, Counter)?.spawn()?;
//! let mut client = UnixStream::connect(&path)?;
//! client.write_all(b"a\nb\nc\n")?;
//! client.shutdown(std::net::Shutdown::Write)?;
//! let mut answer = String::new();
//! client.read_to_string(&mut answer)?;
//! assert_eq!(answer, "3 lines\n");
//! server.stop()?; // the socket file is removed
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A handler that fails and one that panics: each is reported through
//! `handle_error` — which gets the request still open, so it can answer —
//! counted, and the server serves on. Without a hook and without a logger,
//! each error is one line on stderr (as Python prints a traceback); a panic
//! is also printed by Rust's panic hook, as any panic is (set your own with
//! `std::panic::set_hook`).
//!
//! ```
//! use socketserver::{StreamRequest, TcpServer};
//! use std::io::{self, Read, Write};
//! use std::net::TcpStream;
//!
//! let server = TcpServer::builder()
//!     .handle_error(|req, _peer, err| {
//!         if let Some(req) = req {
//!             let _ = writeln!(req, "error: {err}");
//!         }
//!     })
//!     .bind("127.0.0.1:0", |req: &mut StreamRequest| match req.next_line()?.as_deref() {
//!         Some("fail") => Err(io::Error::other("failed on purpose")),
//!         Some("panic") => panic!("panicked on purpose"),
//!         _ => writeln!(req, "fine"),
//!     })?
//!     .spawn()?;
//! # let hook = std::panic::take_hook();
//! # std::panic::set_hook(Box::new(|_| {})); // keep the doctest's output clean
//! for (ask, answer) in [("fail", "error: failed on purpose\n"), ("panic", "error: handler panicked: panicked on purpose\n"), ("ok", "fine\n")] {
//!     let mut client = TcpStream::connect(server.server_address())?;
//!     writeln!(client, "{ask}")?;
//!     let mut got = String::new();
//!     client.read_to_string(&mut got)?;
//!     assert_eq!(got, answer);
//! }
//! # std::panic::set_hook(hook);
//! let stats = server.handle().stats();
//! assert_eq!((stats.handler_errors, stats.panics), (2, 1));
//! server.stop()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `handle_request` with a timeout, and a `verify_request` that refuses a
//! peer; each call says what happened:
//!
//! ```
//! use socketserver::{Handled, StreamRequest, TcpServer};
//! use std::net::TcpStream;
//! use std::time::Duration;
//!
//! let server = TcpServer::builder()
//!     .timeout(Duration::from_millis(50))
//!     .verify_request(|peer| peer.as_inet().is_some_and(|a| a.port() % 2 == 0))
//!     .bind("127.0.0.1:0", |_: &mut StreamRequest| Ok(()))?;
//! assert_eq!(server.handle_request()?, Handled::TimedOut);
//! let client = TcpStream::connect(server.server_address())?;
//! let expected = if client.local_addr()?.port() % 2 == 0 { Handled::Served } else { Handled::Refused };
//! assert_eq!(server.handle_request()?, expected);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Running and stopping
//!
//! [`Server::spawn`] runs [`serve_forever`](Server::serve_forever) on a
//! thread of its own and gives back its address, its handle and
//! [`stop`](ServerThread::stop), which returns the final [`Stats`] once
//! every request is counted. [`ServerHandle::shutdown`] works from any
//! thread, a handler included, and returns at once; `serve_forever`
//! returns when the drain is done. [`handle_request`](Server::handle_request)
//! says what it did ([`Handled`]). Requests that raced the shutdown are
//! answered within the drain window (`drain_window`, 100 ms by default);
//! requests in flight get the grace period (`grace_period`, 5 s). Python's
//! `block_on_close = True` is `grace_period(Duration::MAX)` (wait for every
//! request, however long); its `daemon_threads = True` is
//! `grace_period(Duration::ZERO)` (close everything at once). In every
//! duration setting `Duration::MAX` means for ever and `Duration::ZERO` not
//! at all (a zero read timeout fails a read that would wait, as Python's
//! timeout 0). `handle_error(|req, peer, err| ...)` gets the failed request
//! still open, so it can answer, as Python's
//! `handle_error(request, client_address)` can.
//!
//! Writes are collected and leave as one segment, and go out before the
//! handler waits for the peer: a request/response handler needs no
//! `flush`, under every strategy.
//!
//! # The event strategy
//!
//! [`Event`] keeps each connection that waits for its next request parked
//! in one epoll set — no thread, no read buffer — and a polling thread per
//! CPU runs the handler of whichever connection is ready, in the thread
//! that learned it (no hand-off per request). Handlers stay blocking code:
//! a read inside a request waits as usual, and a handler that blocks (a
//! slow read, a lock, a sleep) keeps its thread while another takes its
//! place, up to `max_workers`. The one thing a handler does for it is to
//! wait at its request boundary with
//! [`wait_for_data`](StreamRequest::wait_for_data), which under `Event`
//! parks the connection (returns `false`; `handle` is called again when
//! bytes come, `setup` and `finish` still run once each, and what must
//! outlive a park lives in [`state_mut`](StreamRequest::state_mut)):
//!
//! ```no_run
//! use socketserver::{Event, StreamRequest, TcpServer};
//! use std::io::Write;
//!
//! let server = TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", |req: &mut StreamRequest| {
//!     while req.wait_for_data()? {
//!         let Some(line) = req.next_line()? else { break };
//!         writeln!(req, "{}", line.to_uppercase())?;
//!     }
//!     Ok(())
//! })?;
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! After `wait_for_data()` a request that comes in pieces parks too
//! ([`next_line`](StreamRequest::next_line), `read_exact`, and
//! [`fill_at_least`](StreamRequest::fill_at_least) to look at a frame's
//! header consume nothing until it is whole), an answer a slow reader does
//! not take waits on the loop, not on a thread, and a handler that blocks
//! strands nobody: a poller's other ready connections go to a waiting
//! poller as the handler starts, and a wait in the library's own I/O (or
//! in [`StreamRequest::blocking`], for a database call) hands its place to
//! another thread at once; any other wait, when the monitor finds the
//! thread blocked (about 0.1 ms). A
//! `while let Some(line) = req.next_line()?` handler works too, but keeps
//! its thread while idle, as under a pool. The bundled servers park.
//!
//! What it costs, measured against tokio, a std thread-per-connection
//! server and Python (`BENCHMARKS.md` in the repository): per request, the
//! same CPU as tokio within the noise of the machine measured (both make
//! one `recv` and one `send` per request; the kernel is 90 % of either's
//! CPU); 10,000 idle connections held by 8 threads, 0.64 KiB each;
//! 10,000 clients that each send a byte a second and never a newline leave
//! it at 8 threads with an honest client's p99 under 2.2 ms.
//!
//! # TLS
//!
//! With the `tls` feature, any stream server takes a `rustls::ServerConfig`
//! (`Builder::tls`; `tls::server_config_from_pem` reads PEM files, with a
//! client CA for mutual TLS). The handshake runs where the request runs —
//! never on the accept loop, parked with no thread under [`Event`] — within
//! a handshake timeout; the handler reads and writes plaintext as ever and
//! finds SNI, ALPN and the client's certificates in `StreamRequest::tls`.
//! The `socketserver::tls` module's docs show a mutual-TLS server.
//!
//! # What Python lacks
//!
//! * A bounded [`ThreadPool`] with backpressure ([`Overflow`]), connection
//!   limits ([`Builder::max_connections`]), read, write and idle timeouts.
//! * The [`Event`] strategy: connections parked in `epoll` between
//!   requests, holding no thread, for blocking handlers.
//! * TLS (feature `tls`, rustls) whose handshake cannot wedge the server:
//!   Python's `ctx.wrap_socket(server.socket, server_side=True)` handshakes
//!   inside `accept()`, so one silent client stops it.
//! * A shutdown that wakes the loop at once from any thread — a handler
//!   included — and never deadlocks; requests that raced it answered (the
//!   drain window), a graceful drain with a deadline, after which
//!   connections still open are shut down so blocked handlers return;
//!   opt-in Ctrl-C/SIGTERM handling ([`ServerHandle::shutdown_on_signal`]).
//! * Handler panics caught per request and reported; accept errors such as
//!   `EMFILE` backed off instead of spun on; Unix socket files cleaned up;
//!   oversized datagrams reported, never truncated silently; UDP replies
//!   bounded to 3 times their request on the wire, as QUIC bounds them
//!   ([`DatagramRequest::max_reply`]); [`Stats`].
//!
//! The library installs no signal handler unless asked and never exits the
//! process. It logs through the `log` crate; with no logger installed
//! (`log::max_level()` is `Off`), a handler's error is one line on stderr —
//! written only if stderr can take it at once, never waiting — and nothing
//! else is printed.
//!
//! # Platform
//!
//! Linux only, and nothing else is claimed: the crate uses `epoll`,
//! `eventfd`, `/proc`, `SIOCOUTQ`, `gettid` and glibc's or musl's errno
//! location directly, and it has been built and tested on Linux alone. On
//! any other target it stops at one `compile_error!` saying so.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "socketserver supports Linux only: it uses epoll, eventfd, /proc, SIOCOUTQ and gettid, which this target lacks"
);

/// The crate's items, compiled on Linux only: elsewhere the one
/// `compile_error!` above is all a user sees, not a page of missing `libc`
/// names.
macro_rules! linux_only {
    ($($item:item)*) => { $(#[cfg(target_os = "linux")] $item)* };
}

linux_only! {

pub mod activation;
mod builder;
mod deadline;
mod error;
mod escaped;
pub mod framing;
mod handle;
mod handler;
mod loops;
mod net;
mod options;
pub mod proxy;
mod request;
mod server;
pub mod servers;
mod service;
mod shutdown;
mod signals;
mod stats;
pub mod strategy;
mod sys;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

pub use crate::builder::Builder;
pub use crate::error::ContextError;
pub use crate::escaped::Escaped;
pub use crate::handle::ServerHandle;
pub use crate::handler::RequestHandler;
pub use crate::loops::Handled;
pub use crate::net::{Address, DatagramSocket, Listener, MAX_UDP_PAYLOAD, MAX_UDP6_PAYLOAD, MAX_UNIX_DATAGRAM, Stream};
pub use crate::request::{DatagramRequest, MAX_LINE, StreamRequest};
pub use crate::server::{Server, ServerThread};
pub use crate::signals::on_hangup;
pub use crate::stats::Stats;
pub use crate::strategy::{
    AnyStrategy, Event, Forking, Overflow, ParseStrategyError, Strategy, Synchronous, ThreadPool, Threading,
};
pub use crate::transport::{BindAddress, DatagramTransport, InetTransport, StreamTransport, Transport};

use crate::transport::{Tcp, Udp, UnixDatagram, UnixStream};

/// The README's code, compiled by `cargo test` so that what a newcomer
/// copies from it compiles.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Raises this process's limit on open descriptors (`RLIMIT_NOFILE`) from
/// its soft to its hard value, as a server that holds thousands of
/// connections needs (Python: `resource.setrlimit`). Returns the new limit.
///
/// # Errors
/// As `getrlimit(2)`/`setrlimit(2)`.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    sys::raise_fd_limit()
}

/// A synchronous TCP server (Python's `TCPServer`); `TcpServer::builder().strategy(..)` picks another strategy.
pub type TcpServer = Server<Tcp, Synchronous>;
/// A UDP server; synchronous unless another strategy is named (Python's `UDPServer`).
pub type UdpServer = Server<Udp, Synchronous>;
/// A Unix-stream server (Python's `UnixStreamServer`).
pub type UnixStreamServer = Server<UnixStream, Synchronous>;
/// A Unix-datagram server (Python's `UnixDatagramServer`).
pub type UnixDatagramServer = Server<UnixDatagram, Synchronous>;

/// Python's `ThreadingTCPServer`: a thread per connection.
pub type ThreadingTcpServer = Server<Tcp, Threading>;
/// Python's `ThreadingUDPServer`: a thread per datagram.
pub type ThreadingUdpServer = Server<Udp, Threading>;
/// Python's `ThreadingUnixStreamServer`.
pub type ThreadingUnixStreamServer = Server<UnixStream, Threading>;
/// Python's `ThreadingUnixDatagramServer`.
pub type ThreadingUnixDatagramServer = Server<UnixDatagram, Threading>;
/// Python's `ForkingTCPServer`: a process per connection.
pub type ForkingTcpServer = Server<Tcp, Forking>;
/// Python's `ForkingUDPServer`: a process per datagram.
pub type ForkingUdpServer = Server<Udp, Forking>;
/// Python's `ForkingUnixStreamServer`.
pub type ForkingUnixStreamServer = Server<UnixStream, Forking>;
/// Python's `ForkingUnixDatagramServer`.
pub type ForkingUnixDatagramServer = Server<UnixDatagram, Forking>;
/// A TCP server on a [`ThreadPool`] (Python has no pool).
pub type ThreadPoolTcpServer = Server<Tcp, ThreadPool>;
/// A UDP server on a [`ThreadPool`].
pub type ThreadPoolUdpServer = Server<Udp, ThreadPool>;
/// A Unix-stream server on a [`ThreadPool`].
pub type ThreadPoolUnixStreamServer = Server<UnixStream, ThreadPool>;
/// A Unix-datagram server on a [`ThreadPool`].
pub type ThreadPoolUnixDatagramServer = Server<UnixDatagram, ThreadPool>;
}
