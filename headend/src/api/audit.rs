//! REST for the audit trail: read and filter only. There is no route
//! that changes or removes an entry.
//!
//! * `GET /api/v1/audit?actor=&user=&action=&target=&outcome=&site=&from=&to=&limit=&cursor=`:
//!   newest first, each entry with its chain hashes. A reader scoped to
//!   some sites sees only the entries about those sites (entries about
//!   no site, such as users, keys and logins, only unscoped readers see).

use super::Query;
use axum::extract::{OriginalUri, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::page::{self, PageParams};
use super::{ApiError, ApiState, query_time, ts};
use crate::domain::AuditOutcome;
use crate::store::audit::AuditQuery;

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![Route::new(
        "GET",
        "/api/v1/audit",
        Perm(P::Audit),
        "audit.list",
        get(list),
        paged(
            "The audit trail, newest first (read only)",
            "AuditEntry",
            params_of::<audit::AuditParams>(),
        ),
    )]
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Exact actor text (`operator ann from 10.0.0.7`).
    pub actor: Option<String>,
    /// Entries by this operator, from any address.
    pub user: Option<String>,
    /// Entries about this site.
    pub site: Option<String>,
    /// Exact action (`commands.create`).
    pub action: Option<String>,
    /// Exact target (a command id, a user).
    pub target: Option<String>,
    /// ok, denied, refused or failed.
    pub outcome: Option<String>,
    /// RFC 3339 or Unix ms.
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<AuditParams>,
) -> Result<Response, ApiError> {
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let outcome = super::query_enum::<AuditOutcome>("outcome", q.outcome.as_deref())?;
    let query = AuditQuery {
        actor: q.actor,
        user: q.user,
        sites: None,
        action: q.action,
        target: q.target,
        outcome,
        from_ms: q
            .from
            .as_deref()
            .map(|v| query_time("from", v))
            .transpose()?,
        to_ms: q.to.as_deref().map(|v| query_time("to", v)).transpose()?,
        before_seq: page::after_i64(&pg)?,
        limit: limit + 1,
    };
    let rows = crate::services::audit::list(&s.ctx(&p), q.site, query).await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let e = &r.entry;
        // the text the chain hashes: a JSON document from the REST gate,
        // plain text from enrollment and renewal (shown as a string; not
        // a JSON column, so nothing is defaulted)
        let summary = serde_json::from_str::<Value>(&e.summary)
            .ok()
            .filter(|v| v.is_object() || v.is_array())
            .unwrap_or_else(|| Value::String(e.summary.clone()));
        items.push(json!({
            "seq": e.seq, "at": ts(e.at_ms), "at_ms": e.at_ms, "actor": e.actor, "role": e.role,
            "action": e.action, "target": e.target, "outcome": e.outcome, "status": e.status,
            "summary": summary,
            "client": e.client, "request_id": e.request_id, "site": e.site,
            "prev_hash": r.prev_hash, "hash": r.hash,
        }));
    }
    Ok(page::respond(&uri, items, limit, |v| v["seq"].to_string()))
}
