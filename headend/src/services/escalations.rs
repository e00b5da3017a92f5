//! The escalation workflow a person drives: read, move (created →
//! assigned → investigating → resolved), add notes. The inventory job
//! opens, updates and clears them ([`super::evaluate`]).

use serde::Deserialize;

use super::{Context, Refused, Result, invalid, refused};
use crate::domain::escalation::{EscEventKind, EscRefused, EscState, may_move};
use crate::store::escalations::{EscEventRow, EscFilter, EscalationRow};
use crate::wallclock::now_ms;

/// `POST /api/v1/escalations/{id}/move`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// assigned | investigating | resolved
    pub state: String,
    /// Who works on it (required to assign).
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub note: String,
}

/// `POST /api/v1/escalations/{id}/notes`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    pub note: String,
}

fn not_found(id: &str) -> super::ServiceError {
    refused(Refused::NotFound, "", format!("no escalation {id:?}"))
}

fn note_text(v: &str, required: bool) -> Result<String> {
    let v = v.trim();
    if required && v.is_empty() {
        return Err(invalid("note", "must not be empty"));
    }
    if v.chars().count() > 2_000 {
        return Err(invalid("note", "at most 2000 characters"));
    }
    Ok(v.to_string())
}

/// The escalations the caller may see that match `f` (its `sites` is the
/// caller's scope, whatever it was given); a `site` outside the scope is
/// not found.
pub async fn list(ctx: &Context, f: EscFilter<'_>) -> Result<Vec<EscalationRow>> {
    if let Some(site) = f.site {
        ctx.visible(site, "site", || format!("no site {site:?}"))?;
    }
    let sites = ctx.scope.sites();
    Ok(ctx
        .db
        .escalations()
        .list(&EscFilter {
            sites: sites.as_deref(),
            ..f
        })
        .await?)
}

pub async fn get(ctx: &Context, id: &str) -> Result<(EscalationRow, Vec<EscEventRow>)> {
    let e = ctx
        .db
        .escalations()
        .get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    ctx.visible(&e.site_id, "", || format!("no escalation {id:?}"))?;
    let events = ctx.db.escalations().events(id).await?;
    Ok((e, events))
}

/// Moves an escalation; the state before and after.
pub async fn move_to(
    ctx: &Context,
    id: &str,
    r: MoveRequest,
    actor: &str,
    notify: bool,
) -> Result<(EscState, EscalationRow)> {
    let (e, _) = get(ctx, id).await?;
    let to: EscState = r.state.parse().map_err(|_| {
        invalid(
            "state",
            format!("{:?}: use assigned, investigating or resolved", r.state),
        )
    })?;
    if !may_move(e.state, to) {
        return Err(refused(
            Refused::Conflict,
            "state",
            format!("escalation {id} is {}; it cannot move to {to}", e.state),
        ));
    }
    let assignee = match r.assignee.as_deref().map(str::trim) {
        Some("") | None if to == EscState::Assigned => {
            return Err(invalid("assignee", "required to assign"));
        }
        Some(a) if a.chars().count() > 200 => {
            return Err(invalid("assignee", "at most 200 characters"));
        }
        a => a.map(str::to_string),
    };
    let note = note_text(&r.note, false)?;
    let now = now_ms();
    let moved = if to == EscState::Resolved {
        ctx.db
            .escalations()
            .resolve(id, EscEventKind::Moved, actor, &note, now, notify)
            .await?
            .is_some()
    } else {
        ctx.db
            .escalations()
            .move_to(
                id,
                e.state,
                to,
                assignee.as_deref(),
                actor,
                &note,
                now,
                notify,
            )
            .await?
    };
    if !moved {
        return Err(refused(
            Refused::Conflict,
            "state",
            format!("escalation {id} changed meanwhile; read it again"),
        ));
    }
    let after = ctx
        .db
        .escalations()
        .get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok((e.state, after))
}

pub async fn add_note(
    ctx: &Context,
    id: &str,
    r: NoteRequest,
    actor: &str,
) -> Result<EscalationRow> {
    let (e, _) = get(ctx, id).await?;
    let note = note_text(&r.note, true)?;
    ctx.db
        .escalations()
        .note(id, e.state, actor, &note, now_ms())
        .await?;
    Ok(e)
}

/// `POST /api/v1/escalations/{id}/acknowledge`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscAckRequest {
    #[serde(default)]
    pub note: String,
}

/// `POST /api/v1/escalations/{id}/snooze`: until a time (RFC 3339 or Unix
/// ms) after now and at most 7 days ahead, with a reason. Its "updated"
/// webhooks are held back meanwhile; a reopened case is awake again.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeRequest {
    #[schema(value_type = String)]
    pub until: serde_json::Value,
    pub reason: String,
}

fn esc_conflict(id: &str, why: EscRefused) -> super::ServiceError {
    refused(Refused::Conflict, "", format!("escalation {id}: {why}"))
}

/// Acknowledges an escalation (once per case, while open).
pub async fn acknowledge(
    ctx: &Context,
    id: &str,
    r: EscAckRequest,
    actor: &str,
    notify: bool,
) -> Result<EscalationRow> {
    let (e, _) = get(ctx, id).await?;
    let note = note_text(&r.note, false)?;
    e.facts()
        .may_acknowledge()
        .map_err(|w| esc_conflict(id, w))?;
    let now = now_ms();
    if !ctx
        .db
        .escalations()
        .acknowledge(id, actor, &note, now, notify)
        .await?
    {
        return Err(refused(
            Refused::Conflict,
            "",
            format!("escalation {id} changed meanwhile; read it again"),
        ));
    }
    reread(ctx, id).await
}

/// Snoozes an escalation until a time.
pub async fn snooze(
    ctx: &Context,
    id: &str,
    r: SnoozeRequest,
    actor: &str,
) -> Result<EscalationRow> {
    let (e, _) = get(ctx, id).await?;
    let until = super::time_value("until", &r.until)?;
    let reason = note_text(&r.reason, true)
        .map_err(|_| invalid("reason", "must not be empty; at most 2000 characters"))?;
    let now = now_ms();
    match e.facts().may_snooze(until, now) {
        Ok(()) => {}
        Err(EscRefused::SnoozeOutOfRange) => {
            return Err(invalid("until", EscRefused::SnoozeOutOfRange.to_string()));
        }
        Err(w) => return Err(esc_conflict(id, w)),
    }
    if !ctx
        .db
        .escalations()
        .snooze(id, until, &reason, actor, now)
        .await?
    {
        return Err(esc_conflict(id, EscRefused::Resolved));
    }
    reread(ctx, id).await
}

async fn reread(ctx: &Context, id: &str) -> Result<EscalationRow> {
    ctx.db
        .escalations()
        .get(id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Webhook notifications given up after their last attempt, newest
/// first, before `before_id`: of the caller's sites only.
pub async fn dead_letters(
    ctx: &Context,
    before_id: i64,
    limit: i64,
) -> Result<Vec<crate::store::outbox::OutboxRow>> {
    let sites = ctx.scope.sites();
    Ok(ctx
        .db
        .outbox()
        .dead_letters(sites.as_deref(), before_id, limit)
        .await?)
}
