//! Alarm mail in SQL: a site's recipients, and the mail outbox (the
//! outbound log): each mail to each recipient with its state, attempts and
//! last error. A mail is queued in the same transaction that records the
//! episode was mailed, so a crash neither loses nor repeats one.

use crate::Error;
use crate::domain::alarm::{AlarmType, Severity};
use crate::domain::notify::{MailKind, MailState, Recipient};
use crate::domain::{SiteId, UnixMs};
use crate::store::Db;

/// An open episode the notifier judges.
#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct Candidate {
    pub episode_id: String,
    pub site_id: SiteId,
    pub site_name: Option<String>,
    pub asset_id: String,
    pub field: String,
    pub alarm_type: AlarmType,
    pub severity: Severity,
    pub raised_ms: UnixMs,
    pub cleared_ms: Option<UnixMs>,
    pub source: String,
    pub stored_ms: UnixMs,
    pub last_mail_ms: Option<UnixMs>,
    pub acked_ms: Option<UnixMs>,
    pub shelved_until_ms: Option<UnixMs>,
}

#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct MailRow {
    pub id: i64,
    pub episode_id: String,
    pub site_id: SiteId,
    pub recipient: String,
    pub kind: MailKind,
    pub subject: String,
    pub body: String,
    pub state: MailState,
    pub attempts: i64,
    pub next_ms: UnixMs,
    pub last_error: String,
    pub created_ms: UnixMs,
    pub done_ms: Option<UnixMs>,
}

const COLUMNS: &str = "id, episode_id, site_id, recipient, kind, subject, body, state, attempts, next_ms, last_error, created_ms, done_ms";

/// One mail to queue: to whom, and whether it goes now or waits for the
/// recipient's digest.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub recipient: String,
    pub state: MailState,
}

#[derive(Clone, Copy)]
pub struct Mail<'a>(&'a Db);

impl Db {
    pub fn mail(&self) -> Mail<'_> {
        Mail(self)
    }
}

impl Mail<'_> {
    /// A site's recipients, by address.
    pub async fn recipients(&self, site: &SiteId) -> Result<Vec<Recipient>, Error> {
        let rows: Vec<(String, Severity)> = sqlx::query_as(
            "SELECT address, min_severity FROM alarm_recipients WHERE site_id = $1 ORDER BY address",
        )
        .bind(site)
        .fetch_all(self.0.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(address, min_severity)| Recipient {
                address,
                min_severity,
            })
            .collect())
    }

    /// Replaces a site's recipients.
    pub async fn set_recipients(&self, site: &SiteId, list: &[Recipient]) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query("DELETE FROM alarm_recipients WHERE site_id = $1")
            .bind(site)
            .execute(&mut *tx)
            .await?;
        for r in list {
            sqlx::query(
                "INSERT INTO alarm_recipients (site_id, address, min_severity) VALUES ($1, $2, $3)",
            )
            .bind(site)
            .bind(&r.address)
            .bind(r.min_severity)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The episodes a rule can mail about: open critical and major ones,
    /// and critical ones stored since `recent` that cleared before anyone
    /// mailed or acknowledged them.
    pub async fn candidates(&self, recent: i64) -> Result<Vec<Candidate>, Error> {
        Ok(sqlx::query_as(
            "SELECT a.episode_id, a.site_id, s.name AS site_name, a.asset_id, a.field, a.alarm_type, a.severity,
                    a.raised_ms, a.cleared_ms, a.source, a.stored_ms, a.last_mail_ms, a.acked_ms, a.shelved_until_ms
             FROM alarm_episodes a LEFT JOIN sites s ON s.site_id = a.site_id
             WHERE (a.cleared_ms IS NULL AND a.severity IN ($1, $2))
                OR (a.severity = $1 AND a.last_mail_ms IS NULL AND a.acked_ms IS NULL AND a.stored_ms >= $3)
             ORDER BY a.stored_ms",
        )
        .bind(Severity::Critical)
        .bind(Severity::Major)
        .bind(recent)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Mails (pending or sent, digests too) to a recipient since `since`.
    pub async fn sent_since(&self, recipient: &str, since: i64) -> Result<usize, Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND created_ms >= $2 AND state IN ($3, $4)",
        )
        .bind(recipient)
        .bind(since)
        .bind(MailState::Pending)
        .bind(MailState::Sent)
        .fetch_one(self.0.pool())
        .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Queues one mail per recipient about an episode and records when it
    /// was mailed, in one transaction; false (nothing queued) when another
    /// round mailed it meanwhile.
    pub async fn queue(
        &self,
        c: &Candidate,
        kind: MailKind,
        (subject, body): (&str, &str),
        to: &[Outgoing],
        now: i64,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE alarm_episodes SET last_mail_ms = $1
             WHERE episode_id = $2 AND (last_mail_ms = $3 OR (last_mail_ms IS NULL AND $3 IS NULL))",
        )
        .bind(now)
        .bind(&c.episode_id)
        .bind(c.last_mail_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        for o in to {
            sqlx::query(
                "INSERT INTO mail_outbox (episode_id, site_id, recipient, kind, subject, body, state, attempts, next_ms, last_error, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, '', $8)",
            )
            .bind(&c.episode_id)
            .bind(&c.site_id)
            .bind(&o.recipient)
            .bind(kind)
            .bind(subject)
            .bind(body)
            .bind(o.state)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Pending mails due at `now`, oldest first.
    pub async fn due(&self, now: i64, limit: i64) -> Result<Vec<MailRow>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM mail_outbox WHERE state = $1 AND next_ms <= $2 ORDER BY id LIMIT $3"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(MailState::Pending)
            .bind(now)
            .bind(limit)
            .fetch_all(self.0.pool())
            .await?)
    }

    /// Records an attempt: sent, retried at `next_ms`, or dead.
    pub async fn attempt(
        &self,
        id: i64,
        state: MailState,
        attempts: i64,
        next_ms: UnixMs,
        error: &str,
        now: i64,
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let done = (state != MailState::Pending).then_some(now);
        sqlx::query(
            "UPDATE mail_outbox SET state = $2, attempts = $3, next_ms = $4, last_error = $5, done_ms = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(attempts)
        .bind(next_ms)
        .bind(error)
        .bind(done)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Held mails, oldest first (the digests gather them by recipient).
    pub async fn held(&self) -> Result<Vec<MailRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM mail_outbox WHERE state = $1 ORDER BY id");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(MailState::Held)
            .fetch_all(self.0.pool())
            .await?)
    }

    /// Queues one digest for a recipient and marks the mails it carries.
    pub async fn digest(
        &self,
        recipient: &str,
        held: &[MailRow],
        (subject, body): (&str, &str),
        now: i64,
    ) -> Result<(), Error> {
        let Some(first) = held.first() else {
            return Ok(());
        };
        let (_w, mut tx) = self.0.begin_write().await?;
        for m in held {
            sqlx::query(
                "UPDATE mail_outbox SET state = $1, done_ms = $2 WHERE id = $3 AND state = $4",
            )
            .bind(MailState::Digested)
            .bind(now)
            .bind(m.id)
            .bind(MailState::Held)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO mail_outbox (episode_id, site_id, recipient, kind, subject, body, state, attempts, next_ms, last_error, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, '', $8)",
        )
        .bind(&first.episode_id)
        .bind(&first.site_id)
        .bind(recipient)
        .bind(MailKind::Digest)
        .bind(subject)
        .bind(body)
        .bind(MailState::Pending)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The outbound log, newest first, before `before_id`, at `sites`.
    pub async fn log(
        &self,
        state: Option<MailState>,
        sites: Option<&[String]>,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<MailRow>, Error> {
        let mut sql =
            format!("SELECT {COLUMNS} FROM mail_outbox WHERE id < $1 AND ($3 = '' OR state = $3)");
        sql.push_str(&super::site_in("site_id", sites, 4));
        sql.push_str(" ORDER BY id DESC LIMIT $2");
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(before_id)
            .bind(limit)
            .bind(state.map(|s| s.as_str()).unwrap_or(""));
        for site in sites.unwrap_or_default() {
            q = q.bind(site.clone());
        }
        Ok(q.fetch_all(self.0.pool()).await?)
    }
}
