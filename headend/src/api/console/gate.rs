//! The console's gate, the API gate's rules for a browser: who the
//! session cookies say the caller is (refreshing an expired access token
//! server-side), the route's permission, the site scope (a site outside
//! it is not found, never forbidden), the form token on every write, and
//! the audit trail for writes and denials. It also sets the headers every
//! console answer carries (a strict Content-Security-Policy among them).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::layout;
use super::session::{self, ACCESS, REFRESH};
use crate::api::ApiState;
use crate::api::access::{AuditNote, DENIED_PER_MINUTE};
use crate::api::rules::Need;
use crate::domain::AuditOutcome;
use crate::domain::throttle::{DEFAULT_CAP, RateLimit};
use crate::services::access::{self, AuthError, Principal, PrincipalKind, Refreshed, Tokens};
use crate::store::audit::NewEntry;
use crate::wallclock::now_ms;

/// The largest console form, bytes (a form post is read whole to check its
/// token before the handler runs).
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// A refresh token swapped on this replica is answered with the same new
/// tokens for this long: a browser's parallel requests (two tabs) must
/// not look like a stolen token replayed, which revokes the session.
const REFRESH_GRACE_MS: i64 = 30_000;
/// Refreshes remembered for that, at most.
const REFRESH_CACHE_CAP: usize = 10_000;

/// What every console route needs: (method, path, need, audit action).
type Table = Vec<(&'static str, &'static str, Need, &'static str)>;

#[derive(Clone)]
pub struct ConsoleGate {
    pub api: ApiState,
    /// Served over HTTPS: cookies are `Secure`.
    pub https: bool,
    table: Arc<Table>,
    /// Recent refreshes: refresh token → (new tokens, when).
    refreshed: Arc<Mutex<HashMap<String, (Tokens, i64)>>>,
    /// Denials audited per client (beyond it: 429, not audited), as the
    /// API's gate.
    denied: Arc<Mutex<RateLimit<IpAddr>>>,
}

impl ConsoleGate {
    pub fn new(api: ApiState, https: bool, table: Table) -> ConsoleGate {
        ConsoleGate {
            api,
            https,
            table: Arc::new(table),
            refreshed: Arc::new(Mutex::new(HashMap::new())),
            denied: Arc::new(Mutex::new(RateLimit::new(
                DENIED_PER_MINUTE,
                DENIED_PER_MINUTE,
                DEFAULT_CAP,
            ))),
        }
    }

    fn rule(&self, method: &Method, path: &str) -> Option<(Need, &'static str)> {
        // HEAD is GET without the body
        let method = if method == Method::HEAD {
            "GET"
        } else {
            method.as_str()
        };
        self.table
            .iter()
            .find(|(m, p, _, _)| *m == method && *p == path)
            .map(|(_, _, n, a)| (*n, *a))
    }

    /// New tokens for `refresh`, the same ones within the grace window.
    async fn refresh(&self, refresh: &str) -> Option<Tokens> {
        let now = now_ms();
        if let Ok(mut c) = self.refreshed.lock() {
            c.retain(|_, (_, at)| now - *at < REFRESH_GRACE_MS);
            if let Some((t, _)) = c.get(refresh) {
                return Some(t.clone());
            }
        }
        match access::refresh(&self.api.db, refresh).await {
            Ok(Refreshed::Tokens(t)) => {
                if let Ok(mut c) = self.refreshed.lock()
                    && c.len() < REFRESH_CACHE_CAP
                {
                    c.insert(refresh.to_string(), (t.clone(), now));
                }
                Some(t)
            }
            Ok(Refreshed::Reused { session_id, user }) => {
                tracing::warn!(session = %session_id, %user, "console: a refresh cookie was replayed; its session is revoked");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "console: refresh refused");
                None
            }
        }
    }
}

/// The browser's address.
fn client_of(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Who the cookies say, and the new tokens to set when it took a refresh.
async fn caller(
    g: &ConsoleGate,
    cookies: HashMap<String, String>,
    client: IpAddr,
) -> Result<Option<(Principal, Option<Tokens>)>, crate::Error> {
    if let Some(t) = cookies.get(ACCESS) {
        match access::authenticate(&g.api.db, &g.api.guard, t, client).await {
            Ok(p) if matches!(p.kind, PrincipalKind::User { .. }) => return Ok(Some((p, None))),
            Ok(_) | Err(AuthError::Unauthenticated(_)) | Err(AuthError::Throttled(_)) => {}
            Err(AuthError::Store(e)) => return Err(e),
        }
    }
    let Some(r) = cookies.get(REFRESH) else {
        return Ok(None);
    };
    let Some(t) = g.refresh(r).await else {
        return Ok(None);
    };
    match access::authenticate(&g.api.db, &g.api.guard, &t.access_token, client).await {
        Ok(p) => Ok(Some((p, Some(t)))),
        Err(AuthError::Store(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// The gate (a route layer: it knows the matched route).
pub async fn gate(State(g): State<ConsoleGate>, req: Request, next: Next) -> Response {
    let resp = gated(&g, req, next).await;
    layout::secured(resp, g.https)
}

async fn gated(g: &ConsoleGate, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some((need, action)) = g.rule(&method, &path) else {
        return layout::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "This page has no access rule (a headend defect).",
        );
    };
    let client = client_of(&req);
    let write = method != Method::GET && method != Method::HEAD;
    let mut entry = NewEntry {
        at_ms: crate::wallclock::now(),
        actor: format!("unauthenticated from {client}"),
        role: None,
        action: action.to_string(),
        target: req.uri().path().to_string(),
        outcome: AuditOutcome::Denied,
        status: 0,
        summary: "{}".into(),
        client: client.to_string(),
        request_id: String::new(),
        site: None,
    };
    // a form posted from another origin is refused whoever sends it (the
    // form token below refuses it too; this needs no session)
    if write && !same_origin(&req) {
        let why = "This form was posted from another site and was refused.";
        return deny(g, entry, StatusCode::FORBIDDEN, why).await;
    }
    if matches!(need, Need::Public) {
        let resp = next.run(req).await;
        return resp;
    }
    let cookies = session::cookies(req.headers());
    let (p, fresh) = match caller(g, cookies, client).await {
        Ok(Some(x)) => x,
        Ok(None) => {
            if write {
                return deny(
                    g,
                    entry,
                    StatusCode::UNAUTHORIZED,
                    "Your session has ended; log in again.",
                )
                .await;
            }
            return session::to_login(req.uri());
        }
        Err(e) => {
            tracing::error!(error = %e, "console: the database did not answer");
            return layout::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable; try again in a moment.",
            );
        }
    };
    entry.actor = p.actor.to_string();
    entry.role = Some(p.role);
    let (site, req) = crate::api::access::site_of(req).await;
    // the site first: a refusal by role is on its site's trail, which a
    // manager scoped to it reads
    entry.site = site.clone();
    if let Need::Perm(perm) = need
        && !p.role.may(perm)
    {
        let why = format!(
            "Your role ({}) may not do this; it needs the {perm} permission.",
            p.role
        );
        return deny(g, entry, StatusCode::FORBIDDEN, &why).await;
    }
    if let Some(s) = site.filter(|s| !p.scope.covers(s)) {
        return deny(
            g,
            entry,
            StatusCode::NOT_FOUND,
            &format!("There is no site {s:?}."),
        )
        .await;
    }
    let mut req = req;
    let token = match form_token(g, &p).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "console: the database did not answer");
            return layout::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable; try again in a moment.",
            );
        }
    };
    if write {
        match checked_form(&token, req).await {
            Ok(r) => req = r,
            Err(why) => return deny(g, entry, StatusCode::FORBIDDEN, why).await,
        }
    }
    let name = match &p.kind {
        PrincipalKind::User { name, .. } => name.clone(),
        PrincipalKind::ApiKey { id } => id.clone(),
    };
    req.extensions_mut().insert(layout::Viewer {
        name,
        role: p.role,
        token: if token.is_empty() {
            token
        } else {
            crate::domain::secret::mask_form_token(&token)
        },
    });
    req.extensions_mut().insert(p);
    let mut resp = next.run(req).await;
    if let Some(t) = fresh {
        session::set_tokens(resp.headers_mut(), &t, g.https);
    }
    if write {
        // the handler's note, when it left one (what changed, before and after)
        let note = resp.extensions().get::<AuditNote>().cloned();
        let status = resp.status().as_u16();
        crate::api::access::complete(&mut entry, note, status, false);
        append(g, &entry).await;
    }
    resp
}

/// The session's form token (empty when it has none).
async fn form_token(g: &ConsoleGate, p: &Principal) -> Result<String, crate::Error> {
    match &p.kind {
        PrincipalKind::User { session_id, .. } => Ok(g
            .api
            .db
            .users()
            .session_csrf(session_id)
            .await?
            .unwrap_or_default()),
        PrincipalKind::ApiKey { .. } => Ok(String::new()),
    }
}

/// The form's body, read whole (bounded), its `csrf` field checked
/// against the session's token; the request rebuilt with it. An upload
/// (`multipart/form-data`) carries the field as one of its parts.
async fn checked_form(expected: &str, req: Request) -> Result<Request, &'static str> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| "The form is too large.")?;
    let multipart = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    let sent = if multipart {
        let probe = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
        csrf_part(probe).await.unwrap_or_default()
    } else {
        url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    // each page carries the token masked afresh (BREACH: pages are
    // compressed)
    let sent = crate::domain::secret::unmask_form_token(&sent).unwrap_or_default();
    if expected.is_empty()
        || sent.len() != expected.len()
        || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
    {
        return Err(
            "The form's token is missing or not this session's: reload the page and try again.",
        );
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The `csrf` part of a multipart form (the console's forms put it
/// first), if it has one.
async fn csrf_part(req: Request) -> Option<String> {
    use axum::extract::FromRequest;
    let mut form = axum::extract::Multipart::from_request(req, &())
        .await
        .ok()?;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("csrf") {
            return field.text().await.ok();
        }
    }
    None
}

/// A write whose `Origin` (or, without one, `Referer`) is this host, or
/// that says neither (a browser sends `Origin` on every form post; a
/// client that sends none is not a browser a page can drive).
fn same_origin(req: &Request) -> bool {
    let h = req.headers();
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let from = h
        .get(header::ORIGIN)
        .or_else(|| h.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    if h.get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == "cross-site" || s == "same-site")
    {
        return false;
    }
    match from {
        None => true,
        Some(o) => {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or("");
            let authority = rest.split('/').next().unwrap_or("");
            !host.is_empty() && authority.eq_ignore_ascii_case(host)
        }
    }
}

async fn deny(g: &ConsoleGate, mut entry: NewEntry, status: StatusCode, why: &str) -> Response {
    let client: IpAddr = entry.client.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let throttled = g
        .denied
        .lock()
        .map_or(Ok(()), |mut d| d.take(&client, entry.at_ms.ms()));
    if let Err(wait_ms) = throttled {
        g.api.metrics.auth_refused.inc();
        let why = format!(
            "Too many refused requests; try again in {} s.",
            (wait_ms + 999) / 1000
        );
        return layout::error(StatusCode::TOO_MANY_REQUESTS, &why);
    }
    entry.status = status.as_u16();
    entry.outcome = AuditOutcome::Denied;
    entry.summary = serde_json::json!({ "message": why }).to_string();
    append(g, &entry).await;
    layout::error(status, why)
}

async fn append(g: &ConsoleGate, e: &NewEntry) {
    if let Err(err) = crate::services::audit::record(&g.api.db, e).await {
        g.api.metrics.audit_failed.inc();
        tracing::error!(error = %err, action = %e.action, actor = %e.actor, status = e.status,
            "appending an audit entry failed");
    }
}

/// An `HeaderValue` from text known to be one.
pub fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}
