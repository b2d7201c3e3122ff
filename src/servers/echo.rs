//! Echo: every byte back, in order.

use std::io::{self, Read, Write};

use crate::{DatagramRequest, RequestHandler, StreamRequest};

/// Sends back what it receives. Over a stream, every byte, in order, for as
/// long as the client keeps the connection open — a client that writes
/// without reading is held back by TCP flow control (each chunk is written
/// back before the next is read), never buffered without bound. Over
/// datagrams, each datagram comes back as one datagram with the same bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

/// The chunk read and written back at a time.
const CHUNK: usize = 16 * 1024;

impl RequestHandler<StreamRequest> for Echo {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut buf = [0u8; CHUNK];
        loop {
            let n = match req.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A peer that resets mid-stream is the normal end of an echo.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            };
            req.write_all(&buf[..n])?;
        }
    }
}

impl RequestHandler<DatagramRequest> for Echo {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        req.reply(req.data())
    }
}
