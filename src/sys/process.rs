//! Process calls of the forking strategy: `fork`, looking whether one child
//! (by pid) has ended and reaping it, `kill`, `_exit`, and a pipe a child reports through with raw
//! `write(2)` (a child of a threaded process must not take a lock another
//! thread may have held at fork time: no `log`, no std `stderr`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Forks the process; the child runs `child` and ends with its return value
/// as exit code, never returning here. Returns the child's pid.
///
/// # Safety
/// After `fork` only the calling thread exists in the child: a lock another
/// thread held at that moment stays locked for ever there. `child` must not
/// take such a lock — no logging, no `std::io::stderr()`, nothing of the
/// parent's that is guarded by a mutex — other than what the caller knows
/// to be free (the handler code the user asked to run this way).
unsafe fn fork(child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: the caller upholds the contract above; the child `_exit`s, so
    // it never returns into code that assumes the parent's threads, nor runs
    // the parent's destructors and atexit handlers.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = child();
            exit_now(code)
        }
        pid => Ok(pid),
    }
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `data` to `fd` with raw `write(2)`: no lock, no buffer,
/// safe in a forked child. Errors are ignored (there is nobody to tell).
pub(crate) fn write_raw(fd: &OwnedFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: `data` is valid for `data.len()` bytes; `fd` is open.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n > 0 {
            data = &data[n as usize..];
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            return;
        }
    }
}

/// Waits for the child `pid` (and only it) to end; returns its exit code, or
/// 128 + signal number when a signal ended it.
fn wait_child(pid: libc::pid_t) -> io::Result<i32> {
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

/// Whether the child `pid` has ended, without waiting and without reaping
/// it: it stays a zombie, so its pid cannot be reused (and a [`kill_child`]
/// racing with the reaper hits nothing) until [`wait_child`] collects it.
fn child_exited(pid: libc::pid_t) -> io::Result<bool> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer; P_PID looks at this child
        // only, WNOHANG returns at once and WNOWAIT leaves it to be reaped.
        let r = unsafe {
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
        };
        if r == 0 {
            // SAFETY: waitid succeeded, so `info` is initialised; with
            // WNOHANG and no child ended, si_pid is left 0 (zeroed above).
            return Ok(unsafe { info.si_pid() } == pid);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Makes reads from `fd` return `WouldBlock` rather than wait (`O_NONBLOCK`;
/// for a pipe, only on this end's open file description).
pub(crate) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor with F_GETFL/F_SETFL has no
    // memory-safety preconditions.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends SIGKILL to the child `pid`.
///
/// # Safety
/// `pid` must be a child of this process that has not been reaped, so that
/// the pid cannot have been reused by an unrelated process.
unsafe fn kill_child(pid: libc::pid_t) {
    // SAFETY: kill has no memory-safety preconditions; the caller guarantees
    // that `pid` still names our child.
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

/// The children a server forked and has not reaped, by pid. Only this type
/// forks, untracks and reaps them, and it untracks a child (under its lock)
/// before reaping it, so a pid in the set always names an unreaped child of
/// ours: [`kill_all`](Self::kill_all) can never signal a reused pid.
#[derive(Debug, Default)]
pub(crate) struct Children {
    live: parking_lot::Mutex<std::collections::HashSet<libc::pid_t>>,
}

impl Children {
    /// Forks a child that runs `child` and exits with its return value; the
    /// child is tracked until [`try_wait`](Self::try_wait) collects it.
    ///
    /// # Safety
    /// As [`fork`]: `child` must not take a lock another thread may hold.
    pub(crate) unsafe fn spawn(&self, child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
        // The lock is held across the fork so that the set is never seen
        // without a child that exists (and the child never uses it).
        let mut live = self.live.lock();
        // SAFETY: the caller upholds `fork`'s contract.
        let pid = unsafe { fork(child) }?;
        live.insert(pid);
        Ok(pid)
    }

    /// If the child `pid` has ended: untracks it, then reaps it, and returns
    /// its exit code (128 + N for signal N). `None`: still running (nothing
    /// waited for).
    pub(crate) fn try_wait(&self, pid: libc::pid_t) -> io::Result<Option<i32>> {
        // Still a zombie here: its pid cannot be reused while it is tracked.
        let exited = child_exited(pid);
        if let Ok(false) = exited {
            return Ok(None);
        }
        self.live.lock().remove(&pid);
        exited.and_then(|_| wait_child(pid)).map(Some)
    }

    /// Sends SIGKILL to every tracked child; returns how many.
    pub(crate) fn kill_all(&self) -> usize {
        let live = self.live.lock();
        for &pid in live.iter() {
            // SAFETY: a tracked pid is an unreaped child of ours (see the type's invariant).
            unsafe { kill_child(pid) };
        }
        live.len()
    }
}
