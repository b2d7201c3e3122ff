//! Helpers shared by the integration tests: run a server on a thread, talk
//! to it, and handlers that echo.
#![allow(dead_code)]

pub mod eventually;
pub mod tools;

#[allow(unused_imports)]
pub use eventually::{eventually, eventually_value};

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use socketserver::{Address, DatagramRequest, Server, ServerHandle, Strategy, StreamRequest, Transport};

/// Long enough that a healthy test never hits it; short enough that a hung
/// one fails instead of stalling the suite.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server running `serve_forever` on its own thread.
pub struct Running {
    pub handle: ServerHandle,
    pub addr: Address,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    pub fn inet(&self) -> SocketAddr {
        self.addr.as_inet().expect("an IP server")
    }

    pub fn path(&self) -> PathBuf {
        self.addr.as_path().expect("a Unix server").to_path_buf()
    }

    /// Shuts the server down and waits for `serve_forever` to return.
    pub fn stop(mut self) -> io::Result<()> {
        self.handle.shutdown();
        self.join()
    }

    /// Waits for `serve_forever` to return (after a shutdown asked elsewhere);
    /// a shutdown that never finishes fails the test rather than hanging the
    /// suite (the bound is well above any grace period the tests set).
    pub fn join(&mut self) -> io::Result<()> {
        let thread = self.thread.take().expect("joined once");
        let deadline = std::time::Instant::now() + 3 * TIMEOUT;
        while !thread.is_finished() {
            assert!(std::time::Instant::now() < deadline, "serve_forever did not return after the shutdown");
            std::thread::sleep(Duration::from_millis(1));
        }
        thread.join().expect("serve_forever panicked")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.shutdown_with_grace(Duration::ZERO);
            let _ = t.join();
        }
    }
}

/// Runs `server.serve_forever()` on a new thread; the server is dropped
/// (socket closed, Unix file removed) when it returns.
pub fn run<T: Transport, S: Strategy>(server: Server<T, S>) -> Running {
    let handle = server.handle();
    let addr = server.server_address().clone();
    let thread = std::thread::spawn(move || server.serve_forever());
    Running { handle, addr, thread: Some(thread) }
}

/// Echoes every byte back until the client closes.
pub fn echo_stream(req: &mut StreamRequest) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = req.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.write_all(&buf[..n])?;
    }
}

/// Echoes each line back until the client sends `quit` or closes.
///
/// Tests use this rather than [`echo_stream`] under `Forking`: a forked
/// child inherits every descriptor of the test process, client sockets
/// included, so a client's close never reaches a child that waits for EOF.
pub fn echo_lines(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    while req.read_line(&mut line)? > 0 {
        if line.trim_end() == "quit" {
            break;
        }
        req.write_all(line.as_bytes())?;
        line.clear();
    }
    Ok(())
}

/// Echoes lines until `quit` or the end, waiting for each in the event
/// style (`wait_for_data`: under `Event` a connection parks between lines,
/// under the other strategies it waits there).
pub fn echo_parked_lines(req: &mut StreamRequest) -> io::Result<()> {
    while req.wait_for_data()? {
        let Some(line) = req.next_line()? else { break };
        if line == "quit" {
            break;
        }
        writeln!(req, "{line}")?;
    }
    Ok(())
}

/// Sends each datagram back.
pub fn echo_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    req.reply(req.data())
}

pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

pub fn unix_connect(path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Writes `msg` and reads back exactly as many bytes.
pub fn round_trip<S: Read + Write>(s: &mut S, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    back
}

pub fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

pub fn udp_round_trip(s: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    s.send_to(msg, to).unwrap();
    let mut buf = vec![0; 65_536];
    let (n, from) = s.recv_from(&mut buf).expect("a reply");
    assert_eq!(from, to);
    buf.truncate(n);
    buf
}

/// A Unix datagram client bound to its own path (so that it can be answered).
pub fn unix_dgram_client(dir: &TempDir, name: &str) -> UnixDatagram {
    let s = UnixDatagram::bind(dir.path().join(name)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// A directory removed on drop, for Unix socket files.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "socketserver-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serialises the tests of one file that fork. A forked child inherits
/// every descriptor of the test process — the sockets of tests running
/// beside it too — and holds their connections open: a client of another
/// test waiting for end of stream would wait until the child exits. Every
/// test in a file with a `Forking` server takes this first.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Open descriptors of this process (Linux).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Every log record at `info` or above, from the first `capture_logs()` on
/// (one logger per test binary).
static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOGGED.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per test binary).
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// The captured log lines that contain `needle`.
pub fn logged_containing(needle: &str) -> Vec<String> {
    LOGGED.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
}
