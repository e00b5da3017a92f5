//! One tank: what the inventory concluded (volume, source, freshness,
//! rate, runout with its p10-p90, risk, next delivery) and, for those who
//! may push observations, the manual dip form. Read and written through
//! `services::inventory`, as `GET /api/v1/sites/{site}/tanks/{tank}` and
//! `POST /api/v1/inventory/observations` are.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::layout::{self, Viewer};
use super::layout::{failed, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::Permission;
use crate::services::access::Principal;
use crate::services::inventory::{self as svc, ObservationRequest, ObservationsRequest};
use crate::wallclock::now_ms;

fn fact(label: &str, value: Markup) -> Markup {
    html! { dt { (label) } dd { (value) } }
}

fn num(v: Option<f64>, unit: &str) -> Markup {
    match v {
        Some(x) if x.is_finite() => html! { (format!("{x:.0} {unit}")) },
        _ => html! { span.muted { "—" } },
    }
}

async fn render(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    site: &str,
    tank: &str,
    problem: Option<&str>,
) -> Response {
    let ctx = s.ctx(p);
    let (t, st) = match svc::tank(&ctx, site, tank).await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let settings = match svc::site(&ctx, site).await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let tz = crate::services::evaluate::zone(&settings.time_zone);
    let st = st.as_ref();
    let title = if t.name.is_empty() {
        format!("{site} / {tank}")
    } else {
        format!("{site} / {} ({tank})", t.name)
    };
    let body = html! {
        dl.facts {
            (fact("Product", html! { (t.product) }))
            (fact("Volume", num(st.and_then(|s| s.volume_l), "L")))
            (fact("Capacity", num(Some(t.capacity_l), "L")))
            (fact("Low / critical", html! { (format!("{:.0} / {:.0} L", t.low_l, t.critical_l)) }))
            (fact("Source", html! { (st.and_then(|s| s.source).map_or("—".to_string(), |x| x.to_string())) }))
            (fact("Observed", when(st.and_then(|s| s.observed_ms), &tz)))
            (fact("Freshness", html! { (st.map_or("unknown".to_string(), |s| s.freshness.to_string())) }))
            (fact("Flags", html! { (st.map_or("", |s| s.flags.as_str())) }))
            (fact("Rate", html! {
                (num(st.and_then(|s| s.rate_lph), "L/h"))
                @if let Some(b) = st.and_then(|s| s.rate_basis) { " (" (b) ")" }
            }))
            (fact("Runout", html! {
                (when(st.and_then(|s| s.runout_ms), &tz))
                @if let (Some(lo), Some(hi)) = (st.and_then(|s| s.runout_p10_ms), st.and_then(|s| s.runout_p90_ms)) {
                    br; span.muted { "p10 " (when(Some(lo), &tz)) ", p90 " (when(Some(hi), &tz)) }
                }
            }))
            (fact("Risk", html! { @let r = st.map_or(crate::domain::forecast::Risk::Unknown, |s| s.risk); span class=(format!("risk risk-{r}")) { (r) } }))
            (fact("Next delivery", when(st.and_then(|s| s.next_eta_ms), &tz)))
        }
        @if p.role.may(Permission::Loads) {
            section aria-labelledby="dip" {
                h2 #dip { "Record a manual dip" }
                @if let Some(pr) = problem {
                    p.problem role="alert" { (pr) }
                }
                form.dip method="post" action=(format!("{}/dip", layout::tank_url(site, tank))) {
                    input type="hidden" name="csrf" value=(v.token);
                    label for="volume_l" { "Volume (L)" }
                    input #volume_l name="volume_l" type="number" min="0" step="any" required;
                    label for="note" { "Note" }
                    input #note name="note" maxlength="500";
                    button type="submit" { "Record" }
                }
            }
        }
    };
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, layout::page(v, "/tanks", &title, body)).into_response()
}

pub async fn show(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path((site, tank)): Path<(String, String)>,
) -> Response {
    render(&s, &p, &v, &site, &tank, None).await
}

#[derive(Deserialize)]
pub struct Dip {
    #[serde(default)]
    volume_l: String,
    #[serde(default)]
    note: String,
}

pub async fn dip(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path((site, tank)): Path<(String, String)>,
    Form(d): Form<Dip>,
) -> Response {
    let Ok(volume) = d.volume_l.trim().parse::<f64>() else {
        let why = format!("The volume {:?} is not a number of litres.", d.volume_l);
        return render(&s, &p, &v, &site, &tank, Some(&why)).await;
    };
    let req = ObservationsRequest::One(ObservationRequest {
        site: site.clone(),
        tank: tank.clone(),
        at: json!(now_ms()),
        volume_l: volume,
        water_mm: None,
        source: Some("manual".into()),
        confidence: None,
        note: d.note,
    });
    match svc::push(&s.ctx(&p), req, &p.actor.to_string()).await {
        Ok(r) if r.problems.is_empty() => {
            Redirect::to(&layout::tank_url(&site, &tank)).into_response()
        }
        Ok(r) => {
            let why = r
                .problems
                .iter()
                .map(|x| format!("{}: {}", x.column, x.problem))
                .collect::<Vec<_>>()
                .join("; ");
            render(&s, &p, &v, &site, &tank, Some(&why)).await
        }
        Err(e) => {
            let api = crate::api::ApiError::from(e);
            if api.status == StatusCode::NOT_FOUND {
                return layout::error(api.status, &api.message);
            }
            render(&s, &p, &v, &site, &tank, Some(&api.message)).await
        }
    }
}
