//! Enrollment, renewal and revocation: what the headend does with its
//! issuing (intermediate) CA key and its revocation list. The REST layer
//! (tokens, revocations; audited by its gate), the enrollment listener
//! (`Enroll`) and agent sessions (renewals) call here. An enrollment and
//! a renewal are audited here, with the site's agent as the actor.
//!
//! A headend without an issuing key ([`Issuing::ca`] is None) still
//! serves agents whose certificates were made elsewhere, and revokes
//! them; it refuses tokens, enrollments and renewals with a message
//! saying why.

use std::sync::Arc;

use tankwatch_pki::{Ca, Lifetime};
use tankwatch_tls::Revocations;

use super::{Refused, Result, invalid, refused};
use crate::domain::enrollment::{IssuedVia, TokenFacts, check_token, token_minutes};
use crate::domain::{Actor, AuditOutcome, UnixMs, secret};
use crate::store::Db;
use crate::store::audit::NewEntry;
use crate::store::certs::{CertRow, TokenRow};
use crate::wallclock::now_ms;

/// Default lifetime of an agent certificate issued here: renewed at two
/// thirds, so ten days before it ends.
pub const DEFAULT_AGENT_CERT_DAYS: u32 = 30;

/// A fault injected into renewals, for the test that proves an agent
/// keeps its old certificate when the new one does not work.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalFault {
    /// The certificate is valid only from a day ahead: every peer refuses it.
    NotYetValid,
}

/// The headend's issuing side.
pub struct Issuing {
    /// The intermediate CA (None: this headend does not issue).
    pub ca: Option<Ca>,
    /// Lifetime of an agent certificate.
    pub lifetime: Lifetime,
    /// The root CA agents trust (PEM) and its fingerprint (the pin).
    pub root_pem: String,
    pub fingerprint: String,
    /// Where agents enroll (`HOST:PORT`), printed with each token.
    pub enroll_address: String,
    pub revocations: Revocations,
    #[doc(hidden)]
    pub renewal_fault: std::sync::Mutex<Option<RenewalFault>>,
}

impl std::fmt::Debug for Issuing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuing")
            .field("issues", &self.ca.is_some())
            .field("lifetime", &self.lifetime)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

const NO_ISSUER: &str = "this headend holds no issuing CA key (issuer.pem/issuer.key, made by `pki intermediate`), so it cannot enroll or renew agents";

/// A new token, shown once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NewToken {
    pub token_id: String,
    pub site_id: String,
    /// `twe_…`: shown once, stored hashed.
    pub token: String,
    #[schema(value_type = i64)]
    pub expires_ms: UnixMs,
    /// The root CA's SHA-256 fingerprint: the installer gives it to
    /// `edge-agent enroll --ca-fingerprint`.
    pub ca_fingerprint: String,
    /// The command to run on the site PC.
    pub command: String,
}

/// What an enrollment returns to the agent.
#[derive(Debug)]
pub struct Enrolled {
    pub chain_pem: String,
    pub not_after_ms: UnixMs,
    pub serial: String,
}

/// Why an enrollment or renewal is refused (the agent shows the message).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
}

impl Issuing {
    fn ca(&self) -> std::result::Result<&Ca, IssueError> {
        self.ca
            .as_ref()
            .ok_or_else(|| IssueError::Unavailable(NO_ISSUER.into()))
    }

    /// `POST /api/v1/sites/{site}/enrollment-tokens`.
    pub async fn new_token(
        &self,
        db: &Db,
        by: &Actor,
        site: &crate::domain::SiteId,
        minutes: Option<i64>,
    ) -> Result<NewToken> {
        if self.ca.is_none() {
            return Err(refused(Refused::Conflict, "site", NO_ISSUER));
        }
        let minutes = token_minutes(minutes).map_err(|e| invalid("expires_minutes", e))?;
        let (id, token, hash) = secret::new_enrollment_token();
        let now = now_ms();
        let row = TokenRow {
            token_id: id.clone(),
            site_id: site.to_string(),
            secret_hash: hash,
            created_by: by.clone(),
            created_ms: UnixMs::from_ms(now),
            expires_ms: UnixMs::from_ms(now).plus_ms(minutes * 60_000),
            used_ms: None,
            used_serial: None,
        };
        db.certs().add_token(&row).await?;
        let command = format!(
            "edge-agent enroll --config site.yaml --headend {} --token {token} --ca-fingerprint {}",
            self.enroll_address, self.fingerprint
        );
        Ok(NewToken {
            token_id: id,
            site_id: site.to_string(),
            token,
            expires_ms: row.expires_ms,
            ca_fingerprint: self.fingerprint.clone(),
            command,
        })
    }

    /// [`Self::new_token`] for a caller with a scope: a site outside it
    /// is not found (the REST route's gate checks its path the same way).
    pub async fn new_token_visible(
        &self,
        ctx: &super::Context,
        by: &Actor,
        site: &crate::domain::SiteId,
        minutes: Option<i64>,
    ) -> Result<NewToken> {
        ctx.visible(site, "site", || format!("no site {site:?}"))?;
        self.new_token(&ctx.db, by, site, minutes).await
    }

    fn sign(&self, csr: &[u8], site: &str) -> std::result::Result<(String, CertFacts), IssueError> {
        let ca = self.ca()?;
        let fault = *self.renewal_fault.lock().unwrap_or_else(|p| p.into_inner());
        let chain = match fault {
            Some(RenewalFault::NotYetValid) => ca.sign_agent_csr_not_yet_valid_for_test(
                csr,
                site,
                self.lifetime,
                std::time::Duration::from_secs(86_400),
            ),
            None => ca.sign_agent_csr(csr, site, self.lifetime),
        }
        .map_err(|e| IssueError::Refused(e.to_string()))?;
        let leaf = tankwatch_tls::certs_from_pem(&chain, std::path::Path::new("issued"))
            .ok()
            .and_then(|c| c.into_iter().next())
            .and_then(|d| tankwatch_tls::agent_cert(&d).ok())
            .ok_or_else(|| {
                IssueError::Unavailable("the issued certificate does not parse".into())
            })?;
        Ok((
            chain,
            CertFacts {
                serial: leaf.serial,
                not_after_ms: leaf.not_after_ms,
            },
        ))
    }

    /// `Enroll` on the enrollment listener: a one-time token buys one
    /// certificate for its site.
    pub async fn enroll(
        &self,
        db: &Db,
        token: &str,
        site: &str,
        csr: &[u8],
        client: &str,
    ) -> std::result::Result<Enrolled, IssueError> {
        tankwatch_tls::validate_site_id(site).map_err(|e| IssueError::Refused(e.to_string()))?;
        let now = now_ms();
        let row = match secret::parse_enrollment_token(token) {
            Some((id, sec)) => db
                .certs()
                .token(id)
                .await
                .map_err(unavailable)?
                .filter(|r| secret::same(&r.secret_hash, &secret::token_hash(sec))),
            None => None,
        };
        let facts = row.as_ref().map(|r| TokenFacts {
            site: &r.site_id,
            expires_ms: r.expires_ms.ms(),
            used_ms: r.used_ms.map(UnixMs::ms),
        });
        if let Err(why) = check_token(facts, site, now) {
            self.audit(
                db,
                site,
                "enrollment.enroll",
                AuditOutcome::Refused,
                &why.to_string(),
                client,
            )
            .await;
            return Err(IssueError::Refused(why.to_string()));
        }
        let Some(row) = row else {
            return Err(IssueError::Refused("unknown token".into()));
        };
        let (chain, facts) = self.sign(csr, site)?;
        let cert = CertRow {
            serial: facts.serial.clone(),
            site_id: site.to_string(),
            via: IssuedVia::Enrollment,
            issued_ms: UnixMs::from_ms(now),
            not_after_ms: UnixMs::from_ms(facts.not_after_ms),
            renewed_from: None,
            revoked_ms: None,
            revoked_by: None,
            reason: None,
        };
        let Some(superseded) = db
            .certs()
            .redeem(&row.token_id, UnixMs::from_ms(now), &cert)
            .await
            .map_err(unavailable)?
        else {
            let why = "the enrollment token was used by another request at the same moment: ask the operator for a new token";
            return Err(IssueError::Refused(why.into()));
        };
        // the site's earlier certificates are revoked: their sessions close
        self.changed(db).await;
        self.audit(
            db,
            site,
            "enrollment.enroll",
            AuditOutcome::Ok,
            &format!(
                "certificate {} until {}; {superseded} earlier certificate(s) of the site revoked (superseded)",
                facts.serial, facts.not_after_ms
            ),
            client,
        )
        .await;
        tracing::info!(%site, serial = %facts.serial, superseded, "agent enrolled; the site's earlier certificates are revoked");
        Ok(Enrolled {
            chain_pem: chain,
            not_after_ms: UnixMs::from_ms(facts.not_after_ms),
            serial: facts.serial,
        })
    }

    /// A renewal over a live session of `site` whose certificate is `from`.
    pub async fn renew(
        &self,
        db: &Db,
        site: &str,
        from: &str,
        csr: &[u8],
        client: &str,
    ) -> std::result::Result<Enrolled, IssueError> {
        let (chain, facts) = self.sign(csr, site)?;
        let now = now_ms();
        db.certs()
            .record(&CertRow {
                serial: facts.serial.clone(),
                site_id: site.to_string(),
                via: IssuedVia::Renewal,
                issued_ms: UnixMs::from_ms(now),
                not_after_ms: UnixMs::from_ms(facts.not_after_ms),
                renewed_from: Some(from.to_string()),
                revoked_ms: None,
                revoked_by: None,
                reason: None,
            })
            .await
            .map_err(unavailable)?;
        // a revocation of `from` that raced this renewal reaches the new one too
        if db.certs().is_revoked(from).await.map_err(unavailable)? {
            let _ = db
                .certs()
                .revoke_serial(
                    &facts.serial,
                    Some(site),
                    &Actor::headend(),
                    "renewal of a revoked certificate",
                    crate::wallclock::now(),
                )
                .await;
            self.changed(db).await;
            return Err(IssueError::Refused(format!(
                "certificate {from} is revoked"
            )));
        }
        // a site revoked earlier admits only what was issued after: this one
        self.changed(db).await;
        self.audit(
            db,
            site,
            "certificate.renew",
            AuditOutcome::Ok,
            &format!("certificate {} until {}", facts.serial, facts.not_after_ms),
            client,
        )
        .await;
        Ok(Enrolled {
            chain_pem: chain,
            not_after_ms: UnixMs::from_ms(facts.not_after_ms),
            serial: facts.serial,
        })
    }

    /// `POST /api/v1/certificates/{serial}/revoke`.
    pub async fn revoke_serial(
        &self,
        db: &Db,
        by: &Actor,
        serial: &str,
        reason: &str,
    ) -> Result<CertRevoked> {
        let serial = serial.to_ascii_lowercase();
        if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(invalid(
                "serial",
                "a serial number is 1 to 64 hex digits, without separators",
            ));
        }
        check_reason(reason)?;
        let site = db.certs().cert(&serial).await?.map(|c| c.site_id);
        let now = crate::wallclock::now();
        let fresh = db
            .certs()
            .revoke_serial(&serial, site.as_deref(), by, reason, now)
            .await?;
        // its renewals too: a stolen gateway that renewed before the
        // revocation holds a newer certificate of the same lineage
        let renewals = db.certs().renewals_of(&serial).await?;
        for r in &renewals {
            let why = format!("renewal of revoked {serial}: {reason}");
            db.certs()
                .revoke_serial(r, site.as_deref(), by, &why, now)
                .await?;
        }
        self.changed(db).await;
        Ok(CertRevoked {
            serial,
            site_id: site,
            already: !fresh,
            renewals,
        })
    }

    /// [`Self::revoke_serial`] for a caller with a scope: a scoped admin
    /// revokes only its sites' certificates (another site's, or one this
    /// headend never issued, is not found). With `of_site`, a
    /// certificate of another site is not found either.
    pub async fn revoke_visible(
        &self,
        ctx: &super::Context,
        by: &Actor,
        (serial, of_site): (&str, Option<&str>),
        reason: &str,
    ) -> Result<CertRevoked> {
        let missing = || format!("no certificate {serial} issued by this headend");
        match ctx.db.certs().cert(&serial.to_ascii_lowercase()).await? {
            Some(c) if of_site.is_some_and(|s| s != c.site_id) => {
                return Err(super::refused(
                    super::Refused::NotFound,
                    "serial",
                    missing(),
                ));
            }
            Some(c) => ctx.visible(&c.site_id, "serial", missing)?,
            None if !ctx.scope.is_all() => {
                return Err(super::refused(
                    super::Refused::NotFound,
                    "serial",
                    missing(),
                ));
            }
            None => {}
        }
        self.revoke_serial(&ctx.db, by, serial, reason).await
    }

    /// `POST /api/v1/sites/{site}/revoke`.
    pub async fn revoke_site(
        &self,
        db: &Db,
        by: &Actor,
        site: &crate::domain::SiteId,
        reason: &str,
    ) -> Result<i64> {
        check_reason(reason)?;
        let now = now_ms();
        db.certs()
            .revoke_site(site, by, reason, UnixMs::from_ms(now))
            .await?;
        self.changed(db).await;
        Ok(now)
    }

    /// After a change of the revocation list here: reloads it, and tells
    /// the other replicas (PostgreSQL `NOTIFY`; their 30 s reload is the
    /// safety net).
    pub async fn changed(&self, db: &Db) {
        self.refresh(db).await;
        if let Err(e) = db
            .notify(crate::store::notify::Channel::Revocations, "")
            .await
        {
            tracing::warn!(error = %e, "telling the other replicas of a revocation failed; they reload it within 30 s");
        }
    }

    /// Reloads the revocation list from SQL (after a change here, on
    /// another replica's note, and every [`crate::jobs::REVOCATION_POLL`]).
    /// A failure keeps the list in force and is logged.
    pub async fn refresh(&self, db: &Db) {
        match db.certs().revocations().await {
            Ok(set) => self.revocations.replace(set),
            Err(e) => {
                tracing::error!(error = %e, "reloading the revocation list failed; the previous list stays in force")
            }
        }
    }

    async fn audit(
        &self,
        db: &Db,
        site: &str,
        action: &str,
        outcome: AuditOutcome,
        summary: &str,
        client: &str,
    ) {
        let e = NewEntry {
            at_ms: crate::wallclock::now(),
            actor: Actor::agent(site).to_string(),
            role: None,
            action: action.into(),
            target: format!("site {site}"),
            outcome,
            status: 0,
            summary: summary.chars().take(500).collect(),
            client: client.into(),
            request_id: String::new(),
            site: Some(site.to_string()),
        };
        if let Err(err) = db.audit().append(&e).await {
            tracing::error!(error = %err, action, %site, "audit entry not written");
        }
    }
}

struct CertFacts {
    serial: String,
    not_after_ms: i64,
}

/// The answer to a certificate revocation.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CertRevoked {
    pub serial: String,
    /// The site, if this headend issued the certificate.
    pub site_id: Option<String>,
    /// It was revoked before (nothing changed).
    pub already: bool,
    /// The certificates renewed from it, revoked with it.
    pub renewals: Vec<String>,
}

fn check_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() || reason.len() > 500 {
        return Err(invalid(
            "reason",
            "say why, in 1 to 500 characters (it is kept with the revocation)",
        ));
    }
    Ok(())
}

fn unavailable(e: crate::Error) -> IssueError {
    tracing::error!(error = %e, "enrollment: database");
    IssueError::Unavailable("the headend's database is unavailable; try again shortly".into())
}

/// Shared handle.
pub type SharedIssuing = Arc<Issuing>;
