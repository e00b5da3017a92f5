//! REST for escalations:
//!
//! * `GET /api/v1/escalations?site=&state=&cause=&open=` (newest first,
//!   paged), `GET /api/v1/escalations/{id}` with its timeline and the
//!   decision context stored when it opened or last changed.
//! * `POST /api/v1/escalations/{id}/move` (`{"state", "assignee", "note"}`),
//!   `POST /api/v1/escalations/{id}/notes` (`{"note"}`),
//!   `POST /api/v1/escalations/{id}/acknowledge` (`{"note"}`, once per case),
//!   `POST /api/v1/escalations/{id}/snooze` (`{"until", "reason"}`).
//! * `GET /api/v1/webhooks/dead`: notifications the webhook never took.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{AuditNote, Caller, noted};
use super::page::{self, PageParams};
use super::{ApiError, ApiState, Query, parse_body, ts};
use crate::domain::escalation::{Cause, EscState};
use crate::services::escalations::{self as svc, MoveRequest, NoteRequest};
use crate::store::escalations::{EscFilter, EscalationRow};

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "GET",
            "/api/v1/escalations",
            Perm(P::Read),
            "escalations.list",
            get(list),
            paged(
                "Escalations, newest first",
                "Escalation",
                params_of::<super::escalations::EscList>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/escalations/{id}",
            Perm(P::Read),
            "escalations.get",
            get(get_one),
            d(
                "An escalation with its timeline and decision context",
                200,
                Some(reference("Escalation")),
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/escalations/{id}/move",
            Perm(P::Loads),
            "escalations.move",
            post(move_to),
            with_body(
                d(
                    "Move an escalation: assigned, investigating or resolved",
                    200,
                    Some(reference("Escalation")),
                ),
                "MoveRequest",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/escalations/{id}/notes",
            Perm(P::Loads),
            "escalations.note",
            post(add_note),
            with_body(
                d(
                    "Add a note to an escalation's timeline",
                    200,
                    Some(reference("Escalation")),
                ),
                "NoteRequest",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/escalations/{id}/acknowledge",
            Perm(P::Loads),
            "escalations.acknowledge",
            post(acknowledge),
            with_body(
                d(
                    "Acknowledge an escalation (once per case, while it is open)",
                    200,
                    Some(reference("Escalation")),
                ),
                "EscAckRequest",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/escalations/{id}/snooze",
            Perm(P::Loads),
            "escalations.snooze",
            post(snooze),
            with_body(
                d(
                    "Snooze an escalation until a time within 7 days (its updates send no webhook meanwhile)",
                    200,
                    Some(reference("Escalation")),
                ),
                "SnoozeRequest",
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/webhooks/dead",
            Perm(P::Admin),
            "webhooks.dead",
            get(dead),
            Doc {
                query: params_of::<PageParams>(),
                ..d(
                    "Webhook notifications given up after their last attempt",
                    200,
                    Some(list_of("DeadLetter")),
                )
            },
        ),
    ]
}

fn esc_json(e: &EscalationRow) -> Value {
    json!({
        "id": e.escalation_id, "site": e.site_id, "tank": e.tank_id, "cause": e.cause,
        "state": e.state, "subject": e.subject, "detail": e.detail, "assignee": e.assignee,
        "opened_at": ts(e.opened_ms), "opened_ms": e.opened_ms, "updated_at": ts(e.updated_ms),
        "resolved_at": e.resolved_ms.map(ts),
        "acknowledged_at": e.acked_ms.map(ts), "acknowledged_by": e.acked_by,
        "snoozed": e.facts().snoozed(crate::wallclock::now_ms()),
        "snoozed_until": e.snoozed_until_ms.map(ts), "snooze_reason": e.snooze_reason,
        "context": e.context,
    })
}

/// `GET /api/v1/escalations` filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EscList {
    pub site: Option<String>,
    /// created | assigned | investigating | resolved
    pub state: Option<String>,
    pub cause: Option<String>,
    /// Only those not resolved.
    pub open: Option<bool>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<EscList>,
) -> Result<Response, ApiError> {
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let after = pg.after_i64_id()?;
    let before = after.as_ref().map(|(ms, id)| (*ms, id.as_str()));
    let state = super::query_enum::<EscState>("state", q.state.as_deref())?;
    let cause = super::query_enum::<Cause>("cause", q.cause.as_deref())?;
    let rows = svc::list(
        &s.ctx(&p),
        EscFilter {
            site: q.site.as_deref(),
            state,
            open: q.open.unwrap_or(false),
            cause,
            sites: None,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    let items = rows.iter().map(esc_json).collect();
    Ok(page::respond(&uri, items, limit, |v| {
        format!(
            "{}:{}",
            v["opened_ms"],
            v["id"].as_str().unwrap_or_default()
        )
    }))
}

async fn get_one(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (e, events) = svc::get(&s.ctx(&p), &id).await?;
    let mut v = esc_json(&e);
    v["events"] = events
        .iter()
        .map(|ev| {
            json!({
                "at": ts(ev.at_ms), "kind": ev.kind, "state": ev.state, "by": ev.actor, "note": ev.note,
                "context": ev.context,
            })
        })
        .collect();
    Ok(Json(v))
}

fn note(id: &str, site: &str, summary: Value) -> AuditNote {
    AuditNote {
        target: Some(format!("escalation {id}")),
        summary,
        site: Some(site.to_string()),
        ..AuditNote::default()
    }
}

async fn move_to(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: MoveRequest = parse_body(&body)?;
    let (before, after) =
        svc::move_to(&s.ctx(&p), &id, req, &p.actor.to_string(), s.webhook).await?;
    let v = esc_json(&after);
    Ok(noted(
        Json(v).into_response(),
        note(
            &id,
            &after.site_id,
            json!({ "before": before, "after": after.state, "assignee": after.assignee }),
        ),
    ))
}

async fn add_note(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NoteRequest = parse_body(&body)?;
    let e = svc::add_note(&s.ctx(&p), &id, req, &p.actor.to_string()).await?;
    Ok(noted(
        Json(esc_json(&e)).into_response(),
        note(&id, &e.site_id, json!({ "note_added": true })),
    ))
}

async fn acknowledge(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: svc::EscAckRequest = parse_body(&body)?;
    let e = svc::acknowledge(&s.ctx(&p), &id, req, &p.actor.to_string(), s.webhook).await?;
    Ok(noted(
        Json(esc_json(&e)).into_response(),
        note(&id, &e.site_id, json!({ "acknowledged": true })),
    ))
}

async fn snooze(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: svc::SnoozeRequest = parse_body(&body)?;
    let e = svc::snooze(&s.ctx(&p), &id, req, &p.actor.to_string()).await?;
    Ok(noted(
        Json(esc_json(&e)).into_response(),
        note(
            &id,
            &e.site_id,
            json!({ "snoozed_until": e.snoozed_until_ms.map(ts), "reason": e.snooze_reason }),
        ),
    ))
}

/// Dead letters of the escalations in the caller's scope, paged by id.
async fn dead(
    State(s): State<ApiState>,
    Caller(c): Caller,
    OriginalUri(uri): OriginalUri,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let limit = p.limit()?;
    let before = page::after_i64(&p)?.unwrap_or(i64::MAX);
    let rows = crate::services::escalations::dead_letters(&s.ctx(&c), before, limit + 1).await?;
    let items = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "subject": r.subject, "escalation": r.escalation_id, "event": r.event, "attempts": r.attempts,
                "last_error": r.last_error, "created_at": ts(r.created_ms), "given_up_at": r.done_ms.map(ts),
                "payload": r.payload,
            })
        })
        .collect();
    Ok(page::respond(&uri, items, limit, |v| v["id"].to_string()))
}
