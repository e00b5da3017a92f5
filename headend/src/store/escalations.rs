//! The escalations aggregate in SQL: escalations (at most one open per
//! site, tank and cause: `open_key`), their timeline, and the webhook
//! outbox written in the same transaction as the change it announces.

use sqlx::AnyConnection;

use crate::Error;
use crate::domain::escalation::{Cause, EscEventKind, EscFacts, EscState};
use crate::domain::outbox::Subject;
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
    pub acked_ms: Option<crate::domain::UnixMs>,
    pub acked_by: Option<String>,
    pub snoozed_until_ms: Option<crate::domain::UnixMs>,
    pub snooze_reason: Option<String>,
}

impl EscalationRow {
    pub fn facts(&self) -> EscFacts {
        EscFacts {
            state: self.state,
            acked_ms: self.acked_ms.map(crate::domain::UnixMs::ms),
            snoozed_until_ms: self.snoozed_until_ms.map(crate::domain::UnixMs::ms),
        }
    }
}

pub(super) const COLUMNS: &str = "escalation_id, site_id, tank_id, cause, state, subject, detail, context, assignee, opened_ms, updated_ms, resolved_ms, acked_ms, acked_by, snoozed_until_ms, snooze_reason";

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
    /// The last case of the same site, tank and cause was resolved by a
    /// person while its cause persisted: it is open again, same id.
    Reopened,
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
pub struct Escalations<'a>(pub(super) &'a Db);

impl Db {
    pub fn escalations(&self) -> Escalations<'_> {
        Escalations(self)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn event(
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
pub(super) async fn outbox(
    c: &mut AnyConnection,
    id: &str,
    what: &str,
    at: i64,
) -> Result<(), Error> {
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
    crate::store::outbox::queue(c, Subject::Escalation, id, id, what, &payload, at).await
}

/// Opens the finding's escalation, or updates the open one's detail
/// and context (one open per site, tank and cause), in the caller's
/// transaction; `actor` names who found it on the timeline.
pub async fn apply_in(
    c: &mut AnyConnection,
    f: &Finding,
    id: &str,
    now: i64,
    notify: bool,
    actor: &str,
) -> Result<Applied, Error> {
    let key = open_key(&f.site_id, &f.tank_id, f.cause);
    let open: Option<(String, String)> =
        sqlx::query_as("SELECT escalation_id, detail FROM escalations WHERE open_key = $1")
            .bind(&key)
            .fetch_optional(&mut *c)
            .await?;
    // a cause the job re-evaluates (it clears by itself) found again after
    // a person resolved it persisted: the same case; a failed command or a
    // critical alarm found again is a new incident
    if open.is_none() && f.cause.clears_itself() && reopen(c, f, &key, now, notify, actor).await? {
        return Ok(Applied::Reopened);
    }
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
            .execute(&mut *c)
            .await?;
            let (state, snoozed_until): (EscState, Option<i64>) = sqlx::query_as(
                "SELECT state, snoozed_until_ms FROM escalations WHERE escalation_id = $1",
            )
            .bind(&eid)
            .fetch_one(&mut *c)
            .await?;
            event(
                c,
                &eid,
                now,
                EscEventKind::Updated,
                state,
                actor,
                &f.detail,
                &f.context,
            )
            .await?;
            // a snoozed case's updates stay on its timeline, without a webhook
            if notify && snoozed_until.is_none_or(|u| u <= now) {
                outbox(c, &eid, "updated", now).await?;
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
            .execute(&mut *c)
            .await?;
            event(
                c,
                id,
                now,
                EscEventKind::Opened,
                EscState::Created,
                actor,
                &f.detail,
                &f.context,
            )
            .await?;
            if notify {
                outbox(c, id, "opened", now).await?;
            }
            Applied::Opened
        }
    };
    Ok(applied)
}

/// Reopens the latest case of the finding's (site, tank, cause) when a
/// person resolved it and the job never saw its cause clear (no `cleared`
/// event): the cause persisted, so it is the same case, with its assignee,
/// notes and timeline. Back to `assigned` when it has an assignee, else
/// `created`. False when there is no such case (a new one opens).
async fn reopen(
    c: &mut AnyConnection,
    f: &Finding,
    key: &str,
    now: i64,
    notify: bool,
    actor: &str,
) -> Result<bool, Error> {
    let last: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT e.escalation_id, e.assignee FROM escalations e
         WHERE e.site_id = $1 AND e.tank_id = $2 AND e.cause = $3 AND e.open_key IS NULL
           AND NOT EXISTS (SELECT 1 FROM escalation_events v WHERE v.escalation_id = e.escalation_id AND v.kind = $4)
           AND e.opened_ms = (SELECT MAX(x.opened_ms) FROM escalations x WHERE x.site_id = $1 AND x.tank_id = $2 AND x.cause = $3)",
    )
    .bind(&f.site_id)
    .bind(&f.tank_id)
    .bind(f.cause)
    .bind(EscEventKind::Cleared)
    .fetch_optional(&mut *c)
    .await?;
    let Some((id, assignee)) = last else {
        return Ok(false);
    };
    let state = if assignee.is_some() {
        EscState::Assigned
    } else {
        EscState::Created
    };
    sqlx::query(
        "UPDATE escalations SET state = $2, open_key = $3, detail = $4, context = $5, subject = $6,
           resolved_ms = NULL, updated_ms = $7, acked_ms = NULL, acked_by = NULL,
           snoozed_until_ms = NULL, snooze_reason = NULL
         WHERE escalation_id = $1 AND open_key IS NULL",
    )
    .bind(&id)
    .bind(state)
    .bind(key)
    .bind(&f.detail)
    .bind(&f.context)
    .bind(&f.subject)
    .bind(now)
    .execute(&mut *c)
    .await?;
    event(
        c,
        &id,
        now,
        EscEventKind::Reopened,
        state,
        actor,
        &f.detail,
        &f.context,
    )
    .await?;
    if notify {
        outbox(c, &id, "reopened", now).await?;
    }
    Ok(true)
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
        let (_w, mut tx) = self.0.begin_write().await?;
        let applied = apply_in(&mut tx, f, id, now, notify, "headend: inventory").await?;
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
}
