//! Every call into the OS that std and socket2 do not offer: `poll`, `fork`,
//! `waitpid`, `kill`, `_exit`, `shutdown` on a registered descriptor, and a
//! `recvfrom` that reports the real length of an oversized datagram.
//!
//! This is the only module with `unsafe` code; each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use socket2::{SockAddr, SockRef};

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no limit).
///
/// Sets, for each descriptor, whether it is ready (readable, hung up or in
/// error) and returns how many are. `EINTR` is retried with the time left.
pub(crate) fn poll(fds: &[RawFd], ready: &mut [bool], timeout: Option<Duration>) -> io::Result<usize> {
    debug_assert!(fds.len() <= 8 && ready.len() >= fds.len());
    let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 8];
    for (slot, &fd) in pfds.iter_mut().zip(fds) {
        slot.fd = fd;
        slot.events = libc::POLLIN;
    }
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                // Round up so that a wait of 0.4 ms does not become a busy 0.
                left.as_millis().saturating_add(u128::from(left.subsec_nanos() % 1_000_000 != 0)).min(i32::MAX as u128)
                    as libc::c_int
            }
        };
        // SAFETY: `pfds` is a valid array of `fds.len()` initialised pollfd structs
        // that lives for the whole call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for (r, p) in ready.iter_mut().zip(&pfds[..fds.len()]) {
            *r = p.revents != 0;
        }
        return Ok(n as usize);
    }
}

/// `recvfrom` that returns the datagram's real length even when it is
/// longer than `buf` (`MSG_TRUNC` on Linux; elsewhere a length of
/// `buf.len()` with a full buffer may mean "truncated"). With `dontwait`,
/// it never blocks (`MSG_DONTWAIT`), whatever the socket's mode.
pub(crate) fn recv_from(sock: SockRef<'_>, buf: &mut [u8], dontwait: bool) -> io::Result<(usize, SockAddr)> {
    #[cfg(target_os = "linux")]
    let mut flags = libc::MSG_TRUNC;
    #[cfg(not(target_os = "linux"))]
    let mut flags = 0;
    if dontwait {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and the
    // bytes are already initialised; recv only writes initialised bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    sock.recv_from_with_flags(uninit, flags)
}

/// Shuts down one or both directions of the socket behind `fd`.
///
/// The caller guarantees `fd` is open for the duration of the call (the
/// connection tracker holds its lock while the owner may not close it).
pub(crate) fn shutdown_fd(fd: RawFd, how: std::net::Shutdown) {
    // SAFETY: per the caller's guarantee the descriptor is open and stays open
    // while the borrow lives (it is used for this one call only).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = SockRef::from(&borrowed).shutdown(how);
}

/// Forks the process; the child runs `child` and ends with its return
/// value as exit code, never returning here. Returns the child's pid.
pub(crate) fn fork_child(child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: after fork only the calling thread exists in the child. The
    // child runs `child` — the server's request code, which its callers keep
    // clear of locks other threads may hold — and then `_exit`s, so it never
    // returns into code that assumes the parent's threads or runs the
    // parent's destructors and atexit handlers.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = child();
            exit_now(code)
        }
        pid => Ok(pid),
    }
}

/// Waits for the child `pid` (and only it) to end; returns its exit code, or
/// 128 + signal number when a signal ended it.
pub(crate) fn wait_child(pid: libc::pid_t) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; waitpid on a specific pid
        // never reaps children that are not ours to reap.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ok(128 + libc::WTERMSIG(status))
    } else {
        Ok(-1)
    }
}

/// Waits for the child `pid` to end without reaping it: it stays a zombie,
/// so its pid cannot be reused (and a `kill_child` racing with the reaper
/// hits nothing) until [`wait_child`] collects it.
pub(crate) fn wait_child_exited(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer; P_PID waits on this child
        // only, and WNOWAIT leaves it to be reaped later.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends SIGKILL to the child `pid`.
pub(crate) fn kill_child(pid: libc::pid_t) {
    // SAFETY: kill has no memory-safety preconditions; `pid` is a child that
    // has not been reaped yet, so the pid cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Ends the process at once with `code`: no destructors, no atexit handlers,
/// no flushing of buffers inherited from the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

unsafe extern "C" {
    /// POSIX `tzset`, missing from the libc crate on Linux.
    fn tzset();
}

/// Renders the current local time (`TZ` honoured) with C `strftime` in the
/// process's locale — "C" for a Rust program, which never calls
/// `setlocale`. Returns `None` when the result is longer than `max` bytes;
/// an empty result is a result (C's strftime returns 0 for both, so the
/// format is given a leading space that is taken off again).
///
/// # Errors
/// `InvalidInput` if `format` contains NUL; the OS's if it cannot give the
/// local time.
pub(crate) fn strftime_now(format: &str, max: usize) -> io::Result<Option<Vec<u8>>> {
    let format = std::ffi::CString::new(format!(" {format}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the format contains NUL"))?;
    // SAFETY: tzset only reads the TZ variable and sets libc's globals; it
    // is idempotent and thread-safe in glibc and musl.
    unsafe { tzset() };
    // SAFETY: time(NULL) has no preconditions.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: an all-zero `tm` is a valid value of a plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is reentrant.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    // Room for the leading space and the NUL that strftime writes too.
    let limit = max + 2;
    let mut size = 256.min(limit);
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has room for `size` bytes; `format` is NUL-terminated;
        // `tm` was filled by localtime_r. strftime writes at most `size` bytes.
        let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), size, format.as_ptr(), &tm) };
        if n > 0 {
            buf.truncate(n);
            buf.remove(0); // the space
            return Ok(Some(buf));
        }
        if size >= limit {
            return Ok(None);
        }
        size = (size * 4).min(limit);
    }
}

/// Raises the soft limit on open descriptors to the hard limit; returns the
/// new soft limit.
pub(crate) fn raise_fd_limit() -> io::Result<u64> {
    // SAFETY: an all-zero rlimit is a valid value; getrlimit fills it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid out-pointer for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid, initialised rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur as u64)
}

/// Whether `bind` failed because the socket is bound already.
pub(crate) fn is_already_bound(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}
