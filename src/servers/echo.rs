//! Echo: every byte back, in order.

use std::io::{self, BufRead};

use crate::handler::RequestHandler;
use crate::request::{DatagramRequest, StreamRequest};

/// Sends back what it receives. Over a stream, every byte, in order, for as
/// long as the client keeps the connection open — a client that writes
/// without reading is held back by TCP flow control (each chunk is written
/// back before the next is read), never buffered without bound; keep
/// [`Builder::nodelay`](crate::Builder::nodelay) on (the default), or Nagle's
/// algorithm may hold the tail of a large echo back for a delayed ACK. Over
/// datagrams, each datagram comes back as one datagram with the same bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl RequestHandler<StreamRequest> for Echo {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        // Straight out of the request's read buffer: no second buffer, so an
        // idle connection's thread touches as little memory as it can.
        loop {
            // Between chunks an echo connection is idle: a shutdown closes it
            // at once rather than waiting out the grace period.
            match req.wait_for_data() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
            let n = match req.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(data) => data.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A peer that resets mid-stream is the normal end of an echo.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            };
            // Sent straight out of the read buffer; under the event strategy
            // what a slow reader does not take waits on the loop, and this
            // connection reads nothing more until it is taken.
            req.echo_buffered(n)?;
        }
    }
}

impl RequestHandler<DatagramRequest> for Echo {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        req.reply(req.data())
    }
}
