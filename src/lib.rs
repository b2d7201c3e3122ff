//! Python's `socketserver`, rebuilt in Rust for production: a server type
//! per socket kind, a handler you write, and a concurrency strategy chosen
//! independently.
//!
//! ```no_run
//! use socketserver::{StreamRequest, ThreadingTcpServer};
//! use std::io::{self, Read, Write};
//!
//! fn main() -> io::Result<()> {
//!     let server = ThreadingTcpServer::bind("127.0.0.1:9999", |req: &mut StreamRequest| {
//!         let mut buf = [0u8; 16 * 1024];
//!         loop {
//!             let n = req.read(&mut buf)?;
//!             if n == 0 {
//!                 return Ok(()); // the client closed: done
//!             }
//!             req.write_all(&buf[..n])?;
//!         }
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
//! | `ThreadingMixIn`, `ForkingMixIn` | strategies [`Threading`], [`Forking`], plus [`Synchronous`] (the default) and [`ThreadPool`] |
//! | `ThreadingTCPServer`, `ForkingUDPServer`, ... | the aliases [`ThreadingTcpServer`], [`ForkingUdpServer`], ... |
//! | `BaseRequestHandler` (`setup`, `handle`, `finish`) | [`RequestHandler`]; closures are handlers too |
//! | `StreamRequestHandler` (`rfile`, `wfile`) | [`StreamRequest`]: buffered reads, writes sent whole |
//! | `DatagramRequestHandler` | [`DatagramRequest`]: the packet, the peer, [`reply`](DatagramRequest::reply) |
//! | `serve_forever`, `handle_request`, `shutdown` | [`Server::serve_forever`], [`Server::handle_request`], [`ServerHandle::shutdown`] |
//! | `verify_request`, `handle_error`, `handle_timeout`, `service_actions` | [`Builder`] hooks of the same names |
//!
//! # What Python lacks
//!
//! * A bounded [`ThreadPool`] with backpressure ([`Overflow`]), connection
//!   limits ([`Builder::max_connections`]), read, write and idle timeouts.
//! * A shutdown that wakes the loop at once from any thread — a handler
//!   included — and never deadlocks; a graceful drain with a deadline, after
//!   which connections still open are shut down so blocked handlers return;
//!   opt-in Ctrl-C/SIGTERM handling ([`ServerHandle::shutdown_on_signal`]).
//! * Handler panics caught per request and reported; accept errors such as
//!   `EMFILE` backed off instead of spun on; Unix socket files cleaned up;
//!   oversized datagrams reported, never truncated silently; [`Stats`].
//!
//! The library installs no signal handler unless asked, prints nothing (it
//! logs through the `log` crate) and never exits the process.
//!
//! # Platform
//!
//! Unix (Linux first; macOS and the BSDs should work). Forking and Unix
//! sockets are Unix features; the readiness loop uses `poll(2)`.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_code)]

mod builder;
mod error;
pub mod framing;
mod handle;
mod handler;
mod loops;
mod net;
mod options;
mod request;
mod server;
pub mod servers;
mod service;
mod shutdown;
mod signals;
mod stats;
pub mod strategy;
mod sys;
pub mod transport;

pub use crate::builder::Builder;
pub use crate::error::ContextError;
pub use crate::handle::ServerHandle;
pub use crate::handler::RequestHandler;
pub use crate::net::{Address, DatagramSocket, Listener, MAX_UDP_PAYLOAD, MAX_UDP6_PAYLOAD, MAX_UNIX_DATAGRAM, Stream};
pub use crate::request::{DatagramRequest, MAX_LINE, StreamRequest};
pub use crate::server::Server;
pub use crate::stats::Stats;
pub use crate::strategy::{AnyStrategy, Event, Forking, Overflow, Strategy, Synchronous, ThreadPool, Threading};
pub use crate::transport::{BindAddress, Transport};

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
