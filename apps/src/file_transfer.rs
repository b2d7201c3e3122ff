//! The tutorials' file transfer, finished: the "send the size first, then
//! the content" idea, with a length-prefixed JSON header (the usual fix for
//! the "sticky packet" problem), a SHA-256 digest checked by whoever
//! receives, and names that cannot leave the served folder.
//!
//! ```text
//! cargo run -p socketserver-apps --example file_transfer -- server --dir /srv/files            # 127.0.0.1:9002
//! cargo run -p socketserver-apps --example file_transfer -- client upload ./photo.jpg --name holiday.jpg
//! cargo run -p socketserver-apps --example file_transfer -- client download holiday.jpg --out /tmp/h.jpg
//! cargo run -p socketserver-apps --example file_transfer -- client --addr 127.0.0.1:9002 list
//! ```
//!
//! Server options: `--dir DIR` (required), `--addr ADDR` (default
//! `127.0.0.1:9002`, loopback only), `--max-size BYTES` (largest upload,
//! default 1 GiB; `K`, `M`, `G` suffixes are powers of 1024), `--strategy
//! STRATEGY` (as `AnyStrategy` reads it; default `pool(2-256)`: a worker
//! per connection; `event`: a connection between requests is parked and
//! holds no thread, one whose transfer runs holds one; `threading(256)`: a
//! thread per connection, at most 256). The client
//! shows progress on stderr (at most 20 lines per file) and exits 1 with a
//! one-line error when anything fails; a download whose digest does not
//! match leaves no file behind.
//!
//! # Protocol
//!
//! Frames are a 4-byte big-endian length (`struct.pack('!I', n)`) and `n`
//! bytes. A connection carries any number of requests, one after the other.
//!
//! * A request is a header frame (at most 64 KiB; once its first byte has
//!   arrived, the whole of it must arrive within 5 s, or the client gets an
//!   error and the connection closes) holding a JSON object:
//!   * `{"op": "upload", "name": N, "size": S, "sha256": HEX}`, then
//!     exactly `S` raw bytes (no framing) of the file;
//!   * `{"op": "download", "name": N}`;
//!   * `{"op": "list"}`.
//! * Every answer starts with a JSON frame (at most 1 MiB): `{"ok": false,
//!   "error": MESSAGE}`, or `{"ok": true, ...}`: for an upload `name`,
//!   `size` and `sha256` of what was stored; for a download `name`, `size`
//!   and `sha256`, then exactly `size` raw bytes; for a list `files`, an
//!   array of `{"name", "size"}` (regular files only).
//! * Names are plain, visible file names in the served folder: not empty,
//!   no `/`, NUL, control character (newline, tab, ESC, ...) or invisible
//!   one (zero width, direction override), not starting with `-` or `.`
//!   (no dot-files: the folder may be a home, with its `.bashrc`), at most
//!   255 bytes. A list shows only names that can be downloaded. Symbolic
//!   links are never followed: a download of one and an upload over one
//!   are refused.
//! * An upload is written to a temporary file in the folder, checked
//!   against its digest, then renamed into place: a failed, truncated or
//!   corrupted upload leaves nothing behind, and readers never see half a
//!   file. Temporary files left by a server that was killed are removed
//!   when a server starts on the folder (those of a process that is gone,
//!   and any untouched for an hour); the log says how many. A refused upload whose size is within the limit is read and
//!   dropped so the connection stays usable; one over the limit, or a
//!   header that cannot be read, gets its error and the connection closes.
//!
//! # From Python
//!
//! ```python
//! import hashlib, json, socket, struct
//!
//! def recv_exact(s, n):
//!     buf = b''
//!     while len(buf) < n:
//!         chunk = s.recv(min(n - len(buf), 65536))
//!         if not chunk:
//!             raise ConnectionError('server closed the connection')
//!         buf += chunk
//!     return buf
//!
//! def send_json(s, obj):
//!     body = json.dumps(obj).encode('utf-8')
//!     s.sendall(struct.pack('!I', len(body)) + body)
//!
//! def recv_json(s):
//!     (n,) = struct.unpack('!I', recv_exact(s, 4))
//!     reply = json.loads(recv_exact(s, n))
//!     if not reply['ok']:
//!         raise RuntimeError(reply['error'])
//!     return reply
//!
//! with socket.create_connection(('127.0.0.1', 9002)) as s:
//!     data = b'hello from python\n'
//!     send_json(s, {'op': 'upload', 'name': 'hello.txt', 'size': len(data),
//!                   'sha256': hashlib.sha256(data).hexdigest()})
//!     s.sendall(data)
//!     print(recv_json(s))
//!     send_json(s, {'op': 'download', 'name': 'hello.txt'})
//!     header = recv_json(s)
//!     body = recv_exact(s, header['size'])
//!     assert hashlib.sha256(body).hexdigest() == header['sha256']
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socketserver::framing::LengthPrefixed;

use crate::args::{self, Flags};
use socketserver::transport::Tcp;
use socketserver::{AnyStrategy, RequestHandler, Server, StreamRequest, TcpServer, ThreadPool};

/// The server's default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9002";
/// The default largest upload: 1 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// The longest request header frame.
pub const MAX_HEADER: usize = 64 * 1024;
/// The longest answer frame (a long list).
pub const MAX_RESPONSE: usize = 1024 * 1024;
/// The longest file name.
pub const MAX_NAME: usize = 255;
/// Temporary upload files start with this; such names are refused.
pub const TEMP_PREFIX: &str = ".ft-upload-";
/// Temporary download files (on the client) start with this.
pub const PART_PREFIX: &str = ".ft-download-";

/// Bytes read or written at a time.
const CHUNK: usize = 64 * 1024;
/// A client silent this long (mid-upload too) is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request header may take to arrive, from its first byte.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections served at once (a thread each).
pub const MAX_WORKERS: usize = 256;
/// A temporary upload untouched this long is stale whoever made it (an
/// upload under way writes to it at least every idle timeout).
const STALE_AFTER: Duration = Duration::from_secs(3600);
/// A client that reads nothing for this long (mid-download) is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client waits for the server.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Characters that change how a name is shown without being seen: zero
/// width, direction overrides and isolates.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Whether `name` may be used: a plain, visible file name inside the
/// folder. Refused: empty, `.`, `..`, a `/` or NUL, a control character
/// (newline, ESC...) or an invisible one, a leading `-` (an option to
/// whoever runs a command on the folder's files), a leading `.` (dot-files:
/// `.bashrc`, `.ssh` if the folder is a home; temporary uploads), more than
/// 255 bytes.
///
/// # Errors
/// Why not, for the user.
pub fn check_name(name: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("name {name:?} refused: {why}"));
    if name.is_empty() {
        refuse("empty")
    } else if name == "." || name == ".." {
        refuse("not a file name")
    } else if name.contains('/') {
        refuse("a path, not a file name")
    } else if name.contains('\0') {
        refuse("contains a NUL byte")
    } else if name.chars().any(char::is_control) {
        refuse("contains a control character (newline, tab, ESC, ...)")
    } else if name.chars().any(invisible) {
        refuse("contains an invisible or direction-changing character")
    } else if name.len() > MAX_NAME {
        refuse("longer than 255 bytes")
    } else if name.starts_with('-') {
        refuse("starts with '-' (it would read as an option)")
    } else if name.starts_with(TEMP_PREFIX) {
        refuse("reserved for temporary files")
    } else if name.starts_with('.') {
        refuse("starts with '.' (hidden files are not served)")
    } else {
        Ok(())
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 digest in hex, lower-cased.
///
/// # Errors
/// Not 64 hex digits.
pub fn parse_digest(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("sha256 {s:?} is not 64 hex digits"))
    }
}

/// Reads `r` to its end: its length and SHA-256.
///
/// # Errors
/// Read errors.
pub fn hash_reader(r: &mut dyn Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok((size, hex(&hasher.finalize()))),
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A file created next to its final place, removed on drop unless kept.
struct TempFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl TempFile {
    fn create(dir: &Path, prefix: &str) -> io::Result<TempFile> {
        static N: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{prefix}{}-{n}", std::process::id()));
            // O_EXCL: never an existing file, never through a symlink.
            let opened =
                OpenOptions::new().write(true).create_new(true).mode(0o644).custom_flags(libc::O_NOFOLLOW).open(&path);
            match opened {
                Ok(file) => return Ok(TempFile { path, file, keep: false }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n % 1000 != 999 => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Flushes it to disk and renames it to `to` (which, if it exists, is
    /// replaced; a symlink there is replaced, never followed).
    fn commit(mut self, to: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, to)?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Shows a percentage on `out` each time another 5% is done: at most 20
/// lines per transfer. Write errors are ignored (a closed stderr must not
/// fail a transfer).
pub struct Progress<'a> {
    out: &'a mut dyn Write,
    label: String,
    total: u64,
    done: u64,
    shown: u64,
}

impl<'a> Progress<'a> {
    /// Progress of `total` bytes, each line starting with `label`.
    pub fn new(out: &'a mut dyn Write, label: String, total: u64) -> Self {
        Progress { out, label, total, done: 0, shown: 0 }
    }

    /// `n` more bytes are done (`n == 0` on an empty transfer shows 100%).
    pub fn advance(&mut self, n: u64) {
        self.done = self.done.saturating_add(n).min(self.total);
        let percent = if self.total == 0 { 100 } else { (u128::from(self.done) * 100 / u128::from(self.total)) as u64 };
        let step = percent / 5 * 5;
        if step > self.shown || (self.total == 0 && self.shown == 0) {
            self.shown = step.max(1);
            let _ = writeln!(self.out, "{}: {step:3}% ({} of {} bytes)", self.label, self.done, self.total);
        }
    }
}

/// A `Write` that sends each line to the log (`info`): the server's
/// progress on the uploads it receives.
struct LogLines(Vec<u8>);

impl Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        while let Some(end) = self.0.iter().position(|&b| b == b'\n') {
            log::info!("{}", String::from_utf8_lossy(&self.0[..end]));
            self.0.drain(..=end);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- server

/// What the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The folder whose files are served and where uploads go.
    pub dir: PathBuf,
    /// The largest upload, in bytes.
    pub max_size: u64,
    /// How long a request header may take to arrive, from its first byte.
    pub header_timeout: Duration,
    /// How connections are served. Whichever strategy, a transfer under
    /// way has a thread; they differ in what waits between requests.
    pub strategy: AnyStrategy,
}

impl Config {
    /// Serves `dir` with the default limits, on a pool.
    pub fn new(dir: PathBuf) -> Config {
        Config {
            dir,
            max_size: DEFAULT_MAX_SIZE,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            strategy: ThreadPool::new(2).max_workers(MAX_WORKERS).into(),
        }
    }
}

/// The handler: answers upload, download and list requests.
#[derive(Debug)]
pub struct FileService {
    dir: PathBuf,
    max_size: u64,
    header_timeout: Duration,
}

/// Whether the connection can carry another request.
enum Next {
    Continue,
    Close,
}

/// Whether a process with this pid exists (it may be another one than the
/// pid once named, which only keeps a stale file a while longer).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill(2) with signal 0 sends nothing and touches no memory.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Errors that mean the client is gone: the connection ends, quietly.
fn client_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::TimedOut
    )
}

fn reply(req: &mut StreamRequest, answer: &Value) -> io::Result<()> {
    let body = serde_json::to_vec(answer).map_err(io::Error::other)?;
    let mut wire = Vec::with_capacity(LengthPrefixed::HEADER + body.len());
    LengthPrefixed::new(MAX_RESPONSE).write_frame(&mut wire, &body)?;
    req.write_all(&wire)
}

fn reply_error(req: &mut StreamRequest, msg: &str) -> io::Result<()> {
    log::info!("{}: {msg}", req.peer_addr());
    reply(req, &json!({ "ok": false, "error": msg }))
}

/// Reads and drops `left` bytes; `false` if the client closed first.
fn discard(req: &mut StreamRequest, mut left: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        match req.read(&mut buf[..want]) {
            Ok(0) => return Ok(false),
            Ok(n) => left -= n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl FileService {
    /// Serves `config.dir` (which must exist).
    ///
    /// # Errors
    /// The folder does not exist or is not a folder.
    pub fn new(config: &Config) -> io::Result<FileService> {
        let dir = fs::canonicalize(&config.dir)
            .map_err(|e| io::Error::new(e.kind(), format!("--dir {}: {e}", config.dir.display())))?;
        if !dir.is_dir() {
            return Err(io::Error::new(ErrorKind::InvalidInput, format!("--dir {}: not a folder", dir.display())));
        }
        let service = FileService { dir, max_size: config.max_size, header_timeout: config.header_timeout };
        let removed = service.remove_stale_uploads();
        if removed > 0 {
            log::info!(
                "removed {removed} stale temporary upload{} ({TEMP_PREFIX}*) from {}",
                if removed == 1 { "" } else { "s" },
                service.dir.display()
            );
        }
        Ok(service)
    }

    /// Removes the temporary uploads that nobody is writing any more: those
    /// of a process that is gone (the name holds its pid), and any untouched
    /// for an hour. Returns how many went.
    fn remove_stale_uploads(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else { continue };
            // Not through symlinks: only our own regular files.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let writer_gone = rest
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<libc::pid_t>().ok())
                .is_some_and(|pid| pid > 0 && !process_alive(pid));
            let untouched = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= STALE_AFTER);
            if (writer_gone || untouched) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The folder served (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether an upload may replace what is at `name` now: nothing or a
    /// regular file, never a symlink (which would be replaced, but its
    /// owner may have meant it to be written through) or anything else.
    fn check_target(&self, name: &str) -> Result<(), String> {
        match fs::symlink_metadata(self.dir.join(name)) {
            Ok(m) if m.file_type().is_symlink() => Err(format!("{name}: refused: it is a symbolic link")),
            Ok(m) if !m.is_file() => Err(format!("{name}: refused: not a regular file")),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{name}: {e}")),
        }
    }

    fn upload(&self, req: &mut StreamRequest, header: &Value) -> io::Result<Next> {
        let Some(size) = header.get("size").and_then(Value::as_u64) else {
            reply_error(req, "an upload needs a \"size\" (bytes, a non-negative integer)")?;
            return Ok(Next::Close);
        };
        if size > self.max_size {
            reply_error(req, &format!("{size} bytes is more than this server takes ({} bytes)", self.max_size))?;
            return Ok(Next::Close);
        }
        let checked = (|| {
            let name = header.get("name").and_then(Value::as_str).ok_or("an upload needs a \"name\"")?;
            check_name(name)?;
            let digest = header.get("sha256").and_then(Value::as_str).ok_or("an upload needs a \"sha256\"")?;
            let digest = parse_digest(digest)?;
            self.check_target(name)?;
            Ok::<_, String>((name.to_string(), digest))
        })();
        let refuse = |req: &mut StreamRequest, msg: &str| -> io::Result<Next> {
            reply_error(req, msg)?;
            Ok(if discard(req, size)? { Next::Continue } else { Next::Close })
        };
        let (name, expected) = match checked {
            Ok(c) => c,
            Err(msg) => return refuse(req, &msg),
        };
        let mut temp = match TempFile::create(&self.dir, TEMP_PREFIX) {
            Ok(t) => t,
            Err(e) => return refuse(req, &format!("{name}: cannot store it: {e}")),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        let mut store_error = None;
        // The receiver reports progress too: in the log.
        let mut log = LogLines(Vec::new());
        let mut shown = Progress::new(&mut log, format!("{}: receiving {name}", req.peer_addr()), size);
        if size == 0 {
            shown.advance(0);
        }
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let n = match req.read(&mut buf[..want]) {
                Ok(0) => {
                    log::info!("{}: upload of {name} cut short at {} of {size} bytes", req.peer_addr(), size - left);
                    return Ok(Next::Close); // `temp` goes
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            shown.advance(n as u64);
            if store_error.is_none()
                && let Err(e) = temp.file.write_all(&buf[..n])
            {
                // Keep reading: the connection stays in step.
                store_error = Some(e);
            }
            left -= n as u64;
        }
        // On each refusal below the temporary file goes before the answer:
        // a client that looks right after it finds nothing left behind.
        if let Some(e) = store_error {
            drop(temp);
            reply_error(req, &format!("{name}: cannot store it: {e}"))?;
            return Ok(Next::Continue);
        }
        let got = hex(&hasher.finalize());
        if got != expected {
            drop(temp);
            let msg =
                format!("{name}: sha256 mismatch: the data hashes to {got}, the header said {expected}; not stored");
            reply_error(req, &msg)?;
            return Ok(Next::Continue);
        }
        // Checked again: a symlink may have appeared meanwhile.
        if let Err(msg) = self.check_target(&name) {
            drop(temp);
            reply_error(req, &msg)?;
            return Ok(Next::Continue);
        }
        if let Err(e) = temp.commit(&self.dir.join(&name)) {
            reply_error(req, &format!("{name}: cannot store it: {e}"))?;
            return Ok(Next::Continue);
        }
        log::info!("{}: stored {name} ({size} bytes)", req.peer_addr());
        reply(req, &json!({ "ok": true, "name": name, "size": size, "sha256": got }))?;
        Ok(Next::Continue)
    }

    /// Opens `name` for reading without following a symlink; the file, or
    /// why not.
    fn open(&self, name: &str) -> Result<File, String> {
        check_name(name)?;
        // O_NONBLOCK: opening a FIFO must not hang (it is refused below).
        let opened =
            OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(self.dir.join(name));
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(format!("{name}: refused: it is a symbolic link"));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(format!("{name}: no such file")),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        match file.metadata() {
            Ok(m) if m.is_file() => Ok(file),
            Ok(_) => Err(format!("{name}: refused: not a regular file")),
            Err(e) => Err(format!("{name}: {e}")),
        }
    }

    fn download(&self, req: &mut StreamRequest, header: &Value) -> io::Result<Next> {
        let Some(name) = header.get("name").and_then(Value::as_str) else {
            reply_error(req, "a download needs a \"name\"")?;
            return Ok(Next::Continue);
        };
        let mut file = match self.open(name) {
            Ok(f) => f,
            Err(msg) => {
                reply_error(req, &msg)?;
                return Ok(Next::Continue);
            }
        };
        let (size, digest) = match hash_reader(&mut file).and_then(|h| file.seek(SeekFrom::Start(0)).map(|_| h)) {
            Ok(h) => h,
            Err(e) => {
                reply_error(req, &format!("{name}: {e}"))?;
                return Ok(Next::Continue);
            }
        };
        reply(req, &json!({ "ok": true, "name": name, "size": size, "sha256": digest }))?;
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let n = match file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{name}: {e}"))),
            };
            if n == 0 {
                // Changed since it was hashed: the client's check fails, and
                // closing tells it at once.
                log::warn!("{}: {name} shrank while being sent; closing", req.peer_addr());
                return Ok(Next::Close);
            }
            req.write_all(&buf[..n])?;
            left -= n as u64;
        }
        log::info!("{}: sent {name} ({size} bytes)", req.peer_addr());
        Ok(Next::Continue)
    }

    fn list(&self, req: &mut StreamRequest) -> io::Result<Next> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) => {
                reply_error(req, &format!("cannot list the folder: {e}"))?;
                return Ok(Next::Continue);
            }
        };
        let mut files: Vec<(String, u64)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file())) // not through symlinks
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.metadata().ok()?.len())))
            // Only what can be downloaded: no temporary uploads, no hidden
            // files, no names with control characters.
            .filter(|(name, _)| check_name(name).is_ok())
            .collect();
        files.sort();
        // Keep the answer within its frame.
        let mut room = MAX_RESPONSE - 1024;
        let mut listed = Vec::new();
        let mut truncated = false;
        for (name, size) in files {
            // JSON escapes at most 6 bytes per byte of name, plus the punctuation.
            let cost = name.len() * 6 + 48;
            if cost > room {
                truncated = true;
                break;
            }
            room -= cost;
            listed.push(json!({ "name": name, "size": size }));
        }
        reply(req, &json!({ "ok": true, "files": listed, "truncated": truncated }))?;
        Ok(Next::Continue)
    }
}

impl FileService {
    /// Waits for the next request header: `None` at the end of the
    /// connection — or, under the event strategy, when nothing has come
    /// yet: the connection parks and `handle` is called again when it
    /// sends (nothing here outlives the call). Waiting for its first byte
    /// is bounded by the idle timeout; once it has begun, the whole header must arrive within
    /// `header_timeout`, or the client is told so and the connection closes
    /// (a client that trickles bytes resets the idle timeout each time).
    fn next_header(&self, req: &mut StreamRequest, frame: &mut Vec<u8>) -> io::Result<Option<()>> {
        match req.wait_for_data() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) if client_gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
        let by = Instant::now() + self.header_timeout;
        req.set_read_deadline(Some(by))?;
        let read = LengthPrefixed::new(MAX_HEADER).read_frame(req, frame);
        req.set_read_deadline(None)?;
        match read {
            Ok(true) => Ok(Some(())),
            Ok(false) => Ok(None),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                // Nothing was allocated for it; say why, then close.
                let _ = reply_error(req, &format!("header: {e}; closing the connection"));
                Ok(None)
            }
            Err(e) if e.kind() == ErrorKind::TimedOut && Instant::now() >= by => {
                let msg = format!(
                    "the request header did not arrive within {:?} of its first byte; closing the connection",
                    self.header_timeout
                );
                let _ = reply_error(req, &msg);
                Ok(None)
            }
            Err(e) if client_gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl RequestHandler<StreamRequest> for FileService {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        // One request after another; under the event strategy this returns
        // whenever the connection parks between two, and starts again here
        // with the next one (a transfer runs to its end in one call).
        let mut frame = Vec::new();
        while self.next_header(req, &mut frame)?.is_some() {
            let next = match serde_json::from_slice::<Value>(&frame) {
                Err(e) => {
                    reply_error(req, &format!("the header is not JSON: {e}; closing the connection"))?;
                    Next::Close
                }
                Ok(header) => {
                    let result = match header.get("op").and_then(Value::as_str) {
                        Some("upload") => self.upload(req, &header),
                        Some("download") => self.download(req, &header),
                        Some("list") => self.list(req),
                        _ => reply_error(req, "\"op\" must be upload, download or list; closing the connection")
                            .map(|()| Next::Close),
                    };
                    match result {
                        Ok(next) => next,
                        Err(e) if client_gone(&e) => {
                            log::info!("{}: {e}", req.peer_addr());
                            Next::Close
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            if let Next::Close = next {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Binds the server; run it with `serve_forever`. By default a pool of 2 to
/// [`MAX_WORKERS`] threads serves one connection each (it grows as clients
/// come: a few that hold a connection open cannot lock the others out);
/// further clients wait their turn in the pool's queue and the listen
/// backlog. [`Config::strategy`] chooses another way.
///
/// # Errors
/// The folder does not exist, or the address cannot be bound.
pub fn server(addr: &str, config: &Config) -> io::Result<Server<Tcp, AnyStrategy>> {
    let service = FileService::new(config)?;
    TcpServer::builder()
        .strategy(config.strategy.clone())
        .idle_timeout(IDLE_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .bind(addr, service)
}

// ---------------------------------------------------------------- client

/// A finished transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The name on the server.
    pub name: String,
    /// Bytes transferred.
    pub size: u64,
    /// Their SHA-256, checked.
    pub sha256: String,
}

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg.into())
}

fn send_header<S: Write + ?Sized>(stream: &mut S, header: &Value) -> io::Result<()> {
    let body = serde_json::to_vec(header).map_err(io::Error::other)?;
    LengthPrefixed::new(MAX_HEADER).write_frame(stream, &body)
}

/// Reads an answer frame: the JSON when `ok`, the server's error otherwise.
fn read_answer<S: Read + ?Sized>(stream: &mut S) -> io::Result<Value> {
    let mut frame = Vec::new();
    if !LengthPrefixed::new(MAX_RESPONSE).read_frame(stream, &mut frame)? {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    let answer: Value = serde_json::from_slice(&frame).map_err(|e| invalid_data(format!("bad answer: {e}")))?;
    match answer.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(answer),
        Some(false) => {
            let msg = answer.get("error").and_then(Value::as_str).unwrap_or("(no message)");
            Err(io::Error::other(format!("server: {msg}")))
        }
        None => Err(invalid_data("bad answer: no \"ok\"")),
    }
}

/// Uploads the file at `path` as `name`, progress on `progress`.
///
/// # Errors
/// The file cannot be read, the server refused it (the message says why),
/// or the connection failed.
pub fn upload<S: Read + Write + ?Sized>(
    stream: &mut S,
    path: &Path,
    name: &str,
    progress: &mut dyn Write,
) -> io::Result<Transfer> {
    check_name(name).map_err(|msg| io::Error::new(ErrorKind::InvalidInput, msg))?;
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut file = File::open(path).map_err(with_path)?;
    if !file.metadata().map_err(with_path)?.is_file() {
        return Err(io::Error::new(ErrorKind::InvalidInput, format!("{}: not a regular file", path.display())));
    }
    let (size, digest) = hash_reader(&mut file).map_err(with_path)?;
    file.seek(SeekFrom::Start(0)).map_err(with_path)?;
    send_header(stream, &json!({ "op": "upload", "name": name, "size": size, "sha256": digest }))?;
    let mut shown = Progress::new(progress, format!("upload {name}"), size);
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(invalid_data(format!("{}: the file shrank while being sent", path.display()))),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(with_path(e)),
        };
        if let Err(e) = stream.write_all(&buf[..n]) {
            // The server may have refused the upload and closed: its
            // answer says why better than the write error.
            return Err(match read_answer(stream) {
                Err(answer) if answer.kind() == ErrorKind::Other => answer,
                _ => io::Error::new(e.kind(), format!("connection lost while uploading: {e}")),
            });
        }
        left -= n as u64;
        shown.advance(n as u64);
    }
    if size == 0 {
        shown.advance(0);
    }
    let answer = read_answer(stream)?;
    if answer.get("sha256").and_then(Value::as_str) != Some(digest.as_str()) {
        return Err(invalid_data("the server acknowledged a different digest"));
    }
    Ok(Transfer { name: name.to_string(), size, sha256: digest })
}

/// Downloads `name` to `out` (a folder: the file goes in it under `name`),
/// progress on `progress`. The data goes to a temporary file next to `out`,
/// renamed into place once its SHA-256 matches: on any failure nothing is
/// left behind.
///
/// # Errors
/// The server refused (the message says why), the data did not match its
/// digest, the connection failed, or `out` cannot be written.
pub fn download<S: Read + Write + ?Sized>(
    stream: &mut S,
    name: &str,
    out: &Path,
    progress: &mut dyn Write,
) -> io::Result<Transfer> {
    check_name(name).map_err(|msg| io::Error::new(ErrorKind::InvalidInput, msg))?;
    let out = if out.is_dir() { out.join(name) } else { out.to_path_buf() };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    send_header(stream, &json!({ "op": "download", "name": name }))?;
    let answer = read_answer(stream)?;
    let size = answer.get("size").and_then(Value::as_u64).ok_or_else(|| invalid_data("bad answer: no size"))?;
    let expected = answer
        .get("sha256")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_data("bad answer: no sha256"))
        .and_then(|d| parse_digest(d).map_err(invalid_data))?;
    let with_out = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", out.display()));
    let mut temp = TempFile::create(&dir, PART_PREFIX).map_err(with_out)?;
    let mut shown = Progress::new(progress, format!("download {name}"), size);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("the server closed the connection after {} of {size} bytes; nothing kept", size - left),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        temp.file.write_all(&buf[..n]).map_err(with_out)?;
        left -= n as u64;
        shown.advance(n as u64);
    }
    if size == 0 {
        shown.advance(0);
    }
    let got = hex(&hasher.finalize());
    if got != expected {
        return Err(invalid_data(format!(
            "{name}: sha256 mismatch: the data hashes to {got}, the server said {expected}; nothing kept"
        )));
    }
    temp.commit(&out).map_err(with_out)?;
    Ok(Transfer { name: name.to_string(), size, sha256: got })
}

/// The regular files the server offers, by name, with their sizes.
///
/// # Errors
/// The server refused, or the connection failed.
pub fn list<S: Read + Write + ?Sized>(stream: &mut S) -> io::Result<Vec<(String, u64)>> {
    send_header(stream, &json!({ "op": "list" }))?;
    let answer = read_answer(stream)?;
    let files = answer.get("files").and_then(Value::as_array).ok_or_else(|| invalid_data("bad answer: no files"))?;
    files
        .iter()
        .map(|f| match (f.get("name").and_then(Value::as_str), f.get("size").and_then(Value::as_u64)) {
            (Some(name), Some(size)) => Ok((name.to_string(), size)),
            _ => Err(invalid_data("bad answer: a file without name or size")),
        })
        .collect()
}

/// Connects to `addr` ([`args::connect`]); the server gets 2 minutes to
/// answer each read.
///
/// # Errors
/// The address does not resolve, or no address accepts.
pub fn connect(addr: &str) -> io::Result<TcpStream> {
    let s = args::connect(addr)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(s)
}

// ------------------------------------------------------------- arguments

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Args {
    /// `server --dir DIR ...`
    Server {
        /// Where to listen.
        addr: String,
        /// What to serve.
        config: Config,
    },
    /// `client upload FILE [--name NAME]`
    Upload {
        /// The server.
        addr: String,
        /// The local file.
        file: PathBuf,
        /// The name on the server (default: the file's name).
        name: Option<String>,
    },
    /// `client download NAME [--out FILE]`
    Download {
        /// The server.
        addr: String,
        /// The name on the server.
        name: String,
        /// Where to put it (default: `./NAME`).
        out: Option<PathBuf>,
    },
    /// `client list`
    List {
        /// The server.
        addr: String,
    },
    /// `--help`
    Help,
}

/// The usage text.
pub const USAGE: &str = "\
usage: file_transfer server --dir DIR [--addr ADDR] [--max-size BYTES] [--strategy STRATEGY]
       file_transfer client [--addr ADDR] upload FILE [--name NAME]
       file_transfer client [--addr ADDR] download NAME [--out FILE]
       file_transfer client [--addr ADDR] list

The server listens on 127.0.0.1:9002 unless told otherwise and takes uploads
of at most 1 GiB (--max-size accepts K, M and G suffixes, powers of 1024). It
serves each connection with a worker of a pool; --strategy event parks
connections between requests with no thread, 'threading(256)' gives each a
thread.";

/// `1048576`, `512K`, `100M`, `1G`.
///
/// # Errors
/// Not a size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        _ => (s, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size in bytes (e.g. 1048576, 512K, 100M, 1G)"))
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A message for the user; print it with [`USAGE`].
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut it = Flags::new(args);
    let mut addr = DEFAULT_ADDR.to_string();
    let mode = it.next().ok_or("missing `server` or `client`")?;
    match mode {
        "-h" | "--help" | "help" => Ok(Args::Help),
        "server" => {
            let (mut dir, mut config) = (None, Config::new(PathBuf::new()));
            while let Some(arg) = it.next() {
                match arg {
                    "--addr" => addr = it.value(arg)?,
                    "--strategy" => config.strategy = it.strategy(arg)?,
                    "--dir" => dir = Some(PathBuf::from(it.value(arg)?)),
                    "--max-size" => config.max_size = parse_size(&it.value(arg)?)?,
                    "-h" | "--help" => return Ok(Args::Help),
                    other => return Err(format!("unexpected argument {other:?}")),
                }
            }
            let dir = dir.ok_or("the server needs --dir DIR")?;
            Ok(Args::Server { addr, config: Config { dir, ..config } })
        }
        "client" => {
            let mut words = Vec::new();
            let mut name = None;
            let mut out = None;
            while let Some(arg) = it.next() {
                match arg {
                    "--addr" => addr = it.value(arg)?,
                    "--name" => name = Some(it.value(arg)?),
                    "--out" => out = Some(PathBuf::from(it.value(arg)?)),
                    "-h" | "--help" => return Ok(Args::Help),
                    other if other.starts_with("--") => return Err(format!("unknown option {other:?}")),
                    _ => words.push(arg.to_string()),
                }
            }
            let extra = |n: usize| -> Result<(), String> {
                match words.get(n) {
                    Some(w) => Err(format!("unexpected argument {w:?}")),
                    None => Ok(()),
                }
            };
            match words.first().map(String::as_str) {
                Some("upload") => {
                    let file = words.get(1).ok_or("upload needs a FILE")?;
                    extra(2)?;
                    if out.is_some() {
                        return Err("--out is for downloads".into());
                    }
                    Ok(Args::Upload { addr, file: PathBuf::from(file), name })
                }
                Some("download") => {
                    let name_arg = words.get(1).ok_or("download needs a NAME")?;
                    extra(2)?;
                    if name.is_some() {
                        return Err("--name is for uploads".into());
                    }
                    Ok(Args::Download { addr, name: name_arg.clone(), out })
                }
                Some("list") => {
                    extra(1)?;
                    if name.is_some() || out.is_some() {
                        return Err("list takes no --name or --out".into());
                    }
                    Ok(Args::List { addr })
                }
                Some(other) => Err(format!("unknown request {other:?}: give upload, download or list")),
                None => Err("the client needs upload, download or list".into()),
            }
        }
        other => Err(format!("unknown mode {other:?}: give `server` or `client`")),
    }
}

/// Runs what the command line asks (exit code 0 when done).
///
/// # Errors
/// The server cannot be bound or served; the client's request fails.
pub fn run(args: Args) -> io::Result<i32> {
    let progress = &mut io::stderr();
    match args {
        Args::Help => println!("{USAGE}"),
        Args::Server { addr, config } => {
            let server = server(&addr, &config)?;
            eprintln!(
                "file_transfer: serving {} on {} ({}; uploads up to {} bytes)",
                config.dir.display(),
                server.server_address(),
                server.strategy(),
                config.max_size
            );
            server.handle().shutdown_on_signal()?;
            server.serve_forever()?;
        }
        Args::Upload { addr, file, name } => {
            let name = match name {
                Some(n) => n,
                None => file.file_name().and_then(|n| n.to_str()).map(str::to_string).ok_or_else(|| {
                    io::Error::new(ErrorKind::InvalidInput, format!("{}: give --name NAME", file.display()))
                })?,
            };
            let done = upload(&mut connect(&addr)?, &file, &name, progress)?;
            println!("uploaded {} ({} bytes, sha256 {})", done.name, done.size, done.sha256);
        }
        Args::Download { addr, name, out } => {
            let out = out.unwrap_or_else(|| PathBuf::from(&name));
            let out = if out.is_dir() { out.join(&name) } else { out };
            let done = download(&mut connect(&addr)?, &name, &out, progress)?;
            println!("downloaded {} to {} ({} bytes, sha256 {})", done.name, out.display(), done.size, done.sha256);
        }
        Args::List { addr } => {
            for (name, size) in list(&mut connect(&addr)?)? {
                println!("{size:>12}  {name}");
            }
        }
    }
    Ok(0)
}
