//! The REST API's edge: what every request must satisfy before a handler
//! sees it. Until operator authentication lands the API is reachable only
//! on loopback, so the threats are other web pages in the operator's
//! browser (cross-site requests, DNS rebinding) and malformed input:
//!
//! * **Host** must be one of the configured names (default `localhost`,
//!   `127.0.0.1`, `::1`; add more with `--http-host`), else 421: a page
//!   on `evil.example` rebound to 127.0.0.1 still sends its own Host.
//! * **Content-Type: application/json** on every POST, PUT, PATCH and
//!   DELETE, else 415: a cross-site form or `fetch` without a CORS
//!   preflight can only send `text/plain`, form or multipart bodies.
//! * **No control characters** in the (percent-decoded) path or query,
//!   else 400: they would reach SQL (PostgreSQL refuses NUL) and logs.
//!   JSON bodies are checked the same way by [`check_json`].
//!
//! Refusals are counted in `tankwatch_headend_http_refused_total{reason}`.
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::metrics::{Metrics, ReasonLabel};

/// Largest REST request body, bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest string accepted anywhere in a JSON body, characters.
pub const MAX_STRING_CHARS: usize = 1000;

/// The edge policy of the REST listener.
#[derive(Clone)]
pub struct Edge {
    /// Host names (lowercase, no port) a request may address.
    pub hosts: Vec<String>,
    pub metrics: Metrics,
}

fn refuse(m: &Metrics, reason: &'static str, code: StatusCode, msg: String) -> Response {
    m.http_refused.get_or_create(&ReasonLabel { reason }).inc();
    super::ApiError::new(code, reason, msg).into_response()
}

/// The host part of a Host header value (`name`, `name:port`, `[v6]:port`), lowercase.
pub fn host_of(v: &str) -> String {
    let v = v.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        v.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(v)
    };
    host.to_ascii_lowercase()
}

/// Is there a control character in `bytes` (percent-decoded)?
pub fn has_control(s: &str) -> bool {
    percent_encoding::percent_decode_str(s).any(|b| b < 0x20 || b == 0x7f)
}

/// The middleware.
pub async fn guard(State(edge): State<Edge>, req: Request, next: Next) -> Response {
    let m = &edge.metrics;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_of)
        .or_else(|| req.uri().host().map(str::to_ascii_lowercase));
    match host {
        Some(h) if edge.hosts.contains(&h) => {}
        other => {
            return refuse(
                m,
                "host",
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {:?} is not a name of this API (allowed: {}; add one with --http-host)",
                    other.unwrap_or_default(),
                    edge.hosts.join(", ")
                ),
            );
        }
    }
    if has_control(req.uri().path()) || req.uri().query().is_some_and(has_control) {
        return refuse(
            m,
            "control_chars",
            StatusCode::BAD_REQUEST,
            "the path or query contains a control character".into(),
        );
    }
    let writes = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    if writes.contains(req.method()) {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        // CSV imports may come as text/csv (not a CORS-safelisted type
        // either: a cross-site form cannot send it without a preflight)
        let csv_route = req.method() == Method::POST && req.uri().path().ends_with("/import");
        let json = match json.as_deref() {
            Some("application/json") => true,
            Some("text/csv") => csv_route,
            _ => false,
        };
        if !json {
            return refuse(
                m,
                "content_type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send Content-Type: application/json (with a JSON body, {} if there is nothing to say)".into(),
            );
        }
    }
    next.run(req).await
}

/// Finds a string (or key) in `v` with a control character or over
/// [`MAX_STRING_CHARS`]; returns its path (`tanks[2]`, `eta`) and the problem.
pub fn check_json(v: &Value) -> Option<(String, &'static str)> {
    fn bad(s: &str) -> Option<&'static str> {
        if s.chars().any(crate::ingest::sanitize::is_forbidden) {
            Some("contains a control character")
        } else if s.chars().count() > MAX_STRING_CHARS {
            Some("is longer than 1000 characters")
        } else {
            None
        }
    }
    fn walk(v: &Value, path: &str) -> Option<(String, &'static str)> {
        match v {
            Value::String(s) => bad(s).map(|p| (path.to_string(), p)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, x)| walk(x, &format!("{path}[{i}]"))),
            Value::Object(o) => o.iter().find_map(|(k, x)| {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match bad(k) {
                    Some(problem) => Some((p, problem)),
                    None => walk(x, &p),
                }
            }),
            _ => None,
        }
    }
    walk(v, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn host_headers_are_reduced_to_their_lowercase_name() {
        for (v, want) in [
            ("localhost", "localhost"),
            ("LocalHost:8080", "localhost"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("evil.example:80", "evil.example"),
            ("localhost.evil.example", "localhost.evil.example"),
        ] {
            assert_eq!(host_of(v), want, "{v}");
        }
    }

    #[test]
    fn control_characters_are_found_raw_or_percent_encoded() {
        assert!(has_control("/api/v1/loads/a%00b"));
        assert!(has_control("/api/v1/loads/a%1Bb"));
        assert!(has_control("site=x%7F"));
        assert!(!has_control("/api/v1/sites/s%C3%BCd/assets"));
        assert!(!has_control("/api/v1/loads/load-1"));
    }

    #[test]
    fn json_strings_with_control_characters_are_named_by_path() {
        let v = json!({"site": "s", "tanks": ["t1", "t\u{0}2"]});
        assert_eq!(
            check_json(&v),
            Some(("tanks[1]".into(), "contains a control character"))
        );
        let v = json!({"a\u{1}": 1});
        assert_eq!(check_json(&v).map(|x| x.0), Some("a\u{1}".into()));
        let v = json!({"reference": "x".repeat(1001)});
        assert_eq!(check_json(&v).map(|x| x.0), Some("reference".into()));
        assert_eq!(check_json(&json!({"ok": ["fine", 1, null]})), None);
    }
}
