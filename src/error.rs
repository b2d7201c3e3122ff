//! Errors that say what the server was doing, and keep what went wrong.

use std::error::Error;
use std::fmt;
use std::io;

/// The inner error of an `io::Error` this crate returns with context: what
/// the server was doing ("cannot bind tcp 127.0.0.1:80") and the error that
/// stopped it, kept whole — its kind, its OS error number, its own source.
///
/// The outer `io::Error` has the cause's [`kind`](io::Error::kind), prints
/// as `context: cause`, and gives this value through
/// [`get_ref`](io::Error::get_ref); [`Error::source`] is the cause.
///
/// ```
/// use socketserver::{ContextError, TcpServer};
///
/// let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let addr = taken.local_addr()?;
/// let err = TcpServer::bind(addr, |_: &mut socketserver::StreamRequest| Ok(())).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
/// let ctx = err.get_ref().and_then(|e| e.downcast_ref::<ContextError>()).unwrap();
/// assert_eq!(ctx.cause().raw_os_error(), Some(libc::EADDRINUSE));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct ContextError {
    context: String,
    cause: io::Error,
}

impl ContextError {
    /// What the server was doing.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The error that stopped it.
    pub fn cause(&self) -> &io::Error {
        &self.cause
    }
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.cause)
    }
}

impl Error for ContextError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.cause)
    }
}

/// Wraps `cause` with `context`, keeping its kind and the cause itself.
pub(crate) fn context(cause: io::Error, context: impl fmt::Display) -> io::Error {
    io::Error::new(cause.kind(), ContextError { context: context.to_string(), cause })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind_the_os_error_and_the_source() {
        let e = context(io::Error::from_raw_os_error(libc::EMFILE), "cannot accept");
        assert_eq!(e.kind(), io::Error::from_raw_os_error(libc::EMFILE).kind());
        assert!(e.to_string().starts_with("cannot accept: "), "{e}");
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<ContextError>()).unwrap();
        assert_eq!(inner.cause().raw_os_error(), Some(libc::EMFILE));
        let source = e.get_ref().and_then(|e| e.source()).and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(source.and_then(io::Error::raw_os_error), Some(libc::EMFILE));
    }
}
