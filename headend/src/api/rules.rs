//! The access table of the REST API, made from the routes' declarations
//! ([`super::route`]): every route's method, path, what it needs and the
//! action its audit entries carry. The gate ([`super::access::gate`])
//! enforces it, and `docs/operator-access.md` is this table for people.

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

/// Every route's rule, from the routes' declarations (made once).
pub fn rules() -> &'static [Rule] {
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| super::routes().into_iter().map(|r| r.rule).collect())
}

pub fn rule_for(method: &Method, path: &str) -> Option<&'static Rule> {
    rules()
        .iter()
        .find(|r| r.method == method.as_str() && r.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_unique_and_names_a_dotted_action() {
        for (i, r) in rules().iter().enumerate() {
            assert!(
                !rules()[..i]
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
