//! The tutorials' "simulated ssh" (remote command execution), rebuilt
//! without its bugs: every message is a length-prefixed frame, so large
//! output no longer spills into the answer to the next command (the "sticky
//! packet" problem), commands run without a shell and only if the operator
//! allowed the program, output streams back while the command runs, and
//! every command has a time limit.
//!
//! ```text
//! cargo run --example remote_command -- server --allow ls --allow echo --allow head
//! cargo run --example remote_command -- client ls -l /tmp          # one command
//! cargo run --example remote_command -- client --addr 127.0.0.1:9001  # interactive
//! ```
//!
//! Server options: `--addr ADDR` (default `127.0.0.1:9001`, loopback only),
//! `--allow PROGRAM` (repeatable, at least one; bare names looked up in
//! `PATH` once, at start), `--timeout SECS` (default 30). The client's
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
//! * Server → client: frames whose first byte says what follows:
//!   `o` a chunk of stdout, `e` a chunk of stderr (each at most 64 KiB, in
//!   the order they were read), then exactly one final frame: `x` and the
//!   exit status in ASCII decimal (negative: the signal that killed it, as
//!   Python's `returncode`), or `!` and a UTF-8 error message (refused,
//!   malformed, could not start, timed out).
//! * Several commands may be sent on one connection, one after the other.
//!   A command line longer than 64 KiB gets a `!` frame and the connection
//!   closes. Closing the connection — even only its write side — while a
//!   command runs kills the command; so does the time limit. Whatever the
//!   command started in its process group is killed when it ends.
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
use std::net::{TcpStream, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use socket2::SockRef;
use socketserver::framing::LengthPrefixed;
use socketserver::{RequestHandler, Stream, StreamRequest, ThreadPool, ThreadPoolTcpServer};

/// The server's default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9001";
/// The default time limit of a command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
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
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// What the server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Programs clients may run: bare names, looked up in `PATH` at start.
    pub allow: Vec<String>,
    /// The time limit of each command; the command is killed when it passes.
    pub timeout: Duration,
}

/// The allowed programs, each resolved once to an absolute path.
#[derive(Clone, Debug)]
pub struct Allowlist {
    programs: HashMap<String, PathBuf>,
}

impl Allowlist {
    /// Looks every name up in `PATH` (relative `PATH` entries are skipped,
    /// so the server's working directory never decides what runs).
    ///
    /// # Errors
    /// `InvalidInput` for an empty name or one with a `/`; `NotFound` for a
    /// name with no executable file in `PATH`.
    pub fn resolve(names: &[String]) -> io::Result<Allowlist> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut programs = HashMap::new();
        for name in names {
            if name.is_empty() || name.contains('/') || name.contains('\0') {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("--allow {name:?}: give a bare program name, looked up in PATH"),
                ));
            }
            let found = std::env::split_paths(&path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join(name))
                .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0));
            match found {
                Some(p) => programs.insert(name.clone(), p),
                None => {
                    return Err(io::Error::new(
                        ErrorKind::NotFound,
                        format!("--allow {name}: no executable named {name} in PATH"),
                    ));
                }
            };
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
}

impl RemoteCommand {
    /// A handler for `config`.
    ///
    /// # Errors
    /// See [`Allowlist::resolve`].
    pub fn new(config: &Config) -> io::Result<RemoteCommand> {
        Ok(RemoteCommand { allow: Allowlist::resolve(&config.allow)?, timeout: config.timeout })
    }
}

/// Binds the server; run it with `serve_forever`. A pool of 2 to 64
/// threads serves one connection each; further clients wait their turn in
/// the pool's queue and the listen backlog.
///
/// # Errors
/// A program of the allowlist cannot be found, or the address cannot be bound.
pub fn server(addr: &str, config: &Config) -> io::Result<ThreadPoolTcpServer> {
    let handler = RemoteCommand::new(config)?;
    let two = NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN);
    let most = NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN);
    ThreadPoolTcpServer::builder()
        .strategy(ThreadPool::new(two).max_workers(most))
        .nodelay(true)
        .idle_timeout(IDLE_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .bind(addr, handler)
}

/// Sends one tagged frame.
fn send(req: &mut StreamRequest, tag: u8, data: &[u8]) -> io::Result<()> {
    let mut body = Vec::with_capacity(1 + data.len());
    body.push(tag);
    body.extend_from_slice(data);
    send_body(req, &body)
}

/// Sends a frame whose body (tag included) is ready, header and body in one
/// write.
fn send_body(req: &mut StreamRequest, body: &[u8]) -> io::Result<()> {
    let mut wire = Vec::with_capacity(LengthPrefixed::HEADER + body.len());
    LengthPrefixed::new(MAX_REPLY).write_frame(&mut wire, body)?;
    req.write_all(&wire)
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

/// A running command: on drop, whatever is left in its process group is
/// killed and the program reaped, however the command ended.
struct Running {
    child: Child,
    status: Option<ExitStatus>,
}

impl Running {
    fn kill_group(&self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) touches no memory of ours. The group is the one
            // the child leads (`process_group(0)`): its id is not reused while
            // the unreaped leader or any other member lives (once none does,
            // the call fails with ESRCH, ignored).
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill_group();
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    std::thread::Builder::new().name("stdout-pump".into()).spawn(move || pump(stdout, TAG_STDOUT, tx))?;
    std::thread::Builder::new().name("stderr-pump".into()).spawn(move || pump(stderr, TAG_STDERR, tx2))?;
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
        let ended = match self.prepare(line) {
            Err(msg) => Ended::Failed(msg),
            Ok((path, argv)) => self.execute(req, path, &argv)?,
        };
        match ended {
            Ended::Exited(status) => {
                let code = status.code().or(status.signal().map(|s| -s)).unwrap_or(-1);
                log::info!("{}: `{}` exited with {code}", req.peer_addr(), String::from_utf8_lossy(line));
                send(req, TAG_EXIT, code.to_string().as_bytes())
            }
            Ended::Failed(msg) => {
                log::info!("{}: `{}`: {msg}", req.peer_addr(), String::from_utf8_lossy(line));
                send(req, TAG_ERROR, msg.as_bytes())
            }
        }
    }

    fn execute(&self, req: &mut StreamRequest, path: PathBuf, argv: &[String]) -> io::Result<Ended> {
        let mut command = Command::new(&path);
        command
            .arg0(OsString::from(&argv[0]))
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
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
        let deadline = Instant::now() + self.timeout;
        let timed_out = || Ended::Failed(format!("timed out after {:?}; killed", self.timeout));
        let gone = || io::Error::new(ErrorKind::ConnectionAborted, "the client went away; command killed");
        let mut drain_until: Option<Instant> = None;
        // Output, until both pipes end (or the program exited and the drain
        // time passed: something it started holds them).
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(timed_out());
            }
            if drain_until.is_some_and(|d| now >= d) {
                break;
            }
            let wait = TICK.min(deadline - now).min(drain_until.map_or(TICK, |d| d - now));
            match output.recv_timeout(wait) {
                Ok(body) => {
                    // A client that does not read must not stretch the time
                    // limit: the write may wait only until the deadline. (A
                    // frame cut short cannot be followed by a message: the
                    // connection closes, and `running` kills on drop.)
                    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                    req.socket()?.set_write_timeout(Some(left.min(WRITE_TIMEOUT)))?;
                    if let Err(e) = send_body(req, &body) {
                        if Instant::now() >= deadline {
                            return Err(io::Error::new(
                                ErrorKind::TimedOut,
                                format!("timed out after {:?} while the client was not reading; killed", self.timeout),
                            ));
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
                return Ok(timed_out());
            }
            if client_gone(req.socket()?) {
                return Err(gone());
            }
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(TICK);
        };
        // Anything the program left behind in its group goes too (on drop).
        Ok(Ended::Exited(status))
    }
}

impl RequestHandler<StreamRequest> for RemoteCommand {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let codec = LengthPrefixed::new(MAX_COMMAND);
        let mut line = Vec::new();
        loop {
            match codec.read_frame(req, &mut line) {
                Ok(true) => match self.run(req, &line) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                        ) =>
                    {
                        log::info!("{}: {e}", req.peer_addr());
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                },
                Ok(false) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    // Nothing was allocated for it; say why, then close.
                    let _ = send(req, TAG_ERROR, format!("{e}; closing the connection").as_bytes());
                    return Ok(());
                }
                // A client gone mid-frame, or idle too long: the usual end.
                Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::TimedOut => return Ok(()),
                Err(e) => return Err(e),
            }
        }
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

/// Connects to `addr` (10 s to connect).
///
/// # Errors
/// The address does not resolve, or no address accepts.
pub fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::NotFound, format!("{addr}: no address"));
    for a in addr.to_socket_addrs().map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))? {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = io::Error::new(e.kind(), format!("cannot connect to {a}: {e}")),
        }
    }
    Err(last)
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
usage: remote_command server [--addr ADDR] [--timeout SECS] --allow PROGRAM [--allow PROGRAM ...]
       remote_command client [--addr ADDR] [COMMAND [ARGS...]]

server: runs allowed programs (bare names, no shell) for clients; default
        address 127.0.0.1:9001, time limit 30 s per command.
client: runs COMMAND ARGS... on the server and exits with its status; with
        no COMMAND, reads command lines from stdin.";

/// Parses the arguments after the program name.
///
/// # Errors
/// A message for the user; print it with [`USAGE`].
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let mode = it.next().ok_or("missing `server` or `client`")?;
    let value = |it: &mut std::slice::Iter<'_, String>, flag: &str| -> Result<String, String> {
        it.next().cloned().ok_or_else(|| format!("{flag} needs a value"))
    };
    let mut addr = DEFAULT_ADDR.to_string();
    match mode.as_str() {
        "-h" | "--help" | "help" => Ok(Args::Help),
        "server" => {
            let mut config = Config { allow: Vec::new(), timeout: DEFAULT_TIMEOUT };
            while let Some(arg) = it.next() {
                match arg.as_str() {
                    "--addr" => addr = value(&mut it, arg)?,
                    "--allow" => config.allow.push(value(&mut it, arg)?),
                    "--timeout" => {
                        let v = value(&mut it, arg)?;
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
                match arg.as_str() {
                    "--addr" => addr = value(&mut it, arg)?,
                    "-h" | "--help" => return Ok(Args::Help),
                    "--" => {
                        command.extend(it.by_ref().cloned());
                    }
                    other if other.starts_with("--") => return Err(format!("unknown option {other:?}")),
                    _ => {
                        command.push(arg.clone());
                        command.extend(it.by_ref().cloned());
                    }
                }
            }
            Ok(Args::Client { addr, command })
        }
        other => Err(format!("unknown mode {other:?}: give `server` or `client`")),
    }
}

fn run_main(args: Args) -> io::Result<i32> {
    match args {
        Args::Help => {
            println!("{USAGE}");
            Ok(0)
        }
        Args::Server { addr, config } => {
            let server = server(&addr, &config)?;
            let mut names = config.allow.clone();
            names.sort();
            eprintln!("remote_command: listening on {}; allowed: {}", server.server_address(), names.join(", "));
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

#[allow(dead_code)] // the tests include this file as a module
fn main() {
    // Logs (the library's errors included) on stderr; RUST_LOG=debug for more.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = match std::env::args_os().skip(1).map(|a| a.into_string()).collect() {
        Ok(a) => a,
        Err(bad) => {
            eprintln!("remote_command: argument {bad:?} is not valid UTF-8\n{USAGE}");
            std::process::exit(2);
        }
    };
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("remote_command: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match run_main(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("remote_command: {e}");
            std::process::exit(1);
        }
    }
}
