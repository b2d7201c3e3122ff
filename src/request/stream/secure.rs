//! A stream request under TLS (feature `tls`): the handshake, as the last
//! part of the preamble (after any PROXY header), where the request runs and
//! never on the accept loop, bounded by the handshake timeout, parked with
//! no thread under the event strategy; and `close_notify` on a graceful
//! close.

use std::io;
use std::time::Instant;

use super::parking::ParkKind;
use super::parking::send_now;
use super::{Preamble, StreamRequest, TryRead};
use crate::deadline::Deadline;
use crate::request::tls::{Handshake, Session};
use crate::sys;
use crate::tls::TlsInfo;

impl StreamRequest {
    /// What the TLS handshake settled: SNI, ALPN, version, cipher suite,
    /// and the client's certificate chain under mutual TLS. `None` on a
    /// server without TLS.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_deref().and_then(Session::info)
    }

    /// Whether this connection's TLS handshake completed.
    pub(crate) fn tls_handshaken(&self) -> bool {
        self.tls().is_some()
    }

    /// Runs the TLS handshake, or its next part: `None` when it is done
    /// (or there is no TLS), else how the preamble stops. Without waiting
    /// under the event strategy (the connection parks until more comes, or
    /// the deadline); otherwise waiting at most until the deadline.
    pub(super) fn handshake(&mut self) -> Option<Preamble> {
        if let Some(policy) = self.tls_policy.take() {
            let timeout = policy.handshake_timeout;
            self.handshake_deadline = Some(Deadline::after(Instant::now(), timeout));
            self.handshake_timeout = timeout;
            let mut session = match Session::new(policy.config) {
                Ok(session) => session,
                Err(e) => return Some(Preamble::TlsFailed(e)),
            };
            // What came with the PROXY header is the handshake's.
            let fed = session.feed(self.rbuf.buffer());
            let n = self.rbuf.buffer().len();
            self.rbuf.consume(n);
            self.tls = Some(Box::new(session));
            if let Err(e) = fed {
                return Some(self.handshake_failed(e));
            }
        }
        let deadline = self.handshake_deadline?;
        loop {
            let session = self.tls.as_deref_mut()?;
            if session.info().is_some() {
                return None;
            }
            let step = session.handshake(&mut TryRead(self.conn.stream()));
            match step {
                Handshake::Done => {
                    // The server's last flight and its tickets go out now
                    // (as a write would send them).
                    if let Err(e) = self.send_handshake(deadline) {
                        return Some(self.handshake_failed(e));
                    }
                    return None;
                }
                Handshake::Closed(false) => {
                    // Connected and closed, nothing sent (a health check).
                    self.eof = true;
                    return Some(Preamble::Closed);
                }
                Handshake::Closed(true) => {
                    self.eof = true;
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed in the middle of its TLS handshake",
                    );
                    return Some(self.handshake_failed(e));
                }
                Handshake::Failed(e) => return Some(self.handshake_failed(e)),
                Handshake::WouldBlock => {}
            }
            // Our part of the handshake goes out before we wait for theirs.
            if let Err(e) = self.send_handshake(deadline) {
                return Some(self.handshake_failed(e));
            }
            if self.parking {
                if std::mem::take(&mut self.expired) || deadline.passed(Instant::now()) {
                    return Some(self.handshake_timed_out());
                }
                self.parked = true;
                self.park_kind = ParkKind::Preamble;
                return Some(Preamble::Pending);
            }
            let mut ready = [false];
            match sys::poll(&[self.fd()], &mut ready, deadline.left(Instant::now())) {
                Ok(0) => return Some(self.handshake_timed_out()),
                Ok(_) => {}
                Err(e) => return Some(self.handshake_failed(e)),
            }
        }
    }

    /// Sends what rustls has queued during the handshake, waiting (for a
    /// client that does not take the server's first flight) at most until
    /// the handshake's deadline; under the event strategy, the loop is told
    /// this thread waits.
    fn send_handshake(&mut self, deadline: Deadline) -> io::Result<()> {
        let mut out = Vec::new();
        if let Some(session) = self.tls.as_deref_mut() {
            session.pending(&mut out)?;
        }
        let mut rest = &out[..];
        loop {
            let (sent, result) = send_now(self.conn.stream(), rest);
            result?;
            rest = &rest[sent..];
            if rest.is_empty() {
                return Ok(());
            }
            self.hint_blocking();
            match self.conn.stream().wait(true, deadline.left(Instant::now())) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "took no part of the server's TLS handshake in time",
                    ));
                }
                other => other?,
            }
        }
    }

    fn handshake_timed_out(&mut self) -> Preamble {
        let timeout = self.handshake_timeout;
        Preamble::TlsFailed(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no whole TLS handshake within {timeout:?}"),
        ))
    }

    /// The handshake failed: the alert rustls queued goes out if the socket
    /// takes it now (never waited for), and the preamble fails.
    fn handshake_failed(&mut self, e: io::Error) -> Preamble {
        let mut out = Vec::new();
        if let Some(session) = self.tls.as_deref_mut()
            && session.pending(&mut out).is_ok()
        {
            let _ = send_now(self.conn.stream(), &out);
        }
        Preamble::TlsFailed(io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))
    }

    /// Whether a close now is graceful: the handshake was done and the
    /// connection was not closed for idleness (its socket is shut down).
    fn closes_gracefully(&self) -> bool {
        self.tls_handshaken() && !self.idle_closed
    }

    /// Under the event strategy, as the close begins: `close_notify` goes
    /// behind what the backlog holds (sent on the loop with it).
    pub(super) fn queue_close_notify(&mut self) {
        if !self.closes_gracefully() {
            return;
        }
        let mut out = Vec::new();
        let Some(session) = self.tls.as_deref_mut() else { return };
        if !session.close() || session.pending(&mut out).is_err() {
            return;
        }
        if self.backlog.is_empty() {
            let (sent, result) = send_now(self.conn.stream(), &out);
            if result.is_err() {
                return;
            }
            out.drain(..sent);
        }
        self.backlog.extend_from_slice(&out);
    }

    /// As the request is dropped (its answer already flushed): a graceful
    /// close sends `close_notify` (once: under the event strategy the close
    /// queued it already), or a failed one the alert rustls queued, if the
    /// socket takes it now; never waited for, and never ahead of a backlog.
    pub(super) fn tls_goodbye(&mut self) {
        if !self.backlog.is_empty() {
            return;
        }
        let graceful = self.closes_gracefully();
        let Some(session) = self.tls.as_deref_mut() else { return };
        if graceful {
            session.close();
        }
        let mut out = Vec::new();
        if session.pending(&mut out).is_ok() && !out.is_empty() {
            let _ = send_now(self.conn.stream(), &out);
        }
    }
}
