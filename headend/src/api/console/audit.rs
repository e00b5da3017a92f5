//! The audit trail: filtered by user, action, site, outcome and time,
//! newest first, paged; the same filters exported as CSV. Read through
//! `services::audit::list`, as `GET /api/v1/audit` is (a scoped reader
//! sees only its sites' entries).

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use maud::html;
use serde::Deserialize;

use super::layout::{self, Viewer};
use super::layout::{failed, given, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::AuditOutcome;
use crate::domain::audit::Stored;
use crate::services::audit;
use crate::store::audit::AuditQuery;

/// Entries on a page.
const PAGE: i64 = 100;
/// Entries in one CSV export at most (narrow the filters for more).
pub const MAX_EXPORT: i64 = 10_000;

#[derive(Deserialize, Default)]
pub struct Filters {
    user: Option<String>,
    action: Option<String>,
    site: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Entries before this seq (the next page).
    before: Option<String>,
}

/// The filters as a query of `limit` entries, or what is wrong with one.
fn query(f: &Filters, limit: i64) -> Result<(Option<String>, AuditQuery), String> {
    let time = |name: &str, v: &Option<String>| {
        given(v)
            .map(|t| {
                crate::domain::UnixMs::parse(t)
                    .ok_or_else(|| format!("The {name} time {t:?}: {}.", crate::domain::time::HOW))
            })
            .transpose()
    };
    let outcome = given(&f.outcome)
        .map(|o| {
            o.parse::<AuditOutcome>().map_err(|_| {
                format!("The outcome {o:?} is not one of ok, denied, refused, failed.")
            })
        })
        .transpose()?;
    let before = given(&f.before)
        .map(|b| {
            b.parse::<i64>()
                .map_err(|_| "Not a page of this trail.".to_string())
        })
        .transpose()?;
    Ok((
        given(&f.site).map(str::to_string),
        AuditQuery {
            actor: None,
            user: given(&f.user).map(str::to_string),
            sites: None,
            action: given(&f.action).map(str::to_string),
            target: None,
            outcome,
            from_ms: time("from", &f.from)?,
            to_ms: time("to", &f.to)?,
            before_seq: before,
            limit,
        },
    ))
}

/// The filters, by their query names.
fn filter_pairs(f: &Filters) -> [(&'static str, &Option<String>); 6] {
    [
        ("user", &f.user),
        ("action", &f.action),
        ("site", &f.site),
        ("outcome", &f.outcome),
        ("from", &f.from),
        ("to", &f.to),
    ]
}

pub async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Query(f): Query<Filters>,
) -> Response {
    let (site, q) = match query(&f, PAGE + 1) {
        Ok(x) => x,
        Err(why) => return layout::error(StatusCode::BAD_REQUEST, &why),
    };
    let rows = match audit::list(&s.ctx(&p), site, q).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let more = rows.len() as i64 > PAGE;
    let shown = &rows[..rows.len().min(PAGE as usize)];
    let filters = layout::query_of(&filter_pairs(&f), None);
    let next = shown.last().filter(|_| more).map(|r| {
        let seq = r.entry.seq.to_string();
        format!(
            "/audit?{}",
            layout::query_of(&filter_pairs(&f), Some(("before", &seq)))
        )
    });
    let opt = |x: &Option<String>| given(x).unwrap_or_default().to_string();
    let body = html! {
        form.filters method="get" action="/audit" role="search" {
            label { "User" input name="user" value=(opt(&f.user)); }
            label { "Action" input name="action" value=(opt(&f.action)) placeholder="commands.create"; }
            label { "Site" input name="site" value=(opt(&f.site)); }
            label { "Outcome"
                select name="outcome" {
                    option value="" { "any" }
                    @for o in AuditOutcome::ALL {
                        option value=(o) selected[given(&f.outcome) == Some(o.as_str())] { (o) }
                    }
                }
            }
            label { "From" input name="from" value=(opt(&f.from)) placeholder="2026-12-01T00:00:00Z"; }
            label { "To" input name="to" value=(opt(&f.to)); }
            button type="submit" { "Filter" }
        }
        p { a href=(format!("/audit.csv?{filters}")) download { "Export these entries as CSV" } }
        @if shown.is_empty() {
            p { "No entry matches." }
        } @else {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" {
                table {
                    (layout::head(&["#", "When", "Who", "Action", "Target", "Outcome", "Site"]))
                    tbody {
                        @for r in shown {
                            @let e = &r.entry;
                            tr {
                                td.num { (e.seq) }
                                td { (when(Some(e.at_ms), &TimeZone::UTC)) }
                                td { (e.actor) br; span.muted { (e.role) } }
                                td { (e.action) }
                                td { (e.target) }
                                td { (e.outcome) " (" (e.status) ")" }
                                td { (e.site.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next {
            nav.pager aria-label="Pages" { a href=(n) { "Older entries" } }
        }
    };
    layout::page(&v, "/audit", "Audit trail", body).into_response()
}

/// A cell as a spreadsheet will not run it: text starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a leading `'` (CSV
/// injection: an actor or a summary is text someone else typed).
pub fn cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

fn csv_of(rows: &[Stored]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "seq",
        "at",
        "actor",
        "role",
        "action",
        "target",
        "outcome",
        "status",
        "site",
        "client",
        "request_id",
        "summary",
        "hash",
    ])?;
    for r in rows {
        let e = &r.entry;
        let at = e.at_ms.rfc3339().unwrap_or_default();
        w.write_record([
            e.seq.to_string(),
            at,
            cell(&e.actor),
            cell(&e.role),
            cell(&e.action),
            cell(&e.target),
            e.outcome.to_string(),
            e.status.to_string(),
            cell(e.site.as_deref().unwrap_or("")),
            cell(&e.client),
            cell(&e.request_id),
            cell(&e.summary),
            r.hash.clone(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

pub async fn export(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Query(f): Query<Filters>,
) -> Response {
    let (site, q) = match query(&f, MAX_EXPORT) {
        Ok(x) => x,
        Err(why) => return layout::error(StatusCode::BAD_REQUEST, &why),
    };
    let rows = match audit::list(&s.ctx(&p), site, q).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    match csv_of(&rows) {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"audit.csv\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: the audit export could not be written");
            layout::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The export failed (see the headend's log).",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_a_spreadsheet_would_run_is_quoted() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        for c in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(cell(c).starts_with('\''), "{c:?}");
        }
        assert_eq!(
            cell("operator ann from 10.0.0.7"),
            "operator ann from 10.0.0.7"
        );
    }
}
