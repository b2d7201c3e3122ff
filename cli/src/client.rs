//! `socketserver client`: each line of stdin goes to the server (TCP/Unix:
//! with its newline; UDP: as one datagram without it), each reply comes
//! out as a line on stdout. Like the tutorials' `input()` loops.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "target")]
pub struct Target {
    /// Talk TCP to ADDR (host:port).
    #[arg(long = "tcp", value_name = "ADDR", group = "target")]
    tcp: Option<String>,
    /// Talk UDP to ADDR: each line is one datagram.
    #[arg(long = "udp", value_name = "ADDR", group = "target")]
    udp: Option<String>,
    /// Talk to the Unix stream socket at PATH.
    #[arg(long = "unix", value_name = "PATH", group = "target")]
    unix: Option<PathBuf>,
    /// Talk to the Unix datagram socket at PATH (the client binds a
    /// temporary socket of its own to get replies).
    #[arg(long = "unix-dgram", value_name = "PATH", group = "target")]
    unix_dgram: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    target: Target,
    /// Give up on a reply after SECS seconds (exit 1).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_timeout)]
    timeout: Duration,
    /// Give up (exit 1) on a reply line (TCP, Unix stream) longer than BYTES
    /// without its newline, rather than hold whatever a server sends; a K,
    /// M or G suffix multiplies by 1024, 1024² or 1024³.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_bytes)]
    max_line: usize,
}

fn parse_bytes(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{s}` is not a positive number of bytes (e.g. 65536, 64K, 16M)"))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a positive duration"))
}

fn context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn timeout_error(e: io::Error, target: &str, timeout: Duration) -> io::Error {
    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        io::Error::new(io::ErrorKind::TimedOut, format!("no reply from {target} within {timeout:?}"))
    } else {
        context(e, target)
    }
}

pub fn run(args: ClientArgs) -> io::Result<()> {
    let t = args.target;
    let timeout = args.timeout;
    let limits = Limits { timeout, max_line: args.max_line };
    if let Some(addr) = t.tcp {
        let target = format!("tcp {addr}");
        let stream = connect_tcp(&addr, timeout).map_err(|e| context(e, format_args!("cannot connect to {target}")))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        lines_over_stream(stream, |s| s.shutdown(Shutdown::Both), &target, limits)
    } else if let Some(path) = t.unix {
        let target = format!("unix {}", path.display());
        let stream = UnixStream::connect(&path).map_err(|e| context(e, format_args!("cannot connect to {target}")))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        lines_over_stream(stream, |s| s.shutdown(Shutdown::Both), &target, limits)
    } else if let Some(addr) = t.udp {
        let target = format!("udp {addr}");
        let socket = connect_udp(&addr).map_err(|e| context(e, format_args!("cannot reach {target}")))?;
        socket.set_read_timeout(Some(timeout))?;
        datagrams(|d| socket.send(d), |b| socket.recv(b), &target, timeout)
    } else if let Some(path) = t.unix_dgram {
        let target = format!("unix-dgram {}", path.display());
        // Removed at the end, and on SIGINT/SIGTERM/SIGHUP too.
        let me = TempSocket::new()?;
        let socket = UnixDatagram::bind(&me.0)?;
        socket.connect(&path).map_err(|e| context(e, format_args!("cannot reach {target}")))?;
        socket.set_read_timeout(Some(timeout))?;
        datagrams(|d| socket.send(d), |b| socket.recv(b), &target, timeout)
    } else {
        unreachable!("clap requires one target")
    }
}

fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "the address resolves to nothing");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn connect_udp(addr: &str) -> io::Result<UdpSocket> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "the address resolves to nothing");
    for a in addr.to_socket_addrs()? {
        let local = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = UdpSocket::bind(local)?;
        match socket.connect(a) {
            Ok(()) => return Ok(socket),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The next line of stdin as bytes, without its LF (or CRLF); any bytes
/// at all, not only UTF-8. `None` at EOF.
fn next_line(stdin: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<()>> {
    line.clear();
    if stdin.read_until(b'\n', line)? == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(Some(()))
}

#[derive(Clone, Copy)]
struct Limits {
    timeout: Duration,
    /// The longest reply line taken, without its newline.
    max_line: usize,
}

fn lines_over_stream<S: Read + Write + Sync>(
    stream: S,
    shutdown: impl Fn(&S) -> io::Result<()> + Sync,
    target: &str,
    limits: Limits,
) -> io::Result<()>
where
    for<'a> &'a S: Read + Write,
{
    let Limits { timeout, max_line } = limits;
    // The newline may come after max_line bytes.
    let take = u64::try_from(max_line).unwrap_or(u64::MAX).saturating_add(1);
    let mut replies = BufReader::new(&stream);
    let mut out = io::stdout().lock();
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    let mut reply = Vec::new();
    while next_line(&mut stdin, &mut line)?.is_some() {
        line.push(b'\n');
        // The line goes out on a thread of its own while the reply comes
        // in: an echo of a line longer than the socket buffers can hold
        // would otherwise block both ends for good.
        let (sent, got) = std::thread::scope(|s| {
            let sender = s.spawn(|| (&stream).write_all(&line));
            reply.clear();
            // At most max_line bytes and a newline: a server cannot make the
            // client hold more.
            let got = (&mut replies).take(take).read_until(b'\n', &mut reply);
            let too_long = matches!(got, Ok(n) if n > max_line && reply.last() != Some(&b'\n'));
            if got.is_err() || too_long {
                // Giving up: the sender must not stay blocked on a server
                // that takes no more.
                let _ = shutdown(&stream);
            }
            let sent = sender.join().unwrap_or_else(|_| Err(io::Error::other("the sending thread panicked")));
            (sent, got)
        });
        let n = got.map_err(|e| timeout_error(e, target, timeout))?;
        if n > max_line && reply.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{target} sent a reply line longer than {max_line} bytes (--max-line); giving up"),
            ));
        }
        if n > 0 {
            if reply.last() != Some(&b'\n') {
                reply.push(b'\n');
            }
            out.write_all(&reply)?;
            out.flush()?;
        }
        // A reply that came is shown even when the rest of the line could
        // not be sent (a server that answers `error:` and hangs up).
        sent.map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                io::Error::new(io::ErrorKind::TimedOut, format!("{target} took no data for {timeout:?}"))
            }
            _ => context(e, target),
        })?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{target} closed the connection")));
        }
    }
    Ok(())
}

fn datagrams(
    send: impl Fn(&[u8]) -> io::Result<usize>,
    recv: impl Fn(&mut [u8]) -> io::Result<usize>,
    target: &str,
    timeout: Duration,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while next_line(&mut stdin, &mut line)?.is_some() {
        send(&line).map_err(|e| context(e, target))?;
        let n = recv(&mut buf).map_err(|e| timeout_error(e, target, timeout))?;
        out.write_all(&buf[..n])?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

/// A socket path of our own for Unix-datagram replies, removed on exit,
/// and when a signal ends the process (Ctrl-C left it behind).
struct TempSocket(PathBuf);

impl TempSocket {
    fn new() -> io::Result<TempSocket> {
        let dir = std::env::temp_dir();
        for n in 0..100 {
            let path = dir.join(format!("socketserver-client-{}-{n}.sock", std::process::id()));
            if !Path::new(&path).exists() {
                // Before the socket is bound: no signal can come between.
                remove_on_signal(path.clone())?;
                return Ok(TempSocket(path));
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary socket path"))
    }
}

/// On SIGINT, SIGTERM or SIGHUP (unless SIGHUP was ignored at start, as
/// under nohup), removes `path`, then ends the process by that signal, as
/// the default action would have.
fn remove_on_signal(path: PathBuf) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut wanted = vec![SIGINT, SIGTERM];
    if !ignored(SIGHUP) {
        wanted.push(SIGHUP);
    }
    let mut signals = signal_hook::iterator::Signals::new(wanted)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot install the signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = std::fs::remove_file(&path);
                // Resets the default action and raises the signal again: the
                // process ends "killed by SIGINT", as a shell expects.
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// Whether `signal` is ignored (SIG_IGN), as it was inherited.
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into a zeroed struct we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

impl Drop for TempSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
