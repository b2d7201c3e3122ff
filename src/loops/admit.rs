//! Taking one connection from a listener and making it a request: counted,
//! checked (`verify_request`, or a trusted proxy), configured. Shared by the
//! accept loop ([`super::accept`]) and the event strategy
//! ([`super::event`]), which need nothing else of each other.

use std::io;
use std::net::Shutdown;

use super::Core;
use crate::error::context;
use crate::net::{Listener, Stream};
use crate::request::StreamRequest;
use crate::service::Service;
use crate::stats::Counters;

/// One accepted connection. (Moved at once, never stored: its size is fine.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Accepted {
    Request(StreamRequest),
    /// Refused by `verify_request`.
    Refused,
    /// It could not be configured (reported).
    Dropped,
}

/// Accepts one connection: counted, checked (`verify_request`), configured,
/// made a request.
pub(crate) fn accept_request(
    listener: &Listener,
    core: &Core,
    service: &Service<StreamRequest>,
) -> io::Result<Accepted> {
    let (stream, peer) = listener.accept()?;
    let shared = &core.shared;
    Counters::bump(&shared.stats.accepted);
    if let Some(proxy) = &core.opts.proxy {
        // Who the client is comes with the header, read by the request
        // before `verify_request`; here, only whether this peer may say.
        if !(proxy.trusted)(&peer) {
            Counters::bump(&shared.stats.proxy_refused);
            log::debug!("{}: refused {peer}: not a trusted proxy", shared.name);
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(Accepted::Refused);
        }
    } else if !service.verify(&peer) {
        Counters::bump(&shared.stats.refused);
        log::debug!("{}: refused {peer}", shared.name);
        let _ = stream.shutdown(Shutdown::Both);
        return Ok(Accepted::Refused);
    }
    if let Err(e) = configure(&stream, core) {
        service.handle_error(None, &peer, &context(e, "cannot configure the connection"));
        return Ok(Accepted::Dropped);
    }
    let request = StreamRequest::new(stream, peer, core.handle(), core.opts.stream_policy(), shared.acquire());
    if shared.stopping() {
        // Taken from the backlog during a drain: the deadline applies.
        shared.ensure_watchdog();
    }
    Ok(Accepted::Request(request))
}

/// Applies the server's per-connection socket options.
fn configure(stream: &Stream, core: &Core) -> io::Result<()> {
    let o = &core.opts;
    if o.nodelay {
        stream.set_nodelay(true)?;
    }
    let timeouts = o.stream_policy().timeouts;
    if let Some(receive) = timeouts.receive() {
        stream.set_read_timeout(Some(receive))?;
    }
    if let Some(send) = timeouts.send() {
        stream.set_write_timeout(Some(send))?;
    }
    Ok(())
}
