//! What a restart without dropped connections needs of the OS: a signal
//! turned into a byte on a pipe (SIGHUP, which `ctrlc` cannot tell from
//! SIGTERM), and a successor started with descriptors at the places
//! systemd's socket-activation protocol puts them (3, 4, ...).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};

/// The write end of the pipe the SIGHUP handler writes to (-1: none).
static HANGUP_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_hangup(_: libc::c_int) {
    let fd = HANGUP_PIPE.load(SeqCst);
    if fd >= 0 {
        // SAFETY: async-signal-safe: errno is saved and restored around one
        // write(2) of a byte on the stack to a non-blocking pipe (a full
        // pipe already holds a wake-up).
        unsafe {
            let errno = *libc::__errno_location();
            let byte = 1u8;
            libc::write(fd, (&raw const byte).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Routes SIGHUP to a pipe: returns its read end, readable (a byte per
/// signal, or fewer) whenever SIGHUP came. Replaces whatever handled SIGHUP.
///
/// # Errors
/// As `pipe2(2)`, `fcntl(2)`, `sigaction(2)`; when already installed.
pub(crate) fn route_hangup() -> io::Result<OwnedFd> {
    let (read, write) = super::process::pipe()?;
    // SAFETY: F_SETFL on a descriptor we own; no memory is passed.
    if unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if HANGUP_PIPE.compare_exchange(-1, write.as_raw_fd(), SeqCst, SeqCst).is_err() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "SIGHUP is routed already"));
    }
    // The handler may write to it from now on, for the life of the process.
    std::mem::forget(write);
    // SAFETY: an all-zero sigaction is valid; the handler is an
    // `extern "C" fn(c_int)` that only does async-signal-safe work; SA_RESTART
    // keeps other threads' system calls going.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_hangup as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(read)
}

/// Starts `program args` with `fds` at descriptors 3, 4, ... (in order,
/// inherited across exec) and `env` added, and `LISTEN_PID` set to the new
/// process's own pid, as socket activation wants it. The pid is known only
/// after the fork, so a shell sets it and then `exec`s the program: the
/// successor's pid is the one returned.
///
/// # Errors
/// When the descriptors cannot be duplicated or `/bin/sh` cannot start.
pub(crate) fn spawn_with_fds(
    program: &OsStr,
    args: &[std::ffi::OsString],
    fds: &[BorrowedFd<'_>],
    env: &[(&str, String)],
) -> io::Result<Child> {
    // Copies above every target first, so that placing one never overwrites
    // another still to be placed. Close-on-exec: only the placed ones pass.
    let lowest = 3 + fds.len() as RawFd;
    let mut copies = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: F_DUPFD_CLOEXEC on a borrowed open descriptor returns a new
        // one we own (or -1).
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, lowest) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just made, owned by nobody else.
        copies.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let sources: Vec<RawFd> = copies.iter().map(AsRawFd::as_raw_fd).collect();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"").arg(program).args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    // SAFETY: between fork and exec only dup2(2) runs, which is
    // async-signal-safe, on descriptors that stay open in the parent (held
    // by `copies`) until `spawn` returns; nothing allocates or locks.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &src) in sources.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(src, 3 + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(copies);
    child
}

/// Takes descriptors `first .. first + count`, handed to this process by
/// socket activation, as owned (close-on-exec from now on) — once per
/// process: a second call returns `None`.
///
/// # Errors
/// When one of them is not open.
pub(crate) fn take_inherited(first: RawFd, count: usize) -> io::Result<Option<Vec<OwnedFd>>> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, SeqCst) {
        return Ok(None);
    }
    let fds: Vec<RawFd> = (0..count).map(|i| first + i as RawFd).collect();
    for &fd in &fds {
        // SAFETY: F_GETFD/F_SETFD on a number: at worst EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("descriptor {fd}: {e}")));
        }
    }
    // SAFETY: each is open (checked above) and was handed to this process
    // by the protocol; `TAKEN` makes this the only place that owns them.
    Ok(Some(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect()))
}

/// Takes `fd`, the write end of the pipe a predecessor handed this process
/// to report on, as a file — once per process, and only if it is a pipe.
///
/// # Errors
/// `InvalidInput` when `fd` is not a pipe.
pub(crate) fn take_handoff_pipe(fd: RawFd) -> io::Result<Option<std::fs::File>> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    // SAFETY: an all-zero stat is valid; fstat only writes to it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; at worst EBADF.
    let is_pipe = unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO;
    if !is_pipe {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("descriptor {fd} is not a pipe")));
    }
    if TAKEN.swap(true, SeqCst) {
        return Ok(None);
    }
    // SAFETY: open and a pipe (checked above), handed to this process;
    // `TAKEN` makes this its only owner.
    Ok(Some(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
}
