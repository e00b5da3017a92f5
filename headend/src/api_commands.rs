//! REST for the command plane.
//!
//! * `POST /api/v1/commands`: a setpoint (`kind: setpoint`, target `asset`,
//!   or `site` alone for a site-level target split across its assets) or
//!   an ETA push (`kind: eta`, `load_id`). Idempotent with
//!   `idempotency_key` (body) or the `Idempotency-Key` header: a repeat
//!   returns the first command (200), a key reused for another request is
//!   refused (422).
//! * `GET /api/v1/commands/{id}`: the command with its timeline.
//! * `GET /api/v1/commands?site=&state=&limit=`: newest first.
//! * `POST /api/v1/commands/{id}/cancel`
//! * `POST /api/v1/loads`, `PATCH /api/v1/loads/{id}` (ETA update with its
//!   source, planned volume, `status: cancelled`), `GET /api/v1/loads?site=`,
//!   `GET /api/v1/loads/{id}`: every change pushes an ETA action to the site.
//!
//! Errors are JSON `{"error": ..., "field": ...}` naming the field at fault.
//! Who: the `X-Operator` header (until REST auth lands) and the peer address.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::commands::{CommandRow, EtaPayload, LoadRow, LoadWrite, NewCommand, Submitted};
use crate::db::now_ms;
use crate::lifecycle;
use crate::rest::{ApiError, ApiState, parse_time, ts};
use crate::split;

/// Default expiry of a command, s.
pub const DEFAULT_EXPIRY_S: i64 = 3600;
/// Longest expiry and duration accepted, s (7 days).
pub const MAX_EXPIRY_S: i64 = 7 * 24 * 3600;
/// An asset with no good reading for this long is offline for a split, ms.
pub const ONLINE_WINDOW_MS: i64 = 5 * 60 * 1000;
const ETA_SOURCES: &[&str] = &["carrier_api", "email", "csv", "manual"];
/// Largest planned delivery, litres (a road tanker carries up to ~45,000).
pub const MAX_PLANNED_VOLUME_L: f64 = 1_000_000.0;
/// An ETA may lie this far in the past (a late delivery being updated), ms.
pub const ETA_PAST_MS: i64 = 30 * 24 * 3600 * 1000;
/// ... and this far in the future, ms.
pub const ETA_FUTURE_MS: i64 = 366 * 24 * 3600 * 1000;
/// Rounding step of a split: from this...
const MIN_STEP: f64 = 1e-6;
/// ...to this.
const MAX_STEP: f64 = 1e6;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/commands", post(post_command).get(list_commands))
        .route("/api/v1/commands/{id}", get(get_command))
        .route("/api/v1/commands/{id}/cancel", post(cancel_command))
        .route("/api/v1/loads", post(post_load).get(list_loads))
        .route("/api/v1/loads/{id}", get(get_load).patch(patch_load))
}

/// A 4xx naming the field at fault.
pub struct FieldError {
    status: StatusCode,
    field: String,
    msg: String,
}

fn bad(field: &str, msg: impl Into<String>) -> FieldError {
    FieldError {
        status: StatusCode::BAD_REQUEST,
        field: field.into(),
        msg: msg.into(),
    }
}

fn status(s: StatusCode, field: &str, msg: impl Into<String>) -> FieldError {
    FieldError {
        status: s,
        field: field.into(),
        msg: msg.into(),
    }
}

impl IntoResponse for FieldError {
    fn into_response(self) -> Response {
        let field = if self.field.is_empty() {
            Value::Null
        } else {
            Value::String(self.field.clone())
        };
        let error = if self.field.is_empty() {
            self.msg
        } else {
            format!("{}: {}", self.field, self.msg)
        };
        (self.status, Json(json!({ "error": error, "field": field }))).into_response()
    }
}

impl From<crate::Error> for FieldError {
    fn from(e: crate::Error) -> Self {
        let ApiError(s, msg) = ApiError::from(e);
        status(s, "", msg)
    }
}

/// Parses a JSON body; errors name the field path. Strings with control
/// characters or over 1,000 characters are refused (see `edge`).
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, FieldError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad("", format!("not valid JSON: {e}")))?;
    if let Some((path, problem)) = crate::edge::check_json(&v) {
        return Err(bad(&path, problem));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // "unknown field `x`" and "missing field `x`" are about a key at this path
        let field = if path == "." { String::new() } else { path };
        let field = if field.is_empty() {
            msg.split('`').nth(1).unwrap_or("").to_string()
        } else {
            field
        };
        bad(&field, msg)
    })
}

fn actor(headers: &HeaderMap, peer: SocketAddr) -> String {
    let who = headers
        .get("x-operator")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 100)
        .unwrap_or("anonymous");
    format!("operator {who} from {}", peer.ip())
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    /// `setpoint` or `eta`.
    kind: String,
    #[serde(default)]
    site: Option<String>,
    /// `asset` or `site/asset`; wins over `site`.
    #[serde(default)]
    asset: Option<String>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    duration_s: Option<f64>,
    #[serde(default)]
    expires_in_s: Option<i64>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    load_id: Option<String>,
    /// Rounding step of a site-level split. Default 0.1.
    #[serde(default)]
    step: Option<f64>,
    #[serde(default, skip_serializing)]
    idempotency_key: Option<String>,
}

fn expiry(
    expires_in_s: Option<i64>,
    expires_at: Option<&str>,
    default_s: i64,
) -> Result<i64, FieldError> {
    let now = now_ms();
    let at = match (expires_in_s, expires_at) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "expires_at",
                "give expires_at or expires_in_s, not both",
            ));
        }
        (Some(s), None) => {
            if !(1..=MAX_EXPIRY_S).contains(&s) {
                return Err(bad(
                    "expires_in_s",
                    format!("must be from 1 to {MAX_EXPIRY_S} (7 days), got {s}"),
                ));
            }
            now + s * 1000
        }
        (None, Some(t)) => {
            parse_time("expires_at", t).map_err(|ApiError(_, m)| bad("expires_at", m))?
        }
        (None, None) => now + default_s * 1000,
    };
    if at <= now {
        return Err(bad("expires_at", "is in the past"));
    }
    // a minute of slack for the client's clock
    if at > now + (MAX_EXPIRY_S + 60) * 1000 {
        return Err(bad(
            "expires_at",
            format!("must be within {MAX_EXPIRY_S} s (7 days) from now"),
        ));
    }
    Ok(at)
}

/// Resolves `asset` (`site/asset` or a bare id unique across sites, or
/// disambiguated by `site`) to (site, asset).
async fn resolve_asset(
    s: &ApiState,
    asset: &str,
    site: Option<&str>,
) -> Result<(String, String), FieldError> {
    if let Some((site, a)) = asset.split_once('/') {
        if !s.db.sites_with_asset(a).await?.iter().any(|x| x == site) {
            return Err(status(
                StatusCode::NOT_FOUND,
                "asset",
                format!("site {site:?} has no asset {a:?}"),
            ));
        }
        return Ok((site.to_string(), a.to_string()));
    }
    let sites = s.db.sites_with_asset(asset).await?;
    match (sites.as_slice(), site) {
        ([], _) => Err(status(
            StatusCode::NOT_FOUND,
            "asset",
            format!("no site has an asset {asset:?}"),
        )),
        ([one], _) => Ok((one.clone(), asset.to_string())),
        (many, Some(site)) if many.iter().any(|x| x == site) => {
            Ok((site.to_string(), asset.to_string()))
        }
        (many, _) => Err(bad(
            "asset",
            format!(
                "{asset:?} exists at several sites ({}); write it as SITE/{asset}",
                many.join(", ")
            ),
        )),
    }
}

#[derive(Deserialize)]
struct WritableJson {
    field: String,
    min: Option<f64>,
    max: Option<f64>,
}

async fn post_command(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FieldError> {
    let req: CommandRequest = parse_body(&body)?;
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = match (header_key, req.idempotency_key.clone()) {
        (Some(h), Some(b)) if h != b => {
            return Err(bad(
                "idempotency_key",
                "differs from the Idempotency-Key header; give one",
            ));
        }
        (h, b) => h.or(b),
    };
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(bad("idempotency_key", "must be 1 to 200 characters"));
    }
    let request = serde_json::to_string(&req).unwrap_or_default();
    let created_by = actor(&headers, peer);
    let mut warnings = Vec::new();
    let mut cmds = Vec::new();
    match req.kind.as_str() {
        "setpoint" => {
            let field = req
                .field
                .clone()
                .filter(|f| !f.is_empty())
                .ok_or_else(|| bad("field", "required for a setpoint (e.g. power_limit)"))?;
            let value = req
                .value
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad("value", "required for a setpoint, a number"))?;
            let duration_ms = match req.duration_s {
                None => 0,
                Some(d) if d > 0.0 && d <= MAX_EXPIRY_S as f64 => (d * 1000.0).round() as i64,
                Some(d) => {
                    return Err(bad(
                        "duration_s",
                        format!("must be > 0 and at most {MAX_EXPIRY_S} (7 days), got {d}"),
                    ));
                }
            };
            let expires_at_ms = expiry(
                req.expires_in_s,
                req.expires_at.as_deref(),
                DEFAULT_EXPIRY_S,
            )?;
            let base = NewCommand {
                idempotency_key: key.clone(),
                request: request.clone(),
                kind: "setpoint".into(),
                field: field.clone(),
                value: Some(value),
                duration_ms,
                expires_at_ms,
                payload: "{}".into(),
                created_by: created_by.clone(),
                ..Default::default()
            };
            if let Some(asset) = req.asset.as_deref().filter(|a| !a.is_empty()) {
                let (site, asset) = resolve_asset(&s, asset, req.site.as_deref()).await?;
                if let Some(given) = &req.site {
                    warnings.push(format!(
                        "both site ({given}) and asset given: the command targets asset {asset} at site {site} (the asset wins)"
                    ));
                }
                let writable = writable_of(&s, &site, &asset).await?;
                if let Some(w) = writable.iter().find(|w| w.field == field) {
                    let (lo, hi) = (w.min.unwrap_or(f64::MIN), w.max.unwrap_or(f64::MAX));
                    if !(lo..=hi).contains(&value) {
                        return Err(status(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "value",
                            format!(
                                "{value} is outside the limits {site}/{asset} reported for {field} ({} to {})",
                                w.min.map_or("-".into(), |v| v.to_string()),
                                w.max.map_or("-".into(), |v| v.to_string()),
                            ),
                        ));
                    }
                }
                if !writable.iter().any(|w| w.field == field) {
                    return Err(status(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "field",
                        format!(
                            "{site}/{asset} has no writable point {field:?} (writable: {})",
                            writable
                                .iter()
                                .map(|w| w.field.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                cmds.push(NewCommand {
                    command_id: new_id("cmd"),
                    site_id: site,
                    asset_id: asset,
                    ..base
                });
            } else if let Some(site) = req.site.as_deref().filter(|x| !x.is_empty()) {
                if !s.db.site_exists(site).await? {
                    return Err(status(
                        StatusCode::NOT_FOUND,
                        "site",
                        format!("no site {site:?}"),
                    ));
                }
                let step = req.step.unwrap_or(0.1);
                if !(MIN_STEP..=MAX_STEP).contains(&step) {
                    return Err(bad(
                        "step",
                        format!("must be from {MIN_STEP} to {MAX_STEP}"),
                    ));
                }
                let mut cands = Vec::new();
                let now = now_ms();
                for (asset, capacity, w) in s.db.writable_points(site).await? {
                    let ws: Vec<WritableJson> = serde_json::from_str(&w).unwrap_or_default();
                    let Some(w) = ws.into_iter().find(|w| w.field == field) else {
                        continue;
                    };
                    let last = s.db.asset_last_good_ms(site, &asset).await?;
                    cands.push(split::Candidate {
                        asset_id: asset,
                        capacity,
                        min: w.min.unwrap_or(0.0),
                        max: w.max.unwrap_or(capacity),
                        online: last.is_some_and(|t| now - t <= ONLINE_WINDOW_MS),
                    });
                }
                if cands.is_empty() {
                    return Err(status(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "field",
                        format!("no asset of site {site} has a writable point {field:?}"),
                    ));
                }
                let sp = split::split(value, step, &cands)
                    .map_err(|e| status(StatusCode::UNPROCESSABLE_ENTITY, "value", e))?;
                let parent = new_id("cmd");
                for (a, why) in &sp.excluded {
                    warnings.push(format!("{a} gets no share: {why}"));
                }
                cmds.push(NewCommand {
                    command_id: parent.clone(),
                    site_id: site.to_string(),
                    kind: "split".into(),
                    payload: serde_json::to_string(&sp).unwrap_or_default(),
                    policy_version: sp.policy_version.to_string(),
                    ..base.clone()
                });
                for share in &sp.shares {
                    cmds.push(NewCommand {
                        command_id: new_id("cmd"),
                        idempotency_key: None,
                        request: String::new(),
                        parent_id: Some(parent.clone()),
                        site_id: site.to_string(),
                        asset_id: share.asset_id.clone(),
                        value: Some(share.value),
                        policy_version: sp.policy_version.to_string(),
                        ..base.clone()
                    });
                }
            } else {
                return Err(bad(
                    "asset",
                    "give the target: asset (SITE/ASSET), or site alone for a site-level target split across its assets",
                ));
            }
        }
        "eta" => {
            let load_id = req
                .load_id
                .as_deref()
                .ok_or_else(|| bad("load_id", "required for an eta command"))?;
            let load = s.db.load(load_id).await?.ok_or_else(|| {
                status(
                    StatusCode::NOT_FOUND,
                    "load_id",
                    format!("no load {load_id:?}"),
                )
            })?;
            let exp = expiry(
                req.expires_in_s,
                req.expires_at.as_deref(),
                eta_expiry_s(&load),
            )?;
            cmds.push(eta_command(
                &load,
                key.clone(),
                request.clone(),
                exp,
                &created_by,
            ));
        }
        other => {
            return Err(bad(
                "kind",
                format!("{other:?}: use \"setpoint\" or \"eta\""),
            ));
        }
    }
    let warnings_json = serde_json::to_string(&warnings).unwrap_or_default();
    for c in &mut cmds {
        c.warnings = warnings_json.clone();
    }
    submit(&s, cmds, &request).await
}

async fn writable_of(
    s: &ApiState,
    site: &str,
    asset: &str,
) -> Result<Vec<WritableJson>, FieldError> {
    Ok(s.db
        .writable_points(site)
        .await?
        .into_iter()
        .find(|(a, _, _)| a == asset)
        .map(|(_, _, w)| serde_json::from_str(&w).unwrap_or_default())
        .unwrap_or_default())
}

/// An ETA command stays valid until a day after the ETA.
fn eta_expiry_s(l: &LoadRow) -> i64 {
    (((l.eta_ms - now_ms()) / 1000) + 24 * 3600).clamp(3600, MAX_EXPIRY_S)
}

fn eta_command(
    l: &LoadRow,
    key: Option<String>,
    request: String,
    expires_at_ms: i64,
    created_by: &str,
) -> NewCommand {
    let payload = EtaPayload {
        tanks: serde_json::from_str(&l.tanks).unwrap_or_default(),
        product: l.product.clone(),
        planned_volume_l: l.planned_volume_l,
        eta_ms: l.eta_ms,
        eta_source: l.eta_source.clone(),
        cancelled: l.status == "cancelled",
    };
    NewCommand {
        command_id: new_id("cmd"),
        idempotency_key: key,
        request,
        site_id: l.site_id.clone(),
        asset_id: payload.tanks.first().cloned().unwrap_or_default(),
        kind: "eta".into(),
        expires_at_ms,
        payload: serde_json::to_string(&payload).unwrap_or_default(),
        load_id: Some(l.load_id.clone()),
        created_by: created_by.to_string(),
        warnings: "[]".into(),
        ..Default::default()
    }
}

async fn submit(
    s: &ApiState,
    cmds: Vec<NewCommand>,
    request: &str,
) -> Result<Response, FieldError> {
    let site = cmds.first().map(|c| c.site_id.clone()).unwrap_or_default();
    match s.db.submit_commands(&cmds).await? {
        Submitted::Created(row) => {
            s.metrics
                .commands_submitted
                .inc_by(cmds.iter().filter(|c| c.kind != "split").count() as u64);
            s.dispatcher.nudge(&site);
            tracing::info!(command = %row.command_id, site = %row.site_id, kind = %row.kind, by = %row.created_by, "command submitted");
            Ok((
                StatusCode::CREATED,
                Json(command_json(s, &row, true).await?),
            )
                .into_response())
        }
        Submitted::Existing(row) if row.request == request => {
            Ok((StatusCode::OK, Json(command_json(s, &row, true).await?)).into_response())
        }
        Submitted::Existing(row) => Err(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key",
            format!(
                "was already used for another request (command {}); use a new key",
                row.command_id
            ),
        )),
    }
}

/// A split parent's state, from its children.
fn derived_state(children: &[CommandRow]) -> String {
    if let Some(c) = children
        .iter()
        .filter(|c| !lifecycle::is_terminal(&c.state))
        .min_by_key(|c| lifecycle::rank(&c.state))
    {
        return c.state.clone();
    }
    children
        .iter()
        .map(|c| c.state.as_str())
        .find(|s| *s != "completed")
        .unwrap_or("completed")
        .to_string()
}

async fn command_json(s: &ApiState, r: &CommandRow, timeline: bool) -> Result<Value, FieldError> {
    let mut v = json!({
        "command_id": r.command_id,
        "kind": r.kind,
        "site": r.site_id,
        "asset": if r.asset_id.is_empty() { Value::Null } else { Value::String(r.asset_id.clone()) },
        "field": if r.field.is_empty() { Value::Null } else { Value::String(r.field.clone()) },
        "value": r.value,
        "duration_s": if r.duration_ms > 0 { json!(r.duration_ms as f64 / 1000.0) } else { Value::Null },
        "expires_at": ts(r.expires_at_ms),
        "state": r.state,
        "reason": r.reason,
        "detail": r.detail,
        "readback": r.readback,
        "load_id": r.load_id,
        "parent_id": r.parent_id,
        "idempotency_key": r.idempotency_key,
        "issued_seq": r.seq,
        "created_by": r.created_by,
        "created_at": ts(r.created_ms),
        "updated_at": ts(r.updated_ms),
        "cancel_requested_at": r.cancel_requested_ms.map(ts),
        "warnings": serde_json::from_str::<Value>(&r.warnings).unwrap_or(Value::Array(vec![])),
    });
    if !r.policy_version.is_empty() {
        v["policy_version"] = json!(r.policy_version);
    }
    if r.kind == "eta" {
        v["eta"] = serde_json::from_str(&r.payload).unwrap_or(Value::Null);
    }
    if r.kind == "split" {
        v["split"] = serde_json::from_str(&r.payload).unwrap_or(Value::Null);
        let children = s.db.children(&r.command_id).await?;
        v["state"] = json!(derived_state(&children));
        let mut cs = Vec::new();
        for c in &children {
            cs.push(Box::pin(command_json(s, c, false)).await?);
        }
        v["children"] = Value::Array(cs);
    }
    if timeline {
        v["timeline"] = Value::Array(
            s.db.command_events(&r.command_id)
                .await?
                .into_iter()
                .map(|e| {
                    json!({
                        "at": ts(e.at_ms), "at_ms": e.at_ms, "state": e.state, "reason": e.reason,
                        "detail": e.detail, "by": e.actor,
                    })
                })
                .collect(),
        );
    }
    Ok(v)
}

async fn get_command(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, FieldError> {
    let r =
        s.db.command(&id)
            .await?
            .ok_or_else(|| status(StatusCode::NOT_FOUND, "", format!("no command {id:?}")))?;
    Ok(Json(command_json(&s, &r, true).await?))
}

#[derive(Deserialize)]
struct ListParams {
    site: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_commands(
    State(s): State<ApiState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, FieldError> {
    if let Some(st) = p.state.as_deref()
        && !lifecycle::STATES.contains(&st)
    {
        return Err(bad(
            "state",
            format!("{st:?}: use one of {}", lifecycle::STATES.join(", ")),
        ));
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad("limit", "must be from 1 to 1000"));
    }
    let rows =
        s.db.list_commands(p.site.as_deref(), p.state.as_deref(), limit)
            .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(command_json(&s, r, false).await?);
    }
    Ok(Json(Value::Array(out)))
}

async fn cancel_command(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, FieldError> {
    let r =
        s.db.command(&id)
            .await?
            .ok_or_else(|| status(StatusCode::NOT_FOUND, "", format!("no command {id:?}")))?;
    let who = actor(&headers, peer);
    let targets: Vec<String> = if r.kind == "split" {
        s.db.children(&id)
            .await?
            .into_iter()
            .map(|c| c.command_id)
            .collect()
    } else {
        vec![id.clone()]
    };
    let mut any = false;
    for t in &targets {
        any |= s.db.request_cancel(t, &who).await?;
    }
    if !any {
        return Err(status(
            StatusCode::CONFLICT,
            "",
            format!(
                "command {id} has already ended ({}) or a cancel is under way",
                r.state
            ),
        ));
    }
    s.dispatcher.nudge(&r.site_id);
    let r = s.db.command(&id).await?.unwrap_or(r);
    Ok((
        StatusCode::ACCEPTED,
        Json(command_json(&s, &r, true).await?),
    )
        .into_response())
}

// ------------------------------------------------------------------ loads

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    site: String,
    /// PO / load reference.
    reference: String,
    #[serde(default)]
    carrier: String,
    tanks: Vec<String>,
    #[serde(default)]
    product: String,
    planned_volume_l: f64,
    /// RFC 3339 or Unix ms.
    eta: Value,
    eta_source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadPatch {
    #[serde(default)]
    eta: Option<Value>,
    #[serde(default)]
    eta_source: Option<String>,
    #[serde(default)]
    planned_volume_l: Option<f64>,
    /// Only `cancelled`.
    #[serde(default)]
    status: Option<String>,
}

/// A time given as RFC 3339 text or Unix ms (number or text).
fn time_value(field: &str, v: &Value) -> Result<i64, FieldError> {
    let t = match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| bad(field, "Unix ms must be an integer"))?,
        Value::String(s) => parse_time(field, s).map_err(|ApiError(_, m)| bad(field, m))?,
        _ => return Err(bad(field, "use RFC 3339 text or Unix milliseconds")),
    };
    Ok(t)
}

/// An ETA: a time from 30 days ago to 366 days ahead.
fn eta_value(v: &Value) -> Result<i64, FieldError> {
    let t = time_value("eta", v)?;
    let now = now_ms();
    if !(now - ETA_PAST_MS..=now + ETA_FUTURE_MS).contains(&t) {
        return Err(bad(
            "eta",
            "must be from 30 days ago to 366 days ahead (RFC 3339 or Unix ms)",
        ));
    }
    Ok(t)
}

/// A planned volume: litres, > 0 and at most [`MAX_PLANNED_VOLUME_L`].
fn volume_value(v: f64) -> Result<f64, FieldError> {
    if v.is_finite() && v > 0.0 && v <= MAX_PLANNED_VOLUME_L {
        Ok(v)
    } else {
        Err(bad(
            "planned_volume_l",
            format!("must be a number > 0 and at most {MAX_PLANNED_VOLUME_L} (litres)"),
        ))
    }
}

fn check_source(src: &str) -> Result<(), FieldError> {
    if ETA_SOURCES.contains(&src) {
        Ok(())
    } else {
        Err(bad(
            "eta_source",
            format!("{src:?}: use one of {}", ETA_SOURCES.join(", ")),
        ))
    }
}

async fn post_load(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FieldError> {
    let req: LoadRequest = parse_body(&body)?;
    if !s.db.site_exists(&req.site).await? {
        return Err(status(
            StatusCode::NOT_FOUND,
            "site",
            format!("no site {:?}", req.site),
        ));
    }
    if req.reference.trim().is_empty() {
        return Err(bad("reference", "must not be empty"));
    }
    if req.tanks.is_empty() {
        return Err(bad("tanks", "give at least one tank"));
    }
    let tanks: Vec<String> =
        s.db.assets(&req.site)
            .await?
            .into_iter()
            .filter(|a| a.kind == "tank")
            .map(|a| a.asset_id)
            .collect();
    if let Some(t) = req.tanks.iter().find(|t| !tanks.contains(t)) {
        return Err(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tanks",
            format!(
                "{t:?} is not a tank of site {} (tanks: {})",
                req.site,
                tanks.join(", ")
            ),
        ));
    }
    volume_value(req.planned_volume_l)?;
    check_source(&req.eta_source)?;
    let eta_ms = eta_value(&req.eta)?;
    let now = now_ms();
    let who = actor(&headers, peer);
    let load = LoadRow {
        load_id: new_id("load"),
        reference: req.reference,
        carrier: req.carrier,
        site_id: req.site,
        tanks: serde_json::to_string(&req.tanks).unwrap_or_default(),
        product: req.product,
        planned_volume_l: req.planned_volume_l,
        eta_ms,
        eta_source: req.eta_source,
        status: "planned".into(),
        delivered_volume_l: None,
        delivery_start_ms: None,
        delivery_end_ms: None,
        last_command_id: None,
        created_ms: now,
        updated_ms: now,
    };
    let change = LoadWrite::Insert {
        load: &load,
        actor: &who,
    };
    push_eta(&s, change, StatusCode::CREATED).await
}

/// Saves the load change and pushes the load's current ETA to its site in
/// one transaction; answers with the load and the command.
async fn push_eta(
    s: &ApiState,
    change: LoadWrite<'_>,
    code: StatusCode,
) -> Result<Response, FieldError> {
    let (load, who) = match &change {
        LoadWrite::Insert { load, actor } | LoadWrite::Update { load, actor, .. } => {
            (*load, *actor)
        }
    };
    let cmd = eta_command(
        load,
        None,
        String::new(),
        now_ms() + eta_expiry_s(load) * 1000,
        who,
    );
    let row = match s.db.submit_commands_with(&[cmd], Some(change)).await? {
        Submitted::Created(r) => {
            s.metrics.commands_submitted.inc();
            r
        }
        Submitted::Existing(r) => r,
    };
    s.dispatcher.nudge(&load.site_id);
    let load =
        s.db.load(&load.load_id)
            .await?
            .unwrap_or_else(|| load.clone());
    Ok((
        code,
        Json(json!({
            "load": load_json(s, &load).await?,
            "command": command_json(s, &row, false).await?,
        })),
    )
        .into_response())
}

async fn patch_load(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, FieldError> {
    let p: LoadPatch = parse_body(&body)?;
    let mut load =
        s.db.load(&id)
            .await?
            .ok_or_else(|| status(StatusCode::NOT_FOUND, "", format!("no load {id:?}")))?;
    if load.status == "delivered" || load.status == "cancelled" {
        return Err(status(
            StatusCode::CONFLICT,
            "status",
            format!("load {id} is {}; it cannot change", load.status),
        ));
    }
    let mut what = Vec::new();
    if let Some(eta) = &p.eta {
        let src = p.eta_source.as_deref().ok_or_else(|| {
            bad(
                "eta_source",
                "required with a new eta (carrier_api, email, csv, manual)",
            )
        })?;
        check_source(src)?;
        load.eta_ms = eta_value(eta)?;
        load.eta_source = src.to_string();
        what.push(format!("ETA {} (source {src})", load.eta_ms));
    } else if p.eta_source.is_some() {
        return Err(bad("eta_source", "given without a new eta"));
    }
    if let Some(v) = p.planned_volume_l {
        load.planned_volume_l = volume_value(v)?;
        what.push(format!("planned volume {v} L"));
    }
    if let Some(st) = &p.status {
        if st != "cancelled" {
            return Err(bad(
                "status",
                format!("{st:?}: only \"cancelled\" can be set"),
            ));
        }
        load.status = "cancelled".into();
        what.push("cancelled".into());
    }
    if what.is_empty() {
        return Err(bad(
            "",
            "nothing to change: give eta (+ eta_source), planned_volume_l or status",
        ));
    }
    let who = actor(&headers, peer);
    load.updated_ms = now_ms();
    let what = what.join(", ");
    let change = LoadWrite::Update {
        load: &load,
        what: &what,
        actor: &who,
    };
    push_eta(&s, change, StatusCode::OK).await
}

async fn load_json(s: &ApiState, l: &LoadRow) -> Result<Value, FieldError> {
    let events = s.db.load_events(&l.load_id).await?;
    Ok(load_json_with(l, events))
}

fn load_json_with(l: &LoadRow, events: Vec<crate::commands::LoadEventRow>) -> Value {
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
        "last_command_id": l.last_command_id,
        "created_at": ts(l.created_ms),
        "updated_at": ts(l.updated_ms),
        "events": events.into_iter().map(|e| json!({
            "at": ts(e.at_ms), "kind": e.kind, "detail": e.detail, "by": e.actor,
        })).collect::<Vec<_>>(),
    })
}

async fn get_load(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, FieldError> {
    let l =
        s.db.load(&id)
            .await?
            .ok_or_else(|| status(StatusCode::NOT_FOUND, "", format!("no load {id:?}")))?;
    Ok(Json(load_json(&s, &l).await?))
}

#[derive(Deserialize)]
struct LoadList {
    site: Option<String>,
}

async fn list_loads(
    State(s): State<ApiState>,
    Query(p): Query<LoadList>,
) -> Result<Json<Value>, FieldError> {
    let rows = s.db.loads(p.site.as_deref(), 1000).await?;
    // two queries for the whole list
    let mut events = s.db.events_of_loads(p.site.as_deref(), 1000).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|l| load_json_with(l, events.remove(&l.load_id).unwrap_or_default()))
            .collect(),
    )))
}

/// Fuzzing entry (`fuzz/`): every REST body parser and the pure checks
/// behind it, on arbitrary bytes, and the rendering of any stored time.
/// Must never panic.
#[doc(hidden)]
pub fn fuzz_bodies(body: &[u8]) {
    let b = Bytes::copy_from_slice(body);
    if let Ok(r) = parse_body::<CommandRequest>(&b) {
        let _ = expiry(r.expires_in_s, r.expires_at.as_deref(), DEFAULT_EXPIRY_S);
        let _ = serde_json::to_string(&r);
    }
    if let Ok(l) = parse_body::<LoadRequest>(&b) {
        let _ = volume_value(l.planned_volume_l);
        let _ = eta_value(&l.eta);
        let _ = check_source(&l.eta_source);
    }
    if let Ok(p) = parse_body::<LoadPatch>(&b) {
        if let Some(e) = &p.eta {
            let _ = eta_value(e);
        }
        if let Some(v) = p.planned_volume_l {
            let _ = volume_value(v);
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = parse_time("from", text);
        let _ = crate::edge::has_control(text);
        let _ = crate::edge::host_of(text);
    }
    if let Some(head) = body.get(..8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(head);
        let _ = ts(i64::from_le_bytes(a));
    }
}
