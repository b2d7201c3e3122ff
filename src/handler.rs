//! What a user writes: [`RequestHandler`]. Depends on nothing else in the
//! crate: `R` is whatever request the server kind hands out.

use std::io;

/// The code that answers requests: Python's `BaseRequestHandler`.
///
/// `R` is [`StreamRequest`](crate::StreamRequest) for TCP and Unix-stream servers and
/// [`DatagramRequest`](crate::DatagramRequest) for UDP and Unix-datagram servers; one type may
/// implement both. One handler value serves every request on every thread
/// (`&self`), so per-request state lives in locals of `handle`, and shared
/// state needs its own synchronisation.
///
/// For each request the server calls `setup`, then `handle`, then `finish`.
/// `finish` runs even when `handle` fails or panics; it does not run when
/// `setup` fails. An error or a panic from any of them is reported through
/// the server's `handle_error` hook and counted in
/// [`Stats`](crate::Stats); the server keeps serving.
///
/// Closures `Fn(&mut R) -> io::Result<()>` are handlers too (they only
/// `handle`).
///
/// ```
/// use socketserver::{RequestHandler, StreamRequest};
/// use std::io::{self, Write};
///
/// /// Answers each line with its length.
/// struct LineLength;
///
/// impl RequestHandler<StreamRequest> for LineLength {
///     fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
///         while let Some(line) = req.next_line()? {
///             writeln!(req, "{}", line.len())?;
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait RequestHandler<R>: Send + Sync + 'static {
    /// Runs before `handle`; an error here skips `handle` and `finish`.
    ///
    /// # Errors
    /// Whatever the implementation returns; it is reported, not fatal.
    fn setup(&self, req: &mut R) -> io::Result<()> {
        let _ = req;
        Ok(())
    }

    /// Serves the request.
    ///
    /// # Errors
    /// Whatever the implementation returns; it is reported, not fatal.
    fn handle(&self, req: &mut R) -> io::Result<()>;

    /// Runs after `handle`, even when `handle` failed.
    ///
    /// # Errors
    /// Whatever the implementation returns; it is reported, not fatal.
    fn finish(&self, req: &mut R) -> io::Result<()> {
        let _ = req;
        Ok(())
    }
}

impl<R, F> RequestHandler<R> for F
where
    F: Fn(&mut R) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut R) -> io::Result<()> {
        self(req)
    }
}
