//! Commands: the list (by site and state), the setpoint form with each
//! point's limits and, for a whole site, the split preview (which assets
//! get what, clamped) before it is sent; one command with its timeline,
//! live until it settles (a small script reloads it; without script, a
//! link does). Read and written through `services::commands`, as
//! `/api/v1/commands` is.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jiff::tz::TimeZone;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Viewer, failed, given, seg, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::{CommandId, Permission, SiteId};
use crate::services::Context;
use crate::services::commands::{
    self as svc, CommandRequest, CommandView, Outcome, SetpointRequest,
};
use crate::store::commands::CommandRow;

/// Commands on a page.
const PAGE: i64 = 50;

fn url(id: &CommandId) -> String {
    format!("/commands/{}", seg(id.as_str()))
}

fn value(r: &CommandRow) -> String {
    match (r.value, r.load_id.as_ref()) {
        (Some(v), _) => format!("{} = {v}", r.field),
        (None, Some(l)) => format!("ETA of {l}"),
        _ => r.field.clone(),
    }
}

/// Commands as a table (the list, a site's page).
pub fn table(list: &[CommandView], tz: &TimeZone) -> Markup {
    html! {
        @if list.is_empty() { p.muted { "No command." } } @else {
        div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
            (layout::head(&["Command", "Site", "Asset", "What", "State", "Reason", "Created", "By"]))
            tbody { @for c in list { @let r = &c.row; tr {
                td { a href=(url(&r.command_id)) { code { (r.command_id) } } }
                td { (r.site_id) }
                td { @if r.asset_id.is_empty() { span.muted { "whole site" } } @else { (r.asset_id) } }
                td { (r.kind) ": " (value(r)) }
                td { span class=(format!("state state-{}", r.state)) { (r.state) } }
                td { (r.reason) }
                td { (when(Some(r.created_ms), tz)) }
                td { (r.created_by) }
            } } }
        } } }
    }
}

#[derive(Deserialize, Default)]
pub struct Filters {
    site: Option<String>,
    state: Option<String>,
    before: Option<String>,
}

pub async fn list(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Query(f): Query<Filters>,
) -> Response {
    let ctx = s.ctx(&p);
    let before = given(&f.before).and_then(|b| b.parse::<i64>().ok());
    let mut found = match svc::list(&ctx, given(&f.site), given(&f.state), PAGE + 1, before).await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let more = found.len() > PAGE as usize;
    found.truncate(PAGE as usize);
    let next = more.then(|| found.last().map(|c| c.row.seq)).flatten();
    let tz = zone_of(&ctx, given(&f.site)).await;
    let body = html! {
        form.filters method="get" action="/commands" role="search" {
            label { "Site" input name="site" value=(given(&f.site).unwrap_or_default()); }
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for st in crate::domain::CommandState::ALL {
                        @if given(&f.state) == Some(st.as_str()) {
                            option value=(st.as_str()) selected { (st) }
                        } @else {
                            option value=(st.as_str()) { (st) }
                        }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if p.role.may(Permission::Command) {
            p { a href=(given(&f.site).map_or("/commands/new".to_string(), |x| format!("/commands/new?site={}", seg(x)))) { "Send a setpoint" } }
        }
        (table(&found, &tz))
        @if let Some(n) = next {
            p { a rel="next" href=(format!("/commands?{}", layout::query_of(&[("site", &f.site), ("state", &f.state)], Some(("before", &n.to_string()))))) { "Older commands" } }
        }
    };
    layout::page(&v, "/commands", "Commands", body).into_response()
}

/// The site's zone (UTC without one or when it cannot be read).
async fn zone_of(ctx: &Context, site: Option<&str>) -> TimeZone {
    let Some(Ok(site)) = site.map(crate::domain::SiteId::parse) else {
        return TimeZone::UTC;
    };
    match crate::services::inventory::site(ctx, &site).await {
        Ok(s) => crate::services::evaluate::zone(&s.time_zone),
        Err(_) => TimeZone::UTC,
    }
}

fn facts(c: &CommandView, tz: &TimeZone) -> Markup {
    let r = &c.row;
    html! {
        dl.facts {
            dt { "Site" } dd { a href=(format!("/sites/{}", seg(r.site_id.as_str()))) { (r.site_id) } }
            dt { "Target" } dd { @if r.asset_id.is_empty() { "the whole site, split" } @else { (r.asset_id) } }
            dt { "What" } dd { (r.kind) ": " (value(r)) @if r.duration_ms > 0 { " for " (r.duration_ms / 1000) " s" } }
            dt { "State" } dd { span class=(format!("state state-{}", r.state)) { (r.state) } " (" (r.reason) ")" @if !r.detail.is_empty() { br; (r.detail) } }
            dt { "Read back" } dd { (r.readback.map_or("—".to_string(), |x| x.to_string())) }
            dt { "Created" } dd { (when(Some(r.created_ms), tz)) " by " (r.created_by) }
            dt { "Expires" } dd { (when(Some(r.expires_at_ms), tz)) }
            @if !r.warnings.0.is_empty() {
                dt { "Warnings" } dd { ul { @for w in &r.warnings.0 { li.warning { (w) } } } }
            }
        }
    }
}

/// The part of a command's page that changes while it runs (`#live`;
/// marked `data-live` until it settles, which the script polls).
fn live(c: &CommandView, tz: &TimeZone) -> Markup {
    let settled = c.row.state.is_terminal();
    html! {
        div #live data-live=[(!settled).then_some("1")] aria-live="polite" {
            (facts(c, tz))
            @if !c.children.is_empty() {
                h2 { "Shares" }
                div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                    (layout::head(&["Asset", "Value", "State", "Reason", "Read back"]))
                    tbody { @for ch in &c.children { tr {
                        td { a href=(url(&ch.command_id)) { (ch.asset_id) } }
                        td.num { (ch.value.map_or(String::new(), |x| x.to_string())) }
                        td { span class=(format!("state state-{}", ch.state)) { (ch.state) } }
                        td { (ch.reason) @if !ch.detail.is_empty() { br; span.muted { (ch.detail) } } }
                        td.num { (ch.readback.map_or("—".to_string(), |x| x.to_string())) }
                    } } }
                } }
            }
            h2 { "Timeline" }
            @if c.timeline.is_empty() { p.muted { "Nothing yet." } } @else {
            ol.timeline { @for e in &c.timeline { li {
                (when(Some(e.at_ms), tz)) " · " strong { (e.state) } " (" (e.reason) ")"
                @if !e.detail.is_empty() { " · " (e.detail) }
                " · " span.muted { (e.actor) }
            } } } }
            @if !settled { p.muted { "Running: " a href="" { "refresh" } " (this page follows it by itself with JavaScript on)." } }
        }
    }
}

pub async fn show(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let ctx = s.ctx(&p);
    let Ok(id) = id.parse::<CommandId>() else {
        return layout::error(
            StatusCode::NOT_FOUND,
            &format!("There is no command {id:?}."),
        );
    };
    let c = match svc::get(&ctx, &id).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let tz = zone_of(&ctx, Some(c.row.site_id.as_str())).await;
    let body = html! {
        (live(&c, &tz))
        @if p.role.may(Permission::Command) && !c.row.state.is_terminal() {
            form method="post" action=(format!("{}/cancel", url(&id))) {
                input type="hidden" name="csrf" value=(v.token);
                button.danger type="submit" { "Cancel this command" }
            }
        }
    };
    layout::page(&v, "/commands", &format!("Command {id}"), body).into_response()
}

pub async fn cancel(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<CommandId>() else {
        return layout::error(
            StatusCode::NOT_FOUND,
            &format!("There is no command {id:?}."),
        );
    };
    match svc::cancel(&s.ctx(&p), &id, &p.actor).await {
        Ok(_) => Redirect::to(&url(&id)).into_response(),
        Err(e) => failed(e),
    }
}

/// The setpoint form's fields (all text: a wrong one is named back).
#[derive(Deserialize, Default, Clone)]
pub struct SetpointForm {
    #[serde(default)]
    site: String,
    /// Empty: the whole site (split).
    #[serde(default)]
    asset: String,
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    duration_s: String,
    #[serde(default)]
    step: String,
    /// `preview` or `send`.
    #[serde(default)]
    go: String,
    /// Made with the form: a second post of the same form is the first
    /// command, not a second one.
    #[serde(default)]
    key: String,
}

#[derive(Deserialize, Default)]
pub struct NewQuery {
    site: Option<String>,
    asset: Option<String>,
}

pub async fn new(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Query(q): Query<NewQuery>,
) -> Response {
    let f = SetpointForm {
        site: given(&q.site).unwrap_or_default().to_string(),
        asset: given(&q.asset).unwrap_or_default().to_string(),
        ..SetpointForm::default()
    };
    form_page(&s.ctx(&p), &v, &f, None, StatusCode::OK).await
}

/// What the form shows under it.
enum Shown {
    Problem(String),
    /// An asset target's preview: its limits against the value.
    Note(String),
    /// A site target's preview.
    Plan(Plan),
}

/// A split and the candidates it was made from (their limits).
struct Plan {
    split: crate::domain::split::Split,
    candidates: Vec<crate::domain::split::Candidate>,
}

async fn form_page(
    ctx: &Context,
    v: &Viewer,
    f: &SetpointForm,
    shown: Option<Shown>,
    status: StatusCode,
) -> Response {
    let site = f.site.trim();
    let points = if site.is_empty() {
        Vec::new()
    } else {
        match SiteId::parse(site) {
            Ok(id) => match svc::writable(ctx, &id).await {
                Ok(x) => x,
                Err(e) => return failed(e),
            },
            Err(_) => {
                return layout::error(
                    StatusCode::NOT_FOUND,
                    &format!("There is no site {site:?}."),
                );
            }
        }
    };
    let mut fields: Vec<&str> = points
        .iter()
        .flat_map(|(_, _, ws)| ws.iter().map(|w| w.field.as_str()))
        .collect();
    fields.sort_unstable();
    fields.dedup();
    let key = if f.key.is_empty() {
        format!("console-{:016x}", fastrand::u64(..))
    } else {
        f.key.clone()
    };
    let body = html! {
        @if site.is_empty() {
            form.filters method="get" action="/commands/new" {
                label { "Site" input name="site" required; }
                button type="submit" { "Choose" }
            }
        } @else if points.is_empty() {
            p { "No asset of " (site) " has reported a writable point." }
        } @else {
            section aria-labelledby="points-h" {
                h2 #points-h { "Writable points of " a href=(format!("/sites/{}", seg(site))) { (site) } }
                div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                    (layout::head(&["Asset", "Point", "Lowest", "Highest", "Capacity"]))
                    tbody { @for (a, cap, ws) in &points { @for w in ws { tr {
                        td { (a) } td { (w.field) }
                        td.num { (w.min.map_or("—".to_string(), |x| x.to_string())) }
                        td.num { (w.max.map_or("—".to_string(), |x| x.to_string())) }
                        td.num { (cap) }
                    } } } }
                } }
            }
            form.setpoint method="post" action="/commands/new" {
                input type="hidden" name="csrf" value=(v.token);
                input type="hidden" name="site" value=(site);
                input type="hidden" name="key" value=(key);
                label for="asset" { "Target" }
                select #asset name="asset" {
                    option value="" { "The whole site (split across its assets)" }
                    @for (a, _, _) in &points {
                        @if *a == f.asset { option value=(a) selected { (a) } } @else { option value=(a) { (a) } }
                    }
                }
                label for="field" { "Point" }
                select #field name="field" {
                    @for x in &fields {
                        @if *x == f.field { option value=(x) selected { (x) } } @else { option value=(x) { (x) } }
                    }
                }
                label for="value" { "Value" }
                input #value name="value" type="number" step="any" required value=(f.value);
                label for="duration_s" { "Hold for (s, optional)" }
                input #duration_s name="duration_s" type="number" min="1" step="1" value=(f.duration_s);
                label for="step" { "Split rounding step (optional, default 0.1)" }
                input #step name="step" type="number" min="0.001" step="any" value=(f.step);
                div.buttons {
                    button type="submit" name="go" value="preview" { "Preview" }
                    button.primary type="submit" name="go" value="send" { "Send" }
                }
            }
            @match &shown {
                Some(Shown::Problem(why)) => { p.problem role="alert" { (why) } }
                Some(Shown::Note(what)) => { p #preview role="status" { (what) } }
                Some(Shown::Plan(plan)) => { (preview(plan)) }
                None => {}
            }
        }
    };
    (
        status,
        layout::page(v, "/commands", "Send a setpoint", body),
    )
        .into_response()
}

fn preview(plan: &Plan) -> Markup {
    let sp = &plan.split;
    html! {
        section #preview aria-labelledby="preview-h" {
            h2 #preview-h { "Split preview: " (sp.total) " in steps of " (sp.step) }
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Asset", "Share", "Weight", "Limits", "Clamped"]))
                tbody {
                    @for sh in &sp.shares {
                        @let c = plan.candidates.iter().find(|c| c.asset_id == sh.asset_id);
                        tr {
                            td { (sh.asset_id) }
                            td.num { (sh.value) }
                            td.num { (format!("{:.3}", sh.weight)) }
                            td { (c.map_or(String::new(), |c| format!("{} to {}", c.min, c.max))) }
                            td { @if sh.clamped { strong.warning { "clamped to its limit" } } @else { "no" } }
                        }
                    }
                }
            } }
            @if !sp.excluded.is_empty() {
                ul { @for (a, why) in &sp.excluded { li.warning { (a) " gets no share: " (why) } } }
            }
            p.muted { "Nothing is sent until you press Send." }
        }
    }
}

fn number(name: &str, v: &str) -> Result<Option<f64>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .map(Some)
        .ok_or_else(|| format!("{name} {v:?} is not a number."))
}

pub async fn submit(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Form(f): Form<SetpointForm>,
) -> Response {
    let ctx = s.ctx(&p);
    let bad = |why: String| Some(Shown::Problem(why));
    let parsed = (|| {
        let value = number("The value", &f.value)?.ok_or("Give a value.")?;
        Ok::<_, String>((
            value,
            number("The hold time", &f.duration_s)?,
            number("The step", &f.step)?,
        ))
    })();
    let (value, duration_s, step) = match parsed {
        Ok(x) => x,
        Err(why) => {
            return form_page(&ctx, &v, &f, bad(why), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let Ok(site) = SiteId::parse(f.site.trim()) else {
        return layout::error(
            StatusCode::NOT_FOUND,
            &format!("There is no site {:?}.", f.site),
        );
    };
    let whole_site = f.asset.trim().is_empty();
    if f.go == "preview" {
        let shown = if whole_site {
            match svc::split_plan(&ctx, &site, &f.field, value, step).await {
                Ok((split, candidates)) => Some(Shown::Plan(Plan { split, candidates })),
                Err(e) => match layout::refusal(e) {
                    Ok(why) => bad(why),
                    Err(nf) => return nf.into_response(),
                },
            }
        } else {
            Some(Shown::Note(limits_of(&ctx, &site, &f, value).await))
        };
        return form_page(&ctx, &v, &f, shown, StatusCode::OK).await;
    }
    let req = CommandRequest::Setpoint(SetpointRequest {
        site: whole_site.then(|| site.clone()),
        asset: (!whole_site).then(|| format!("{site}/{}", f.asset.trim())),
        field: f.field.clone(),
        value,
        duration_s,
        expires_in_s: None,
        expires_at: None,
        step,
        idempotency_key: None,
    });
    let key = match svc::idempotency_key(None, Some(f.key.clone()).filter(|k| !k.is_empty())) {
        Ok(k) => k,
        Err(e) => return failed(e),
    };
    match svc::submit(&ctx, req, key, p.actor.clone()).await {
        Ok(Outcome::Created(c) | Outcome::Repeated(c)) => {
            Redirect::to(&url(&c.row.command_id)).into_response()
        }
        Err(e) => match layout::refusal(e) {
            Ok(why) => form_page(&ctx, &v, &f, bad(why), StatusCode::UNPROCESSABLE_ENTITY).await,
            Err(nf) => nf.into_response(),
        },
    }
}

/// An asset target's preview: is the value within the point's limits?
async fn limits_of(ctx: &Context, site: &SiteId, f: &SetpointForm, value: f64) -> String {
    let points = svc::writable(ctx, site).await.unwrap_or_default();
    let asset = f.asset.trim();
    let Some(w) = points
        .iter()
        .filter(|(a, _, _)| a == asset)
        .flat_map(|(_, _, ws)| ws.iter())
        .find(|w| w.field == f.field)
    else {
        return format!("{asset} has no writable point {:?}.", f.field);
    };
    let (lo, hi) = (w.min.unwrap_or(f64::MIN), w.max.unwrap_or(f64::MAX));
    let limits = format!(
        "{} to {}",
        w.min.map_or("-".into(), |x| x.to_string()),
        w.max.map_or("-".into(), |x| x.to_string())
    );
    if (lo..=hi).contains(&value) {
        format!(
            "{asset} {}: {value} is within its limits ({limits}); nothing is sent until you press Send.",
            f.field
        )
    } else {
        format!(
            "{asset} {}: {value} is outside its limits ({limits}) and would be refused.",
            f.field
        )
    }
}
