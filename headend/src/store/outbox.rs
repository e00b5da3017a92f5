//! The webhook outbox in SQL: notifications of escalation and alarm
//! changes, queued in the transaction of the change they announce (a crash
//! loses none), sent at least once, in order per key, and kept as dead
//! letters when the receiver never took them.

use sqlx::AnyConnection;

use crate::Error;
use crate::domain::UnixMs;
use crate::domain::outbox::{OutboxState, Subject};
use crate::store::Db;

#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub subject: Subject,
    /// The escalation's or the alarm episode's id.
    pub escalation_id: String,
    /// What must arrive in order: rows of one key are sent one after another.
    pub order_key: String,
    pub event: String,
    pub payload: crate::store::json::Document,
    pub created_ms: UnixMs,
    pub attempts: i64,
    pub next_ms: UnixMs,
    pub state: OutboxState,
    pub last_error: String,
    pub done_ms: Option<UnixMs>,
}

const COLUMNS: &str = "o.id, o.subject, o.escalation_id, o.order_key, o.event, o.payload, o.created_ms, o.attempts, o.next_ms, o.state, o.last_error, o.done_ms";

/// Queues a notification in the caller's transaction, due at once.
pub async fn queue(
    c: &mut AnyConnection,
    subject: Subject,
    id: &str,
    order_key: &str,
    event: &str,
    payload: &str,
    at: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO webhook_outbox (subject, escalation_id, order_key, event, payload, created_ms, attempts, next_ms, state, last_error)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $6, $7, '')",
    )
    .bind(subject)
    .bind(id)
    .bind(order_key)
    .bind(event)
    .bind(payload)
    .bind(at)
    .bind(OutboxState::Pending)
    .execute(&mut *c)
    .await?;
    Ok(())
}

#[derive(Clone, Copy)]
pub struct Outbox<'a>(&'a Db);

impl Db {
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox(self)
    }
}

impl Outbox<'_> {
    /// The oldest pending notifications, due or not (the sender keeps each
    /// key's order: a row waits while an earlier one of its key waits).
    pub async fn pending(&self, limit: i64) -> Result<Vec<OutboxRow>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_outbox o WHERE o.state = $1 ORDER BY o.id LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(OutboxState::Pending)
            .bind(limit)
            .fetch_all(self.0.pool())
            .await?)
    }

    /// Records an attempt: delivered, retried at `next_ms`, or dead.
    pub async fn attempt(
        &self,
        id: i64,
        state: OutboxState,
        attempts: i64,
        next_ms: UnixMs,
        error: &str,
        now: i64,
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let done = (state != OutboxState::Pending).then_some(now);
        sqlx::query(
            "UPDATE webhook_outbox SET state = $2, attempts = $3, next_ms = $4, last_error = $5, done_ms = $6 WHERE id = $1",
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

    /// Dead letters, newest first, before `before_id` (the page cursor),
    /// of the escalations and alarms at `sites` (`None`: all).
    pub async fn dead_letters(
        &self,
        sites: Option<&[String]>,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, Error> {
        let mut sql = format!(
            "SELECT {COLUMNS} FROM webhook_outbox o
             LEFT JOIN escalations e ON o.subject = 'escalation' AND e.escalation_id = o.escalation_id
             LEFT JOIN alarm_episodes a ON o.subject = 'alarm' AND a.episode_id = o.escalation_id
             WHERE o.state = $3 AND o.id < $1"
        );
        sql.push_str(&super::site_in("COALESCE(e.site_id, a.site_id)", sites, 4));
        sql.push_str(" ORDER BY o.id DESC LIMIT $2");
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(before_id)
            .bind(limit)
            .bind(OutboxState::Dead);
        for site in sites.unwrap_or_default() {
            q = q.bind(site.clone());
        }
        Ok(q.fetch_all(self.0.pool()).await?)
    }
}
