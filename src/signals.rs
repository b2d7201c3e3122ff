//! The process-wide signal hub: SIGINT, SIGTERM and SIGHUP shut down every
//! server subscribed through [`ServerHandle::shutdown_on_signal`](crate::ServerHandle::shutdown_on_signal).
//! The `ctrlc` crate allows one handler per process, so one hub serves all.
//! A signal the process was started with ignored (SIGHUP under `nohup`,
//! SIGINT for a shell's background job) stays ignored, as Python leaves it.

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
