//! REST for loads (planned deliveries).
//!
//! * `POST /api/v1/loads`; `PATCH /api/v1/loads/{id}` (ETA update with its
//!   source, planned volume, `status: cancelled`): every change pushes an
//!   ETA action to the site, and the answer carries the load and that
//!   command.
//! * `GET /api/v1/loads?site=`, `GET /api/v1/loads/{id}`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::commands::command_json;
use super::{ApiError, ApiState, Caller, parse_body, ts};
use crate::services::loads::{self as svc, LoadPatch, LoadRequest, LoadView, Pushed};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/loads", post(post_load).get(list_loads))
        .route("/api/v1/loads/{id}", get(get_load).patch(patch_load))
}

fn load_json(v: &LoadView) -> Value {
    let l = &v.load;
    json!({
        "load_id": l.load_id,
        "reference": l.reference,
        "carrier": l.carrier,
        "site": l.site_id,
        "tanks": serde_json::from_str::<Value>(&l.tanks).unwrap_or(Value::Null),
        "product": l.product,
        "planned_volume_l": l.planned_volume_l,
        "eta": ts(l.eta_ms),
        "eta_ms": l.eta_ms,
        "eta_source": l.eta_source,
        "status": l.status,
        "delivered_volume_l": l.delivered_volume_l,
        "delivery_start": l.delivery_start_ms.map(ts),
        "delivery_end": l.delivery_end_ms.map(ts),
        "delivery_source": l.delivery_source,
        "last_command_id": l.last_command_id,
        "created_at": ts(l.created_ms),
        "updated_at": ts(l.updated_ms),
        "events": v.events.iter().map(|e| json!({
            "at": ts(e.at_ms), "kind": e.kind, "detail": e.detail, "by": e.actor,
        })).collect::<Vec<_>>(),
    })
}

fn pushed(code: StatusCode, p: &Pushed) -> Response {
    (
        code,
        Json(json!({ "load": load_json(&p.load), "command": command_json(&p.command) })),
    )
        .into_response()
}

async fn post_load(
    State(s): State<ApiState>,
    Caller(actor): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: LoadRequest = parse_body(&body)?;
    let p = svc::create(&s.ctx(), req, actor).await?;
    Ok(pushed(StatusCode::CREATED, &p))
}

async fn patch_load(
    State(s): State<ApiState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: LoadPatch = parse_body(&body)?;
    let p = svc::patch(&s.ctx(), &id, patch, actor).await?;
    Ok(pushed(StatusCode::OK, &p))
}

async fn get_load(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(load_json(&svc::get(&s.ctx(), &id).await?)))
}

#[derive(Deserialize)]
struct LoadList {
    site: Option<String>,
}

async fn list_loads(
    State(s): State<ApiState>,
    Query(p): Query<LoadList>,
) -> Result<Json<Value>, ApiError> {
    let views = svc::list(&s.ctx(), p.site.as_deref()).await?;
    Ok(Json(Value::Array(views.iter().map(load_json).collect())))
}
