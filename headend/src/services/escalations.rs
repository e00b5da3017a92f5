//! The escalation workflow a person drives: read, move (created →
//! assigned → investigating → resolved), add notes. The inventory job
//! opens, updates and clears them ([`super::evaluate`]).

use serde::Deserialize;

use super::{Context, Refused, Result, invalid, refused};
use crate::domain::escalation::{EscEventKind, EscState, may_move};
use crate::store::escalations::{EscEventRow, EscalationRow};
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
