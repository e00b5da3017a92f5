//! REST for alarm episodes:
//!
//! * `GET /api/v1/alarms?site=&asset=&state=&severity=` (newest raise
//!   first, paged): a tank's alarm history is `site` + `asset`.
//! * `GET /api/v1/alarms/{id}` with its timeline.
//! * `POST /api/v1/alarms/{id}/acknowledge` (`{"note"}`),
//!   `POST /api/v1/alarms/{id}/shelve` (`{"until", "reason"}`),
//!   `POST /api/v1/alarms/{id}/unshelve`, `POST /api/v1/alarms/{id}/notes`.
//!
//! Only the device clears an alarm: there is no route for it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::access::{AuditNote, Caller, noted};
use super::page::{self, PageParams};
use super::{ApiError, ApiState, Query, parse_body, ts};
use crate::domain::UnixMs;
use crate::domain::alarm::{AlarmState, Severity};
use crate::services::alarms::{
    self as svc, AckRequest, AlarmNoteRequest, ListQuery, ShelveRequest,
};
use crate::store::alarms::EpisodeRow;
use crate::wallclock::now_ms;

/// This feature's routes, each declared once.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    let one = |summary| d(summary, 200, Some(reference("Alarm")));
    vec![
        Route::new(
            "GET",
            "/api/v1/alarms",
            Perm(P::Read),
            "alarms.list",
            get(list),
            paged(
                "Alarm episodes, newest raise first",
                "Alarm",
                params_of::<AlarmList>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/alarms/{id}",
            Perm(P::Read),
            "alarms.get",
            get(get_one),
            one("An alarm episode with its timeline"),
        ),
        Route::new(
            "POST",
            "/api/v1/alarms/{id}/acknowledge",
            Perm(P::Loads),
            "alarms.acknowledge",
            post(acknowledge),
            with_body(
                one("Acknowledge an alarm (once); it stays listed until the device clears it"),
                "AckRequest",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/alarms/{id}/shelve",
            Perm(P::Loads),
            "alarms.shelve",
            post(shelve),
            with_body(
                one("Shelve an open alarm until a time (at most 7 days) with a reason"),
                "ShelveRequest",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/alarms/{id}/unshelve",
            Perm(P::Loads),
            "alarms.unshelve",
            post(unshelve),
            one("End a shelf still running"),
        ),
        Route::new(
            "POST",
            "/api/v1/alarms/{id}/notes",
            Perm(P::Loads),
            "alarms.note",
            post(add_note),
            with_body(one("Add a note to an alarm's timeline"), "AlarmNoteRequest"),
        ),
    ]
}

/// An alarm episode as REST shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AlarmView {
    pub id: String,
    pub site: String,
    pub asset: String,
    /// The point's field, `alarm.<name>`.
    pub field: String,
    #[schema(value_type = String)]
    pub r#type: crate::domain::alarm::AlarmType,
    #[schema(value_type = String)]
    pub severity: Severity,
    #[schema(value_type = String)]
    pub state: AlarmState,
    /// Device time of the reading that raised it.
    #[schema(value_type = Option<String>)]
    pub raised_at: Value,
    #[schema(value_type = i64)]
    pub raised_ms: crate::domain::UnixMs,
    #[schema(value_type = Option<String>)]
    pub cleared_at: Value,
    /// Raise to clear, or to now while it is open.
    pub duration_s: f64,
    /// The raising reading's value and where it came from.
    pub value: f64,
    pub source: String,
    #[schema(value_type = Option<String>)]
    pub acknowledged_at: Value,
    pub acknowledged_by: Option<String>,
    pub ack_note: Option<String>,
    #[schema(value_type = Option<String>)]
    pub shelved_until: Value,
    pub shelve_reason: Option<String>,
    #[schema(value_type = Option<String>)]
    pub updated_at: Value,
    /// The timeline (`GET /api/v1/alarms/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub events: Option<Vec<Value>>,
}

fn view(e: &EpisodeRow, now: i64) -> AlarmView {
    let raised = e.raised_ms.ms();
    let end = e.cleared_ms.map_or(now, UnixMs::ms);
    AlarmView {
        id: e.episode_id.clone(),
        site: e.site_id.to_string(),
        asset: e.asset_id.clone(),
        field: e.field.clone(),
        r#type: e.alarm_type,
        severity: e.severity,
        state: e.state(now),
        raised_at: ts(e.raised_ms),
        raised_ms: e.raised_ms,
        cleared_at: e.cleared_ms.map_or(Value::Null, ts),
        duration_s: (end - raised).max(0) as f64 / 1000.0,
        value: e.raised_value,
        source: e.source.clone(),
        acknowledged_at: e.acked_ms.map_or(Value::Null, ts),
        acknowledged_by: e.acked_by.clone(),
        ack_note: e.ack_note.clone(),
        shelved_until: e.shelved_until_ms.map_or(Value::Null, ts),
        shelve_reason: e.shelve_reason.clone(),
        updated_at: ts(e.updated_ms),
        events: None,
    }
}

fn to_json(v: AlarmView) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("alarm view: {e}"),
        )
    })
}

/// `GET /api/v1/alarms` filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlarmList {
    pub site: Option<String>,
    /// A tank or other asset of the site: its alarm history.
    pub asset: Option<String>,
    /// active | acknowledged | shelved | cleared
    pub state: Option<String>,
    /// critical | major | minor | warning
    pub severity: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<AlarmList>,
) -> Result<Response, ApiError> {
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let state = super::query_enum::<AlarmState>("state", q.state.as_deref())?;
    let severity = super::query_enum::<Severity>("severity", q.severity.as_deref())?;
    let rows = svc::list(
        &s.ctx(&p),
        &ListQuery {
            site: q.site.clone(),
            asset: q.asset.clone(),
            state,
            severity,
            before: pg.after_i64_id()?,
            limit: limit + 1,
        },
    )
    .await?;
    let now = now_ms();
    let items = rows
        .iter()
        .map(|e| to_json(view(e, now)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page::respond(&uri, items, limit, |v| {
        format!(
            "{}:{}",
            v["raised_ms"],
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
    let mut v = view(&e, now_ms());
    v.events = Some(
        events
            .iter()
            .map(|ev| json!({"at": ts(ev.at_ms), "kind": ev.kind, "by": ev.actor, "note": ev.note}))
            .collect(),
    );
    Ok(Json(to_json(v)?))
}

fn answer(e: &EpisodeRow, summary: Value) -> Result<Response, ApiError> {
    let note = AuditNote {
        target: Some(format!("alarm {}", e.episode_id)),
        summary,
        site: Some(e.site_id.to_string()),
        ..AuditNote::default()
    };
    Ok(noted(
        Json(to_json(view(e, now_ms()))?).into_response(),
        note,
    ))
}

async fn acknowledge(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: AckRequest = if body.is_empty() {
        AckRequest::default()
    } else {
        parse_body(&body)?
    };
    let e = svc::acknowledge(&s.ctx(&p), &id, req, &p.actor.to_string()).await?;
    answer(&e, json!({ "acknowledged": true, "note": e.ack_note }))
}

async fn shelve(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ShelveRequest = parse_body(&body)?;
    let e = svc::shelve(&s.ctx(&p), &id, req, &p.actor.to_string()).await?;
    answer(
        &e,
        json!({ "shelved_until": e.shelved_until_ms, "reason": e.shelve_reason }),
    )
}

async fn unshelve(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = svc::unshelve(&s.ctx(&p), &id, &p.actor.to_string()).await?;
    answer(&e, json!({ "unshelved": true }))
}

async fn add_note(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: AlarmNoteRequest = parse_body(&body)?;
    let e = svc::add_note(&s.ctx(&p), &id, req, &p.actor.to_string()).await?;
    answer(&e, json!({ "note_added": true }))
}
