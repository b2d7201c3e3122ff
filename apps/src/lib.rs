//! The tutorial applications on `socketserver`, hardened against hostile
//! peers: what the short programs in `examples/` teach, grown into
//! programs one may run. Each is a module with its server, its client and
//! its argument parsing, and a binary in `src/bin` that only calls
//! [`args::main`]:
//!
//! * [`remote_command`]: runs allowed programs for clients, output framed
//!   with a length prefix (`cargo run -p socketserver-apps --example
//!   remote_command -- server --allow ls`);
//! * [`file_transfer`]: uploads and downloads with a header, progress and
//!   SHA-256 verification (`--example file_transfer -- server --dir DIR`);
//! * [`chat`]: a UDP relay between named peers and a TCP chat room
//!   (`--example chat -- udp-server` or `tcp-server`).
//!
//! [`args`] is what their command lines share: the address, `--strategy`
//! as [`socketserver::AnyStrategy`] reads it, and `main`'s exit codes.

pub mod args;
pub mod chat;
pub mod file_transfer;
pub mod remote_command;
