//! REST for fuel inventory:
//!
//! * Sites: `POST /api/v1/sites` (before its agent's first hello),
//!   `GET`/`PATCH /api/v1/sites/{site}` (name, time zone, staleness).
//! * Tanks: `GET /api/v1/tanks?site=&q=&product=&risk=&freshness=`
//!   (paged), `GET`/`PUT`/`DELETE /api/v1/sites/{site}/tanks/{tank}`.
//! * Observations: `POST /api/v1/inventory/observations` (one or a
//!   batch), `POST /api/v1/sites/{site}/inventory/import` (CSV, as
//!   `text/csv` or `{"csv": "…"}`), each answered with a per-row report.
//! * `GET /api/v1/risk?site=&limit=&cursor=`: tanks by soonest runout with
//!   the next delivery's ETA and the margin.
//!
//! Every tank is shown with its freshness and age (computed at the
//! request from the maintained state), its flags and the winning source.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{AuditNote, Caller, noted};
use super::page::{self, PageParams};
use super::{ApiError, ApiState, Query, parse_body, ts};
use crate::domain::forecast::Risk;
use crate::domain::inventory::FreshnessKind;
use crate::services::inventory::{self as svc, SiteRequest, TankRequest};
use crate::services::observations::{self as obs_svc, ObservationsRequest};
use crate::store::inventory::{SiteSettings, StateRow, TankFilter, TankRow};
use crate::wallclock::now_ms;

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "POST",
            "/api/v1/sites",
            Perm(P::Configure),
            "sites.create",
            post(create_site),
            with_body(
                d(
                    "Create a site before its agent's first hello (unscoped credentials)",
                    201,
                    Some(reference("SiteSettings")),
                ),
                "SiteRequest",
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}",
            Perm(P::Read),
            "sites.get",
            get(get_site),
            d("A site's settings", 200, Some(reference("SiteSettings"))),
        ),
        Route::new(
            "PATCH",
            "/api/v1/sites/{site}",
            Perm(P::Configure),
            "sites.update",
            patch(patch_site),
            with_body(
                d(
                    "Change a site's name, time zone or staleness threshold",
                    200,
                    Some(reference("SiteSettings")),
                ),
                "SiteRequest",
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/tanks",
            Perm(P::Read),
            "tanks.list",
            get(list_tanks),
            paged(
                "Tanks with their volume, freshness and age, flags, source, rate, runout and risk",
                "Tank",
                params_of::<super::inventory::TankList>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/tanks/{tank}",
            Perm(P::Read),
            "tanks.get",
            get(get_tank),
            d("A tank with its state", 200, Some(reference("Tank"))),
        ),
        Route::new(
            "PUT",
            "/api/v1/sites/{site}/tanks/{tank}",
            Perm(P::Configure),
            "tanks.put",
            put(put_tank),
            with_body(
                d(
                    "Create (201) or replace (200) a tank's settings",
                    200,
                    Some(reference("Tank")),
                ),
                "TankRequest",
            ),
        ),
        Route::new(
            "DELETE",
            "/api/v1/sites/{site}/tanks/{tank}",
            Perm(P::Configure),
            "tanks.delete",
            delete(delete_tank),
            d(
                "Remove a tank, its state and observations (204 also when there was none)",
                204,
                None,
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/inventory/observations",
            Perm(P::Loads),
            "observations.create",
            post(post_observations),
            with_body(
                d(
                    "Push one observation or a batch; a per-item report (repeats are no-ops)",
                    200,
                    Some(reference("ImportReport")),
                ),
                "ObservationsRequest",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/sites/{site}/inventory/import",
            Perm(P::Loads),
            "observations.import",
            post(import),
            with_body(
                d(
                    "Import observations as CSV (text/csv, or {\"csv\": ...}); good rows stored in one transaction, bad ones reported by row and column; a repeat is a no-op",
                    200,
                    Some(reference("ImportReport")),
                ),
                "CsvBody",
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/risk",
            Perm(P::Read),
            "risk.list",
            get(risk),
            paged(
                "Tanks by soonest runout, with the next delivery's ETA and the margin",
                "Tank",
                params_of::<super::inventory::RiskList>(),
            ),
        ),
    ]
}

pub fn site_json(s: &SiteSettings) -> Value {
    json!({
        "site": s.site_id, "name": s.name, "time_zone": s.time_zone,
        "stale_after_h": s.stale_after_ms as f64 / 3_600_000.0,
        "holidays": s.holidays.0,
        "first_seen": (s.first_seen_ms.ms() > 0).then(|| ts(s.first_seen_ms.ms())),
        "last_seen": (s.last_seen_ms.ms() > 0).then(|| ts(s.last_seen_ms.ms())),
    })
}

/// A tank with its state; freshness and age as of `now` against the
/// site's threshold.
pub fn tank_json(t: &TankRow, st: Option<&StateRow>, stale_after_ms: i64, now: i64) -> Value {
    let observed = st.and_then(|s| s.observed_ms).map(|t| t.ms());
    let fresh = crate::domain::inventory::freshness(observed, now, stale_after_ms);
    let flags: Vec<&str> = st
        .map(|s| s.flags.split(',').filter(|f| !f.is_empty()).collect())
        .unwrap_or_default();
    json!({
        "site": t.site_id, "tank": t.tank_id, "name": t.name, "product": t.product,
        "capacity_l": t.capacity_l, "low_l": t.low_l, "critical_l": t.critical_l, "floor_l": t.floor_l,
        "water_limit_mm": t.water_limit_mm,
        "volume_l": st.and_then(|s| s.volume_l),
        "reading_l": st.and_then(|s| s.reading_l),
        "fill_pct": st.and_then(|s| s.volume_l).map(|v| (v / t.capacity_l * 1000.0).round() / 10.0),
        "water_mm": st.and_then(|s| s.water_mm),
        "observed_at": observed.map(ts),
        "source": st.and_then(|s| s.source),
        "confidence": st.and_then(|s| s.confidence),
        "freshness": fresh.kind(),
        "age_s": fresh.age_ms().map(|a| a / 1000),
        "stale_after_h": stale_after_ms as f64 / 3_600_000.0,
        "flags": flags,
        "rate_lph": st.and_then(|s| s.rate_lph),
        "rate_basis": st.and_then(|s| s.rate_basis),
        "rate_confidence": st.and_then(|s| s.rate_confidence),
        "hours_to_runout": st.and_then(|s| s.hours_to_runout),
        "runout_at": st.and_then(|s| s.runout_ms).map(ts),
        "runout_p10_at": st.and_then(|s| s.runout_p10_ms).map(ts),
        "runout_p90_at": st.and_then(|s| s.runout_p90_ms).map(ts),
        "risk": st.map(|s| s.risk).unwrap_or(Risk::Unknown),
        "next_load": st.and_then(|s| s.next_load_id.clone()),
        "next_eta": st.and_then(|s| s.next_eta_ms).map(ts),
        "margin_h": st.and_then(|s| s.margin_h),
        "evaluated_at": st.map(|s| ts(s.evaluated_ms)),
    })
}

fn note(target: String, summary: Value) -> AuditNote {
    AuditNote {
        target: Some(target),
        summary,
        ..AuditNote::default()
    }
}

async fn create_site(
    State(s): State<ApiState>,
    Caller(p): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: SiteRequest = parse_body(&body)?;
    let site = svc::create_site(&s.ctx(&p), req).await?;
    let v = site_json(&site);
    Ok(noted(
        (StatusCode::CREATED, Json(v.clone())).into_response(),
        note(format!("site {}", site.site_id), json!({ "after": v })),
    ))
}

async fn get_site(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let site = super::site_param(&site)?;
    Ok(Json(site_json(&svc::site(&s.ctx(&p), &site).await?)))
}

async fn patch_site(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    let req: SiteRequest = parse_body(&body)?;
    let (before, after) = svc::update_site(&s.ctx(&p), &site, req).await?;
    Ok(noted(
        Json(site_json(&after)).into_response(),
        site_change_note(&before, &after),
    ))
}

/// The audit note of a site's settings changed (REST and console alike):
/// the site, its settings before and after.
pub fn site_change_note(before: &SiteSettings, after: &SiteSettings) -> AuditNote {
    note(
        format!("site {}", after.site_id),
        json!({ "before": site_json(before), "after": site_json(after) }),
    )
}

/// `GET /api/v1/tanks` filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TankList {
    pub site: Option<String>,
    /// A prefix of the site id or a part of the site's name.
    pub q: Option<String>,
    pub product: Option<String>,
    /// unknown | low | medium | high | critical
    pub risk: Option<String>,
    /// fresh | stale | never (as of the last evaluation)
    pub freshness: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn list_tanks(
    State(s): State<ApiState>,
    Caller(p): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<TankList>,
) -> Result<Response, ApiError> {
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let after = pg.after_pair('/')?;
    let after = after.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
    let ctx = s.ctx(&p);
    let risk = super::query_enum::<Risk>("risk", q.risk.as_deref())?;
    let freshness = super::query_enum::<FreshnessKind>("freshness", q.freshness.as_deref())?;
    let rows = svc::tanks(
        &ctx,
        TankFilter {
            site: q.site.as_deref(),
            q: q.q.as_deref(),
            product: q.product.as_deref(),
            risk,
            freshness,
            sites: None,
            after,
            limit: limit + 1,
        },
    )
    .await?;
    let th = svc::stale_thresholds(&ctx).await?;
    let now = now_ms();
    let items = rows
        .iter()
        .map(|(t, st)| {
            tank_json(
                t,
                st.as_ref(),
                th.get(t.site_id.as_str())
                    .copied()
                    .unwrap_or(crate::domain::inventory::DEFAULT_STALE_MS),
                now,
            )
        })
        .collect();
    Ok(page::respond(&uri, items, limit, |v| {
        format!(
            "{}/{}",
            v["site"].as_str().unwrap_or_default(),
            v["tank"].as_str().unwrap_or_default()
        )
    }))
}

async fn get_tank(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path((site, tank)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let site = super::site_param(&site)?;
    let tank = super::id_param::<crate::domain::AssetId>(&tank, "tank")?;
    let ctx = s.ctx(&p);
    let st = svc::site(&ctx, &site).await?;
    let (t, state) = svc::tank(&ctx, &site, &tank).await?;
    Ok(Json(tank_json(
        &t,
        state.as_ref(),
        st.stale_after_ms,
        now_ms(),
    )))
}

async fn put_tank(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path((site, tank)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    let req: TankRequest = parse_body(&body)?;
    let ctx = s.ctx(&p);
    let before = s.db.inventory().tank(&site, &tank).await?;
    let (row, new) = svc::put_tank(&ctx, &site, &tank, req).await?;
    let st = svc::site(&ctx, &site).await?;
    let v = tank_json(&row, None, st.stale_after_ms, now_ms());
    let settings = |t: &TankRow| {
        json!({ "name": t.name, "product": t.product, "capacity_l": t.capacity_l, "low_l": t.low_l,
                "critical_l": t.critical_l, "floor_l": t.floor_l, "water_limit_mm": t.water_limit_mm })
    };
    Ok(noted(
        (
            if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(v),
        )
            .into_response(),
        note(
            format!("tank {site}/{tank}"),
            json!({ "before": before.as_ref().map(settings), "after": settings(&row) }),
        ),
    ))
}

async fn delete_tank(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path((site, tank)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    let existed = svc::delete_tank(&s.ctx(&p), &site, &tank).await?;
    // deleting what is not there is done too (DELETE is idempotent)
    Ok(noted(
        StatusCode::NO_CONTENT.into_response(),
        note(format!("tank {site}/{tank}"), json!({ "deleted": existed })),
    ))
}

fn report_response(r: &obs_svc::ImportReport, target: String) -> Response {
    let v = serde_json::to_value(r).unwrap_or_default();
    let summary = json!({ "rows": r.rows, "added": r.added, "unchanged": r.unchanged, "rejected": r.rejected });
    noted(Json(v).into_response(), note(target, summary))
}

async fn post_observations(
    State(s): State<ApiState>,
    Caller(p): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ObservationsRequest = parse_body(&body)?;
    // the trail's site: the one site of the push, if it names one
    let site = match &req {
        ObservationsRequest::One(o) => Some(o.site.clone()),
        ObservationsRequest::Batch { observations } => observations
            .first()
            .map(|o| o.site.clone())
            .filter(|s| observations.iter().all(|o| &o.site == s)),
    };
    let r = obs_svc::push(&s.ctx(&p), req, &p.actor.to_string()).await?;
    let mut resp = report_response(&r, "observations".into());
    if let Some(n) = resp.extensions_mut().get_mut::<AuditNote>() {
        n.site = site;
    }
    Ok(resp)
}

/// `{"csv": "…"}`: the import as JSON.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvBody {
    /// The CSV text: a header row, then one row per item.
    pub csv: String,
}

/// The CSV text of an import: the body as `text/csv`, or `{"csv": …}`.
pub fn csv_text(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/csv"));
    if is_csv {
        String::from_utf8(body.to_vec()).map_err(|_| ApiError::invalid("csv", "not UTF-8 text"))
    } else {
        Ok(parse_body::<CsvBody>(body)?.csv)
    }
}

async fn import(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    let text = csv_text(&headers, &body)?;
    let r = obs_svc::import(&s.ctx(&p), &site, &text, &p.actor.to_string()).await?;
    Ok(report_response(&r, format!("site {site} observations")))
}

/// `GET /api/v1/risk` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RiskList {
    pub site: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn risk(
    State(s): State<ApiState>,
    Caller(p): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<RiskList>,
) -> Result<Response, ApiError> {
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let offset = page::after_i64(&pg)?.unwrap_or(0).max(0);
    let ctx = s.ctx(&p);
    if let Some(site) = &q.site {
        ctx.visible(site, "site", || format!("no site {site:?}"))?;
    }
    let sites = ctx.scope.sites();
    let rows =
        s.db.inventory()
            .by_runout(sites.as_deref(), q.site.as_deref(), offset, limit + 1)
            .await?;
    let th = svc::stale_thresholds(&ctx).await?;
    let now = now_ms();
    let items: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (t, st))| {
            let mut v = tank_json(
                t,
                st.as_ref(),
                th.get(t.site_id.as_str())
                    .copied()
                    .unwrap_or(crate::domain::inventory::DEFAULT_STALE_MS),
                now,
            );
            v["position"] = json!(offset + i as i64 + 1);
            v
        })
        .collect();
    Ok(page::respond(&uri, items, limit, |v| {
        v["position"].to_string()
    }))
}
