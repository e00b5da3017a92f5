//! The site list: connected or not, last seen, agent version, clock,
//! data failing to commit; searched by id or name. Read through
//! `services::sites`, as the REST site list is.

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Viewer};
use super::layout::{failed, given, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::clock;
use crate::services::sites;

#[derive(Deserialize, Default)]
pub struct Search {
    q: Option<String>,
}

pub async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Query(f): Query<Search>,
) -> Response {
    let ctx = s.ctx(&p);
    let rows = match sites::list(&ctx, &s.sessions, given(&f.q)).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let health = match sites::health(&ctx).await {
        Ok(h) => h,
        Err(e) => return failed(e),
    };
    let now = crate::wallclock::now_ms();
    let body = html! {
        form.filters method="get" action="/sites" role="search" {
            label { "Site id or name" input name="q" value=(given(&f.q).unwrap_or_default()); }
            button type="submit" { "Search" }
        }
        @if rows.is_empty() {
            p { "No site matches." }
        } @else {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" {
                table {
                    (layout::head(&["Site", "Connected", "Last seen", "Agent", "Clock", "Assets", "Devices", "Certificate", "Data"]))
                    tbody {
                        @for site in &rows {
                            @let tz = crate::services::evaluate::zone(&site.row.time_zone);
                            tr {
                                @let h = health.get(&site.row.site_id).copied().unwrap_or_default();
                                td {
                                    a href=(format!("/sites/{}", layout::seg(&site.row.site_id))) { (site.row.site_id) }
                                    @if !site.row.name.is_empty() { br; span.muted { (site.row.name) } }
                                }
                                td {
                                    @if let Some(sess) = &site.session {
                                        "yes, since " (when(Some(sess.since_ms), &tz))
                                    } @else if let Some(e) = &site.elsewhere {
                                        "yes, since " (when(Some(e.since_ms), &tz)) br; span.muted { "on " (e.replica) }
                                    } @else {
                                        span.muted { "no" }
                                    }
                                }
                                td { (when(Some(site.row.last_seen_ms), &tz)) }
                                td { (site.row.agent_version) }
                                td { (site.row.clock_skew_ms.map_or("—".to_string(), clock::describe)) }
                                td.num { (site.row.assets) }
                                td {
                                    @if h.devices == 0 { span.muted { "—" } }
                                    @else if h.devices_up < h.devices {
                                        a.problem href=(format!("/sites/{}#devices-h", layout::seg(&site.row.site_id))) { (h.devices - h.devices_up) " of " (h.devices) " down" }
                                    } @else { (h.devices) " up" }
                                }
                                td {
                                    @if let Some(t) = h.cert_not_after_ms {
                                        @if t.since(crate::domain::UnixMs::from_ms(now)) < crate::services::today::CERT_WARNING_MS { span.problem { "expires " } }
                                        (when(Some(t), &tz))
                                    } @else { span.muted { "—" } }
                                }
                                td {
                                    @if let Some(e) = &site.ingest_error {
                                        span.problem { "failing: " (e.error) }
                                    } @else {
                                        "ok"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout::page(&v, "/sites", "Sites", body).into_response()
}
