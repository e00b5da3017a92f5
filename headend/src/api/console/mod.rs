//! The operator console: HTML pages the headend serves on its REST
//! listener (`/`; the JSON API stays under `/api`), a transport of the
//! `api` layer beside the JSON routes. Pages read and forms write
//! through the same services, role checks, site scope and audit trail as
//! the REST routes. The session is two cookies holding the API's own
//! access and refresh tokens, refreshed here, server-side; every form
//! carries its session's token ([`gate`]).
//!
//! Transport only: each page is a thin handler over `services`, rendered
//! with maud (escaped by default), no inline script or style (the
//! Content-Security-Policy forbids both).

mod admin;
mod assets;
mod audit;
mod chart;
mod commands;
mod escalations;
mod gate;
mod layout;
mod loads;
mod session;
mod site;
mod sites;
mod tank;
mod tanks;
mod today;

use axum::Router;
use axum::routing::{MethodRouter, get, post};

use crate::api::ApiState;
use crate::api::rules::Need;
use crate::domain::Permission as P;

pub use gate::ConsoleGate;

/// One console route: what it needs (the same [`Need`] as the API's
/// rules), the action its audit entries carry, its handler.
pub struct Page {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Need,
    pub action: &'static str,
    pub handler: MethodRouter<ApiState>,
}

fn page(
    method: &'static str,
    path: &'static str,
    need: Need,
    action: &'static str,
    handler: MethodRouter<ApiState>,
) -> Page {
    Page {
        method,
        path,
        need,
        action,
        handler,
    }
}

/// Every console route, declared once (the router and the gate's table
/// are both made from it).
pub fn pages() -> Vec<Page> {
    let mut all = session_pages();
    all.extend(fleet_pages());
    all.extend(work_pages());
    all.extend(admin_pages());
    all
}

/// The login, the logout and the embedded files.
fn session_pages() -> Vec<Page> {
    use Need::{Public, Signed};
    vec![
        page(
            "GET",
            "/login",
            Public,
            "console.login_form",
            get(session::form),
        ),
        page(
            "POST",
            "/login",
            Public,
            "console.login",
            post(session::login),
        ),
        page(
            "POST",
            "/logout",
            Signed,
            "console.logout",
            post(session::logout),
        ),
        page(
            "GET",
            "/assets/{name}",
            Public,
            "console.asset",
            get(assets::serve),
        ),
    ]
}

/// What the fleet is doing: today's exceptions, sites, tanks.
fn fleet_pages() -> Vec<Page> {
    use Need::Perm;
    vec![
        page("GET", "/", Perm(P::Read), "console.home", get(today::show)),
        page(
            "GET",
            "/sites",
            Perm(P::Read),
            "console.sites",
            get(sites::list),
        ),
        page(
            "GET",
            "/sites/{site}",
            Perm(P::Read),
            "console.site",
            get(site::show),
        ),
        page(
            "POST",
            "/sites/{site}/holidays",
            Perm(P::Configure),
            "console.site_holidays",
            post(site::set_holidays),
        ),
        page(
            "POST",
            "/sites/{site}/certificates/{serial}/revoke",
            Perm(P::Admin),
            "console.certificate_revoke",
            post(site::revoke),
        ),
        page(
            "GET",
            "/tanks",
            Perm(P::Read),
            "console.tanks",
            get(tanks::list),
        ),
        page(
            "GET",
            "/sites/{site}/tanks/{tank}",
            Perm(P::Read),
            "console.tank",
            get(tank::show),
        ),
        page(
            "POST",
            "/sites/{site}/tanks/{tank}/dip",
            Perm(P::Loads),
            "console.dip",
            post(tank::dip),
        ),
        page(
            "POST",
            "/sites/{site}/tanks/{tank}/settings",
            Perm(P::Configure),
            "console.tank_settings",
            post(tank::settings),
        ),
    ]
}

/// What operators act on: commands, loads, escalations.
fn work_pages() -> Vec<Page> {
    use Need::Perm;
    vec![
        page(
            "GET",
            "/commands",
            Perm(P::Read),
            "console.commands",
            get(commands::list),
        ),
        page(
            "GET",
            "/commands/new",
            Perm(P::Command),
            "console.setpoint_form",
            get(commands::new),
        ),
        page(
            "POST",
            "/commands/new",
            Perm(P::Command),
            "console.setpoint",
            post(commands::submit),
        ),
        page(
            "GET",
            "/commands/{id}",
            Perm(P::Read),
            "console.command",
            get(commands::show),
        ),
        page(
            "POST",
            "/commands/{id}/cancel",
            Perm(P::Command),
            "console.command_cancel",
            post(commands::cancel),
        ),
        page(
            "GET",
            "/loads",
            Perm(P::Read),
            "console.loads",
            get(loads::list),
        ),
        page(
            "POST",
            "/loads",
            Perm(P::Loads),
            "console.load_create",
            post(loads::create),
        ),
        page(
            "POST",
            "/loads/import",
            Perm(P::Loads),
            "console.loads_import",
            post(loads::import),
        ),
        page(
            "GET",
            "/loads/{id}",
            Perm(P::Read),
            "console.load",
            get(loads::show),
        ),
        page(
            "POST",
            "/loads/{id}",
            Perm(P::Loads),
            "console.load_update",
            post(loads::update),
        ),
        page(
            "POST",
            "/loads/{id}/cancel",
            Perm(P::Loads),
            "console.load_cancel",
            post(loads::cancel),
        ),
        page(
            "GET",
            "/escalations",
            Perm(P::Read),
            "console.escalations",
            get(escalations::list),
        ),
        page(
            "GET",
            "/escalations/{id}",
            Perm(P::Read),
            "console.escalation",
            get(escalations::show),
        ),
        page(
            "POST",
            "/escalations/{id}/move",
            Perm(P::Loads),
            "console.escalation_move",
            post(escalations::move_to),
        ),
        page(
            "POST",
            "/escalations/{id}/notes",
            Perm(P::Loads),
            "console.escalation_note",
            post(escalations::note),
        ),
    ]
}

/// The audit trail and administration.
fn admin_pages() -> Vec<Page> {
    use Need::Perm;
    vec![
        page(
            "GET",
            "/audit",
            Perm(P::Audit),
            "console.audit",
            get(audit::list),
        ),
        page(
            "GET",
            "/audit.csv",
            Perm(P::Audit),
            "console.audit_export",
            get(audit::export),
        ),
        page(
            "GET",
            "/admin",
            Perm(P::Admin),
            "console.admin",
            get(admin::show),
        ),
        page(
            "POST",
            "/admin/users",
            Perm(P::Admin),
            "console.user_add",
            post(admin::add_user),
        ),
        page(
            "GET",
            "/admin/users/{user}",
            Perm(P::Admin),
            "console.user",
            get(admin::user),
        ),
        page(
            "POST",
            "/admin/users/{user}",
            Perm(P::Admin),
            "console.user_change",
            post(admin::change_user),
        ),
        page(
            "POST",
            "/admin/users/{user}/password",
            Perm(P::Admin),
            "console.user_password",
            post(admin::reset_password),
        ),
        page(
            "POST",
            "/admin/users/{user}/unlock",
            Perm(P::Admin),
            "console.user_unlock",
            post(admin::unlock),
        ),
        page(
            "POST",
            "/admin/keys",
            Perm(P::Admin),
            "console.key_add",
            post(admin::add_key),
        ),
        page(
            "POST",
            "/admin/keys/{id}/revoke",
            Perm(P::Admin),
            "console.key_revoke",
            post(admin::revoke_key),
        ),
        page(
            "GET",
            "/admin/enroll",
            Perm(P::Admin),
            "console.enroll_form",
            get(admin::enroll_page),
        ),
        page(
            "POST",
            "/admin/enroll",
            Perm(P::Admin),
            "console.enroll",
            post(admin::enroll),
        ),
    ]
}

/// The console's routes behind its gate.
pub fn router(state: ApiState, https: bool) -> Router {
    let table: Vec<(&'static str, &'static str, Need, &'static str)> = pages()
        .iter()
        .map(|p| (p.method, p.path, p.need, p.action))
        .collect();
    let gate = ConsoleGate::new(state.clone(), https, table);
    let mut r: Router<ApiState> = Router::new();
    // one path may have several methods: merged into one MethodRouter
    let mut by_path: Vec<(&'static str, MethodRouter<ApiState>)> = Vec::new();
    for p in pages() {
        if let Some((_, m)) = by_path.iter_mut().find(|(path, _)| *path == p.path) {
            let merged = std::mem::take(m).merge(p.handler);
            *m = merged;
        } else {
            by_path.push((p.path, p.handler));
        }
    }
    for (path, m) in by_path {
        r = r.route(path, m);
    }
    // gzip for pages and files (the form token is masked afresh on each
    // page, so compression leaks nothing of it: BREACH)
    r.route_layer(axum::middleware::from_fn_with_state(gate, gate::gate))
        .layer(axum::Extension(session::Https(https)))
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
}

/// A path of the console's that is no page.
pub fn not_found() -> axum::response::Response {
    layout::secured(
        layout::error(axum::http::StatusCode::NOT_FOUND, "There is no such page."),
        false,
    )
}

/// Is this path the console's (everything outside the API, the metrics
/// and the probes)?
pub fn owns(path: &str) -> bool {
    !(path.starts_with("/api/")
        || path == "/api"
        || path == "/metrics"
        || path == "/ready"
        || path == "/health")
}

/// Fuzzing entry (target `console`): what the console reads from outside
/// input of its own (a form token, a `datetime-local` time, a chart's
/// window, an uploaded file shown against its report) and the chart it
/// draws from stored points; none may panic.
pub fn fuzz(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::domain::secret::unmask_form_token(&text);
    let _ = loads::local_ms(&text, &jiff::tz::TimeZone::UTC);
    let _ = text.parse::<site::Range>();
    let problems = text
        .lines()
        .enumerate()
        .map(|(i, l)| crate::services::observations::RowProblem {
            row: i,
            column: l.chars().take(8).collect(),
            problem: l.to_string(),
        })
        .take(50)
        .collect();
    let report = crate::services::observations::ImportReport {
        problems,
        ..Default::default()
    };
    let _ = loads::report(&report, &text);
    chart::fuzz(data);
}
