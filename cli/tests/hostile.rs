//! Hostile peers against the command, as the issue reproduced them: a
//! datagram client that never reads, stream clients that never read, and
//! small datagrams asking for large answers.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

/// `socketserver ARGS` serving a Unix datagram socket at `path`, started
/// once it says it listens.
fn start_unix_dgram(which: &str, path: &std::path::Path, extra: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_socketserver"))
        .args([which, "--unix-dgram"])
        .arg(path)
        .args(extra)
        // A grace period far beyond the 5 s the exits here are given: an
        // exit that waits for it is told apart from one at once.
        .args(["--log-level", "off", "--grace", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening unix-dgram"), "{line}");
    child
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(start.elapsed() < within, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sigterm(child: &Child) {
    // SAFETY: signalling a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
}

/// A client binds its own socket, sends 24 datagrams and never reads: the
/// honest client is still answered, SIGTERM ends the process at once and
/// the socket file is gone (every worker hung in `send`, no signal worked,
/// only SIGKILL ended it and the file stayed).
#[test]
fn a_datagram_client_that_never_reads_freezes_nothing() {
    let dir = std::env::temp_dir().join(format!("socketserver-cli-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (which, extra)) in
        [("echo", &[][..]), ("time", &[][..]), ("echo", &["--strategy", "threading"][..])].into_iter().enumerate()
    {
        let path = dir.join(format!("s{i}.sock"));
        let mut server = start_unix_dgram(which, &path, extra);
        let hostile = UnixDatagram::bind(dir.join(format!("hostile{i}.sock"))).unwrap();
        for _ in 0..24 {
            hostile.send_to(b"%Y", &path).unwrap();
        }
        let honest = UnixDatagram::bind(dir.join(format!("honest{i}.sock"))).unwrap();
        honest.set_read_timeout(Some(TIMEOUT)).unwrap();
        honest.send_to(b"%%", &path).unwrap();
        let mut buf = [0u8; 64];
        let n = honest.recv(&mut buf).expect("the honest client is answered");
        assert!(n > 0, "{which} {extra:?}");
        let signalled = Instant::now();
        sigterm(&server);
        assert_eq!(wait_exit(&mut server, Duration::from_secs(5)), 0, "{which} {extra:?}");
        eprintln!("{which} {extra:?}: honest client answered; exit {:?} after SIGTERM", signalled.elapsed());
        assert!(!path.exists(), "the socket file was left behind");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `echo --max-workers 4 --queue 0 --idle-timeout 0.3`: four clients push
/// megabytes and never read. Every worker was stuck in `write` for as long
/// as anyone watched; now each is closed at the idle timeout and an honest
/// client is served.
#[test]
fn stream_clients_that_never_read_do_not_hold_the_workers() {
    let mut server = Server::start(&[
        "echo",
        "--tcp",
        "127.0.0.1:0",
        "--workers",
        "4",
        "--max-workers",
        "4",
        "--queue",
        "0",
        "--idle-timeout",
        "0.3",
        "--log-level",
        "off",
    ]);
    let hostile: Vec<_> = (0..4)
        .map(|_| {
            let mut c = connect(server.addr);
            c.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
            let chunk = [b'x'; 64 * 1024];
            let mut pushed = 0;
            while pushed < 7 << 20 && c.write(&chunk).is_ok() {
                pushed += chunk.len();
            }
            c
        })
        .collect();
    let start = Instant::now();
    let mut honest = connect(server.addr);
    honest.write_all(b"served?\n").unwrap();
    let mut back = [0u8; 8];
    honest.read_exact(&mut back).expect("the honest client is served");
    assert_eq!(&back, b"served?\n");
    // The bound is the behaviour: 16 times the idle timeout; the wrong
    // outcome (workers stuck in `write`) never ends.
    assert!(start.elapsed() < Duration::from_secs(5), "served only after {:?}", start.elapsed());
    eprintln!("4 clients never reading, 4 workers: the honest client served after {:?}", start.elapsed());
    drop(hostile);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(TIMEOUT).0, 0);
}

/// `--write-timeout` is taken, and the time server keeps a UDP reply
/// within 3 times its request's size on the wire (headers included):
/// `%c` (2 bytes) is answered, `%1400Y` (6 bytes) and `%65507Y` refused
/// with an `error:` reply within the bound (the 1,400 bytes went out by
/// default). `--max-reply` raises the limit whatever the request: 1400
/// lets `%1400Y` through and still refuses `%65507Y`; 65507 lets both.
#[test]
fn the_time_server_does_not_amplify_over_udp() {
    let cases: [(&[&str], [bool; 2]); 3] =
        [(&[], [false, false]), (&["--max-reply", "1400"], [true, false]), (&["--max-reply", "65507"], [true, true])];
    for (args, answered) in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_socketserver"))
            .args(["time", "--udp", "127.0.0.1:0", "--write-timeout", "1", "--log-level", "off"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening udp ").expect("a listening line").to_string();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = vec![0u8; 70_000];
        client.send_to(b"%c", &addr).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert!(n == 24 && !buf.starts_with(b"error:"), "%c: {}", String::from_utf8_lossy(&buf[..n]));
        for (request, size, answered) in [("%1400Y", 1400, answered[0]), ("%65507Y", 65_507, answered[1])] {
            client.send_to(request.as_bytes(), &addr).unwrap();
            let n = client.recv(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..n.min(200)]);
            if answered {
                assert_eq!(n, size, "{args:?} {request}: {text}");
            } else {
                // IPv4: 28 bytes of headers each way.
                let bound = 3 * (request.len() + 28) - 28;
                assert!(n <= bound && buf.starts_with(b"error:"), "{args:?} {request}: {n} bytes: {text}");
            }
        }
        sigterm(&child);
        assert_eq!(wait_exit(&mut child, TIMEOUT), 0);
    }
}
