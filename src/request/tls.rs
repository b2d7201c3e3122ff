//! A connection's TLS session, as the stream request drives it (feature
//! `tls`; without it, an uninhabited stand-in, so that the request's code
//! has one shape and the plaintext path compiles to what it was).
//!
//! The session never touches the socket itself: it reads TLS records from
//! whatever `Read` the request gives it (the socket without waiting, or
//! with its timeouts) and hands its records out as bytes, which the request
//! sends on its plaintext path — the write buffer rule and, under `Event`,
//! the backlog apply to them unchanged.

#[cfg(feature = "tls")]
pub(crate) use self::on::{Handshake, Session};

#[cfg(not(feature = "tls"))]
pub(crate) use self::off::Session;

#[cfg(feature = "tls")]
mod on {
    use std::io::{self, Read};
    use std::sync::Arc;

    use crate::tls::TlsInfo;
    use rustls::{ServerConfig, ServerConnection};

    /// How far a handshake step came.
    #[derive(Debug)]
    pub(crate) enum Handshake {
        /// Done: the info is set; records to send may be pending.
        Done,
        /// The socket has nothing more now.
        WouldBlock,
        /// The peer closed; `true` if it had sent anything.
        Closed(bool),
        /// The handshake failed (an alert to send may be pending).
        Failed(io::Error),
    }

    #[derive(Debug)]
    pub(crate) struct Session {
        conn: ServerConnection,
        info: Option<TlsInfo>,
        /// The last read from the socket found nothing more (`WouldBlock`),
        /// or its end: what rustls holds is all there is.
        drained: bool,
        /// Bytes came from the peer during the handshake.
        got_bytes: bool,
        /// `close_notify` is queued (it is sent once).
        closing: bool,
    }

    fn tls_error(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
    }

    impl Session {
        pub(crate) fn new(config: Arc<ServerConfig>) -> io::Result<Session> {
            let conn = ServerConnection::new(config).map_err(tls_error)?;
            Ok(Session { conn, info: None, drained: false, got_bytes: false, closing: false })
        }

        /// What the handshake settled, once it is done.
        pub(crate) fn info(&self) -> Option<&TlsInfo> {
            self.info.as_ref()
        }

        /// Takes bytes read before the session began (after a PROXY header).
        pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
            while !bytes.is_empty() {
                self.got_bytes = true;
                if self.conn.read_tls(&mut bytes)? == 0 {
                    break;
                }
                self.conn.process_new_packets().map_err(tls_error)?;
            }
            Ok(())
        }

        /// Reads handshake records from `src` (which does not wait) until
        /// the handshake is done, the socket is empty, or it fails.
        pub(crate) fn handshake(&mut self, src: &mut dyn Read) -> Handshake {
            loop {
                if !self.conn.is_handshaking() {
                    self.info = Some(TlsInfo::of(&self.conn));
                    return Handshake::Done;
                }
                match self.conn.read_tls(src) {
                    Ok(0) => return Handshake::Closed(self.got_bytes),
                    Ok(_) => {
                        self.got_bytes = true;
                        if let Err(e) = self.conn.process_new_packets() {
                            return Handshake::Failed(tls_error(e));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Handshake::WouldBlock,
                    Err(e) => return Handshake::Failed(e),
                }
            }
        }

        /// Reads plaintext into `out`: what rustls holds decrypted first,
        /// else TLS records from `src` (as it reads: without waiting, or
        /// with the socket's timeouts), until some plaintext comes, the
        /// stream ends (0: `close_notify`, or the peer closed without one)
        /// or `src` fails (`WouldBlock`: nothing more now).
        pub(crate) fn read(&mut self, src: &mut dyn Read, out: &mut [u8]) -> io::Result<usize> {
            loop {
                match self.conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer closed without `close_notify`: its end.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                self.drained = false;
                match self.conn.read_tls(src) {
                    Ok(0) => self.drained = true,
                    Ok(_) => {
                        self.conn.process_new_packets().map_err(tls_error)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.drained = e.kind() == io::ErrorKind::WouldBlock;
                        return Err(e);
                    }
                }
            }
        }

        /// Whether a read would return at once without the socket: rustls
        /// holds plaintext, or the peer's end (or an error) waits there.
        pub(crate) fn readable(&mut self) -> bool {
            match self.conn.process_new_packets() {
                Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
                Err(_) => true,
            }
        }

        /// Whether all the peer sent is decrypted and handed over: nothing
        /// is held, and the last read found the socket empty. Only then may
        /// a connection park with nothing read (edge-triggered epoll reports
        /// new bytes, never old ones).
        pub(crate) fn exhausted(&mut self) -> bool {
            self.drained && !self.readable()
        }

        /// Encrypts `plain` and appends the records (after any rustls had
        /// queued) to `out`.
        pub(crate) fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
            use std::io::Write;
            let mut rest = plain;
            loop {
                let n = self.conn.writer().write(rest)?;
                rest = &rest[n..];
                self.pending(out)?;
                if rest.is_empty() {
                    return Ok(());
                }
            }
        }

        /// Appends the records rustls has queued (handshake messages,
        /// tickets, an alert) to `out`.
        pub(crate) fn pending(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
            while self.conn.wants_write() {
                self.conn.write_tls(out)?;
            }
            Ok(())
        }

        /// Whether rustls has records queued to send.
        pub(crate) fn wants_write(&self) -> bool {
            self.conn.wants_write()
        }

        /// Queues `close_notify` (once); `false` if it was already.
        pub(crate) fn close(&mut self) -> bool {
            if std::mem::replace(&mut self.closing, true) {
                return false;
            }
            self.conn.send_close_notify();
            true
        }
    }
}

#[cfg(not(feature = "tls"))]
mod off {
    use std::io::{self, Read};

    /// No TLS: never made, so every branch on it is dead code.
    #[derive(Debug)]
    pub(crate) enum Session {}

    impl Session {
        pub(crate) fn read(&mut self, _: &mut dyn Read, _: &mut [u8]) -> io::Result<usize> {
            match *self {}
        }
        pub(crate) fn readable(&mut self) -> bool {
            match *self {}
        }
        pub(crate) fn exhausted(&mut self) -> bool {
            match *self {}
        }
        pub(crate) fn seal(&mut self, _: &[u8], _: &mut Vec<u8>) -> io::Result<()> {
            match *self {}
        }
        pub(crate) fn wants_write(&self) -> bool {
            match *self {}
        }
    }
}
