//! Today: the exceptions that need a person first, each line linking to
//! where it is fixed. Read through `services::today`, which asks the
//! services the other pages (and the REST routes) read.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use maud::{Markup, html};

use super::layout::{self, Viewer, failed, seg, when};
use super::{commands, escalations, tanks};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::services::today::{self as svc, Today};
use crate::wallclock::now_ms;

fn section(id: &str, title: &str, empty: bool, body: Markup) -> Markup {
    html! {
        section aria-labelledby=(id) {
            h2 id=(id) { (title) }
            @if empty { p.muted { "None." } } @else { (body) }
        }
    }
}

fn sites_and_devices(t: &Today) -> Markup {
    let utc = TimeZone::UTC;
    html! {
        (section("disconnected", "Sites without their agent", t.disconnected.is_empty(), html! {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Site", "Last seen", "Agent"]))
                tbody { @for s in &t.disconnected {
                    @let tz = crate::services::evaluate::zone(&s.row.time_zone);
                    tr {
                        td { a href=(format!("/sites/{}", seg(&s.row.site_id))) { (s.row.site_id) } @if !s.row.name.is_empty() { " " span.muted { (s.row.name) } } }
                        td { (when(Some(s.row.last_seen_ms), &tz)) }
                        td { (s.row.agent_version) }
                    }
                } }
            } }
        }))
        (section("devices", "Devices down", t.devices_down.is_empty(), html! {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Site", "Device", "Kind", "Last good", "Last error"]))
                tbody { @for d in &t.devices_down { tr {
                    td { a href=(format!("/sites/{}#devices-h", seg(&d.site_id))) { (d.site_id) } }
                    td { (d.device) } td { (d.kind) }
                    td { (when(Some(d.last_good_ms), &utc)) }
                    td { span.problem { (d.last_error) } }
                } } }
            } }
        }))
        (section("certs", "Certificates expiring within 14 days", t.expiring.is_empty(), html! {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Site", "Serial", "Expires", "Renewal failures", "Last error"]))
                tbody { @for c in &t.expiring { tr {
                    td { a href=(format!("/sites/{}#certs-h", seg(&c.site_id))) { (c.site_id) } }
                    td { code { (c.serial) } }
                    td { (when(Some(c.not_after_ms), &utc)) }
                    td.num { (c.failures) } td { (c.last_error) }
                } } }
            } }
        }))
    }
}

/// What needs a person first.
pub async fn show(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
) -> Response {
    let ctx = s.ctx(&p);
    let now = now_ms();
    let t = match svc::today(&ctx, &s.sessions, now).await {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    let zones = match crate::services::inventory::site_settings(&ctx).await {
        Ok(z) => z,
        Err(e) => return failed(e),
    };
    let body = html! {
        (section("risky", "Tanks at critical or high risk", t.at_risk.is_empty(), tanks::table(&t.at_risk, &zones)))
        (section("open", "Open escalations, oldest first", t.escalations.is_empty(), escalations::rows(&t.escalations, now)))
        (section("stale", "Tanks without a fresh reading", t.stale.is_empty(), tanks::table(&t.stale, &zones)))
        (section("failed", "Commands failed in the last day", t.failed.is_empty(), commands::table(&t.failed, &TimeZone::UTC)))
        (sites_and_devices(&t))
    };
    layout::page(&v, "/", "Today", body).into_response()
}
