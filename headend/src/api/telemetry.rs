//! The operator REST API (read side of telemetry). Bound to loopback by
//! default until REST authentication lands (a later issue).
//!
//! * `GET /health`: the process is alive (always 200).
//! * `GET /ready`: 200 when the database answers, else 503.
//! * `GET /metrics`: Prometheus (OpenMetrics) text.
//! * `GET /api/v1/sites`
//! * `GET /api/v1/sites/{site}/assets`: assets with the latest value per field.
//! * `GET /api/v1/sites/{site}/assets/{asset}/readings?field=&from=&to=&limit=&order=`:
//!   history, oldest first (`order=desc`: newest first, so `limit=1` is the
//!   latest); `from`/`to` are RFC 3339 or Unix ms; a bad reading's value is null.
//! * `GET /api/v1/sites/{site}/assets/{asset}/rollups?field=&from=&to=&limit=`:
//!   hourly min/max/mean/last/count per field, oldest first (kept longer
//!   than raw readings: long ranges read these).
//! * `GET /api/v1/sites/{site}/devices`: the site's devices and their health
//! * `GET /api/v1/sites/{site}/deliveries`: deliveries the site reported
//!   (newest first), each with its source: `gauge` (the tank gauge's own
//!   record) or `detector` (the agent's volume-rise detector).
//! * `GET /api/v1/sites/{site}/gaps`: data the site's agent had to drop
//!   (full disk, corruption): "data lost at site X between T1 and T2".
//! * Commands and loads: see [`super::commands`] and [`super::loads`].

use super::Query;
use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::page::{self, PageParams};
use super::{ApiError, ApiState, Caller, query_time, ts};
use crate::domain::UnixMs;
use crate::store::{Db, ReadingQuery, RollupQuery};

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "GET",
            "/health",
            Public,
            "health",
            get(|| async { "ok" }),
            Doc {
                text: true,
                ..d("The process is alive", 200, None)
            },
        ),
        Route::new(
            "GET",
            "/ready",
            Public,
            "ready",
            get(ready),
            Doc {
                text: true,
                also: vec![(
                    503,
                    json!({"description": "The database does not answer",
                        "content": {"text/plain; charset=utf-8": {"schema": {"type": "string"}}}}),
                )],
                ..d("The database answers (else 503)", 200, None)
            },
        ),
        Route::new(
            "GET",
            "/metrics",
            Perm(P::Metrics),
            "metrics",
            get(metrics),
            Doc {
                text: true,
                media: Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                ..d("Prometheus metrics (OpenMetrics text)", 200, None)
            },
        ),
        Route::new(
            "GET",
            "/api/v1/sites",
            Perm(P::Read),
            "sites.list",
            get(sites),
            paged(
                "Sites in the caller's scope",
                "Site",
                params_of::<PageParams>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/assets",
            Perm(P::Read),
            "assets.list",
            get(assets),
            paged(
                "A site's assets with their latest values",
                "Asset",
                params_of::<PageParams>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/assets/{asset}/readings",
            Perm(P::Read),
            "readings.list",
            get(readings),
            Doc {
                paged: false,
                ..paged(
                    "History of an asset's readings",
                    "Reading",
                    params_of::<telemetry::HistoryParams>(),
                )
            },
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/assets/{asset}/rollups",
            Perm(P::Read),
            "rollups.list",
            get(rollups),
            Doc {
                paged: false,
                ..paged(
                    "Hourly rollups of an asset",
                    "Rollup",
                    params_of::<telemetry::HistoryParams>(),
                )
            },
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/gaps",
            Perm(P::Read),
            "gaps.list",
            get(gaps),
            paged(
                "Data the site had to drop",
                "Gap",
                params_of::<PageParams>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/deliveries",
            Perm(P::Read),
            "deliveries.list",
            get(deliveries),
            paged(
                "Deliveries the site reported",
                "Delivery",
                params_of::<PageParams>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/devices",
            Perm(P::Read),
            "devices.list",
            get(devices),
            paged(
                "The site's devices and their health",
                "Device",
                params_of::<PageParams>(),
            ),
        ),
    ]
}

/// Answers within [`READY_WITHIN`] whatever the database does (a load
/// balancer's check gives up after 2-5 s and must see a 503, not a hang).
async fn ready(State(s): State<ApiState>) -> Response {
    use crate::error::Outage;
    use crate::store::Readiness;
    let (outage, why) = match tokio::time::timeout(READY_WITHIN, s.db.readiness()).await {
        Ok(Readiness::Ready) => return (StatusCode::OK, "ready").into_response(),
        Ok(r @ Readiness::ReadOnly) => (Outage::ReadOnly, r.reason()),
        Ok(r @ Readiness::Unavailable(_)) => (Outage::Unavailable, r.reason()),
        Err(_) => (
            Outage::Unavailable,
            format!("database: no answer within {} ms", READY_WITHIN.as_millis()),
        ),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, outage.code(), why).into_response()
}

/// How long a scrape waits for the fleet's figures.
const FLEET_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

/// `/ready`'s own deadline.
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(900);

/// A page of a list kept whole in memory (bounded by the store), keyed
/// by `key` in order: the items after the cursor's key.
fn page_in_memory(
    uri: &Uri,
    p: &PageParams,
    items: Vec<Value>,
    key: fn(&Value) -> String,
) -> Result<Response, ApiError> {
    let limit = p.limit()?;
    let after = p.after()?;
    let items: Vec<Value> = items
        .into_iter()
        .filter(|v| after.as_ref().is_none_or(|a| key(v) > *a))
        .take(limit as usize + 1)
        .collect();
    Ok(page::respond(uri, items, limit, key))
}

/// A page of a list kept whole in memory in its own order, by position.
fn page_by_position(uri: &Uri, p: &PageParams, items: Vec<Value>) -> Result<Response, ApiError> {
    let limit = p.limit()?;
    let from = page::after_i64(p)?.map_or(0, |i| i + 1).max(0) as usize;
    let items: Vec<Value> = items
        .into_iter()
        .enumerate()
        .skip(from)
        .take(limit as usize + 1)
        .map(|(i, mut v)| {
            v["position"] = json!(i);
            v
        })
        .collect();
    Ok(page::respond(uri, items, limit, |v| {
        v["position"].to_string()
    }))
}

async fn sites(
    State(s): State<ApiState>,
    Caller(c): Caller,
    OriginalUri(uri): OriginalUri,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let views = crate::services::sites::list(&s.ctx(&c), &s.sessions, None).await?;
    let items = views
        .into_iter()
        .map(|v| {
            let connected = v.connected();
            // this replica's session with its link, or where another holds it
            let session = match (v.session, v.elsewhere) {
                (Some(s), _) => serde_json::to_value(s).unwrap_or_default(),
                (None, Some(e)) => serde_json::to_value(e).unwrap_or_default(),
                (None, None) => Value::Null,
            };
            let r = v.row;
            json!({
                "site_id": r.site_id,
                "name": r.name,
                "time_zone": r.time_zone,
                "agent_version": r.agent_version,
                // the site PC's clock against the headend's at its last session
                "clock": r.clock_skew_ms.map(|k| json!({
                    "skew_ms": k,
                    "skew": crate::domain::clock::describe(k),
                    "corrected": k.abs() > crate::domain::clock::IN_SYNC_MS,
                    "checked": r.clock_checked_ms.map(ts),
                })),
                "assets": r.assets,
                "first_seen": ts(r.first_seen_ms),
                "last_seen": ts(r.last_seen_ms),
                "connected": connected,
                "session": session,
                // the site's data is failing to commit (it is resent; nothing acknowledged)
                "ingest_error": v.ingest_error.map(|e| json!({
                    "since": ts(e.since_ms), "last": ts(e.last_ms),
                    "failures": e.failures, "error": e.error,
                })),
            })
        })
        .collect();
    page_in_memory(&uri, &p, items, |v| {
        v["site_id"].as_str().unwrap_or_default().to_string()
    })
}

async fn site_or_404(db: &Db, site: &crate::domain::SiteId) -> Result<(), ApiError> {
    if db.site_exists(site).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no site {site:?}"),
        ))
    }
}

async fn assets(
    State(s): State<ApiState>,
    Path(site): Path<String>,
    OriginalUri(uri): OriginalUri,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    site_or_404(&s.db, &site).await?;
    let mut rows = s.db.assets(&site).await?;
    rows.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    let items = rows.into_iter()
            .map(|a| {
                let fields: serde_json::Map<String, Value> = a
                    .fields
                    .into_iter()
                    .map(|f| {
                        (
                            f.field,
                            json!({
                                // the last good value; null if the point was never good
                                "value": if f.good_ts_ms.ms() > 0 { json!(f.value) } else { Value::Null },
                                "unit": f.unit,
                                "quality": f.quality.as_str(),
                                "error": if f.error.is_empty() { Value::Null } else { Value::String(f.error) },
                                "source_ts": ts(f.source_ts_ms),
                                "received_ts": ts(f.received_ts_ms),
                                "last_good_ts": ts(f.good_ts_ms),
                                "source": f.source,
                            }),
                        )
                    })
                    .collect();
                json!({
                    "asset_id": a.asset_id,
                    "kind": a.kind.map_or("unknown", |k| k.as_str()),
                    "name": a.name,
                    "product": a.product,
                    "capacity": a.capacity,
                    "capacity_unit": a.capacity_unit,
                    "details": a.details,
                    "fields": fields,
                })
            })
            .collect();
    page_in_memory(&uri, &p, items, |v| {
        v["asset_id"].as_str().unwrap_or_default().to_string()
    })
}

/// `?field=&from=&to=&limit=&order=`: a window of history. The next
/// page starts after the last item's `source_ts_ms` (`hour_ms`).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// One field only.
    pub field: Option<String>,
    /// RFC 3339 or Unix ms (inclusive).
    pub from: Option<String>,
    /// RFC 3339 or Unix ms (inclusive).
    pub to: Option<String>,
    /// 1 to 10000 (default 1000).
    pub limit: Option<i64>,
    /// asc (oldest first, default) or desc; readings only.
    pub order: Option<String>,
}

/// The order of a history: `asc` (oldest first, the default) or `desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            other => Err(format!(
                "query parameter order={other:?}: use asc (oldest first) or desc (newest first)"
            )),
        }
    }
}

async fn readings(
    State(s): State<ApiState>,
    Path((site, asset)): Path<(String, String)>,
    Query(p): Query<HistoryParams>,
) -> Result<Json<Value>, ApiError> {
    let site = super::site_param(&site)?;
    let asset = super::id_param::<crate::domain::AssetId>(&asset, "asset")?;
    site_or_404(&s.reads, &site).await?;
    let (from_ms, to_ms, limit) = window(&p)?;
    let order = match p.order.as_deref() {
        None => Order::Asc,
        Some(o) => o
            .parse::<Order>()
            .map_err(|e| ApiError::invalid("order", e))?,
    };
    let rows = s
        .reads
        .readings(&ReadingQuery {
            site: &site,
            asset: &asset,
            field: p.field.as_deref(),
            from_ms,
            to_ms,
            limit,
            newest_first: order == Order::Desc,
        })
        .await?;
    Ok(Json(Value::Array(
        rows.into_iter()
            .map(|r| {
                json!({
                    "seq": r.seq,
                    "field": r.field,
                    // a bad reading's value carries no information
                    "value": r.value,
                    "unit": r.unit,
                    "quality": r.quality.as_str(),
                    "error": r.error,
                    "source_ts": ts(r.source_ts_ms),
                    "source_ts_ms": r.source_ts_ms,
                    "source": r.source,
                })
            })
            .collect(),
    )))
}

/// `from`, `to` and `limit` of a history query, checked.
fn window(p: &HistoryParams) -> Result<(UnixMs, UnixMs, i64), ApiError> {
    let from_ms = p
        .from
        .as_deref()
        .map(|v| query_time("from", v))
        .transpose()?
        .unwrap_or(UnixMs::from_ms(0));
    let to_ms =
        p.to.as_deref()
            .map(|v| query_time("to", v))
            .transpose()?
            .unwrap_or(UnixMs::from_ms(i64::MAX));
    let limit = p.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be from 1 to 10000"));
    }
    Ok((from_ms, to_ms, limit))
}

async fn rollups(
    State(s): State<ApiState>,
    Path((site, asset)): Path<(String, String)>,
    Query(p): Query<HistoryParams>,
) -> Result<Json<Value>, ApiError> {
    let site = super::site_param(&site)?;
    let asset = super::id_param::<crate::domain::AssetId>(&asset, "asset")?;
    site_or_404(&s.reads, &site).await?;
    if p.order.is_some() {
        return Err(ApiError::invalid(
            "order",
            "rollups are oldest first; order is not a parameter here",
        ));
    }
    let (from_ms, to_ms, limit) = window(&p)?;
    let rows = s
        .reads
        .rollups(&RollupQuery {
            site: &site,
            asset: &asset,
            field: p.field.as_deref(),
            from_ms,
            to_ms,
            limit,
        })
        .await?;
    Ok(Json(Value::Array(
        rows.into_iter()
            .map(|r| {
                json!({
                    "field": r.field,
                    "unit": r.unit,
                    "hour": ts(r.hour_ms),
                    "hour_ms": r.hour_ms,
                    "count": r.n,
                    "min": r.min,
                    "max": r.max,
                    "mean": r.mean,
                    "last": r.last,
                    "last_ts": ts(r.last_ts_ms),
                })
            })
            .collect(),
    )))
}

async fn deliveries(
    State(s): State<ApiState>,
    Path(site): Path<String>,
    OriginalUri(uri): OriginalUri,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    site_or_404(&s.db, &site).await?;
    let rows = s.db.delivery_events(&site, 1000).await?;
    let items = rows
        .into_iter()
        .map(|d| {
            let ended = d.phase == crate::domain::deliveries::DeliveryPhase::Ended;
            json!({
                "phase": d.phase,
                "source": d.source,
                "verdict": d.verdict,
                "tank": d.tank,
                "load_id": (!d.load_id.is_empty()).then_some(d.load_id),
                "start": ts(d.start_ms),
                "end": ended.then(|| ts(d.end_ms)),
                "start_volume_l": d.start_volume_l,
                "end_volume_l": ended.then_some(d.end_volume_l),
                "delivered_volume_l": ended.then_some(d.delivered_volume_l),
                "reported": ts(d.ingested_ms),
            })
        })
        .collect();
    page_by_position(&uri, &p, items)
}

async fn gaps(
    State(s): State<ApiState>,
    Path(site): Path<String>,
    OriginalUri(uri): OriginalUri,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    site_or_404(&s.db, &site).await?;
    let rows = s.db.gaps(&site, 1000).await?;
    let items = rows
        .into_iter()
        .map(|g| {
            json!({
                "log_id": (g.log_id as u64).to_string(),
                "first_seq": g.first_seq,
                "last_seq": g.last_seq,
                "count": g.count,
                "class": g.class,
                "reason": g.reason,
                "device": g.device,
                "from": ts(g.from_ts_ms),
                "to": ts(g.to_ts_ms),
                "reported": ts(g.ingested_ms),
                "gap_record_seq": g.seq,
            })
        })
        .collect();
    page_by_position(&uri, &p, items)
}

/// The site's devices as its agent last reported them.
async fn devices(
    State(s): State<ApiState>,
    Path(site): Path<String>,
    OriginalUri(uri): OriginalUri,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    site_or_404(&s.db, &site).await?;
    let rows = s.db.devices(&site).await?;
    let items = rows
        .into_iter()
        .map(|d| {
            json!({
                "device": d.device,
                "kind": d.kind,
                "connected": d.connected != 0,
                "last_good": (d.last_good_ms.ms() > 0).then(|| ts(d.last_good_ms.ms())),
                "last_error": d.last_error,
                "last_error_at": (d.last_error_ms.ms() > 0).then(|| ts(d.last_error_ms.ms())),
                "errors": d.errors,
                "reconnects": d.reconnects,
                "shed": d.shed,
                "source_gaps": d.gaps,
                "malformed": d.malformed,
                "reported": ts(d.reported_ms),
            })
        })
        .collect();
    page_by_position(&uri, &p, items)
}

async fn metrics(State(s): State<ApiState>) -> Response {
    s.metrics
        .sites_failing
        .set(s.sessions.failing_sites() as i64);
    // the fleet's figures, if the database answers at once (else the last
    // ones stand; `database_ready` says why)
    let ctx = s.system_ctx();
    let read = crate::services::fleet::fleet(&ctx, &s.sessions, crate::wallclock::now_ms());
    if let Ok(Ok(f)) = tokio::time::timeout(FLEET_WITHIN, read).await {
        for (figure, v) in [
            ("sites", f.sites),
            ("connected", f.connected),
            ("silent", f.silent),
            ("devices_down", f.devices_down),
            ("certificates_expiring", f.certificates_expiring),
            ("commands_failed", f.commands_failed),
        ] {
            s.metrics
                .fleet
                .get_or_create(&crate::metrics::FigureLabel { figure })
                .set(v);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
