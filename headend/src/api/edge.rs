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
/// Longest request target (path and query) answered, bytes; longer: 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names and values) answered; more: 431. The HTTP
/// layer's own limits are far above these, so these refusals come in the
/// one error shape (issue 27).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most headers answered; more: 431.
pub const MAX_HEADERS: usize = 100;
/// Longest string accepted anywhere in a JSON body, characters.
pub const MAX_STRING_CHARS: usize = 1000;

/// The edge policy of the REST listener.
#[derive(Clone)]
pub struct Edge {
    /// Host names (lowercase, no port) a request may address.
    pub hosts: Vec<String>,
    pub metrics: Metrics,
    /// Served over HTTPS (the console's cookies are `Secure`).
    pub https: bool,
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
/// Every refusal in the one error shape: an answer of 400 or more that is
/// not JSON (the framework's own, e.g. 413 for a body over the limit) is
/// rewritten as `{"error": {"code", "message", "field": null}}` with its
/// status kept (issue 27: 413 came as plain text). 414 and 431 are the
/// edge's own ([`MAX_URI_BYTES`], [`MAX_HEADER_BYTES`]), far below the
/// HTTP layer's limits.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // the console's error pages are HTML of their own
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "refused",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_string()
    } else {
        text
    };
    let mut out = super::ApiError::new(status, code, message).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

pub async fn guard(State(edge): State<Edge>, req: Request, next: Next) -> Response {
    let m = &edge.metrics;
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return refuse(
            m,
            "uri_too_long",
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target} bytes; at most {MAX_URI_BYTES}"),
        );
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES || req.headers().len() > MAX_HEADERS {
        return refuse(
            m,
            "headers_too_large",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "{} headers of {header_bytes} bytes; at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes",
                req.headers().len()
            ),
        );
    }
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
        // the console's forms (its gate checks their origin and token)
        let console_form = crate::api::console::owns(req.uri().path());
        let json = match json.as_deref() {
            Some("application/json") => !console_form,
            Some("text/csv") => csv_route && !console_form,
            Some("application/x-www-form-urlencoded") => console_form,
            // the console's CSV upload (a file input posts only this way)
            Some("multipart/form-data") => console_form && csv_route,
            _ => false,
        };
        if !json {
            return refuse(
                m,
                "content_type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                if console_form {
                    "a console form is sent as application/x-www-form-urlencoded (an upload as multipart/form-data)".into()
                } else {
                    "send Content-Type: application/json (with a JSON body, {} if there is nothing to say)".into()
                },
            );
        }
    }
    next.run(req).await
}

/// JSON text as a value, refusing a key given twice in one object (which
/// key wins differs between parsers: a proxy and this API could read two
/// different requests; issue 27).
pub fn strict_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Strict>(body)
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{k}` is given twice"
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Finds a string (or key) in `v` with a control character or over
/// [`MAX_STRING_CHARS`]; returns its path (`tanks[2]`, `eta`) and the problem. A CSV import's text (`csv` at the top)
/// is bounded by the body limit instead: its rows are checked one by one.
pub fn check_json(v: &Value) -> Option<(String, &'static str)> {
    fn bad(s: &str) -> Option<&'static str> {
        if s.chars().any(crate::domain::text::is_forbidden) {
            Some("contains a control character")
        } else if s.chars().count() > MAX_STRING_CHARS {
            Some("is longer than 1000 characters")
        } else {
            None
        }
    }
    fn walk(v: &Value, path: &str) -> Option<(String, &'static str)> {
        match v {
            Value::String(s) if path == "csv" => s
                .chars()
                .any(|c| crate::domain::text::is_forbidden(c) && !matches!(c, '\n' | '\r' | '\t'))
                .then(|| (path.to_string(), "contains a control character")),
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

    /// Issue 27: `{"a":1,"a":2}` was taken (the last one won).
    #[test]
    fn a_key_given_twice_is_refused_at_any_depth_and_ordinary_json_reads_as_before() {
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":{"b":true,"b":false}}"#,
            r#"[{"k":"v","k":"v"}]"#,
        ] {
            let e = strict_json(bad.as_bytes()).unwrap_err();
            assert!(e.contains("given twice"), "{bad}: {e}");
        }
        let ok = r#"{"a":[1,2.5,-3,null,"s",{"b":false}],"c":{"a":1}}"#;
        assert_eq!(
            strict_json(ok.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(ok).unwrap()
        );
    }

    #[test]
    fn a_csv_import_is_bounded_by_the_body_not_the_string_limit() {
        let long = "tank,at,volume_l\n".to_string() + &"tank-1,1795392000000,9000\n".repeat(200);
        assert!(check_json(&json!({ "csv": long })).is_none());
        assert!(check_json(&json!({ "note": long })).is_some());
        assert!(check_json(&json!({ "csv": "a\u{0}b" })).is_some());
    }

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
