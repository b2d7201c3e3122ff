//! Sockets a server is handed rather than binds — by systemd's socket
//! activation, or by the process it succeeds in a restart — and the
//! readiness it reports back.
//!
//! The protocol is systemd's (`sd_listen_fds(3)`): descriptors 3, 4, ...
//! with `LISTEN_FDS` saying how many, `LISTEN_PID` whose they are and
//! `LISTEN_FDNAMES` their names. Each is checked on the descriptor itself
//! (`SO_TYPE`, `SO_DOMAIN`, `SO_ACCEPTCONN`) before a server takes it.
//!
//! ```no_run
//! use socketserver::activation;
//! use socketserver::{StreamRequest, TcpServer};
//! use std::io::Write;
//!
//! // Under `systemd-socket-activate -l 127.0.0.1:9999 ./server`, or a
//! // .socket unit with ListenStream=9999.
//! for socket in activation::listen_fds()? {
//!     let server = TcpServer::builder().from_inherited(socket, |req: &mut StreamRequest| {
//!         writeln!(req, "hello")
//!     })?;
//!     activation::notify_ready()?; // READY=1, when NOTIFY_SOCKET is set
//!     server.serve_forever()?;
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Type};

use crate::deadline::Deadline;

/// The first descriptor socket activation passes.
const FIRST: RawFd = 3;

/// Where a successor reports that it serves (a pipe's write end), set by
/// the process handing over to it ([`Successor::spawn`]).
const HANDOFF_FD: &str = "SOCKETSERVER_HANDOFF_FD";

/// A socket kind, as a descriptor says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketKind {
    /// A listening TCP socket (IPv4 or IPv6).
    Tcp,
    /// A UDP socket.
    Udp,
    /// A listening Unix stream socket.
    UnixStream,
    /// A Unix datagram socket.
    UnixDatagram,
}

impl fmt::Display for SocketKind {
    /// The transport's name: `tcp`, `udp`, `unix`, `unix-dgram`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketKind::Tcp => "tcp",
            SocketKind::Udp => "udp",
            SocketKind::UnixStream => "unix",
            SocketKind::UnixDatagram => "unix-dgram",
        })
    }
}

/// A socket this process was handed, with its name (`LISTEN_FDNAMES`;
/// `unknown` when none was given, as systemd has it).
#[derive(Debug)]
pub struct Inherited {
    fd: OwnedFd,
    name: String,
}

impl Inherited {
    /// Takes `fd` as a socket handed to this process, named `name`.
    pub fn new(fd: OwnedFd, name: impl Into<String>) -> Inherited {
        Inherited { fd, name: name.into() }
    }

    /// Its name: systemd's `FileDescriptorName=` (the .socket unit's name
    /// by default), or the one the process handing over gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the descriptor is, read from the descriptor itself.
    ///
    /// # Errors
    /// `InvalidInput` for a descriptor that is not a socket, a stream socket
    /// that is not listening, or a kind no server serves (raw, SCTP, ...).
    pub fn kind(&self) -> io::Result<SocketKind> {
        let sock = SockRef::from(&self.fd);
        let what = |e: io::Error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("inherited descriptor {} ({}): {e}", self.raw(), self.name),
            )
        };
        let ty = sock.r#type().map_err(what)?;
        let domain = sock.domain().map_err(what)?;
        let stream = ty == Type::STREAM;
        let kind = match (domain, ty) {
            (Domain::IPV4 | Domain::IPV6, Type::STREAM) => SocketKind::Tcp,
            (Domain::IPV4 | Domain::IPV6, Type::DGRAM) => SocketKind::Udp,
            (Domain::UNIX, Type::STREAM) => SocketKind::UnixStream,
            (Domain::UNIX, Type::DGRAM) => SocketKind::UnixDatagram,
            (domain, ty) => {
                return Err(what(io::Error::other(format!("a {domain:?} {ty:?} socket, which no server serves"))));
            }
        };
        if stream && !sock.is_listener().map_err(what)? {
            return Err(what(io::Error::other(format!("a {kind} socket that is not listening"))));
        }
        Ok(kind)
    }

    /// The descriptor as the socket of kind `want`.
    ///
    /// # Errors
    /// `InvalidInput` naming the descriptor, what it is and what was wanted.
    pub(crate) fn expect(self, want: SocketKind) -> io::Result<OwnedFd> {
        let kind = self.kind()?;
        if kind != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("inherited descriptor {} ({}) is a {kind} socket, not {want}", self.raw(), self.name),
            ));
        }
        Ok(self.fd)
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Inherited {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Inherited> for OwnedFd {
    fn from(i: Inherited) -> OwnedFd {
        i.fd
    }
}

/// The sockets handed to this process by socket activation (`LISTEN_FDS`
/// for this pid), in order, each made close-on-exec so that programs the
/// process runs do not hold them. Empty when none were handed (no
/// `LISTEN_FDS`, or one meant for another process). They are taken once:
/// a second call returns none.
///
/// # Errors
/// `InvalidInput` when the variables are malformed or a descriptor is not
/// open.
pub fn listen_fds() -> io::Result<Vec<Inherited>> {
    let Some(count) = handed_count()? else { return Ok(Vec::new()) };
    let Some(fds) = crate::sys::handoff::take_inherited(FIRST, count)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("LISTEN_FDS={count}: {e}")))?
    else {
        return Ok(Vec::new());
    };
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':').filter(|_| !names.is_empty());
    Ok(fds.into_iter().map(|fd| Inherited::new(fd, names.next().unwrap_or("unknown"))).collect())
}

/// `LISTEN_FDS`, when `LISTEN_PID` is this process.
fn handed_count() -> io::Result<Option<usize>> {
    let (Ok(pid), Ok(count)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("socket activation: {what}"));
    let pid: u32 = pid.trim().parse().map_err(|_| bad(&format!("LISTEN_PID={pid:?} is not a pid")))?;
    if pid != std::process::id() {
        return Ok(None); // meant for the process that set it
    }
    let count: usize = count.trim().parse().map_err(|_| bad(&format!("LISTEN_FDS={count:?} is not a count")))?;
    if count > 4096 {
        return Err(bad(&format!("LISTEN_FDS={count} is more descriptors than anyone hands over")));
    }
    Ok(Some(count))
}

/// Sends `state` (`READY=1`, `STOPPING=1`, `MAINPID=...`, `STATUS=...`,
/// newline-separated) to the service manager at `NOTIFY_SOCKET`
/// (`sd_notify(3)`); `false` when none is set. A path starting with `@` is
/// in Linux's abstract namespace.
///
/// # Errors
/// As the `sendto(2)`, with the socket named.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    sent.map(|_| true).map_err(|e| crate::error::context(e, format_args!("NOTIFY_SOCKET {}", path.display())))
}

/// Says this process serves: `READY=1` to the service manager (when
/// `NOTIFY_SOCKET` is set), and to the process that handed its sockets over
/// (when this is a [`Successor`]), which then stops. Call it once every
/// server is bound; returns whether anyone was told.
///
/// # Errors
/// As [`notify`]; writing to the hand-off pipe.
pub fn notify_ready() -> io::Result<bool> {
    let told = notify("READY=1")?;
    Ok(tell_predecessor()? || told)
}

/// Writes this pid to the hand-off pipe, once, if this is a successor.
fn tell_predecessor() -> io::Result<bool> {
    let Some(fd) = std::env::var(HANDOFF_FD).ok().and_then(|v| v.parse::<RawFd>().ok()) else { return Ok(false) };
    if handed_count()?.is_none() || fd < FIRST {
        return Ok(false);
    }
    let Some(mut pipe) = crate::sys::handoff::take_handoff_pipe(fd)
        .map_err(|e| io::Error::new(e.kind(), format!("{HANDOFF_FD}: {e}")))?
    else {
        return Ok(false);
    };
    pipe.write_all(format!("READY {}\n", std::process::id()).as_bytes())?;
    Ok(true)
}

/// A process started to take over this one's sockets: the same program,
/// handed them by the socket-activation protocol, telling this process when
/// it serves. Until it does, nothing changes here; once it does, this
/// process stops serving (see [`ServerHandle::hand_over`](crate::ServerHandle::hand_over))
/// and drains.
#[derive(Debug)]
pub struct Successor {
    child: std::process::Child,
    ready: std::fs::File,
}

impl Successor {
    /// Starts `program args` with `sockets` (descriptor, name) at
    /// descriptors 3, 4, ... and `LISTEN_FDS`, `LISTEN_FDNAMES`,
    /// `LISTEN_PID` set for it; `NOTIFY_SOCKET` passes through, so the
    /// successor reports to the service manager as this process did.
    ///
    /// # Errors
    /// When the descriptors cannot be passed or the program cannot start.
    pub fn spawn(
        program: &std::ffi::OsStr,
        args: &[OsString],
        sockets: &[(BorrowedFd<'_>, &str)],
    ) -> io::Result<Successor> {
        Successor::spawn_with_env(program, args, sockets, &[])
    }

    /// As [`spawn`](Self::spawn), with `env` (name, value) set for the
    /// successor too: what it should know of the sockets beyond their
    /// names, such as which socket files it is to remove when it stops.
    ///
    /// # Errors
    /// As `spawn`.
    pub fn spawn_with_env(
        program: &std::ffi::OsStr,
        args: &[OsString],
        sockets: &[(BorrowedFd<'_>, &str)],
        env: &[(&str, &str)],
    ) -> io::Result<Successor> {
        let (read, write) = crate::sys::process::pipe()?;
        let mut fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|(fd, _)| *fd).collect();
        fds.push(write.as_fd());
        let names: Vec<&str> = sockets.iter().map(|(_, name)| *name).collect();
        let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.extend([
            ("LISTEN_FDS", sockets.len().to_string()),
            ("LISTEN_FDNAMES", names.join(":")),
            (HANDOFF_FD, (FIRST + sockets.len() as RawFd).to_string()),
        ]);
        let child = crate::sys::handoff::spawn_with_fds(program, args, &fds, &env)
            .map_err(|e| crate::error::context(e, format_args!("cannot start {}", program.display())))?;
        drop(write); // the successor's copy is the only one: its exit is EOF
        Ok(Successor { child, ready: std::fs::File::from(read) })
    }

    /// The successor's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the successor to say it serves
    /// (`Duration::MAX`: for ever).
    ///
    /// # Errors
    /// `TimedOut` when it has not by then; `UnexpectedEof` when it ended
    /// (or closed the pipe) first, with its exit status if it has one.
    /// Either way the caller still serves: [`abandon`](Self::abandon) it.
    pub fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Deadline::after(Instant::now(), timeout);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let fd = self.ready.as_raw_fd();
        loop {
            if crate::sys::poll(&[fd], &mut [false], deadline.left(Instant::now()))? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("successor (pid {}) did not say it serves within {timeout:?}", self.id()),
                ));
            }
            let n = self.ready.read(&mut buf)?;
            if n == 0 {
                let status = self.child.try_wait().ok().flatten().map(|s| format!(" ({s})")).unwrap_or_default();
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("successor (pid {}) ended before it served{status}", self.id()),
                ));
            }
            got.extend_from_slice(&buf[..n]);
            if got.starts_with(b"READY ") && got.ends_with(b"\n") {
                return Ok(());
            }
            if got.len() > 64 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "successor sent something else than READY"));
            }
        }
    }

    /// Gives up on a successor that did not become ready: it is killed and
    /// reaped, so that it cannot start serving later beside this process.
    pub fn abandon(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Lets the successor run on its own (it is not waited for; when this
    /// process exits, it is re-parented).
    pub fn release(self) -> u32 {
        self.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_read_off_the_descriptor() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let kinds = [
            (OwnedFd::from(tcp), Ok(SocketKind::Tcp)),
            (OwnedFd::from(udp), Ok(SocketKind::Udp)),
            (OwnedFd::from(UnixDatagram::unbound().unwrap()), Ok(SocketKind::UnixDatagram)),
            (OwnedFd::from(a), Err("not listening")),
            (OwnedFd::from(std::fs::File::open("/dev/null").unwrap()), Err("descriptor")),
        ];
        for (fd, want) in kinds {
            let got = Inherited::new(fd, "x").kind();
            match (got, want) {
                (Ok(k), Ok(w)) => assert_eq!(k, w),
                (Err(e), Err(w)) => {
                    assert!(e.to_string().contains(w) && e.kind() == io::ErrorKind::InvalidInput, "{e}")
                }
                (got, want) => panic!("{got:?} != {want:?}"),
            }
        }
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = Inherited::new(OwnedFd::from(tcp), "web").expect(SocketKind::Udp).unwrap_err();
        assert!(err.to_string().contains("(web) is a tcp socket, not udp"), "{err}");
    }
}
