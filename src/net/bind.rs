//! Creating, configuring and binding a server's socket; the Unix socket
//! file it may leave behind.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::context;

/// Socket-level settings applied at bind time.
#[derive(Clone, Debug)]
pub(crate) struct BindOptions {
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) backlog: i32,
    pub(crate) activate: bool,
}

/// Creates, configures and binds an IP socket on the first of `addrs` that
/// works; listens too for a stream socket when `activate` is set.
pub(crate) fn bind_inet<A: ToSocketAddrs + fmt::Debug>(
    addrs: A,
    kind: &str,
    ty: Type,
    opts: &BindOptions,
) -> io::Result<Socket> {
    let resolved: Vec<SocketAddr> = addrs
        .to_socket_addrs()
        .map_err(|e| context(e, format_args!("cannot resolve {kind} address {addrs:?}")))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{kind} address {addrs:?} resolves to nothing"));
    for addr in resolved {
        match bind_one(addr, ty, opts) {
            Ok(s) => return Ok(s),
            Err(e) => last = context(e, format_args!("cannot bind {kind} {addr}")),
        }
    }
    Err(last)
}

fn bind_one(addr: SocketAddr, ty: Type, opts: &BindOptions) -> io::Result<Socket> {
    let proto = if ty == Type::STREAM { Protocol::TCP } else { Protocol::UDP };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    socket.set_reuse_address(opts.reuse_address)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    if ty == Type::STREAM {
        socket.set_nonblocking(true)?;
        if opts.activate {
            socket.listen(opts.backlog)?;
        }
    }
    Ok(socket)
}

/// A socket file this server created, removed when the server closes if it
/// is still the same file (another server may have replaced it since).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile { path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() })
    }
}

impl SocketFile {
    /// Leaves the file in place (another process serves it now).
    pub(crate) fn keep(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            log::warn!("cannot remove socket file {}: {e}", self.path.display());
        }
    }
}

/// Removes a socket file that no server is listening on. Refuses to touch a
/// path that is not a socket, or a socket someone is still serving.
fn remove_stale(path: &Path, ty: Type) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the path exists and is not a socket"));
    }
    let probe = Socket::new(Domain::UNIX, ty, None)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(io::Error::new(io::ErrorKind::AddrInUse, "another server is listening on it")),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// Binds a Unix socket at `path`, removing a stale socket file first.
pub(crate) fn bind_unix(path: &Path, kind: &str, ty: Type, opts: &BindOptions) -> io::Result<(Socket, SocketFile)> {
    // (`reuse_address` and `reuse_port` are settings of IP servers only:
    // the builder has no such method for a Unix one.)
    let what = || format!("cannot bind {kind} {}", path.display());
    let bind = || -> io::Result<(Socket, SocketFile)> {
        remove_stale(path, ty)?;
        let socket = Socket::new(Domain::UNIX, ty, None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        let file = SocketFile::new(path)?;
        if ty == Type::STREAM {
            socket.set_nonblocking(true)?;
            if opts.activate {
                socket.listen(opts.backlog)?;
            }
        }
        Ok((socket, file))
    };
    bind().map_err(|e| context(e, what()))
}
