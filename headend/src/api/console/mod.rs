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

mod assets;
mod audit;
mod escalations;
mod gate;
mod layout;
mod session;
mod sites;
mod tank;
mod tanks;

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
    use Need::{Perm, Public, Signed};
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
        page("GET", "/", Perm(P::Read), "console.home", get(tanks::home)),
        page(
            "GET",
            "/sites",
            Perm(P::Read),
            "console.sites",
            get(sites::list),
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
            "/assets/{name}",
            Public,
            "console.asset",
            get(assets::serve),
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
    r.route_layer(axum::middleware::from_fn_with_state(gate, gate::gate))
        .layer(axum::Extension(session::Https(https)))
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
