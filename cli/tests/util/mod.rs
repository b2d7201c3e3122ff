//! Running the built `socketserver` binary in tests: start it, learn its
//! address from its `listening` line, signal it, wait for its exit.
#![allow(dead_code)]

#[path = "../../../tests/util/eventually.rs"]
pub mod eventually;
pub mod process;
#[path = "../../../tests/util/tools.rs"]
pub mod tools;

#[allow(unused_imports)]
pub use eventually::{eventually, eventually_value};

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// All the process wrote on stderr so far.
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_socketserver"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start socketserver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening tcp ").expect("a listening line").parse().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Server { child, addr, stderr }
    }

    /// Waits until stderr contains `needle`: `true`, or a panic after
    /// `TIMEOUT` showing all of stderr.
    pub fn stderr_shows(&self, needle: &str) -> bool {
        let stderr = || String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        eventually_value(&format!("{needle:?} on stderr"), stderr, |text| text.contains(needle));
        true
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to a child we started and have not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    pub fn wait_exit(&mut self, within: Duration) -> (i32, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), start.elapsed());
            }
            assert!(start.elapsed() < within, "the server did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}
