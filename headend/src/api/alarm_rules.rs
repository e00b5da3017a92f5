//! REST for a site's alarm rules:
//!
//! * `GET /api/v1/sites/{site}/alarm-severities`: every alarm type with
//!   its severity at the site and whether that is the default;
//! * `PUT /api/v1/sites/{site}/alarm-severities` (`{"severities": [{"type",
//!   "severity"}]}`): the site's own severities (the list replaces the old).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access::{AuditNote, Caller, noted};
use super::{ApiError, ApiState, parse_body};
use crate::domain::alarm::{AlarmType, Severity};
use crate::services::alarms::{self as svc, SeveritiesRequest};

/// This feature's routes, each declared once.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "GET",
            "/api/v1/sites/{site}/alarm-severities",
            Perm(P::Read),
            "alarm_severities.get",
            get(severities),
            d(
                "Every alarm type with its severity at the site",
                200,
                Some(reference("AlarmSeverities")),
            ),
        ),
        Route::new(
            "PUT",
            "/api/v1/sites/{site}/alarm-severities",
            Perm(P::Configure),
            "alarm_severities.set",
            put(set_severities),
            with_body(
                d(
                    "Set the site's own alarm severities (replaces them; types not listed keep the default)",
                    200,
                    Some(reference("AlarmSeverities")),
                ),
                "SeveritiesRequest",
            ),
        ),
    ]
}

fn severities_json(site: &str, list: &[(AlarmType, Severity, bool)]) -> Value {
    json!({
        "site": site,
        "severities": list.iter().map(|(t, s, default)| json!({"type": t, "severity": s, "default": default})).collect::<Vec<_>>(),
    })
}

async fn severities(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let site = super::site_param(&site)?;
    let list = svc::severities(&s.ctx(&p), &site).await?;
    Ok(Json(severities_json(&site, &list)))
}

async fn set_severities(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    let req: SeveritiesRequest = parse_body(&body)?;
    let list = svc::set_severities(&s.ctx(&p), &site, req).await?;
    let own: Vec<Value> = list
        .iter()
        .filter(|(_, _, default)| !default)
        .map(|(t, s, _)| json!({"type": t, "severity": s}))
        .collect();
    let note = AuditNote {
        target: Some(format!("site {site}")),
        summary: json!({ "alarm_severities": own }),
        site: Some(site.to_string()),
        ..AuditNote::default()
    };
    Ok(noted(
        Json(severities_json(&site, &list)).into_response(),
        note,
    ))
}
