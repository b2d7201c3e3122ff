//! The command's TLS client side (`client --tls`, `bench --tls`) and
//! `bench --gen-cert`: rustls 0.23 with the ring provider, as the library's
//! `tls` feature.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The ring provider (deprecated in rustls 0.23.48 for lacking
/// post-quantum key exchange; the library and the tokio-rustls contender
/// use it too, so both sides agree on X25519).
#[allow(deprecated)]
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// How a TLS client checks the server, and what it shows of itself.
#[derive(Clone, Debug, Default)]
pub struct ClientTls<'a> {
    /// Trust the certificates in this PEM file (else the Mozilla roots).
    pub ca: Option<&'a Path>,
    /// Accept any server certificate (the handshake signatures are still checked).
    pub insecure: bool,
    /// A client certificate chain and its key (mutual TLS).
    pub identity: Option<(&'a Path, &'a Path)>,
    /// Offer only this cipher suite (its rustls name, e.g. TLS13_AES_128_GCM_SHA256).
    pub cipher: Option<&'a str>,
    /// Offer only this key exchange group (X25519, secp256r1, secp384r1).
    pub group: Option<&'a str>,
    /// No session resumption: every connection a full handshake.
    pub no_resumption: bool,
}

fn bad_file(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{}: cannot read {what}: {e}", path.display()))
}

/// The certificates of a PEM file (at least one).
pub fn certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| bad_file(path, "certificates", e))?;
    if certs.is_empty() {
        return Err(bad_file(path, "certificates", "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| bad_file(path, "a private key", e))
}

/// The cipher suite of the ring provider called `name`.
pub fn cipher_suite(name: &str) -> Result<rustls::SupportedCipherSuite, String> {
    let all = provider().cipher_suites;
    all.iter().copied().find(|s| format!("{:?}", s.suite()).eq_ignore_ascii_case(name)).ok_or_else(|| {
        let names: Vec<String> = all.iter().map(|s| format!("{:?}", s.suite())).collect();
        format!("`{name}` is not a cipher suite of this build ({})", names.join(", "))
    })
}

/// The key exchange group of the ring provider called `name`.
pub fn kx_group(name: &str) -> Result<&'static dyn rustls::crypto::SupportedKxGroup, String> {
    let all = provider().kx_groups;
    all.iter().copied().find(|g| format!("{:?}", g.name()).eq_ignore_ascii_case(name)).ok_or_else(|| {
        let names: Vec<String> = all.iter().map(|g| format!("{:?}", g.name())).collect();
        format!("`{name}` is not a key exchange group of this build ({})", names.join(", "))
    })
}

pub fn client_config(opts: &ClientTls) -> io::Result<Arc<ClientConfig>> {
    let mut provider = provider();
    if let Some(name) = opts.cipher {
        let suite = cipher_suite(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        provider.cipher_suites = vec![suite];
    }
    if let Some(name) = opts.group {
        let group = kx_group(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        provider.kx_groups = vec![group];
    }
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let builder = if opts.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match opts.ca {
            Some(path) => {
                for cert in certs(path)? {
                    roots.add(cert).map_err(|e| bad_file(path, "a CA certificate", e))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match opts.identity {
        Some((cert, key_path)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_path)?)
            .map_err(|e| bad_file(key_path, "a key matching the client certificate", e))?,
        None => builder.with_no_client_auth(),
    };
    if opts.no_resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// The name a client sends (SNI) and checks the certificate against:
/// `--server-name`, else the host part of the address (an IP address is
/// checked as one, and sends no SNI).
pub fn server_name(name: Option<&str>, addr: &str) -> io::Result<ServerName<'static>> {
    let host = match name {
        Some(n) => n.to_string(),
        None => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            host.trim_start_matches('[').trim_end_matches(']').to_string()
        }
    };
    ServerName::try_from(host.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("`{host}` is not a server name: {e}")))
}

/// `--insecure-skip-verify`: any certificate, any name.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `bench --gen-cert DIR`: a self-signed certificate (ECDSA P-256) for
/// localhost, 127.0.0.1 and ::1, as DIR/cert.pem and DIR/key.pem.
pub fn gen_cert(dir: &Path) -> io::Result<()> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let cert = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
    Ok(())
}

/// A TLS error as an I/O error, with what was being done.
pub fn io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_are_found_by_name() {
        assert!(cipher_suite("TLS13_AES_128_GCM_SHA256").is_ok());
        assert!(cipher_suite("tls13_aes_256_gcm_sha384").is_ok());
        let e = cipher_suite("AES").unwrap_err();
        assert!(e.contains("TLS13_AES_128_GCM_SHA256"), "{e}");
        assert!(kx_group("x25519").is_ok());
        assert!(kx_group("secp256r1").is_ok());
        assert!(kx_group("x448").unwrap_err().contains("X25519"));
    }

    #[test]
    fn the_server_name_is_the_host_unless_given() {
        assert_eq!(server_name(None, "localhost:443").unwrap(), ServerName::try_from("localhost").unwrap());
        assert!(matches!(server_name(None, "[::1]:443").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name(None, "127.0.0.1:1").unwrap(), ServerName::IpAddress(_)));
        assert_eq!(
            server_name(Some("example.com"), "127.0.0.1:1").unwrap(),
            ServerName::try_from("example.com").unwrap()
        );
    }
}
