//! REST for logging in and sessions.
//!
//! * `POST /api/v1/auth/login` `{user, password}` → an access token
//!   (15 min) and a refresh token (single use).
//! * `POST /api/v1/auth/refresh` `{refresh_token}` → new tokens of the
//!   same session; a refresh token used twice revokes its session.
//! * `POST /api/v1/auth/logout`: ends the caller's session.
//! * `GET /api/v1/auth/me`: who the credential is.
//! * `GET /api/v1/auth/sessions[?user=&all=true]`: the caller's live
//!   sessions (an admin: those of the users it may manage, `all`
//!   includes ended ones; an API key has none).
//! * `POST /api/v1/auth/sessions/{id}/revoke`: one's own, or (admin) those
//!   of a user it may manage.

use super::Query;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{AuditNote, Caller, noted};
use super::page::{self, PageParams};
use super::{ApiError, ApiState, parse_body, ts};
use crate::domain::{Grant, Permission};
use crate::services::access::{self as svc, AuthError, PrincipalKind, Refreshed};
use crate::services::admin as admin_svc;
use crate::store::users::{SessionRow, SessionsOf};

/// Users a scoped admin's session list looks through at most.
const MAX_SCOPED_USERS: i64 = 10_000;

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "POST",
            "/api/v1/auth/login",
            Public,
            "auth.login",
            post(login),
            with_body(
                d(
                    "Log in: an access token and a refresh token",
                    200,
                    Some(reference("Tokens")),
                ),
                "Login",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/auth/refresh",
            Public,
            "auth.refresh",
            post(refresh),
            with_body(
                d(
                    "New tokens for a refresh token (single use; reuse revokes the session)",
                    200,
                    Some(reference("Tokens")),
                ),
                "Refresh",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/auth/logout",
            Signed,
            "auth.logout",
            post(logout),
            d("End the caller's session", 204, None),
        ),
        Route::new(
            "GET",
            "/api/v1/auth/me",
            Signed,
            "auth.me",
            get(me),
            d("Who the credential is", 200, Some(reference("Me"))),
        ),
        Route::new(
            "GET",
            "/api/v1/auth/sessions",
            Signed,
            "sessions.list",
            get(sessions),
            paged(
                "Live sessions: the caller's, or (admin) anyone's",
                "Session",
                params_of::<auth::SessionList>(),
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/auth/sessions/{id}/revoke",
            Signed,
            "sessions.revoke",
            post(revoke),
            d(
                "Revoke a session: one's own, or (admin) anyone's",
                200,
                Some(reference("Session")),
            ),
        ),
    ]
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    pub password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    pub refresh_token: String,
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Unauthenticated(m) => ApiError::unauthenticated(m),
        AuthError::Throttled(ms) => ApiError::throttled(ms),
        AuthError::Store(e) => e.into(),
    }
}

async fn login(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: Bytes,
) -> Response {
    let req: Login = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let from = peer.ip();
    // the name as given, bounded (the edge refused control characters)
    let name: String = req.user.chars().take(64).collect();
    let actor = format!("operator {name} from {from}");
    match svc::login(&s.db, &s.guard, &req.user, &req.password, from).await {
        Ok(t) => {
            tracing::info!(user = %t.user, session = %t.session_id, %from, "login");
            let note = AuditNote {
                target: Some(t.session_id.clone()),
                summary: json!({ "session": t.session_id, "role": t.role }),
                actor: Some((actor, Some(t.role))),
                denied: false,
                site: None,
            };
            noted(Json(&t).into_response(), note)
        }
        Err(e) => {
            s.metrics.logins_refused.inc();
            tracing::warn!(user = %name, %from, why = %e, "login refused");
            let mut r = auth_error(e).into_response();
            if let Some(n) = r.extensions_mut().get_mut::<AuditNote>() {
                n.actor = Some((actor, None));
                n.target = Some(format!("user {name}"));
            }
            r
        }
    }
}

async fn refresh(State(s): State<ApiState>, body: Bytes) -> Response {
    let req: Refresh = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match svc::refresh(&s.db, &req.refresh_token).await {
        Ok(Refreshed::Tokens(t)) => {
            let note = AuditNote {
                target: Some(t.session_id.clone()),
                summary: json!({ "session": t.session_id }),
                actor: Some((format!("user {}", t.user), Some(t.role))),
                denied: false,
                site: None,
            };
            noted(Json(&t).into_response(), note)
        }
        Ok(Refreshed::Reused { session_id, user }) => {
            let mut r = ApiError::unauthenticated(
                "this refresh token was used before: its session is revoked; log in again",
            )
            .into_response();
            if let Some(n) = r.extensions_mut().get_mut::<AuditNote>() {
                n.actor = Some((format!("user {user}"), None));
                n.target = Some(session_id.clone());
                n.summary =
                    json!({ "session": session_id, "after": "revoked: refresh token reused" });
            }
            r
        }
        Err(e) => auth_error(e).into_response(),
    }
}

fn session_json(r: &SessionRow) -> Value {
    json!({
        "session_id": r.session_id, "user": r.user_id, "client": r.client,
        "created_at": ts(r.created_ms), "created_ms": r.created_ms, "refreshed_at": ts(r.refreshed_ms),
        "expires_at": ts(r.expires_ms),
        "revoked_at": r.revoked_ms.map(ts), "revoked_reason": r.revoked_reason,
    })
}

async fn logout(State(s): State<ApiState>, Caller(p): Caller) -> Result<Response, ApiError> {
    let PrincipalKind::User { session_id, .. } = &p.kind else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "an API key has no session to end; an admin revokes the key",
        ));
    };
    svc::revoke_session(&s.db, session_id, crate::wallclock::now(), "logout").await?;
    Ok(noted(
        StatusCode::NO_CONTENT.into_response(),
        AuditNote {
            target: Some(session_id.clone()),
            summary: json!({ "after": "revoked: logout" }),
            ..AuditNote::default()
        },
    ))
}

async fn me(Caller(p): Caller) -> Json<Value> {
    let (kind, id, session) = match &p.kind {
        PrincipalKind::User { name, session_id } => {
            ("user", name.clone(), Some(session_id.clone()))
        }
        PrincipalKind::ApiKey { id } => ("api_key", id.clone(), None),
    };
    Json(json!({
        "kind": kind, "id": id, "role": p.role, "sites": p.scope, "session_id": session,
        "actor": p.actor,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionList {
    /// Another user's sessions (admin only).
    pub user: Option<String>,
    /// Ended sessions too.
    pub all: Option<bool>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn sessions(
    State(s): State<ApiState>,
    Caller(p): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<SessionList>,
) -> Result<Response, ApiError> {
    let grant = p.grant();
    let admin = p.role.may(Permission::Admin);
    let own = match &p.kind {
        PrincipalKind::User { name, .. } => Some(name.clone()),
        PrincipalKind::ApiKey { .. } => None,
    };
    let names: Option<Vec<String>> = match (&q.user, admin) {
        // a user the admin may not manage does not exist for it
        (Some(u), true) => Some(vec![admin_svc::get_user(&s.db, &grant, u).await?.user_id]),
        (None, true) if grant == Grant::root() => None,
        (None, true) => Some(
            admin_svc::list_users(&s.db, &grant, "", MAX_SCOPED_USERS)
                .await?
                .into_iter()
                .map(|u| u.user_id)
                .collect(),
        ),
        (Some(u), false) if Some(u) != own.as_ref() => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only an admin sees another user's sessions",
            ));
        }
        // an API key has no sessions of its own
        (_, false) => Some(own.into_iter().collect()),
    };
    let of = names.as_deref().map_or(SessionsOf::All, SessionsOf::Users);
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let before = crate::domain::UnixMs::from_ms(page::after_i64(&pg)?.unwrap_or(i64::MAX));
    let now = crate::wallclock::now();
    let rows =
        s.db.users()
            .sessions(
                of,
                (!q.all.unwrap_or(false)).then_some(now),
                before,
                limit + 1,
            )
            .await?;
    let items = rows.iter().map(session_json).collect();
    Ok(page::respond(&uri, items, limit, |v| {
        v["created_ms"].to_string()
    }))
}

async fn revoke(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = s.db.users().session(&id).await?;
    let mine = match (&row, &p.kind) {
        (Some(r), PrincipalKind::User { name, .. }) => &r.user_id == name,
        _ => false,
    };
    // someone else's session exists only for an admin who may manage them
    let managed = match &row {
        Some(r) if !mine && p.role.may(Permission::Admin) => {
            admin_svc::get_user(&s.db, &p.grant(), &r.user_id)
                .await
                .is_ok()
        }
        _ => false,
    };
    let Some(row) = row.filter(|_| mine || managed) else {
        return Err(ApiError::not_found(format!("no session {id:?}")));
    };
    if !svc::revoke_session(&s.db, &id, crate::wallclock::now(), "revoked").await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("session {id} has ended already"),
        ));
    }
    let after = s.db.users().session(&id).await?.unwrap_or(row.clone());
    Ok(noted(
        Json(session_json(&after)).into_response(),
        AuditNote {
            target: Some(id),
            summary: json!({ "user": row.user_id, "before": "live", "after": "revoked" }),
            ..AuditNote::default()
        },
    ))
}
