//! The escalations aggregate in SQL: escalations (at most one open per
//! site, tank and cause: `open_key`), their timeline, and the webhook
//! outbox written in the same transaction as the change it announces.

use sqlx::AnyConnection;

use crate::Error;
use crate::domain::escalation::{Cause, EscEventKind, EscState};
use crate::store::Db;

#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct EscalationRow {
    pub escalation_id: String,
    pub site_id: crate::domain::SiteId,
    pub tank_id: String,
    pub cause: Cause,
    pub state: EscState,
    pub subject: String,
    pub detail: String,
    /// JSON: what the decision stood on (inventory, rate, runout, loads).
    pub context: crate::store::json::Document,
    pub assignee: Option<String>,
    pub opened_ms: crate::domain::UnixMs,
    pub updated_ms: crate::domain::UnixMs,
    pub resolved_ms: Option<crate::domain::UnixMs>,
}

const COLUMNS: &str = "escalation_id, site_id, tank_id, cause, state, subject, detail, context, assignee, opened_ms, updated_ms, resolved_ms";

#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct EscEventRow {
    pub id: i64,
    pub at_ms: crate::domain::UnixMs,
    pub kind: EscEventKind,
    pub state: EscState,
    pub actor: String,
    pub note: String,
    pub context: crate::store::json::Document,
}

/// The key that makes one open escalation per (site, tank, cause).
pub fn open_key(site: &str, tank: &str, cause: Cause) -> String {
    format!("{site}\u{1f}{tank}\u{1f}{cause}")
}

/// What the job found for one (site, tank, cause).
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub site_id: String,
    pub tank_id: String,
    pub cause: Cause,
    pub subject: String,
    pub detail: String,
    pub context: String,
}

/// What the job did with a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Opened,
    /// Already open; its detail changed.
    Updated,
    /// Already open with the same detail.
    Same,
}

/// An open escalation's key fields (the job's view).
#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct OpenRow {
    pub escalation_id: String,
    pub site_id: crate::domain::SiteId,
    pub tank_id: String,
    pub cause: Cause,
}

/// Filters of the escalation list.
#[derive(Clone, Debug, Default)]
pub struct EscFilter<'a> {
    pub site: Option<&'a str>,
    pub state: Option<EscState>,
    /// Only those not resolved.
    pub open: bool,
    pub cause: Option<Cause>,
    pub sites: Option<&'a [String]>,
    /// Page cursor: before this (opened, id), newest first.
    pub before: Option<(i64, &'a str)>,
    pub limit: i64,
}

#[derive(Clone, Copy)]
pub struct Escalations<'a>(&'a Db);

impl Db {
    pub fn escalations(&self) -> Escalations<'_> {
        Escalations(self)
    }
}

#[allow(clippy::too_many_arguments)]
async fn event(
    c: &mut AnyConnection,
    id: &str,
    at: i64,
    kind: EscEventKind,
    state: EscState,
    actor: &str,
    note: &str,
    context: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO escalation_events (escalation_id, at_ms, kind, state, actor, note, context) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(at)
    .bind(kind)
    .bind(state)
    .bind(actor)
    .bind(note)
    .bind(context)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Queues a webhook notification of `id`'s change (when one is configured).
async fn outbox(c: &mut AnyConnection, id: &str, what: &str, at: i64) -> Result<(), Error> {
    let row: EscalationRow = {
        let sql = format!("SELECT {COLUMNS} FROM escalations WHERE escalation_id = $1");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&mut *c)
            .await?
    };
    let payload = serde_json::json!({
        "event": what,
        "escalation": {
            "id": row.escalation_id, "site": row.site_id, "tank": row.tank_id,
            "cause": row.cause, "state": row.state, "subject": row.subject,
            "detail": row.detail, "assignee": row.assignee,
            "opened_ms": row.opened_ms, "updated_ms": row.updated_ms,
            "context": row.context,
        },
    })
    .to_string();
    sqlx::query(
        "INSERT INTO webhook_outbox (escalation_id, event, payload, created_ms, attempts, next_ms, state, last_error)
         VALUES ($1, $2, $3, $4, 0, $4, 'pending', '')",
    )
    .bind(id)
    .bind(what)
    .bind(payload)
    .bind(at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

impl Escalations<'_> {
    /// Opens the finding's escalation, or updates the open one's detail
    /// and context (one open per site, tank and cause).
    pub async fn apply(
        &self,
        f: &Finding,
        id: &str,
        now: i64,
        notify: bool,
    ) -> Result<Applied, Error> {
        let key = open_key(&f.site_id, &f.tank_id, f.cause);
        let (_w, mut tx) = self.0.begin_write().await?;
        let open: Option<(String, String)> =
            sqlx::query_as("SELECT escalation_id, detail FROM escalations WHERE open_key = $1")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
        let applied = match open {
            Some((_, detail)) if detail == f.detail => Applied::Same,
            Some((eid, _)) => {
                sqlx::query(
                    "UPDATE escalations SET detail = $2, context = $3, subject = $4, updated_ms = $5 WHERE escalation_id = $1",
                )
                .bind(&eid)
                .bind(&f.detail)
                .bind(&f.context)
                .bind(&f.subject)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let state: EscState =
                    sqlx::query_scalar("SELECT state FROM escalations WHERE escalation_id = $1")
                        .bind(&eid)
                        .fetch_one(&mut *tx)
                        .await?;
                event(
                    &mut tx,
                    &eid,
                    now,
                    EscEventKind::Updated,
                    state,
                    "headend: inventory",
                    &f.detail,
                    &f.context,
                )
                .await?;
                if notify {
                    outbox(&mut tx, &eid, "updated", now).await?;
                }
                Applied::Updated
            }
            None => {
                sqlx::query(
                    "INSERT INTO escalations (escalation_id, site_id, tank_id, cause, state, open_key, subject, detail, context, opened_ms, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                )
                .bind(id)
                .bind(&f.site_id)
                .bind(&f.tank_id)
                .bind(f.cause)
                .bind(EscState::Created)
                .bind(&key)
                .bind(&f.subject)
                .bind(&f.detail)
                .bind(&f.context)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                event(
                    &mut tx,
                    id,
                    now,
                    EscEventKind::Opened,
                    EscState::Created,
                    "headend: inventory",
                    &f.detail,
                    &f.context,
                )
                .await?;
                if notify {
                    outbox(&mut tx, id, "opened", now).await?;
                }
                Applied::Opened
            }
        };
        tx.commit().await?;
        Ok(applied)
    }

    /// Every open escalation (the job clears those whose cause went away).
    pub async fn open(&self) -> Result<Vec<OpenRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT escalation_id, site_id, tank_id, cause FROM escalations WHERE open_key IS NOT NULL",
        )
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Resolves an open escalation; `None` if it is not open (any more).
    pub async fn resolve(
        &self,
        id: &str,
        kind: EscEventKind,
        actor: &str,
        note: &str,
        now: i64,
        notify: bool,
    ) -> Result<Option<()>, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE escalations SET state = $2, open_key = NULL, resolved_ms = $3, updated_ms = $3
             WHERE escalation_id = $1 AND open_key IS NOT NULL",
        )
        .bind(id)
        .bind(EscState::Resolved)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        event(
            &mut tx,
            id,
            now,
            kind,
            EscState::Resolved,
            actor,
            note,
            "{}",
        )
        .await?;
        if notify {
            outbox(&mut tx, id, "resolved", now).await?;
        }
        tx.commit().await?;
        Ok(Some(()))
    }

    /// Moves an escalation (not to resolved: [`Escalations::resolve`]),
    /// if it is still in `from`; false if it moved meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn move_to(
        &self,
        id: &str,
        from: EscState,
        to: EscState,
        assignee: Option<&str>,
        actor: &str,
        note: &str,
        now: i64,
        notify: bool,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE escalations SET state = $3, assignee = COALESCE($4, assignee), updated_ms = $5
             WHERE escalation_id = $1 AND state = $2",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(assignee)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        event(&mut tx, id, now, EscEventKind::Moved, to, actor, note, "{}").await?;
        if notify {
            outbox(&mut tx, id, to.as_str(), now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn note(
        &self,
        id: &str,
        state: EscState,
        actor: &str,
        note: &str,
        now: i64,
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        event(
            &mut tx,
            id,
            now,
            EscEventKind::Note,
            state,
            actor,
            note,
            "{}",
        )
        .await?;
        sqlx::query("UPDATE escalations SET updated_ms = $2 WHERE escalation_id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<EscalationRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM escalations WHERE escalation_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.0.pool())
            .await?)
    }

    pub async fn events(&self, id: &str) -> Result<Vec<EscEventRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, at_ms, kind, state, actor, note, context FROM escalation_events WHERE escalation_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Newest first, filtered, one page.
    pub async fn list(&self, f: &EscFilter<'_>) -> Result<Vec<EscalationRow>, Error> {
        let (b_ms, b_id) = f.before.unwrap_or((i64::MAX, ""));
        let sql = format!(
            "SELECT {COLUMNS} FROM escalations
             WHERE ($1 = '' OR site_id = $1) AND ($2 = '' OR state = $2) AND ($3 = 0 OR open_key IS NOT NULL)
               AND ($4 = '' OR cause = $4)
               AND (opened_ms < $5 OR (opened_ms = $5 AND ($6 = '' OR escalation_id < $6))) {}
             ORDER BY opened_ms DESC, escalation_id DESC LIMIT $7",
            super::site_in("site_id", f.sites, 8)
        );
        let mut q = sqlx::query_as::<_, EscalationRow>(sqlx::AssertSqlSafe(sql))
            .bind(f.site.unwrap_or(""))
            .bind(f.state.map(|s| s.as_str()).unwrap_or(""))
            .bind(i64::from(f.open))
            .bind(f.cause.map(|c| c.as_str()).unwrap_or(""))
            .bind(b_ms)
            .bind(b_id)
            .bind(f.limit);
        for s in f.sites.unwrap_or_default() {
            q = q.bind(s);
        }
        Ok(q.fetch_all(self.0.pool()).await?)
    }

    /// Pending notifications due at `now`, oldest first.
    pub async fn due_webhooks(&self, now: i64, limit: i64) -> Result<Vec<OutboxRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, escalation_id, event, payload, created_ms, attempts, next_ms, state, last_error, done_ms
             FROM webhook_outbox WHERE state = 'pending' AND next_ms <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Records an attempt: delivered, retried at `next_ms`, or dead.
    pub async fn webhook_attempt(
        &self,
        id: i64,
        state: &str,
        attempts: i64,
        next_ms: i64,
        error: &str,
        now: i64,
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "UPDATE webhook_outbox SET state = $2, attempts = $3, next_ms = $4, last_error = $5,
               done_ms = CASE WHEN $2 = 'pending' THEN NULL ELSE $6 END WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(attempts)
        .bind(next_ms)
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Notifications given up (dead letters), newest first.
    /// Dead letters, newest first, before `before_id` (the page cursor),
    /// of the escalations at `sites` (`None`: all).
    pub async fn dead_letters(
        &self,
        sites: Option<&[String]>,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, Error> {
        let mut sql = String::from(
            "SELECT o.id, o.escalation_id, o.event, o.payload, o.created_ms, o.attempts, o.next_ms, o.state, o.last_error, o.done_ms
             FROM webhook_outbox o JOIN escalations e ON e.escalation_id = o.escalation_id
             WHERE o.state = 'dead' AND o.id < $1",
        );
        sql.push_str(&super::site_in("e.site_id", sites, 3));
        sql.push_str(" ORDER BY o.id DESC LIMIT $2");
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(before_id)
            .bind(limit);
        for site in sites.unwrap_or_default() {
            q = q.bind(site.clone());
        }
        Ok(q.fetch_all(self.0.pool()).await?)
    }
}

/// A queued webhook notification.
#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub escalation_id: String,
    pub event: String,
    pub payload: crate::store::json::Document,
    pub created_ms: i64,
    pub attempts: i64,
    pub next_ms: i64,
    /// pending | delivered | dead
    pub state: String,
    pub last_error: String,
    pub done_ms: Option<i64>,
}
