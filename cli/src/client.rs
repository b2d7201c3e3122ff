//! `socketserver client`: each line of stdin goes to the server (TCP/Unix:
//! with its newline; UDP: as one datagram without it), each reply comes
//! out as a line on stdout. Like the tutorials' `input()` loops.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
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
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS over --tcp or --unix.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Speak TLS (TCP and Unix stream only). The server's certificate is
    /// checked against --ca, else against the Mozilla roots (webpki-roots)
    /// compiled in; the name checked is --server-name, else the host of
    /// --tcp.
    #[arg(long)]
    tls: bool,
    /// Trust the CA certificates (or the self-signed certificate) in PEM.
    #[arg(long, value_name = "PEM", requires = "tls")]
    ca: Option<PathBuf>,
    /// Accept any server certificate, for tests only: the connection is
    /// encrypted, but to whoever answers.
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    insecure_skip_verify: bool,
    /// The name to send (SNI) and to check the certificate against
    /// (needed with --unix, which has no host).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
    /// A client certificate chain to show (mutual TLS), with --key.
    #[arg(long, value_name = "PEM", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS client for `addr` (a host:port or a socket path), or none.
    fn connector(
        &self,
        addr: &str,
    ) -> io::Result<Option<(std::sync::Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>> {
        if !self.tls {
            return Ok(None);
        }
        let opts = crate::tls::ClientTls {
            ca: self.ca.as_deref(),
            insecure: self.insecure_skip_verify,
            identity: self.cert.as_deref().zip(self.key.as_deref()),
            ..Default::default()
        };
        let config = crate::tls::client_config(&opts)?;
        let name = crate::tls::server_name(self.server_name.as_deref(), addr)?;
        Ok(Some((config, name)))
    }
}

/// Over TLS or not, the lines go over the stream.
fn lines_over<S: Into<Sock> + Read + Write + Sync>(
    stream: S,
    tls: Option<(std::sync::Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    shutdown: impl Fn(&S) -> io::Result<()> + Sync,
    set_nonblocking: impl Fn(&S) -> io::Result<()>,
    target: &str,
    limits: Limits,
) -> io::Result<()>
where
    for<'a> &'a S: Read + Write,
{
    let Some((config, name)) = tls else { return lines_over_stream(stream, shutdown, target, limits) };
    set_nonblocking(&stream)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(crate::tls::io_error)?;
    let tls = TlsStream::handshake(stream.into(), conn, limits.timeout)
        .map_err(|e| timeout_error(e, &format!("{target} (TLS handshake)"), limits.timeout))?;
    lines_over_stream::<TlsStream>(tls, |t: &TlsStream| t.socket.shutdown(), target, limits)
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
    if args.tls.tls && (t.udp.is_some() || t.unix_dgram.is_some()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--tls is for --tcp and --unix (datagrams stay plaintext)",
        ));
    }
    let timeout = args.timeout;
    let limits = Limits { timeout, max_line: args.max_line };
    if let Some(addr) = t.tcp {
        let target = format!("tcp {addr}");
        let stream = connect_tcp(&addr, timeout).map_err(|e| context(e, format_args!("cannot connect to {target}")))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let tls = args.tls.connector(&addr)?;
        lines_over(stream, tls, |s| s.shutdown(Shutdown::Both), |s| s.set_nonblocking(true), &target, limits)
    } else if let Some(path) = t.unix {
        let target = format!("unix {}", path.display());
        let stream = UnixStream::connect(&path).map_err(|e| context(e, format_args!("cannot connect to {target}")))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let tls = args.tls.connector(args.tls.server_name.as_deref().unwrap_or("localhost"))?;
        lines_over(stream, tls, |s| s.shutdown(Shutdown::Both), |s| s.set_nonblocking(true), &target, limits)
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

/// A TLS connection that a reading and a writing thread share (as
/// `lines_over_stream` needs): the socket is non-blocking, each side takes
/// the rustls state only to move bytes, and waits in `poll` without it.
struct TlsStream {
    socket: Sock,
    conn: std::sync::Mutex<rustls::ClientConnection>,
    timeout: Duration,
}

impl TlsStream {
    /// Runs the handshake to its end (within `timeout` of each step).
    fn handshake(socket: Sock, conn: rustls::ClientConnection, timeout: Duration) -> io::Result<TlsStream> {
        let stream = TlsStream { socket, conn: std::sync::Mutex::new(conn), timeout };
        loop {
            let mut conn = stream.lock();
            if !conn.is_handshaking() && !conn.wants_write() {
                drop(conn);
                return Ok(stream);
            }
            while conn.wants_write() {
                match conn.write_tls(&mut &stream.socket) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if !conn.is_handshaking() {
                continue;
            }
            match conn.read_tls(&mut &stream.socket) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed during the handshake"));
                }
                Ok(_) => {
                    conn.process_new_packets().map_err(|e| {
                        // The alert that says why goes to the server.
                        let _ = conn.write_tls(&mut &stream.socket);
                        io::Error::new(io::ErrorKind::InvalidData, format!("TLS handshake: {e}"))
                    })?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let out = conn.wants_write();
                    drop(conn);
                    stream.wait(true, out)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, rustls::ClientConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the socket to be readable and/or writable, up to the timeout.
    fn wait(&self, read: bool, write: bool) -> io::Result<()> {
        let mut events = 0;
        if read {
            events |= libc::POLLIN;
        }
        if write {
            events |= libc::POLLOUT;
        }
        let mut fd = libc::pollfd { fd: self.socket.as_raw_fd(), events, revents: 0 };
        let ms = libc::c_int::try_from(self.timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        loop {
            // SAFETY: one valid pollfd, owned by this frame.
            match unsafe { libc::poll(&mut fd, 1, ms) } {
                0 => return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
                n if n > 0 => return Ok(()),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Sends what rustls holds; `Ok(false)` when the socket takes no more now.
    fn flush_tls(&self, conn: &mut rustls::ClientConnection) -> io::Result<bool> {
        while conn.wants_write() {
            match conn.write_tls(&mut &self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Read for &TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut conn = self.lock();
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                // Closed without close_notify: an end of stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match conn.read_tls(&mut &self.socket) {
                Ok(_) => {
                    conn.process_new_packets().map_err(crate::tls::io_error)?;
                    // Anything the server's messages call for (an alert, a key update).
                    self.flush_tls(&mut conn)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(conn);
                    self.wait(true, false)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for &TlsStream {
    /// Returns once the bytes taken are on the socket (as a blocking
    /// socket's write would): the reading side only reads.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut taken = None;
        loop {
            let mut conn = self.lock();
            if taken.is_none() && !conn.wants_write() {
                taken = Some(conn.writer().write(buf)?);
            }
            if self.flush_tls(&mut conn)? {
                if let Some(n) = taken {
                    return Ok(n);
                }
                continue;
            }
            drop(conn);
            self.wait(false, true)?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        loop {
            let mut conn = self.lock();
            if self.flush_tls(&mut conn)? {
                return Ok(());
            }
            drop(conn);
            self.wait(false, true)?;
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl Drop for TlsStream {
    /// Tells the server this side is done (close_notify), best effort.
    fn drop(&mut self) {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.send_close_notify();
        while conn.wants_write() {
            if conn.write_tls(&mut &self.socket).is_err() {
                break;
            }
        }
    }
}

/// The socket under a TLS connection.
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl From<TcpStream> for Sock {
    fn from(s: TcpStream) -> Sock {
        Sock::Tcp(s)
    }
}

impl From<UnixStream> for Sock {
    fn from(s: UnixStream) -> Sock {
        Sock::Unix(s)
    }
}

impl Sock {
    fn shutdown(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(Shutdown::Both),
            Sock::Unix(s) => s.shutdown(Shutdown::Both),
        }
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for &Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
