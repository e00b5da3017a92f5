//! The one table of the REST API: every route's method, path, what it
//! needs and the action its audit entries carry. The gate
//! ([`super::access::gate`]) enforces it, the OpenAPI document is built
//! from it, and `docs/operator-access.md` is this table for people.

use axum::http::Method;

use crate::domain::Permission;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No credential (health, readiness, the API document, login, refresh).
    Public,
    /// Any valid credential (the caller's own sessions, logout).
    Signed,
    /// A role holding this permission.
    Perm(Permission),
}

/// One route's rule: method, path (as routed), what it needs, and the
/// action name its audit entries carry.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Need,
    pub action: &'static str,
}

const fn rule(method: &'static str, path: &'static str, need: Need, action: &'static str) -> Rule {
    Rule {
        method,
        path,
        need,
        action,
    }
}

use Need::{Perm, Public, Signed};
use Permission as P;

/// Every route of the API. `docs/operator-access.md` is this table for people.
pub const RULES: &[Rule] = &[
    rule("GET", "/health", Public, "health"),
    rule("GET", "/ready", Public, "ready"),
    rule("GET", "/api/openapi.json", Public, "openapi"),
    rule("GET", "/metrics", Perm(P::Metrics), "metrics"),
    rule("POST", "/api/v1/auth/login", Public, "auth.login"),
    rule("POST", "/api/v1/auth/refresh", Public, "auth.refresh"),
    rule("POST", "/api/v1/auth/logout", Signed, "auth.logout"),
    rule("GET", "/api/v1/auth/me", Signed, "auth.me"),
    rule("GET", "/api/v1/auth/sessions", Signed, "sessions.list"),
    rule(
        "POST",
        "/api/v1/auth/sessions/{id}/revoke",
        Signed,
        "sessions.revoke",
    ),
    rule("GET", "/api/v1/sites", Perm(P::Read), "sites.list"),
    rule(
        "GET",
        "/api/v1/sites/{site}/assets",
        Perm(P::Read),
        "assets.list",
    ),
    rule(
        "GET",
        "/api/v1/sites/{site}/assets/{asset}/readings",
        Perm(P::Read),
        "readings.list",
    ),
    rule(
        "GET",
        "/api/v1/sites/{site}/assets/{asset}/rollups",
        Perm(P::Read),
        "rollups.list",
    ),
    rule(
        "GET",
        "/api/v1/sites/{site}/gaps",
        Perm(P::Read),
        "gaps.list",
    ),
    rule(
        "GET",
        "/api/v1/sites/{site}/deliveries",
        Perm(P::Read),
        "deliveries.list",
    ),
    rule(
        "GET",
        "/api/v1/sites/{site}/devices",
        Perm(P::Read),
        "devices.list",
    ),
    rule("GET", "/api/v1/commands", Perm(P::Read), "commands.list"),
    rule(
        "POST",
        "/api/v1/commands",
        Perm(P::Command),
        "commands.create",
    ),
    rule(
        "GET",
        "/api/v1/commands/{id}",
        Perm(P::Read),
        "commands.get",
    ),
    rule(
        "POST",
        "/api/v1/commands/{id}/cancel",
        Perm(P::Command),
        "commands.cancel",
    ),
    rule("GET", "/api/v1/loads", Perm(P::Read), "loads.list"),
    rule("POST", "/api/v1/loads", Perm(P::Loads), "loads.create"),
    rule("GET", "/api/v1/loads/{id}", Perm(P::Read), "loads.get"),
    rule(
        "PATCH",
        "/api/v1/loads/{id}",
        Perm(P::Loads),
        "loads.update",
    ),
    rule("GET", "/api/v1/audit", Perm(P::Audit), "audit.list"),
    rule("GET", "/api/v1/users", Perm(P::Admin), "users.list"),
    rule("POST", "/api/v1/users", Perm(P::Admin), "users.create"),
    rule("GET", "/api/v1/users/{user}", Perm(P::Admin), "users.get"),
    rule(
        "PATCH",
        "/api/v1/users/{user}",
        Perm(P::Admin),
        "users.update",
    ),
    rule(
        "POST",
        "/api/v1/users/{user}/password",
        Perm(P::Admin),
        "users.reset_password",
    ),
    rule(
        "POST",
        "/api/v1/users/{user}/unlock",
        Perm(P::Admin),
        "users.unlock",
    ),
    rule("GET", "/api/v1/api-keys", Perm(P::Admin), "api_keys.list"),
    rule(
        "POST",
        "/api/v1/api-keys",
        Perm(P::Admin),
        "api_keys.create",
    ),
    rule(
        "GET",
        "/api/v1/api-keys/{id}",
        Perm(P::Admin),
        "api_keys.get",
    ),
    rule(
        "POST",
        "/api/v1/api-keys/{id}/revoke",
        Perm(P::Admin),
        "api_keys.revoke",
    ),
    rule(
        "POST",
        "/api/v1/sites/{site}/enrollment-tokens",
        Perm(P::Admin),
        "enrollment_tokens.create",
    ),
    rule(
        "GET",
        "/api/v1/sites/{site}/certificates",
        Perm(P::Read),
        "certificates.list",
    ),
    rule(
        "GET",
        "/api/v1/sites/{site}/certificate-status",
        Perm(P::Read),
        "certificates.status",
    ),
    rule(
        "POST",
        "/api/v1/sites/{site}/revoke",
        Perm(P::Admin),
        "sites.revoke",
    ),
    rule(
        "POST",
        "/api/v1/certificates/{serial}/revoke",
        Perm(P::Admin),
        "certificates.revoke",
    ),
    rule("POST", "/api/v1/sites", Perm(P::Configure), "sites.create"),
    rule("GET", "/api/v1/sites/{site}", Perm(P::Read), "sites.get"),
    rule(
        "PATCH",
        "/api/v1/sites/{site}",
        Perm(P::Configure),
        "sites.update",
    ),
    rule("GET", "/api/v1/tanks", Perm(P::Read), "tanks.list"),
    rule(
        "PUT",
        "/api/v1/sites/{site}/tanks/{tank}",
        Perm(P::Configure),
        "tanks.put",
    ),
    rule(
        "GET",
        "/api/v1/sites/{site}/tanks/{tank}",
        Perm(P::Read),
        "tanks.get",
    ),
    rule(
        "DELETE",
        "/api/v1/sites/{site}/tanks/{tank}",
        Perm(P::Configure),
        "tanks.delete",
    ),
    rule(
        "POST",
        "/api/v1/inventory/observations",
        Perm(P::Loads),
        "observations.create",
    ),
    rule(
        "POST",
        "/api/v1/sites/{site}/inventory/import",
        Perm(P::Loads),
        "observations.import",
    ),
    rule(
        "POST",
        "/api/v1/sites/{site}/loads/import",
        Perm(P::Loads),
        "loads.import",
    ),
    rule("GET", "/api/v1/risk", Perm(P::Read), "risk.list"),
    rule(
        "GET",
        "/api/v1/escalations",
        Perm(P::Read),
        "escalations.list",
    ),
    rule(
        "GET",
        "/api/v1/escalations/{id}",
        Perm(P::Read),
        "escalations.get",
    ),
    rule(
        "POST",
        "/api/v1/escalations/{id}/move",
        Perm(P::Loads),
        "escalations.move",
    ),
    rule(
        "POST",
        "/api/v1/escalations/{id}/notes",
        Perm(P::Loads),
        "escalations.note",
    ),
    rule(
        "GET",
        "/api/v1/webhooks/dead",
        Perm(P::Admin),
        "webhooks.dead",
    ),
];

pub fn rule_for(method: &Method, path: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|r| r.method == method.as_str() && r.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_unique_and_names_a_dotted_action() {
        for (i, r) in RULES.iter().enumerate() {
            assert!(
                !RULES[..i]
                    .iter()
                    .any(|o| o.method == r.method && o.path == r.path),
                "{} {} twice",
                r.method,
                r.path
            );
            assert!(!r.action.is_empty() && !r.action.contains(' '));
        }
    }
}
