//! The examples, each run as the program a newcomer runs (built by `cargo
//! build --examples`, started on port 0, talked to, killed); and the
//! bundled echo and time servers under the event strategy, the library
//! behaviour the echo and time examples show.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use socketserver::framing::LengthPrefixed;
use socketserver::servers::{Echo, MAX_TIME_REQUEST, Strftime};
use socketserver::{AnyStrategy, Event, TcpServer, ThreadPool, Threading};
use util::*;

fn cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get) as u64
}

/// The most threads an event server may have when its handlers are quick:
/// its pollers (a CPU each), and a few more a busy machine may make it
/// start for a handler that looked blocked (they retire after 10 s).
fn thread_bound() -> u64 {
    2 * cpus() + 2
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ------------------------------------------------------------ the examples

/// The examples' folder of binaries, beside this test's (`cargo test`
/// builds them; `cargo test --test example_servers` alone does not, so
/// they are built once here, a no-op when they are up to date).
fn examples_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf();
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--quiet", "--examples", "-p", "socketserver"]);
            cargo.current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            assert!(cargo.status().unwrap().success(), "cargo build --examples failed");
            profile_dir.join("examples")
        })
        .clone()
}

/// An example running on port 0: killed (by its pid) and reaped on drop.
struct Example {
    child: Child,
    addr: SocketAddr,
}

impl Example {
    /// Starts example `name` with `args`, and learns its address from its
    /// first line, `listening [udp ]ADDR[ (...)]`.
    fn start(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(examples_dir().join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.split_whitespace().find_map(|w| w.parse().ok());
        let addr = addr.unwrap_or_else(|| panic!("{name}: no address in {line:?}"));
        Example { child, addr }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_line_from(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn echo_server_example_echoes_under_its_default_and_a_given_strategy() {
    for args in [&["127.0.0.1:0"][..], &["127.0.0.1:0", "--strategy", "pool(2)"]] {
        let example = Example::start("echo_server", args);
        let mut c = tcp_connect(example.addr);
        assert_eq!(round_trip(&mut c, b"hello"), b"hello");
    }
}

#[test]
fn time_server_example_answers_a_strftime_datagram() {
    let example = Example::start("time_server", &["127.0.0.1:0"]);
    let year = String::from_utf8(udp_round_trip(&udp_client(), example.addr, b"%Y")).unwrap();
    assert_eq!(year, socketserver::servers::render_time(b"%Y").unwrap());
}

#[test]
fn remote_command_example_frames_a_command_and_its_output() {
    let example = Example::start("remote_command", &["server", "127.0.0.1:0", "echo"]);
    let codec = LengthPrefixed::new(1 << 20);
    let mut c = tcp_connect(example.addr);
    // Two frames in one write: two answers (no "sticky packets").
    let mut both = Vec::new();
    codec.write_frame(&mut both, b"echo one").unwrap();
    codec.write_frame(&mut both, b"ls /").unwrap();
    c.write_all(&both).unwrap();
    let mut frame = Vec::new();
    assert!(codec.read_frame(&mut c, &mut frame).unwrap());
    assert_eq!(frame, b"one\n");
    assert!(codec.read_frame(&mut c, &mut frame).unwrap());
    assert_eq!(frame, b"error: ls is not allowed\n");
}

#[test]
fn file_transfer_example_stores_an_upload_and_serves_it_back() {
    let dir = TempDir::new("file_transfer_example");
    let example = Example::start("file_transfer", &["server", "127.0.0.1:0", dir.path().to_str().unwrap()]);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = tcp_connect(example.addr);
    c.write_all(format!("PUT data.bin {}\n", body.len()).as_bytes()).unwrap();
    c.write_all(&body).unwrap();
    assert_eq!(read_line_from(&mut BufReader::new(&mut c)), "OK 100000");
    assert_eq!(std::fs::read(dir.join("data.bin")).unwrap(), body);
    let mut c = BufReader::new(tcp_connect(example.addr));
    c.get_mut().write_all(b"GET data.bin\n").unwrap();
    assert_eq!(read_line_from(&mut c), "OK 100000");
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, body);
    // A name that would leave the folder is refused.
    let mut c = BufReader::new(tcp_connect(example.addr));
    c.get_mut().write_all(b"PUT ../escape 1\nx").unwrap();
    assert_eq!(read_line_from(&mut c), "");
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

#[test]
fn chat_example_sends_each_line_to_the_other_members() {
    let example = Example::start("chat", &["127.0.0.1:0"]);
    let join = || {
        let s = tcp_connect(example.addr);
        let mut r = BufReader::new(s.try_clone().unwrap());
        let welcome = read_line_from(&mut r);
        (s, r, welcome)
    };
    let (_a, mut a_in, welcome) = join();
    assert_eq!(welcome, "* welcome, guest0");
    let (mut b, b_in, _) = join();
    assert_eq!(read_line_from(&mut a_in), "* guest1 joined");
    b.write_all(b"hi \x1b[2J\n").unwrap();
    assert_eq!(read_line_from(&mut a_in), "[guest1] hi \\x1b[2J");
    drop((b, b_in));
    assert_eq!(read_line_from(&mut a_in), "* guest1 left");
}

// ------------------------------------------- the bundled echo server, event

fn echoes_several_clients_at_once(running: &Running) {
    let mut a = tcp_connect(running.inet());
    let mut b = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut a, b"from a"), b"from a");
    assert_eq!(round_trip(&mut b, b"from b"), b"from b");
    let big = vec![42u8; 1 << 20];
    let mut c = tcp_connect(running.inet());
    let writer = {
        let mut w = c.try_clone().unwrap();
        let big = big.clone();
        std::thread::spawn(move || w.write_all(&big).unwrap())
    };
    let mut back = vec![0u8; big.len()];
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back, big);
    assert_eq!(round_trip(&mut a, b"a again"), b"a again");
    drop((a, b, c));
    wait_for("every connection to end", || running.handle.stats().active == 0);
    assert_eq!(running.handle.stats().handler_errors, 0);
}

#[test]
fn echo_echoes_several_clients_at_once_under_every_strategy_but_fork() {
    for strategy in [Event::new().into(), ThreadPool::default().into(), Threading::new().into()] {
        let strategy: AnyStrategy = strategy;
        let running = run(TcpServer::builder().strategy(strategy).bind("127.0.0.1:0", Echo).unwrap());
        echoes_several_clients_at_once(&running);
        running.stop().unwrap();
    }
}

/// Under the event strategy, echo connections between messages are parked:
/// counted in `parked`, with no thread each (the server's threads stay at
/// its pollers however many connections wait), and each resumes when it
/// sends again.
#[test]
fn echo_parks_idle_connections_under_event() {
    let running = run(TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", Echo).unwrap());
    let n = 2 * thread_bound() + 8;
    let mut clients: Vec<TcpStream> = (0..n).map(|_| tcp_connect(running.inet())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("hello from {i}");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    wait_for("every connection to park", || running.handle.stats().parked == n);
    let stats = running.handle.stats();
    assert!(stats.workers_total <= thread_bound(), "{} threads for {n} idle connections", stats.workers_total);
    assert_eq!(stats.workers_busy, 0);
    // Each resumes, in any order, and parks again.
    for (i, c) in clients.iter_mut().enumerate().rev() {
        let msg = format!("again from {i}\n");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    wait_for("every connection to park again", || running.handle.stats().parked == n);
    // A parked connection's end reaches its handler: it finishes and closes.
    drop(clients.pop());
    wait_for("the closed one to end", || running.handle.stats().active == n - 1);
    assert_eq!(running.handle.stats().parked, n - 1);
    drop(clients);
    wait_for("all to end", || running.handle.stats().active == 0);
    assert_eq!(running.handle.stats().parked, 0);
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}

// ------------------------------------------- the bundled time server, TCP

fn strftime_under_event(handler: Strftime) -> Running {
    run(TcpServer::builder().strategy(Event::new()).bind("127.0.0.1:0", handler).unwrap())
}

fn read_line(c: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while c.read(&mut byte).expect("a line") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn year() -> String {
    socketserver::servers::render_time(b"%Y").unwrap()
}

/// Lines pipelined in one write are all answered, in order, before the
/// connection parks; then it parks, and resumes with its next line.
#[test]
fn strftime_under_event_answers_pipelined_lines_then_parks_and_resumes() {
    let running = strftime_under_event(Strftime::new());
    let mut c = tcp_connect(running.inet());
    c.write_all(b"a %Y\nb %Y\r\n\nc %%\n").unwrap();
    let year = year();
    assert_eq!(read_line(&mut c), format!("a {year}"));
    assert_eq!(read_line(&mut c), format!("b {year}"));
    assert_eq!(read_line(&mut c).len(), "2026-11-22 05:03:42".len(), "an empty line: the default format");
    assert_eq!(read_line(&mut c), "c %");
    wait_for("the connection to park", || running.handle.stats().parked == 1);
    for i in 0..3 {
        c.write_all(format!("{i} %Y\n").as_bytes()).unwrap();
        assert_eq!(read_line(&mut c), format!("{i} {year}"));
        wait_for("the connection to park again", || running.handle.stats().parked == 1);
    }
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}

/// A line that comes in pieces (each while the connection is parked with
/// the pieces before it, a CR and its LF apart) is one request: one answer.
#[test]
fn strftime_under_event_joins_a_line_split_across_writes() {
    let running = strftime_under_event(Strftime::new());
    let mut c = tcp_connect(running.inet());
    wait_for("the new connection to park", || running.handle.stats().parked == 1);
    c.write_all(b"split %").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(b"Y").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(b" here\r").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(b"\n").unwrap();
    assert_eq!(read_line(&mut c), format!("split {} here", year()));
    wait_for("the connection to park after the line", || running.handle.stats().parked == 1);
    c.write_all(b"%Y").unwrap();
    c.write_all(b"\n%%\n").unwrap();
    assert_eq!(read_line(&mut c), year());
    assert_eq!(read_line(&mut c), "%");
    running.stop().unwrap();
}

/// Many connections wait between lines with no thread each, and each
/// resumes; the limits of a line hold under the event strategy too: one
/// too long is refused and closed, one not complete in time is told so.
#[test]
fn strftime_under_event_parks_idle_connections_and_keeps_its_limits() {
    let running = strftime_under_event(Strftime::new().request_timeout(Some(Duration::from_millis(300))));
    let n = 2 * thread_bound() + 8;
    let mut clients: Vec<TcpStream> = (0..n).map(|_| tcp_connect(running.inet())).collect();
    let year = year();
    for c in &mut clients {
        c.write_all(b"%Y\n").unwrap();
        assert_eq!(read_line(c), year);
    }
    wait_for("every connection to park", || running.handle.stats().parked == n);
    let stats = running.handle.stats();
    assert!(stats.workers_total <= thread_bound(), "{} threads for {n} idle connections", stats.workers_total);
    for c in clients.iter_mut().rev() {
        c.write_all(b"%Y!\n").unwrap();
        assert_eq!(read_line(c), format!("{year}!"));
    }
    // Too long: an error line, then the end.
    let long = clients.pop().unwrap();
    let mut long = long;
    let mut line = vec![b'x'; MAX_TIME_REQUEST + 10];
    line.push(b'\n');
    long.write_all(&line).unwrap();
    assert!(read_line(&mut long).starts_with("error: request line longer than"));
    assert_eq!(long.read(&mut [0u8; 16]).unwrap_or(0), 0);
    // Not complete in time: an error line, then the end.
    let mut slow = clients.pop().unwrap();
    let started = Instant::now();
    slow.write_all(b"%Y").unwrap();
    assert_eq!(read_line(&mut slow), "error: request line not complete in time; closing");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(slow.read(&mut [0u8; 16]).unwrap_or(0), 0);
    // The others are still served.
    for c in &mut clients {
        c.write_all(b"%Y\n").unwrap();
        assert_eq!(read_line(c), year);
    }
    drop(clients);
    wait_for("all to end", || running.handle.stats().active == 0);
    assert_eq!(running.handle.stats().parked, 0);
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}

/// The README's first command, `cargo run --release -- echo`, names no
/// binary: the workspace's default members must have exactly one (the
/// command's). With the apps' programs as binaries it was "could not
/// determine which binary to run". (Asked for `--version` in the test's own
/// profile: nothing to build that `cargo test` has not built.)
#[test]
fn the_readmes_cargo_run_needs_no_bin() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf();
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["run", "--quiet"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let out = cargo.args(["--", "--version"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo run -- --version failed: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("socketserver"), "{stderr}");
}
