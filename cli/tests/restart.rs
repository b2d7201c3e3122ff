//! Restarts on SIGHUP with the built `socketserver`: the process starts its
//! successor (the program at its path now, same arguments) with its
//! sockets, waits until it serves, then stops accepting and drains; or, if
//! the successor fails or hangs, stops it and serves on. Clients must not
//! notice either way.
//!
//! A successor outlives the process that started it, so this test process
//! makes itself a child subreaper: an orphaned successor becomes its child,
//! and its exit code can be read like any other's.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use util::process::*;
use util::{TIMEOUT, connect, eventually_value};

const FAILED: &str = "restart failed, still serving";

/// Clients that connect, send one request, read the echo and close, over
/// and over, on a few threads, until stopped (at most `TIMEOUT` each).
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn tcp(addr: SocketAddr, clients: usize) -> Load {
        Load::start(clients, move |id, i| {
            let msg = format!("client {id} request {i}\n");
            let mut s = std::net::TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.write_all(msg.as_bytes()).map_err(|e| format!("write: {e}"))?;
            let mut back = vec![0; msg.len()];
            s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
            if back != msg.as_bytes() {
                return Err(format!("sent {msg:?}, got {:?}", String::from_utf8_lossy(&back)));
            }
            Ok(())
        })
    }

    fn udp(addr: SocketAddr, clients: usize) -> Load {
        Load::start(clients, move |id, i| {
            thread_local! {
                static SOCKET: UdpSocket = {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    // Far above a loopback round trip; a lost datagram fails.
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    s
                };
            }
            SOCKET.with(|s| {
                // A burst, so that some are queued when the hand-off comes.
                let mut sent: Vec<String> = (0..8).map(|k| format!("client {id} burst {i} datagram {k}")).collect();
                for msg in &sent {
                    s.send_to(msg.as_bytes(), addr).map_err(|e| format!("send: {e}"))?;
                }
                let mut got = Vec::new();
                let mut buf = [0u8; 128];
                for _ in 0..sent.len() {
                    let (n, from) = s
                        .recv_from(&mut buf)
                        .map_err(|e| format!("client {id} burst {i}: {} of 8 answered: {e}", got.len()))?;
                    if from != addr {
                        return Err(format!("an answer from {from}"));
                    }
                    got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                sent.sort();
                got.sort();
                if got != sent {
                    return Err(format!("sent {sent:?}, got {got:?}"));
                }
                Ok(())
            })
        })
    }

    fn start(clients: usize, one: impl Fn(usize, u64) -> Result<(), String> + Send + Sync + 'static) -> Load {
        let one = Arc::new(one);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|id| {
                let (one, stop, done, failures) = (one.clone(), stop.clone(), done.clone(), failures.clone());
                std::thread::spawn(move || {
                    let start = Instant::now();
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) || start.elapsed() > TIMEOUT {
                            break;
                        }
                        match one(id, i) {
                            Ok(()) => done.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                break;
                            }
                        };
                        // A pace the loopback's ephemeral ports bear (each
                        // TCP client leaves one in TIME_WAIT for a minute)
                        // while other tests run too.
                        std::thread::sleep(Duration::from_millis(3));
                    }
                })
            })
            .collect();
        Load { stop, done, failures, threads }
    }

    /// Waits (bounded) for `n` more requests answered, failing at once on a failure.
    fn wait_for(&self, n: u64) {
        let target = self.done.load(Ordering::SeqCst) + n;
        let seen = || (self.done.load(Ordering::SeqCst), self.failures.lock().unwrap().clone());
        let (_, failures) = eventually_value(&format!("{target} requests answered (done, failures)"), seen, |seen| {
            seen.0 >= target || !seen.1.is_empty()
        });
        assert!(failures.is_empty(), "clients failed: {failures:?}");
    }

    /// Stops the clients; how many requests were answered, and the failures.
    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.done.load(Ordering::SeqCst), self.failures.lock().unwrap().clone())
    }
}

/// SIGHUP while four clients keep connecting for one request each: the
/// successor starts and serves the same port, the old process logs the
/// hand-off and exits 0, and not one client is refused, cut or answered
/// wrongly. The successor then serves alone (it lives and answers), and a
/// SIGHUP to it hands over again, just as cleanly (a chain of restarts).
#[test]
fn sighup_hands_over_under_load_without_a_failure_and_again_from_the_successor() {
    become_subreaper();
    let mut old = Proc::command(&["echo", "--tcp", "127.0.0.1:0"]);
    let addr: SocketAddr = old.listening_on("tcp").parse().unwrap();
    let load = Load::tcp(addr, 4);
    load.wait_for(100);

    old.signal(libc::SIGHUP);
    let mut first = Successor::new(old.handed_to(0));
    assert_eq!(old.listening_on("tcp"), addr.to_string(), "the successor serves the same port");
    assert_eq!(old.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    load.wait_for(100);
    assert!(alive(first.pid), "the successor is gone");
    assert_eq!(bound_ports(first.pid).0, vec![addr.port()], "the successor does not listen on the port");

    first.signal(libc::SIGHUP);
    let mut second = Successor::new(old.handed_to(1));
    assert_eq!(old.listening_on("tcp"), addr.to_string());
    assert_eq!(first.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    load.wait_for(100);
    assert!(alive(second.pid));

    let (answered, failures) = load.stop();
    assert!(failures.is_empty(), "clients failed across the restarts: {failures:?}");
    eprintln!("{answered} requests answered across two restarts, none failed");
    second.signal(libc::SIGTERM);
    assert_eq!(second.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
}

/// SIGHUP sent the moment the `listening` line is read restarts the
/// server (it shut it down: SIGHUP was routed to the restart only after
/// the line was printed: 2 runs in 3 failed at 3 rounds). Ten rounds.
#[test]
fn a_sighup_as_soon_as_the_server_listens_restarts_it() {
    become_subreaper();
    for _ in 0..10 {
        let mut old = Proc::command(&["echo", "--tcp", "127.0.0.1:0"]);
        let addr = old.listening_on("tcp");
        old.signal(libc::SIGHUP);
        let mut successor = Successor::new(old.handed_to(0));
        assert_eq!(old.listening_on("tcp"), addr);
        assert_eq!(old.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
        successor.signal(libc::SIGTERM);
        assert_eq!(successor.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    }
}

/// At the hand-off the old process drains what it accepted: a connection
/// idle between requests sees a clean end of stream (not a reset) once the
/// drain window has passed; a request sent on a connection just after the
/// hand-off, and a stream of chunks that crosses it, are answered whole.
#[test]
fn the_old_process_answers_what_is_in_flight_and_closes_idle_connections_cleanly() {
    become_subreaper();
    let mut old = Proc::command(&["echo", "--tcp", "127.0.0.1:0", "--drain-window", "0.5"]);
    let addr: SocketAddr = old.listening_on("tcp").parse().unwrap();
    let mut idle = connect(addr);
    assert_eq!(round_trip(&mut idle, b"before"), b"before");
    let mut late = connect(addr);
    assert_eq!(round_trip(&mut late, b"before"), b"before");

    // 40 chunks of 4 KiB, one every 20 ms: 0.8 s of streaming.
    let data: Vec<u8> = (0..40 * 4096).map(|i| (i % 251) as u8).collect();
    let mut stream = connect(addr);
    let mut reader = stream.try_clone().unwrap();
    let echoed = std::thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).map(|_| all)
    });
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let to_send = data.clone();
    let writer = std::thread::spawn(move || {
        for chunk in to_send.chunks(4096) {
            stream.write_all(chunk).unwrap();
            let _ = sent_tx.send(());
            std::thread::sleep(Duration::from_millis(20));
        }
        stream.shutdown(Shutdown::Write).unwrap();
    });
    for _ in 0..5 {
        sent_rx.recv_timeout(TIMEOUT).expect("the stream goes");
    }

    old.signal(libc::SIGHUP);
    let mut successor = Successor::new(old.handed_to(0));
    let handed_at = Instant::now();
    assert_eq!(round_trip(&mut late, b"just after the hand-off"), b"just after the hand-off");

    let mut buf = [0u8; 16];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the idle connection got {n} bytes"),
        Err(e) => panic!("the idle connection did not end cleanly: {e}"),
    }
    assert!(handed_at.elapsed() >= Duration::from_millis(300), "closed before the drain window ended");
    writer.join().unwrap();
    let back = echoed.join().unwrap().expect("the stream ends cleanly");
    assert!(back == data, "the stream came back cut or changed ({} of {} bytes)", back.len(), data.len());
    assert_eq!(old.exit_code(TIMEOUT), 0, "{}", old.stderr_text());

    successor.signal(libc::SIGTERM);
    assert_eq!(successor.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
}

/// Unix stream and datagram sockets are handed over with their files: the
/// old process leaves them (clients of the successor use the same paths),
/// and so does the successor when it hands over in turn; the last one,
/// stopped by SIGTERM, removes them as the process that bound them would
/// have (they were left behind).
#[test]
fn unix_socket_files_survive_hand_offs_and_go_with_the_last_process() {
    become_subreaper();
    let dir = TempDir::new("restart-unix");
    let (stream, dgram) = (dir.join("stream.sock"), dir.join("dgram.sock"));
    let mut old = Proc::command(&["echo", "--unix", stream.to_str().unwrap(), "--unix-dgram", dgram.to_str().unwrap()]);
    let lines = vec![format!("unix {}", stream.display()), format!("unix-dgram {}", dgram.display())];
    assert_eq!(old.listening(2), lines);
    let mut before = UnixStream::connect(&stream).unwrap();
    before.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(round_trip(&mut before, b"before"), b"before");
    let client = UnixDatagram::bind(dir.join("client.sock")).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let dgram_round_trip = |msg: &[u8]| {
        client.send_to(msg, &dgram).unwrap();
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).expect("a datagram answer");
        assert_eq!(&buf[..n], msg);
    };
    dgram_round_trip(b"before");

    old.signal(libc::SIGHUP);
    let mut first = Successor::new(old.handed_to(0));
    assert_eq!(old.listening(2), lines);
    assert_eq!(old.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    let mut rest = Vec::new();
    assert_eq!(before.read_to_end(&mut rest).map(|_| rest.len()).ok(), Some(0), "not a clean end");
    assert!(stream.exists() && dgram.exists(), "the old process removed a socket file it handed over");

    first.signal(libc::SIGHUP);
    let mut second = Successor::new(old.handed_to(1));
    assert_eq!(old.listening(2), lines);
    assert_eq!(first.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    assert!(stream.exists() && dgram.exists(), "the first successor removed a socket file it handed over");
    let mut after = UnixStream::connect(&stream).expect("the second successor serves the path");
    after.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(round_trip(&mut after, b"after"), b"after");
    drop(after);
    dgram_round_trip(b"after");

    second.signal(libc::SIGTERM);
    assert_eq!(second.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    assert!(!stream.exists(), "the last process left the stream socket file behind");
    assert!(!dgram.exists(), "the last process left the datagram socket file behind");
}

/// `file` replaced the way an upgrade does it: a new file renamed over it
/// (the running process's binary stays as it was).
fn replace(file: &Path, with: impl FnOnce(&Path)) {
    let new = file.with_extension("new");
    with(&new);
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, file).unwrap();
}

fn script(text: &'static str) -> impl FnOnce(&Path) {
    move |path| std::fs::write(path, text).unwrap()
}

fn the_binary(path: &Path) {
    std::fs::copy(BIN, path).unwrap();
}

/// The command run from a copy of the binary at `dir/socketserver`.
fn from_copy(dir: &TempDir, args: &[&str]) -> (Proc, PathBuf) {
    let exe = dir.join("socketserver");
    replace(&exe, the_binary);
    let mut cmd = Command::new(&exe);
    cmd.args(args);
    (Proc::spawn(cmd), exe)
}

/// A successor that fails (the binary at the path is now a script that
/// exits 3): the failure is logged and the old process serves on, on the
/// same socket. Once a working binary is back at the path, SIGHUP hands
/// over to it: it is the program at the path now that starts, not the one
/// running.
#[test]
fn a_failed_successor_leaves_the_old_process_serving_and_the_next_binary_takes_over() {
    become_subreaper();
    let dir = TempDir::new("restart-fail");
    let (mut old, exe) = from_copy(&dir, &["echo", "--tcp", "127.0.0.1:0"]);
    let addr: SocketAddr = old.listening_on("tcp").parse().unwrap();
    let mut kept = connect(addr);
    assert_eq!(round_trip(&mut kept, b"before"), b"before");

    replace(&exe, script("#!/bin/sh\nexit 3\n"));
    old.signal(libc::SIGHUP);
    old.expect_stderr(FAILED);
    assert!(old.try_status().is_none(), "the old process stopped");
    assert_eq!(round_trip(&mut kept, b"still"), b"still");
    let mut fresh = connect(addr);
    assert_eq!(round_trip(&mut fresh, b"new client"), b"new client");
    drop(fresh);
    assert!(!old.stderr_text().contains(HANDED));

    replace(&exe, the_binary);
    old.signal(libc::SIGHUP);
    let mut successor = Successor::new(old.handed_to(0));
    let running = std::fs::read_link(format!("/proc/{}/exe", successor.pid)).unwrap();
    assert_eq!(running, exe, "the successor is not the binary now at the path");
    assert_eq!(old.listening_on("tcp"), addr.to_string());
    assert_eq!(old.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    let mut after = connect(addr);
    assert_eq!(round_trip(&mut after, b"upgraded"), b"upgraded");
    drop(after);

    successor.signal(libc::SIGTERM);
    assert_eq!(successor.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
}

/// A successor that never says it serves (`exec sleep 30`), with
/// `--restart-timeout 0.5`: after half a second the failure is logged, the
/// successor is killed and reaped (its pid is gone), and the old process
/// serves on.
#[test]
fn a_hung_successor_is_killed_after_the_restart_timeout() {
    become_subreaper();
    let dir = TempDir::new("restart-hung");
    let (mut old, exe) = from_copy(&dir, &["echo", "--tcp", "127.0.0.1:0", "--restart-timeout", "0.5"]);
    let addr: SocketAddr = old.listening_on("tcp").parse().unwrap();

    replace(&exe, script("#!/bin/sh\nexec sleep 30\n"));
    let start = Instant::now();
    old.signal(libc::SIGHUP);
    old.expect_stderr(FAILED);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(450), "gave up after {took:?}, before the timeout");
    let pid = number_after(&old.stderr_text(), "successor (pid ", 0);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the hung successor {pid} is still there");
    assert!(old.try_status().is_none(), "the old process stopped");
    let mut c = connect(addr);
    assert_eq!(round_trip(&mut c, b"still serving"), b"still serving");
    drop(c);

    old.signal(libc::SIGTERM);
    assert_eq!(old.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
}

/// UDP clients keep sending across a hand-off: every datagram is answered
/// (by the old process or by the successor: they share the socket), none
/// lost — each client waits for each answer, 2 s at most.
#[test]
fn udp_is_answered_across_a_hand_off() {
    become_subreaper();
    let mut old = Proc::command(&["echo", "--udp", "127.0.0.1:0"]);
    let addr: SocketAddr = old.listening_on("udp").parse().unwrap();
    let load = Load::udp(addr, 4);
    load.wait_for(100);

    old.signal(libc::SIGHUP);
    let mut successor = Successor::new(old.handed_to(0));
    assert_eq!(old.listening_on("udp"), addr.to_string());
    assert_eq!(old.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    load.wait_for(100);
    let (answered, failures) = load.stop();
    assert!(failures.is_empty(), "datagrams lost across the restart: {failures:?}");
    eprintln!("{answered} datagrams answered across the restart");

    successor.signal(libc::SIGTERM);
    assert_eq!(successor.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
}

/// Under a service manager (`NOTIFY_SOCKET`): the successor says READY=1,
/// then the old process says MAINPID=<successor> and exits without
/// STOPPING=1 (the service goes on); SIGTERM to the successor brings
/// STOPPING=1.
#[test]
fn the_service_manager_is_told_the_new_main_pid() {
    become_subreaper();
    let dir = TempDir::new("restart-notify");
    let manager = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    manager.set_read_timeout(Some(TIMEOUT)).unwrap();
    let next = || {
        let mut buf = [0u8; 128];
        match manager.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => "nothing".into(),
            Err(e) => panic!("{e}"),
        }
    };
    let mut cmd = Command::new(BIN);
    cmd.args(["echo", "--tcp", "127.0.0.1:0"]).env("NOTIFY_SOCKET", dir.join("notify.sock"));
    let mut old = Proc::spawn(cmd);
    old.listening_on("tcp");
    assert_eq!(next(), "READY=1");

    old.signal(libc::SIGHUP);
    assert_eq!(next(), "READY=1", "the successor's");
    let mut successor = Successor::new(old.handed_to(0));
    assert_eq!(next(), format!("MAINPID={}", successor.pid));
    assert_eq!(old.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
    manager.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert_eq!(next(), "nothing", "the old process said more");

    manager.set_read_timeout(Some(TIMEOUT)).unwrap();
    successor.signal(libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1", "{}", old.stderr_text());
    assert_eq!(successor.exit_code(TIMEOUT), 0, "{}", old.stderr_text());
}
