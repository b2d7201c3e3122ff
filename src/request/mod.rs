//! What a handler is given: a [`StreamRequest`] per connection, split by
//! job — the read buffer ([`buffer`]), the timeout arithmetic
//! ([`timeouts`], a pure type), the connection's lifecycle ([`conn`]) and
//! the API a handler calls ([`stream`]) — or a [`DatagramRequest`] per
//! datagram.

pub(crate) mod buffer;
pub(crate) mod conn;
mod datagram;
mod stream;
pub(crate) mod timeouts;
mod tls;

use std::io;

pub use datagram::DatagramRequest;
pub(crate) use datagram::{Outbox, REPLY_HOLD, SLOW_HANDLER};
pub(crate) use stream::{BlockingHint, CloseStep, ParkKind, Preamble, StreamPolicy};
pub use stream::{MAX_LINE, StreamRequest};

use crate::net::Address;
use crate::shutdown::Slot;

/// What running a request needs of it, whatever its kind. Sealed: only the
/// two request types of this crate implement it (a public trait in a private
/// module, reachable through `Transport::Request`, never nameable).
#[allow(private_interfaces, reason = "sealed trait: its methods take crate-private types")]
pub trait Request: Send + Sized + 'static {
    /// Who sent it.
    fn peer(&self) -> &Address;
    /// Before anything else: what comes ahead of the request's own bytes
    /// (a PROXY header), read.
    fn preamble(&mut self) -> Preamble {
        Preamble::None
    }
    /// A handler is about to run.
    fn begin(&mut self) {}
    /// Whether a TLS handshake completed on it (counted once it is admitted or refused).
    fn tls_handshaken(&self) -> bool {
        false
    }
    /// What its TLS handshake settled, for `verify_tls`.
    #[cfg(feature = "tls")]
    fn tls_info(&self) -> Option<&crate::tls::TlsInfo> {
        None
    }
    /// Whether `err`, which ended the handler, is the connection's idle
    /// timeout (its normal end, counted in `idle_closed`), not the
    /// handler's failure.
    fn closed_for_idleness(&mut self, err: &io::Error) -> bool {
        let _ = err;
        false
    }
    /// After `handle` returned under the event strategy: whether it did so
    /// because the connection parked between requests (then it is called
    /// again when bytes arrive, and `finish` waits).
    fn parked(&mut self) -> bool {
        false
    }
    /// After `finish`: send what is still buffered.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Prepares the copy a forked child runs: it must not touch the
    /// parent's tracker or counters when it drops the request.
    fn detach_for_child(&mut self);
    /// Drops the parent's copy of a request handed to a child, keeping the
    /// slot that counts it in flight until the child is reaped.
    fn release_to_child(self) -> Option<Slot>;
}

#[allow(private_interfaces, reason = "sealed trait")]
impl Request for StreamRequest {
    fn peer(&self) -> &Address {
        self.peer_addr()
    }
    fn preamble(&mut self) -> Preamble {
        self.read_preamble()
    }
    fn begin(&mut self) {
        self.connection().begin_service();
    }
    #[cfg(feature = "tls")]
    fn tls_handshaken(&self) -> bool {
        StreamRequest::tls_handshaken(self)
    }
    #[cfg(feature = "tls")]
    fn tls_info(&self) -> Option<&crate::tls::TlsInfo> {
        self.tls()
    }
    fn closed_for_idleness(&mut self, err: &io::Error) -> bool {
        StreamRequest::closed_for_idleness(self, err)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
    fn parked(&mut self) -> bool {
        self.take_parked()
    }
    fn detach_for_child(&mut self) {
        self.connection().detach_for_child();
    }
    fn release_to_child(mut self) -> Option<Slot> {
        self.connection().release_to_child()
    }
}

#[allow(private_interfaces, reason = "sealed trait")]
impl Request for DatagramRequest {
    fn peer(&self) -> &Address {
        self.peer_addr()
    }
    fn detach_for_child(&mut self) {
        std::mem::forget(self.slot.take());
    }
    fn release_to_child(mut self) -> Option<Slot> {
        self.slot.take()
    }
}
