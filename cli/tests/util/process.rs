//! Processes the activation and restart tests start and watch: the command
//! itself, `systemd-socket-activate` in front of it, and the successors a
//! restart starts (which are not our children until their parent exits).

use std::io::{self, BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::{TIMEOUT, eventually_value};

pub const BIN: &str = env!("CARGO_BIN_EXE_socketserver");

/// What a process logs when it has handed over, before the successor's pid.
pub const HANDED: &str = "restart: handed over to pid ";

/// A child process: its stdout as lines (on a channel), its stderr
/// gathered, killed by its pid and reaped on drop unless already reaped.
pub struct Proc {
    child: Child,
    status: Option<ExitStatus>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Proc {
    /// Starts `cmd` with stdout read line by line on a thread.
    pub fn spawn(cmd: Command) -> Proc {
        let (mut proc, stdout) = Proc::spawn_keep_stdout(cmd);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        proc.lines = rx;
        proc
    }

    /// Starts `cmd` and leaves its stdout to the caller (`line` then sees
    /// nothing).
    pub fn spawn_keep_stdout(mut cmd: Command) -> (Proc, ChildStdout) {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG").env("RUST_BACKTRACE", "1");
        // A binary just copied may be busy for a moment ("Text file busy"):
        // a child another test forked meanwhile holds the copy's descriptor
        // until it execs.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => tries += 1,
                Err(e) => panic!("cannot run {cmd:?}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = child.stdout.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let (_, lines) = mpsc::channel();
        (Proc { child, status: None, lines, stderr }, stdout)
    }

    /// `socketserver ARGS`, reading its stdout.
    pub fn command(args: &[&str]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Proc::spawn(cmd)
    }

    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).unwrap()
    }

    /// The next stdout line; panics (with stderr) if none comes within `TIMEOUT`.
    pub fn line(&self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!("no stdout line ({e:?}); stderr: {}", self.stderr_text()),
        }
    }

    /// The next stdout line if one comes within `wait`.
    pub fn try_line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// The next `n` stdout lines, each a `listening` line, without the prefix.
    pub fn listening(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let line = self.line();
                line.strip_prefix("listening ").unwrap_or_else(|| panic!("not a listening line: {line:?}")).to_string()
            })
            .collect()
    }

    /// The address of the next line, which must be `listening KIND ADDR`.
    pub fn listening_on(&self, kind: &str) -> String {
        let line = self.line();
        let prefix = format!("listening {kind} ");
        line.strip_prefix(&prefix).unwrap_or_else(|| panic!("not a {prefix:?} line: {line:?}")).to_string()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits (at most `TIMEOUT`) until stderr contains `needle`; panics
    /// with all of stderr if it never does.
    pub fn expect_stderr(&self, needle: &str) {
        eventually_value(&format!("{needle:?} on stderr"), || self.stderr_text(), |text| text.contains(needle));
    }

    /// The number after the first `prefix` in stderr, once it shows
    /// (`restart: handed over to pid ` → the successor's pid).
    pub fn stderr_number_after(&self, prefix: &str) -> libc::pid_t {
        self.expect_stderr(prefix);
        number_after(&self.stderr_text(), prefix, 0)
    }

    /// The pid the `nth` hand-off (0: the first) logged on stderr names
    /// (a successor logs on the same stderr), once it is logged.
    pub fn handed_to(&self, nth: usize) -> libc::pid_t {
        let text = eventually_value(
            &format!("hand-off #{nth} on stderr"),
            || self.stderr_text(),
            |text| text.matches(HANDED).count() > nth,
        );
        number_after(&text, HANDED, nth)
    }

    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.status.is_none(), "signalling a process already reaped");
        // SAFETY: kill(2) on our own child, not reaped: its pid is still its own.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}): {}", self.pid(), io::Error::last_os_error());
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// The exit code, once the process exits (within `within`, else a panic).
    pub fn exit_code(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_status() {
                return s.code().unwrap_or_else(|| panic!("ended by a signal: {s}; stderr: {}", self.stderr_text()));
            }
            assert!(Instant::now() < deadline, "still running {within:?} later; stderr:\n{}", self.stderr_text());
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            // SAFETY: our own, unreaped child.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Orphans of this process's children become its children (once per
/// process; every test calls it first).
pub fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER: {}", std::io::Error::last_os_error());
    });
}

/// A successor the server started, ours to reap once its parent is gone;
/// killed (by its pid) and reaped on drop unless reaped already.
pub struct Successor {
    pub pid: libc::pid_t,
    code: Option<i32>,
}

impl Successor {
    pub fn new(pid: libc::pid_t) -> Successor {
        Successor { pid, code: None }
    }

    /// Its exit code, once it exits and its parent has exited too (so that
    /// it is this process's child), within `within`.
    pub fn exit_code(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        while self.code.is_none() {
            let mut status = 0;
            // SAFETY: waitpid on one pid with a valid status pointer.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if rc == self.pid {
                assert!(libc::WIFEXITED(status), "successor {} ended by signal {}", self.pid, libc::WTERMSIG(status));
                self.code = Some(libc::WEXITSTATUS(status));
                break;
            }
            // 0: still running; -1 (ECHILD): its parent still runs.
            assert!(Instant::now() < deadline, "successor {} did not exit within {within:?}", self.pid);
            std::thread::sleep(Duration::from_millis(2));
        }
        self.code.unwrap()
    }

    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.code.is_none(), "signalling a reaped successor");
        kill(self.pid, sig);
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if self.code.is_none() {
            // SAFETY: not reaped by us, and its parent never reaps a
            // successor it handed over to: the pid is still its own.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut status = 0;
            // SAFETY: as in `exit_code`.
            while unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } != self.pid
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// The number after the `nth` occurrence of `prefix` in `text`.
pub fn number_after(text: &str, prefix: &str, nth: usize) -> libc::pid_t {
    let rest = text.split(prefix).nth(nth + 1).unwrap_or_else(|| panic!("no {prefix:?} #{nth} in {text}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {prefix:?} in {text}"))
}

/// Whether `pid` names a live process (not gone, not a zombie).
pub fn alive(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The ports `pid`'s own IP sockets are bound to: TCP ones listening, and
/// UDP ones. Each of its socket descriptors is copied into this process
/// (`pidfd_getfd`, a child's or a descendant's) and asked (reading
/// `/proc/PID/net/tcp` instead takes seconds with many sockets in
/// TIME_WAIT on the host).
pub fn bound_ports(pid: libc::pid_t) -> (Vec<u16>, Vec<u16>) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain system calls with integer arguments; a descriptor they
    // return is new and ours.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(pidfd >= 0, "pidfd_open({pid}): {}", io::Error::last_os_error());
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let (mut tcp, mut udp, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else { continue };
        let link = link.to_string_lossy().into_owned();
        if !link.starts_with("socket:") || seen.contains(&link) {
            continue; // not a socket, or a copy of one already seen
        }
        seen.push(link);
        let Ok(target) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        use std::os::fd::AsRawFd;
        // SAFETY: as above.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if fd < 0 {
            continue; // closed since
        }
        let sock = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        let Some(port) = sock.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()) else { continue };
        match sock.r#type() {
            Ok(socket2::Type::STREAM) if sock.is_listener().unwrap_or(false) => tcp.push(port),
            Ok(socket2::Type::DGRAM) => udp.push(port),
            _ => {}
        }
    }
    tcp.sort_unstable();
    udp.sort_unstable();
    (tcp, udp)
}

/// A port free on 127.0.0.1 a moment ago (for a program that cannot bind
/// port 0 and report it); the caller retries if someone took it since.
pub fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    } else {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}

/// Sends `sig` to `pid`, a process the test started indirectly (a
/// successor), known to be alive and not reaped.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; the callers only name
    // successors they saw start and have not reaped.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// A directory of its own for a test's files, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("socketserver-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `msg` and reads back exactly as many bytes.
pub fn round_trip<S: Read + io::Write>(s: &mut S, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    back
}
