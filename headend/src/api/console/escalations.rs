//! The escalation work queue: the open ones by age, and one with its
//! timeline, the facts the decision stood on, and (for those who may work
//! them) assign to me, investigate, resolve and a note. Read and written
//! through `services::escalations`, as the REST routes are.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jiff::tz::TimeZone;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Viewer, seg};
use super::layout::{failed, given, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::Permission;
use crate::domain::escalation::{EscState, may_move};
use crate::services::access::Principal;
use crate::services::escalations::{self as svc, MoveRequest, NoteRequest};
use crate::store::escalations::{EscFilter, EscalationRow};
use crate::wallclock::now_ms;

/// Escalations on a page.
const PAGE: i64 = 100;

#[derive(Deserialize, Default)]
pub struct Filters {
    site: Option<String>,
    /// `all` shows the resolved ones too.
    show: Option<String>,
}

fn url(id: &str) -> String {
    format!("/escalations/{}", seg(id))
}

/// How long ago, in words a dispatcher scans: "3 h 20 min".
fn age(from_ms: i64, now_ms: i64) -> String {
    let min = ((now_ms - from_ms).max(0) / 60_000) as u64;
    match min {
        0..60 => format!("{min} min"),
        60..1440 => format!("{} h {} min", min / 60, min % 60),
        _ => format!("{} d {} h", min / 1440, (min % 1440) / 60),
    }
}

pub(super) fn rows(list: &[EscalationRow], now: i64) -> Markup {
    html! {
        div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" {
            table {
                (layout::head(&["What", "Open for", "Site", "Tank", "Cause", "State", "Assignee"]))
                tbody {
                    @for e in list {
                        tr {
                            td { a href=(url(&e.escalation_id)) { (e.subject) } }
                            td { (age(e.opened_ms.ms(), e.resolved_ms.map_or(now, |r| r.ms()))) }
                            td { (e.site_id) }
                            td { (e.tank_id) }
                            td { (e.cause) }
                            td { (e.state) }
                            td { (e.assignee.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

pub async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Query(f): Query<Filters>,
) -> Response {
    let all = given(&f.show) == Some("all");
    let found = svc::list(
        &s.ctx(&p),
        EscFilter {
            site: given(&f.site),
            open: !all,
            limit: PAGE,
            ..Default::default()
        },
    )
    .await;
    let mut list = match found {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    // the oldest first: the queue is worked from its head
    list.sort_by_key(|e| (e.opened_ms.ms(), e.escalation_id.clone()));
    let body = html! {
        form.filters method="get" action="/escalations" role="search" {
            label { "Site" input name="site" value=(given(&f.site).unwrap_or_default()); }
            label { "Show"
                select name="show" {
                    option value="" { "open" }
                    option value="all" selected[all] { "all, resolved too" }
                }
            }
            button type="submit" { "Filter" }
        }
        @if list.is_empty() { p { "No escalation." } } @else { (rows(&list, now_ms())) }
    };
    layout::page(&v, "/escalations", "Escalations", body).into_response()
}

async fn render(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    id: &str,
    problem: Option<&str>,
) -> Response {
    let (e, events) = match svc::get(&s.ctx(p), id).await {
        Ok(x) => x,
        Err(err) => return failed(err),
    };
    // times in the site's zone (UTC when it has none or cannot be read)
    let tz = crate::services::inventory::site(&s.ctx(p), &e.site_id)
        .await
        .map_or(TimeZone::UTC, |x| {
            crate::services::evaluate::zone(&x.time_zone)
        });
    let may = p.role.may(Permission::Loads);
    let action = format!("{}/move", url(id));
    let body = html! {
        @if let Some(pr) = problem { p.problem role="alert" { (pr) } }
        dl.facts {
            dt { "Site / tank" } dd { (e.site_id) " / " (e.tank_id) }
            dt { "Cause" } dd { (e.cause) }
            dt { "State" } dd { (e.state) @if let Some(a) = &e.assignee { ", " (a) } }
            dt { "Opened" } dd { (when(Some(e.opened_ms), &tz)) }
            dt { "Detail" } dd { (e.detail) }
        }
        details {
            summary { "What the decision stood on" }
            pre.context { (serde_json::to_string_pretty(&e.context.0.0).unwrap_or_default()) }
        }
        @if may && e.state != EscState::Resolved {
            section aria-labelledby="work" {
                h2 #work { "Work it" }
                div.actions {
                    @for (to, label) in [
                        (EscState::Assigned, "Assign to me"),
                        (EscState::Investigating, "Investigating"),
                        (EscState::Resolved, "Resolve"),
                    ] {
                        @if may_move(e.state, to) {
                            form method="post" action=(action) {
                                input type="hidden" name="csrf" value=(v.token);
                                input type="hidden" name="state" value=(to);
                                label { "Note " input name="note" maxlength="2000"; }
                                button type="submit" { (label) }
                            }
                        }
                    }
                    form method="post" action=(format!("{}/notes", url(id))) {
                        input type="hidden" name="csrf" value=(v.token);
                        label { "Note " input name="note" maxlength="2000" required; }
                        button type="submit" { "Add the note" }
                    }
                }
            }
        }
        h2 { "Timeline" }
        ol.timeline {
            @for ev in &events {
                li {
                    (when(Some(ev.at_ms), &tz)) " · " (ev.kind) " · " (ev.state) " · " (ev.actor)
                    @if !ev.note.is_empty() { br; span { (ev.note) } }
                }
            }
        }
    };
    let title = format!("Escalation: {}", e.subject);
    layout::answer(
        problem.is_some(),
        layout::page(v, "/escalations", &title, body),
    )
}

pub async fn show(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    render(&s, &p, &v, &id, None).await
}

#[derive(Deserialize)]
pub struct Move {
    #[serde(default)]
    state: String,
    #[serde(default)]
    note: String,
}

/// A service refusal: not found as a page of its own, anything else shown
/// on the escalation's page.
async fn refused(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    id: &str,
    e: crate::services::ServiceError,
) -> Response {
    match layout::refusal(e) {
        Ok(why) => render(s, p, v, id, Some(&why)).await,
        Err(nf) => nf.into_response(),
    }
}

pub async fn move_to(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    Form(m): Form<Move>,
) -> Response {
    // "assign to me": the assignee is who posts it
    let assignee = (m.state == EscState::Assigned.as_str()).then(|| v.name.clone());
    let r = MoveRequest {
        state: m.state,
        assignee,
        note: m.note,
    };
    let notify = s.webhook;
    match svc::move_to(&s.ctx(&p), &id, r, &p.actor.to_string(), notify).await {
        Ok(_) => Redirect::to(&url(&id)).into_response(),
        Err(e) => refused(&s, &p, &v, &id, e).await,
    }
}

#[derive(Deserialize)]
pub struct Note {
    #[serde(default)]
    note: String,
}

pub async fn note(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    Form(n): Form<Note>,
) -> Response {
    match svc::add_note(
        &s.ctx(&p),
        &id,
        NoteRequest { note: n.note },
        &p.actor.to_string(),
    )
    .await
    {
        Ok(_) => Redirect::to(&url(&id)).into_response(),
        Err(e) => refused(&s, &p, &v, &id, e).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_reads_in_minutes_hours_or_days() {
        let m = 60_000;
        assert_eq!(age(0, 59 * m), "59 min");
        assert_eq!(age(0, 200 * m), "3 h 20 min");
        assert_eq!(age(0, (2 * 1440 + 90) * m), "2 d 1 h");
        assert_eq!(age(10 * m, 0), "0 min");
    }
}
