//! Revocation as the headend's verifier sees it: a set of revoked serial
//! numbers and of revoked sites, replaced as a whole when it changes
//! ([`Revocations`]), and a client-certificate verifier that refuses a
//! revoked certificate at the handshake ([`RevokingVerifier`]).
//!
//! A revoked **site** refuses every certificate of that site except those
//! issued after the revocation (the re-enrollment of a repaired gateway);
//! so certificates made offline by the `pki` CLI, which the headend never
//! saw, are cut off too.
//!
//! Open connections subscribe to the handle ([`Revocations::subscribe`])
//! and close themselves when their certificate becomes revoked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::sync::watch;

use crate::AgentCert;

/// Why a certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    #[error("certificate {serial} is revoked")]
    Certificate { serial: String },
    #[error("site {site} is revoked (certificate {serial} predates the revocation)")]
    Site { site: String, serial: String },
}

/// The revocations at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSet {
    /// Revoked serial numbers (lowercase hex).
    pub serials: HashSet<String>,
    /// Revoked sites, each with the serials issued for it after its
    /// revocation (still good).
    pub sites: HashMap<String, HashSet<String>>,
}

impl RevocationSet {
    /// Whether an agent certificate may connect.
    pub fn check(&self, cert: &AgentCert) -> Result<(), Revoked> {
        if self.serials.contains(&cert.serial) {
            return Err(Revoked::Certificate {
                serial: cert.serial.clone(),
            });
        }
        if let Some(after) = self.sites.get(&cert.site)
            && !after.contains(&cert.serial)
        {
            return Err(Revoked::Site {
                site: cert.site.clone(),
                serial: cert.serial.clone(),
            });
        }
        Ok(())
    }
}

/// The live revocation list: readers get the current set, connections a
/// subscription that wakes them on each change.
#[derive(Clone)]
pub struct Revocations(Arc<watch::Sender<Arc<RevocationSet>>>);

impl Default for Revocations {
    fn default() -> Self {
        Revocations::new(RevocationSet::default())
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.current();
        f.debug_struct("Revocations")
            .field("serials", &s.serials.len())
            .field("sites", &s.sites.len())
            .finish()
    }
}

impl Revocations {
    pub fn new(set: RevocationSet) -> Self {
        Revocations(Arc::new(watch::channel(Arc::new(set)).0))
    }

    pub fn current(&self) -> Arc<RevocationSet> {
        self.0.borrow().clone()
    }

    /// Replaces the set; subscribers are woken only if it changed.
    pub fn replace(&self, set: RevocationSet) {
        self.0.send_if_modified(|cur| {
            if **cur == set {
                false
            } else {
                *cur = Arc::new(set);
                true
            }
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<RevocationSet>> {
        self.0.subscribe()
    }

    /// Resolves when `cert` is revoked (at once if it already is).
    pub async fn revoked(&self, cert: &AgentCert) -> Revoked {
        let mut rx = self.subscribe();
        loop {
            if let Err(why) = rx.borrow_and_update().check(cert) {
                return why;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// A client verifier: the WebPKI chain check, then the revocation list.
/// A certificate that is not an agent identity passes here and is refused
/// by the listener, which reads the identity ([`crate::agent_cert`]).
#[derive(Debug)]
pub struct RevokingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Revocations,
}

impl RevokingVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, revocations: Revocations) -> Self {
        RevokingVerifier { inner, revocations }
    }
}

impl ClientCertVerifier for RevokingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Ok(cert) = crate::agent_cert(end_entity)
            && let Err(why) = self.revocations.current().check(&cert)
        {
            tracing::warn!(site = %cert.site, serial = %cert.serial, %why, "refused a revoked agent certificate");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(site: &str, serial: &str) -> AgentCert {
        AgentCert {
            site: site.into(),
            serial: serial.into(),
            not_before_ms: 0,
            not_after_ms: 1,
        }
    }

    #[test]
    fn a_revoked_serial_or_site_is_refused_and_a_certificate_issued_after_the_site_revocation_is_not()
     {
        let mut set = RevocationSet::default();
        assert_eq!(set.check(&cert("s1", "aa")), Ok(()));
        set.serials.insert("aa".into());
        assert!(matches!(
            set.check(&cert("s1", "aa")),
            Err(Revoked::Certificate { .. })
        ));
        assert_eq!(set.check(&cert("s1", "bb")), Ok(()), "another serial");
        set.sites
            .insert("s2".into(), HashSet::from(["new".to_string()]));
        assert!(matches!(
            set.check(&cert("s2", "old")),
            Err(Revoked::Site { .. })
        ));
        assert_eq!(set.check(&cert("s2", "new")), Ok(()), "re-enrolled");
        assert_eq!(set.check(&cert("s3", "old")), Ok(()), "another site");
    }

    #[tokio::test]
    async fn a_subscriber_learns_of_its_revocation_and_not_of_others() {
        let r = Revocations::default();
        let mine = cert("s1", "aa");
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.revoked(&mine).await }
        });
        let mut other = RevocationSet::default();
        other.serials.insert("zz".into());
        r.replace(other.clone());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "another certificate's revocation");
        other.serials.insert("aa".into());
        r.replace(other);
        let why = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(why.to_string(), "certificate aa is revoked");
    }
}
