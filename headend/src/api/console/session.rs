//! Logging in and out of the console. The session is the API's own
//! (`services::access::login`: the same users, throttling, lockout and
//! audit); its access and refresh tokens live in two cookies, `HttpOnly`,
//! `SameSite=Strict`, `Secure` under HTTPS, `Path=/`. The access cookie
//! lasts as long as its token (15 min); the refresh cookie as long as
//! its token, which the gate swaps server-side when the access token has
//! expired: 12 h without a page is the idle timeout, the session's 7 days
//! the absolute one.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::gate::value;
use super::layout::{self, Html};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::AuditOutcome;
use crate::services::access::{self as svc, AuthError, PrincipalKind, REFRESH_TTL_MS, Tokens};
use crate::store::audit::NewEntry;

pub const ACCESS: &str = "tw_access";
pub const REFRESH: &str = "tw_refresh";

/// The request's cookies (the last of a name wins; at most 32).
pub fn cookies(h: &HeaderMap) -> HashMap<String, String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .take(32)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cookie(name: &str, value: &str, max_age_s: i64, https: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if https { "; Secure" } else { "" }
    )
}

/// Sets the session's cookies for `t`.
pub fn set_tokens(h: &mut HeaderMap, t: &Tokens, https: bool) {
    h.append(
        header::SET_COOKIE,
        value(&cookie(ACCESS, &t.access_token, t.expires_in, https)),
    );
    h.append(
        header::SET_COOKIE,
        value(&cookie(
            REFRESH,
            &t.refresh_token,
            REFRESH_TTL_MS / 1000,
            https,
        )),
    );
}

fn clear(h: &mut HeaderMap, https: bool) {
    for name in [ACCESS, REFRESH] {
        h.append(header::SET_COOKIE, value(&cookie(name, "", 0, https)));
    }
}

/// Where to go back to after logging in: a path of this console only
/// (never another host: an open redirect).
fn local(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && n.len() <= 512 =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// To the login page, then back to `uri`.
pub fn to_login(uri: &Uri) -> Response {
    let back = uri.path_and_query().map_or("/", |p| p.as_str());
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", back)
        .finish();
    Redirect::to(&format!("/login?{q}")).into_response()
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

fn login_page(next: &str, problem: Option<&str>) -> Html {
    layout::bare(
        "Log in",
        html! {
            main.login {
                h1 { "Tankwatch" }
                @if let Some(p) = problem {
                    p.problem role="alert" { (p) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label for="user" { "User" }
                    input #user name="user" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password name="password" type="password" autocomplete="current-password" required;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

pub async fn form(Query(q): Query<Next>) -> Html {
    login_page(&local(q.next.as_deref()), None)
}

/// Missing fields are empty (refused as a wrong login), not a rejection
/// the console would show as JSON.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

pub async fn login(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    https: axum::Extension<Https>,
    Form(f): Form<LoginForm>,
) -> Response {
    let from = peer.ip();
    let name: String = f.user.chars().take(64).collect();
    let mut entry = NewEntry {
        at_ms: crate::wallclock::now(),
        actor: format!("operator {name} from {from}"),
        role: None,
        action: "console.login".into(),
        target: format!("user {name}"),
        outcome: AuditOutcome::Denied,
        status: 401,
        summary: "{}".into(),
        client: from.to_string(),
        request_id: String::new(),
        site: None,
    };
    let next = local(f.next.as_deref());
    let resp = match svc::login(&s.db, &s.guard, &f.user, &f.password, from).await {
        Ok(t) => {
            tracing::info!(user = %t.user, session = %t.session_id, %from, "console login");
            entry.outcome = AuditOutcome::Ok;
            entry.status = 303;
            entry.role = Some(t.role);
            entry.target = t.session_id.clone();
            entry.summary =
                serde_json::json!({ "session": t.session_id, "role": t.role }).to_string();
            let mut r = Redirect::to(&next).into_response();
            set_tokens(r.headers_mut(), &t, https.0.0);
            r
        }
        Err(e) => {
            s.metrics.logins_refused.inc();
            tracing::warn!(user = %name, %from, why = %e, "console login refused");
            let (status, msg) = match e {
                AuthError::Throttled(ms) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many attempts; try again in {} s.", (ms + 999) / 1000),
                ),
                AuthError::Unauthenticated(_) => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong user name or password.".to_string(),
                ),
                AuthError::Store(e) => {
                    tracing::error!(error = %e, "console login: the database did not answer");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The database is unavailable; try again in a moment.".to_string(),
                    )
                }
            };
            entry.status = status.as_u16();
            entry.summary = serde_json::json!({ "message": msg }).to_string();
            (status, login_page(&next, Some(msg.as_str()))).into_response()
        }
    };
    if let Err(err) = crate::services::audit::record(&s.db, &entry).await {
        s.metrics.audit_failed.inc();
        tracing::error!(error = %err, "appending an audit entry failed");
    }
    resp
}

pub async fn logout(
    State(s): State<ApiState>,
    Caller(p): Caller,
    https: axum::Extension<Https>,
) -> Response {
    if let PrincipalKind::User { session_id, .. } = &p.kind
        && let Err(e) =
            svc::revoke_session(&s.db, session_id, crate::wallclock::now(), "logout").await
    {
        tracing::error!(error = %e, "console logout: the session could not be ended");
        return layout::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is unavailable; your session was not ended. Try again.",
        );
    }
    let mut r = Redirect::to("/login").into_response();
    clear(r.headers_mut(), https.0.0);
    r
}

/// Served over HTTPS (cookies are `Secure`): an extension of every
/// console request.
#[derive(Clone, Copy)]
pub struct Https(pub bool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_login_the_console_goes_back_only_to_a_path_of_its_own() {
        assert_eq!(local(Some("/tanks?risk=high")), "/tanks?risk=high");
        // a control character would make the Location header invalid (and
        // the redirect panic)
        for bad in [
            "https://evil.test/",
            "//evil.test/x",
            "/\\evil.test",
            "/tanks\r\nSet-Cookie: x=1",
            "/\t/evil.test",
            "tanks",
            "",
        ] {
            assert_eq!(local(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local(None), "/");
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_under_https() {
        let c = cookie(ACCESS, "t", 900, true);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=900",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!cookie(ACCESS, "t", 900, false).contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, value("a=1; tw_access=x; b=2"));
        assert_eq!(cookies(&h).get(ACCESS).map(String::as_str), Some("x"));
    }
}
