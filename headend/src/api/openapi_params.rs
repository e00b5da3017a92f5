//! What the OpenAPI document says of each parameter that its Rust type
//! does not: the allowed values of the closed sets (taken from the domain
//! types that parse them, never prose that can drift) and a description
//! for path parameters and the common filters.

use serde_json::{Value, json};

/// The values a query or path parameter takes, from the types that parse
/// it (never prose that can drift from the code).
fn allowed(path: &str, name: &str) -> Option<Vec<&'static str>> {
    use crate::domain as d;
    fn all<T: Copy>(xs: &[T], f: fn(T) -> &'static str) -> Option<Vec<&'static str>> {
        Some(xs.iter().map(|x| f(*x)).collect())
    }
    match name {
        "state" if path.starts_with("/api/v1/commands") => {
            all(d::CommandState::ALL, d::CommandState::as_str)
        }
        "state" if path.starts_with("/api/v1/escalations") => all(
            d::escalation::EscState::ALL,
            d::escalation::EscState::as_str,
        ),
        "cause" => all(d::escalation::Cause::ALL, d::escalation::Cause::as_str),
        "status" if path.starts_with("/api/v1/loads") => {
            all(d::LoadStatus::ALL, d::LoadStatus::as_str)
        }
        "outcome" => all(d::AuditOutcome::ALL, d::AuditOutcome::as_str),
        "risk" => all(d::forecast::Risk::ALL, d::forecast::Risk::as_str),
        "freshness" => all(
            d::inventory::FreshnessKind::ALL,
            d::inventory::FreshnessKind::as_str,
        ),
        "order" => Some(vec!["asc", "desc"]),
        _ => None,
    }
}

/// What a parameter is, when its type does not say (path parameters and
/// the common filters).
fn described(name: &str) -> Option<&'static str> {
    Some(match name {
        "site" => {
            "A site id (as in the agent's certificate); outside the caller's scope it does not exist (404)."
        }
        "asset" => "An asset id of the site (`tank-1`).",
        "tank" => "A tank id of the site (`tank-1`).",
        "id" => "The object's id, as the API gave it.",
        "user" => "A user's login name.",
        "serial" => "A certificate's serial (hex).",
        "limit" => "Items per page, 1 to 1000 (default 100).",
        "cursor" => "From the previous page's `X-Next-Cursor` (or its `Link` header).",
        "from" => "From this time, inclusive: RFC 3339 with its offset, or Unix ms.",
        "to" => "Until this time, inclusive: RFC 3339 with its offset, or Unix ms.",
        "field" => "One field only (`volume`).",
        "state" => "Only in this state.",
        "cause" => "Only with this cause.",
        "open" => "Only those not resolved.",
        "product" => "Only tanks of this product.",
        "q" => "A prefix of the site id or a part of the site's name.",
        "risk" => "Only tanks at this risk level.",
        "freshness" => "Only tanks this fresh (as of the last evaluation).",
        "all" => "Ended sessions too.",
        "order" => "asc (oldest first, the default) or desc.",
        _ => return None,
    })
}

/// Fills each parameter's allowed values and description.
pub fn annotate(path: &str, params: &mut [Value]) {
    for p in params {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        if let Some(values) = allowed(path, &name) {
            p["schema"]["enum"] = json!(values);
        }
        let missing = p
            .get("description")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if missing && let Some(d) = described(&name) {
            p["description"] = json!(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::openapi::build;

    /// Issue 27: no `servers`, allowed values as prose, 56 of 99
    /// parameters undescribed.
    #[test]
    fn every_parameter_is_described_and_closed_sets_are_enums_from_the_types() {
        let d = build();
        assert!(d["servers"][0]["url"].is_string());
        let mut n = 0;
        for (path, item) in d["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    n += 1;
                    assert!(
                        p["description"].as_str().is_some_and(|s| !s.is_empty()),
                        "{method} {path}: {} has no description",
                        p["name"]
                    );
                }
            }
        }
        assert!(n > 50, "{n} parameters");
        let states = |path: &str| -> Vec<String> {
            d["paths"][path]["get"]["parameters"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["name"] == "state"))
                .and_then(|p| p["schema"]["enum"].as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert!(states("/api/v1/commands").contains(&"cancelled".to_string()));
        assert!(states("/api/v1/escalations").contains(&"investigating".to_string()));
    }
}
