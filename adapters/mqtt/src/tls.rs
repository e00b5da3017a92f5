//! TLS for the broker link: the CA roots and an optional client
//! certificate, as a rustls client config.

use std::sync::Arc;

use crate::config;

/// Loads the TLS client config: the CA roots, and a client certificate.
pub(crate) fn tls_config(t: &config::MqttTls) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut roots = rustls::RootCertStore::empty();
    let ca = read(&t.ca)?;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        let c = c.map_err(|e| format!("tls.ca {}: {e}", t.ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("tls.ca {}: {e}", t.ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "tls.ca {}: no certificate in the file",
            t.ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&read(c)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.cert {}: {e}", c.display()))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read(k)?)
                .map_err(|e| format!("tls.key {}: {e}", k.display()))?;
            b.with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls.cert/key: {e}"))
        }
        _ => Ok(b.with_no_client_auth()),
    }
}
