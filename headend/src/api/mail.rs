//! REST for alarm mail:
//!
//! * `GET /api/v1/sites/{site}/alarm-recipients`,
//!   `PUT /api/v1/sites/{site}/alarm-recipients` (`{"recipients":
//!   [{"address", "min_severity"}]}`): who is mailed about a site's alarms.
//! * `GET /api/v1/mails?site=&state=` (newest first, paged): the outbound
//!   log, each mail with its state, attempts and last error.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{AuditNote, Caller, noted};
use super::page::{self, PageParams};
use super::{ApiError, ApiState, Query, parse_body, ts};
use crate::domain::notify::{MailState, Recipient};
use crate::services::alarms::{self as svc, RecipientsRequest};

/// This feature's routes, each declared once.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "GET",
            "/api/v1/sites/{site}/alarm-recipients",
            Perm(P::Read),
            "alarm_recipients.get",
            get(recipients),
            d(
                "Who is mailed about the site's alarms",
                200,
                Some(reference("AlarmRecipients")),
            ),
        ),
        Route::new(
            "PUT",
            "/api/v1/sites/{site}/alarm-recipients",
            Perm(P::Configure),
            "alarm_recipients.set",
            put(set_recipients),
            with_body(
                d(
                    "Set who is mailed about the site's alarms (replaces the list)",
                    200,
                    Some(reference("AlarmRecipients")),
                ),
                "RecipientsRequest",
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/mails",
            Perm(P::Audit),
            "mails.list",
            get(log),
            paged(
                "Alarm mails sent, waiting, held for a digest or given up, newest first",
                "Mail",
                params_of::<MailList>(),
            ),
        ),
    ]
}

fn recipients_json(site: &str, list: &[Recipient]) -> Value {
    json!({
        "site": site,
        "recipients": list.iter().map(|r| json!({"address": r.address, "min_severity": r.min_severity})).collect::<Vec<_>>(),
    })
}

async fn recipients(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let site = super::site_param(&site)?;
    let list = svc::recipients(&s.ctx(&p), &site).await?;
    Ok(Json(recipients_json(&site, &list)))
}

async fn set_recipients(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    let req: RecipientsRequest = parse_body(&body)?;
    let list = svc::set_recipients(&s.ctx(&p), &site, req).await?;
    let v = recipients_json(&site, &list);
    let note = AuditNote {
        target: Some(format!("site {site}")),
        summary: json!({ "alarm_recipients": v["recipients"] }),
        site: Some(site.to_string()),
        ..AuditNote::default()
    };
    Ok(noted(Json(v).into_response(), note))
}

/// `GET /api/v1/mails` filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MailList {
    pub site: Option<String>,
    /// pending | held | sent | digested | dead
    pub state: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn log(
    State(s): State<ApiState>,
    Caller(c): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<MailList>,
) -> Result<Response, ApiError> {
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let before = page::after_i64(&pg)?.unwrap_or(i64::MAX);
    let state = super::query_enum::<MailState>("state", q.state.as_deref())?;
    let ctx = s.ctx(&c);
    let sites = match &q.site {
        Some(site) => {
            ctx.visible(site, "site", || format!("no site {site:?}"))?;
            Some(vec![site.clone()])
        }
        None => ctx.scope.sites(),
    };
    let rows =
        s.db.mail()
            .log(state, sites.as_deref(), before, limit + 1)
            .await?;
    let items = rows
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "alarm": m.episode_id, "site": m.site_id, "to": m.recipient, "kind": m.kind,
                "subject": m.subject, "state": m.state, "attempts": m.attempts, "last_error": m.last_error,
                "created_at": ts(m.created_ms), "done_at": m.done_ms.map_or(Value::Null, ts),
            })
        })
        .collect();
    Ok(page::respond(&uri, items, limit, |v| v["id"].to_string()))
}
