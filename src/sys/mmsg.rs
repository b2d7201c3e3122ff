//! Datagrams in batches: `recvmmsg(2)` into a batch of buffers, and
//! `sendmmsg(2)` of a batch of replies, behind a safe API.
//!
//! The message headers hold raw pointers into the batch's buffers; they are
//! built on the stack for each call and never outlive it, so the batch
//! itself holds only plain data (and is `Send`).

use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{SockAddr, SockAddrStorage};

/// The most datagrams one call receives or sends.
pub(crate) const MAX_BATCH: usize = 64;

/// How a batch receive waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Never (`MSG_DONTWAIT`): `WouldBlock` when nothing is queued.
    No,
    /// For the first datagram only (`MSG_WAITFORONE`), then takes what is
    /// queued, up to the batch's size. Blocks only on a blocking socket.
    ForOne,
}

/// Buffers for up to [`MAX_BATCH`] datagrams of at most `slot` bytes each,
/// and what the last [`receive`](Self::receive) put in them.
pub(crate) struct RecvBatch {
    /// `slots × slot` bytes, one contiguous allocation: zeroed and large, it
    /// is mapped lazily, so a page becomes resident only once a datagram
    /// reaches it.
    arena: Vec<u8>,
    slot: usize,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    /// The datagram's real length (with `MSG_TRUNC`, even when it was longer
    /// than its slot).
    lens: Vec<usize>,
    truncated: Vec<bool>,
    filled: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("slots", &self.lens.len()).field("slot", &self.slot).finish()
    }
}

/// One datagram of a batch.
#[derive(Debug)]
pub(crate) struct Received<'a> {
    /// The bytes received: all of them, or the first `slot` of a longer one.
    pub(crate) data: &'a [u8],
    /// The datagram's real length, which may be larger than `data`.
    pub(crate) len: usize,
    /// The kernel cut it to fit its slot (`MSG_TRUNC` in `msg_flags`).
    pub(crate) truncated: bool,
    pub(crate) from: SockAddr,
}

impl RecvBatch {
    /// A batch of `slots` buffers (1 to [`MAX_BATCH`]) of `slot` bytes each.
    pub(crate) fn new(slots: usize, slot: usize) -> RecvBatch {
        let slots = slots.clamp(1, MAX_BATCH);
        let slot = slot.max(1);
        // SAFETY: all zeros is a valid sockaddr_storage (plain integers).
        let zero: libc::sockaddr_storage = unsafe { mem::zeroed() };
        RecvBatch {
            arena: vec![0; slots * slot],
            slot,
            addrs: vec![zero; slots],
            addr_lens: vec![0; slots],
            lens: vec![0; slots],
            truncated: vec![false; slots],
            filled: 0,
        }
    }

    /// How many datagrams one receive may take.
    pub(crate) fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Receives up to [`capacity`](Self::capacity) datagrams in one
    /// `recvmmsg`; returns how many (at least 1). `EINTR` is retried.
    ///
    /// # Errors
    /// As `recvmmsg(2)`: `WouldBlock` when nothing is queued and it may not
    /// wait.
    pub(crate) fn receive(&mut self, fd: BorrowedFd<'_>, wait: Wait) -> io::Result<usize> {
        self.filled = 0;
        let n = self.capacity();
        let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_BATCH];
        // SAFETY: all zeros is a valid mmsghdr (null pointers, zero lengths).
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
        let base = self.arena.as_mut_ptr();
        let addrs = self.addrs.as_mut_ptr();
        for (i, iov) in iovs[..n].iter_mut().enumerate() {
            // SAFETY: `i * slot + slot <= arena.len()` (the arena is `n × slot`
            // bytes), so the slot's pointer is in bounds.
            *iov = libc::iovec { iov_base: unsafe { base.add(i * self.slot) }.cast(), iov_len: self.slot };
        }
        let iov_base = iovs.as_mut_ptr();
        for (i, hdr) in hdrs[..n].iter_mut().enumerate() {
            let h = &mut hdr.msg_hdr;
            // SAFETY: `i < n == addrs.len()`.
            h.msg_name = unsafe { addrs.add(i) }.cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: `i < n <= MAX_BATCH == iovs.len()`.
            h.msg_iov = unsafe { iov_base.add(i) };
            h.msg_iovlen = 1;
        }
        let mut flags = libc::MSG_TRUNC;
        flags |= match wait {
            Wait::No => libc::MSG_DONTWAIT,
            Wait::ForOne => libc::MSG_WAITFORONE,
        };
        let got = loop {
            // SAFETY: `hdrs[..n]` are initialised headers whose name, iovec
            // and buffer pointers point into `self.addrs`, `iovs` and
            // `self.arena`, each valid (and not otherwise borrowed) for the
            // lengths given and for the whole call; the kernel writes at
            // most those lengths. A null timeout is allowed.
            let r = unsafe {
                libc::recvmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, flags, std::ptr::null_mut())
            };
            if r >= 0 {
                break r as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        let got = got.min(n);
        for (i, h) in hdrs[..got].iter().enumerate() {
            self.lens[i] = h.msg_len as usize;
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.addr_lens[i] = h.msg_hdr.msg_namelen.min(mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t);
        }
        self.filled = got;
        Ok(got)
    }

    /// Datagram `i` of the last receive (`i < filled()`).
    pub(crate) fn get(&self, i: usize) -> Option<Received<'_>> {
        if i >= self.filled {
            return None;
        }
        let len = self.lens[i];
        let start = i * self.slot;
        let data = &self.arena[start..start + len.min(self.slot)];
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: `sockaddr_storage` is one of the platform's sockaddr types,
        // and the storage is exactly its size.
        unsafe { *storage.view_as::<libc::sockaddr_storage>() = self.addrs[i] };
        // SAFETY: the kernel wrote a valid address of `addr_lens[i]` bytes
        // (at most the storage's size, clamped above) into `addrs[i]`.
        let from = unsafe { SockAddr::new(storage, self.addr_lens[i]) };
        Some(Received { data, len, truncated: self.truncated[i], from })
    }
}

/// Sends each `(payload, address)` of `msgs` (the first [`MAX_BATCH`]) in one `sendmmsg` that never waits (`MSG_DONTWAIT`); returns how
/// many were sent, in order: fewer than given when the kernel stopped (the
/// next one's error comes with the next call). `EINTR` is retried.
///
/// # Errors
/// As `sendmmsg(2)`, for the first message when none was sent: `WouldBlock`
/// when the socket cannot take it now.
pub(crate) fn send_batch<'a>(
    fd: BorrowedFd<'_>,
    msgs: impl IntoIterator<Item = (&'a [u8], &'a SockAddr)>,
) -> io::Result<usize> {
    let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_BATCH];
    let mut names: [(*const SockAddrStorage, libc::socklen_t); MAX_BATCH] = [(std::ptr::null(), 0); MAX_BATCH];
    let mut n = 0;
    // The kernel only reads a sent message's buffer and address: the `*mut`
    // casts below never lead to a write through them. Both are borrowed
    // for `'a`, which outlives this call.
    for ((iov, name), (data, to)) in iovs.iter_mut().zip(names.iter_mut()).zip(msgs) {
        *iov = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
        *name = (to.as_ptr(), to.len());
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    let mut hdrs: [MaybeUninit<libc::mmsghdr>; MAX_BATCH] = [const { MaybeUninit::uninit() }; MAX_BATCH];
    let iov_base = iovs.as_mut_ptr();
    for (i, (hdr, (name, name_len))) in hdrs.iter_mut().zip(&names[..n]).enumerate() {
        // SAFETY: all zeros is a valid mmsghdr.
        let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
        h.msg_hdr.msg_name = name.cast_mut().cast();
        h.msg_hdr.msg_namelen = *name_len;
        // SAFETY: `i < n <= MAX_BATCH == iovs.len()`.
        h.msg_hdr.msg_iov = unsafe { iov_base.add(i) };
        h.msg_hdr.msg_iovlen = 1;
        hdr.write(h);
    }
    loop {
        // SAFETY: `hdrs[..n]` are initialised (written above); each points
        // at an iovec in `iovs` and an address in `msgs`, which point at
        // payloads borrowed for the whole call. sendmmsg reads them and
        // writes only each header's `msg_len`.
        let r = unsafe {
            libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr().cast(), n as libc::c_uint, libc::MSG_DONTWAIT)
        };
        if r >= 0 {
            return Ok((r as usize).min(n));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn a_batch_takes_what_is_queued_with_real_lengths_and_addresses() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        client.send_to(b"one", to).unwrap();
        client.send_to(&[7u8; 100], to).unwrap();
        client.send_to(b"three", to).unwrap();
        let mut batch = RecvBatch::new(8, 10);
        // Loopback delivers at once, but wait for the first to be sure.
        let n = batch.receive(server.as_fd(), Wait::ForOne).unwrap();
        assert!(n >= 1);
        let mut seen = Vec::new();
        let mut left = 3;
        let mut n = n;
        loop {
            for i in 0..n {
                let d = batch.get(i).unwrap();
                assert_eq!(d.from.as_socket(), Some(client.local_addr().unwrap()));
                seen.push((d.data.to_vec(), d.len, d.truncated));
            }
            left -= n;
            if left == 0 {
                break;
            }
            n = batch.receive(server.as_fd(), Wait::ForOne).unwrap();
        }
        assert_eq!(seen[0], (b"one".to_vec(), 3, false));
        assert_eq!(seen[1], (vec![7u8; 10], 100, true), "cut to the slot, its real length kept");
        assert_eq!(seen[2], (b"three".to_vec(), 5, false));
        assert!(batch.get(n).is_none());
        let err = batch.receive(server.as_fd(), Wait::No).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_batch_of_replies_goes_out_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ta, tb) = (SockAddr::from(a.local_addr().unwrap()), SockAddr::from(b.local_addr().unwrap()));
        let msgs: [(&[u8], &SockAddr); 3] = [(b"a1", &ta), (b"b1", &tb), (b"a2", &ta)];
        assert_eq!(send_batch(server.as_fd(), msgs).unwrap(), 3);
        let recv = |s: &UdpSocket| {
            let mut buf = [0u8; 8];
            let n = s.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        };
        assert_eq!(recv(&a), b"a1");
        assert_eq!(recv(&a), b"a2");
        assert_eq!(recv(&b), b"b1");
        assert_eq!(send_batch(server.as_fd(), []).unwrap(), 0);
    }
}
