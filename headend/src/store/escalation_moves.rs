//! People's moves on escalations (the job's side is in
//! [`super::escalations`]): resolve, move, note, acknowledge, snooze. Each
//! is a conditional update with its timeline entry and webhook in one
//! transaction, so two people racing cannot both succeed.

use super::escalations::{Escalations, event, outbox};
use crate::Error;
use crate::domain::escalation::{EscEventKind, EscState};

impl Escalations<'_> {
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

    /// Acknowledges an escalation that is not resolved nor acknowledged;
    /// false if it was meanwhile.
    pub async fn acknowledge(
        &self,
        id: &str,
        actor: &str,
        note: &str,
        now: i64,
        notify: bool,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let state: Option<EscState> = sqlx::query_scalar(
            "UPDATE escalations SET acked_ms = $2, acked_by = $3, updated_ms = $2
             WHERE escalation_id = $1 AND acked_ms IS NULL AND open_key IS NOT NULL RETURNING state",
        )
        .bind(id)
        .bind(now)
        .bind(actor)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(state) = state else {
            return Ok(false);
        };
        event(
            &mut tx,
            id,
            now,
            EscEventKind::Acknowledged,
            state,
            actor,
            note,
            "{}",
        )
        .await?;
        if notify {
            outbox(&mut tx, id, "acknowledged", now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Snoozes an escalation that is not resolved until `until`; false if
    /// it was resolved meanwhile.
    pub async fn snooze(
        &self,
        id: &str,
        until: i64,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let state: Option<EscState> = sqlx::query_scalar(
            "UPDATE escalations SET snoozed_until_ms = $2, snooze_reason = $3, updated_ms = $4
             WHERE escalation_id = $1 AND open_key IS NOT NULL RETURNING state",
        )
        .bind(id)
        .bind(until)
        .bind(reason)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(state) = state else {
            return Ok(false);
        };
        let ctx = serde_json::json!({ "until_ms": until }).to_string();
        event(
            &mut tx,
            id,
            now,
            EscEventKind::Snoozed,
            state,
            actor,
            reason,
            &ctx,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
