//! The agent's own key and certificate signing request: the private key
//! is made here, on the site PC, and never leaves it; only the CSR (the
//! public key, signed by the private one) goes to the headend.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};

use crate::{AGENT_CN_PREFIX, Result, validate_site_id};

/// A fresh key pair (ECDSA P-256) and a CSR for `agent:<site>`.
pub struct KeyAndCsr {
    /// PKCS#8 PEM; write it with [`crate::write_key`].
    pub key_pem: String,
    pub csr_der: Vec<u8>,
    /// The public key (SubjectPublicKeyInfo DER), to match the answer.
    pub public_key_der: Vec<u8>,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("key_pem", &"<redacted>")
            .field("csr_der", &self.csr_der.len())
            .finish()
    }
}

pub fn new_key_and_csr(site: &str) -> Result<KeyAndCsr> {
    validate_site_id(site)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{AGENT_CN_PREFIX}{site}"));
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_der: csr.der().to_vec(),
        public_key_der: key.subject_public_key_info(),
    })
}

/// The SubjectPublicKeyInfo (DER) of a certificate, to check that an
/// issued certificate carries the key we hold.
pub fn public_key_of(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// The SubjectPublicKeyInfo (DER) of a private key in PEM.
pub fn public_key_of_key_pem(key_pem: &str) -> Option<Vec<u8>> {
    KeyPair::from_pem(key_pem)
        .ok()
        .map(|k| k.subject_public_key_info())
}
