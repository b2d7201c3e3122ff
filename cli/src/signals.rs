//! The servers' own signals, beside the library's hub (SIGINT, SIGTERM and
//! SIGHUP shut every server down, see `ServerHandle::shutdown_on_signal`):
//!
//! * SIGQUIT: the same graceful shutdown as SIGTERM (as nginx has it), not
//!   the default core dump that left Unix socket files behind; a second
//!   one, or one during a drain, closes everything at once.
//! * SIGUSR1: one log line of each server's counters; serving goes on.
//! * SIGUSR2: reserved; ignored (logged once, at debug).
//!
//! The signals are taken by `signal-hook` and handled on a thread of their
//! own, where shutting down and logging are allowed: neither waits.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGQUIT, SIGUSR1, SIGUSR2};
use signal_hook::iterator::{Handle, Signals};
use socketserver::{ServerHandle, Stats};

/// The handlers, installed until this is dropped.
pub struct Installed {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

/// Installs the handlers for `servers` (label, handle).
pub fn install(servers: Vec<(String, ServerHandle)>) -> io::Result<Installed> {
    let mut signals = Signals::new([SIGQUIT, SIGUSR1, SIGUSR2])
        .map_err(|e| io::Error::new(e.kind(), format!("cannot install the SIGQUIT/SIGUSR1/SIGUSR2 handlers: {e}")))?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut usr2_seen = false;
            for signal in signals.forever() {
                match signal {
                    SIGQUIT => quit(&servers),
                    SIGUSR1 => {
                        for (label, server) in &servers {
                            log::info!("stats {label}: {}", summary(&server.stats()));
                        }
                    }
                    SIGUSR2 if !usr2_seen => {
                        usr2_seen = true;
                        log::debug!("SIGUSR2 ignored: reserved for later (further ones are not logged)");
                    }
                    _ => {}
                }
            }
        })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the signal thread: {e}")))?;
    Ok(Installed { handle, thread: Some(thread) })
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// As the library's hub does for SIGTERM: each server stops with its grace
/// period; one already stopping closes everything at once.
fn quit(servers: &[(String, ServerHandle)]) {
    let mut now = false;
    for (_, server) in servers {
        if server.is_shutting_down() {
            server.shutdown_with_grace(Duration::ZERO);
            now = true;
        } else {
            server.shutdown();
        }
    }
    let what = if now { "closing everything now" } else { "shutting down" };
    log::info!("signal received (SIGQUIT): {what} ({} server(s))", servers.len());
}

/// One line of a server's counters.
fn summary(s: &Stats) -> String {
    format!(
        "accepted {}, active {}, completed {}, rejected {}, refused {}, handler errors {}, panics {}, \
         accept errors {}, oversized {}, replies dropped {}, datagram batches {}, idle closed {}, queued {}, \
         parked {}, workers {} busy of {}",
        s.accepted,
        s.active,
        s.completed,
        s.rejected,
        s.refused,
        s.handler_errors,
        s.panics,
        s.accept_errors,
        s.oversized,
        s.replies_dropped,
        s.datagram_batches,
        s.idle_closed,
        s.queue_depth,
        s.parked,
        s.workers_busy,
        s.workers_total
    )
}
