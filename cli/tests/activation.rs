//! Socket activation with the real `systemd-socket-activate` in front of
//! the built `socketserver`: what it is handed it serves (by kind, or as the
//! listener of the flag the descriptor is named after), it binds nothing
//! else, a descriptor of the wrong kind is an error naming it; and the
//! readiness protocol (`NOTIFY_SOCKET`): READY=1 once it listens,
//! STOPPING=1 when a signal stops it.
//!
//! `systemd-socket-activate` (Debian's `systemd` package) binds what `-l`
//! says, then waits for the first connection or datagram on any of them
//! and only then execs the program, in its own process (same pid): the
//! tests make that first contact themselves. It cannot bind port 0, so a
//! port free a moment before is used, and another one tried if it was
//! taken in between. Without it on `PATH` the tests that need it print a
//! `skipped:` line (see `util::tools`).

mod util;

use std::io::{self, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::Command;
use std::time::{Duration, Instant};

use util::process::*;
use util::tools::require_tool;
use util::{TIMEOUT, connect};

const ACTIVATE: &str = "systemd-socket-activate";

/// Runs `systemd-socket-activate -l ADDR... OPTS socketserver SERVER` and
/// waits until it listens on every `ADDR` (`listen()` picks them afresh
/// for each try); returns it and the addresses. `None` if it is not
/// installed: the test is skipped (see `util::tools`).
fn activate(listen: impl Fn() -> Vec<String>, opts: &[&str], server: &[&str]) -> Option<(Proc, Vec<String>)> {
    let launcher = require_tool(ACTIVATE, "systemd")?;
    for _ in 0..5 {
        let addrs = listen();
        let mut cmd = Command::new(&launcher);
        for a in &addrs {
            cmd.arg("-l").arg(a);
        }
        cmd.args(opts).arg(BIN).args(server);
        let mut proc = Proc::spawn(cmd);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let stderr = proc.stderr_text();
            if addrs.iter().all(|a| stderr.contains(&format!("Listening on {a} as "))) {
                return Some((proc, addrs));
            }
            if proc.try_status().is_some() {
                assert!(stderr.contains("Address already in use"), "{ACTIVATE} failed: {stderr}");
                break; // the port was taken since: another one
            }
            assert!(Instant::now() < deadline, "{ACTIVATE} did not listen on {addrs:?}: {stderr}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    panic!("{ACTIVATE}: five free ports in a row were taken before it could bind them");
}

fn path_text(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A TCP and a Unix stream socket handed over by systemd-socket-activate
/// (named `a` and `b`: no flag's) to `socketserver echo` with no listener
/// flag: both are served — the connection that made systemd-socket-activate
/// start the server too — each reported in a `listening` line with the
/// address systemd bound, and the server binds nothing of its own (not the
/// default TCP and UDP 127.0.0.1:9999 it binds when handed nothing). The
/// socket file is systemd's: left in place when the server exits.
#[test]
fn stream_sockets_handed_over_are_served_and_nothing_else_is_bound() {
    let dir = TempDir::new("activate-stream");
    let path = dir.join("x.sock");
    let listen = || vec![format!("127.0.0.1:{}", free_port(false)), path_text(&path)];
    let Some((mut server, addrs)) = activate(listen, &["--fdname=a:b"], &["echo"]) else { return };
    let tcp: SocketAddr = addrs[0].parse().unwrap();

    let mut first = connect(tcp); // the first contact: the server starts
    assert_eq!(round_trip(&mut first, b"over tcp"), b"over tcp");
    let lines = sorted(server.listening(2));
    assert_eq!(lines, sorted(vec![format!("tcp {tcp}"), format!("unix {}", path.display())]));
    let mut unix = UnixStream::connect(&path).unwrap();
    unix.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(round_trip(&mut unix, b"over unix"), b"over unix");
    let mut second = connect(tcp);
    assert_eq!(round_trip(&mut second, b"again"), b"again");

    let (tcp_ports, udp_ports) = bound_ports(server.pid());
    assert_eq!(tcp_ports, vec![tcp.port()], "the server listens on TCP ports beyond the one handed over");
    assert_eq!(udp_ports, Vec::<u16>::new(), "the server bound UDP ports of its own");

    drop((first, second, unix));
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code(TIMEOUT), 0, "{}", server.stderr_text());
    assert!(path.exists(), "the server removed the socket file systemd bound");
}

/// A UDP and a Unix datagram socket handed over (`--datagram`): both
/// answered, the datagram that started the server too; both reported;
/// nothing else bound.
#[test]
fn datagram_sockets_handed_over_are_served() {
    let dir = TempDir::new("activate-dgram");
    let path = dir.join("d.sock");
    let listen = || vec![format!("127.0.0.1:{}", free_port(true)), path_text(&path)];
    let Some((mut server, addrs)) = activate(listen, &["--datagram"], &["echo"]) else { return };
    let udp_addr: SocketAddr = addrs[0].parse().unwrap();

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    udp.send_to(b"first datagram", udp_addr).unwrap(); // the server starts
    let mut buf = [0u8; 64];
    let (n, from) = udp.recv_from(&mut buf).expect("the first datagram answered");
    assert_eq!((&buf[..n], from), (&b"first datagram"[..], udp_addr));
    let lines = sorted(server.listening(2));
    assert_eq!(lines, sorted(vec![format!("udp {udp_addr}"), format!("unix-dgram {}", path.display())]));

    let client = UnixDatagram::bind(dir.join("client.sock")).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.send_to(b"over unix", &path).unwrap();
    let n = client.recv(&mut buf).expect("the Unix datagram answered");
    assert_eq!(&buf[..n], b"over unix");

    let (tcp_ports, udp_ports) = bound_ports(server.pid());
    assert_eq!(tcp_ports, Vec::<u16>::new(), "the server bound TCP ports of its own");
    assert_eq!(udp_ports, vec![udp_addr.port()], "the server has UDP ports beyond the one handed over");
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code(TIMEOUT), 0, "{}", server.stderr_text());
}

/// A descriptor named `tcp.0` is the first `--tcp` flag's listener: with
/// `--tcp 127.0.0.1:0` the server serves the port handed over, reports it,
/// and binds no port of its own for the flag (nor serves the descriptor a
/// second time by its kind).
#[test]
fn a_flag_takes_the_descriptor_named_after_it() {
    let listen = || vec![format!("127.0.0.1:{}", free_port(false))];
    let Some((mut server, addrs)) = activate(listen, &["--fdname=tcp.0"], &["echo", "--tcp", "127.0.0.1:0"]) else {
        return;
    };
    let tcp: SocketAddr = addrs[0].parse().unwrap();
    let mut c = connect(tcp);
    assert_eq!(round_trip(&mut c, b"named"), b"named");
    assert_eq!(server.listening_on("tcp"), tcp.to_string());
    let (tcp_ports, udp_ports) = bound_ports(server.pid());
    assert_eq!(tcp_ports, vec![tcp.port()], "--tcp 127.0.0.1:0 bound a port of its own");
    assert_eq!(udp_ports, Vec::<u16>::new());
    drop(c);
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code(TIMEOUT), 0, "{}", server.stderr_text());
}

/// A Unix socket systemd hands over as a flag's listener (`--fdname=unix.0`
/// with `--unix PATH`) is served at its path, and its file is systemd's:
/// neither the server nor its successor after a SIGHUP removes it when it
/// stops (the successor answers only for files its predecessor bound).
#[test]
fn a_socket_file_systemd_hands_over_stays_across_a_restart_and_a_stop() {
    become_subreaper();
    let dir = TempDir::new("activate-unix-flag");
    let path = dir.join("flag.sock");
    let listen = || vec![path_text(&path)];
    let Some((mut server, _)) = activate(listen, &["--fdname=unix.0"], &["echo", "--unix", &path_text(&path)]) else {
        return;
    };
    let mut first = UnixStream::connect(&path).unwrap(); // the server starts
    first.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(round_trip(&mut first, b"first"), b"first");
    assert_eq!(server.listening_on("unix"), path.display().to_string());
    drop(first);

    server.signal(libc::SIGHUP);
    let mut successor = Successor::new(server.handed_to(0));
    assert_eq!(server.listening_on("unix"), path.display().to_string());
    assert_eq!(server.exit_code(TIMEOUT), 0, "{}", server.stderr_text());
    let mut c = UnixStream::connect(&path).expect("the successor serves the path");
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(round_trip(&mut c, b"successor"), b"successor");
    drop(c);

    successor.signal(libc::SIGTERM);
    assert_eq!(successor.exit_code(TIMEOUT), 0, "{}", server.stderr_text());
    assert!(path.exists(), "systemd's socket file was removed");
}

/// A descriptor named `tcp.0` that is a UDP socket: the server serves
/// nothing and exits with code 1, saying which descriptor it is, what it
/// is and what the flag wanted.
#[test]
fn a_descriptor_of_the_wrong_kind_is_an_error_naming_it() {
    let listen = || vec![format!("127.0.0.1:{}", free_port(true))];
    let Some((mut server, addrs)) =
        activate(listen, &["--datagram", "--fdname=tcp.0"], &["echo", "--tcp", "127.0.0.1:0"])
    else {
        return;
    };
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"start", addrs[0].as_str()).unwrap(); // the server starts
    assert_eq!(server.exit_code(TIMEOUT), 1, "{}", server.stderr_text());
    // (Its last lines may still be on their way from the pipe: the process
    // has exited, the thread that gathers its stderr not yet read them.)
    server.expect_stderr("inherited descriptor 3 (tcp.0) is a udp socket, not tcp");
    assert_eq!(server.try_line(Duration::from_millis(100)), None, "it reported a listener");
}

/// Where the test listens as the service manager: a Unix datagram socket
/// at a path, or in the abstract namespace (`@name`).
fn notify_socket(dir: &TempDir, abstract_name: bool) -> (UnixDatagram, String) {
    let sock;
    let name;
    if abstract_name {
        use std::os::linux::net::SocketAddrExt;
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = format!("socketserver-notify-{}-{n}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(n.as_bytes()).unwrap();
        sock = UnixDatagram::bind_addr(&addr).unwrap();
        name = format!("@{n}");
    } else {
        let path = dir.join("notify.sock");
        sock = UnixDatagram::bind(&path).unwrap();
        name = path_text(&path);
    }
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    (sock, name)
}

/// The next notification, if one comes within `TIMEOUT`.
fn notification(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// What is in `stdout` now, without waiting.
fn ready_output(stdout: &mut std::process::ChildStdout) -> String {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let fd = stdout.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading stdout: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The readiness protocol, with `NOTIFY_SOCKET` a path and an abstract
/// name: READY=1 comes once the server listens — the `listening` line is
/// already on stdout when it arrives, and the server answers — and
/// SIGTERM brings STOPPING=1 and exit code 0. Nothing else is sent.
#[test]
fn ready_when_listening_and_stopping_on_sigterm() {
    for abstract_name in [false, true] {
        let dir = TempDir::new("activate-notify");
        let (manager, name) = notify_socket(&dir, abstract_name);
        let mut cmd = Command::new(BIN);
        cmd.args(["echo", "--tcp", "127.0.0.1:0"]).env("NOTIFY_SOCKET", &name);
        let (mut server, mut stdout) = Proc::spawn_keep_stdout(cmd);

        assert_eq!(notification(&manager).as_deref(), Some("READY=1"), "{name}: {}", server.stderr_text());
        let out = ready_output(&mut stdout);
        let addr = out
            .strip_prefix("listening tcp ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("{name}: READY=1 came before the listening line (stdout then: {out:?})"));
        let mut c = connect(addr.parse().unwrap());
        assert_eq!(round_trip(&mut c, b"ready"), b"ready");
        drop(c);

        server.signal(libc::SIGTERM);
        assert_eq!(notification(&manager).as_deref(), Some("STOPPING=1"), "{name}: {}", server.stderr_text());
        assert_eq!(server.exit_code(TIMEOUT), 0, "{name}: {}", server.stderr_text());
        manager.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(manager.recv(&mut buf).is_err(), "{name}: more than READY=1 and STOPPING=1 was sent");
    }
}

/// SIGTERM the moment READY=1 arrives: STOPPING=1 still comes (the
/// thread that says it could start waiting only after the servers had
/// stopped, and then waited for ever: about 1 run in 100 sent none), and
/// the server exits 0. 20 rounds.
#[test]
fn stopping_is_said_even_for_a_sigterm_right_after_ready() {
    for _ in 0..20 {
        let dir = TempDir::new("activate-quick-stop");
        let (manager, name) = notify_socket(&dir, false);
        let mut cmd = Command::new(BIN);
        cmd.args(["echo", "--tcp", "127.0.0.1:0"]).env("NOTIFY_SOCKET", &name);
        let mut server = Proc::spawn(cmd);
        assert_eq!(notification(&manager).as_deref(), Some("READY=1"), "{}", server.stderr_text());
        server.signal(libc::SIGTERM);
        assert_eq!(notification(&manager).as_deref(), Some("STOPPING=1"), "{}", server.stderr_text());
        assert_eq!(server.exit_code(TIMEOUT), 0, "{}", server.stderr_text());
    }
}
