//! The PROXY protocol (versions 1 and 2), behind HAProxy and its kin: the
//! proxy opens each connection with a header saying who the client is, and
//! the server's handlers and `verify_request` see that client instead of
//! the proxy. Parsed with the [`ppp`] crate.
//!
//! ```no_run
//! use socketserver::proxy::ProxyProtocol;
//! use socketserver::{StreamRequest, TcpServer};
//! use std::io::Write;
//!
//! let server = TcpServer::builder()
//!     // Only HAProxy on this host may say who the client is.
//!     .proxy_protocol(ProxyProtocol::trusting(|proxy| proxy.as_inet().is_some_and(|a| a.ip().is_loopback())))
//!     // ...and verify_request judges the client HAProxy names, not HAProxy.
//!     .verify_request(|client| !client.to_string().starts_with("203.0.113."))
//!     .bind("127.0.0.1:0", |req: &mut StreamRequest| {
//!         let client = req.peer_addr().clone(); // 192.0.2.7:40000, not HAProxy's 127.0.0.1
//!         writeln!(req, "hello, {client}")
//!     })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ppp::v2;
use ppp::{HeaderResult, PartialResult};

use crate::net::Address;

/// The longest header read: a v1 header is at most 107 bytes; a v2 one is
/// 16 bytes and its addresses and TLVs, which HAProxy keeps small.
pub const MAX_HEADER: usize = 4096;

type TrustFn = dyn Fn(&Address) -> bool + Send + Sync;

/// How a stream server takes the PROXY protocol: whom it trusts to send the
/// header, and how long a header may take. See
/// [`Builder::proxy_protocol`](crate::Builder::proxy_protocol).
#[derive(Clone)]
pub struct ProxyProtocol {
    pub(crate) trusted: Arc<TrustFn>,
    pub(crate) header_timeout: Duration,
}

impl fmt::Debug for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyProtocol").field("header_timeout", &self.header_timeout).finish_non_exhaustive()
    }
}

impl ProxyProtocol {
    /// Expects a header on every connection from a peer `trusted` says yes
    /// to (the proxies); a connection from anyone else is refused at once
    /// and counted in `Stats::proxy_refused`: a client that reached the
    /// server directly must not be able to claim another address.
    pub fn trusting(trusted: impl Fn(&Address) -> bool + Send + Sync + 'static) -> ProxyProtocol {
        ProxyProtocol { trusted: Arc::new(trusted), header_timeout: Duration::from_secs(3) }
    }

    /// How long a header may take to arrive whole, from the connection's
    /// start (default 3 s). One that does not — never sent, or sent in
    /// part — is closed then and counted in `Stats::proxy_errors`.
    /// `Duration::MAX`: no limit; zero: the header must be there when the
    /// connection is taken.
    pub fn header_timeout(mut self, timeout: Duration) -> ProxyProtocol {
        self.header_timeout = timeout;
        self
    }
}

/// What a header says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Header {
    /// A proxied connection: the client and the address it connected to.
    Proxied {
        /// The client, as the proxy saw it.
        source: SocketAddr,
        /// The address the client connected to (the proxy's frontend).
        destination: SocketAddr,
    },
    /// The proxy's own connection (`LOCAL`, e.g. a health check) or one it
    /// cannot describe (`UNKNOWN`, an unsupported family): the connection's
    /// own addresses stand.
    Local,
}

/// Why a header is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// Not a PROXY header, or a malformed one.
    Malformed(String),
    /// Longer than [`MAX_HEADER`] and still not complete.
    TooLong,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Malformed(why) => write!(f, "malformed PROXY header: {why}"),
            HeaderError::TooLong => write!(f, "PROXY header longer than {MAX_HEADER} bytes"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Parses the PROXY header (v1 or v2) at the start of `bytes`: `Ok(Some((header,
/// length)))` when it is whole (the bytes after `length` are the
/// connection's own), `Ok(None)` when more bytes are needed.
///
/// # Errors
/// [`HeaderError`] when `bytes` cannot start a header, or the header grew
/// past [`MAX_HEADER`].
pub fn parse(bytes: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
    // How long the header is, before `ppp` parses it whole: a v1 header is
    // one line (CRLF within 107 bytes), a v2 header says its length in its
    // 16th byte. (`ppp` takes some cut-off v1 lines for malformed ones.)
    let Some(total) = header_length(bytes)? else { return Ok(None) };
    let result = HeaderResult::parse(&bytes[..total]);
    if result.is_incomplete() {
        return Err(HeaderError::Malformed("the header ends early".to_string()));
    }
    let (header, length) = match result {
        HeaderResult::V1(Ok(h)) => {
            let header = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Header::Proxied {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                ppp::v1::Addresses::Tcp6(a) => Header::Proxied {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                // The rest of an UNKNOWN line is to be ignored, whatever it
                // holds (`ppp` may stop at a stray LF): the line is the header.
                ppp::v1::Addresses::Unknown => return Ok(Some((Header::Local, total))),
            };
            (header, h.header.len())
        }
        HeaderResult::V2(Ok(h)) => {
            let header = match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Header::Proxied {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Header::Proxied {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                _ => Header::Local,
            };
            (header, h.len())
        }
        HeaderResult::V1(Err(e)) => return Err(HeaderError::Malformed(format!("{e:?}"))),
        HeaderResult::V2(Err(e)) => return Err(HeaderError::Malformed(format!("{e:?}"))),
    };
    if length != total {
        return Err(HeaderError::Malformed(format!("the header's {length} bytes are not its line's {total}")));
    }
    if length > MAX_HEADER {
        return Err(HeaderError::TooLong);
    }
    Ok(Some((header, length)))
}

const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// The length of the header at the start of `bytes`, once it can be told.
fn header_length(bytes: &[u8]) -> Result<Option<usize>, HeaderError> {
    let starts = |prefix: &[u8]| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    };
    if starts(&V2_SIGNATURE) {
        if bytes.len() < 16 {
            return Ok(None);
        }
        let total = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        if total > MAX_HEADER {
            return Err(HeaderError::TooLong);
        }
        return Ok((bytes.len() >= total).then_some(total));
    }
    if starts(V1_PREFIX) {
        let window = &bytes[..bytes.len().min(V1_MAX)];
        return match window.windows(2).position(|w| w == b"\r\n") {
            Some(at) => Ok(Some(at + 2)),
            None if bytes.len() >= V1_MAX => Err(HeaderError::Malformed("no CRLF within 107 bytes".to_string())),
            None => Ok(None),
        };
    }
    Err(HeaderError::Malformed("the connection does not start with a PROXY header".to_string()))
}

/// A header's error as the connection's error.
pub(crate) fn to_io(e: HeaderError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied { source: source.parse().unwrap(), destination: destination.parse().unwrap() }
    }

    #[test]
    fn v1_headers_in_whole_and_in_part() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\nGET /";
        assert_eq!(parse(h).unwrap(), Some((proxied("192.0.2.1:51000", "198.51.100.2:443"), h.len() - 5)));
        for cut in 1..h.len() - 5 {
            assert_eq!(parse(&h[..cut]).unwrap(), None, "cut at {cut}");
        }
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";
        assert_eq!(parse(v6).unwrap(), Some((proxied("[2001:db8::1]:4000", "[2001:db8::2]:80"), v6.len())));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), Some((Header::Local, 15)));
        // What follows UNKNOWN up to the CRLF is ignored, stray bytes too.
        let odd = b"PROXY UNKNOWN \n\rO\xbdD\nROXY TCP6\r\r\nrest";
        assert_eq!(parse(odd).unwrap(), Some((Header::Local, odd.len() - 4)));
        assert_eq!(parse(&odd[..17]).unwrap(), None);
    }

    #[test]
    fn v2_proxy_and_local() {
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            ("127.0.0.2:5555".parse::<SocketAddr>().unwrap(), "127.0.0.1:80".parse::<SocketAddr>().unwrap()),
        )
        .build()
        .unwrap();
        let mut wire = header.clone();
        wire.extend_from_slice(b"hello");
        assert_eq!(parse(&wire).unwrap(), Some((proxied("127.0.0.2:5555", "127.0.0.1:80"), header.len())));
        assert_eq!(parse(&header[..10]).unwrap(), None);
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local).unwrap(), Some((Header::Local, local.len())));
    }

    #[test]
    fn garbage_is_an_error_not_a_wait() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Malformed(_))));
        assert!(matches!(parse(b"PROXY TCP9 x y 1 2\r\n"), Err(HeaderError::Malformed(_))));
        let endless = [b'P', b'R', b'O', b'X', b'Y', b' '].iter().copied().chain(std::iter::repeat_n(b'1', 5000));
        let endless: Vec<u8> = endless.collect();
        assert!(parse(&endless).is_err(), "a header that never ends is refused");
    }
}
