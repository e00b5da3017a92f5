//! REST for loads (planned deliveries).
//!
//! * `POST /api/v1/loads`; `PATCH /api/v1/loads/{id}` (ETA update with its
//!   source, planned volume, `status: cancelled`): every change pushes an
//!   ETA action to the site, and the answer carries the load and that
//!   command.
//! * `GET /api/v1/loads?site=&limit=&cursor=` (by ETA, paged), `GET /api/v1/loads/{id}`.

use super::Query;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{AuditNote, noted};
use super::commands::command_json;
use super::page::{self, PageParams};
use super::{ApiError, ApiState, Caller, parse_body, ts};
use crate::services::loads::{self as svc, LoadPatch, LoadRequest, LoadView, Pushed};

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "POST",
            "/api/v1/loads",
            Perm(P::Loads),
            "loads.create",
            post(post_load),
            with_body(
                d(
                    "Plan a delivery (pushes its ETA to the site)",
                    201,
                    Some(reference("LoadPushed")),
                ),
                "LoadRequest",
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/loads",
            Perm(P::Read),
            "loads.list",
            get(list_loads),
            paged("Loads by ETA", "Load", params_of::<loads::LoadList>()),
        ),
        Route::new(
            "GET",
            "/api/v1/loads/{id}",
            Perm(P::Read),
            "loads.get",
            get(get_load),
            d("A load with its events", 200, Some(reference("Load"))),
        ),
        Route::new(
            "PATCH",
            "/api/v1/loads/{id}",
            Perm(P::Loads),
            "loads.update",
            patch(patch_load),
            with_body(
                d(
                    "Change a load's ETA, volume or status",
                    200,
                    Some(reference("LoadPushed")),
                ),
                "LoadPatch",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/sites/{site}/loads/import",
            Perm(P::Loads),
            "loads.import",
            post(import_loads),
            with_body(
                d(
                    "Import loads as CSV (text/csv, or {\"csv\": ...}): new references planned, known ones updated under the ETA source ranking, all in one transaction; bad rows reported by row and column; a repeat is a no-op",
                    200,
                    Some(reference("ImportReport")),
                ),
                "CsvBody",
            ),
        ),
    ]
}

fn load_json(v: &LoadView) -> Value {
    let l = &v.load;
    json!({
        "load_id": l.load_id,
        "reference": l.reference,
        "carrier": l.carrier,
        "site": l.site_id,
        "tanks": l.tank_ids(),
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
        "timing": l.timing,
        // planned against delivered, once delivered (the gauge's record
        // beats the detector's): off by more than 2 % or 100 L is flagged
        "reconciliation": l.delivered_volume_l.map(|d| {
            let (diff, flagged) = crate::domain::load::discrepancy(l.planned_volume_l, d);
            json!({ "planned_l": l.planned_volume_l, "delivered_l": d, "difference_l": diff, "flagged": flagged })
        }),
        "last_command_id": l.last_command_id,
        "created_at": ts(l.created_ms),
        "updated_at": ts(l.updated_ms),
        "events": v.events.iter().map(|e| json!({
            "at": ts(e.at_ms), "kind": e.kind, "detail": e.detail, "by": e.actor,
        })).collect::<Vec<_>>(),
        "etas": v.etas.iter().map(|e| json!({
            "at": ts(e.at_ms), "eta": ts(e.eta_ms), "eta_ms": e.eta_ms, "source": e.source,
            "by": e.actor, "applied": e.applied == 1,
        })).collect::<Vec<_>>(),
    })
}

/// The load and the ETA command its change pushed, with the audit note.
fn pushed(code: StatusCode, p: &Pushed, before: Option<Value>) -> Response {
    let l = &p.load.load;
    let after = json!({
        "site": l.site_id, "eta_ms": l.eta_ms, "eta_source": l.eta_source, "status": l.status,
        "planned_volume_l": l.planned_volume_l, "command": p.command.as_ref().map(|c| &c.row.command_id),
        "eta_applied": p.eta_applied,
    });
    noted(
        (
            code,
            Json(json!({
                "load": load_json(&p.load),
                "command": p.command.as_ref().map(command_json),
                "eta_applied": p.eta_applied,
            })),
        )
            .into_response(),
        AuditNote {
            target: Some(l.load_id.to_string()),
            summary: json!({ "before": before, "after": after }),
            site: Some(l.site_id.to_string()),
            ..AuditNote::default()
        },
    )
}

async fn post_load(
    State(s): State<ApiState>,
    Caller(p): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: LoadRequest = parse_body(&body)?;
    let pushed_ = svc::create(&s.ctx(&p), req, p.actor.clone()).await?;
    Ok(pushed(StatusCode::CREATED, &pushed_, None))
}

async fn patch_load(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = super::id_param::<crate::domain::LoadId>(&id, "load")?;
    let patch: LoadPatch = parse_body(&body)?;
    let ctx = s.ctx(&p);
    let before = svc::get(&ctx, &id).await?.load;
    let before = json!({
        "eta_ms": before.eta_ms, "eta_source": before.eta_source, "status": before.status,
        "planned_volume_l": before.planned_volume_l,
    });
    let pushed_ = svc::patch(&ctx, &id, patch, p.actor.clone()).await?;
    Ok(pushed(StatusCode::OK, &pushed_, Some(before)))
}

async fn get_load(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = super::id_param::<crate::domain::LoadId>(&id, "load")?;
    Ok(Json(load_json(&svc::get(&s.ctx(&p), &id).await?)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoadList {
    /// Only this site's loads.
    pub site: Option<String>,
    /// Only loads in this status: planned, delivering, delivered or cancelled.
    pub status: Option<String>,
    /// Only loads due from this time (RFC 3339 with its offset, or Unix ms).
    pub eta_from: Option<String>,
    /// Only loads due until this time.
    pub eta_to: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn list_loads(
    State(s): State<ApiState>,
    Caller(p): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<LoadList>,
) -> Result<Response, ApiError> {
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let after = pg.after_i64_id()?;
    let after = after.as_ref().map(|(eta, id)| (*eta, id.as_str()));
    let status = super::query_enum::<crate::domain::LoadStatus>("status", q.status.as_deref())?;
    let filter = crate::store::loads::LoadFilter {
        site: q.site.as_deref(),
        status,
        eta_from: q
            .eta_from
            .as_deref()
            .map(|v| super::query_time("eta_from", v))
            .transpose()?,
        eta_to: q
            .eta_to
            .as_deref()
            .map(|v| super::query_time("eta_to", v))
            .transpose()?,
        text: None,
    };
    let views = svc::list(&s.ctx(&p), &filter, after, limit + 1).await?;
    let items = views.iter().map(load_json).collect();
    Ok(page::respond(&uri, items, limit, |v| {
        format!(
            "{}:{}",
            v["eta_ms"],
            v["load_id"].as_str().unwrap_or_default()
        )
    }))
}

/// `POST /api/v1/sites/{site}/loads/import`: a CSV of loads (`text/csv`
/// or `{"csv": "…"}`), answered with a per-row report.
async fn import_loads(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    let text = super::inventory::csv_text(&headers, &body)?;
    let r = crate::services::load_import::import(&s.ctx(&p), &site, &text, p.actor.clone()).await?;
    let summary = json!({ "rows": r.rows, "added": r.added, "updated": r.updated, "unchanged": r.unchanged, "rejected": r.rejected });
    let v = serde_json::to_value(&r).unwrap_or_default();
    Ok(noted(
        Json(v).into_response(),
        AuditNote {
            target: Some(format!("site {site} loads")),
            summary,
            ..AuditNote::default()
        },
    ))
}
