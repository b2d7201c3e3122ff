//! The file_transfer application, run in-process: its server on a thread over a
//! temporary folder, its client functions, raw (hostile) requests, a
//! hostile server, and a Python client.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use file_transfer::{Config, MAX_HEADER, MAX_RESPONSE, PART_PREFIX, TEMP_PREFIX};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socketserver::framing::LengthPrefixed;
use socketserver::{AnyStrategy, Event, ThreadPool, Threading};
use socketserver_apps::file_transfer;
use util::*;

fn start(dir: &Path) -> Running {
    start_with(dir, file_transfer::DEFAULT_MAX_SIZE)
}

fn start_with(dir: &Path, max_size: u64) -> Running {
    start_on_with(dir, max_size, Config::new(PathBuf::new()).strategy)
}

fn start_on(dir: &Path, strategy: AnyStrategy) -> Running {
    start_on_with(dir, file_transfer::DEFAULT_MAX_SIZE, strategy)
}

fn start_on_with(dir: &Path, max_size: u64, strategy: AnyStrategy) -> Running {
    let config = Config { max_size, strategy, ..Config::new(dir.to_path_buf()) };
    run(file_transfer::server("127.0.0.1:0", &config).expect("bind"))
}

/// Runs `test` on a pool (the default) and under the event strategy.
macro_rules! on_pool_and_event {
    ($test:ident, $pool:ident, $event:ident) => {
        #[test]
        fn $pool() {
            $test(Config::new(PathBuf::new()).strategy);
        }
        #[test]
        fn $event() {
            $test(Event::new().into());
        }
    };
}

/// Bytes that do not compress or repeat (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    file_transfer::hex(&Sha256::digest(data))
}

fn send_json(s: &mut TcpStream, v: &Value) {
    LengthPrefixed::new(MAX_HEADER).write_frame(s, &serde_json::to_vec(v).unwrap()).unwrap();
}

fn read_json(s: &mut TcpStream) -> Value {
    let mut frame = Vec::new();
    assert!(LengthPrefixed::new(MAX_RESPONSE).read_frame(s, &mut frame).unwrap(), "closed instead of answering");
    serde_json::from_slice(&frame).unwrap()
}

/// The answer's error message; fails if the answer was a success.
fn refusal(answer: &Value) -> String {
    assert_eq!(answer["ok"], false, "{answer}");
    answer["error"].as_str().unwrap().to_string()
}

/// Whether the server closed the connection (rather than answer again).
fn closed(s: &mut TcpStream) -> bool {
    let mut frame = Vec::new();
    match LengthPrefixed::new(MAX_RESPONSE).read_frame(s, &mut frame) {
        Ok(false) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
        Ok(true) => false,
    }
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn no_temp_files(dir: &Path) {
    let left: Vec<_> =
        entries(dir).into_iter().filter(|n| n.starts_with(TEMP_PREFIX) || n.starts_with(PART_PREFIX)).collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

/// Polls a counter (nothing to block on) until it holds; fails after [`TIMEOUT`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn progress_lines(progress: &[u8]) -> Vec<String> {
    String::from_utf8(progress.to_vec()).unwrap().lines().map(str::to_string).collect()
}

fn upload_and_download_round_trip_with_digests_and_progress(strategy: AnyStrategy) {
    capture_logs();
    let served = TempDir::new("ft-served");
    let local = TempDir::new("ft-local");
    let data = noise(3 * 1024 * 1024 + 17, 7);
    std::fs::write(local.join("orig.bin"), &data).unwrap();
    // Its own name in the log (the pool and event runs share the logger).
    let stored = format!("stored-{}.bin", if matches!(strategy, AnyStrategy::Event(_)) { "event" } else { "pool" });
    let running = start_on(served.path(), strategy);
    let mut c = tcp_connect(running.inet());

    let mut progress = Vec::new();
    let up = file_transfer::upload(&mut c, &local.join("orig.bin"), &stored, &mut progress).unwrap();
    assert_eq!((up.name.as_str(), up.size, up.sha256.as_str()), (stored.as_str(), data.len() as u64, &*sha256(&data)));
    assert_eq!(std::fs::read(served.join(&stored)).unwrap(), data);
    let lines = progress_lines(&progress);
    assert!(!lines.is_empty() && lines.len() <= 20, "{} progress lines", lines.len());
    assert!(lines.last().unwrap().contains("100%"), "{lines:?}");
    // The server, as the receiver, reports its progress in its log.
    let received = logged_containing(&format!("receiving {stored}"));
    assert!(!received.is_empty() && received.len() <= 20, "{received:?}");
    assert!(received.last().unwrap().contains(&format!("100% ({0} of {0} bytes)", data.len())), "{received:?}");

    // Same connection: download it back (into a folder: named after it).
    let mut progress = Vec::new();
    let down = file_transfer::download(&mut c, &stored, local.path(), &mut progress).unwrap();
    assert_eq!(down, up);
    assert_eq!(std::fs::read(local.join(&stored)).unwrap(), data);
    let lines = progress_lines(&progress);
    assert!(!lines.is_empty() && lines.len() <= 20, "{lines:?}");
    assert!(lines.last().unwrap().contains("100%"));

    // An empty file; a regular file replaced by a new upload.
    std::fs::write(local.join("empty"), b"").unwrap();
    let mut progress = Vec::new();
    assert_eq!(file_transfer::upload(&mut c, &local.join("empty"), "empty", &mut progress).unwrap().size, 0);
    assert_eq!(progress_lines(&progress).len(), 1);
    std::fs::write(local.join("v2"), b"second version").unwrap();
    file_transfer::upload(&mut c, &local.join("v2"), &stored, &mut Vec::new()).unwrap();
    assert_eq!(std::fs::read(served.join(&stored)).unwrap(), b"second version");
    file_transfer::download(&mut c, "empty", &local.join("got-empty"), &mut Vec::new()).unwrap();
    assert_eq!(std::fs::read(local.join("got-empty")).unwrap(), b"");

    assert_eq!(file_transfer::list(&mut c).unwrap(), [("empty".to_string(), 0), (stored.clone(), 14)]);
    no_temp_files(served.path());
    no_temp_files(local.path());
    drop(c);
    running.stop().unwrap();
}

on_pool_and_event!(
    upload_and_download_round_trip_with_digests_and_progress,
    upload_and_download_round_trip_with_digests_and_progress_on_a_pool,
    upload_and_download_round_trip_with_digests_and_progress_under_event
);

const BAD_NAMES: [&str; 10] =
    ["../x", "..", ".", "", "/etc/passwd", "a/b", "x/", "a\0b", ".ft-upload-1-2", "../../tmp/x"];

#[test]
fn names_that_leave_the_folder_are_refused() {
    let served = TempDir::new("ft-names");
    let inner = served.join("inner");
    std::fs::create_dir(&inner).unwrap();
    let running = start(&inner);
    let mut c = tcp_connect(running.inet());
    let long = "n".repeat(256);
    for name in BAD_NAMES.iter().copied().chain([long.as_str()]) {
        // The client refuses before sending anything...
        let e = file_transfer::download(&mut c, name, &served.join("out"), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name:?}: {e}");
        // ...and so does the server, for a client that does not.
        send_json(&mut c, &json!({ "op": "download", "name": name }));
        let msg = refusal(&read_json(&mut c));
        assert!(msg.contains("refused"), "{name:?}: {msg}");
        let body = b"not for you";
        send_json(&mut c, &json!({ "op": "upload", "name": name, "size": body.len(), "sha256": sha256(body) }));
        c.write_all(body).unwrap();
        let msg = refusal(&read_json(&mut c));
        assert!(msg.contains("refused"), "{name:?}: {msg}");
    }
    // The refused bodies were read and dropped: the connection is in step.
    assert!(file_transfer::list(&mut c).unwrap().is_empty());
    assert!(entries(&inner).is_empty(), "{:?}", entries(&inner));
    assert_eq!(entries(served.path()), ["inner"]);
    let e = file_transfer::download(&mut c, "missing", &served.join("out"), &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
    drop(c);
    running.stop().unwrap();
}

#[test]
fn symlinks_are_never_followed() {
    let served = TempDir::new("ft-links");
    let outside = TempDir::new("ft-outside");
    let local = TempDir::new("ft-links-local");
    std::fs::write(outside.join("secret"), b"outside secret").unwrap();
    symlink(outside.join("secret"), served.join("link")).unwrap();
    symlink(outside.path(), served.join("dirlink")).unwrap();
    symlink(served.join("missing"), served.join("dangling")).unwrap();
    std::fs::write(served.join("real"), b"real").unwrap();
    symlink("real", served.join("alias")).unwrap(); // even inside the folder
    std::fs::create_dir(served.join("subdir")).unwrap();
    let running = start(served.path());
    let mut c = tcp_connect(running.inet());

    for name in ["link", "alias", "dangling"] {
        let e = file_transfer::download(&mut c, name, &local.join("got"), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{name}: {e}");
    }
    for name in ["dirlink", "subdir"] {
        let e = file_transfer::download(&mut c, name, &local.join("got"), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("refused"), "{name}: {e}");
    }
    assert!(!local.join("got").exists());
    no_temp_files(local.path());

    std::fs::write(local.join("evil"), b"overwritten!").unwrap();
    for name in ["link", "dangling", "dirlink"] {
        let e = file_transfer::upload(&mut c, &local.join("evil"), name, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{name}: {e}");
        assert!(std::fs::symlink_metadata(served.join(name)).unwrap().file_type().is_symlink());
    }
    let e = file_transfer::upload(&mut c, &local.join("evil"), "subdir", &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"outside secret");
    assert_eq!(entries(outside.path()), ["secret"]);
    assert!(!served.join("missing").exists());

    // Listed: regular files only.
    assert_eq!(file_transfer::list(&mut c).unwrap(), [("real".to_string(), 4)]);
    no_temp_files(served.path());
    drop(c);
    running.stop().unwrap();
}

#[test]
fn an_upload_with_a_wrong_digest_is_rejected_and_leaves_nothing() {
    let served = TempDir::new("ft-digest");
    let running = start(served.path());
    let mut c = tcp_connect(running.inet());
    let data = noise(200_000, 3);
    let wrong = sha256(b"something else");
    send_json(&mut c, &json!({ "op": "upload", "name": "f.bin", "size": data.len(), "sha256": wrong }));
    c.write_all(&data).unwrap();
    let msg = refusal(&read_json(&mut c));
    assert!(msg.contains("sha256 mismatch") && msg.contains(&wrong) && msg.contains(&sha256(&data)), "{msg}");
    assert!(entries(served.path()).is_empty(), "{:?}", entries(served.path()));

    // Not a digest at all: refused, body dropped, connection in step.
    send_json(&mut c, &json!({ "op": "upload", "name": "f.bin", "size": 3, "sha256": "abc" }));
    c.write_all(b"xyz").unwrap();
    assert!(refusal(&read_json(&mut c)).contains("64 hex digits"));
    // Upper-case hex is the same digest.
    send_json(&mut c, &json!({ "op": "upload", "name": "f.bin", "size": 3, "sha256": sha256(b"xyz").to_uppercase() }));
    c.write_all(b"xyz").unwrap();
    assert_eq!(read_json(&mut c)["ok"], true);
    assert_eq!(entries(served.path()), ["f.bin"]);
    drop(c);
    running.stop().unwrap();
}

#[test]
fn a_truncated_upload_leaves_no_partial_file() {
    let served = TempDir::new("ft-truncated");
    let running = start(served.path());
    let mut c = tcp_connect(running.inet());
    let data = noise(1 << 20, 5);
    send_json(&mut c, &json!({ "op": "upload", "name": "cut.bin", "size": data.len(), "sha256": sha256(&data) }));
    c.write_all(&data[..100_000]).unwrap();
    // The temporary file exists while the upload is under way...
    wait_until("the upload to start", || entries(served.path()).iter().any(|n| n.starts_with(TEMP_PREFIX)));
    drop(c); // ...and goes when the client disconnects mid-body.
    wait_until("the handler to finish", || running.handle.stats().completed == 1);
    assert!(entries(served.path()).is_empty(), "{:?}", entries(served.path()));
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}

fn uploads_over_the_size_limit_are_refused(strategy: AnyStrategy) {
    let served = TempDir::new("ft-limit");
    let local = TempDir::new("ft-limit-local");
    let running = start_on_with(served.path(), 1000, strategy);
    std::fs::write(local.join("small"), vec![1u8; 1000]).unwrap();
    std::fs::write(local.join("big"), noise(3 << 20, 9)).unwrap();
    let mut c = tcp_connect(running.inet());
    file_transfer::upload(&mut c, &local.join("small"), "small", &mut Vec::new()).unwrap();
    // Refused from the header: the server answers and closes, the client
    // reports the server's reason rather than a broken pipe.
    let e = file_transfer::upload(&mut c, &local.join("big"), "big", &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("more than this server takes"), "{e}");
    assert_eq!(entries(served.path()), ["small"]);

    let mut c = tcp_connect(running.inet());
    send_json(&mut c, &json!({ "op": "upload", "name": "x", "size": u64::MAX, "sha256": sha256(b"") }));
    assert!(refusal(&read_json(&mut c)).contains("more than"));
    assert!(closed(&mut c));
    let mut c = tcp_connect(running.inet());
    send_json(&mut c, &json!({ "op": "upload", "name": "x", "size": -1, "sha256": sha256(b"") }));
    assert!(refusal(&read_json(&mut c)).contains("size"));
    assert!(closed(&mut c));
    assert_eq!(entries(served.path()), ["small"]);
    running.stop().unwrap();
}

on_pool_and_event!(
    uploads_over_the_size_limit_are_refused,
    uploads_over_the_size_limit_are_refused_on_a_pool,
    uploads_over_the_size_limit_are_refused_under_event
);

#[test]
fn bad_headers_get_an_error_and_the_connection_closes() {
    let served = TempDir::new("ft-headers");
    let running = start(served.path());
    // 4 GiB announced: refused from the 4-byte prefix, nothing allocated.
    let mut c = tcp_connect(running.inet());
    c.write_all(&[0xff, 0xff, 0xff, 0xff, b'{']).unwrap();
    let msg = refusal(&read_json(&mut c));
    assert!(msg.contains("maximum"), "{msg}");
    assert!(closed(&mut c));
    // Just over 64 KiB.
    let mut c = tcp_connect(running.inet());
    c.write_all(&(MAX_HEADER as u32 + 1).to_be_bytes()).unwrap();
    assert!(refusal(&read_json(&mut c)).contains("maximum"));
    // Not JSON; JSON but no known op.
    for bad in [&b"{not json"[..], b"[1,2]", br#"{"op":"delete","name":"x"}"#, b"\xff\xfe"] {
        let mut c = tcp_connect(running.inet());
        LengthPrefixed::new(MAX_HEADER).write_frame(&mut c, bad).unwrap();
        refusal(&read_json(&mut c));
        assert!(closed(&mut c), "{:?}", String::from_utf8_lossy(bad));
    }
    // The server serves on.
    let mut c = tcp_connect(running.inet());
    assert!(file_transfer::list(&mut c).unwrap().is_empty());
    assert_eq!(running.handle.stats().handler_errors, 0);
    drop(c);
    running.stop().unwrap();
}

/// A server that answers one download with `answer`, then `body`, then closes.
fn hostile_server(answer: Value, body: Vec<u8>) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut frame = Vec::new();
        let _ = LengthPrefixed::new(MAX_HEADER).read_frame(&mut s, &mut frame);
        let _ = LengthPrefixed::new(MAX_RESPONSE).write_frame(&mut s, &serde_json::to_vec(&answer).unwrap());
        let _ = s.write_all(&body);
    });
    (addr, thread)
}

#[test]
fn a_download_that_fails_its_check_leaves_no_file() {
    let local = TempDir::new("ft-hostile");
    let data = noise(500_000, 11);
    let cases = [
        // Wrong digest.
        (json!({ "ok": true, "size": data.len(), "sha256": sha256(b"other") }), data.clone(), "sha256 mismatch"),
        // Cut short.
        (json!({ "ok": true, "size": data.len(), "sha256": sha256(&data) }), data[..1000].to_vec(), "after 1000"),
        // Nonsense.
        (json!({ "ok": true, "size": "big", "sha256": sha256(&data) }), vec![], "no size"),
        (json!({ "ok": true, "size": 1, "sha256": "zz" }), vec![], "64 hex"),
        (json!({ "fine": true }), vec![], "no \"ok\""),
    ];
    for (answer, body, expected) in cases {
        let (addr, server) = hostile_server(answer, body);
        let mut c = tcp_connect(addr);
        let e = file_transfer::download(&mut c, "f", &local.join("f"), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains(expected), "{expected}: {e}");
        server.join().unwrap();
        assert!(entries(local.path()).is_empty(), "{:?}", entries(local.path()));
    }
    // A frame header announcing 4 GiB.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = tcp_connect(listener.local_addr().unwrap());
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(&[0xff; 4]).unwrap();
    let e = file_transfer::download(&mut c, "f", &local.join("f"), &mut Vec::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert!(entries(local.path()).is_empty());
}

/// The example's documented Python client: upload, then download and check.
const PYTHON_CLIENT: &str = r#"
import hashlib, json, socket, struct, sys

def recv_exact(s, n):
    buf = b''
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 65536))
        if not chunk:
            raise ConnectionError('server closed the connection')
        buf += chunk
    return buf

def send_json(s, obj):
    body = json.dumps(obj).encode('utf-8')
    s.sendall(struct.pack('!I', len(body)) + body)

def recv_json(s):
    (n,) = struct.unpack('!I', recv_exact(s, 4))
    return json.loads(recv_exact(s, n))

with socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10) as s:
    data = bytes(range(256)) * 4000
    send_json(s, {'op': 'upload', 'name': 'py.bin', 'size': len(data),
                  'sha256': hashlib.sha256(data).hexdigest()})
    s.sendall(data)
    up = recv_json(s)
    send_json(s, {'op': 'download', 'name': 'py.bin'})
    header = recv_json(s)
    body = recv_exact(s, header['size'])
    send_json(s, {'op': 'download', 'name': '../etc/passwd'})
    refused = recv_json(s)
print(json.dumps({'up': up, 'header': header, 'same': body == data,
                  'digest_ok': hashlib.sha256(body).hexdigest() == header['sha256'],
                  'refused': refused}))
"#;

#[test]
fn a_python_client_interoperates() {
    let Some(python3) = util::tools::require_tool("python3", "python3") else { return };
    let served = TempDir::new("ft-python");
    let running = start(served.path());
    let port = running.inet().port().to_string();
    let output = std::process::Command::new(python3)
        .args(["-c", PYTHON_CLIENT, &port])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run python3");
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_slice(&output.stdout).unwrap();
    let data: Vec<u8> = (0..4000).flat_map(|_| 0..=255u8).collect();
    assert_eq!(r["up"], json!({ "ok": true, "name": "py.bin", "size": data.len(), "sha256": sha256(&data) }));
    assert_eq!(r["header"]["sha256"], sha256(&data));
    assert_eq!(r["same"], true);
    assert_eq!(r["digest_ok"], true);
    assert_eq!(r["refused"]["ok"], false);
    assert_eq!(std::fs::read(served.join("py.bin")).unwrap(), data);
    running.stop().unwrap();
}

#[test]
fn arguments_are_parsed_by_hand_and_bad_ones_refused() {
    use file_transfer::{Args, parse_args, parse_size};
    let args = |s: &[&str]| parse_args(&s.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    assert_eq!(
        args(&["server", "--dir", "/srv", "--max-size", "10M"]).unwrap(),
        Args::Server {
            addr: "127.0.0.1:9002".into(),
            config: Config {
                dir: "/srv".into(),
                max_size: 10 << 20,
                header_timeout: file_transfer::DEFAULT_HEADER_TIMEOUT,
                strategy: ThreadPool::new(2).max_workers(256).into(),
            }
        }
    );
    match args(&["server", "--strategy", "event", "--dir", "/srv"]).unwrap() {
        Args::Server { config, .. } => assert_eq!(config.strategy, Event::new().into()),
        other => panic!("{other:?}"),
    }
    match args(&["server", "--dir", "/srv", "--strategy", "threading(256)"]).unwrap() {
        Args::Server { config, .. } => assert_eq!(config.strategy, Threading::new().max_threads(256).into()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        args(&["client", "--addr", "h:1", "upload", "a.txt", "--name", "b.txt"]).unwrap(),
        Args::Upload { addr: "h:1".into(), file: "a.txt".into(), name: Some("b.txt".into()) }
    );
    assert_eq!(
        args(&["client", "download", "b.txt", "--out", "/tmp/c"]).unwrap(),
        Args::Download { addr: "127.0.0.1:9002".into(), name: "b.txt".into(), out: Some("/tmp/c".into()) }
    );
    assert_eq!(args(&["client", "list"]).unwrap(), Args::List { addr: "127.0.0.1:9002".into() });
    assert_eq!(args(&["-h"]).unwrap(), Args::Help);
    for bad in [
        &[][..],
        &["server"],
        &["server", "--dir"],
        &["server", "--dir", "d", "--max-size", "lots"],
        &["server", "--dir", "d", "--strategy"],
        &["server", "--dir", "d", "--strategy", "fork"],
        &["client"],
        &["client", "upload"],
        &["client", "upload", "a", "b"],
        &["client", "download", "x", "--name", "y"],
        &["client", "list", "x"],
        &["client", "delete", "x"],
        &["client", "--bogus", "list"],
        &["proxy"],
    ] {
        assert!(args(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("512k"), Ok(512 << 10));
    assert_eq!(parse_size("123"), Ok(123));
    for bad in ["", "G", "1.5G", "-1", "99999999999999999999G", "1T", "1é"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_folder_must_exist() {
    let gone = TempDir::new("ft-gone");
    let missing = gone.join("nope");
    assert!(file_transfer::server("127.0.0.1:0", &Config { max_size: 1, ..Config::new(missing) }).is_err());
    std::fs::write(gone.join("file"), b"").unwrap();
    assert!(file_transfer::server("127.0.0.1:0", &Config { max_size: 1, ..Config::new(gone.join("file")) }).is_err());
}

// ------------------------------------------------------- hostile clients

/// Names that are not paths but still do harm: a newline or ESC that forge
/// log and terminal lines, a leading `-` that reads as an option, a
/// dot-file that a home folder runs (`.bashrc`), invisible characters.
const SNEAKY_NAMES: [(&str, &str); 10] = [
    ("two\nlines", "control character"),
    ("red\x1b[31mtext", "control character"),
    ("tab\there", "control character"),
    ("del\x7f", "control character"),
    ("c1\u{85}next", "control character"),
    ("gpj.\u{202e}exe", "invisible"),
    ("zero\u{200b}width", "invisible"),
    ("-rf", "starts with '-'"),
    (".bashrc", "starts with '.'"),
    (".ssh", "starts with '.'"),
];

#[test]
fn names_with_control_characters_leading_dashes_or_dots_are_refused() {
    let served = TempDir::new("ft-sneaky");
    std::fs::write(served.join(".bashrc"), b"# the owner's\n").unwrap();
    std::fs::write(served.join("bad\nname"), b"put there by someone else").unwrap();
    std::fs::write(served.join("-rf"), b"likewise").unwrap();
    std::fs::write(served.join("fine.txt"), b"ok").unwrap();
    let running = start(served.path());
    let mut c = tcp_connect(running.inet());
    for (name, why) in SNEAKY_NAMES {
        // The client refuses before sending anything...
        let e = file_transfer::download(&mut c, name, &served.join("out"), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name:?}: {e}");
        // ...and so does the server, for a client that does not.
        send_json(&mut c, &json!({ "op": "download", "name": name }));
        let msg = refusal(&read_json(&mut c));
        assert!(msg.contains("refused") && msg.contains(why), "{name:?}: {msg}");
        let body = b"echo pwned\n";
        send_json(&mut c, &json!({ "op": "upload", "name": name, "size": body.len(), "sha256": sha256(body) }));
        c.write_all(body).unwrap();
        let msg = refusal(&read_json(&mut c));
        assert!(msg.contains("refused") && msg.contains(why), "{name:?}: {msg}");
    }
    assert_eq!(std::fs::read(served.join(".bashrc")).unwrap(), b"# the owner's\n");
    // Listed: only what can be downloaded.
    assert_eq!(file_transfer::list(&mut c).unwrap(), [("fine.txt".to_string(), 2)]);
    assert_eq!(entries(served.path()), ["-rf", ".bashrc", "bad\nname", "fine.txt"]);
    drop(c);
    running.stop().unwrap();
}

#[test]
fn stale_temporary_uploads_are_removed_at_start_and_never_listed() {
    capture_logs();
    let served = TempDir::new("ft-stale");
    let me = std::process::id();
    // Of a process that is gone (no pid is that large), and one untouched
    // for two hours: stale. One of a live process, fresh: perhaps an upload
    // under way, kept.
    let gone = format!("{TEMP_PREFIX}999999999-0");
    let old = format!("{TEMP_PREFIX}{me}-77");
    let live = format!("{TEMP_PREFIX}{me}-78");
    for name in [&gone, &old, &live] {
        std::fs::write(served.join(name), b"half an upload").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options().write(true).open(served.join(&old)).unwrap().set_modified(two_hours_ago).unwrap();
    std::fs::write(served.join("kept.txt"), b"kept").unwrap();
    let running = start(served.path());
    let mut expected = vec![live.clone(), "kept.txt".to_string()];
    expected.sort();
    assert_eq!(entries(served.path()), expected);
    let dir = std::fs::canonicalize(served.path()).unwrap();
    let logged = logged_containing(&format!("from {}", dir.display()));
    assert_eq!(logged, [format!("removed 2 stale temporary uploads ({TEMP_PREFIX}*) from {}", dir.display())]);
    let mut c = tcp_connect(running.inet());
    assert_eq!(file_transfer::list(&mut c).unwrap(), [("kept.txt".to_string(), 4)]);
    drop(c);
    running.stop().unwrap();
}

/// 70 clients that each send two bytes of a header and nothing more: each
/// holds a thread (a pool's worker; under the event strategy, the poller
/// that runs it), yet the threads grow past them and a well-behaved client
/// is served at once.
fn clients_that_send_half_a_header_do_not_lock_others_out(strategy: AnyStrategy) {
    let served = TempDir::new("ft-lockers");
    let running = start_on(served.path(), strategy);
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
    let listed = file_transfer::list(&mut c);
    assert!(listed.as_ref().is_ok_and(Vec::is_empty), "{listed:?} after {:?}", started.elapsed());
    eprintln!("served after {:?} beside {} half-header clients", started.elapsed(), lockers.len());
    drop((c, lockers));
    running.stop().unwrap();
}

on_pool_and_event!(
    clients_that_send_half_a_header_do_not_lock_others_out,
    clients_that_send_half_a_header_do_not_lock_others_out_on_a_pool,
    clients_that_send_half_a_header_do_not_lock_others_out_under_event
);

/// A header that trickles in a byte at a time (so the idle timeout never
/// fires) is cut off at its deadline, counted from its first byte.
fn a_request_header_must_arrive_within_its_deadline(strategy: AnyStrategy) {
    let served = TempDir::new("ft-trickle");
    let deadline = Duration::from_millis(300);
    let config = Config { header_timeout: deadline, strategy, ..Config::new(served.path().to_path_buf()) };
    let running = run(file_transfer::server("127.0.0.1:0", &config).unwrap());
    let mut c = tcp_connect(running.inet());
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let dribbler = {
        let mut w = c.try_clone().unwrap();
        std::thread::spawn(move || {
            // A 100-byte header, one byte every 50 ms, for at most 5 s.
            let bytes = [&100u32.to_be_bytes()[..], &[b' '; 96]].concat();
            for b in bytes {
                if w.write_all(&[b]).is_err() || stop_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    let msg = refusal(&read_json(&mut c));
    let took = started.elapsed();
    assert!(msg.contains("did not arrive within") && msg.contains("closing"), "{msg}");
    assert!(took >= deadline && took < deadline + Duration::from_secs(2), "{took:?}");
    assert!(closed(&mut c));
    drop(stop_tx);
    dribbler.join().unwrap();
    running.stop().unwrap();
}

on_pool_and_event!(
    a_request_header_must_arrive_within_its_deadline,
    a_request_header_must_arrive_within_its_deadline_on_a_pool,
    a_request_header_must_arrive_within_its_deadline_under_event
);

/// Under the event strategy, connections between requests are parked:
/// counted in `parked`, with no thread each (the server's threads stay at
/// its pollers), and each resumes with its next request: an upload, then
/// a download.
#[test]
fn idle_connections_park_under_event_and_resume() {
    let served = TempDir::new("ft-parked");
    let local = TempDir::new("ft-parked-local");
    let running = start_on(served.path(), Event::new().into());
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) as u64;
    let bound = 2 * cpus + 2;
    let n = 2 * bound + 8;
    let mut clients: Vec<TcpStream> = (0..n).map(|_| tcp_connect(running.inet())).collect();
    for c in &mut clients {
        assert!(file_transfer::list(c).unwrap().is_empty());
    }
    wait_until("every connection to park", || running.handle.stats().parked == n);
    let stats = running.handle.stats();
    assert!(stats.workers_total <= bound, "{} threads for {n} idle connections", stats.workers_total);
    assert_eq!(stats.workers_busy, 0);
    for (i, c) in clients.iter_mut().enumerate() {
        let data = noise(1000 + i, i as u64);
        let name = format!("f{i}");
        send_json(c, &json!({ "op": "upload", "name": name, "size": data.len(), "sha256": sha256(&data) }));
        c.write_all(&data).unwrap();
        assert_eq!(read_json(c)["ok"], true);
    }
    wait_until("every connection to park again", || running.handle.stats().parked == n);
    for (i, c) in clients.iter_mut().enumerate().rev() {
        let name = format!("f{i}");
        let out = local.join(&format!("back-{i}"));
        let got = file_transfer::download(c, &name, &out, &mut Vec::new()).unwrap();
        assert_eq!(got.size, 1000 + i as u64);
        assert_eq!(std::fs::read(&out).unwrap(), noise(1000 + i, i as u64));
    }
    drop(clients);
    wait_until("every connection to end", || running.handle.stats().active == 0);
    let stats = running.handle.stats();
    assert_eq!((stats.parked, stats.handler_errors), (0, 0));
    no_temp_files(served.path());
    running.stop().unwrap();
}
