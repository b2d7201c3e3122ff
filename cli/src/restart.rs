//! Restarts that drop nothing: on SIGHUP the command starts its successor —
//! the same program with the same arguments — handing it every listening
//! socket by systemd's socket-activation protocol, waits until it says it
//! serves, and only then stops accepting and drains by the shutdown rules.
//! Until then nothing changes here: a successor that fails to start, or
//! does not say it serves in time, is stopped, and this process serves on.
//!
//! Under systemd (`NOTIFY_SOCKET`) the service's main pid moves to the
//! successor (`MAINPID=`), and a process that begins to drain for a
//! shutdown (not a hand-over) says `STOPPING=1`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketserver::ServerHandle;
use socketserver::activation::{self, Successor};

/// The names of the sockets handed to a successor whose Unix socket files
/// it answers for (`:`-separated, as `LISTEN_FDNAMES`): bound by this
/// process or passed on to it so. Not systemd's, which are systemd's.
const SOCKET_FILES: &str = "SOCKETSERVER_SOCKET_FILES";

/// Whether the socket handed over as `name` came with its file (see
/// [`SOCKET_FILES`]).
pub fn handed_with_file(name: &str) -> bool {
    std::env::var(SOCKET_FILES).is_ok_and(|names| names.split(':').any(|n| n == name))
}

/// A Unix socket file this process answers for: removed when serving ends
/// without a hand-over, if the path still names it (not a file bound there
/// since by another process).
#[derive(Clone, Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    /// The file of a Unix server at `address`, as it is now.
    pub fn of(address: &socketserver::Address) -> Option<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let path = address.as_path()?;
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(SocketFile { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) })
    }

    pub fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        let same = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if same && let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("cannot remove the socket file {}: {e}", self.path.display());
        }
    }
}

/// Installs the SIGHUP hand-off for `servers`, whose sockets (and their
/// names for the successor) are `sockets`; the successor answers for the
/// socket files of those named in `with_files`.
pub fn on_hangup(
    sockets: Vec<(OwnedFd, String)>,
    with_files: Vec<String>,
    servers: Vec<ServerHandle>,
    timeout: Duration,
) -> io::Result<()> {
    // SIGHUPs come one at a time (on the library's thread): one that comes
    // during a restart waits for it, then finds it done.
    let handed = AtomicBool::new(false);
    socketserver::on_hangup(move || {
        if handed.load(SeqCst) || servers.iter().any(ServerHandle::is_shutting_down) {
            log::info!("SIGHUP: handed over or shutting down already; ignored");
            return;
        }
        match hand_over(&sockets, &with_files, timeout) {
            Ok(pid) => {
                handed.store(true, SeqCst);
                log::info!("restart: handed over to pid {pid}; draining");
                if let Err(e) = activation::notify(&format!("MAINPID={pid}")) {
                    log::warn!("restart: cannot tell the service manager the new main pid: {e}");
                }
                for server in &servers {
                    server.hand_over();
                }
            }
            Err(e) => log::error!("restart failed, still serving: {e}"),
        }
    })
}

/// Starts the successor and waits until it serves; its pid.
fn hand_over(sockets: &[(OwnedFd, String)], with_files: &[String], timeout: Duration) -> io::Result<u32> {
    let program = program()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let passed: Vec<_> = sockets.iter().map(|(fd, name)| (fd.as_fd(), name.as_str())).collect();
    log::info!("restart: starting {} with {} socket(s)", program.display(), passed.len());
    let files = with_files.join(":");
    let mut successor = Successor::spawn_with_env(program.as_os_str(), &args, &passed, &[(SOCKET_FILES, &files)])?;
    match successor.wait_ready(timeout) {
        Ok(()) => Ok(successor.release()),
        Err(e) => {
            successor.abandon();
            Err(e)
        }
    }
}

/// This program, as it is on disk now: a binary replaced by an upgrade is
/// the new one (`/proc/self/exe` of a replaced binary ends in ` (deleted)`).
fn program() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.as_os_str().as_bytes();
    Ok(match text.strip_suffix(b" (deleted)") {
        Some(stem) => PathBuf::from(std::ffi::OsStr::from_bytes(stem)),
        None => exe,
    })
}

/// Says `STOPPING=1` to the service manager when a shutdown (not a
/// hand-over) begins: on a thread that waits for it, or, if that thread has
/// not said it by the time serving ended (a shutdown with nothing to drain
/// is over before it runs), by [`Stopping::finish`]. Said once either way.
pub fn report_stopping(servers: &[ServerHandle]) -> Option<Stopping> {
    let stopping = Stopping { first: servers.first()?.clone(), said: Arc::new(Mutex::new(false)) };
    std::env::var_os("NOTIFY_SOCKET")?;
    let waiter = Stopping { first: stopping.first.clone(), said: Arc::clone(&stopping.said) };
    let _ = std::thread::Builder::new().name("stopping".into()).spawn(move || {
        waiter.first.wait_shutdown_requested(None);
        waiter.finish();
    });
    Some(stopping)
}

/// `STOPPING=1`, to be said once.
pub struct Stopping {
    first: ServerHandle,
    /// Held while it is being said: the process does not exit halfway.
    said: Arc<Mutex<bool>>,
}

impl Stopping {
    /// Says `STOPPING=1` unless it was said or the servers were handed over.
    pub fn finish(&self) {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        if self.first.is_handed_over() || *said {
            return;
        }
        *said = true;
        if let Err(e) = activation::notify("STOPPING=1") {
            log::warn!("cannot report stopping: {e}");
        }
    }
}
