//! A CA key sealed with a passphrase: standard encrypted PKCS#8
//! (`-----BEGIN ENCRYPTED PRIVATE KEY-----`, PBES2 with PBKDF2-SHA256 and
//! AES-256-CBC), so `openssl pkey -in ca.key` opens it too. For the root
//! key, which is used only to make an intermediate and can otherwise stay
//! offline.

use std::path::Path;

use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo, SecretDocument};
use rcgen::KeyPair;

use crate::{Error, Result};

/// PBKDF2 rounds (OWASP's figure for PBKDF2-HMAC-SHA256).
pub const PBKDF2_ROUNDS: u32 = 600_000;
const SEALED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// Seals a PKCS#8 PEM key with `passphrase`.
pub fn seal_key(key_pem: &str, passphrase: &[u8]) -> Result<String> {
    use ring::rand::SecureRandom;
    if passphrase.len() < 12 {
        return Err(Error::Sealed(
            "the passphrase is shorter than 12 characters; a sealed CA key is only as strong as its passphrase".into(),
        ));
    }
    let (_, doc) = SecretDocument::from_pem(key_pem)
        .map_err(|e| Error::Sealed(format!("the key is not PKCS#8 PEM: {e}")))?;
    let info = PrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| Error::Sealed(format!("the key is not PKCS#8: {e}")))?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    let rng = ring::rand::SystemRandom::new();
    rng.fill(&mut salt).map_err(|_| Error::Random)?;
    rng.fill(&mut iv).map_err(|_| Error::Random)?;
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ROUNDS, &salt, &iv)
            .map_err(|e| Error::Sealed(e.to_string()))?;
    let sealed = info
        .encrypt_with_params(params, passphrase)
        .map_err(|e| Error::Sealed(e.to_string()))?;
    Ok(sealed
        .to_pem(SEALED_LABEL, LineEnding::LF)
        .map_err(|e| Error::Sealed(e.to_string()))?
        .to_string())
}

/// Whether a key file's PEM is sealed.
pub fn is_sealed(key_pem: &str) -> bool {
    key_pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
}

/// Opens a key PEM, sealed or not (`path` names it in errors).
pub fn open_key(key_pem: &str, passphrase: Option<&[u8]>, path: &Path) -> Result<KeyPair> {
    if !is_sealed(key_pem) {
        return Ok(KeyPair::from_pem(key_pem)?);
    }
    let Some(pass) = passphrase else {
        return Err(Error::Sealed(format!(
            "{} is sealed with a passphrase: give --passphrase-file (a file holding the passphrase)",
            path.display()
        )));
    };
    let (label, doc) = SecretDocument::from_pem(key_pem)
        .map_err(|e| Error::Sealed(format!("{}: invalid PEM: {e}", path.display())))?;
    if label != SEALED_LABEL {
        return Err(Error::Sealed(format!(
            "{}: unexpected PEM label {label:?}",
            path.display()
        )));
    }
    let info = EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| Error::Sealed(format!("{}: {e}", path.display())))?;
    let plain = info.decrypt(pass).map_err(|_| {
        Error::Sealed(format!(
            "{}: the passphrase does not open this key",
            path.display()
        ))
    })?;
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec());
    KeyPair::try_from(&der).map_err(Error::Rcgen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_its_passphrase_only() {
        let key = KeyPair::generate().unwrap();
        let sealed = seal_key(&key.serialize_pem(), b"correct horse battery").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains(&key.serialize_pem()));
        let p = Path::new("ca.key");
        let opened = open_key(&sealed, Some(b"correct horse battery"), p).unwrap();
        assert_eq!(opened.public_key_raw(), key.public_key_raw());
        let e = open_key(&sealed, Some(b"wrong passphrase!"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not open"), "{e}");
        let e = open_key(&sealed, None, p).unwrap_err().to_string();
        assert!(e.contains("--passphrase-file"), "{e}");
        let e = seal_key(&key.serialize_pem(), b"short")
            .unwrap_err()
            .to_string();
        assert!(e.contains("12 characters"), "{e}");
    }
}
