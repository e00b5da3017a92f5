//! One tank: what the inventory concluded (volume, source, freshness,
//! rate, runout with its p10-p90, risk, next delivery) and, for those who
//! may push observations, the manual dip form. Read and written through
//! `services::inventory`, as `GET /api/v1/sites/{site}/tanks/{tank}` and
//! `POST /api/v1/inventory/observations` are.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::layout::{self, SitePath, Viewer};
use super::layout::{failed, when};
use super::{chart, site};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::{Permission, SiteId, UnixMs};
use crate::services::access::Principal;
use crate::services::inventory as svc;
use crate::services::observations::{self as obs_svc, ObservationRequest, ObservationsRequest};
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

/// The tank's trend: its gauge's volume over the window picked, its
/// deliveries marked, and the forecast rate drawn ahead to the runout.
async fn trend(
    ctx: &crate::services::Context,
    (site, tank): (&SiteId, &str),
    st: Option<&crate::store::inventory::StateRow>,
    pick: &site::Pick,
    tz: &jiff::tz::TimeZone,
) -> Result<Markup, Response> {
    let fields = vec![(tank.to_string(), "volume".to_string())];
    let (_, range) = site::picked(pick, None, &fields)
        .map_err(|why| layout::error(StatusCode::UNPROCESSABLE_ENTITY, &why))?;
    let now = now_ms();
    let series = crate::services::sites::series(
        ctx,
        site,
        tank,
        "volume",
        (UnixMs::from_ms(now - range.ms()), UnixMs::from_ms(now)),
        range.raw(),
    )
    .await
    .map_err(failed)?;
    let marks = crate::services::sites::deliveries(ctx, site)
        .await
        .map_err(failed)?
        .iter()
        .filter(|d| d.tank == tank)
        .map(site::mark)
        .collect();
    let ahead = st.and_then(|s| {
        let (at, v, rate, runout) = (
            s.observed_ms?.ms(),
            s.volume_l?,
            s.rate_lph?,
            s.runout_ms?.ms(),
        );
        let end = v - rate * (runout - at) as f64 / 3_600_000.0;
        (runout > at && end.is_finite()).then_some(chart::Ahead {
            from: (at, v),
            to: (runout, end),
        })
    });
    let action = layout::tank_url(site, tank);
    Ok(site::trend(
        &action,
        &fields,
        (tank, "volume"),
        range,
        &series,
        marks,
        ahead,
        tz,
    ))
}

fn observations(
    list: &[Result<crate::store::inventory::ObservationRow, crate::Error>],
    tz: &jiff::tz::TimeZone,
) -> Markup {
    html! {
        section aria-labelledby="obs-h" {
            h2 #obs-h { "Observations" }
            @if list.is_empty() { p.muted { "None pushed, imported or dipped (the gauge's readings are in the trend)." } } @else {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["At", "Volume", "Water", "Source", "By", "Note"]))
                tbody { @for o in list { tr {
                    @match o {
                        Ok(o) => {
                            td { (when(Some(o.at_ms), tz)) }
                            td.num { (format!("{:.0} L", o.volume_l)) }
                            td.num { (o.water_mm.map_or(String::new(), |w| format!("{w:.0} mm"))) }
                            td { (o.source) } td { (o.actor) } td { (o.note) }
                        }
                        Err(e) => { td colspan="6" { span.problem { "unreadable: " (e) } } }
                    }
                } } }
            } } }
        }
    }
}

fn settings_form(
    v: &Viewer,
    site: &str,
    tank: &str,
    t: &crate::store::inventory::TankRow,
) -> Markup {
    html! {
        section aria-labelledby="settings-h" {
            h2 #settings-h { "Settings" }
            form.grid method="post" action=(format!("{}/settings", layout::tank_url(site, tank))) {
                input type="hidden" name="csrf" value=(v.token);
                label for="s-name" { "Name" } input #s-name name="name" value=(t.name) maxlength="200";
                label for="s-product" { "Product" } input #s-product name="product" value=(t.product) required maxlength="64";
                label for="s-capacity" { "Capacity (L)" } input #s-capacity name="capacity_l" type="number" min="1" step="any" required value=(t.capacity_l);
                label for="s-low" { "Low level (L)" } input #s-low name="low_l" type="number" min="0" step="any" required value=(t.low_l);
                label for="s-critical" { "Critical level (L)" } input #s-critical name="critical_l" type="number" min="0" step="any" required value=(t.critical_l);
                label for="s-floor" { "Unusable bottom (L)" } input #s-floor name="floor_l" type="number" min="0" step="any" required value=(t.floor_l);
                label for="s-water" { "Water limit (mm, optional)" } input #s-water name="water_limit_mm" type="number" min="0" step="any" value=[t.water_limit_mm];
                button.primary type="submit" { "Save" }
            }
        }
    }
}

async fn render(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    (site, tank): (&SiteId, &str),
    pick: &site::Pick,
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
    let chart = match trend(&ctx, (site, tank), st, pick, &tz).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let obs = match obs_svc::observations(&ctx, site, tank).await {
        Ok(o) => o,
        Err(e) => return failed(e),
    };
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
            (fact("Site", html! { a href=(format!("/sites/{}", layout::seg(site))) { (site) } }))
        }
        (chart)
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
        (observations(&obs, &tz))
        @if p.role.may(Permission::Configure) { (settings_form(v, site, tank, &t)) }
    };
    layout::answer(problem.is_some(), layout::page(v, "/tanks", &title, body))
}

pub async fn show(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    SitePath(site): SitePath,
    Path((_, tank)): Path<(String, String)>,
    Query(pick): Query<site::Pick>,
) -> Response {
    render(&s, &p, &v, (&site, &tank), &pick, None).await
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
    SitePath(site): SitePath,
    Path((_, tank)): Path<(String, String)>,
    Form(d): Form<Dip>,
) -> Response {
    let Ok(volume) = d.volume_l.trim().parse::<f64>() else {
        let why = format!("The volume {:?} is not a number of litres.", d.volume_l);
        return render(
            &s,
            &p,
            &v,
            (&site, &tank),
            &site::Pick::default(),
            Some(&why),
        )
        .await;
    };
    let req = ObservationsRequest::One(ObservationRequest {
        site: site.to_string(),
        tank: tank.clone(),
        at: json!(now_ms()),
        volume_l: volume,
        water_mm: None,
        source: Some("manual".into()),
        confidence: None,
        note: d.note,
    });
    match obs_svc::push(&s.ctx(&p), req, &p.actor.to_string()).await {
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
            render(
                &s,
                &p,
                &v,
                (&site, &tank),
                &site::Pick::default(),
                Some(&why),
            )
            .await
        }
        Err(e) => match layout::refusal(e) {
            Ok(why) => {
                render(
                    &s,
                    &p,
                    &v,
                    (&site, &tank),
                    &site::Pick::default(),
                    Some(&why),
                )
                .await
            }
            Err(nf) => nf.into_response(),
        },
    }
}

/// The settings form's fields (text: a wrong one is named back).
#[derive(Deserialize)]
pub struct Settings {
    #[serde(default)]
    name: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    capacity_l: String,
    #[serde(default)]
    low_l: String,
    #[serde(default)]
    critical_l: String,
    #[serde(default)]
    floor_l: String,
    #[serde(default)]
    water_limit_mm: String,
}

fn litres_of(label: &str, v: &str) -> Result<Option<f64>, String> {
    match v.trim() {
        "" => Ok(None),
        x => x
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("{label}: {x:?} is not a number.")),
    }
}

/// Replaces the tank's settings, as `PUT /api/v1/sites/{site}/tanks/{tank}`.
pub async fn settings(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    SitePath(site): SitePath,
    Path((_, tank)): Path<(String, String)>,
    Form(f): Form<Settings>,
) -> Response {
    let parsed = (|| {
        Ok::<_, String>(svc::TankRequest {
            name: f.name.trim().to_string(),
            product: f.product.trim().to_string(),
            capacity_l: litres_of("Capacity", &f.capacity_l)?
                .ok_or("Capacity: give the tank's capacity.")?,
            low_l: litres_of("Low level", &f.low_l)?,
            critical_l: litres_of("Critical level", &f.critical_l)?,
            floor_l: litres_of("Unusable bottom", &f.floor_l)?,
            water_limit_mm: litres_of("Water limit", &f.water_limit_mm)?,
        })
    })();
    let req = match parsed {
        Ok(r) => r,
        Err(why) => {
            return render(
                &s,
                &p,
                &v,
                (&site, &tank),
                &site::Pick::default(),
                Some(&why),
            )
            .await;
        }
    };
    let ctx = s.ctx(&p);
    // a page for a tank that exists: the form replaces, never creates
    if let Err(e) = svc::tank(&ctx, &site, &tank).await {
        return failed(e);
    }
    match svc::put_tank(&ctx, &site, &tank, req).await {
        Ok(_) => Redirect::to(&layout::tank_url(&site, &tank)).into_response(),
        Err(e) => match layout::refusal(e) {
            Ok(why) => {
                render(
                    &s,
                    &p,
                    &v,
                    (&site, &tank),
                    &site::Pick::default(),
                    Some(&why),
                )
                .await
            }
            Err(nf) => nf.into_response(),
        },
    }
}
