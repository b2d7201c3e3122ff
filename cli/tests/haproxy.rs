//! A real HAProxy in front of three `socketserver echo --proxy-protocol`
//! instances (mode tcp, `send-proxy-v2`, health checks), under load from
//! 127.0.0.2 — long-lived echo clients and connect-per-request clients —
//! while each instance is restarted in turn through the SIGHUP hand-off.
//!
//! It asserts 0 failed connections and 0 failed or corrupted echoes; that
//! every instance served before and after its restart; and that the
//! handlers saw the real client: the instances run with
//! `--allow 127.0.0.2/32`, which HAProxy's own address (127.0.0.1) does not
//! match, so without the PROXY header every request would be refused.
//!
//! A long-lived client follows the keep-alive rule every HTTP client does:
//! a connection the server closed between requests is reconnected before
//! the next request, and a request that got no byte of answer before the
//! connection closed is sent again (counted and printed as a retry; the
//! figure is in RELIABILITY.md). A partial or wrong answer, a reset, a
//! refused or timed-out connect, or a retried request that fails again is a
//! failure.
//!
//! Needs `haproxy` on `PATH` (Debian's package installs it in `/usr/sbin`):
//! without it the test prints a `skipped:` line and passes, or fails under
//! `SOCKETSERVER_REQUIRE_TOOLS=1`, which `.ci/run` sets (it installs it).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Where the clients come from: not HAProxy's own address.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LONG_LIVED: usize = 6;
const PER_REQUEST: usize = 4;
/// Think time of a long-lived client: longer than the drain window
/// (100 ms), so a connection to a draining instance closes between two
/// requests, as an idle keep-alive connection does.
const THINK: Duration = Duration::from_millis(160);

/// One instance: the process started, its successors' pids, what it wrote
/// on stderr (the successors write there too).
struct Instance {
    first: Child,
    port: u16,
    pids: Vec<u32>,
    stderr: Arc<Mutex<String>>,
}

impl Instance {
    fn start() -> Instance {
        let mut child = Command::new(env!("CARGO_BIN_EXE_socketserver"))
            .args(["echo", "--tcp", "127.0.0.1:0", "--proxy-protocol", "--allow", "127.0.0.2/32"])
            .args(["--log-level", "info"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start socketserver");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr: SocketAddr = line.trim().strip_prefix("listening tcp ").expect("a listening line").parse().unwrap();
        // Keep reading stdout: the successors print their lines there too.
        std::thread::spawn(move || for _ in out.lines() {});
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let pid = child.id();
        Instance { first: child, port: addr.port(), pids: vec![pid], stderr }
    }

    fn pid(&self) -> u32 {
        *self.pids.last().unwrap()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a process this test started (or its successor), not reaped.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, sig) }, 0, "signal {}", self.pid());
    }

    /// Waits (bounded) until stderr holds `needle` `count` times; the text.
    fn wait_log(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.stderr.lock().unwrap().clone();
            if text.matches(needle).count() >= count {
                return text;
            }
            assert!(Instant::now() < deadline, "port {}: no {count} x {needle:?} in:\n{text}", self.port);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Requests served by the current process, from its SIGUSR1 stats line.
    fn completed(&self) -> u64 {
        let before = self.stderr.lock().unwrap().matches("stats tcp").count();
        self.signal(libc::SIGUSR1);
        let text = self.wait_log("stats tcp", before + 1);
        let line = text.lines().filter(|l| l.contains("stats tcp")).nth(before).unwrap().to_string();
        let n = line.split("completed ").nth(1).and_then(|r| r.split(',').next()).and_then(|n| n.parse().ok());
        n.unwrap_or_else(|| panic!("no completed count in {line:?}"))
    }

    /// SIGHUP: the hand-off to a successor; returns once the old process has
    /// exited (after draining) and the successor serves.
    fn restart(&mut self) {
        let handed = self.stderr.lock().unwrap().matches("handed over to pid").count();
        self.signal(libc::SIGHUP);
        let text = self.wait_log("handed over to pid", handed + 1);
        let line = text.lines().filter(|l| l.contains("handed over to pid")).nth(handed).unwrap();
        let pid: u32 = line.split("handed over to pid ").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
        let old = self.pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{old}")).exists() && !is_zombie(old) {
            assert!(Instant::now() < deadline, "pid {old} did not exit after handing over");
            std::thread::sleep(Duration::from_millis(5));
        }
        self.pids.push(pid);
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.split(' ').nth(2) == Some("Z"))
}

impl Drop for Instance {
    fn drop(&mut self) {
        for &pid in self.pids.iter().rev() {
            // SAFETY: processes this test started (or their successors).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.first.wait();
    }
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free now on 127.0.0.1, for HAProxy's frontend.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_haproxy(haproxy: &Path, dir: &Path, front: u16, backends: &[u16]) -> Haproxy {
    let mut cfg = format!(
        "global\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         \n    retries 3\n    option redispatch\n\
         frontend fe\n    bind 127.0.0.1:{front}\n    default_backend be\n\
         backend be\n    balance roundrobin\n"
    );
    for (i, port) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{i} 127.0.0.1:{port} send-proxy-v2 check check-send-proxy inter 200ms rise 1 fall 3\n"
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let check = Command::new(haproxy).arg("-c").arg("-f").arg(&path).output().unwrap();
    assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
    let child = Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    Haproxy(child)
}

/// A connection from 127.0.0.2 to HAProxy.
fn connect_from_client_ip(front: u16) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((CLIENT_IP, 0)).into())?;
    s.connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, front)).into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

#[derive(Default)]
struct Tally {
    echoes: AtomicU64,
    connections: AtomicU64,
    retries: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// What became of one request.
enum Reply {
    Ok,
    /// The connection closed before any byte of the answer came.
    Closed,
    Failed(String),
}

fn ask(s: &mut TcpStream, line: &str) -> Reply {
    if let Err(e) = s.write_all(line.as_bytes()) {
        return match e.kind() {
            std::io::ErrorKind::BrokenPipe => Reply::Closed,
            _ => Reply::Failed(format!("write: {e}")),
        };
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < line.len() {
        match s.read(&mut buf) {
            Ok(0) if got.is_empty() => return Reply::Closed,
            Ok(0) => return Reply::Failed(format!("answer cut after {} bytes", got.len())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Reply::Failed(format!("read: {e}")),
        }
    }
    if got != line.as_bytes() {
        return Reply::Failed(format!("corrupted echo: sent {line:?}, got {:?}", String::from_utf8_lossy(&got)));
    }
    Reply::Ok
}

/// Whether the server closed the connection while it was idle (a clean end
/// of stream is waiting to be read).
fn closed_while_idle(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let closed = matches!(s.peek(&mut b), Ok(0));
    s.set_nonblocking(false).unwrap();
    closed
}

fn long_lived_client(id: usize, front: u16, stop: &AtomicBool, tally: &Tally) {
    let mut conn: Option<TcpStream> = None;
    let mut i = 0u64;
    while !stop.load(SeqCst) {
        if conn.as_ref().is_some_and(closed_while_idle) {
            conn = None; // closed between requests: the keep-alive rule
        }
        let mut s = match conn.take() {
            Some(s) => s,
            None => match connect_from_client_ip(front) {
                Ok(s) => {
                    tally.connections.fetch_add(1, SeqCst);
                    s
                }
                Err(e) => return tally.fail(format!("long-lived {id}: connect: {e}")),
            },
        };
        let line = format!("long-lived client {id} request {i} {}\n", "x".repeat((i % 50) as usize));
        match ask(&mut s, &line) {
            Reply::Ok => conn = Some(s),
            Reply::Closed => {
                // Closed as the request went: send it again on a new one.
                tally.retries.fetch_add(1, SeqCst);
                let again =
                    connect_from_client_ip(front).map_err(|e| e.to_string()).map(|mut s| (ask(&mut s, &line), s));
                match again {
                    Ok((Reply::Ok, s)) => {
                        tally.connections.fetch_add(1, SeqCst);
                        conn = Some(s);
                    }
                    Ok((Reply::Closed, _)) => return tally.fail(format!("long-lived {id}: request {i} closed twice")),
                    Ok((Reply::Failed(why), _)) => return tally.fail(format!("long-lived {id}: retry of {i}: {why}")),
                    Err(e) => return tally.fail(format!("long-lived {id}: reconnect: {e}")),
                }
            }
            Reply::Failed(why) => return tally.fail(format!("long-lived {id}: request {i}: {why}")),
        }
        tally.echoes.fetch_add(1, SeqCst);
        i += 1;
        std::thread::sleep(THINK + Duration::from_millis((id as u64 * 7 + i * 13) % 60));
    }
}

fn per_request_client(id: usize, front: u16, stop: &AtomicBool, tally: &Tally) {
    let mut i = 0u64;
    while !stop.load(SeqCst) {
        let mut s = match connect_from_client_ip(front) {
            Ok(s) => s,
            Err(e) => return tally.fail(format!("per-request {id}: connect {i}: {e}")),
        };
        tally.connections.fetch_add(1, SeqCst);
        let line = format!("per-request client {id} request {i}\n");
        match ask(&mut s, &line) {
            Reply::Ok => {}
            Reply::Closed => return tally.fail(format!("per-request {id}: request {i}: closed unanswered")),
            Reply::Failed(why) => return tally.fail(format!("per-request {id}: request {i}: {why}")),
        }
        tally.echoes.fetch_add(1, SeqCst);
        i += 1;
        // Bounded: a few thousand connections in all (ports in TIME_WAIT).
        std::thread::sleep(Duration::from_millis(8));
    }
}

/// Waits (bounded) until one echo through HAProxy reaches each instance's
/// handler: every backend is up and sees the real client.
fn wait_until_served(front: u16, instances: &[Instance]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        let served = instances.iter().all(|i| i.completed() > 0);
        if served {
            return;
        }
        assert!(Instant::now() < deadline, "HAProxy never reached every instance");
        for _ in 0..6 {
            if let Ok(mut s) = connect_from_client_ip(front) {
                let _ = ask(&mut s, &format!("warm-up {n}\n"));
            }
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rolling_restart_behind_haproxy_drops_nothing() {
    let Some(haproxy) = util::tools::require_tool("haproxy", "haproxy") else { return };
    let dir = std::env::temp_dir().join(format!("socketserver-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let mut instances: Vec<Instance> = (0..3).map(|_| Instance::start()).collect();
    let front = free_port();
    let ports: Vec<u16> = instances.iter().map(|i| i.port).collect();
    let _haproxy = start_haproxy(&haproxy, &dir, front, &ports);
    wait_until_served(front, &instances);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for id in 0..LONG_LIVED {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        clients.push(std::thread::spawn(move || long_lived_client(id, front, &stop, &tally)));
    }
    for id in 0..PER_REQUEST {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        clients.push(std::thread::spawn(move || per_request_client(id, front, &stop, &tally)));
    }
    // Load before, between and after the restarts: 150 more echoes each
    // time (counted, not waited for by the clock), and each instance has
    // served before its restart and its successor after it.
    let more_echoes = |what: &str| {
        let from = tally.echoes.load(SeqCst);
        util::eventually(&format!("150 echoes {what}"), || {
            tally.echoes.load(SeqCst) >= from + 150 || !tally.failures.lock().unwrap().is_empty()
        });
    };
    more_echoes("before the restarts");
    let mut before = Vec::new();
    for instance in &mut instances {
        before.push(util::eventually_value("a request served", || instance.completed(), |&n| n > 0));
        instance.restart();
        util::eventually_value("a request served by the successor", || instance.completed(), |&n| n > 0);
        more_echoes("after a restart");
    }
    let after: Vec<u64> = instances.iter().map(Instance::completed).collect();
    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = tally.failures.lock().unwrap().clone();
    let (echoes, connections, retries) =
        (tally.echoes.load(SeqCst), tally.connections.load(SeqCst), tally.retries.load(SeqCst));
    println!(
        "rolling restart of 3 instances behind HAProxy in {:.1?}: {echoes} echoes over {connections} connections, \
         {retries} request(s) sent again on a new connection, {} failure(s); completed per instance before \
         restart {before:?}, by the successors {after:?}",
        started.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "failures: {failures:#?}");
    assert!(before.iter().all(|&n| n > 0), "an instance served nothing before its restart: {before:?}");
    assert!(after.iter().all(|&n| n > 0), "a successor served nothing: {after:?}");
    assert!(echoes > 500, "too little load to prove anything: {echoes} echoes");
    for instance in &instances {
        let log = instance.stderr.lock().unwrap().clone();
        assert!(!log.contains("restart failed"), "{log}");
    }
    // The end: each successor drains and exits cleanly on SIGTERM.
    for instance in &instances {
        instance.signal(libc::SIGTERM);
    }
    for instance in &instances {
        let pid = instance.pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(Instant::now() < deadline, "pid {pid} did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
