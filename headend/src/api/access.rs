//! Access to the REST API: the one table that says what each route
//! needs ([`rules`]), and the gate every routed request passes
//! ([`gate`]): authenticate the bearer credential, check the role's
//! permission and the site scope, then, after the handler, append the
//! audit entry. A route missing from the table is refused (500, logged)
//! and fails the role-matrix test: there is no route without a rule.
//!
//! Denials: no or a bad credential → 401; a role without the
//! permission → 403; a site outside the caller's scope → 404 (as if it
//! did not exist). Every write (any method but GET) and every denial
//! leaves exactly one audit entry; failed bearer authentications beyond
//! [`DENIED_PER_MINUTE`] from one address get 429 and are counted, not
//! audited one by one (a flood must not fill the database).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::domain::throttle::{DEFAULT_CAP, RateLimit};
use crate::domain::{AuditOutcome, Role};
use crate::services::access::{self, AuthError, Principal};
use crate::store::audit::NewEntry;
use crate::wallclock::now_ms;

pub use super::rules::{Need, Rule, rule_for, rules};
use crate::domain::Permission as P;

/// Failed bearer authentications audited per client address a minute.
pub const DENIED_PER_MINUTE: u32 = 60;

/// The request's id: the client's `X-Request-Id` when it is sane
/// (1-64 of `A-Za-z0-9._-`), else a new one. On every response and in
/// every log line of the request (its span).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// What a handler says about a write, for its audit entry.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// What was changed (an id); default: the request path.
    pub target: Option<String>,
    /// Before/after summary, never a secret.
    pub summary: Value,
    /// Who, when the gate did not know yet (a login names its user).
    pub actor: Option<(String, Option<Role>)>,
    /// The handler refused for who asked (a resource outside the scope).
    pub denied: bool,
    /// The site the request was about, when its path does not name it
    /// (a command's, a load's); else the path's `{site}`, or the
    /// summary's `site`. Scoped readers of the trail see only their sites'.
    pub site: Option<String>,
}

/// Attaches an audit note to a response.
pub fn noted(mut r: Response, note: AuditNote) -> Response {
    r.extensions_mut().insert(note);
    r
}

/// The gate's state: the API's and the failed-authentication limiter.
#[derive(Clone)]
pub struct Gate {
    pub api: ApiState,
    pub denied: Arc<Mutex<RateLimit<IpAddr>>>,
}

impl Gate {
    pub fn new(api: ApiState) -> Gate {
        Gate {
            api,
            denied: Arc::new(Mutex::new(RateLimit::new(
                DENIED_PER_MINUTE,
                DENIED_PER_MINUTE,
                DEFAULT_CAP,
            ))),
        }
    }
}

fn valid_request_id(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Outermost layer: the request id, its log span and its response header.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(
            || format!("req-{}", crate::domain::secret::random_id()),
            str::to_string,
        );
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn client_of(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The gate (a route layer: it runs after routing, so it knows the route).
pub async fn gate(State(g): State<Gate>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let client = client_of(&req);
    let rid = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let Some(rule) = rule_for(&method, &path) else {
        let target = req.uri().path().to_string();
        return unrouted(&g, &method, &path, target, client, rid).await;
    };
    let target = req.uri().path().to_string();
    let mut entry = NewEntry {
        at_ms: crate::wallclock::now(),
        actor: format!("unauthenticated from {client}"),
        role: None,
        action: rule.action.to_string(),
        target,
        outcome: AuditOutcome::Denied,
        status: 0,
        summary: "{}".into(),
        client: client.to_string(),
        request_id: rid,
        site: None,
    };
    let principal = match rule.need {
        Need::Public => None,
        Need::Signed | Need::Perm(_) => {
            let p = match bearer(&req) {
                None => Err(AuthError::Unauthenticated(
                    "no credential: send Authorization: Bearer <access token or API key>".into(),
                )),
                Some(t) => {
                    let stale = if matches!(rule.need, Need::Perm(P::Metrics)) {
                        access::METRICS_STALE_IF_ERROR_MS
                    } else {
                        access::STALE_IF_ERROR_MS
                    };
                    access::authenticate_within(&g.api.db, &g.api.guard, t, client, stale).await
                }
            };
            match p {
                Ok(p) => Some(p),
                Err(AuthError::Store(e)) => return ApiError::from(e).into_response(),
                Err(e) => {
                    let throttled = g
                        .denied
                        .lock()
                        .map_or(Ok(()), |mut d| d.take(&client, entry.at_ms.ms()));
                    g.api.metrics.auth_refused.inc();
                    return match throttled {
                        Ok(()) => deny(&g, entry, ApiError::unauthenticated(e.to_string())).await,
                        Err(wait) => ApiError::throttled(wait).into_response(),
                    };
                }
            }
        }
    };
    if let Some(p) = &principal {
        entry.actor = p.actor.to_string();
        entry.role = Some(p.role);
        if let Need::Perm(perm) = rule.need {
            if !p.role.may(perm) {
                let e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "role {} may not {} (it needs the {perm} permission)",
                        p.role, rule.action
                    ),
                );
                return deny(&g, entry, e).await;
            }
            if perm == P::Metrics && !p.scope.is_all() {
                let e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "metrics cover every site; a credential scoped to some sites may not read them",
                );
                return deny(&g, entry, e).await;
            }
        }
        let (site, r) = site_of(req).await;
        req = r;
        entry.site = site.clone();
        if let Some(site) = site.filter(|s| !p.scope.covers(s)) {
            return deny(&g, entry, ApiError::not_found(format!("no site {site:?}"))).await;
        }
        req.extensions_mut().insert(p.clone());
    }
    let resp = next.run(req).await;
    let note = resp.extensions().get::<AuditNote>().cloned();
    let status = resp.status().as_u16();
    let write = method != Method::GET;
    let denied = note.as_ref().is_some_and(|n| n.denied);
    if !(write || denied || status == 401 || status == 403) {
        return resp;
    }
    complete(&mut entry, note, status, denied);
    append(&g, &entry).await;
    resp
}

/// A request for a path with no rule for its method: 405 with `Allow`
/// (audited like a denial: a PUT on the audit trail is someone trying to
/// change it, at most DENIED_PER_MINUTE per address), or a route without
/// a rule at all (a defect: 500).
async fn unrouted(
    g: &Gate,
    method: &Method,
    path: &str,
    target: String,
    client: IpAddr,
    rid: String,
) -> Response {
    let allowed: Vec<&str> = rules()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method)
        .collect();
    if !allowed.is_empty() {
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{method} is not a method of {path} (allowed: {})",
                allowed.join(", ")
            ),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        // audited like a denial (a PUT on the audit trail is someone
        // trying to change it), at most DENIED_PER_MINUTE per address
        let now = now_ms();
        if g.denied
            .lock()
            .map_or(Ok(()), |mut d| d.take(&client, now))
            .is_ok()
        {
            let entry = NewEntry {
                at_ms: crate::domain::UnixMs::from_ms(now),
                actor: format!("unauthenticated from {client}"),
                role: None,
                action: "method_not_allowed".into(),
                target,
                outcome: AuditOutcome::Denied,
                status: 405,
                summary:
                    serde_json::json!({ "error": "method_not_allowed", "method": method.as_str() })
                        .to_string(),
                client: client.to_string(),
                request_id: rid,
                site: None,
            };
            append(g, &entry).await;
        }
        return r;
    }
    tracing::error!(%method, %path, "a route has no access rule; refused");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "this route has no access rule (a headend defect; see its log)",
    )
    .into_response()
}

/// The audit entry completed from the handler's answer and its note (the
/// REST gate's and the console's).
pub(crate) fn complete(entry: &mut NewEntry, note: Option<AuditNote>, status: u16, denied: bool) {
    entry.status = status;
    entry.outcome = if denied || matches!(status, 401 | 403 | 429) {
        AuditOutcome::Denied
    } else {
        AuditOutcome::of_status(status)
    };
    if let Some(n) = note {
        if let Some(t) = n.target {
            entry.target = t;
        }
        if !n.summary.is_null() {
            entry.summary = n.summary.to_string();
        }
        let in_summary = || {
            ["site", "site_id"]
                .iter()
                .find_map(|k| n.summary.get(k).and_then(Value::as_str))
                .or_else(|| n.summary.pointer("/after/site").and_then(Value::as_str))
                .map(str::to_string)
        };
        if let Some(site) = n
            .site
            .clone()
            .or_else(|| entry.site.clone())
            .or_else(in_summary)
        {
            entry.site = Some(site);
        }
        if let Some((actor, role)) = n.actor {
            entry.actor = actor;
            entry.role = role;
        }
    }
}

async fn deny(g: &Gate, mut entry: NewEntry, e: ApiError) -> Response {
    entry.status = e.status.as_u16();
    entry.outcome = AuditOutcome::Denied;
    entry.summary = serde_json::json!({ "error": e.code, "message": e.message }).to_string();
    append(g, &entry).await;
    e.into_response()
}

/// Appends; a failure is logged and counted (the request's own result
/// stands: it is already done).
async fn append(g: &Gate, e: &NewEntry) {
    if let Err(err) = crate::services::audit::record(&g.api.db, e).await {
        g.api.metrics.audit_failed.inc();
        tracing::error!(error = %err, action = %e.action, actor = %e.actor, status = e.status,
            "appending an audit entry failed");
    }
}

/// The `{site}` of the matched route's path, if it has one (the request
/// given back).
pub async fn site_of(req: Request) -> (Option<String>, Request) {
    let (mut parts, body) = req.into_parts();
    let site = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|ps| {
            ps.iter()
                .find(|(k, _)| *k == "site")
                .map(|(_, v)| v.to_string())
        });
    (site, Request::from_parts(parts, body))
}

/// The authenticated caller of a handler (put there by [`gate`]).
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "no authenticated caller on a route that needs one (a headend defect)",
                )
            })
    }
}

/// The client's address and the request id, for handlers that audit
/// themselves (login).
pub fn client(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_clients_are_kept_only_when_sane() {
        assert!(valid_request_id("abc-123_X.y"));
        for bad in ["", "a b", "a\nb", &"x".repeat(65), "ü"] {
            assert!(!valid_request_id(bad), "{bad:?}");
        }
    }
}
