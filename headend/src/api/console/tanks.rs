//! The tank list, read through
//! `services::inventory` as the REST tank list is (the same filters and
//! the caller's scope).

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use jiff::tz::TimeZone;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Viewer, failed, given, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::forecast::Risk;
use crate::domain::inventory::FreshnessKind;
use crate::services::inventory as svc;
use crate::store::inventory::{SiteCalendarRow, StateRow, TankFilter, TankRow};

/// Rows of a page of the tank list.
const PAGE: i64 = 50;

/// The list's filters, as the API's (`GET /api/v1/tanks`).
#[derive(Deserialize, Default)]
pub struct Filters {
    site: Option<String>,
    q: Option<String>,
    product: Option<String>,
    risk: Option<String>,
    freshness: Option<String>,
    /// After this `site/tank` (the next page).
    after: Option<String>,
}

fn litres(v: Option<f64>) -> Markup {
    match v {
        Some(l) if l.is_finite() => html! { (format!("{:.0}", l)) },
        _ => html! { span.muted { "—" } },
    }
}

fn risk(r: Risk) -> Markup {
    html! { span class=(format!("risk risk-{r}")) { (r) } }
}

fn row(t: &TankRow, st: Option<&StateRow>, tz: &TimeZone) -> Markup {
    let volume = st.and_then(|s| s.volume_l);
    let pct = volume
        .filter(|_| t.capacity_l > 0.0)
        .map(|v| (v / t.capacity_l * 100.0).clamp(0.0, 100.0));
    html! {
        tr {
            td { (t.site_id) }
            td {
                a href=(layout::tank_url(&t.site_id, &t.tank_id)) {
                    @if t.name.is_empty() { (t.tank_id) } @else { (t.name) }
                }
                br; span.muted { (t.tank_id) }
            }
            td { (t.product) }
            td {
                @if let (Some(v), Some(p)) = (volume, pct) {
                    meter.fill min="0" max=(t.capacity_l) low=(t.low_l) optimum=(t.capacity_l) value=(v)
                        aria-label=(format!("{p:.0} % full")) {}
                    " " (format!("{p:.0} %"))
                } @else {
                    span.muted { "—" }
                }
            }
            td.num { (litres(volume)) }
            td { (st.and_then(|s| s.source).map_or("—".to_string(), |s| s.to_string())) }
            td { (st.map_or("unknown".to_string(), |s| s.freshness.to_string())) }
            td { (st.map_or("", |s| s.flags.as_str())) }
            td.num { (litres(st.and_then(|s| s.rate_lph))) }
            td { (when(st.and_then(|s| s.runout_ms), tz)) }
            td { (risk(st.map_or(Risk::Unknown, |s| s.risk))) }
            td { (when(st.and_then(|s| s.next_eta_ms), tz)) }
            td.num {
                @match st.and_then(|s| s.margin_h) {
                    Some(m) if m < 0.0 => span.problem title="runs out before the delivery" { (format!("{m:.0} h")) },
                    Some(m) => (format!("{m:.0} h")),
                    None => span.muted { "—" },
                }
            }
        }
    }
}

pub(super) fn table(
    rows: &[(TankRow, Option<StateRow>)],
    zones: &HashMap<String, SiteCalendarRow>,
) -> Markup {
    html! {
        div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" {
            table {
                (layout::head(&["Site", "Tank", "Product", "Fill", "Volume (L)", "Source", "Freshness", "Flags", "Rate (L/h)", "Runout", "Risk", "Next delivery", "Margin"]))
                tbody {
                    @for (t, st) in rows {
                        (row(t, st.as_ref(), &zone(zones, &t.site_id)))
                    }
                }
            }
        }
    }
}

pub(super) fn zone(zones: &HashMap<String, SiteCalendarRow>, site: &str) -> TimeZone {
    zones.get(site).map_or(TimeZone::UTC, |s| {
        crate::services::evaluate::zone(&s.time_zone)
    })
}

/// A filter's value as its type; what is wrong with it as a sentence.
fn parse<T: std::str::FromStr>(field: &str, v: Option<&str>) -> Result<Option<T>, String> {
    v.map(|s| {
        s.parse::<T>()
            .map_err(|_| format!("The {field} filter {s:?} is not one of its values."))
    })
    .transpose()
}

pub async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Query(f): Query<Filters>,
) -> Response {
    let ctx = s.ctx(&p);
    let (risk_f, fresh_f) = match (
        parse::<Risk>("risk", given(&f.risk)),
        parse::<FreshnessKind>("freshness", given(&f.freshness)),
    ) {
        (Ok(r), Ok(k)) => (r, k),
        (Err(why), _) | (_, Err(why)) => return layout::error(StatusCode::BAD_REQUEST, &why),
    };
    let after = given(&f.after).and_then(|a| a.split_once('/'));
    let rows = match svc::tanks(
        &ctx,
        TankFilter {
            site: given(&f.site),
            q: given(&f.q),
            product: given(&f.product),
            risk: risk_f,
            freshness: fresh_f,
            sites: None,
            after,
            limit: PAGE + 1,
        },
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let zones = match svc::site_settings(&ctx).await {
        Ok(z) => z,
        Err(e) => return failed(e),
    };
    let more = rows.len() as i64 > PAGE;
    let shown = &rows[..rows.len().min(PAGE as usize)];
    let next = shown.last().filter(|_| more).map(|(t, _)| {
        let after = format!("{}/{}", t.site_id, t.tank_id);
        let filters = [
            ("site", &f.site),
            ("q", &f.q),
            ("product", &f.product),
            ("risk", &f.risk),
            ("freshness", &f.freshness),
        ];
        format!(
            "/tanks?{}",
            layout::query_of(&filters, Some(("after", &after)))
        )
    });
    let opt = |v: &Option<String>| given(v).unwrap_or_default().to_string();
    let body = html! {
        form.filters method="get" action="/tanks" role="search" {
            label { "Site" input name="site" value=(opt(&f.site)); }
            label { "Search" input name="q" value=(opt(&f.q)) placeholder="site id or name"; }
            label { "Product" input name="product" value=(opt(&f.product)); }
            label { "Risk"
                select name="risk" {
                    option value="" { "any" }
                    @for r in [Risk::Critical, Risk::High, Risk::Medium, Risk::Low, Risk::Unknown] {
                        option value=(r) selected[risk_f == Some(r)] { (r) }
                    }
                }
            }
            label { "Freshness"
                select name="freshness" {
                    option value="" { "any" }
                    @for k in FreshnessKind::ALL {
                        option value=(k) selected[fresh_f == Some(*k)] { (k) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if shown.is_empty() {
            p { "No tank matches." }
        } @else {
            (table(shown, &zones))
        }
        @if let Some(n) = next {
            nav.pager aria-label="Pages" { a href=(n) { "Next page" } }
        }
    };
    layout::page(&v, "/tanks", "Tanks", body).into_response()
}
