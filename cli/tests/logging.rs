//! Logging never holds up serving or shutdown: `socketserver echo` with its
//! stderr on a pipe of one page that nobody reads, made to log thousands of
//! lines (connections refused by `--allow`, each logged at debug on the
//! accept thread), still serves an honest client, and SIGTERM still ends it
//! with exit code 0; the lines it could not write are counted, and what is
//! queued at exit is written once stderr takes it.
//!
//! Every wait has a deadline; every child is killed by its PID if a test
//! fails; loopback only (127.0.0.1 to 127.0.0.251).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_socketserver");
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long an exit after SIGTERM may take: 10 times EXIT_FLUSH (cli/src/main.rs,
/// 2 s), the longest the process waits for stderr to take its last lines.
const EXIT_LIMIT: Duration = Duration::from_secs(20);
/// Connections refused, each a debug line: far more than the pipe (one
/// page, ~45 lines) and the command's queue (1,024 lines) hold together.
const FLOOD: usize = 3_000;

/// A pipe whose buffer is as small as Linux allows (one page): the read
/// end, and the write end for the child's stderr. Both close on exec; the
/// child gets the write end as its fd 2 only.
fn tiny_pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nothing else.
    let (read, write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    let size = unsafe { libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 4096) };
    assert!(size > 0, "F_SETPIPE_SZ: {}", io::Error::last_os_error());
    (read, write)
}

/// A `socketserver echo` child, killed (by PID) and reaped on drop.
struct Echo {
    child: Child,
    addr: SocketAddr,
    status: Option<ExitStatus>,
}

impl Echo {
    fn start(stderr: OwnedFd, extra: &[&str]) -> Echo {
        let mut cmd = Command::new(BIN);
        cmd.args(["echo", "--tcp", "127.0.0.1:0", "--allow", "127.0.0.1/32", "--log-level", "debug"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("start socketserver echo");
        // Our copy of the write end goes with `cmd`: the child holds the only one.
        drop(cmd);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut echo = Echo { child, addr: "127.0.0.1:1".parse().unwrap(), status: None };
        let line = rx.recv_timeout(TIMEOUT).expect("a listening line within 10 s");
        echo.addr = line.trim().strip_prefix("listening tcp ").expect("a listening line").parse().unwrap();
        echo
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, not reaped yet (status is None).
        assert!(self.status.is_none());
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status.is_none()
    }

    /// The exit status and how long it took, or a panic after `limit`.
    fn exits_within(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        while self.running() {
            assert!(start.elapsed() < limit, "the server still runs {limit:?} after being told to stop");
            thread::sleep(Duration::from_millis(2));
        }
        (self.status.unwrap(), start.elapsed())
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `n` connections from 127.0.0.2 to 127.0.0.251, each refused by
/// `--allow 127.0.0.1/32` (and logged at debug); stops early if one cannot
/// even connect. The sockets are held until the caller drops them: the
/// server closes first, so no client port is left in TIME_WAIT for a later
/// connection of the flood (or of another run) to collide with.
fn refused_flood(to: SocketAddr, n: usize) -> Vec<socket2::Socket> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let from = SocketAddr::from(([127, 0, 0, 2 + (i % 250) as u8], 0));
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&from.into()).unwrap();
        if socket.connect_timeout(&to.into(), Duration::from_secs(3)).is_err() {
            break;
        }
        held.push(socket);
    }
    held
}

/// One echo round trip from 127.0.0.1 on a new connection: how long it took,
/// or why it failed. The connection was made after the flood, so it sits
/// behind all of it in the listener's backlog: once it is served, every
/// connection of the flood has been taken and refused.
fn honest_round_trip(to: SocketAddr, wait: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, wait).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(b"still there?\n").map_err(|e| format!("write: {e}"))?;
    let mut back = [0u8; 13];
    s.read_exact(&mut back).map_err(|e| format!("no echo within {wait:?}: {e}"))?;
    assert_eq!(&back, b"still there?\n");
    Ok(start.elapsed())
}

/// Reads `r` to its end on a thread; the text, once the writer is gone.
fn read_all(mut r: File) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = r.read_to_end(&mut all);
        let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
    });
    rx
}

/// The freeze: stderr a pipe nobody reads, thousands of log lines.
/// Before: the accept thread blocked in the write of a log line, the honest
/// client got nothing, and SIGTERM was ignored until the pipe was drained.
#[test]
fn a_stderr_nobody_reads_holds_up_neither_serving_nor_shutdown() {
    let (pipe, stderr) = tiny_pipe();
    let mut server = Echo::start(stderr, &[]);
    let flooded = Instant::now();
    let flood = refused_flood(server.addr, FLOOD);
    let flood_took = flooded.elapsed();
    let served = honest_round_trip(server.addr, TIMEOUT);
    let made = flood.len();
    drop(flood);
    assert_eq!(made, FLOOD, "the flood could not even connect after {made} connections");
    let took = served.unwrap_or_else(|e| panic!("after {FLOOD} refused connections an honest client got nothing: {e}"));
    eprintln!("{FLOOD} refused connections in {flood_took:?}; then an honest round trip in {took:?}");
    // Nobody reads stderr still; the signal must end the process.
    server.signal(libc::SIGTERM);
    // The wrong outcome is an exit only once someone drains the pipe (never
    // here); the right one waits at most EXIT_FLUSH (2 s) for stderr.
    let (status, exit_took) = server.exits_within(EXIT_LIMIT);
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    eprintln!("exit 0 {exit_took:?} after SIGTERM, stderr never read");
    // What the pipe held: log lines, whole, and no panic.
    let text = read_all(pipe).recv_timeout(TIMEOUT).expect("the pipe reaches EOF once the process is gone");
    assert!(text.contains(" refused 127.0.0."), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// Lines that could not be queued are counted and reported once stderr
/// takes lines again; what is queued when the process exits is written
/// (the exit waits, bounded, for stderr to take it). Every refused
/// connection is either a line or counted in a "N log lines dropped" report.
#[test]
fn lines_dropped_are_counted_and_lines_queued_at_exit_are_written() {
    let (pipe, stderr) = tiny_pipe();
    let mut server = Echo::start(stderr, &[]);
    let flood = refused_flood(server.addr, FLOOD);
    assert_eq!(flood.len(), FLOOD);
    honest_round_trip(server.addr, TIMEOUT).expect("an honest client is served during the flood");
    drop(flood);
    server.signal(libc::SIGTERM);
    // Once the listener refuses connections, the servers have stopped and
    // the process is on its way out; it must wait for stderr to take its
    // queued lines (bounded), so it is still there a moment later.
    let deadline = Instant::now() + TIMEOUT;
    while TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_ok() {
        assert!(Instant::now() < deadline, "the listener still accepts after SIGTERM");
        thread::sleep(Duration::from_millis(5));
    }
    // A quiet period for a "must not happen": 300 ms of the 2 s (EXIT_FLUSH)
    // the process waits for stderr, in which it must not exit.
    thread::sleep(Duration::from_millis(300));
    assert!(server.running(), "the process exited with log lines still queued and stderr not read");
    let text = read_all(pipe);
    let (status, _) = server.exits_within(EXIT_LIMIT);
    assert_eq!(status.code(), Some(0), "exit status: {status}");
    let text = text.recv_timeout(TIMEOUT).expect("the pipe reaches EOF once the process is gone");
    let refused = text.lines().filter(|l| l.contains(" refused 127.0.0.")).count();
    let dropped: usize = text
        .lines()
        .filter_map(|l| l.split_once(" log lines dropped"))
        .map(|(n, _)| n.rsplit(' ').next().unwrap().parse::<usize>().expect("a count"))
        .sum();
    eprintln!("{refused} refused lines written, {dropped} lines reported dropped, of {FLOOD} refused connections");
    assert!(dropped > 0, "a flood this size must overflow the queue; stderr:\n{text}");
    assert!(
        refused + dropped >= FLOOD,
        "{refused} written + {dropped} reported dropped < {FLOOD}: lines lost silently"
    );
    // Besides the flood, only a few lines are logged here (the signal's).
    assert!(refused + dropped <= FLOOD + 10, "{refused} + {dropped}: lines counted twice?");
    for line in text.lines() {
        assert!(line.starts_with('[') || line.contains(" log lines dropped"), "a line cut or mixed: {line:?}");
    }
}

/// A stderr whose reader is gone (EPIPE on every write) does not stop the
/// server, nor slow its exit.
#[test]
fn a_closed_stderr_does_not_stop_the_server() {
    let (pipe, stderr) = tiny_pipe();
    drop(pipe);
    let mut server = Echo::start(stderr, &[]);
    assert_eq!(refused_flood(server.addr, 200).len(), 200);
    honest_round_trip(server.addr, TIMEOUT).expect("served with a closed stderr");
    server.signal(libc::SIGTERM);
    let (status, took) = server.exits_within(EXIT_LIMIT);
    assert_eq!(status.code(), Some(0), "{status}");
    // The behaviour is the bound: the wrong outcome is the full EXIT_FLUSH
    // wait (2 s, fixed in cli/src, so only 2x the bound); the right one
    // takes milliseconds, 100x below it.
    assert!(took < Duration::from_secs(1), "with stderr closed there is nothing to wait for at exit; took {took:?}");
}
