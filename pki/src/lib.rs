//! Public-key infrastructure of the project: a private CA, the headend's
//! server certificate, agent certificates whose subject carries the site id,
//! and **every rustls config of the project** (built here and nowhere else).
//!
//! Identity rule: an agent certificate's subject common name is
//! `agent:<site_id>`; [`site_from_cert`] is the only place that reads it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Prefix of the common name of every agent certificate.
pub const AGENT_CN_PREFIX: &str = "agent:";
/// ALPN protocol spoken over every TLS connection of the project (gRPC).
pub const ALPN_H2: &[u8] = b"h2";

/// Errors of the PKI crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: no PEM {what} found in the file (expected a '-----BEGIN ...' block)")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("{path}: invalid PEM: {detail}")]
    BadPem { path: PathBuf, detail: String },
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error(
        "invalid site id {0:?}: use 1-63 characters of lowercase a-z, 0-9, '-' or '_', starting with a letter or digit"
    )]
    BadSiteId(String),
    #[error("certificate is not an agent certificate: {0}")]
    NotAgent(String),
    #[error(
        "{path} already exists; refusing to overwrite a key (delete it first or choose another --dir)"
    )]
    Exists { path: PathBuf },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
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

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key` (the key with mode 0600).
    /// Returns the two paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, self.cert_pem.as_bytes(), 0o644)?;
        write_file(&key, self.key_pem.as_bytes(), 0o600)?;
        Ok((cert, key))
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Write to a temp file with the final mode, then rename: a reader never
    // sees a half-written key, and a key is never world-readable, not even briefly.
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // Back-date by an hour to tolerate clock skew between site PCs and the cloud.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    // serial_number stays None: rcgen derives it from the hash of the
    // certificate's own (freshly generated) public key, so it is unique.
}

/// The project's certificate authority (its certificate and signing key).
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Ca {
    /// Creates a new self-signed CA, valid for `days`.
    pub fn create(name: &str, days: u32) -> Result<(Ca, Issued)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "tankwatch");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let ca = Ca {
            issuer: Issuer::new(params, key),
            cert_pem: issued.cert_pem.clone(),
        };
        Ok((ca, issued))
    }

    /// Loads a CA from its certificate and key PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Ca> {
        let cert_pem = fs::read_to_string(cert).map_err(io_err(cert))?;
        let key_pem = fs::read_to_string(key).map_err(io_err(key))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Ca { issuer, cert_pem })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues the headend's server certificate for the given DNS names and IP
    /// addresses (always including `localhost` and `127.0.0.1`).
    pub fn issue_server(&self, names: &[String], days: u32) -> Result<Issued> {
        let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for n in names {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = all
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<std::result::Result<_, rcgen::Error>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "tankwatch");
        dn.push(DnType::CommonName, "tankwatch headend");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues an agent (client) certificate for `site`: subject CN `agent:<site>`,
    /// OU = site, client-auth only.
    pub fn issue_agent(&self, site: &str, days: u32) -> Result<Issued> {
        validate_site_id(site)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "tankwatch");
        dn.push(DnType::OrganizationalUnitName, site);
        dn.push(DnType::CommonName, format!("{AGENT_CN_PREFIX}{site}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Test hook: an agent-like certificate signed by this CA that breaks
    /// the identity rule: a second common name (`agent:<other>`) and/or no
    /// extended key usage extension at all.
    #[doc(hidden)]
    pub fn issue_odd_agent_for_test(
        &self,
        site: &str,
        second_cn: Option<&str>,
        eku: bool,
    ) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{AGENT_CN_PREFIX}{site}"));
        if let Some(other) = second_cn {
            // the CN attribute's OID (2.5.4.3), as a second entry
            dn.push(
                DnType::CustomDnType(vec![2, 5, 4, 3]),
                format!("{AGENT_CN_PREFIX}{other}"),
            );
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if eku {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        validity(&mut params, 1);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Reads the site id out of an agent certificate (DER). This is the only
/// source of a site identity on the headend.
pub fn site_from_cert(der: &[u8]) -> Result<String> {
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
    Ok(site.to_string())
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// File locations of one TLS identity plus the CA that peers must chain to.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The headend's gRPC server config: TLS 1.2+, ALPN h2, and a **required**
/// client certificate chaining to the CA (with the client-auth EKU).
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&files.ca)? {
        roots.add(c)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// The agent's client config: trusts only the project CA and presents the
/// agent certificate.
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&files.ca)? {
        roots.add(c)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// A client config that presents **no** certificate (tests of refusal, probes).
pub fn anonymous_client_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// Standard file names inside a PKI directory.
pub mod layout {
    pub const CA: &str = "ca";
    pub const SERVER: &str = "headend";
    /// `agent-<site>`
    pub fn agent(site: &str) -> String {
        format!("agent-{site}")
    }
}

/// Creates a complete demo/test PKI in `dir`: CA, headend server certificate,
/// and one agent certificate per site. Returns the CA.
pub fn bootstrap(dir: &Path, sites: &[&str], days: u32) -> Result<Ca> {
    let (ca, ca_files) = Ca::create("tankwatch CA", days)?;
    ca_files.write(dir, layout::CA)?;
    ca.issue_server(&[], days)?.write(dir, layout::SERVER)?;
    for s in sites {
        ca.issue_agent(s, days)?.write(dir, &layout::agent(s))?;
    }
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn agent_certificate_carries_the_site_and_client_auth_only() {
        let (ca, _) = Ca::create("t", 1).unwrap();
        let issued = ca.issue_agent("site-7", 30).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(site_from_cert(&der).unwrap(), "site-7");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86400;
        assert_eq!(days, 30);
    }

    #[test]
    fn a_certificate_without_client_auth_eku_or_with_two_names_is_no_agent_identity() {
        let (ca, _) = Ca::create("t", 1).unwrap();
        let der = |i: Issued| CertificateDer::from_pem_slice(i.cert_pem.as_bytes()).unwrap();
        let ok = der(ca.issue_odd_agent_for_test("s1", None, true).unwrap());
        assert_eq!(site_from_cert(&ok).unwrap(), "s1", "the control case");
        let no_eku = der(ca.issue_odd_agent_for_test("s1", None, false).unwrap());
        let e = site_from_cert(&no_eku).unwrap_err().to_string();
        assert!(e.contains("clientAuth"), "{e}");
        let two = der(ca.issue_odd_agent_for_test("s1", Some("s2"), true).unwrap());
        let (_, c) = x509_parser::parse_x509_certificate(&two).unwrap();
        assert_eq!(c.subject().iter_common_name().count(), 2, "really two CNs");
        let e = site_from_cert(&two).unwrap_err().to_string();
        assert!(e.contains("2 common names"), "{e}");
    }

    #[test]
    fn server_certificate_has_loopback_sans_and_server_auth() {
        let (ca, _) = Ca::create("t", 1).unwrap();
        let issued = ca
            .issue_server(&["headend.example".into(), "10.1.2.3".into()], 10)
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        for want in ["localhost", "headend.example", "127.0.0.1", "10.1.2.3"] {
            let want_present = san.contains(want)
                || (want.contains('.') && want.parse::<std::net::IpAddr>().is_ok());
            assert!(want_present, "{want} missing from {san}");
        }
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(
            site_from_cert(&der).is_err(),
            "a server certificate is not an agent identity"
        );
    }

    #[test]
    fn keys_are_written_owner_only_and_configs_load() {
        let dir = tempfile::tempdir().unwrap();
        bootstrap(dir.path(), &["s1"], 5).unwrap();
        let key = dir.path().join("agent-s1.key");
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let files = TlsFiles {
            cert: dir.path().join("headend.pem"),
            key: dir.path().join("headend.key"),
            ca: dir.path().join("ca.pem"),
        };
        server_config(&files).unwrap();
        let files = TlsFiles {
            cert: dir.path().join("agent-s1.pem"),
            key,
            ca: dir.path().join("ca.pem"),
        };
        client_config(&files).unwrap();
        // a CA loaded back from disk can still issue
        let ca = Ca::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key")).unwrap();
        ca.issue_agent("s2", 1).unwrap();
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
