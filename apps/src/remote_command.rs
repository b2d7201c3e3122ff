//! The tutorials' "simulated ssh" (remote command execution), rebuilt
//! without its bugs: every message is a length-prefixed frame, so large
//! output no longer spills into the answer to the next command (the "sticky
//! packet" problem), commands run without a shell and only if the operator
//! allowed the program, output streams back while the command runs, and
//! every command has a time limit.
//!
//! ```text
//! cargo run -p socketserver-apps --example remote_command -- server --allow ls --allow echo --allow uptime
//! cargo run -p socketserver-apps --example remote_command -- client ls -l /tmp          # one command
//! cargo run -p socketserver-apps --example remote_command -- client --addr 127.0.0.1:9001  # interactive
//! ```
//!
//! # What an allowlist does not do
//!
//! It checks the program's *name* only; **arguments are not checked**. An
//! allowed program runs with any arguments a client sends, as the server's
//! user: `ls` lists any folder and `head -c 200 /etc/shadow` reads the file
//! if that user can. A program that runs others gives a shell: `env sh -c
//! ...`, `find / -exec /bin/sh ...`, `xargs`, `nice`, `nohup`, `setsid`,
//! `timeout`, `sudo`, `awk`, `git`, `tar`, an editor, an interpreter. The
//! server refuses to start with such a program on its list
//! ([`RUNS_OTHERS`], interpreters such as `python3` or `perl`, and any name
//! that is a link to one) unless given `--allow-unsafe`; no such list is
//! complete. This is not a sandbox: run the server as a user of its own
//! with access to nothing it should not show, never as root.
//!
//! What the server does limit: a command gets an empty environment but for
//! `PATH=/usr/local/bin:/usr/bin:/bin` and `LANG=C.UTF-8` (the server's
//! variables, secrets included, stay its own); it runs under a supervisor
//! process that is a child subreaper, so that whatever it starts — in its
//! process group or not (`setsid -f`, a double fork) — is killed when it
//! ends, however it ends (this needs Linux's `/proc/PID/task/TID/children`).
//! A command that kills its own supervisor can still leave orphans behind.
//!
//! Server options: `--addr ADDR` (default `127.0.0.1:9001`, loopback only),
//! `--allow PROGRAM` (repeatable, at least one; bare names looked up in
//! `PATH` once, at start), `--allow-unsafe` (allow programs that run
//! others), `--timeout SECS` (default 30), `--strategy STRATEGY`
//! (as `AnyStrategy` reads it; default `pool(2-256)`: a worker per
//! connection; `event`: a connection waiting for its next command is
//! parked and holds no thread, one running a command holds one;
//! `threading(256)`: a thread per connection, at most 256). The client's
//! arguments after `COMMAND` are quoted and sent as one command line; with
//! no `COMMAND` it reads command lines from stdin (`quit` or end of input
//! leaves). The client exits with the command's exit status (128 + N when a
//! signal N killed it), or 1 after an error.
//!
//! # Protocol
//!
//! Every message is a frame: a 4-byte big-endian length
//! (`struct.pack('!I', n)`), then `n` bytes.
//!
//! * Client → server: one frame per command, the command line in UTF-8
//!   (at most 64 KiB). It is split on white space, with `'...'`, `"..."`
//!   and `\` quoting as in a shell; no other shell syntax exists (no pipes,
//!   globs, variables or redirections). The program must be a bare name on
//!   the allowlist: a name with a `/` or one not on the list is refused.
//!   Once its first byte has arrived, the whole frame must arrive within
//!   5 s, or the client gets a `!` frame and the connection closes; a
//!   connection with no command for 2 minutes is closed.
//! * Server → client: frames whose first byte says what follows:
//!   `o` a chunk of stdout, `e` a chunk of stderr (each at most 64 KiB, in
//!   the order they were read), then exactly one final frame: `x` and the
//!   exit status in ASCII decimal (negative: the signal that killed it, as
//!   Python's `returncode`), or `!` and a UTF-8 error message (refused,
//!   malformed, could not start, timed out).
//! * Several commands may be sent on one connection, one after the other.
//!   A command line longer than 64 KiB gets a `!` frame and the connection
//!   closes. Closing the connection — even only its write side — while a
//!   command runs kills the command; so does the time limit, which counts
//!   sending the output too: a client that reads slowly gets what it has
//!   read by then, and the connection closes (a frame cut short cannot be
//!   followed by the `!` frame). Whatever the command started is killed
//!   when it ends.
//!
//! # From Python
//!
//! ```python
//! import socket, struct, sys
//!
//! def recv_exact(s, n):
//!     buf = b''
//!     while len(buf) < n:
//!         chunk = s.recv(n - len(buf))
//!         if not chunk:
//!             raise ConnectionError('server closed the connection')
//!         buf += chunk
//!     return buf
//!
//! def run(s, line):
//!     body = line.encode('utf-8')
//!     s.sendall(struct.pack('!I', len(body)) + body)
//!     while True:
//!         (n,) = struct.unpack('!I', recv_exact(s, 4))
//!         frame = recv_exact(s, n)
//!         tag, data = frame[:1], frame[1:]
//!         if tag == b'o':
//!             sys.stdout.buffer.write(data)
//!         elif tag == b'e':
//!             sys.stderr.buffer.write(data)
//!         elif tag == b'x':
//!             return int(data)
//!         else:  # b'!'
//!             raise RuntimeError(data.decode('utf-8'))
//!
//! with socket.create_connection(('127.0.0.1', 9001)) as s:
//!     print('exit status', run(s, 'ls -l /tmp'))
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use socket2::SockRef;
use socketserver::framing::LengthPrefixed;

use crate::args::{self, Flags};
use socketserver::transport::Tcp;
use socketserver::{AnyStrategy, Escaped, RequestHandler, Server, Stream, StreamRequest, TcpServer, ThreadPool};

/// The server's default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9001";
/// The default time limit of a command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a command frame may take to arrive, from its first byte.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest command line (one client frame).
pub const MAX_COMMAND: usize = 64 * 1024;
/// The most output bytes in one `o` or `e` frame.
pub const CHUNK: usize = 64 * 1024;
/// The longest frame the client accepts from a server.
pub const MAX_REPLY: usize = 1024 * 1024;

/// Tag of a frame carrying a chunk of stdout.
pub const TAG_STDOUT: u8 = b'o';
/// Tag of a frame carrying a chunk of stderr.
pub const TAG_STDERR: u8 = b'e';
/// Tag of the final frame of a command that ran: its exit status.
pub const TAG_EXIT: u8 = b'x';
/// Tag of the final frame of a command that failed: an error message.
pub const TAG_ERROR: u8 = b'!';

/// How often a running command checks that its client is still there.
const TICK: Duration = Duration::from_millis(100);
/// After the program exits, how long its output may still take to drain
/// (something it started may hold the pipes open).
const DRAIN: Duration = Duration::from_secs(1);
/// A client that reads nothing for this long while output waits is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection with no command for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The most connections served at once (a thread each).
pub const MAX_WORKERS: usize = 256;
/// How long the final frame of a command may take to send, at least.
const FINAL_FRAME: Duration = Duration::from_secs(1);
/// How long the supervisor of a command gets to kill it and what it
/// started, and exit.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The stack of an output pump thread (it only copies).
const PUMP_STACK: usize = 128 * 1024;
/// `PATH` of every command (and all of its environment, with `LANG`).
pub const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `LANG` of every command.
pub const CHILD_LANG: &str = "C.UTF-8";

/// What the server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Programs clients may run: bare names, looked up in `PATH` at start.
    pub allow: Vec<String>,
    /// The time limit of each command; the command is killed when it passes.
    pub timeout: Duration,
    /// Allow programs that run other programs (`env`, `find`, shells...).
    pub allow_unsafe: bool,
    /// How long a command frame may take to arrive, from its first byte.
    pub frame_timeout: Duration,
    /// How connections are served. Whichever strategy, a connection whose
    /// command runs has a thread of its own (and its output pumps); they
    /// differ in what waits between commands.
    pub strategy: AnyStrategy,
}

impl Config {
    /// `allow`, with the default time limits, no unsafe programs, on a pool.
    pub fn new(allow: Vec<String>) -> Config {
        Config {
            allow,
            timeout: DEFAULT_TIMEOUT,
            allow_unsafe: false,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            strategy: ThreadPool::new(2).max_workers(MAX_WORKERS).into(),
        }
    }
}

/// Programs that run other programs — a shell included — when given the
/// right arguments (`env sh -c ...`, `find -exec`, `awk 'BEGIN{system(..)}'`,
/// `git -c core.pager=...`, `tar --to-command`, an editor's `!`), or that
/// signal other processes (the server's too). Allowing one allows
/// everything: [`Allowlist::resolve`] refuses them unless told that this is
/// meant (`--allow-unsafe`). No list can be complete: arguments are not
/// checked, so only allow programs whose every option you accept.
#[rustfmt::skip]
pub const RUNS_OTHERS: &[&str] = &[
    // shells and multi-call binaries
    "sh", "ash", "dash", "bash", "rbash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "csh", "tcsh", "fish", "yash",
    "posh", "busybox", "toybox",
    // they run the program named in their arguments
    "env", "nice", "nohup", "setsid", "timeout", "stdbuf", "ionice", "chrt", "taskset", "flock", "watch", "time",
    "xargs", "find", "parallel", "sudo", "su", "doas", "runuser", "pkexec", "sg", "newgrp", "chroot", "unshare",
    "nsenter", "setpriv", "capsh", "prlimit", "systemd-run", "script", "expect", "strace", "ltrace", "gdb",
    "valgrind", "at", "batch", "crontab", "make", "command", "exec", "builtin",
    // an option or a command of theirs runs a program
    "awk", "gawk", "mawk", "nawk", "sed", "vi", "vim", "nvim", "view", "ex", "ed", "emacs", "nano", "less",
    "more", "most", "man", "git", "tar", "zip", "rsync", "ssh", "scp", "sftp", "socat", "nc", "ncat", "netcat",
    "nmap", "dpkg", "rpm", "apt", "apt-get", "pip", "pip3", "npm", "npx", "cargo", "docker", "podman",
    "kubectl", "tclsh", "wish",
    // they signal other processes
    "kill", "pkill", "killall",
];

/// Interpreters, with or without a version (`python3`, `python3.12`, `perl5.36`).
#[rustfmt::skip]
const INTERPRETERS: &[&str] = &[
    "python", "pypy", "perl", "ruby", "irb", "php", "lua", "luajit", "node", "nodejs", "deno", "bun", "julia",
    "java", "jshell", "guile", "racket", "Rscript", "R", "ocaml", "ghci", "erl", "elixir", "tclsh", "wish",
];

/// Programs that are many programs, chosen by the name they are run as
/// (`argv[0]`, which is the allowed name here): where a name is a link to
/// one, the name decides.
const MULTI_CALL: &[&str] = &["busybox", "toybox", "coreutils"];

/// Whether `name` is a program that runs others (see [`RUNS_OTHERS`]).
pub fn runs_others(name: &str) -> bool {
    RUNS_OTHERS.contains(&name)
        || INTERPRETERS.iter().any(|i| {
            name.strip_prefix(i).is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-'))
        })
}

/// The allowed programs, each resolved once to an absolute path.
#[derive(Clone, Debug)]
pub struct Allowlist {
    programs: HashMap<String, PathBuf>,
}

impl Allowlist {
    /// Looks every name up in the server's `PATH`; see [`resolve_in`](Self::resolve_in).
    ///
    /// # Errors
    /// As [`resolve_in`](Self::resolve_in).
    pub fn resolve(names: &[String], allow_unsafe: bool) -> io::Result<Allowlist> {
        Self::resolve_in(names, &std::env::var_os("PATH").unwrap_or_default(), allow_unsafe)
    }

    /// Looks every name up in `path` (relative entries are skipped, so the
    /// server's working directory never decides what runs). A program that
    /// runs others ([`runs_others`]), by its name or by the name of the
    /// file it links to, is refused unless `allow_unsafe`.
    ///
    /// # Errors
    /// `InvalidInput` for an empty name or one with a `/`; `NotFound` for a
    /// name with no executable file in `path`; `PermissionDenied` for a
    /// program that runs others, without `allow_unsafe`.
    pub fn resolve_in(names: &[String], path: &std::ffi::OsStr, allow_unsafe: bool) -> io::Result<Allowlist> {
        let mut programs = HashMap::new();
        for name in names {
            if name.is_empty() || name.contains('/') || name.contains('\0') {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("--allow {name:?}: give a bare program name, looked up in PATH"),
                ));
            }
            let found = std::env::split_paths(path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join(name))
                .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0));
            let Some(found) = found else {
                return Err(io::Error::new(
                    ErrorKind::NotFound,
                    format!("--allow {name}: no executable named {name} in PATH"),
                ));
            };
            // What the name really is: `sh` may be `dash`, `awk` `mawk`.
            let real = std::fs::canonicalize(&found).ok();
            let real_name = real.as_deref().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or(name);
            let runner = if runs_others(name) {
                Some(name.as_str())
            } else if !MULTI_CALL.contains(&real_name) && runs_others(real_name) {
                Some(real_name)
            } else {
                None
            };
            if let (Some(runner), false) = (runner, allow_unsafe) {
                let is = if runner == name { String::new() } else { format!(" (it is {runner})") };
                return Err(io::Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "--allow {name}: refused: {name}{is} can run other programs (a shell too) or signal them, \
                         given the right arguments, and arguments are not checked: a client could run anything. \
                         Add --allow-unsafe if that is what you want"
                    ),
                ));
            }
            programs.insert(name.clone(), found);
        }
        Ok(Allowlist { programs })
    }

    /// The path to run for `program`, if it is allowed.
    pub fn get(&self, program: &str) -> Option<&PathBuf> {
        self.programs.get(program)
    }
}

/// Splits a command line into words: white space separates words; `'...'`
/// keeps everything literally; `"..."` keeps everything but `\"`, `\\`,
/// `\$` and `` \` ``, which stand for the second character (as in a POSIX
/// shell; there is no expansion here); outside quotes `\` makes the next character
/// literal. Quoted and unquoted pieces next to each other make one word
/// (`'a'"b"c` is `abc`), and `''` is an empty word.
///
/// # Errors
/// An unterminated quote or a trailing backslash.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("trailing backslash".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Quotes `arg` so that [`split_command`] gives it back as one word.
pub fn quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Quotes every argument and joins them into one command line.
pub fn join_command<S: AsRef<str>>(args: &[S]) -> String {
    args.iter().map(|a| quote(a.as_ref())).collect::<Vec<_>>().join(" ")
}

/// The handler: runs allowed commands and streams their output back.
#[derive(Debug)]
pub struct RemoteCommand {
    allow: Allowlist,
    timeout: Duration,
    frame_timeout: Duration,
}

impl RemoteCommand {
    /// A handler for `config`.
    ///
    /// # Errors
    /// See [`Allowlist::resolve`].
    pub fn new(config: &Config) -> io::Result<RemoteCommand> {
        Ok(RemoteCommand {
            allow: Allowlist::resolve(&config.allow, config.allow_unsafe)?,
            timeout: config.timeout,
            frame_timeout: config.frame_timeout,
        })
    }
}

/// Binds the server; run it with `serve_forever`. By default a pool of 2 to
/// [`MAX_WORKERS`] threads serves one connection each (it grows as clients
/// come: a few that hold a connection open cannot lock the others out);
/// further clients wait their turn in the pool's queue and the listen
/// backlog. [`Config::strategy`] chooses another way.
///
/// # Errors
/// A program of the allowlist cannot be found or runs others (without
/// `allow_unsafe`), or the address cannot be bound.
pub fn server(addr: &str, config: &Config) -> io::Result<Server<Tcp, AnyStrategy>> {
    let handler = RemoteCommand::new(config)?;
    TcpServer::builder()
        .strategy(config.strategy.clone())
        .idle_timeout(IDLE_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .bind(addr, handler)
}

fn timed_out(what: String) -> io::Error {
    io::Error::new(ErrorKind::TimedOut, what)
}

/// Sends one tagged frame, by `deadline` at the latest.
fn send_by(req: &mut StreamRequest, tag: u8, data: &[u8], deadline: Instant) -> io::Result<()> {
    let mut body = Vec::with_capacity(1 + data.len());
    body.push(tag);
    body.extend_from_slice(data);
    send_body_by(req, &body, deadline)
}

/// Sends a frame whose body (tag included) is ready, header and body in
/// one buffer, by `deadline` at the latest: every write waits only for
/// what is left until then, so a client that reads a little now and then
/// cannot stretch a frame (a socket's send timeout is per call).
fn send_body_by(req: &mut StreamRequest, body: &[u8], deadline: Instant) -> io::Result<()> {
    let mut wire = Vec::with_capacity(LengthPrefixed::HEADER + body.len());
    LengthPrefixed::new(MAX_REPLY).write_frame(&mut wire, body)?;
    let peer = req.peer_addr().clone();
    let mut stream = req.socket()?;
    let mut sent = 0;
    while sent < wire.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(format!("sending to {peer} did not finish in time")));
        }
        stream.set_write_timeout(Some(left.min(WRITE_TIMEOUT)))?;
        match stream.write(&wire[sent..]) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "connection closed while writing")),
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether the client has closed (or reset) the connection. Looks without
/// consuming: a command the client already sent next stays in place.
fn client_gone(stream: &Stream) -> bool {
    let mut probe = [MaybeUninit::<u8>::uninit(); 1];
    match SockRef::from(stream).recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
}

/// The command's supervisor. `Command::spawn` forks a child; before it
/// execs, that child (the supervisor) makes itself a *child subreaper*
/// (`PR_SET_CHILD_SUBREAPER`) and forks again: the grandchild, in a process
/// group of its own, execs the command. Whatever the command starts that
/// outlives its parent — `setsid -f`, a double fork, a daemon — is
/// reparented to the supervisor, not to init. When the command exits, or
/// the server sends SIGTERM (time limit, client gone), or the server dies,
/// the supervisor kills the command's group, then every process that is
/// its child, generation by generation, until none is left; then it exits
/// as the command did (same code, or the same signal).
///
/// Everything here runs in a child forked from a threaded process: only
/// async-signal-safe calls, no allocation.
#[allow(unsafe_code)]
mod supervisor {
    use std::io;
    use std::mem::MaybeUninit;

    use libc::{c_int, pid_t};

    /// The signals the supervisor waits for; the command gets them unblocked.
    fn signals() -> libc::sigset_t {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset takes valid signals.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGCHLD] {
                libc::sigaddset(set.as_mut_ptr(), sig);
            }
            set.assume_init()
        }
    }

    /// Called through `pre_exec` in the forked child. Returns (to exec the
    /// command) only in the grandchild; the supervisor never returns.
    ///
    /// # Errors
    /// `prctl`, `sigprocmask` or `fork` failed: nothing was started.
    pub(super) fn start() -> io::Result<()> {
        // SAFETY: plain system calls on values of our own; see the module doc.
        unsafe {
            let server = libc::getppid();
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // If the server's thread dies, the supervisor cleans up too.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
            let wanted = signals();
            let mut old = MaybeUninit::<libc::sigset_t>::uninit();
            if libc::sigprocmask(libc::SIG_BLOCK, &wanted, old.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => {
                    // The command: a group of its own, signals as they were.
                    libc::setpgid(0, 0);
                    libc::sigprocmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
                    Ok(())
                }
                command => supervise(command, server, &wanted),
            }
        }
    }

    /// The command has exited (and is left unreaped, so that its pid and
    /// group id cannot be reused meanwhile), or `false`. Reaps the other
    /// children that have exited.
    unsafe fn command_exited(command: pid_t) -> bool {
        loop {
            let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
            // SAFETY: waitid writes into `info`, zeroed so that "none" reads as pid 0.
            let r = unsafe {
                libc::waitid(libc::P_ALL, 0, info.as_mut_ptr(), libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
            };
            // SAFETY: initialised (zeroed, then possibly filled).
            let pid = unsafe { info.assume_init().si_pid() };
            if r != 0 || pid == 0 {
                return false;
            }
            if pid == command {
                return true;
            }
            // SAFETY: reaping a child of ours that has exited.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }

    /// Kills and reaps every child but `command` (up to 256 a call); the
    /// number found.
    unsafe fn kill_children(command: pid_t) -> usize {
        let mut pids = [0 as pid_t; 256];
        let mut found = 0;
        // SAFETY: a NUL-terminated path; a buffer of our own.
        unsafe {
            let fd = libc::open(c"/proc/thread-self/children".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return 0;
            }
            let mut buf = [0u8; 512];
            let mut pid: pid_t = 0;
            'read: loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                for &b in &buf[..n as usize] {
                    if b.is_ascii_digit() {
                        pid = pid.saturating_mul(10).saturating_add(pid_t::from(b - b'0'));
                    } else if pid > 0 {
                        if pid != command {
                            pids[found] = pid;
                            found += 1;
                            if found == pids.len() {
                                break 'read;
                            }
                        }
                        pid = 0;
                    }
                }
            }
            if pid > 0 && pid != command && found < pids.len() {
                pids[found] = pid;
                found += 1;
            }
            libc::close(fd);
            // Each is our unreaped child: its pid cannot have been reused.
            for &pid in &pids[..found] {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        found
    }

    unsafe fn supervise(command: pid_t, server: pid_t, wanted: &libc::sigset_t) -> ! {
        // SAFETY: see the module doc.
        unsafe {
            // Let go of everything inherited: the server's sockets, std's
            // exec-error pipe (so that `spawn` returns), and the command's
            // output pipes (so that they end when the command's side does).
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
            }
            if libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint) != 0 {
                for fd in 3..65_536 {
                    libc::close(fd);
                }
            }
            let tick = libc::timespec { tv_sec: 0, tv_nsec: 100_000_000 };
            loop {
                if command_exited(command) {
                    break;
                }
                let sig = libc::sigtimedwait(wanted, std::ptr::null_mut(), &tick);
                if matches!(sig, libc::SIGTERM | libc::SIGHUP | libc::SIGINT) || libc::getppid() != server {
                    break;
                }
            }
            // The command's group, the command itself (it may have left its
            // group), then whatever has become our child, until none is left.
            libc::kill(-command, libc::SIGKILL);
            libc::kill(command, libc::SIGKILL);
            for _ in 0..100_000 {
                if kill_children(command) == 0 {
                    break;
                }
            }
            let mut status: c_int = 0;
            if libc::waitpid(command, &mut status, 0) != command {
                libc::_exit(1);
            }
            // Exit as the command did.
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::signal(sig, libc::SIG_DFL);
                let mut set = MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(set.as_mut_ptr());
                libc::sigaddset(set.as_mut_ptr(), sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut());
                libc::kill(libc::getpid(), sig);
                libc::_exit(128 + sig);
            }
            libc::_exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 })
        }
    }
}

/// A running command (its supervisor, see [`supervisor`]): on drop, the
/// supervisor is told to kill the command and whatever it started, and is
/// reaped, however the command ended.
struct Running {
    child: Child,
    status: Option<ExitStatus>,
}

impl Running {
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_some() {
            return; // the supervisor exited: everything below it is gone
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) touches no memory of ours. The supervisor is
            // our unreaped child: its pid cannot have been reused.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let until = Instant::now() + STOP_GRACE;
        let mut pause = Duration::from_millis(1);
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        log::warn!("the supervisor of pid {} did not exit in {STOP_GRACE:?}; killing it", self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a pipe into tagged chunks until it ends or nobody listens.
fn pump(mut pipe: impl Read, tag: u8, tx: Sender<Vec<u8>>) {
    loop {
        let mut chunk = vec![0u8; 1 + CHUNK];
        chunk[0] = tag;
        match pipe.read(&mut chunk[1..]) {
            Ok(0) => return,
            Ok(n) => {
                chunk.truncate(1 + n);
                if tx.send(chunk).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn spawn_pumps(stdout: ChildStdout, stderr: ChildStderr) -> io::Result<Receiver<Vec<u8>>> {
    // Bounded: a client that reads slowly slows the command down (its pipes
    // fill) instead of filling the server's memory.
    let (tx, rx) = crossbeam_channel::bounded(4);
    let tx2 = tx.clone();
    let thread = |name: &str| std::thread::Builder::new().name(name.into()).stack_size(PUMP_STACK);
    thread("stdout-pump").spawn(move || pump(stdout, TAG_STDOUT, tx))?;
    thread("stderr-pump").spawn(move || pump(stderr, TAG_STDERR, tx2))?;
    Ok(rx)
}

/// How a command ended, for the final frame.
enum Ended {
    Exited(ExitStatus),
    Failed(String),
}

impl RemoteCommand {
    /// Checks and splits a command line: the argv to run, or why not.
    fn prepare(&self, line: &[u8]) -> Result<(PathBuf, Vec<String>), String> {
        let line = std::str::from_utf8(line).map_err(|_| "the command line is not valid UTF-8".to_string())?;
        let words = split_command(line)?;
        let Some(program) = words.first() else { return Err("empty command line".into()) };
        if program.contains('/') {
            return Err(format!("{program}: refused: give a bare program name, not a path"));
        }
        match self.allow.get(program) {
            Some(path) => Ok((path.clone(), words)),
            None => Err(format!("{program}: not allowed on this server")),
        }
    }

    /// Runs one command line and sends its frames. An error means the
    /// connection is unusable.
    fn run(&self, req: &mut StreamRequest, line: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + self.timeout;
        let ended = match self.prepare(line) {
            Err(msg) => Ended::Failed(msg),
            Ok((path, argv)) => self.execute(req, path, &argv, deadline)?,
        };
        // The final frame gets what is left of the time limit, and at
        // least a moment (a timed-out command must be able to say so).
        let by = deadline.max(Instant::now() + FINAL_FRAME);
        match ended {
            Ended::Exited(status) => {
                let code = status.code().or(status.signal().map(|s| -s)).unwrap_or(-1);
                // The command line as the client sent it, escaped: a line
                // break in it must not write a log line of its own.
                log::info!("{}: `{}` exited with {code}", req.peer_addr(), Escaped(line));
                send_by(req, TAG_EXIT, code.to_string().as_bytes(), by)
            }
            Ended::Failed(msg) => {
                log::info!("{}: `{}`: {}", req.peer_addr(), Escaped(line), Escaped::text(&msg));
                send_by(req, TAG_ERROR, msg.as_bytes(), by)
            }
        }
    }

    fn execute(&self, req: &mut StreamRequest, path: PathBuf, argv: &[String], deadline: Instant) -> io::Result<Ended> {
        let mut command = Command::new(&path);
        command
            .arg0(OsString::from(&argv[0]))
            .args(&argv[1..])
            // Nothing of the server's environment: its secrets stay its own.
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("LANG", CHILD_LANG)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The supervisor: out of the server's group (a Ctrl-C at the
            // terminal is the server's to handle).
            .process_group(0);
        // SAFETY: `supervisor::start` makes only async-signal-safe calls.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(supervisor::start);
        }
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return Ok(Ended::Failed(format!("{}: cannot run: {e}", argv[0]))),
        };
        let mut running = Running { child, status: None };
        let (Some(stdout), Some(stderr)) = (running.child.stdout.take(), running.child.stderr.take()) else {
            return Ok(Ended::Failed("cannot capture the output".into()));
        };
        let output = match spawn_pumps(stdout, stderr) {
            Ok(rx) => rx,
            Err(e) => return Ok(Ended::Failed(format!("cannot start output threads: {e}"))),
        };
        let out_of_time = || Ended::Failed(format!("timed out after {:?}; killed", self.timeout));
        let gone = || io::Error::new(ErrorKind::ConnectionAborted, "the client went away; command killed");
        let mut drain_until: Option<Instant> = None;
        // Output, until both pipes end (or the program exited and the drain
        // time passed: something it started holds them).
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(out_of_time());
            }
            if drain_until.is_some_and(|d| now >= d) {
                break;
            }
            let wait = TICK.min(deadline - now).min(drain_until.map_or(TICK, |d| d - now));
            match output.recv_timeout(wait) {
                Ok(body) => {
                    // A client that reads slowly or not at all must not
                    // stretch the time limit: the frame must be sent by the
                    // deadline. (A frame cut short cannot be followed by a
                    // message: the connection closes, and `running` kills on
                    // drop.)
                    if let Err(e) = send_body_by(req, &body, deadline) {
                        if Instant::now() >= deadline {
                            return Err(timed_out(format!(
                                "timed out after {:?} while the client was not reading; killed",
                                self.timeout
                            )));
                        }
                        return Err(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if client_gone(req.socket()?) {
                        return Err(gone());
                    }
                    if drain_until.is_none() && running.try_wait()?.is_some() {
                        drain_until = Some(Instant::now() + DRAIN);
                    }
                }
            }
        }
        // The pipes are done; wait for the program itself.
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = running.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Ok(out_of_time());
            }
            if client_gone(req.socket()?) {
                return Err(gone());
            }
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(TICK);
        };
        Ok(Ended::Exited(status))
    }

    /// Waits for the next command frame: `None` at the end of the
    /// connection — or, under the event strategy, when nothing has come
    /// yet: the connection parks and `handle` is called again when it
    /// sends (nothing here outlives the call). Waiting for its first byte
    /// is bounded by the idle timeout; once it has begun, the whole frame
    /// must arrive within `frame_timeout`, or the client is told so and the
    /// connection closes (a client that trickles bytes resets the idle
    /// timeout each time).
    fn next_command(&self, req: &mut StreamRequest, line: &mut Vec<u8>) -> io::Result<Option<()>> {
        match req.wait_for_data() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::ConnectionReset) => return Ok(None),
            Err(e) => return Err(e),
        }
        let by = Instant::now() + self.frame_timeout;
        req.set_read_deadline(Some(by))?;
        let read = LengthPrefixed::new(MAX_COMMAND).read_frame(req, line);
        req.set_read_deadline(None)?;
        match read {
            Ok(true) => Ok(Some(())),
            Ok(false) => Ok(None),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                // Nothing was allocated for it; say why, then close.
                let msg = format!("{e}; closing the connection");
                let _ = send_by(req, TAG_ERROR, msg.as_bytes(), Instant::now() + FINAL_FRAME);
                Ok(None)
            }
            Err(e) if e.kind() == ErrorKind::TimedOut && Instant::now() >= by => {
                let msg =
                    format!("the command did not arrive within {:?} of its first byte; closing", self.frame_timeout);
                log::info!("{}: {msg}", req.peer_addr());
                let _ = send_by(req, TAG_ERROR, msg.as_bytes(), Instant::now() + FINAL_FRAME);
                Ok(None)
            }
            // A client gone mid-frame, or idle too long: the usual end.
            Err(e)
                if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::TimedOut) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl RequestHandler<StreamRequest> for RemoteCommand {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        // One command after another; under the event strategy this returns
        // whenever the connection parks between two, and starts again here
        // with the next one (a command runs to its end in one call).
        let mut line = Vec::new();
        while self.next_command(req, &mut line)?.is_some() {
            match self.run(req, &line) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                    ) =>
                {
                    log::info!("{}: {}", req.peer_addr(), Escaped::text(&e.to_string()));
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- client

/// How a command ended, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran; the exit status (negative: killed by that signal).
    Exit(i32),
    /// The server refused it or it failed (timed out, could not start...).
    Error(String),
}

impl Outcome {
    /// The client's exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exit(c) if *c >= 0 => (*c).min(255),
            Outcome::Exit(signal) => 128 + signal.saturating_neg().min(127),
            Outcome::Error(_) => 1,
        }
    }
}

fn bad_reply(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("bad reply from the server: {what}"))
}

/// Sends one command line and copies its output to `out` and `err` as it
/// arrives, until the final frame.
///
/// # Errors
/// The connection failed or closed, or the server sent something that is
/// not this protocol.
pub fn run_command<S: Read + Write + ?Sized>(
    stream: &mut S,
    line: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<Outcome> {
    LengthPrefixed::new(MAX_COMMAND).write_frame(stream, line.as_bytes())?;
    let codec = LengthPrefixed::new(MAX_REPLY);
    let mut frame = Vec::new();
    loop {
        if !codec.read_frame(stream, &mut frame)? {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        let Some((&tag, data)) = frame.split_first() else { return Err(bad_reply("an empty frame")) };
        match tag {
            TAG_STDOUT => {
                out.write_all(data)?;
                out.flush()?;
            }
            TAG_STDERR => {
                err.write_all(data)?;
                err.flush()?;
            }
            TAG_EXIT => {
                let code = std::str::from_utf8(data).ok().and_then(|s| s.parse().ok());
                return code.map(Outcome::Exit).ok_or_else(|| bad_reply("an unreadable exit status"));
            }
            TAG_ERROR => return Ok(Outcome::Error(String::from_utf8_lossy(data).into_owned())),
            other => return Err(bad_reply(format!("unknown frame tag {:?}", other as char))),
        }
    }
}

/// The tutorial's interactive client: reads command lines from `input`
/// until its end (or `quit`), runs each, prints errors and non-zero exit
/// statuses on `err`. Prompts go to `err` too.
///
/// # Errors
/// The connection failed, or `input` could not be read.
pub fn interactive<S: Read + Write + ?Sized>(
    stream: &mut S,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let mut line = String::new();
    loop {
        write!(err, ">> ")?;
        err.flush()?;
        line.clear();
        if input.read_line(&mut line)? == 0 {
            writeln!(err)?;
            return Ok(());
        }
        let command = line.trim();
        if command.is_empty() {
            continue;
        }
        if command == "quit" || command == "exit" {
            return Ok(());
        }
        match run_command(stream, command, out, err)? {
            Outcome::Exit(0) => {}
            Outcome::Exit(c) if c > 0 => writeln!(err, "[exit status {c}]")?,
            Outcome::Exit(signal) => writeln!(err, "[killed by signal {}]", signal.saturating_neg())?,
            Outcome::Error(msg) => writeln!(err, "error: {msg}")?,
        }
    }
}

/// Connects to `addr` ([`args::connect`]), with Nagle's delay off: a
/// command line goes at once.
///
/// # Errors
/// The address does not resolve, or no address accepts.
pub fn connect(addr: &str) -> io::Result<TcpStream> {
    let s = args::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

// ------------------------------------------------------------- arguments

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Args {
    /// `server ...`
    Server {
        /// Where to listen.
        addr: String,
        /// What to run.
        config: Config,
    },
    /// `client ...`; no command: interactive.
    Client {
        /// Where the server is.
        addr: String,
        /// The command and its arguments.
        command: Vec<String>,
    },
    /// `--help`
    Help,
}

/// The usage text.
pub const USAGE: &str = "\
usage: remote_command server [--addr ADDR] [--timeout SECS] [--strategy STRATEGY] [--allow-unsafe]
                             --allow PROGRAM [--allow PROGRAM ...]
       remote_command client [--addr ADDR] [COMMAND [ARGS...]]

server: runs allowed programs (bare names, no shell) for clients; default
        address 127.0.0.1:9001, time limit 30 s per command (output included);
        a worker per connection (--strategy event: connections between
        commands hold no thread; 'threading(256)': a thread per connection).
        Arguments are NOT checked: an allowed program runs with any arguments,
        as the server's user. Programs that run others (env, find, xargs,
        shells, interpreters, nice, setsid, timeout, sudo...) give a shell
        and are refused unless --allow-unsafe.
client: runs COMMAND ARGS... on the server and exits with its status; with
        no COMMAND, reads command lines from stdin.";

/// Parses the arguments after the program name.
///
/// # Errors
/// A message for the user; print it with [`USAGE`].
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut it = Flags::new(args);
    let mode = it.next().ok_or("missing `server` or `client`")?;
    let mut addr = DEFAULT_ADDR.to_string();
    match mode {
        "-h" | "--help" | "help" => Ok(Args::Help),
        "server" => {
            let mut config = Config::new(Vec::new());
            while let Some(arg) = it.next() {
                match arg {
                    "--addr" => addr = it.value(arg)?,
                    "--allow" => config.allow.push(it.value(arg)?),
                    "--allow-unsafe" => config.allow_unsafe = true,
                    "--strategy" => config.strategy = it.strategy(arg)?,
                    "--timeout" => {
                        let v = it.value(arg)?;
                        let secs: f64 = v.parse().map_err(|_| format!("--timeout {v}: not a number of seconds"))?;
                        if !(secs > 0.0 && secs <= 86_400.0) {
                            return Err(format!("--timeout {v}: give 0 < SECS <= 86400"));
                        }
                        config.timeout = Duration::from_secs_f64(secs);
                    }
                    "-h" | "--help" => return Ok(Args::Help),
                    other => return Err(format!("unexpected argument {other:?}")),
                }
            }
            if config.allow.is_empty() {
                return Err("give at least one --allow PROGRAM".into());
            }
            Ok(Args::Server { addr, config })
        }
        "client" => {
            let mut command = Vec::new();
            while let Some(arg) = it.next() {
                match arg {
                    "--addr" => addr = it.value(arg)?,
                    "-h" | "--help" => return Ok(Args::Help),
                    "--" => {
                        command.extend(it.by_ref().map(str::to_string));
                    }
                    other if other.starts_with("--") => return Err(format!("unknown option {other:?}")),
                    _ => {
                        command.push(arg.to_string());
                        command.extend(it.by_ref().map(str::to_string));
                    }
                }
            }
            Ok(Args::Client { addr, command })
        }
        other => Err(format!("unknown mode {other:?}: give `server` or `client`")),
    }
}

/// Runs what the command line asks; the exit code: the command's status
/// for a client.
///
/// # Errors
/// The server cannot be bound or served; the client cannot connect or
/// talk.
pub fn run(args: Args) -> io::Result<i32> {
    match args {
        Args::Help => {
            println!("{USAGE}");
            Ok(0)
        }
        Args::Server { addr, config } => {
            let server = server(&addr, &config)?;
            // SAFETY: geteuid(2) has no preconditions and touches no memory.
            #[allow(unsafe_code)]
            let root = unsafe { libc::geteuid() } == 0;
            if root {
                log::warn!("running as root: every allowed program runs as root, with any arguments a client sends");
            }
            if config.allow_unsafe {
                log::warn!("--allow-unsafe: a client may be able to run any program, a shell included");
            }
            let mut names = config.allow.clone();
            names.sort();
            eprintln!(
                "remote_command: listening on {} ({}); allowed: {}",
                server.server_address(),
                server.strategy(),
                names.join(", ")
            );
            server.handle().shutdown_on_signal()?;
            server.serve_forever()?;
            Ok(0)
        }
        Args::Client { addr, command } => {
            let mut stream = connect(&addr)?;
            let (mut out, mut err) = (io::stdout(), io::stderr());
            if command.is_empty() {
                interactive(&mut stream, &mut io::stdin().lock(), &mut out, &mut err)?;
                return Ok(0);
            }
            let outcome = run_command(&mut stream, &join_command(&command), &mut out, &mut err)?;
            if let Outcome::Error(msg) = &outcome {
                eprintln!("remote_command: {msg}");
            }
            Ok(outcome.exit_code())
        }
    }
}
