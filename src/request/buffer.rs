//! A connection's read buffer: it grows as the connection needs it.

use std::io::{self, Read};

/// A read buffer that starts at 2 KiB and doubles, up to its capacity, each
/// time a read fills it. `std::io::BufReader` zero-fills its whole buffer
/// before the first read (stable Rust cannot hand a socket uninitialised
/// memory), so every idle connection would cost its full buffer in resident
/// memory; here it costs what it has used.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    capacity: usize,
    /// The size it had grown to when it was last released: a connection
    /// that sends 16 KiB requests gets 16 KiB again at once, not 2, 4, 8.
    hint: usize,
}

impl ReadBuffer {
    pub(crate) const FIRST: usize = 2048;

    pub(crate) fn new(capacity: usize) -> ReadBuffer {
        ReadBuffer { buf: Vec::new(), pos: 0, filled: 0, capacity: capacity.max(1), hint: 0 }
    }

    /// The bytes read and not yet consumed.
    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.filled
    }

    /// The most it holds when filled a read at a time.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The last fill took all the room there was: the source may have more.
    pub(crate) fn is_full(&self) -> bool {
        self.filled == self.buf.len()
    }

    pub(crate) fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }

    /// Gives the memory back when nothing is buffered (a connection parked
    /// between requests holds no buffer); the next fill takes 2 KiB again.
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.hint = self.hint.max(self.buf.len());
            self.buf = Vec::new();
            self.pos = 0;
            self.filled = 0;
        }
    }

    /// When empty, reads once from `src` (growing first if the last read
    /// filled the buffer); returns what is buffered, empty at end of stream.
    pub(crate) fn fill_from(&mut self, mut src: impl Read) -> io::Result<&[u8]> {
        if self.is_empty() {
            let size = self.buf.len();
            if size == 0 {
                self.buf.resize(Self::FIRST.max(self.hint).min(self.capacity), 0);
            } else if self.filled == size && size < self.capacity {
                // The last read filled the buffer: the peer sends big chunks.
                self.buf.resize((size * 2).min(self.capacity), 0);
            }
            let n = src.read(&mut self.buf)?;
            self.pos = 0;
            self.filled = n;
        }
        Ok(self.buffer())
    }

    /// Reads once more from `src`, after what is buffered, holding at most
    /// `limit` bytes in all; returns how many came, 0 at end of stream. For a
    /// header read before the connection's own bytes.
    ///
    /// # Errors
    /// `InvalidData` when `limit` bytes are already buffered; as `src`.
    pub(crate) fn fill_more(&mut self, mut src: impl Read, limit: usize) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        if self.filled >= limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{limit} bytes buffered, and more wanted")));
        }
        if self.filled == self.buf.len() {
            let grown = (self.buf.len() * 2).max(Self::FIRST).min(limit);
            self.buf.resize(grown, 0);
        }
        let end = self.buf.len().min(limit);
        let n = src.read(&mut self.buf[self.filled..end])?;
        self.filled += n;
        Ok(n)
    }

    /// Reads into `out`: from the buffer, or — nothing buffered and `out` at
    /// least as large as the buffer can grow — straight from `src`.
    pub(crate) fn read_from(&mut self, mut src: impl Read, out: &mut [u8]) -> io::Result<usize> {
        if self.is_empty() && out.len() >= self.capacity {
            return src.read(out);
        }
        let available = self.fill_from(src)?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_only_when_a_read_fills_it() {
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut src = &data[..];
        let mut b = ReadBuffer::new(8192);
        assert_eq!(b.fill_from(&mut src).unwrap().len(), ReadBuffer::FIRST);
        b.consume(ReadBuffer::FIRST);
        assert_eq!(b.fill_from(&mut src).unwrap().len(), 2 * ReadBuffer::FIRST, "doubled after a full read");
        b.consume(usize::MAX);
        assert_eq!(b.fill_from(&mut src).unwrap().len(), 8192, "capped at the capacity");
        b.consume(100);
        assert_eq!(b.buffer(), &data[6144 + 100..6144 + 8192]);
    }

    #[test]
    fn fill_more_appends_up_to_its_limit() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut src = &data[..];
        let mut b = ReadBuffer::new(64);
        assert_eq!(b.fill_more(&mut src, 4096).unwrap(), ReadBuffer::FIRST);
        assert_eq!(b.fill_more(&mut src, 4096).unwrap(), 4096 - ReadBuffer::FIRST, "grown to the limit, not past");
        assert_eq!(b.fill_more(&mut src, 4096).unwrap_err().kind(), io::ErrorKind::InvalidData, "full");
        b.consume(10);
        assert_eq!(b.fill_more(&mut src, 4096).unwrap(), 10, "room made by consuming");
        assert_eq!(b.buffer(), &data[10..4096 + 10]);
    }

    #[test]
    fn release_gives_the_memory_back_only_when_empty() {
        let mut b = ReadBuffer::new(8192);
        b.fill_from(&b"hello"[..]).unwrap();
        b.release();
        assert_eq!(b.buffer(), b"hello", "buffered bytes are kept");
        b.consume(5);
        b.release();
        assert_eq!(b.buf.capacity(), 0);
        assert_eq!(b.fill_from(&b"again"[..]).unwrap(), b"again");
        // Grown to 8 KiB, released: the next fill takes 8 KiB at once.
        let big = vec![7u8; 40_000];
        let mut src = &big[..];
        b.consume(5);
        while b.buf.len() < 8192 {
            let n = b.fill_from(&mut src).unwrap().len();
            b.consume(n);
        }
        b.release();
        assert_eq!(b.fill_from(&mut src).unwrap().len(), 8192, "the size it had, not 2 KiB");
    }

    #[test]
    fn a_large_read_with_nothing_buffered_bypasses_the_buffer() {
        let data = [7u8; 100];
        let mut b = ReadBuffer::new(16);
        let mut out = [0u8; 64];
        assert_eq!(b.read_from(&data[..], &mut out).unwrap(), 64);
        assert!(b.buf.is_empty(), "nothing allocated");
        let mut small = [0u8; 4];
        assert_eq!(b.read_from(&data[..], &mut small).unwrap(), 4);
        assert_eq!(b.buffer().len(), 12, "the rest of one buffered read");
    }
}
