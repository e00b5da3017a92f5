//! Issuing certificates (using them is `tankwatch-tls`'s job): the root CA,
//! the intermediate CA that issues day to day, the headend's server
//! certificate and agent certificates, from a CSR (enrollment, renewal)
//! or with a key made here (the offline `pki` CLI, demo and tests).
//!
//! Hierarchy (docs/security.md): the **root** signs only intermediates;
//! its key can stay offline, sealed with a passphrase ([`sealed`]). The
//! **intermediate** ("issuer") signs the headend's server certificate and
//! agent certificates; it is the only CA key an internet-facing headend
//! holds. Peers trust the root, so a new intermediate or a new server
//! certificate needs no change on any site.

pub mod sealed;

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::pki_types::CertificateSigningRequestDer;
pub use tankwatch_tls::{AGENT_CN_PREFIX, validate_site_id};

/// Errors of the PKI crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tankwatch_tls::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate signing request is not usable: {0}")]
    BadCsr(String),
    #[error("{0}")]
    Sealed(String),
    #[error(
        "{path} already exists; refusing to overwrite a key (delete it first or choose another --dir)"
    )]
    Exists { path: PathBuf },
    #[error("randomness unavailable")]
    Random,
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A certificate (with its chain up to, not including, the root) and its
/// private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Issued {
    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key` (the key with mode 0600).
    /// Returns the two paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        tankwatch_tls::write_cert(&cert, &self.cert_pem)?;
        tankwatch_tls::write_key(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// How long a certificate is valid, and how far it is back-dated for
/// clock skew (a tenth of the lifetime, at most [`MAX_BACKDATE`]).
#[derive(Debug, Clone, Copy)]
pub struct Lifetime(pub std::time::Duration);

impl Lifetime {
    pub fn days(d: u32) -> Self {
        Lifetime(std::time::Duration::from_secs(u64::from(d) * 86_400))
    }
}

/// The most a certificate is back-dated: a site PC whose clock is up to two
/// days behind still accepts its new certificate (issue 28, item 4).
pub const MAX_BACKDATE: std::time::Duration = std::time::Duration::from_secs(48 * 3600);

fn validity(params: &mut CertificateParams, life: Lifetime) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let life = time::Duration::try_from(life.0).map_err(|e| Error::BadCsr(e.to_string()))?;
    let skew: time::Duration = (life / 10_i32).min(time::Duration::hours(48));
    params.not_before = now - skew;
    params.not_after = now + life;
    params.serial_number = Some(random_serial()?);
    Ok(())
}

/// 16 random bytes, the first bit clear (a positive DER integer): unique
/// even when a CSR reuses a key.
fn random_serial() -> Result<SerialNumber> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Random)?;
    b[0] &= 0x7f;
    b[0] |= 0x01; // never a leading zero byte
    Ok(SerialNumber::from_slice(&b))
}

fn ca_params(name: &str, path_len: u8, life: Lifetime) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tankwatch");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, life)?;
    Ok(params)
}

/// A certificate authority: the root or an intermediate.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// What a certificate it issues carries after its own PEM: this CA's
    /// certificate if it is an intermediate (never the root).
    chain_pem: String,
}

impl Ca {
    /// Creates a new self-signed root CA (it may sign one level of
    /// intermediates, or end-entity certificates directly).
    pub fn create(name: &str, days: u32) -> Result<(Ca, Issued)> {
        let key = KeyPair::generate()?;
        let params = ca_params(name, 1, Lifetime::days(days))?;
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let ca = Ca {
            issuer: Issuer::new(params, key),
            cert_pem: issued.cert_pem.clone(),
            chain_pem: String::new(),
        };
        Ok((ca, issued))
    }

    /// Creates an intermediate CA signed by this (root) CA: it issues
    /// end-entity certificates only (path length 0). The returned files
    /// hold its certificate and key.
    pub fn create_intermediate(&self, name: &str, days: u32) -> Result<(Ca, Issued)> {
        let key = KeyPair::generate()?;
        let params = ca_params(name, 0, Lifetime::days(days))?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let ca = Ca {
            issuer: Issuer::new(params, key),
            cert_pem: issued.cert_pem.clone(),
            chain_pem: issued.cert_pem.clone(),
        };
        Ok((ca, issued))
    }

    /// Loads a CA from its certificate and key PEM files; a key sealed
    /// with a passphrase needs `passphrase`. A CA whose certificate is not
    /// self-signed is an intermediate: what it issues carries its certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Ca> {
        Self::load_sealed(cert, key, None)
    }

    pub fn load_sealed(cert: &Path, key: &Path, passphrase: Option<&[u8]>) -> Result<Ca> {
        let cert_pem = fs::read_to_string(cert).map_err(io_err(cert))?;
        let key_pem = fs::read_to_string(key).map_err(io_err(key))?;
        let key = sealed::open_key(&key_pem, passphrase, key)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        let der = tankwatch_tls::certs_from_pem(&cert_pem, cert)?;
        let self_signed = der
            .first()
            .and_then(|d| x509_parser::parse_x509_certificate(d).ok())
            .map(|(_, c)| c.subject() == c.issuer())
            .unwrap_or(true);
        Ok(Ca {
            issuer,
            chain_pem: if self_signed {
                String::new()
            } else {
                cert_pem.clone()
            },
            cert_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn chain(&self, leaf_pem: String) -> String {
        leaf_pem + &self.chain_pem
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
        validity(&mut params, Lifetime::days(days))?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: self.chain(cert.pem()),
            key_pem: key.serialize_pem(),
        })
    }

    fn agent_params(site: &str, life: Lifetime) -> Result<CertificateParams> {
        validate_site_id(site)?;
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
        validity(&mut params, life)?;
        Ok(params)
    }

    /// Issues an agent (client) certificate for `site` with a key made
    /// here: subject CN `agent:<site>`, OU = site, client-auth only.
    pub fn issue_agent(&self, site: &str, days: u32) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = Self::agent_params(site, Lifetime::days(days))?.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: self.chain(cert.pem()),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's CSR for `site` (the site comes from the caller,
    /// who authenticated the request, never from the CSR): the CSR's
    /// signature is checked and only its public key is used. Returns the
    /// certificate chain, PEM, leaf first.
    pub fn sign_agent_csr(&self, csr_der: &[u8], site: &str, life: Lifetime) -> Result<String> {
        let csr = csr_public_key(csr_der)?;
        let cert = Self::agent_params(site, life)?.signed_by(&csr, &self.issuer)?;
        Ok(self.chain(cert.pem()))
    }

    /// Test hook: like [`Ca::sign_agent_csr`] but valid only from `ahead`
    /// in the future: a certificate every peer refuses today.
    #[doc(hidden)]
    pub fn sign_agent_csr_not_yet_valid_for_test(
        &self,
        csr_der: &[u8],
        site: &str,
        life: Lifetime,
        ahead: std::time::Duration,
    ) -> Result<String> {
        let csr = csr_public_key(csr_der)?;
        let mut params = Self::agent_params(site, life)?;
        let ahead = time::Duration::try_from(ahead).map_err(|e| Error::BadCsr(e.to_string()))?;
        params.not_before += ahead;
        params.not_after += ahead;
        Ok(self.chain(params.signed_by(&csr, &self.issuer)?.pem()))
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
        validity(&mut params, Lifetime::days(1))?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: self.chain(cert.pem()),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The public key of a CSR whose signature verifies.
fn csr_public_key(csr_der: &[u8]) -> Result<impl PublicKeyData> {
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
        csr_der.to_vec(),
    ))
    .map_err(|e| Error::BadCsr(e.to_string()))?;
    Ok(csr.public_key)
}

/// Standard file names inside a PKI directory.
pub mod layout {
    /// The root CA (`ca.pem` is what every peer trusts).
    pub const CA: &str = "ca";
    /// The intermediate CA that issues agent and server certificates.
    pub const ISSUER: &str = "issuer";
    pub const SERVER: &str = "headend";
    /// `agent-<site>`
    pub fn agent(site: &str) -> String {
        format!("agent-{site}")
    }
}

/// Creates a complete demo/test PKI in `dir`: the root CA, the
/// intermediate, the headend's server certificate and one agent
/// certificate per site (both issued by the intermediate). Returns the
/// intermediate.
pub fn bootstrap(dir: &Path, sites: &[&str], days: u32) -> Result<Ca> {
    let (root, root_files) = Ca::create("tankwatch root CA", days.max(2))?;
    root_files.write(dir, layout::CA)?;
    let (issuer, issuer_files) = root.create_intermediate("tankwatch issuing CA", days.max(1))?;
    issuer_files.write(dir, layout::ISSUER)?;
    issuer.issue_server(&[], days)?.write(dir, layout::SERVER)?;
    for s in sites {
        issuer.issue_agent(s, days)?.write(dir, &layout::agent(s))?;
    }
    Ok(issuer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::os::unix::fs::PermissionsExt;
    use tankwatch_tls::{TlsFiles, agent_cert, site_from_cert};

    fn leaf(pem: &str) -> CertificateDer<'static> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn agent_certificate_carries_the_site_and_client_auth_only() {
        let (ca, _) = Ca::create("t", 1).unwrap();
        let issued = ca.issue_agent("site-7", 30).unwrap();
        let der = leaf(&issued.cert_pem);
        assert_eq!(site_from_cert(&der).unwrap(), "site-7");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
        let v = cert.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) as f64 / 86400.0;
        // 30 days of life, back-dated by the most (two days) for a site PC's clock
        assert!((days - 32.0).abs() < 0.05, "{days}");
    }

    #[test]
    fn a_certificate_without_client_auth_eku_or_with_two_names_is_no_agent_identity() {
        let (ca, _) = Ca::create("t", 1).unwrap();
        let der = |i: Issued| leaf(&i.cert_pem);
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
        let der = leaf(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            san.contains("localhost") && san.contains("headend.example"),
            "{san}"
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(
            site_from_cert(&der).is_err(),
            "a server certificate is not an agent identity"
        );
    }

    #[test]
    fn a_csr_is_signed_for_the_site_the_caller_names_with_the_csr_key_and_a_fresh_serial() {
        let (root, _) = Ca::create("root", 2).unwrap();
        let (issuer, _) = root.create_intermediate("issuer", 1).unwrap();
        // the CSR claims another site: only its key counts
        let req = tankwatch_tls::csr::new_key_and_csr("other").unwrap();
        let life = Lifetime(std::time::Duration::from_secs(60));
        let chain = issuer.sign_agent_csr(&req.csr_der, "site-1", life).unwrap();
        let certs = tankwatch_tls::certs_from_pem(&chain, Path::new("chain")).unwrap();
        assert_eq!(certs.len(), 2, "leaf and intermediate");
        let c = agent_cert(&certs[0]).unwrap();
        assert_eq!(c.site, "site-1");
        assert_eq!(
            tankwatch_tls::csr::public_key_of(&certs[0]).unwrap(),
            req.public_key_der
        );
        // 60 s of life, back-dated by a tenth of it
        assert_eq!(c.not_after_ms - c.not_before_ms, 66_000);
        let again = issuer.sign_agent_csr(&req.csr_der, "site-1", life).unwrap();
        let again =
            agent_cert(&tankwatch_tls::certs_from_pem(&again, Path::new("c")).unwrap()[0]).unwrap();
        assert_ne!(c.serial, again.serial, "the same key twice: two serials");
        // a CSR whose signature does not verify is refused
        let mut bad = req.csr_der.clone();
        let n = bad.len();
        bad[n - 3] ^= 0xff;
        let e = issuer
            .sign_agent_csr(&bad, "site-1", life)
            .unwrap_err()
            .to_string();
        assert!(e.contains("signing request"), "{e}");
    }

    #[test]
    fn a_long_lived_certificate_is_back_dated_two_days_for_a_site_pc_whose_clock_is_behind() {
        let (root, _) = Ca::create("root", 2).unwrap();
        let (issuer, _) = root.create_intermediate("issuer", 1).unwrap();
        let req = tankwatch_tls::csr::new_key_and_csr("site-1").unwrap();
        let chain = issuer
            .sign_agent_csr(&req.csr_der, "site-1", Lifetime::days(30))
            .unwrap();
        let c =
            agent_cert(&tankwatch_tls::certs_from_pem(&chain, Path::new("c")).unwrap()[0]).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let back = now - c.not_before_ms;
        let two_days = MAX_BACKDATE.as_millis() as i64;
        assert!(
            (two_days - 5_000..=two_days + 5_000).contains(&back),
            "back-dated {back} ms"
        );
    }

    #[test]
    fn keys_are_written_owner_only_and_the_chain_through_the_intermediate_loads() {
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
        tankwatch_tls::server_config(&files, &Default::default()).unwrap();
        let files = TlsFiles {
            cert: dir.path().join("agent-s1.pem"),
            key,
            ca: dir.path().join("ca.pem"),
        };
        tankwatch_tls::client_config(&files).unwrap();
        assert_eq!(
            tankwatch_tls::load_certs(&files.cert).unwrap().len(),
            2,
            "an agent certificate carries the intermediate"
        );
        // the intermediate loaded back from disk still issues, with its chain
        let issuer = Ca::load(
            &dir.path().join("issuer.pem"),
            &dir.path().join("issuer.key"),
        )
        .unwrap();
        let i = issuer.issue_agent("s2", 1).unwrap();
        assert_eq!(i.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
        let root = Ca::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key")).unwrap();
        let r = root.issue_agent("s2", 1).unwrap();
        assert_eq!(r.cert_pem.matches("BEGIN CERTIFICATE").count(), 1);
    }
}
