//! One site: its agent's session, its assets with their latest values, a
//! trend chart of any field, its devices, deliveries, gaps, commands and
//! certificates (with revoke for admins). Read through
//! `services::sites::detail` and `series`, the facts the REST routes
//! under `/api/v1/sites/{site}/…` show.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jiff::tz::TimeZone;
use maud::{Markup, html};
use serde::Deserialize;

use super::chart::{self, Chart, Mark, Point};
use super::layout::{self, SitePath, Viewer, failed, given, seg, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::calendar::Holiday;
use crate::domain::{Permission, UnixMs, clock};
use crate::services::sites::{self as svc, Series, SiteDetail};
use crate::store::DeliveryEventRow;
use crate::wallclock::now_ms;

/// A chart's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Day,
    Week,
    Month,
    Year,
}

impl Range {
    pub const ALL: [Range; 4] = [Range::Day, Range::Week, Range::Month, Range::Year];

    pub fn as_str(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
            Range::Year => "1y",
        }
    }

    pub fn ms(self) -> i64 {
        const DAY: i64 = 86_400_000;
        match self {
            Range::Day => DAY,
            Range::Week => 7 * DAY,
            Range::Month => 30 * DAY,
            Range::Year => 365 * DAY,
        }
    }

    /// A day is drawn from raw readings, longer windows from hourly
    /// rollups.
    pub fn raw(self) -> bool {
        self == Range::Day
    }
}

impl std::str::FromStr for Range {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Range::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("range {s:?}: use 24h, 7d, 30d or 1y"))
    }
}

/// `?asset=&field=&range=`: which chart to draw.
#[derive(Deserialize, Default)]
pub struct Pick {
    asset: Option<String>,
    field: Option<String>,
    range: Option<String>,
}

/// A series as the chart's points, and how long a silence is a gap.
pub fn points(s: &Series) -> (Vec<Point>, i64) {
    match s {
        Series::Raw(rows) => {
            let pts: Vec<Point> = rows
                .iter()
                .filter_map(|r| {
                    r.value.map(|v| Point {
                        t_ms: r.source_ts_ms.ms(),
                        lo: v,
                        mid: v,
                        hi: v,
                    })
                })
                .collect();
            // three of the usual intervals, at least five minutes
            let mut dts: Vec<i64> = pts.windows(2).map(|w| w[1].t_ms - w[0].t_ms).collect();
            dts.sort_unstable();
            let usual = dts.get(dts.len() / 2).copied().unwrap_or(0);
            (pts, (3 * usual).max(300_000))
        }
        Series::Rollups { rows, bucket_ms } => (
            rows.iter()
                .map(|r| Point {
                    t_ms: r.hour_ms.ms() + bucket_ms / 2,
                    lo: r.min,
                    mid: r.mean,
                    hi: r.max,
                })
                .collect(),
            // a missing bucket is a gap
            bucket_ms + bucket_ms / 2,
        ),
    }
}

/// A delivery's mark on a chart.
pub fn mark(d: &DeliveryEventRow) -> Mark {
    let volume = if d.delivered_volume_l > 0.0 {
        format!("{:.0} L", d.delivered_volume_l)
    } else {
        d.phase.to_string()
    };
    Mark {
        t_ms: d.start_ms.ms(),
        label: format!(
            "delivery to {}: {volume} ({}{})",
            d.tank,
            d.source,
            d.verdict.map(|v| format!(", {v}")).unwrap_or_default()
        ),
    }
}

/// The chart's picker and the chart: `fields` are (asset, field) pairs.
#[allow(clippy::too_many_arguments)]
pub fn trend(
    action: &str,
    fields: &[(String, String)],
    (asset, field): (&str, &str),
    range: Range,
    series: &Series,
    marks: Vec<Mark>,
    ahead: Option<chart::Ahead>,
    tz: &TimeZone,
) -> Markup {
    let now = now_ms();
    let (pts, gap) = points(series);
    let unit = match series {
        Series::Raw(r) => r.first().map(|x| x.unit.clone()),
        Series::Rollups { rows, .. } => rows.first().map(|x| x.unit.clone()),
    }
    .unwrap_or_default();
    let title = format!(
        "{asset} {field} over {} ({})",
        range.as_str(),
        if range.raw() {
            "readings"
        } else {
            "min, mean and max of hourly rollups"
        }
    );
    let to = ahead.map_or(now, |a| a.to.0.clamp(now, now + range.ms() / 2));
    html! {
        section #chart aria-labelledby="chart-h" {
            h2 #chart-h { "Trend" }
            form.filters method="get" action=(action) {
                @if fields.len() > 1 {
                    label { "Point"
                        select name="point" {
                            @for (a, f) in fields {
                                @let v = format!("{a}/{f}");
                                @if a == asset && f == field {
                                    option value=(v) selected { (a) " · " (f) }
                                } @else {
                                    option value=(v) { (a) " · " (f) }
                                }
                            }
                        }
                    }
                }
                fieldset.range {
                    legend { "Window" }
                    @for r in Range::ALL {
                        label {
                            @if r == range {
                                input type="radio" name="range" value=(r.as_str()) checked;
                            } @else {
                                input type="radio" name="range" value=(r.as_str());
                            }
                            (r.as_str())
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            @if pts.is_empty() {
                p.muted { "No readings of " (asset) " " (field) " in the last " (range.as_str()) "." }
            }
            (chart::render(&Chart {
                from_ms: now - range.ms(),
                to_ms: to,
                points: pts,
                gap_after_ms: gap,
                marks,
                ahead,
                unit: &unit,
                title: &title,
                tz,
            }))
            p.legend.muted { "Line: mean; band: min to max; shaded: no data; vertical lines: deliveries (hover for the volume)" @if ahead.is_some() { "; dashed: the forecast rate to the runout" } "." }
        }
    }
}

/// The chart's pick from `?point=ASSET/FIELD` (or `asset` and `field`)
/// and `range`, against the fields there are (the first tank's volume by
/// default).
pub fn picked(
    p: &Pick,
    point: Option<&str>,
    fields: &[(String, String)],
) -> Result<((String, String), Range), String> {
    let range = match given(&p.range) {
        None => Range::Week,
        Some(r) => r.parse()?,
    };
    let wanted = match (point, given(&p.asset), given(&p.field)) {
        (Some(pt), _, _) => pt
            .split_once('/')
            .map(|(a, f)| (a.to_string(), f.to_string())),
        (None, Some(a), Some(f)) => Some((a.to_string(), f.to_string())),
        _ => None,
    };
    let pick = match wanted {
        Some(w) if fields.contains(&w) => w,
        Some((a, f)) => return Err(format!("{a} has no field {f:?} here")),
        None => fields
            .iter()
            .find(|(_, f)| f == "volume")
            .or(fields.first())
            .cloned()
            .unwrap_or_default(),
    };
    Ok((pick, range))
}

#[derive(Deserialize, Default)]
pub struct SitePick {
    #[serde(flatten)]
    pick: Pick,
    point: Option<String>,
}

fn age(ms: i64, now: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let s = (now - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// How many of a site's coming holidays its page names.
const HOLIDAYS_SHOWN: usize = 5;

/// The site's coming holidays (from today, its local date), or why they
/// cannot be read: they move its tanks' runouts, so the page says them.
fn holidays(
    h: &Result<Vec<Holiday>, crate::services::ServiceError>,
    now: i64,
    tz: &TimeZone,
) -> Markup {
    let today = jiff::Timestamp::from_millisecond(now)
        .map(|t| t.to_zoned(tz.clone()).date())
        .ok();
    match h {
        Ok(list) => {
            let coming: Vec<&Holiday> = list.iter().filter(|d| Some(d.0) >= today).collect();
            html! {
                @if coming.is_empty() { "none named" }
                @else {
                    @for (i, d) in coming.iter().take(HOLIDAYS_SHOWN).enumerate() {
                        @if i > 0 { ", " } time datetime=(d) { (d) }
                    }
                    @if coming.len() > HOLIDAYS_SHOWN { " and " (coming.len() - HOLIDAYS_SHOWN) " more" }
                    " (they sell like a Sunday)"
                }
            }
        }
        Err(e) => html! { span.problem { "unreadable: " (e) } },
    }
}

/// The form that replaces the site's holidays (who may configure sites).
fn holidays_form(
    v: &Viewer,
    site: &str,
    named: &Result<Vec<Holiday>, crate::services::ServiceError>,
) -> Markup {
    let now: Vec<String> = named
        .as_ref()
        .map(|l| l.iter().map(|d| d.to_string()).collect())
        .unwrap_or_default();
    html! {
        details #holidays {
            summary { "Change the holidays" }
            form method="post" action=(format!("/sites/{}/holidays", seg(site))) {
                input type="hidden" name="csrf" value=(v.token);
                label for="holidays-list" { "Local dates, YYYY-MM-DD, separated by commas, spaces or lines (at most " (crate::domain::calendar::MAX_HOLIDAYS) "). The list replaces the one before." }
                textarea #holidays-list name="holidays" rows="4" { (now.join("\n")) }
                button type="submit" { "Save the holidays" }
            }
        }
    }
}

fn summary(d: &SiteDetail, tz: &TimeZone, days: Markup) -> Markup {
    let r = &d.view.row;
    html! {
        dl.facts {
            dt { "Connected" }
            dd {
                @if let Some(s) = &d.view.session { "yes, since " (when(Some(s.since_ms), tz)) }
                @else if let Some(e) = &d.view.elsewhere { "yes, since " (when(Some(e.since_ms), tz)) ", on replica " (e.replica) }
                @else { span.problem { "no" } }
            }
            dt { "Last seen" } dd { (when(Some(r.last_seen_ms), tz)) }
            dt { "Agent" } dd { (r.agent_version) }
            dt { "Clock" } dd { (r.clock_skew_ms.map_or("—".to_string(), clock::describe)) }
            dt { "Time zone" } dd { (r.time_zone) }
            dt { "Holidays" } dd { (days) }
            dt { "Data" } dd {
                @if let Some(e) = &d.view.ingest_error { span.problem { "failing: " (e.error) } } @else { "committing" }
            }
        }
    }
}

fn assets(d: &SiteDetail, site: &str, now: i64, tz: &TimeZone) -> Markup {
    html! {
        section aria-labelledby="assets-h" {
            h2 #assets-h { "Assets" }
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Asset", "Field", "Value", "Quality", "Age", "Source"]))
                tbody {
                    @for a in &d.assets {
                        @for f in &a.fields {
                            tr {
                                td {
                                    @if a.kind == Some(crate::domain::AssetKind::Tank) {
                                        a href=(layout::tank_url(site, &a.asset_id)) { (a.asset_id) }
                                    } @else { (a.asset_id) }
                                    @if !a.name.is_empty() { br; span.muted { (a.name) } }
                                }
                                td { a href=(format!("?point={}#chart", seg(&format!("{}/{}", a.asset_id, f.field)))) { (f.field) } }
                                td.num { @if f.good_ts_ms.ms() > 0 { (format!("{:.2}", f.value)) " " (f.unit) } @else { span.muted { "never good" } } }
                                td { span class=(format!("q q-{}", f.quality)) { (f.quality) } @if !f.error.is_empty() { br; span.problem { (f.error) } } }
                                td { span title=(format!("{} UTC", jiff::Timestamp::from_millisecond(f.source_ts_ms.ms()).map(|t| t.to_string()).unwrap_or_default())) { (age(f.source_ts_ms.ms(), now)) } }
                                td { (f.source) }
                            }
                        }
                        @if a.fields.is_empty() {
                            tr { td { (a.asset_id) } td colspan="5" { span.muted { "no readings" } } }
                        }
                    }
                }
            } }
            @let _ = tz;
        }
    }
}

fn devices(d: &SiteDetail, tz: &TimeZone) -> Markup {
    html! {
        section aria-labelledby="devices-h" {
            h2 #devices-h { "Devices" }
            @if d.devices.is_empty() { p.muted { "The agent has reported no device." } } @else {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Device", "Kind", "Connected", "Last good", "Last error", "Errors", "Reconnects"]))
                tbody { @for x in &d.devices { tr {
                    td { (x.device) } td { (x.kind) }
                    td { @if x.connected != 0 { "yes" } @else { span.problem { "no" } } }
                    td { (when(Some(x.last_good_ms), tz)) }
                    td { @if !x.last_error.is_empty() { span.problem { (x.last_error) } br; (when(Some(x.last_error_ms), tz)) } }
                    td.num { (x.errors) } td.num { (x.reconnects) }
                } } }
            } } }
        }
    }
}

fn deliveries(d: &SiteDetail, tz: &TimeZone) -> Markup {
    html! {
        section aria-labelledby="deliveries-h" {
            h2 #deliveries-h { "Deliveries" }
            @if d.deliveries.is_empty() { p.muted { "No delivery reported." } } @else {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Tank", "Start", "Phase", "Delivered", "Source", "Verdict", "Load"]))
                tbody { @for x in d.deliveries.iter().take(svc::DETAIL_ROWS as usize) { tr {
                    td { (x.tank) } td { (when(Some(x.start_ms), tz)) } td { (x.phase) }
                    td.num { @if x.delivered_volume_l > 0.0 { (format!("{:.0} L", x.delivered_volume_l)) } }
                    td { (x.source) } td { (x.verdict.map(|v| v.to_string()).unwrap_or_default()) }
                    td { @if !x.load_id.is_empty() { a href=(format!("/loads/{}", seg(&x.load_id))) { (x.load_id) } } }
                } } }
            } } }
        }
    }
}

fn gaps(d: &SiteDetail, tz: &TimeZone) -> Markup {
    html! {
        section aria-labelledby="gaps-h" {
            h2 #gaps-h { "Gaps" }
            @if d.gaps.is_empty() { p.muted { "No reading is missing." } } @else {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["From", "To", "Readings", "Class", "Device", "Reason"]))
                tbody { @for g in &d.gaps { tr {
                    td { (when(Some(g.from_ts_ms), tz)) } td { (when(Some(g.to_ts_ms), tz)) }
                    td.num { (g.count) } td { (g.class) } td { (g.device) } td { (g.reason) }
                } } }
            } } }
        }
    }
}

fn certs(d: &SiteDetail, v: &Viewer, site: &str, tz: &TimeZone) -> Markup {
    let admin = v.role.may(Permission::Admin);
    html! {
        section aria-labelledby="certs-h" {
            h2 #certs-h { "Certificates" }
            @if admin { p { a href=(format!("/admin/enroll?site={}", seg(site))) { "Enroll this site's agent again" } } }
            @if d.certs.is_empty() { p.muted { "No certificate issued." } } @else {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Serial", "Issued", "Expires", "Via", "State"]))
                tbody { @for c in &d.certs { tr {
                    td { code { (c.serial) } @if d.cert_in_use.as_deref() == Some(c.serial.as_str()) { br; span.muted { "in use" } } }
                    td { (when(Some(c.issued_ms), tz)) } td { (when(Some(c.not_after_ms), tz)) } td { (c.via) }
                    td {
                        @if let Some(r) = c.revoked_ms {
                            span.problem { "revoked " } (when(Some(r), tz)) br; span.muted { (c.reason.clone().unwrap_or_default()) }
                        } @else if admin {
                            form.inline method="post" action=(format!("/sites/{}/certificates/{}/revoke", seg(site), seg(&c.serial))) {
                                input type="hidden" name="csrf" value=(v.token);
                                label { "Reason" input name="reason" required maxlength="500"; }
                                button.danger type="submit" { "Revoke" }
                            }
                        } @else { "valid" }
                    }
                } } }
            } } }
        }
    }
}

pub async fn show(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    SitePath(site): SitePath,
    Query(q): Query<SitePick>,
) -> Response {
    let ctx = s.ctx(&p);
    let d = match svc::detail(&ctx, &s.sessions, &site).await {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let tz = crate::services::evaluate::zone(&d.view.row.time_zone);
    let named = crate::services::inventory::site(&ctx, &site)
        .await
        .map(|st| st.holidays.0);
    let fields: Vec<(String, String)> = d
        .assets
        .iter()
        .flat_map(|a| {
            a.fields
                .iter()
                .map(|f| (a.asset_id.clone(), f.field.clone()))
        })
        .collect();
    let ((asset, field), range) = match picked(&q.pick, given(&q.point), &fields) {
        Ok(x) => x,
        Err(why) => return layout::error(StatusCode::UNPROCESSABLE_ENTITY, &why),
    };
    let now = now_ms();
    let trend_markup = if asset.is_empty() {
        html! { section #chart aria-labelledby="chart-h" { h2 #chart-h { "Trend" } p.muted { "No readings yet." } } }
    } else {
        match svc::series(
            &ctx,
            &site,
            &asset,
            &field,
            (UnixMs::from_ms(now - range.ms()), UnixMs::from_ms(now)),
            range.raw(),
        )
        .await
        {
            Ok(series) => {
                let marks = d
                    .deliveries
                    .iter()
                    .filter(|x| x.tank == asset)
                    .map(mark)
                    .collect();
                trend(
                    &format!("/sites/{}", seg(&site)),
                    &fields,
                    (&asset, &field),
                    range,
                    &series,
                    marks,
                    None,
                    &tz,
                )
            }
            Err(e) => return failed(e),
        }
    };
    let recent = match crate::services::commands::list(&ctx, Some(&site), None, 20, None).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let title = if d.view.row.name.is_empty() {
        site.to_string()
    } else {
        format!("{} ({site})", d.view.row.name)
    };
    let body = html! {
        (summary(&d, &tz, holidays(&named, now_ms(), &tz)))
        @if v.role.may(Permission::Configure) { (holidays_form(&v, &site, &named)) }
        (trend_markup)
        (assets(&d, &site, now, &tz))
        (devices(&d, &tz))
        section aria-labelledby="commands-h" {
            h2 #commands-h { "Commands" }
            p {
                a href=(format!("/commands?site={}", seg(&site))) { "All of this site's commands" }
                @if v.role.may(Permission::Command) { " · " a href=(format!("/commands/new?site={}", seg(&site))) { "Send a setpoint" } }
            }
            (super::commands::table(&recent, &tz))
        }
        (deliveries(&d, &tz))
        (gaps(&d, &tz))
        (certs(&d, &v, &site, &tz))
    };
    layout::page(&v, "/sites", &title, body).into_response()
}

#[derive(Deserialize)]
pub struct HolidaysForm {
    #[serde(default)]
    holidays: String,
}

/// Replaces the site's holidays (dates separated by commas, spaces or
/// lines); a refusal names the date at fault. Audited with the before and
/// after, as `PATCH /api/v1/sites/{site}` is.
pub async fn set_holidays(
    State(s): State<ApiState>,
    Caller(p): Caller,
    SitePath(site): SitePath,
    Form(f): Form<HolidaysForm>,
) -> Response {
    let days: Vec<String> = f
        .holidays
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    let req = crate::services::inventory::SiteRequest {
        holidays: Some(days),
        ..Default::default()
    };
    match crate::services::inventory::update_site(&s.ctx(&p), &site, req).await {
        Ok((before, after)) => crate::api::access::noted(
            Redirect::to(&format!("/sites/{}#holidays", seg(&site))).into_response(),
            crate::api::inventory::site_change_note(&before, &after),
        ),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    reason: String,
}

/// Revokes one of the site's certificates (its session closes at once).
pub async fn revoke(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path((site, serial)): Path<(String, String)>,
    Form(f): Form<RevokeForm>,
) -> Response {
    let ctx = s.ctx(&p);
    match s
        .issuing
        .revoke_visible(&ctx, &p.actor, (&serial, Some(&site)), &f.reason)
        .await
    {
        Ok(r) => {
            tracing::warn!(serial = %r.serial, %site, reason = %f.reason, "agent certificate revoked from the console");
            Redirect::to(&format!("/sites/{}#certs-h", seg(&site))).into_response()
        }
        Err(e) => failed(e),
    }
}
