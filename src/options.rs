//! A server's settings, as the builder leaves them.

use std::time::Duration;

use crate::proxy::ProxyProtocol;

use crate::net::bind::BindOptions;
use crate::request::StreamPolicy;
use crate::request::timeouts::TimeoutPolicy;

/// How long, during a shutdown, a connection between requests (or a
/// datagram socket) is still waited on for a request that raced the signal.
pub(crate) const DEFAULT_DRAIN_WINDOW: Duration = Duration::from_millis(100);

/// A handler's writes are collected up to this many bytes, so that an
/// answer made of several `write!` pieces leaves in one segment.
pub(crate) const DEFAULT_WRITE_BUFFER: usize = 8 * 1024;

#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) reuse_address: Option<bool>,
    pub(crate) reuse_port: bool,
    pub(crate) backlog: i32,
    pub(crate) activate: bool,
    pub(crate) nodelay: bool,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    /// `None`: the transport's own limit (see `Builder::max_datagram_size`).
    pub(crate) max_datagram_size: Option<usize>,
    /// Replies up to this many bytes whatever their request (0: only the
    /// amplification bound; see `DatagramRequest::max_reply`).
    pub(crate) max_datagram_reply: usize,
    pub(crate) max_connections: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
    pub(crate) drain_window: Duration,
    pub(crate) service_interval: Duration,
    pub(crate) read_buffer: usize,
    pub(crate) write_buffer: usize,
    pub(crate) proxy: Option<ProxyProtocol>,
    /// TLS on every connection (stream servers).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// How long a TLS handshake may take.
    #[cfg(feature = "tls")]
    pub(crate) handshake_timeout: Duration,
}

/// How long a TLS handshake may take by default.
#[cfg(feature = "tls")]
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Options {
    fn default() -> Self {
        Options {
            reuse_address: None,
            reuse_port: false,
            backlog: libc::SOMAXCONN,
            activate: true,
            nodelay: true,
            read_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            max_datagram_size: None,
            max_datagram_reply: 0,
            max_connections: None,
            timeout: None,
            grace: Duration::from_secs(5),
            drain_window: DEFAULT_DRAIN_WINDOW,
            service_interval: Duration::from_millis(500),
            read_buffer: 64 * 1024,
            write_buffer: DEFAULT_WRITE_BUFFER,
            proxy: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl Options {
    /// Socket options at bind time; `SO_REUSEADDR` defaults on for stream
    /// servers only.
    pub(crate) fn bind_options(&self, stream: bool) -> BindOptions {
        BindOptions {
            reuse_address: self.reuse_address.unwrap_or(stream),
            reuse_port: self.reuse_port,
            backlog: self.backlog,
            activate: self.activate,
        }
    }

    /// What each stream request needs to know.
    pub(crate) fn stream_policy(&self) -> StreamPolicy {
        StreamPolicy {
            timeouts: TimeoutPolicy { idle: self.idle_timeout, read: self.read_timeout, write: self.write_timeout },
            read_buffer: self.read_buffer,
            write_buffer: self.write_buffer,
            drain_window: self.drain_window,
            proxy_header_timeout: self.proxy.as_ref().map(|p| p.header_timeout),
            #[cfg(feature = "tls")]
            tls: self.tls.as_ref().map(|config| crate::tls::TlsPolicy {
                config: config.clone(),
                handshake_timeout: self.handshake_timeout,
            }),
        }
    }
}
