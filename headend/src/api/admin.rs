//! REST for admins: users and API keys (the `admin` permission).
//!
//! * `GET|POST /api/v1/users`, `GET|PATCH /api/v1/users/{user}`
//!   (role, sites, disabled), `POST /api/v1/users/{user}/password`,
//!   `POST /api/v1/users/{user}/unlock` (lifts login locks).
//!
//! Nobody manages or grants beyond their own role and sites: a user or
//! key the caller does not cover does not exist for it (404), and a
//! grant wider than its own is refused (403) ([`crate::domain::Grant`]).
//! * `GET|POST /api/v1/api-keys`, `GET /api/v1/api-keys/{id}`,
//!   `POST /api/v1/api-keys/{id}/revoke`. The key itself is in the
//!   creation's answer only.

use super::Query;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{AuditNote, Caller, noted};
use super::page::{self, PageParams};
use super::{ApiError, ApiState, parse_body, ts};
use crate::services::admin::{self as svc, NewKey, NewUser, UserPatch};
use crate::store::api_keys::ApiKeyRow;
use crate::store::users::UserRow;

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "GET",
            "/api/v1/users",
            Perm(P::Admin),
            "users.list",
            get(list_users),
            paged("Users", "User", params_of::<PageParams>()),
        ),
        Route::new(
            "POST",
            "/api/v1/users",
            Perm(P::Admin),
            "users.create",
            post(add_user),
            with_body(d("Add a user", 201, Some(reference("User"))), "NewUser"),
        ),
        Route::new(
            "GET",
            "/api/v1/users/{user}",
            Perm(P::Admin),
            "users.get",
            get(get_user),
            d("A user", 200, Some(reference("User"))),
        ),
        Route::new(
            "PATCH",
            "/api/v1/users/{user}",
            Perm(P::Admin),
            "users.update",
            patch(patch_user),
            with_body(
                d(
                    "Change a user's role, sites or disabled (ends their sessions)",
                    200,
                    Some(reference("User")),
                ),
                "UserPatch",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/users/{user}/password",
            Perm(P::Admin),
            "users.reset_password",
            post(reset_password),
            with_body(
                d(
                    "Set a user's password (ends their sessions and lifts their login locks)",
                    204,
                    None,
                ),
                "NewPassword",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/users/{user}/unlock",
            Perm(P::Admin),
            "users.unlock",
            post(unlock),
            d(
                "Lift a user's login locks (every network, every replica; locks are per name and client network)",
                200,
                None,
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/api-keys",
            Perm(P::Admin),
            "api_keys.list",
            get(list_keys),
            paged(
                "API keys (never their secrets)",
                "ApiKey",
                params_of::<PageParams>(),
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/api-keys",
            Perm(P::Admin),
            "api_keys.create",
            post(add_key),
            with_body(
                d(
                    "Create an API key: the key is in this answer only",
                    201,
                    Some(reference("ApiKey")),
                ),
                "NewKey",
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/api-keys/{id}",
            Perm(P::Admin),
            "api_keys.get",
            get(get_key),
            d("An API key", 200, Some(reference("ApiKey"))),
        ),
        Route::new(
            "POST",
            "/api/v1/api-keys/{id}/revoke",
            Perm(P::Admin),
            "api_keys.revoke",
            post(revoke_key),
            d("Revoke an API key", 200, Some(reference("ApiKey"))),
        ),
    ]
}

pub fn user_json(u: &UserRow) -> Value {
    json!({
        "user": u.user_id, "role": u.role, "sites": u.scope,
        "disabled": u.disabled_ms.is_some(), "disabled_at": u.disabled_ms.map(ts),
        "created_at": ts(u.created_ms), "updated_at": ts(u.updated_ms),
    })
}

pub fn key_json(k: &ApiKeyRow) -> Value {
    json!({
        "key_id": k.key_id, "name": k.name, "role": k.role, "sites": k.scope,
        "created_by": k.created_by, "created_at": ts(k.created_ms), "created_ms": k.created_ms,
        "expires_at": k.expires_ms.map(ts), "last_used_at": k.last_used_ms.map(ts),
        "revoked_at": k.revoked_ms.map(ts),
    })
}

fn note(target: &str, summary: Value) -> AuditNote {
    AuditNote {
        target: Some(target.to_string()),
        summary,
        ..AuditNote::default()
    }
}

async fn list_users(
    State(s): State<ApiState>,
    Caller(c): Caller,
    OriginalUri(uri): OriginalUri,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let limit = p.limit()?;
    let after = p.after()?.unwrap_or_default();
    let rows = svc::list_users(&s.db, &c.grant(), &after, limit + 1).await?;
    let items = rows.iter().map(user_json).collect();
    Ok(page::respond(&uri, items, limit, |v| {
        v["user"].as_str().unwrap_or_default().to_string()
    }))
}

async fn add_user(
    State(s): State<ApiState>,
    Caller(c): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewUser = parse_body(&body)?;
    let u = svc::add_user(&s.db, &s.guard, &c.grant(), req).await?;
    tracing::info!(user = %u.user_id, role = %u.role, "user added");
    let v = user_json(&u);
    Ok(noted(
        (StatusCode::CREATED, Json(v.clone())).into_response(),
        note(&u.user_id, json!({ "after": v })),
    ))
}

async fn get_user(
    State(s): State<ApiState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(user_json(
        &svc::get_user(&s.db, &c.grant(), &id).await?,
    )))
}

async fn patch_user(
    State(s): State<ApiState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: UserPatch = parse_body(&body)?;
    let (after, before) = svc::update_user(&s.db, &c.grant(), &id, req).await?;
    let (a, b) = (user_json(&after), user_json(&before));
    Ok(noted(
        Json(a.clone()).into_response(),
        note(&id, json!({ "before": b, "after": a })),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// At least 12 characters.
    pub password: String,
}

async fn reset_password(
    State(s): State<ApiState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewPassword = parse_body(&body)?;
    svc::reset_password(&s.db, &s.guard, &c.grant(), &id, req.password).await?;
    tracing::info!(user = %id, "password reset; the user's sessions ended");
    Ok(noted(
        StatusCode::NO_CONTENT.into_response(),
        note(
            &id,
            json!({ "after": "password changed; sessions revoked" }),
        ),
    ))
}

async fn unlock(
    State(s): State<ApiState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (u, n) = svc::unlock(&s.db, &c.grant(), &id).await?;
    tracing::info!(user = %id, networks = n, "login locks lifted");
    let v = json!({ "user": u.user_id, "locks_lifted": n });
    Ok(noted(
        Json(v.clone()).into_response(),
        note(&id, json!({ "after": v })),
    ))
}

async fn list_keys(
    State(s): State<ApiState>,
    Caller(c): Caller,
    OriginalUri(uri): OriginalUri,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let limit = p.limit()?;
    let before = page::after_i64(&p)?.unwrap_or(i64::MAX);
    let rows = svc::list_keys(&s.db, &c.grant(), before, limit + 1).await?;
    let items = rows.iter().map(key_json).collect();
    Ok(page::respond(&uri, items, limit, |v| {
        v["created_ms"].to_string()
    }))
}

async fn add_key(
    State(s): State<ApiState>,
    Caller(p): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewKey = parse_body(&body)?;
    let (row, key) = svc::add_key(&s.db, &p.grant(), req, &p.actor).await?;
    tracing::info!(key = %row.key_id, role = %row.role, "API key created");
    let mut v = key_json(&row);
    let summary = json!({ "after": v.clone() });
    v["api_key"] = json!(key);
    Ok(noted(
        (StatusCode::CREATED, Json(v)).into_response(),
        note(&row.key_id, summary),
    ))
}

async fn get_key(
    State(s): State<ApiState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(key_json(&svc::get_key(&s.db, &c.grant(), &id).await?)))
}

async fn revoke_key(
    State(s): State<ApiState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let k = svc::revoke_key(&s.db, &c.grant(), &id).await?;
    tracing::info!(key = %id, "API key revoked");
    Ok(noted(
        Json(key_json(&k)).into_response(),
        note(&id, json!({ "before": "live", "after": "revoked" })),
    ))
}
