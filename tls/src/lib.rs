//! Using certificates (issuing them is `tankwatch-pki`'s job): every rustls
//! config of the project, the agent identity read from a certificate, the
//! revocation list the headend's verifier consults ([`revocation`]), a
//! server config that follows its files while running ([`reload`]), key
//! files written owner-only, and the agent's own key and CSR ([`csr`]).
//!
//! Identity rule: an agent certificate's subject common name is
//! `agent:<site_id>` and it lists the clientAuth extended key usage;
//! [`site_from_cert`] is the only place that reads it.

pub mod configs;
pub mod csr;
pub mod reload;
pub mod revocation;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use configs::{
    TlsFiles, anonymous_client_config, client_config, pinned_client_config, server_config,
};
pub use revocation::{RevocationSet, Revocations, Revoked};

/// Prefix of the common name of every agent certificate.
pub const AGENT_CN_PREFIX: &str = "agent:";
/// ALPN protocol spoken over every TLS connection of the project (gRPC).
pub const ALPN_H2: &[u8] = b"h2";

/// Errors of using certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM {what} found in the file (expected a '-----BEGIN ...' block)")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("{path}: invalid PEM: {detail}")]
    BadPem { path: PathBuf, detail: String },
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    #[error("certificate verifier: {0}")]
    Verifier(String),
    #[error(
        "invalid site id {0:?}: use 1-63 characters of lowercase a-z, 0-9, '-' or '_', starting with a letter or digit"
    )]
    BadSiteId(String),
    #[error("certificate is not an agent certificate: {0}")]
    NotAgent(String),
    #[error("key generation: {0}")]
    Key(#[from] rcgen::Error),
    #[error(
        "{path} already exists; refusing to overwrite a key (delete it first or choose another directory)"
    )]
    Exists { path: PathBuf },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that a site id is usable in a certificate, a URL and a file name.
pub fn validate_site_id(site: &str) -> Result<()> {
    let ok = !site.is_empty()
        && site.len() <= 63
        && site
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && site.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::BadSiteId(site.to_string()))
    }
}

/// Writes `data` to `path` with `mode`, atomically: a temp file with the
/// final mode from its creation, synced, then renamed over `path`. A
/// reader never sees half a file and a key is never readable by others,
/// not even briefly.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    // an existing temp file keeps its old mode through `open`
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a private key (PEM), owner-only (0600).
pub fn write_key(path: &Path, key_pem: &str) -> Result<()> {
    write_file(path, key_pem.as_bytes(), 0o600)
}

/// Writes a certificate or chain (PEM), world-readable (0644).
pub fn write_cert(path: &Path, cert_pem: &str) -> Result<()> {
    write_file(path, cert_pem.as_bytes(), 0o644)
}

/// What the headend reads out of an agent certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCert {
    pub site: String,
    /// The serial number, lowercase hex without separators.
    pub serial: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

/// A serial number as the project writes it: lowercase hex, no separators.
pub fn serial_hex(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the agent identity out of a certificate (DER): exactly one
/// common name `agent:<site>`, the clientAuth extended key usage. This is
/// the only source of a site identity on the headend.
pub fn agent_cert(der: &[u8]) -> Result<AgentCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::NotAgent(format!("unparseable certificate: {e}")))?;
    // exactly one common name: with two, which one is the identity would
    // depend on the reader
    let cns: Vec<_> = cert.subject().iter_common_name().collect();
    let cn = match cns.as_slice() {
        [one] => one
            .as_str()
            .map_err(|_| Error::NotAgent("the common name is not a UTF-8 string".into()))?,
        [] => return Err(Error::NotAgent("no common name in subject".into())),
        _ => {
            return Err(Error::NotAgent(format!(
                "{} common names in subject; an agent certificate has exactly one",
                cns.len()
            )));
        }
    };
    // and it must be meant for a TLS client: an extended key usage
    // extension that lists clientAuth (a certificate without one is not
    // an agent identity, whatever its name says)
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        Ok(Some(_)) => {
            return Err(Error::NotAgent(
                "extended key usage does not include clientAuth".into(),
            ));
        }
        Ok(None) => {
            return Err(Error::NotAgent(
                "no extended key usage extension (clientAuth required)".into(),
            ));
        }
        Err(e) => return Err(Error::NotAgent(format!("extended key usage: {e}"))),
    }
    let site = cn.strip_prefix(AGENT_CN_PREFIX).ok_or_else(|| {
        Error::NotAgent(format!(
            "common name {cn:?} does not start with {AGENT_CN_PREFIX:?}"
        ))
    })?;
    validate_site_id(site)?;
    let v = cert.validity();
    Ok(AgentCert {
        site: site.to_string(),
        serial: serial_hex(cert.raw_serial()),
        not_before_ms: v.not_before.timestamp() * 1000,
        not_after_ms: v.not_after.timestamp() * 1000,
    })
}

/// The site of an agent certificate (DER); see [`agent_cert`].
pub fn site_from_cert(der: &[u8]) -> Result<String> {
    agent_cert(der).map(|c| c.site)
}

/// A certificate's SHA-256 fingerprint as installers compare it:
/// `sha256:` and 64 lowercase hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", serial_hex(&sha2::Sha256::digest(der)))
}

/// Parses a fingerprint as [`fingerprint`] prints it; colons and case are
/// forgiven (`openssl x509 -fingerprint -sha256` prints `AB:CD:…`).
pub fn parse_fingerprint(text: &str) -> std::result::Result<[u8; 32], String> {
    let t = text.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{text:?} is not a SHA-256 fingerprint: expected `sha256:` and 64 hex digits, as printed with the enrollment token"
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(Error::NoPem {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Parses every certificate of a PEM text (`what` names it in errors).
pub fn certs_from_pem(pem: &str, what: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_err(what, e))?;
    if certs.is_empty() {
        return Err(Error::NoPem {
            path: what.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Loads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::NoPem {
            path: path.into(),
            what: "private key",
        },
        other => pem_err(path, other),
    })
}

fn pem_err(path: &Path, e: rustls::pki_types::pem::Error) -> Error {
    match e {
        rustls::pki_types::pem::Error::Io(source) => Error::Io {
            path: path.into(),
            source,
        },
        other => Error::BadPem {
            path: path.into(),
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_written_owner_only_even_over_a_world_readable_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.key");
        // a leftover temp file from a crash, readable by all
        fs::write(dir.path().join("agent.key.tmp"), "old").unwrap();
        fs::set_permissions(
            dir.path().join("agent.key.tmp"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        write_key(&p, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("agent.key.tmp").exists());
    }

    #[test]
    fn fingerprints_parse_as_printed_and_as_openssl_prints_them() {
        let fp = fingerprint(b"abc");
        assert!(fp.starts_with("sha256:ba7816bf"), "{fp}");
        let raw = parse_fingerprint(&fp).unwrap();
        let openssl = raw
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&openssl).unwrap(), raw);
        for bad in ["", "sha256:abc", &format!("{fp}00"), "sha256:zz"] {
            let e = parse_fingerprint(bad).unwrap_err();
            assert!(e.contains("64 hex digits"), "{e}");
        }
    }

    #[test]
    fn bad_site_ids_are_refused_with_the_rule() {
        for bad in ["", "Site", "a b", "-x", "x/../y"] {
            let e = validate_site_id(bad).unwrap_err().to_string();
            assert!(e.contains("lowercase"), "{e}");
        }
    }

    #[test]
    fn a_missing_pem_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        fs::write(&p, "nothing here").unwrap();
        let e = load_certs(&p).unwrap_err().to_string();
        assert!(e.contains("empty.pem"), "{e}");
    }
}
