//! Every rustls config of the project, built here and nowhere else: TLS
//! 1.2+, the ring provider, ALPN h2.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::revocation::{Revocations, RevokingVerifier};
use crate::{ALPN_H2, Error, Result, load_certs, load_key};

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// File locations of one TLS identity (its certificate chain and key)
/// plus the CA that peers must chain to.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// The headend's gRPC server config: a **required** client certificate
/// chaining to the CA, not revoked ([`Revocations`], consulted at each
/// handshake).
pub fn server_config(files: &TlsFiles, revocations: &Revocations) -> Result<rustls::ServerConfig> {
    let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&files.ca)?),
        provider(),
    )
    .build()
    .map_err(|e| Error::Verifier(e.to_string()))?;
    let verifier = Arc::new(RevokingVerifier::new(webpki, revocations.clone()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// A server config without client certificates (the enrollment listener,
/// where the agent has none yet): presents `chain` (leaf first).
pub fn server_config_no_client_auth(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// The agent's client config: trusts only the project CA and presents the
/// agent certificate (and the chain in its file).
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// A client config that presents **no** certificate (tests of refusal, probes).
pub fn anonymous_client_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// The enrolling agent's config: no client certificate, and the server is
/// trusted only if its chain contains the CA certificate whose SHA-256 is
/// `pin` and verifies to it (the name checked as usual). The installer
/// got the pin with the token, out of band: a man in the middle with any
/// other CA, public or not, is refused.
pub fn pinned_client_config(pin: [u8; 32]) -> Result<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
}

impl PinnedCa {
    fn fail(msg: String) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(PinError(msg)),
        )))
    }
}

/// Why a pinned server is not trusted (shown to the installer).
#[derive(Debug)]
pub struct PinError(pub String);

impl std::fmt::Display for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PinError {}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let Some(anchor) = intermediates
            .iter()
            .find(|c| <[u8; 32]>::from(sha2::Sha256::digest(c.as_ref())) == self.pin)
        else {
            let seen: Vec<String> = intermediates
                .iter()
                .map(|c| crate::fingerprint(c.as_ref()))
                .collect();
            return Err(Self::fail(format!(
                "the headend's certificate chain holds no CA with the fingerprint given (--ca-fingerprint); it offers {seen:?}. Check the fingerprint printed with the token, and that nothing intercepts the connection"
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| Self::fail(e.to_string()))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    /// A TLS handshake over an in-memory pipe: Ok, or the client's error.
    async fn handshake(
        server: rustls::ServerConfig,
        client: rustls::ClientConfig,
    ) -> std::result::Result<(), String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let srv = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let name = ServerName::try_from("localhost").unwrap();
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            connector.connect(name, a),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string());
        let _ = srv.await;
        r
    }

    #[tokio::test]
    async fn an_enrolling_agent_trusts_a_headend_only_through_the_pinned_ca() {
        let dir = tempfile::tempdir().unwrap();
        tankwatch_pki::bootstrap(dir.path(), &[], 1).unwrap();
        let mut chain = crate::load_certs(&dir.path().join("headend.pem")).unwrap();
        let root = crate::load_certs(&dir.path().join("ca.pem")).unwrap();
        chain.extend(root.clone());
        let key = PrivateKeyDer::from_pem_file(dir.path().join("headend.key")).unwrap();
        let server = || server_config_no_client_auth(chain.clone(), key.clone_key()).unwrap();
        let pin = crate::parse_fingerprint(&crate::fingerprint(&root[0])).unwrap();
        handshake(server(), pinned_client_config(pin).unwrap())
            .await
            .expect("the pinned CA");
        let e = handshake(server(), pinned_client_config([7; 32]).unwrap())
            .await
            .unwrap_err();
        assert!(e.contains("fingerprint"), "{e}");
    }
}
