//! The process-wide signal hub: SIGINT, SIGTERM and SIGHUP shut down every
//! server subscribed through [`ServerHandle::shutdown_on_signal`](crate::ServerHandle::shutdown_on_signal).
//! The `ctrlc` crate allows one handler per process, so one hub serves all.
//! A signal the process was started with ignored (SIGHUP under `nohup`,
//! SIGINT for a shell's background job) stays ignored, as Python leaves it.
//! [`on_hangup`] gives SIGHUP a job of its own (a restart's hand-off): it
//! then comes through a pipe of ours, not through `ctrlc`, which cannot say
//! which signal it caught.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::shutdown::Shared;

/// The servers signals shut down, and how many signals came.
struct Hub {
    servers: Vec<Weak<Shared>>,
    signals: usize,
}

static HUB: Mutex<Hub> = Mutex::new(Hub { servers: Vec::new(), signals: 0 });

/// Subscribes `shared` to the hub and installs the handler on first use. A
/// server subscribed after a signal came is shut down at once.
pub(crate) fn subscribe(shared: &Arc<Shared>) -> io::Result<()> {
    // Registered before the handler is installed, so that no signal can find
    // the hub without this server.
    let signalled = {
        let mut hub = HUB.lock();
        // Servers come and go: forget the dropped ones as new ones come.
        hub.servers.retain(|w| w.strong_count() > 0);
        let me = Arc::downgrade(shared);
        if !hub.servers.iter().any(|w| w.ptr_eq(&me)) {
            hub.servers.push(me);
        }
        hub.signals > 0
    };
    if signalled {
        shared.request_stop(shared.grace);
    }
    install_signal_handler()
}

fn on_signal() {
    // Nothing is done under the hub's lock but taking the list: stopping a
    // server or logging may wait, and a signal must never wait on either.
    let (servers, second) = {
        let mut hub = HUB.lock();
        hub.signals += 1;
        hub.servers.retain(|w| w.strong_count() > 0);
        (hub.servers.iter().filter_map(Weak::upgrade).collect::<Vec<_>>(), hub.signals > 1)
    };
    for shared in &servers {
        // A second signal during a drain ends the grace period.
        let grace = if shared.stopping() { Duration::ZERO } else { shared.grace };
        shared.request_stop(grace);
    }
    let what = if second { "closing everything now" } else { "shutting down" };
    log::info!("signal received: {what} ({} server(s))", servers.len());
}

type HangupFn = dyn Fn() + Send + Sync;

/// What SIGHUP does instead of shutting down, once [`on_hangup`] set it.
static HANGUP: Mutex<Option<Arc<HangupFn>>> = Mutex::new(None);

/// Has SIGHUP call `action` — on a thread of the crate's, where it may
/// block, log and start processes — instead of shutting the servers down:
/// the conventional "reload" or "restart" signal, e.g. to start a successor
/// and [hand the sockets over](crate::activation::Successor). Process-wide;
/// a later call replaces the action. SIGINT and SIGTERM still shut down
/// through [`ServerHandle::shutdown_on_signal`](crate::ServerHandle::shutdown_on_signal).
/// SIGHUP is taken even if the process started with it ignored (`nohup`):
/// asking for it here is explicit.
///
/// # Errors
/// When the handler cannot be installed (see `shutdown_on_signal`) or the
/// thread cannot start.
pub fn on_hangup(action: impl Fn() + Send + Sync + 'static) -> io::Result<()> {
    // `ctrlc` first: it takes SIGHUP too, and ours must come after.
    install_signal_handler()?;
    *HANGUP.lock() = Some(Arc::new(action));
    static ROUTED: Mutex<bool> = Mutex::new(false);
    let mut routed = ROUTED.lock();
    if *routed {
        return Ok(());
    }
    let pipe = crate::sys::handoff::route_hangup()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot install the SIGHUP handler: {e}")))?;
    let mut pipe = std::fs::File::from(pipe);
    std::thread::Builder::new()
        .name("socketserver-sighup".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buf) {
                let _ = n; // several signals may come as one wake-up
                let action = HANGUP.lock().clone();
                if let Some(action) = action {
                    log::info!("signal received (SIGHUP)");
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| action())).is_err() {
                        log::error!("the SIGHUP action panicked");
                    }
                }
            }
        })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the SIGHUP thread: {e}")))?;
    *routed = true;
    Ok(())
}

/// The signals the hub takes (those `ctrlc`'s "termination" feature installs).
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn install_signal_handler() -> io::Result<()> {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock();
    if !*installed {
        let ignored: Vec<_> = SIGNALS.into_iter().filter(|&sig| crate::sys::signal_ignored(sig)).collect();
        ctrlc::set_handler(on_signal)
            .map_err(|e| io::Error::other(format!("cannot install the SIGINT/SIGTERM handler: {e}")))?;
        // ctrlc takes all three: give back what was ignored (`nohup`).
        for sig in ignored {
            crate::sys::ignore_signal(sig);
        }
        *installed = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribing twice counts once, and servers that are gone are
    /// forgotten as others subscribe: the hub does not grow with churn.
    #[test]
    fn the_signal_hub_forgets_dropped_servers_and_counts_each_once() {
        for _ in 0..20 {
            let server = crate::TcpServer::bind("127.0.0.1:0", |_: &mut crate::StreamRequest| Ok(())).unwrap();
            let handle = server.handle();
            handle.shutdown_on_signal().unwrap();
            handle.shutdown_on_signal().unwrap();
            assert_eq!(HUB.lock().servers.len(), 1);
        }
    }
}
