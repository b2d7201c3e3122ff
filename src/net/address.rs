//! Addresses of peers and of the server itself, for every socket kind.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use socket2::SockAddr;

/// Where a peer is, or where a server listens: an IP address and port, or a
/// Unix socket path.
///
/// `Display` prints `127.0.0.1:9999`, `[::1]:9999` or the socket path
/// (its control characters and non-UTF-8 bytes escaped as
/// [`Escaped`](crate::escaped::Escaped) shows them: a client names its own socket);
/// an unnamed Unix socket (a client that did not bind) prints `(unnamed)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix domain socket: its path, or `None` when the socket is unnamed
    /// (or lives in Linux's abstract namespace).
    Unix(Option<PathBuf>),
}

impl Address {
    /// The IP address and port, if this is an internet address.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            Address::Unix(_) => None,
        }
    }

    /// The socket path, if this is a named Unix socket.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Address::Unix(Some(p)) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn from_sockaddr(a: &SockAddr) -> Address {
        match a.as_socket() {
            Some(inet) => Address::Inet(inet),
            None => Address::Unix(a.as_pathname().map(Path::to_path_buf)),
        }
    }

    pub(crate) fn from_unix(a: &std::os::unix::net::SocketAddr) -> Address {
        Address::Unix(a.as_pathname().map(Path::to_path_buf))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => a.fmt(f),
            // Chosen by the peer (a client binds any name it likes): escaped,
            // so that it cannot break or forge a log line.
            Address::Unix(Some(p)) => crate::escaped::Escaped(p.as_os_str().as_bytes()).fmt(f),
            Address::Unix(None) => f.write_str("(unnamed)"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Inet(a)
    }
}

/// An IP address connects as it is (`TcpStream::connect(server.server_address())`);
/// a Unix address is `InvalidInput` (connect to its [`as_path`](Address::as_path)).
impl std::net::ToSocketAddrs for Address {
    type Iter = std::option::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> std::io::Result<Self::Iter> {
        match self {
            Address::Inet(a) => Ok(Some(*a).into_iter()),
            Address::Unix(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{self} is a Unix socket address, not an IP one: connect to its path"),
            )),
        }
    }
}
