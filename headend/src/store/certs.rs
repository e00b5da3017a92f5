//! Enrollment tokens, issued agent certificates, revocations and what
//! each agent reports of its certificate, in SQL: `db.certs()`.

use std::collections::{HashMap, HashSet};

use tankwatch_tls::RevocationSet;

use crate::Error;
use crate::domain::SiteId;
use crate::domain::enrollment::IssuedVia;
use crate::domain::{Actor, UnixMs};
use crate::store::Db;

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct TokenRow {
    pub token_id: String,
    pub site_id: String,
    pub secret_hash: String,
    pub created_by: Actor,
    pub created_ms: UnixMs,
    pub expires_ms: UnixMs,
    pub used_ms: Option<UnixMs>,
    pub used_serial: Option<String>,
}

/// An issued certificate with its revocation, if any.
#[derive(sqlx::FromRow, Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CertRow {
    pub serial: String,
    pub site_id: String,
    /// enrollment or renewal
    #[schema(value_type = String)]
    pub via: IssuedVia,
    #[schema(value_type = i64)]
    pub issued_ms: UnixMs,
    #[schema(value_type = i64)]
    pub not_after_ms: UnixMs,
    /// The certificate this one renewed.
    pub renewed_from: Option<String>,
    #[schema(value_type = Option<i64>)]
    pub revoked_ms: Option<UnixMs>,
    pub revoked_by: Option<String>,
    pub reason: Option<String>,
}

/// What an agent last reported of its certificate.
#[derive(sqlx::FromRow, Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct CertStatusRow {
    pub site_id: String,
    pub serial: String,
    #[schema(value_type = i64)]
    pub not_after_ms: UnixMs,
    #[schema(value_type = i64)]
    pub renew_at_ms: UnixMs,
    /// Renewal attempts that failed since the last success.
    pub failures: i64,
    pub last_error: String,
    #[schema(value_type = i64)]
    pub reported_ms: UnixMs,
}

/// A site's revocation.
#[derive(sqlx::FromRow, Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SiteRevocationRow {
    pub site_id: String,
    #[schema(value_type = i64)]
    pub revoked_ms: UnixMs,
    pub revoked_by: String,
    pub reason: String,
}

#[derive(Clone, Copy)]
pub struct Certs<'a>(&'a Db);

impl Db {
    pub fn certs(&self) -> Certs<'_> {
        Certs(self)
    }
}

impl Certs<'_> {
    pub async fn add_token(&self, t: &TokenRow) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "INSERT INTO enrollment_tokens (token_id, site_id, secret_hash, created_by, created_ms, expires_ms, used_ms, used_serial)
             VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)",
        )
        .bind(&t.token_id)
        .bind(&t.site_id)
        .bind(&t.secret_hash)
        .bind(&t.created_by)
        .bind(t.created_ms)
        .bind(t.expires_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT token_id, site_id, secret_hash, created_by, created_ms, expires_ms, used_ms, used_serial
             FROM enrollment_tokens WHERE token_id = $1",
        )
        .bind(id)
        .fetch_optional(self.0.pool())
        .await?)
    }

    /// Uses a token and records the certificate it bought, in one
    /// transaction: false (and nothing written) if the token was used or
    /// expired in between (two enrollments racing with one token: one wins).
    /// Redeems the token with `cert`, in one transaction that also revokes
    /// every earlier unexpired certificate of the site (a new enrollment
    /// supersedes them: one identity per site). `None` if the token was
    /// taken meanwhile; else how many certificates were superseded.
    pub async fn redeem(
        &self,
        token_id: &str,
        now_ms: UnixMs,
        cert: &CertRow,
    ) -> Result<Option<u64>, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE enrollment_tokens SET used_ms = $2, used_serial = $3
             WHERE token_id = $1 AND used_ms IS NULL AND expires_ms > $2",
        )
        .bind(token_id)
        .bind(now_ms)
        .bind(&cert.serial)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(None);
        }
        insert_cert(&mut tx, cert).await?;
        let superseded = sqlx::query(
            "INSERT INTO revoked_certificates (serial, site_id, revoked_ms, revoked_by, reason)
             SELECT serial, site_id, $2, $3, 'superseded by a new enrollment' FROM agent_certificates
             WHERE site_id = $1 AND serial <> $4 AND not_after_ms > $2
             ON CONFLICT (serial) DO NOTHING",
        )
        .bind(&cert.site_id)
        .bind(now_ms)
        .bind(crate::domain::Actor::Headend {
            task: Some("enrollment".into()),
        }
        .to_string())
        .bind(&cert.serial)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Some(superseded))
    }

    /// Records a certificate issued by renewal.
    pub async fn record(&self, cert: &CertRow) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        insert_cert(&mut tx, cert).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a serial (known to this headend or not). False if it was
    /// revoked already.
    pub async fn revoke_serial(
        &self,
        serial: &str,
        site: Option<&str>,
        by: &Actor,
        reason: &str,
        now_ms: UnixMs,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        // two revocations of one serial at once: one row, no error
        let n = sqlx::query(
            "INSERT INTO revoked_certificates (serial, site_id, revoked_ms, revoked_by, reason) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (serial) DO NOTHING",
        )
        .bind(serial)
        .bind(site)
        .bind(now_ms)
        .bind(by.to_string())
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// The certificates issued by renewing `serial`, and theirs, and so on.
    pub async fn renewals_of(&self, serial: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let mut frontier = vec![serial.to_string()];
        while let Some(s) = frontier.pop() {
            let next: Vec<(String,)> =
                sqlx::query_as("SELECT serial FROM agent_certificates WHERE renewed_from = $1")
                    .bind(&s)
                    .fetch_all(self.0.pool())
                    .await?;
            for (n,) in next {
                if !out.contains(&n) && n != serial {
                    out.push(n.clone());
                    frontier.push(n);
                }
            }
        }
        Ok(out)
    }

    pub async fn is_revoked(&self, serial: &str) -> Result<bool, Error> {
        let r: Option<(String,)> =
            sqlx::query_as("SELECT serial FROM revoked_certificates WHERE serial = $1")
                .bind(serial)
                .fetch_optional(self.0.pool())
                .await?;
        Ok(r.is_some())
    }

    /// Revokes a whole site as of `now_ms` (again: moves the cut to now).
    pub async fn revoke_site(
        &self,
        site: &SiteId,
        by: &Actor,
        reason: &str,
        now_ms: UnixMs,
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "INSERT INTO revoked_sites (site_id, revoked_ms, revoked_by, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (site_id) DO UPDATE SET revoked_ms = excluded.revoked_ms,
               revoked_by = excluded.revoked_by, reason = excluded.reason",
        )
        .bind(site)
        .bind(now_ms)
        .bind(by.to_string())
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The whole revocation list, as the verifier consults it.
    pub async fn revocations(&self) -> Result<RevocationSet, Error> {
        let serials: Vec<(String,)> = sqlx::query_as("SELECT serial FROM revoked_certificates")
            .fetch_all(self.0.pool())
            .await?;
        let sites: Vec<(String,)> = sqlx::query_as("SELECT site_id FROM revoked_sites")
            .fetch_all(self.0.pool())
            .await?;
        let after: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.site_id, c.serial FROM agent_certificates c
             JOIN revoked_sites r ON r.site_id = c.site_id AND c.issued_ms > r.revoked_ms",
        )
        .fetch_all(self.0.pool())
        .await?;
        let mut by_site: HashMap<String, HashSet<String>> =
            sites.into_iter().map(|(s,)| (s, HashSet::new())).collect();
        for (site, serial) in after {
            by_site.entry(site).or_default().insert(serial);
        }
        Ok(RevocationSet {
            serials: serials.into_iter().map(|(s,)| s).collect(),
            sites: by_site,
        })
    }

    /// A site's certificates, newest first (issued before `before_ms`,
    /// the page cursor), with their revocations.
    pub async fn of_site(
        &self,
        site: &SiteId,
        before_ms: UnixMs,
        limit: i64,
    ) -> Result<Vec<CertRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT c.serial, c.site_id, c.via, c.issued_ms, c.not_after_ms, c.renewed_from, r.revoked_ms, r.revoked_by, r.reason
             FROM agent_certificates c LEFT JOIN revoked_certificates r ON r.serial = c.serial
             WHERE c.site_id = $1 AND c.issued_ms < $2 ORDER BY c.issued_ms DESC, c.serial LIMIT $3",
        )
        .bind(site)
        .bind(before_ms)
        .bind(limit)
        .fetch_all(self.0.pool())
        .await?)
    }

    pub async fn site_revocation(&self, site: &SiteId) -> Result<Option<SiteRevocationRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT site_id, revoked_ms, revoked_by, reason FROM revoked_sites WHERE site_id = $1",
        )
        .bind(site)
        .fetch_optional(self.0.pool())
        .await?)
    }

    pub async fn cert(&self, serial: &str) -> Result<Option<CertRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT c.serial, c.site_id, c.via, c.issued_ms, c.not_after_ms, c.renewed_from, r.revoked_ms, r.revoked_by, r.reason
             FROM agent_certificates c LEFT JOIN revoked_certificates r ON r.serial = c.serial
             WHERE c.serial = $1",
        )
        .bind(serial)
        .fetch_optional(self.0.pool())
        .await?)
    }

    pub async fn set_status(&self, s: &CertStatusRow) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "INSERT INTO agent_cert_status (site_id, serial, not_after_ms, renew_at_ms, failures, last_error, reported_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (site_id) DO UPDATE SET serial = excluded.serial, not_after_ms = excluded.not_after_ms,
               renew_at_ms = excluded.renew_at_ms, failures = excluded.failures,
               last_error = excluded.last_error, reported_ms = excluded.reported_ms",
        )
        .bind(&s.site_id)
        .bind(&s.serial)
        .bind(s.not_after_ms)
        .bind(s.renew_at_ms)
        .bind(s.failures)
        .bind(&s.last_error)
        .bind(s.reported_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The certificates agents last reported that expire before
    /// `before_ms`, at `sites` (`None`: all), soonest first: at most
    /// `limit`.
    pub async fn expiring(
        &self,
        before_ms: UnixMs,
        sites: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<CertStatusRow>, Error> {
        let sql = format!(
            "SELECT site_id, serial, not_after_ms, renew_at_ms, failures, last_error, reported_ms
             FROM agent_cert_status WHERE not_after_ms < $1 {} ORDER BY not_after_ms LIMIT $2",
            super::site_in("site_id", sites, 3)
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(before_ms)
            .bind(limit);
        for s in sites.unwrap_or_default() {
            q = q.bind(s);
        }
        Ok(q.fetch_all(self.0.pool()).await?)
    }

    pub async fn status(&self, site: &SiteId) -> Result<Option<CertStatusRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT site_id, serial, not_after_ms, renew_at_ms, failures, last_error, reported_ms
             FROM agent_cert_status WHERE site_id = $1",
        )
        .bind(site)
        .fetch_optional(self.0.pool())
        .await?)
    }
}

async fn insert_cert(tx: &mut sqlx::Transaction<'_, sqlx::Any>, c: &CertRow) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO agent_certificates (serial, site_id, via, issued_ms, not_after_ms, renewed_from) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&c.serial)
    .bind(&c.site_id)
    .bind(c.via)
    .bind(c.issued_ms)
    .bind(c.not_after_ms)
    .bind(&c.renewed_from)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
