//! The server's own certificate (issue 29, item 6): made by the agent with
//! its own subject, kept across restarts, renewed before it runs out, and a
//! private key only the agent can read.
//!
//! Before, the OPC UA stack made a sample certificate: subject "Dublin, IE",
//! serial 42, one year, no renewal, the key readable by every user (0644).
//! Now, at every start:
//! - none yet: one is made (RSA 2048, [`CERT_DAYS`] days, subject
//!   `CN=tankwatch agent SITE, O=tankwatch, OU=SITE`, subject alternative
//!   names: the application URI, then the host name clients dial);
//! - it runs out within [`RENEW_BEFORE_DAYS`] days, or no longer names the
//!   application URI or the host name: a new one is made, the old pair is
//!   kept as `own/cert.der.old` and `private/private.pem.old`, and a
//!   warning says that SCADA clients must trust the new one;
//! - the key is made 0600 and `private/` 0700 (a looser mode is fixed and
//!   logged).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use opcua::crypto::{AlternateNames, CertificateStore, X509, X509Data};

/// How long a new server certificate is valid, days (5 years).
pub const CERT_DAYS: u32 = 5 * 365;
/// A certificate closer than this to its end is renewed at start, days.
pub const RENEW_BEFORE_DAYS: i64 = 60;

/// `own/cert.der` under the PKI folder.
pub const CERT: &str = "own/cert.der";
/// `private/private.pem` under the PKI folder.
pub const KEY: &str = "private/private.pem";

/// What the start found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    Made,
    /// Renewed, and why.
    Renewed(String),
}

/// The certificate in use: what the log and the SCADA guide show.
#[derive(Debug, Clone)]
pub struct Own {
    pub outcome: Outcome,
    /// SHA-1 thumbprint, hex (what clients show).
    pub thumbprint: String,
    /// RFC 3339.
    pub not_after: String,
}

/// Why the certificate must be made again, if it must.
pub fn renewal_reason(
    cert: &X509,
    app_uri: &str,
    host: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    match cert.not_after() {
        Err(_) => return Some("its validity cannot be read".into()),
        Ok(end) if end - now < chrono::Duration::days(RENEW_BEFORE_DAYS) => {
            return Some(format!(
                "it runs out on {} (within {RENEW_BEFORE_DAYS} days)",
                end.to_rfc3339()
            ));
        }
        Ok(_) => {}
    }
    if cert.is_application_uri_valid(app_uri).is_err() {
        return Some(format!("it does not name the application URI {app_uri}"));
    }
    if cert.is_hostname_valid(host).is_err() {
        return Some(format!(
            "it does not name the host {host} (opcua_server.host_name)"
        ));
    }
    None
}

fn data(app_uri: &str, host: &str, site: &str) -> X509Data {
    let mut names = AlternateNames::new();
    names.add_uri(app_uri);
    names.add_address(host);
    X509Data {
        key_size: 2048,
        common_name: format!("tankwatch agent {site}"),
        organization: "tankwatch".into(),
        organizational_unit: site.into(),
        country: String::new(),
        state: String::new(),
        alt_host_names: names,
        certificate_duration_days: CERT_DAYS,
    }
}

/// Makes, keeps or renews the certificate under `pki` (see the module).
pub fn ensure(pki: &Path, app_uri: &str, host: &str, site: &str) -> Result<Own, String> {
    let cert_path = pki.join(CERT);
    let key_path = pki.join(KEY);
    let outcome = if cert_path.exists() && key_path.exists() {
        let cert = CertificateStore::read_cert(&cert_path)
            .map_err(|e| format!("{}: {e}; delete it to make a new one", cert_path.display()))?;
        match renewal_reason(&cert, app_uri, host, chrono::Utc::now()) {
            None => Outcome::Kept,
            Some(why) => {
                for p in [&cert_path, &key_path] {
                    let mut old = p.as_os_str().to_owned();
                    old.push(".old");
                    std::fs::rename(p, &old)
                        .map_err(|e| format!("cannot keep {} as .old: {e}", p.display()))?;
                }
                make(&cert_path, &key_path, app_uri, host, site)?;
                Outcome::Renewed(why)
            }
        }
    } else {
        make(&cert_path, &key_path, app_uri, host, site)?;
        Outcome::Made
    };
    // a fresh key is made private silently; one found readable is logged
    secure_key(pki, &key_path, outcome == Outcome::Kept)?;
    let cert = CertificateStore::read_cert(&cert_path)?;
    Ok(Own {
        outcome,
        thumbprint: cert.thumbprint().as_hex_string(),
        not_after: cert.not_after().map(|t| t.to_rfc3339()).unwrap_or_default(),
    })
}

fn make(cert: &Path, key: &Path, app_uri: &str, host: &str, site: &str) -> Result<(), String> {
    CertificateStore::create_certificate_and_key(&data(app_uri, host, site), true, cert, key)
        .map(|_| ())
        .map_err(|e| format!("cannot make the server certificate: {e}"))
}

/// `private/` 0700, the key 0600; a looser mode found is fixed and logged.
fn secure_key(pki: &Path, key: &Path, log: bool) -> Result<(), String> {
    for (p, mode) in [(pki.join("private"), 0o700), (key.to_path_buf(), 0o600)] {
        let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let had = meta.permissions().mode() & 0o777;
        if had & !mode != 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot make {} private (mode {mode:o}): {e}", p.display()))?;
            if log {
                tracing::warn!(path = %p.display(), was = format!("{had:o}"), now = format!("{mode:o}"),
                "the OPC UA server's private key was readable by others: mode tightened");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "urn:tankwatch:agent:site-1:opcua-server";

    #[test]
    fn a_new_certificate_names_the_agent_not_a_sample_and_its_key_is_private() {
        let d = tempfile::tempdir().unwrap();
        for sub in ["own", "private"] {
            std::fs::create_dir_all(d.path().join(sub)).unwrap();
        }
        let own = ensure(d.path(), URI, "site-pc.example", "site-1").unwrap();
        assert_eq!(own.outcome, Outcome::Made);
        let cert = CertificateStore::read_cert(&d.path().join(CERT)).unwrap();
        let subject = cert.subject_name();
        assert!(subject.contains("tankwatch agent site-1"), "{subject}");
        assert!(
            !subject.contains("Dublin") && !subject.contains("IE"),
            "{subject}"
        );
        assert!(renewal_reason(&cert, URI, "site-pc.example", chrono::Utc::now()).is_none());
        let days = (cert.not_after().unwrap() - chrono::Utc::now()).num_days();
        assert!(
            (CERT_DAYS as i64 - 2..=CERT_DAYS as i64).contains(&days),
            "{days}"
        );
        let mode = |p: &str| {
            std::fs::metadata(d.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(KEY), 0o600);
        assert_eq!(mode("private"), 0o700);
        // kept at the next start; a key made readable is tightened again
        std::fs::set_permissions(d.path().join(KEY), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let again = ensure(d.path(), URI, "site-pc.example", "site-1").unwrap();
        assert_eq!(again.outcome, Outcome::Kept);
        assert_eq!(again.thumbprint, own.thumbprint);
        assert_eq!(mode(KEY), 0o600);
    }

    #[test]
    fn a_certificate_near_its_end_or_naming_another_host_is_renewed_and_the_old_one_kept() {
        let d = tempfile::tempdir().unwrap();
        for sub in ["own", "private"] {
            std::fs::create_dir_all(d.path().join(sub)).unwrap();
        }
        let first = ensure(d.path(), URI, "a.example", "site-1").unwrap();
        let cert = CertificateStore::read_cert(&d.path().join(CERT)).unwrap();
        let late = chrono::Utc::now() + chrono::Duration::days(CERT_DAYS as i64 - 30);
        assert!(
            renewal_reason(&cert, URI, "a.example", late)
                .unwrap()
                .contains("runs out")
        );
        assert!(
            renewal_reason(&cert, "urn:other", "a.example", chrono::Utc::now())
                .unwrap()
                .contains("application URI")
        );
        let second = ensure(d.path(), URI, "b.example", "site-1").unwrap();
        assert!(
            matches!(&second.outcome, Outcome::Renewed(why) if why.contains("b.example")),
            "{second:?}"
        );
        assert_ne!(second.thumbprint, first.thumbprint);
        assert!(d.path().join("own/cert.der.old").exists());
        assert!(d.path().join("private/private.pem.old").exists());
    }
}
