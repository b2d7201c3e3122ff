//! The OS calls std and socket2 do not offer, and the only `unsafe` code in
//! the crate: `poll`, a `recvfrom` that reports the real length of an
//! oversized datagram, datagrams in batches (`recvmmsg`/`sendmmsg`, [`mmsg`]), the process calls of the forking strategy ([`process`]) and C `strftime` for
//! the bundled time server ([`time`]), SIGHUP on a pipe and a successor
//! started with inherited sockets ([`handoff`]). Every `unsafe` block says why it is
//! sound; every function with a precondition the compiler cannot check is
//! an `unsafe fn` with a `# Safety` section.
#![allow(unsafe_code)]

pub(crate) mod epoll;
pub(crate) mod handoff;
pub(crate) mod mmsg;
pub(crate) mod process;
pub(crate) mod time;

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use socket2::{SockAddr, SockRef};

use crate::deadline::Deadline;

/// The most descriptors [`poll`] waits on at once.
pub(crate) const POLL_MAX: usize = 8;

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no limit).
///
/// Sets, for each descriptor, whether it is ready (readable, hung up or in
/// error) and returns how many are. `EINTR` is retried with the time left.
///
/// # Errors
/// `InvalidInput` for more than [`POLL_MAX`] descriptors or fewer `ready`
/// slots than descriptors (in every build: the array is on the stack);
/// otherwise as `poll(2)`.
pub(crate) fn poll(fds: &[RawFd], ready: &mut [bool], timeout: Option<Duration>) -> io::Result<usize> {
    poll_for(fds, libc::POLLIN, ready, timeout)
}

/// Like [`poll`], for `events` (`POLLIN`, `POLLOUT`, ...).
pub(crate) fn poll_for(
    fds: &[RawFd],
    events: libc::c_short,
    ready: &mut [bool],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if fds.len() > POLL_MAX || ready.len() < fds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("poll: {} descriptors and {} slots (at most {POLL_MAX})", fds.len(), ready.len()),
        ));
    }
    let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; POLL_MAX];
    for (slot, &fd) in pfds.iter_mut().zip(fds) {
        slot.fd = fd;
        slot.events = events;
    }
    let deadline = Deadline::within(Instant::now(), timeout);
    loop {
        let ms = deadline.poll_millis(Instant::now());
        // SAFETY: `pfds` holds `fds.len()` (at most POLL_MAX, checked above)
        // initialised pollfd structs and lives for the whole call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 && deadline.early(Instant::now()) {
            continue; // longer than one poll can wait
        }
        for (r, p) in ready.iter_mut().zip(&pfds[..fds.len()]) {
            *r = p.revents != 0;
        }
        return Ok(n as usize);
    }
}

/// Whether `fd` has something to read (or is hung up) right now.
pub(crate) fn readable_now(fd: RawFd) -> bool {
    poll(&[fd], &mut [false], Some(Duration::ZERO)).is_ok_and(|n| n > 0)
}

/// `sendto` that never blocks (`MSG_DONTWAIT`), whatever the socket's mode:
/// a peer whose queue is full gets `WouldBlock`, not a blocked caller.
pub(crate) fn send_to_now(sock: SockRef<'_>, data: &[u8], to: &SockAddr) -> io::Result<usize> {
    sock.send_to_with_flags(data, to, libc::MSG_DONTWAIT)
}

/// Bytes written to the stream socket `fd` that its peer has not yet
/// acknowledged (`SIOCOUTQ`; `TIOCOUTQ` is the same request). 0 when it
/// cannot be told.
pub(crate) fn unsent(fd: RawFd) -> usize {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the valid pointer.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    if r == 0 { queued.max(0) as usize } else { 0 }
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

/// Writes one line to stderr if it can take it now, else drops it: the
/// fallback of a program with no logger, which must never make a server
/// wait (a full pipe that nobody reads). At most `PIPE_BUF` bytes, written
/// in one call, so the line is never cut or mixed with another.
pub(crate) fn stderr_line_now(line: &str) -> bool {
    let mut bytes = line.as_bytes();
    if bytes.len() >= libc::PIPE_BUF {
        bytes = &bytes[..libc::PIPE_BUF - 1];
    }
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.extend_from_slice(bytes);
    out.push(b'\n');
    if poll_for(&[libc::STDERR_FILENO], libc::POLLOUT, &mut [false], Some(Duration::ZERO)).ok() != Some(1) {
        return false;
    }
    // SAFETY: `out` is valid for `out.len()` bytes; fd 2 is the process's
    // stderr (an invalid one is EBADF, never unsafety).
    let n = unsafe { libc::write(libc::STDERR_FILENO, out.as_ptr().cast(), out.len()) };
    n == out.len() as isize
}

/// Whether signal `sig` is ignored (`SIG_IGN`) in this process.
pub(crate) fn signal_ignored(sig: libc::c_int) -> bool {
    // SAFETY: an all-zero sigaction is a valid value; with a null new
    // action, sigaction only reads the current one into `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is a valid out-pointer; a null `act` changes nothing.
    let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    r == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// Sets signal `sig` to be ignored (`SIG_IGN`).
pub(crate) fn ignore_signal(sig: libc::c_int) {
    // SAFETY: SIG_IGN is a valid disposition for any catchable signal;
    // `signal` has no memory-safety preconditions.
    unsafe {
        libc::signal(sig, libc::SIG_IGN);
    }
}

/// The calling thread's id (Linux `gettid(2)`).
pub(crate) fn thread_id() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is running or runnable (state `R`
/// in `/proc`), as opposed to sleeping in a system call: a thread that has
/// not moved on is then preempted or computing, not blocked. `false` when
/// it cannot be told.
pub(crate) fn thread_runnable(tid: i32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/self/task/{tid}/stat")) else { return false };
    stat_says_runnable(&stat)
}

/// Asks that the calling thread's timed waits end on time: Linux lets a
/// wait run up to 50 µs late by default (its timer slack), which would
/// double the monitor's quickest look. Best effort.
pub(crate) fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes a value and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// `pid (comm) S ...`: the state follows the last `)` (comm may hold one).
fn stat_says_runnable(stat: &[u8]) -> bool {
    let Some(close) = stat.iter().rposition(|&b| b == b')') else { return false };
    stat[close + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'R')
}

/// The calling thread's CPU-time clock, for another thread to read with
/// [`cpu_time`]; `None` when it cannot be had.
pub(crate) fn thread_cpu_clock() -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self() is the calling thread, alive for the call;
    // the clock id is written through a valid pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    (rc == 0).then_some(clock)
}

/// The CPU time a thread has used, by the clock [`thread_cpu_clock`] gave
/// it (in this process); `None` when it cannot be read (the thread is gone).
pub(crate) fn cpu_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is valid for the call; an invalid clock is EINVAL.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Whether `bind` failed because the socket is bound already.
pub(crate) fn is_already_bound(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_refuses_more_descriptors_than_it_holds_in_every_build() {
        let fds = [0; POLL_MAX + 1];
        let err = poll(&fds, &mut [false; POLL_MAX + 1], Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = poll(&[0, 0], &mut [false], Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "fewer slots than descriptors");
    }

    #[test]
    fn a_thread_in_a_system_call_is_not_runnable_and_this_one_is() {
        assert!(thread_runnable(thread_id()), "the calling thread runs");
        let (tx, rx) = std::sync::mpsc::channel();
        let (_hold, wait) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            tx.send(thread_id()).unwrap();
            let _ = wait.recv(); // blocks in futex until the sender goes
        });
        let tid = rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while thread_runnable(tid) {
            assert!(Instant::now() < deadline, "the blocked thread never showed as sleeping");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(_hold);
        sleeper.join().unwrap();
    }

    #[test]
    fn another_threads_cpu_time_is_read_by_its_clock() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        // It spins until told to stop: however loaded the machine, its CPU
        // time grows (a spin of 50 ms of wall time got less than 20 ms of
        // CPU with both cores busy).
        let spinner = std::thread::spawn(move || {
            tx.send(thread_cpu_clock().unwrap()).unwrap();
            let mut x = 0u64;
            while let Err(std::sync::mpsc::TryRecvError::Empty) = done_rx.try_recv() {
                x = std::hint::black_box(x + 1);
            }
        });
        let clock = rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while cpu_time(clock).unwrap() < Duration::from_millis(20) {
            assert!(Instant::now() < deadline, "the spinning thread's CPU time never grew");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(done_tx);
        spinner.join().unwrap();
    }
}
