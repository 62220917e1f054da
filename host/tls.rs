//! TLS for the gRPC API (rustls, ring provider).
//!
//! - The server serves TLS when `service.server.tls` is set, from a PEM
//!   certificate and key or from a self-signed pair it generates once into
//!   `HOME/tls/`. It refuses to listen beyond loopback without TLS unless
//!   told `--insecure`: the bearer token would cross the network in clear.
//! - Clients verify the server: against a CA file, against a pinned
//!   SHA-256 of the server's certificate, or (neither given) against the
//!   Mozilla root set (webpki-roots). A pin needs no name match: it names
//!   the one certificate that is acceptable, which is what a self-signed
//!   server needs.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::{ClientTls, ServerTls};

/// Where a generated self-signed pair lives, relative to the home.
pub const SELF_SIGNED_DIR: &str = "tls";

/// The server's certificate chain and key, PEM.
pub struct ServerIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// SHA-256 of the leaf certificate (what clients pin).
    pub fingerprint: String,
    /// Where the certificate came from, for the log.
    pub cert_path: PathBuf,
}

/// `AB:CD:…` (upper-case hex pairs): how browsers and openssl show it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A fingerprint as given by a user: hex, any case, with or without colons.
fn normalize_fingerprint(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
        hex.to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
}

/// Loads (or, for `selfSigned`, creates once) the server's identity.
/// `names` are the extra host names and addresses a generated certificate
/// is valid for, besides localhost and the loopback addresses.
pub fn server_identity(home: &Path, tls: &ServerTls, names: &[String]) -> Result<ServerIdentity, String> {
    let (cert_path, key_path) = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => (home.join(c), home.join(k)),
        (None, None) if tls.self_signed => {
            let dir = home.join(SELF_SIGNED_DIR);
            let pair = (dir.join("server.crt"), dir.join("server.key"));
            if !pair.0.exists() || !pair.1.exists() {
                generate_self_signed(&dir, &pair.0, &pair.1, names)?;
            }
            pair
        }
        (None, None) => {
            return Err(
                "service.server.tls needs certFile and keyFile, or selfSigned: true to generate a certificate".into(),
            )
        }
        _ => return Err("service.server.tls needs both certFile and keyFile".into()),
    };
    let cert_pem = read(&cert_path, "certificate")?;
    let key_pem = read(&key_path, "key")?;
    let leaf = CertificateDer::pem_slice_iter(&cert_pem)
        .next()
        .ok_or_else(|| format!("{} holds no PEM certificate", cert_path.display()))?
        .map_err(|e| format!("{} is not a PEM certificate: {e}", cert_path.display()))?;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{} is not a PEM private key: {e}", key_path.display()))?;
    Ok(ServerIdentity {
        fingerprint: fingerprint(&leaf),
        cert_pem,
        key_pem,
        cert_path,
    })
}

fn generate_self_signed(dir: &Path, cert: &Path, key: &Path, extra: &[String]) -> Result<(), String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(h) = hostname() {
        names.push(h);
    }
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let pair = rcgen::generate_simple_self_signed(names).map_err(|e| format!("cannot generate a certificate: {e}"))?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |path: &Path, text: &str, mode: u32| -> io::Result<()> {
        use io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write(key, &pair.signing_key.serialize_pem(), 0o600)
        .and_then(|_| write(cert, &pair.cert.pem(), 0o644))
        .map_err(|e| format!("cannot write the generated certificate into {}: {e}", dir.display()))
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end])
        .ok()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the certificate whose SHA-256 is pinned (handshake
/// signatures are still verified, so the peer must hold its key).
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has SHA-256 {got}, not the pinned {}",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls client configuration `tls` asks for (ALPN h2).
pub fn client_config(tls: &ClientTls, config_dir: &Path) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let mut config = if let Some(pin) = &tls.cert_sha256 {
        let fingerprint = normalize_fingerprint(pin).ok_or_else(|| {
            format!(
                "service.client.tls.certSha256 {pin:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
            )
        })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate { fingerprint, provider }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_file {
            Some(ca) => {
                let path = config_dir.join(ca);
                let pem = read(&path, "CA file")?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{} holds a certificate rustls cannot use: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{} holds no PEM certificate", path.display()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Makes TCP + TLS connections for tonic's channel: the name verified is
/// `server_name` (else the address's host).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl TlsConnector {
    pub fn new(config: rustls::ClientConfig, server_name: Option<String>) -> TlsConnector {
        TlsConnector {
            config: Arc::new(config),
            server_name,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                    BoxError,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("the server address has no host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = this.server_name.clone().unwrap_or_else(|| host.clone());
            let name =
                ServerName::try_from(name.clone()).map_err(|_| format!("{name:?} is not a valid TLS server name"))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(this.config).connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_accepted_in_any_common_spelling() {
        let canon = fingerprint(b"x");
        assert_eq!(canon.len(), 32 * 3 - 1);
        let plain = canon.replace(':', "").to_lowercase();
        assert_eq!(normalize_fingerprint(&plain).as_deref(), Some(canon.as_str()));
        assert_eq!(normalize_fingerprint(&canon).as_deref(), Some(canon.as_str()));
        assert_eq!(normalize_fingerprint("abc"), None);
        assert_eq!(normalize_fingerprint(&"g".repeat(64)), None);
    }

    #[test]
    fn a_self_signed_identity_is_generated_once_with_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let tls = ServerTls {
            self_signed: true,
            ..ServerTls::default()
        };
        let first = server_identity(home.path(), &tls, &["backup.example".into()]).unwrap();
        let key = home.path().join("tls/server.key");
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let again = server_identity(home.path(), &tls, &[]).unwrap();
        assert_eq!(
            first.fingerprint, again.fingerprint,
            "the pair must be kept, not regenerated"
        );
        // The pin of that certificate configures a client.
        let client = ClientTls {
            cert_sha256: Some(first.fingerprint.clone()),
            ..ClientTls::default()
        };
        client_config(&client, home.path()).unwrap();
        let bad = ClientTls {
            cert_sha256: Some("nope".into()),
            ..ClientTls::default()
        };
        assert!(client_config(&bad, home.path()).unwrap_err().contains("certSha256"));
    }
}
