//! The remote_command application, run in-process: its server on a thread, its
//! client functions over real TCP connections, and a Python client.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use remote_command::{Config, Outcome};
use socketserver::framing::LengthPrefixed;
use socketserver::{AnyStrategy, Event, ThreadPool, Threading};
use socketserver_apps::remote_command;
use util::*;

fn config(allow: &[&str], timeout: Duration) -> Config {
    Config { timeout, ..Config::new(allow.iter().map(|s| s.to_string()).collect()) }
}

/// A configuration that also allows programs that run others (tests of
/// what such a program could do).
fn unsafe_config(allow: &[&str], timeout: Duration) -> Config {
    Config { allow_unsafe: true, ..config(allow, timeout) }
}

fn start(allow: &[&str]) -> Running {
    start_with(allow, remote_command::DEFAULT_TIMEOUT)
}

fn start_with(allow: &[&str], timeout: Duration) -> Running {
    run(remote_command::server("127.0.0.1:0", &config(allow, timeout)).expect("bind"))
}

/// Under `strategy`, with the default time limit.
fn start_on(allow: &[&str], strategy: AnyStrategy) -> Running {
    let cfg = Config { strategy, ..config(allow, remote_command::DEFAULT_TIMEOUT) };
    run(remote_command::server("127.0.0.1:0", &cfg).expect("bind"))
}

/// Runs `test` on a pool (the default) and under the event strategy.
macro_rules! on_pool_and_event {
    ($test:ident, $pool:ident, $event:ident) => {
        #[test]
        fn $pool() {
            $test(Config::new(Vec::new()).strategy);
        }
        #[test]
        fn $event() {
            $test(Event::new().into());
        }
    };
}

fn start_unsafe(allow: &[&str], timeout: Duration) -> Running {
    run(remote_command::server("127.0.0.1:0", &unsafe_config(allow, timeout)).expect("bind"))
}

/// Runs one command line: the outcome, stdout and stderr.
fn exec(stream: &mut TcpStream, line: &str) -> (Outcome, Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = remote_command::run_command(stream, line, &mut out, &mut err).expect("run_command");
    (outcome, out, err)
}

fn error_of(outcome: Outcome) -> String {
    match outcome {
        Outcome::Error(msg) => msg,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Polls `cond` (a process table or a counter: nothing to block on) until
/// it holds; fails the test after [`TIMEOUT`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every process on the machine (Linux): pid, parent pid, and command
/// line (NUL-terminated words; empty for a zombie).
fn processes() -> Vec<(u32, u32, Vec<u8>)> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .filter_map(Result::ok)
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            Some((pid, ppid, cmdline))
        })
        .collect()
}

fn argv_bytes(argv: &[&str]) -> Vec<u8> {
    argv.iter().flat_map(|a| a.bytes().chain([0])).collect()
}

/// Live processes whose command line is exactly `argv` anywhere below this
/// process (the server runs each command under a supervisor of its own, so
/// a command is a grandchild).
fn descendants_running(argv: &[&str]) -> usize {
    let me = std::process::id();
    let procs = processes();
    let parent: std::collections::HashMap<u32, u32> = procs.iter().map(|(pid, ppid, _)| (*pid, *ppid)).collect();
    let below_me = |mut pid: u32| {
        for _ in 0..64 {
            match parent.get(&pid) {
                Some(&ppid) if ppid == me => return true,
                Some(&ppid) if ppid > 1 => pid = ppid,
                _ => return false,
            }
        }
        false
    };
    let wanted = argv_bytes(argv);
    procs.iter().filter(|(pid, _, cmdline)| *cmdline == wanted && below_me(*pid)).count()
}

/// Live processes whose command line is exactly `argv`, wherever they are.
fn pids_running(argv: &[&str]) -> Vec<u32> {
    let wanted = argv_bytes(argv);
    processes().into_iter().filter(|(_, _, cmdline)| *cmdline == wanted).map(|(pid, _, _)| pid).collect()
}

/// Kills, when dropped, every process still running `argv` (what a failed
/// test would otherwise leave behind).
struct KillLeftovers(Vec<String>);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        let argv: Vec<&str> = self.0.iter().map(String::as_str).collect();
        for pid in pids_running(&argv) {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) touches no memory of ours.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn allowed_command_output_and_exit_status(strategy: AnyStrategy) {
    let running = start_on(&["echo", "ls"], strategy);
    let mut c = tcp_connect(running.inet());
    let (outcome, out, err) = exec(&mut c, "echo hi");
    assert_eq!(outcome, Outcome::Exit(0));
    assert_eq!(out, b"hi\n");
    assert!(err.is_empty());

    // Quoting: one word per quoted string, inner spaces kept.
    let (outcome, out, _) = exec(&mut c, r#"echo 'a  b' "c \"d\"" e\ f '' x"#);
    assert_eq!(outcome, Outcome::Exit(0));
    assert_eq!(String::from_utf8(out).unwrap(), "a  b c \"d\" e f  x\n");

    // Failure: a non-zero status, the stderr captured apart from stdout.
    let (outcome, out, err) = exec(&mut c, "ls /nonexistent");
    assert!(matches!(outcome, Outcome::Exit(code) if code != 0), "{outcome:?}");
    assert!(out.is_empty());
    assert!(String::from_utf8_lossy(&err).contains("/nonexistent"), "{}", String::from_utf8_lossy(&err));

    // Both streams in one command.
    let (outcome, out, err) = exec(&mut c, "ls -d / /nonexistent");
    assert!(matches!(outcome, Outcome::Exit(code) if code != 0));
    assert_eq!(out, b"/\n");
    assert!(!err.is_empty());

    // No shell: what a shell would expand, chain or redirect arrives as
    // plain arguments (the output is the words themselves, not `id`'s, and
    // no file `x` appears).
    let (outcome, out, _) = exec(&mut c, r#"echo $(id) `id` ; ls | cat && * > x $HOME"#);
    assert_eq!(outcome, Outcome::Exit(0));
    assert_eq!(String::from_utf8(out).unwrap(), "$(id) `id` ; ls | cat && * > x $HOME\n");
    assert!(!std::path::Path::new("x").exists());
    drop(c);
    running.stop().unwrap();
}

on_pool_and_event!(
    allowed_command_output_and_exit_status,
    allowed_command_output_and_exit_status_on_a_pool,
    allowed_command_output_and_exit_status_under_event
);

#[test]
fn programs_not_allowed_or_given_as_paths_are_refused_and_never_run() {
    let running = start(&["echo"]);
    let mut c = tcp_connect(running.inet());
    let (outcome, out, err) = exec(&mut c, "sh -c 'echo pwned'");
    let msg = error_of(outcome);
    assert!(msg.contains("sh") && msg.contains("not allowed"), "{msg}");
    assert!(out.is_empty() && err.is_empty());

    // A path is refused even when its file name is allowed.
    for line in ["/bin/echo hi", "./echo hi", "../bin/echo hi"] {
        let (outcome, out, _) = exec(&mut c, line);
        assert!(error_of(outcome).contains("not a path"), "{line}");
        assert!(out.is_empty());
    }
    // A quoted program name is still just a name.
    let (outcome, out, _) = exec(&mut c, "'echo' ok");
    assert_eq!((outcome, out), (Outcome::Exit(0), b"ok\n".to_vec()));
    drop(c);
    running.stop().unwrap();
}

/// The command line is logged as one line, escaped: a line break in it
/// wrote a forged record of its own, and CR and ESC reached the terminal.
#[test]
fn a_command_line_reaches_the_log_as_one_escaped_line() {
    capture_logs();
    let running = start(&["echo"]);
    let mut c = tcp_connect(running.inet());
    let line = "echo logged\n[2026-01-01T00:00:00Z INFO  remote_command] forged\r\x1b[2K";
    let (outcome, _, _) = exec(&mut c, line);
    assert_eq!(outcome, Outcome::Exit(0));
    let refused = "nosuch\x1b]0;title\x07 logged\nforged";
    assert!(error_of(exec(&mut c, refused).0).contains("not allowed"));
    drop(c);
    running.stop().unwrap();
    let logged = logged_containing("forged");
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(
        logged[0]
            .ends_with(r"`echo logged\n[2026-01-01T00:00:00Z INFO  remote_command] forged\r\x1b[2K` exited with 0"),
        "{logged:?}"
    );
    assert!(
        logged[1].contains(r"`nosuch\x1b]0;title\x07 logged\nforged`: nosuch\x1b]0;title\x07: not allowed"),
        "{logged:?}"
    );
    assert!(logged.iter().all(|l| !l.chars().any(char::is_control)), "{logged:?}");
}

#[test]
fn malformed_lines_get_an_error_and_the_connection_goes_on() {
    let running = start(&["echo"]);
    let mut c = tcp_connect(running.inet());
    assert!(error_of(exec(&mut c, "echo \"unterminated").0).contains("unterminated double quote"));
    assert!(error_of(exec(&mut c, "echo 'unterminated").0).contains("unterminated single quote"));
    assert!(error_of(exec(&mut c, "echo trailing\\").0).contains("trailing backslash"));
    assert!(error_of(exec(&mut c, "   ").0).contains("empty"));

    // Not UTF-8: refused, not mangled into something else.
    LengthPrefixed::new(1024).write_frame(&mut c, b"echo \xff\xfe").unwrap();
    let mut frame = Vec::new();
    assert!(LengthPrefixed::new(1 << 20).read_frame(&mut c, &mut frame).unwrap());
    assert_eq!(frame[0], b'!');
    assert!(String::from_utf8_lossy(&frame[1..]).contains("UTF-8"));

    let (outcome, out, _) = exec(&mut c, "echo still here");
    assert_eq!((outcome, out), (Outcome::Exit(0), b"still here\n".to_vec()));
    drop(c);
    running.stop().unwrap();
}

#[test]
fn megabytes_of_output_arrive_whole_in_bounded_frames() {
    let running = start(&["head"]);
    let mut c = tcp_connect(running.inet());
    LengthPrefixed::new(1024).write_frame(&mut c, b"head -c 5000000 /dev/zero").unwrap();
    let codec = LengthPrefixed::new(remote_command::MAX_REPLY);
    let (mut frame, mut total, mut frames) = (Vec::new(), 0usize, 0usize);
    let status = loop {
        assert!(codec.read_frame(&mut c, &mut frame).unwrap(), "closed early");
        assert!(frame.len() <= 1 + remote_command::CHUNK, "a frame of {} bytes", frame.len());
        match frame[0] {
            b'o' => {
                assert!(frame[1..].iter().all(|&b| b == 0));
                total += frame.len() - 1;
                frames += 1;
            }
            b'x' => break String::from_utf8(frame[1..].to_vec()).unwrap(),
            other => panic!("unexpected frame {:?}: {:?}", other as char, String::from_utf8_lossy(&frame)),
        }
    };
    assert_eq!(status, "0");
    assert_eq!(total, 5_000_000);
    assert!(frames >= 5_000_000 / remote_command::CHUNK, "{frames} frames");

    // The connection is still in step: the next answer is the next command's.
    let (outcome, out, _) = exec(&mut c, "head -c 3 /dev/zero");
    assert_eq!((outcome, out), (Outcome::Exit(0), vec![0u8; 3]));
    drop(c);
    running.stop().unwrap();
}

fn commands_sent_back_to_back_are_answered_in_order(strategy: AnyStrategy) {
    let running = start_on(&["echo", "ls"], strategy);
    let mut c = tcp_connect(running.inet());
    let codec = LengthPrefixed::new(1024);
    let mut batch = Vec::new();
    for line in ["echo first", "ls /nonexistent", "echo third"] {
        codec.write_frame(&mut batch, line.as_bytes()).unwrap();
    }
    c.write_all(&batch).unwrap(); // all three before reading anything
    let replies = LengthPrefixed::new(remote_command::MAX_REPLY);
    let mut frame = Vec::new();
    let mut seen = Vec::new();
    while seen.iter().filter(|(t, _)| *t == b'x' || *t == b'!').count() < 3 {
        assert!(replies.read_frame(&mut c, &mut frame).unwrap());
        seen.push((frame[0], frame[1..].to_vec()));
    }
    let stdout: Vec<_> = seen.iter().filter(|(t, _)| *t == b'o').map(|(_, d)| d.clone()).collect();
    assert_eq!(stdout, [b"first\n".to_vec(), b"third\n".to_vec()]);
    let statuses: Vec<_> = seen.iter().filter(|(t, _)| *t == b'x').map(|(_, d)| d.clone()).collect();
    assert_eq!(statuses.len(), 3);
    assert_eq!(statuses[0], b"0");
    assert_ne!(statuses[1], b"0");
    assert_eq!(statuses[2], b"0");
    drop(c);
    running.stop().unwrap();
}

on_pool_and_event!(
    commands_sent_back_to_back_are_answered_in_order,
    commands_sent_back_to_back_are_answered_in_order_on_a_pool,
    commands_sent_back_to_back_are_answered_in_order_under_event
);

#[test]
fn an_oversized_frame_gets_an_error_and_the_connection_closes() {
    let running = start(&["echo"]);
    let mut c = tcp_connect(running.inet());
    // 4 GiB announced: refused from the header alone.
    c.write_all(&[0xff, 0xff, 0xff, 0xff, b'e', b'c', b'h', b'o']).unwrap();
    let mut frame = Vec::new();
    let codec = LengthPrefixed::new(remote_command::MAX_REPLY);
    assert!(codec.read_frame(&mut c, &mut frame).unwrap());
    assert_eq!(frame[0], b'!');
    let msg = String::from_utf8_lossy(&frame[1..]).into_owned();
    assert!(msg.contains("maximum") && msg.contains("closing"), "{msg}");
    match codec.read_frame(&mut c, &mut frame) {
        Ok(false) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the connection should be closed: {other:?}"),
    }
    // Just over the limit is refused too; the server serves on.
    let mut c = tcp_connect(running.inet());
    let too_long = vec![b'a'; remote_command::MAX_COMMAND + 1];
    c.write_all(&(too_long.len() as u32).to_be_bytes()).unwrap();
    assert!(codec.read_frame(&mut c, &mut frame).unwrap());
    assert_eq!(frame[0], b'!');
    let mut c = tcp_connect(running.inet());
    assert_eq!(exec(&mut c, "echo ok").1, b"ok\n");
    drop(c);
    running.stop().unwrap();
}

#[test]
fn a_command_past_its_time_limit_is_killed() {
    let running = start_with(&["sleep", "echo"], Duration::from_millis(500));
    let mut c = tcp_connect(running.inet());
    let started = Instant::now();
    let msg = error_of(exec(&mut c, "sleep 7.25").0);
    assert!(msg.contains("timed out"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(descendants_running(&["sleep", "7.25"]), 0, "the sleep was not killed");
    assert_eq!(exec(&mut c, "echo next").1, b"next\n");
    drop(c);
    running.stop().unwrap();
}

/// A client that stops reading while its command pours out output cannot
/// stretch the time limit: the server's writes wait only until the
/// deadline (not the 60 s write timeout), then the command is killed. The
/// client then finds either the `timed out` error after the output, or
/// the connection closed (a frame cut short cannot be followed by one).
#[test]
fn a_client_that_does_not_read_cannot_stretch_the_time_limit() {
    let running = start_unsafe(&["sh"], Duration::from_millis(500));
    let mut c = tcp_connect(running.inet());
    let script = "head -c 30000000 /dev/zero; sleep 29.25";
    LengthPrefixed::new(1024).write_frame(&mut c, format!("sh -c '{script}'").as_bytes()).unwrap();
    wait_until("the command to start", || descendants_running(&["sh", "-c", script]) == 1);
    let started = Instant::now();
    // The client reads nothing meanwhile.
    wait_until("the command to be killed", || descendants_running(&["sh", "-c", script]) == 0);
    assert!(started.elapsed() < Duration::from_secs(5), "killed only after {:?}", started.elapsed());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    match remote_command::run_command(&mut c, "", &mut out, &mut err) {
        Ok(outcome) => assert!(error_of(outcome).contains("timed out"), "{err:?}"),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
            "{e}"
        ),
    }
    assert!(out.len() < 30_000_000, "the whole output was sent after all");
    drop(c);
    running.stop().unwrap();
}

fn a_client_that_goes_away_has_its_command_killed(strategy: AnyStrategy) {
    let running = start_on(&["sleep"], strategy); // 30 s limit: only the disconnect can end it early
    let mut c = tcp_connect(running.inet());
    LengthPrefixed::new(1024).write_frame(&mut c, b"sleep 29.5").unwrap();
    wait_until("the command to start", || descendants_running(&["sleep", "29.5"]) == 1);
    let started = Instant::now();
    drop(c);
    wait_until("the handler to finish", || running.handle.stats().completed == 1);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(descendants_running(&["sleep", "29.5"]), 0, "the sleep outlived its client");
    running.stop().unwrap();
}

on_pool_and_event!(
    a_client_that_goes_away_has_its_command_killed,
    a_client_that_goes_away_has_its_command_killed_on_a_pool,
    a_client_that_goes_away_has_its_command_killed_under_event
);

#[test]
fn interactive_client_reads_lines_until_quit() {
    let running = start(&["echo", "ls"]);
    let mut c = tcp_connect(running.inet());
    let mut input: &[u8] = b"echo one\n\n   \necho \"two\nls /nonexistent\nsh\nquit\necho never\n";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    remote_command::interactive(&mut c, &mut input, &mut out, &mut err).unwrap();
    assert_eq!(out, b"one\n");
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("error: unterminated double quote"), "{err}");
    assert!(err.contains("[exit status 2]"), "{err}");
    assert!(err.contains("error: sh: not allowed"), "{err}");
    assert!(!err.contains("never"));
    // End of input ends it too.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    remote_command::interactive(&mut c, &mut &b"echo last"[..], &mut out, &mut err).unwrap();
    assert_eq!(out, b"last\n");
    drop(c);
    running.stop().unwrap();
}

/// A Python client speaking the protocol with `struct.pack('!I', n)`, as
/// the example's documentation shows.
const PYTHON_CLIENT: &str = r#"
import json, socket, struct, sys

def recv_exact(s, n):
    buf = b''
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError('server closed the connection')
        buf += chunk
    return buf

def run(s, line):
    body = line.encode('utf-8')
    s.sendall(struct.pack('!I', len(body)) + body)
    out, err = b'', b''
    while True:
        (n,) = struct.unpack('!I', recv_exact(s, 4))
        frame = recv_exact(s, n)
        tag, data = frame[:1], frame[1:]
        if tag == b'o':
            out += data
        elif tag == b'e':
            err += data
        elif tag == b'x':
            return {'status': int(data), 'out': out.decode(), 'err': err.decode()}
        else:
            return {'error': data.decode('utf-8')}

with socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10) as s:
    results = [run(s, line) for line in sys.argv[2:]]
print(json.dumps(results))
"#;

#[test]
fn a_python_client_interoperates() {
    let Some(python3) = util::tools::require_tool("python3", "python3") else { return };
    let running = start(&["echo", "ls", "head"]);
    let port = running.inet().port().to_string();
    let lines = ["echo hi from python", "ls /nonexistent", "sh -c id", "head -c 200000 /dev/zero"];
    let output = std::process::Command::new(python3)
        .args(["-c", PYTHON_CLIENT, &port])
        .args(lines)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run python3");
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    let results: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results[0]["status"], 0);
    assert_eq!(results[0]["out"], "hi from python\n");
    assert_ne!(results[1]["status"], 0);
    assert!(results[1]["err"].as_str().unwrap().contains("/nonexistent"));
    assert!(results[2]["error"].as_str().unwrap().contains("not allowed"));
    assert_eq!(results[3]["status"], 0);
    assert_eq!(results[3]["out"].as_str().unwrap().len(), 200_000);
    running.stop().unwrap();
}

#[test]
fn splitting_and_quoting() {
    use remote_command::{join_command, split_command};
    assert_eq!(split_command("  ls   -l\t/tmp \n").unwrap(), ["ls", "-l", "/tmp"]);
    assert_eq!(split_command(r#"a'b c'"d e"f"#).unwrap(), ["ab cd ef"]);
    assert_eq!(split_command(r#"'' "" x"#).unwrap(), ["", "", "x"]);
    assert_eq!(split_command(r#"'a\"b' "a\"b\\c\n""#).unwrap(), [r#"a\"b"#, r#"a"b\c\n"#]);
    assert_eq!(split_command(r"a\ b \'c").unwrap(), ["a b", "'c"]);
    assert_eq!(split_command("héllo wörld").unwrap(), ["héllo", "wörld"]);
    assert!(split_command("").unwrap().is_empty());
    assert!(split_command("'x").is_err());
    assert!(split_command("\"x").is_err());
    assert!(split_command("\"x\\").is_err());
    assert!(split_command("x\\").is_err());
    // In double quotes `\$` and `\`` stand for `$` and `` ` `` (as in sh).
    assert_eq!(split_command(r#"sh -c "kill -9 \$\$ \`x\`""#).unwrap(), ["sh", "-c", "kill -9 $$ `x`"]);
    let tricky = ["echo", "it's", "a b", "", "\"q\"", "back\\slash", "$HOME", "*", "tab\there", "ünï"];
    assert_eq!(split_command(&join_command(&tricky)).unwrap(), tricky);
    assert_eq!(join_command(&["ls", "-l", "/tmp"]), "ls -l /tmp");
}

#[test]
fn arguments_are_parsed_by_hand_and_bad_ones_refused() {
    use remote_command::{Args, parse_args};
    let args = |s: &[&str]| parse_args(&s.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    assert_eq!(
        args(&["server", "--allow", "ls", "--timeout", "2.5", "--allow", "echo"]).unwrap(),
        Args::Server {
            addr: "127.0.0.1:9001".into(),
            config: Config {
                allow: vec!["ls".into(), "echo".into()],
                timeout: Duration::from_millis(2500),
                allow_unsafe: false,
                frame_timeout: remote_command::DEFAULT_FRAME_TIMEOUT,
                strategy: ThreadPool::new(2).max_workers(256).into(),
            }
        }
    );
    match args(&["server", "--strategy", "event", "--allow", "echo"]).unwrap() {
        Args::Server { config, .. } => assert_eq!(config.strategy, Event::new().into()),
        other => panic!("{other:?}"),
    }
    match args(&["server", "--allow", "echo", "--strategy", "threading(256)"]).unwrap() {
        Args::Server { config, .. } => assert_eq!(config.strategy, Threading::new().max_threads(256).into()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        args(&["client", "--addr", "[::1]:7", "ls", "--addr", "x"]).unwrap(),
        Args::Client { addr: "[::1]:7".into(), command: vec!["ls".into(), "--addr".into(), "x".into()] }
    );
    assert_eq!(
        args(&["client", "--", "--weird"]).unwrap(),
        Args::Client { addr: "127.0.0.1:9001".into(), command: vec!["--weird".into()] }
    );
    assert_eq!(args(&["client"]).unwrap(), Args::Client { addr: "127.0.0.1:9001".into(), command: vec![] });
    assert_eq!(args(&["--help"]).unwrap(), Args::Help);
    for bad in [
        &[][..],
        &["server"],
        &["server", "--allow"],
        &["server", "--allow", "ls", "--timeout", "0"],
        &["server", "--allow", "ls", "--timeout", "soon"],
        &["server", "--allow", "ls", "extra"],
        &["server", "--allow", "ls", "--strategy"],
        &["server", "--allow", "ls", "--strategy", "fork"],
        &["client", "--bogus"],
        &["client", "--addr"],
        &["serve"],
    ] {
        assert!(args(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_allowlist_is_checked_at_start() {
    let bad = remote_command::server("127.0.0.1:0", &config(&["/bin/echo"], Duration::from_secs(1))).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");
    let missing =
        remote_command::server("127.0.0.1:0", &config(&["no-such-program-here"], Duration::from_secs(1))).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
}

#[test]
fn exit_codes_of_the_client() {
    assert_eq!(Outcome::Exit(0).exit_code(), 0);
    assert_eq!(Outcome::Exit(3).exit_code(), 3);
    assert_eq!(Outcome::Exit(9999).exit_code(), 255);
    assert_eq!(Outcome::Exit(-9).exit_code(), 137);
    assert_eq!(Outcome::Exit(i32::MIN).exit_code(), 255);
    assert_eq!(Outcome::Error("x".into()).exit_code(), 1);
}

#[test]
fn a_misbehaving_server_is_an_error_not_a_panic() {
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let replies: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 0],                                     // an empty frame
        vec![0, 0, 0, 2, b'?', b'?'],                         // an unknown tag
        vec![0, 0, 0, 3, b'x', b'z', b'z'],                   // an unreadable status
        vec![0xff, 0xff, 0xff, 0xff],                         // 4 GiB announced
        vec![0, 0, 0, 9, b'o', b'a'],                         // cut short
        [&12u32.to_be_bytes()[..], b"x-2147483648"].concat(), // the most negative status
    ];
    let n = replies.len();
    let server = std::thread::spawn(move || {
        for reply in replies {
            let (mut s, _) = listener.accept().unwrap();
            let mut frame = Vec::new();
            let _ = LengthPrefixed::new(1024).read_frame(&mut s, &mut frame);
            let _ = s.write_all(&reply);
        }
    });
    for i in 0..n {
        let mut c = tcp_connect(addr);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = remote_command::run_command(&mut c, "echo", &mut out, &mut err);
        if i == n - 1 {
            let outcome = result.unwrap();
            assert_eq!(outcome, Outcome::Exit(i32::MIN));
            assert_eq!(outcome.exit_code(), 255);
        } else {
            assert!(result.is_err(), "reply {i}: {result:?}");
        }
    }
    server.join().unwrap();
}

// ------------------------------------------------------- hostile clients

#[test]
fn programs_that_run_others_are_refused_at_start_unless_allowed_unsafe() {
    for runner in ["env", "find", "xargs", "sh", "bash", "nice", "nohup", "setsid", "timeout", "perl", "python3"] {
        let e = remote_command::server("127.0.0.1:0", &config(&["echo", runner], Duration::from_secs(1))).unwrap_err();
        if e.kind() == ErrorKind::NotFound {
            continue; // not installed here (perl, python3 on a machine with Rust alone): nothing to refuse
        }
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{runner}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(runner) && msg.contains("--allow-unsafe"), "{msg}");
    }
    // With the flag they are allowed (where installed).
    let unsafe_ok = remote_command::server("127.0.0.1:0", &unsafe_config(&["echo", "env"], Duration::from_secs(1)));
    assert!(unsafe_ok.is_ok(), "{unsafe_ok:?}");
    // A harmless name that is a link to a shell is a shell.
    let dir = TempDir::new("rc-alias");
    std::os::unix::fs::symlink("/bin/sh", dir.join("innocent")).unwrap();
    let path = std::ffi::OsString::from(dir.path());
    let e = remote_command::Allowlist::resolve_in(&["innocent".to_string()], &path, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(remote_command::Allowlist::resolve_in(&["innocent".to_string()], &path, true).is_ok());
    // The command line says so too.
    let args: Vec<String> = ["server", "--allow", "env", "--allow-unsafe"].iter().map(|a| a.to_string()).collect();
    match remote_command::parse_args(&args).unwrap() {
        remote_command::Args::Server { config, .. } => assert!(config.allow_unsafe),
        other => panic!("{other:?}"),
    }
}

#[test]
fn commands_run_with_a_minimal_environment() {
    let running = start_unsafe(&["env"], remote_command::DEFAULT_TIMEOUT);
    let mut c = tcp_connect(running.inet());
    let (outcome, out, _) = exec(&mut c, "env");
    assert_eq!(outcome, Outcome::Exit(0));
    let mut vars: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
    vars.sort();
    assert_eq!(vars, ["LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"]);
    drop(c);
    running.stop().unwrap();
}

/// `setsid -f` starts a process in a session (and process group) of its
/// own, out of reach of a kill of the command's group; it is still killed
/// when the command ends. The command waits until its escapee runs, so the
/// test cannot pass by the escapee not having started yet.
#[test]
fn what_a_command_starts_in_another_session_is_killed_when_it_ends() {
    let running = start_unsafe(&["sh", "env"], remote_command::DEFAULT_TIMEOUT);
    let secs = format!("25.{}", std::process::id());
    let _cleanup = KillLeftovers(vec!["sleep".into(), secs.clone()]);
    let mut c = tcp_connect(running.inet());
    let script = format!("env setsid -f sleep {secs}; until pgrep -fx 'sleep {secs}' >/dev/null; do sleep 0.01; done");
    let started = Instant::now();
    let (outcome, _, err) = exec(&mut c, &remote_command::join_command(&["sh", "-c", &script]));
    assert_eq!(outcome, Outcome::Exit(0), "{}", String::from_utf8_lossy(&err));
    wait_until("the escaped sleep to be killed", || pids_running(&["sleep", &secs]).is_empty());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The supervisor in between reports the command's own exit: a code, or
    // the signal that killed it.
    assert_eq!(exec(&mut c, "sh -c 'exit 3'").0, Outcome::Exit(3));
    assert_eq!(exec(&mut c, "sh -c 'kill -TERM $$'").0, Outcome::Exit(-libc::SIGTERM));
    drop(c);
    running.stop().unwrap();
}

/// Reads slowly: at most 512 bytes every 50 ms (10 KiB/s), until told to stop.
struct SlowReader(TcpStream, crossbeam_channel::Receiver<()>);

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.1.recv_timeout(Duration::from_millis(50)) != Err(crossbeam_channel::RecvTimeoutError::Timeout) {
            return Err(std::io::Error::other("told to stop"));
        }
        let n = buf.len().min(512);
        self.0.read(&mut buf[..n])
    }
}

/// A client that reads, but slowly, cannot stretch the time limit either:
/// the limit covers sending the output (each write may wait only until the
/// deadline, however the frame's bytes trickle out).
#[test]
fn a_slow_reader_cannot_stretch_the_time_limit() {
    let limit = Duration::from_secs(1);
    let running = start_with(&["head"], limit);
    let mut c = tcp_connect(running.inet());
    LengthPrefixed::new(1024).write_frame(&mut c, b"head -c 30000000 /dev/zero").unwrap();
    let started = Instant::now();
    let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
    let reader = {
        let mut slow = SlowReader(c.try_clone().unwrap(), stopped);
        std::thread::spawn(move || {
            let codec = LengthPrefixed::new(remote_command::MAX_REPLY);
            let mut frame = Vec::new();
            while let Ok(true) = codec.read_frame(&mut slow, &mut frame) {
                if frame.first().is_some_and(|t| *t == b'x' || *t == b'!') {
                    return;
                }
            }
        })
    };
    wait_until("the command to be killed and its connection closed", || running.handle.stats().completed == 1);
    let took = started.elapsed();
    eprintln!("time limit {limit:?}: the server was done after {took:?}");
    // (Stretched, it would take the reader's 10 KB/s through 30 MB: an
    // hour. The margin is for a loaded machine, not a tolerance.)
    assert!(took < limit + Duration::from_secs(5), "the limit of {limit:?} stretched to {took:?}");
    assert_eq!(descendants_running(&["head", "-c", "30000000", "/dev/zero"]), 0);
    stop.send(()).unwrap();
    reader.join().unwrap();
    running.stop().unwrap();
}

/// 70 clients that each send two bytes of a header and nothing more: each
/// holds a thread (a pool's worker; under the event strategy, the poller
/// that runs it), yet the threads grow past them and a well-behaved client
/// is served at once.
fn clients_that_send_half_a_header_do_not_lock_others_out(strategy: AnyStrategy) {
    let running = start_on(&["echo"], strategy);
    let lockers: Vec<TcpStream> = (0..70)
        .map(|_| {
            let mut s = tcp_connect(running.inet());
            s.write_all(&[0, 0]).unwrap();
            s
        })
        .collect();
    wait_until("the lockers to be accepted", || running.handle.stats().accepted == 70);
    let started = Instant::now();
    let mut c = tcp_connect(running.inet());
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = remote_command::run_command(&mut c, "echo served", &mut out, &mut err);
    assert!(matches!(outcome, Ok(Outcome::Exit(0))), "{outcome:?} after {:?}", started.elapsed());
    assert_eq!(out, b"served\n");
    eprintln!("served after {:?} beside {} half-header clients", started.elapsed(), lockers.len());
    drop((c, lockers));
    running.stop().unwrap();
}

on_pool_and_event!(
    clients_that_send_half_a_header_do_not_lock_others_out,
    clients_that_send_half_a_header_do_not_lock_others_out_on_a_pool,
    clients_that_send_half_a_header_do_not_lock_others_out_under_event
);

/// A frame that trickles in a byte at a time (so the idle timeout never
/// fires) is cut off at its deadline, counted from its first byte.
fn a_command_frame_must_arrive_within_its_deadline(strategy: AnyStrategy) {
    let deadline = Duration::from_millis(300);
    let cfg = Config { frame_timeout: deadline, strategy, ..config(&["echo"], remote_command::DEFAULT_TIMEOUT) };
    let running = run(remote_command::server("127.0.0.1:0", &cfg).unwrap());
    let mut c = tcp_connect(running.inet());
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let dribbler = {
        let mut w = c.try_clone().unwrap();
        std::thread::spawn(move || {
            // A 100-byte frame, one byte every 50 ms, for at most 5 s.
            let bytes = [&100u32.to_be_bytes()[..], &[b'e'; 96]].concat();
            for b in bytes {
                if w.write_all(&[b]).is_err() || stop_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    let mut frame = Vec::new();
    let codec = LengthPrefixed::new(remote_command::MAX_REPLY);
    assert!(codec.read_frame(&mut c, &mut frame).expect("an answer before the test's timeout"));
    let took = started.elapsed();
    assert_eq!(frame[0], b'!');
    let msg = String::from_utf8_lossy(&frame[1..]).into_owned();
    assert!(msg.contains("did not arrive within") && msg.contains("closing"), "{msg}");
    assert!(took >= deadline && took < deadline + Duration::from_secs(2), "{took:?}");
    match codec.read_frame(&mut c, &mut frame) {
        Ok(false) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the connection should be closed: {other:?}"),
    }
    drop(stop_tx);
    dribbler.join().unwrap();
    running.stop().unwrap();
}

on_pool_and_event!(
    a_command_frame_must_arrive_within_its_deadline,
    a_command_frame_must_arrive_within_its_deadline_on_a_pool,
    a_command_frame_must_arrive_within_its_deadline_under_event
);

/// Under the event strategy, connections waiting for their next command
/// are parked: counted in `parked`, with no thread each (the server's
/// threads stay at its pollers), and each resumes with its next command.
#[test]
fn idle_connections_park_under_event_and_resume() {
    let running = start_on(&["echo"], Event::new().into());
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) as u64;
    let bound = 2 * cpus + 2;
    let n = 2 * bound + 8;
    let mut clients: Vec<TcpStream> = (0..n).map(|_| tcp_connect(running.inet())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let (outcome, out, _) = exec(c, &format!("echo first {i}"));
        assert_eq!((outcome, out), (Outcome::Exit(0), format!("first {i}\n").into_bytes()));
    }
    wait_until("every connection to park", || running.handle.stats().parked == n);
    let stats = running.handle.stats();
    assert!(stats.workers_total <= bound, "{} threads for {n} idle connections", stats.workers_total);
    assert_eq!(stats.workers_busy, 0);
    for (i, c) in clients.iter_mut().enumerate().rev() {
        let (outcome, out, _) = exec(c, &format!("echo again {i}"));
        assert_eq!((outcome, out), (Outcome::Exit(0), format!("again {i}\n").into_bytes()));
    }
    wait_until("every connection to park again", || running.handle.stats().parked == n);
    drop(clients);
    wait_until("every connection to end", || running.handle.stats().active == 0);
    let stats = running.handle.stats();
    assert_eq!((stats.parked, stats.handler_errors), (0, 0));
    running.stop().unwrap();
}
