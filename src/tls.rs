//! TLS on stream servers (feature `tls`): [`Builder::tls`](crate::Builder::tls)
//! takes a [`rustls::ServerConfig`], and every connection of a TCP or Unix
//! stream server is then TLS. The handler gets the same
//! [`StreamRequest`](crate::StreamRequest) as over plaintext (`next_line`,
//! `wait_for_data`, `Read`, `BufRead`, `Write`), plus what the handshake
//! settled: [`StreamRequest::tls`](crate::StreamRequest::tls) gives the
//! [`TlsInfo`] (SNI, ALPN, protocol version, cipher suite, the client's
//! certificate chain under mutual TLS).
//!
//! * **The handshake never runs on the accept loop.** It is part of the
//!   request's preamble (after the PROXY header, when there is one), where
//!   the request runs: a thread of `Threading`, a pool worker, a forked
//!   child; under [`Event`](crate::Event) a connection waiting for its
//!   handshake's next bytes is parked with no thread. It is bounded by
//!   [`Builder::handshake_timeout`](crate::Builder::handshake_timeout)
//!   (10 s by default): a client that sends nothing, garbage, or a byte a
//!   second costs only its own connection. Completed handshakes are counted
//!   in `Stats::tls_handshakes`; failed or timed-out ones in
//!   `Stats::tls_handshake_failures` and logged at most once a second.
//! * **Every rule of the plaintext server holds:** writes are encrypted as
//!   they leave the write buffer, so they still go out whole and before any
//!   wait; timeouts, the drain at shutdown, the lingering close; and a
//!   graceful close sends `close_notify` first.
//! * What hands out the raw socket ([`socket`](crate::StreamRequest::socket),
//!   [`try_clone`](crate::StreamRequest::try_clone),
//!   [`fill_buf_and_stream`](crate::StreamRequest::fill_buf_and_stream))
//!   fails with `ErrorKind::Unsupported` under TLS: bytes written there
//!   would bypass the encryption.
//!
//! # The crypto provider
//!
//! rustls is built with `ring` (its default features, which pick
//! `aws-lc-rs`, are off). Both build on a plain Linux machine: `ring`
//! needs a C compiler; `aws-lc-sys` (non-FIPS) no longer needs CMake or
//! NASM on Linux either, but compiles a much larger C library with a C/C++
//! compiler (a fresh build of rustls took 2 min 33 s with it against 19 s
//! with `ring`, on a loaded 2-core machine), and its FIPS build needs CMake
//! and Go. `ring` is the smaller, faster build for a library dependency;
//! what it lacks is the post-quantum key exchange (`X25519MLKEM768`) that
//! rustls offers only with `aws-lc-rs`, for which rustls 0.23.48 deprecated
//! `ring`'s `default_provider`. A [`ServerConfig`]
//! built with another provider (aws-lc-rs, in the user's own dependencies)
//! works as well: the server only drives the connection.
//!
//! # Mutual TLS
//!
//! ```no_run
//! use socketserver::tls::{self, TlsInfo};
//! use socketserver::{Event, StreamRequest, TcpServer};
//! use std::io::Write;
//! use std::path::Path;
//!
//! // Clients must present a certificate signed by clients-ca.pem.
//! let config = tls::server_config_from_pem(Path::new("cert.pem"), Path::new("key.pem"), Some(Path::new("clients-ca.pem")))?;
//! let server = TcpServer::builder()
//!     .strategy(Event::new())
//!     .tls(config)
//!     // After the handshake (and after `verify_request`): refuse a client
//!     // whose certificate chain is longer than expected.
//!     .verify_tls(|_peer, tls: &TlsInfo| tls.peer_certificates().len() <= 2)
//!     .bind("127.0.0.1:8443", |req: &mut StreamRequest| {
//!         let certs = req.tls().map_or(0, |t| t.peer_certificates().len());
//!         while req.wait_for_data()? {
//!             let Some(line) = req.next_line()? else { break };
//!             writeln!(req, "{line} (from a client with {certs} certificate(s))")?;
//!         }
//!         Ok(())
//!     })?;
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use rustls;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ProtocolVersion, ServerConfig, ServerConnection, SupportedCipherSuite};

/// What a connection's TLS handshake settled, for the handler
/// ([`StreamRequest::tls`](crate::StreamRequest::tls)) and for
/// [`Builder::verify_tls`](crate::Builder::verify_tls).
#[derive(Clone)]
pub struct TlsInfo {
    server_name: Option<String>,
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
    suite: Option<SupportedCipherSuite>,
    certs: Vec<CertificateDer<'static>>,
}

impl TlsInfo {
    pub(crate) fn of(conn: &ServerConnection) -> TlsInfo {
        TlsInfo {
            server_name: conn.server_name().map(str::to_owned),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
            suite: conn.negotiated_cipher_suite(),
            certs: conn.peer_certificates().map(<[_]>::to_vec).unwrap_or_default(),
        }
    }

    /// The name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The protocol agreed by ALPN, if the client offered one the
    /// [`ServerConfig`]'s `alpn_protocols` has.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The TLS version agreed (1.2 or 1.3).
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// The cipher suite agreed.
    pub fn cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.suite
    }

    /// The client's certificate chain, its own first, under mutual TLS
    /// (verified by the config's client verifier); empty otherwise.
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

impl fmt::Debug for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsInfo")
            .field("server_name", &self.server_name)
            .field("alpn", &self.alpn.as_deref().map(String::from_utf8_lossy))
            .field("version", &self.version)
            .field("suite", &self.suite.map(|s| s.suite()))
            .field("peer_certificates", &self.certs.len())
            .finish()
    }
}

/// `ring`'s provider with X25519 preferred: rustls 0.23.48 lists P-384
/// first, so a client that sends key shares for both got P-384, and a
/// handshake on it cost 818 µs of server CPU against 164 µs on X25519
/// (80 % of it in P-384; `benches/tls.sh`). A client that sends one share
/// still gets the group it chose.
fn fast_kx_first(mut provider: rustls::crypto::CryptoProvider) -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::kx_group;
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    provider
}

/// A [`ServerConfig`] from PEM files: `cert_chain` (the server's
/// certificate first, then its intermediates) and `key` (PKCS#8, PKCS#1 or
/// SEC1). With `client_ca`, mutual TLS: every client must present a
/// certificate chain to one of the certificates in that file (verified by
/// rustls's `WebPkiClientVerifier`), or its handshake fails. TLS 1.2 and
/// 1.3 only, with rustls's `ring` provider.
///
/// # Errors
/// `NotFound` (or another I/O error) naming the file that cannot be read;
/// `InvalidData` naming the file that holds no certificate or key, or a bad
/// one, or when the key does not match the certificate.
pub fn server_config_from_pem(cert_chain: &Path, key: &Path, client_ca: Option<&Path>) -> io::Result<ServerConfig> {
    let certs = read_certs(cert_chain)?;
    let key_path = key;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error(key_path, "private key", e))?;
    // Deprecated in rustls 0.23.48 for lacking post-quantum key exchange,
    // which only aws-lc-rs has; kept deliberately (see the module docs).
    #[allow(deprecated)]
    let provider = Arc::new(fast_kx_first(rustls::crypto::ring::default_provider()));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| io::Error::other(format!("TLS configuration: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{}: bad CA certificate: {e}", ca.display()))
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(certs, key).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} with {}: cannot use this certificate and key: {e}", cert_chain.display(), key_path.display()),
        )
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, "certificate", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file", path.display()),
        ));
    }
    Ok(certs)
}

/// A PEM error as an I/O error naming the file: its own kind when reading
/// failed, `InvalidData` otherwise.
fn pem_error(path: &Path, what: &str, e: rustls::pki_types::pem::Error) -> io::Error {
    match e {
        rustls::pki_types::pem::Error::Io(io) => {
            io::Error::new(io.kind(), format!("{}: cannot read the {what}: {io}", path.display()))
        }
        rustls::pki_types::pem::Error::NoItemsFound => {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: no PEM {what} in the file", path.display()))
        }
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{}: bad PEM {what}: {other}", path.display())),
    }
}

/// A stream server's TLS settings, as each connection takes them.
#[derive(Clone, Debug)]
pub(crate) struct TlsPolicy {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) handshake_timeout: std::time::Duration,
}
