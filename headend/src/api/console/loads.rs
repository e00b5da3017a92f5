//! Loads (planned deliveries): searched by reference or carrier, site and
//! status; created; one load with its ETA history and timeline, an ETA
//! update with its source, cancel; and a CSV upload whose per-row report
//! is shown against the file's rows. Read and written through
//! `services::loads` and `services::load_import`, as `/api/v1/loads` and
//! `/api/v1/sites/{site}/loads/import` are.

use std::collections::HashMap;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jiff::tz::TimeZone;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::layout::{self, Viewer, failed, given, seg, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::{EtaSource, LoadId, LoadStatus, Permission, SiteId};
use crate::services::Context;
use crate::services::access::Principal;
use crate::services::loads::{self as svc, LoadPatch, LoadRequest, LoadView};
use crate::services::observations::ImportReport;
use crate::store::loads::LoadFilter;

/// Loads on a page.
const PAGE: i64 = 50;
/// Rows of an uploaded file shown against its report.
const SHOWN_ROWS: usize = 500;

fn url(id: &LoadId) -> String {
    format!("/loads/{}", seg(id.as_str()))
}

/// Each visible site's zone (a list spans sites).
async fn zones(s: &ApiState, ctx: &Context) -> HashMap<String, TimeZone> {
    crate::services::sites::list(ctx, &s.sessions, None)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let tz = crate::services::evaluate::zone(&v.row.time_zone);
            (v.row.site_id, tz)
        })
        .collect()
}

/// `datetime-local` text (`2026-12-07T14:30`) in the site's zone, as ms.
pub(super) fn local_ms(v: &str, tz: &TimeZone) -> Result<i64, String> {
    let dt: jiff::civil::DateTime = v
        .trim()
        .parse()
        .map_err(|_| format!("The time {v:?} is not a date and time (2026-12-07T14:30)."))?;
    dt.to_zoned(tz.clone())
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|e| format!("The time {v:?} does not exist in the site's zone: {e}"))
}

#[derive(Deserialize, Default)]
pub struct Filters {
    q: Option<String>,
    site: Option<String>,
    status: Option<String>,
    after: Option<String>,
}

fn status_select(name: &str, chosen: Option<&str>, any: bool) -> Markup {
    html! {
        select name=(name) id=(name) {
            @if any { option value="" { "any" } }
            @for st in LoadStatus::ALL {
                @if chosen == Some(st.as_str()) { option value=(st.as_str()) selected { (st) } }
                @else { option value=(st.as_str()) { (st) } }
            }
        }
    }
}

fn source_select(chosen: Option<&str>) -> Markup {
    html! {
        select name="eta_source" id="eta_source" {
            @for src in EtaSource::ALL {
                @if chosen.unwrap_or("manual") == src.as_str() { option value=(src.as_str()) selected { (src) } }
                @else { option value=(src.as_str()) { (src) } }
            }
        }
    }
}

fn table(list: &[LoadView], zones: &HashMap<String, TimeZone>) -> Markup {
    html! {
        @if list.is_empty() { p { "No load matches." } } @else {
        div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
            (layout::head(&["Reference", "Carrier", "Site", "Tanks", "Planned", "ETA", "Source", "Status", "Timing"]))
            tbody { @for v in list { @let l = &v.load; @let tz = zones.get(l.site_id.as_str()).cloned().unwrap_or(TimeZone::UTC); tr {
                td { a href=(url(&l.load_id)) { (l.reference) } }
                td { (l.carrier) }
                td { a href=(format!("/sites/{}", seg(l.site_id.as_str()))) { (l.site_id) } }
                td { (l.tank_ids().join(", ")) }
                td.num { (format!("{:.0} L", l.planned_volume_l)) }
                td { (when(Some(l.eta_ms), &tz)) }
                td { (l.eta_source) }
                td { (l.status) }
                td { (l.timing.map(|t| t.to_string()).unwrap_or_default()) }
            } } }
        } } }
    }
}

/// The list page's forms (create, upload) for those who may plan loads.
fn forms(v: &Viewer, sites: &[String], problem: Option<&str>, report: Option<Markup>) -> Markup {
    html! {
        section aria-labelledby="new-h" {
            h2 #new-h { "Plan a load" }
            @if let Some(pr) = problem { p.problem role="alert" { (pr) } }
            form.grid method="post" action="/loads" {
                input type="hidden" name="csrf" value=(v.token);
                label for="new-site" { "Site" }
                select #new-site name="site" required { @for s in sites { option value=(s) { (s) } } }
                label for="reference" { "Reference (PO)" }
                input #reference name="reference" required maxlength="200";
                label for="carrier" { "Carrier" }
                input #carrier name="carrier" maxlength="200";
                label for="tanks" { "Tanks (ids, comma-separated)" }
                input #tanks name="tanks" required;
                label for="product" { "Product" }
                input #product name="product" maxlength="100";
                label for="planned_volume_l" { "Planned volume (L)" }
                input #planned_volume_l name="planned_volume_l" type="number" min="1" step="any" required;
                label for="eta" { "ETA (the site's time)" }
                input #eta name="eta" type="datetime-local" required;
                label for="eta_source" { "ETA source" }
                (source_select(None))
                button.primary type="submit" { "Plan" }
            }
        }
        section aria-labelledby="upload-h" {
            h2 #upload-h { "Upload a CSV of loads" }
            p.muted { "Columns: reference, tanks, planned_volume_l, eta, and optionally eta_source, carrier, product. Good rows are planned or updated; each bad row is named with its problem." }
            form.grid method="post" action="/loads/import" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(v.token);
                label for="up-site" { "Site" }
                select #up-site name="site" required { @for s in sites { option value=(s) { (s) } } }
                label for="file" { "CSV file" }
                input #file name="file" type="file" accept=".csv,text/csv" required;
                button.primary type="submit" { "Upload" }
            }
            @if let Some(r) = report { (r) }
        }
    }
}

async fn list_page(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    f: &Filters,
    problem: Option<&str>,
    report: Option<Markup>,
    status: StatusCode,
) -> Response {
    let ctx = s.ctx(p);
    let st = match given(&f.status).map(str::parse::<LoadStatus>).transpose() {
        Ok(x) => x,
        Err(_) => {
            let why = format!("status: use one of {}", LoadStatus::choices());
            return layout::error(StatusCode::UNPROCESSABLE_ENTITY, &why);
        }
    };
    let after = given(&f.after).and_then(|a| {
        let (eta, id) = a.split_once(':')?;
        Some((eta.parse::<i64>().ok()?, id.to_string()))
    });
    let filter = LoadFilter {
        site: given(&f.site),
        status: st,
        text: given(&f.q),
        ..LoadFilter::default()
    };
    let mut found = match svc::list(
        &ctx,
        &filter,
        after.as_ref().map(|(e, i)| (*e, i.as_str())),
        PAGE + 1,
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let more = found.len() > PAGE as usize;
    found.truncate(PAGE as usize);
    let zones = zones(s, &ctx).await;
    let mut sites: Vec<String> = zones.keys().cloned().collect();
    sites.sort();
    let next = more
        .then(|| {
            found
                .last()
                .map(|l| format!("{}:{}", l.load.eta_ms.ms(), l.load.load_id))
        })
        .flatten();
    let body = html! {
        form.filters method="get" action="/loads" role="search" {
            label { "Reference or carrier" input name="q" value=(given(&f.q).unwrap_or_default()); }
            label { "Site" input name="site" value=(given(&f.site).unwrap_or_default()); }
            label for="status" { "Status" } (status_select("status", given(&f.status), true))
            button type="submit" { "Search" }
        }
        (table(&found, &zones))
        @if let Some(n) = next {
            p { a rel="next" href=(format!("/loads?{}", layout::query_of(&[("q", &f.q), ("site", &f.site), ("status", &f.status)], Some(("after", &n))))) { "Later loads" } }
        }
        @if p.role.may(Permission::Loads) { (forms(v, &sites, problem, report)) }
    };
    (status, layout::page(v, "/loads", "Loads", body)).into_response()
}

pub async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Query(f): Query<Filters>,
) -> Response {
    list_page(&s, &p, &v, &f, None, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct NewLoad {
    #[serde(default)]
    site: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    carrier: String,
    #[serde(default)]
    tanks: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    planned_volume_l: String,
    #[serde(default)]
    eta: String,
    #[serde(default)]
    eta_source: String,
}

pub async fn create(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Form(n): Form<NewLoad>,
) -> Response {
    let ctx = s.ctx(&p);
    let Ok(site) = SiteId::parse(n.site.trim()) else {
        return refuse(&s, &p, &v, format!("There is no site {:?}.", n.site)).await;
    };
    let tz = match crate::services::inventory::site(&ctx, &site).await {
        Ok(x) => crate::services::evaluate::zone(&x.time_zone),
        Err(e) => return failed(e),
    };
    let eta = match local_ms(&n.eta, &tz) {
        Ok(x) => x,
        Err(why) => return refuse(&s, &p, &v, why).await,
    };
    let Ok(volume) = n.planned_volume_l.trim().parse::<f64>() else {
        return refuse(
            &s,
            &p,
            &v,
            format!(
                "The planned volume {:?} is not a number of litres.",
                n.planned_volume_l
            ),
        )
        .await;
    };
    let req = LoadRequest {
        site,
        reference: n.reference.trim().to_string(),
        carrier: n.carrier.trim().to_string(),
        tanks: n
            .tanks
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        product: n.product.trim().to_string(),
        planned_volume_l: volume,
        eta: json!(eta),
        eta_source: n.eta_source,
    };
    match svc::create(&ctx, req, p.actor.clone()).await {
        Ok(x) => Redirect::to(&url(&x.load.load.load_id)).into_response(),
        Err(e) => match layout::refusal(e) {
            Ok(why) => refuse(&s, &p, &v, why).await,
            Err(nf) => nf.into_response(),
        },
    }
}

/// The list page with why a new load was refused, above its form.
async fn refuse(s: &ApiState, p: &Principal, v: &Viewer, why: String) -> Response {
    list_page(
        s,
        p,
        v,
        &Filters::default(),
        Some(&why),
        None,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

async fn load_page(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    id: &str,
    problem: Option<&str>,
) -> Response {
    let ctx = s.ctx(p);
    let Ok(id) = id.parse::<LoadId>() else {
        return layout::error(StatusCode::NOT_FOUND, &format!("There is no load {id:?}."));
    };
    let lv = match svc::get(&ctx, &id).await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let l = &lv.load;
    let tz = match crate::services::inventory::site(&ctx, &l.site_id).await {
        Ok(x) => crate::services::evaluate::zone(&x.time_zone),
        Err(_) => TimeZone::UTC,
    };
    let open = !l.status.is_final();
    let body = html! {
        dl.facts {
            dt { "Site" } dd { a href=(format!("/sites/{}", seg(l.site_id.as_str()))) { (l.site_id) } }
            dt { "Carrier" } dd { (l.carrier) }
            dt { "Tanks" } dd { @for t in l.tank_ids() { a href=(layout::tank_url(l.site_id.as_str(), &t)) { (t) } " " } }
            dt { "Product" } dd { (l.product) }
            dt { "Planned" } dd { (format!("{:.0} L", l.planned_volume_l)) }
            dt { "ETA" } dd { (when(Some(l.eta_ms), &tz)) " (" (l.eta_source) ")" }
            dt { "Status" } dd { (l.status) @if let Some(t) = l.timing { " · " (t) } }
            @if let Some(d) = l.delivered_volume_l { dt { "Delivered" } dd { (format!("{d:.0} L")) @if let Some(src) = l.delivery_source { " (" (src) ")" } } }
            @if let Some(c) = &l.last_command_id { dt { "Last ETA push" } dd { a href=(format!("/commands/{}", seg(c.as_str()))) { (c) } } }
        }
        @if open && p.role.may(Permission::Loads) {
            section aria-labelledby="eta-h" {
                h2 #eta-h { "Update the ETA" }
                @if let Some(pr) = problem { p.problem role="alert" { (pr) } }
                form.grid method="post" action=(url(&id)) {
                    input type="hidden" name="csrf" value=(v.token);
                    label for="eta" { "ETA (the site's time)" }
                    input #eta name="eta" type="datetime-local" required;
                    label for="eta_source" { "Source" }
                    (source_select(None))
                    button.primary type="submit" { "Update" }
                }
                form method="post" action=(format!("{}/cancel", url(&id))) {
                    input type="hidden" name="csrf" value=(v.token);
                    button.danger type="submit" { "Cancel this load" }
                }
            }
        }
        section aria-labelledby="etas-h" {
            h2 #etas-h { "ETA history" }
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Given", "ETA", "Source", "By", "Applied"]))
                tbody { @for e in &lv.etas { tr {
                    td { (when(Some(e.at_ms), &tz)) } td { (when(Some(e.eta_ms), &tz)) }
                    td { (e.source) } td { (e.actor) }
                    td { @if e.applied != 0 { "yes" } @else { span.muted { "no: a higher-ranked source stands" } } }
                } } }
            } }
        }
        section aria-labelledby="events-h" {
            h2 #events-h { "Timeline" }
            ol.timeline { @for e in &lv.events { li {
                (when(Some(e.at_ms), &tz)) " · " strong { (e.kind) } " · " (e.detail) " · " span.muted { (e.actor) }
            } } }
        }
    };
    layout::answer(
        problem.is_some(),
        layout::page(v, "/loads", &format!("Load {}", l.reference), body),
    )
}

pub async fn show(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    load_page(&s, &p, &v, &id, None).await
}

#[derive(Deserialize, Default)]
pub struct EtaForm {
    #[serde(default)]
    eta: String,
    #[serde(default)]
    eta_source: String,
}

async fn change(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    id: &str,
    patch: Result<LoadPatch, String>,
) -> Response {
    let ctx = s.ctx(p);
    let Ok(load) = id.parse::<LoadId>() else {
        return layout::error(StatusCode::NOT_FOUND, &format!("There is no load {id:?}."));
    };
    let patch = match patch {
        Ok(x) => x,
        Err(why) => return load_page(s, p, v, id, Some(&why)).await,
    };
    match svc::patch(&ctx, &load, patch, p.actor.clone()).await {
        Ok(_) => Redirect::to(&url(&load)).into_response(),
        Err(e) => match layout::refusal(e) {
            Ok(why) => load_page(s, p, v, id, Some(&why)).await,
            Err(nf) => nf.into_response(),
        },
    }
}

pub async fn update(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    Form(f): Form<EtaForm>,
) -> Response {
    let ctx = s.ctx(&p);
    let tz = match id.parse::<LoadId>() {
        Ok(l) => match svc::get(&ctx, &l).await {
            Ok(lv) => match crate::services::inventory::site(&ctx, &lv.load.site_id).await {
                Ok(x) => crate::services::evaluate::zone(&x.time_zone),
                Err(e) => return failed(e),
            },
            Err(e) => return failed(e),
        },
        Err(_) => {
            return layout::error(StatusCode::NOT_FOUND, &format!("There is no load {id:?}."));
        }
    };
    let patch = local_ms(&f.eta, &tz).map(|eta| LoadPatch {
        eta: Some(json!(eta)),
        eta_source: Some(f.eta_source.clone()),
        planned_volume_l: None,
        status: None,
    });
    change(&s, &p, &v, &id, patch).await
}

pub async fn cancel(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let patch = LoadPatch {
        eta: None,
        eta_source: None,
        planned_volume_l: None,
        status: Some("cancelled".into()),
    };
    change(&s, &p, &v, &id, Ok(patch)).await
}

/// The report of an upload, shown against the file's rows: each row as
/// read, with what happened to it (its problems named by column).
pub fn report(r: &ImportReport, text: &str) -> Markup {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = rd
        .headers()
        .map(|h| h.iter().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    let rows: Vec<(usize, Vec<String>)> = rd
        .records()
        .take(SHOWN_ROWS)
        .enumerate()
        .map(|(i, r)| {
            (
                i + 2,
                r.map(|r| r.iter().map(str::to_string).collect())
                    .unwrap_or_default(),
            )
        })
        .collect();
    html! {
        section #report aria-labelledby="report-h" {
            h2 #report-h { "Upload report" }
            p role="status" {
                (r.rows) " rows: " (r.added) " planned, " (r.updated) " updated, " (r.unchanged) " unchanged, "
                strong { (r.rejected) " rejected" } "."
            }
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                thead { tr { th scope="col" { "Row" } @for h in &header { th scope="col" { (h) } } th scope="col" { "Result" } } }
                tbody { @for (n, cells) in &rows {
                    @let problems: Vec<_> = r.problems.iter().filter(|p| p.row == *n).collect();
                    tr class=[(!problems.is_empty()).then_some("rejected")] {
                        th scope="row" { (n) }
                        @for c in cells { td { (c) } }
                        td { @if problems.is_empty() { "ok" } @else {
                            @for pr in &problems { span.problem { (pr.column) ": " (pr.problem) } br; }
                        } }
                    }
                } }
            } }
            @let beyond: Vec<_> = r.problems.iter().filter(|p| p.row < 2 || p.row > SHOWN_ROWS + 1).collect();
            @if !beyond.is_empty() {
                ul { @for pr in beyond { li.problem { "Row " (pr.row) ", " (pr.column) ": " (pr.problem) } } }
            }
        }
    }
}

pub async fn import(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    mut form: Multipart,
) -> Response {
    let (mut site, mut text) = (String::new(), None);
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let Ok(value) = field.text().await else {
                    let why =
                        "The upload could not be read (a file is at most 64 KiB of UTF-8 text).";
                    return upload_failed(&s, &p, &v, why, StatusCode::UNPROCESSABLE_ENTITY).await;
                };
                match name.as_str() {
                    "site" => site = value,
                    "file" => text = Some(value),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => {
                let why = format!("The upload could not be read: {e}");
                return upload_failed(&s, &p, &v, &why, StatusCode::BAD_REQUEST).await;
            }
        }
    }
    let Ok(site) = SiteId::parse(site.trim()) else {
        return layout::error(
            StatusCode::NOT_FOUND,
            &format!("There is no site {site:?}."),
        );
    };
    let text = text.unwrap_or_default();
    match crate::services::load_import::import(&s.ctx(&p), &site, &text, p.actor.clone()).await {
        Ok(r) => {
            // the file was read: its report (the rows refused named) is
            // the answer, as the API's 200
            let shown = report(&r, &text);
            let filters = Filters {
                site: Some(site.to_string()),
                ..Filters::default()
            };
            list_page(&s, &p, &v, &filters, None, Some(shown), StatusCode::OK).await
        }
        Err(e) => match layout::refusal(e) {
            Ok(why) => upload_failed(&s, &p, &v, &why, StatusCode::UNPROCESSABLE_ENTITY).await,
            Err(nf) => nf.into_response(),
        },
    }
}

/// The list page with why an upload was refused as a whole, under the
/// upload form.
async fn upload_failed(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    why: &str,
    status: StatusCode,
) -> Response {
    let shown = html! { p.problem role="alert" { (why) } };
    list_page(s, p, v, &Filters::default(), None, Some(shown), status).await
}
