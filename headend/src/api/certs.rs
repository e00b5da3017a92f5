//! REST for the agent certificate lifecycle (the `admin` permission to
//! change, `read` to look):
//!
//! * `POST /api/v1/sites/{site}/enrollment-tokens`: a one-time token
//!   (shown once) and the command the installer runs.
//! * `GET /api/v1/sites/{site}/certificates`: the certificates issued
//!   for a site (newest first, paged) with their revocations;
//!   `GET /api/v1/sites/{site}/certificate-status`: what its agent last
//!   reported (renewal time, failures) and the site's revocation.
//! * `POST /api/v1/certificates/{serial}/revoke` and
//!   `POST /api/v1/sites/{site}/revoke`: an open session with a revoked
//!   certificate is closed at once, and the certificate is refused from
//!   then on, also after a restart.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{AuditNote, Caller, noted};
use super::page::{self, PageParams};
use super::{ApiError, ApiState, Query, parse_body, ts};

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "POST",
            "/api/v1/sites/{site}/enrollment-tokens",
            Perm(P::Admin),
            "enrollment_tokens.create",
            post(new_token),
            with_body(
                d(
                    "A one-time enrollment token for the site (shown once) and the installer's command",
                    201,
                    Some(reference("EnrollmentToken")),
                ),
                "TokenRequest",
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/certificates",
            Perm(P::Read),
            "certificates.list",
            get(list_certs),
            paged(
                "The agent certificates issued for a site, newest first, with their revocations",
                "Certificate",
                params_of::<PageParams>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/sites/{site}/certificate-status",
            Perm(P::Read),
            "certificates.status",
            get(cert_status),
            d(
                "What the site's agent last reported of its certificate (renewal time, failures) and the site's revocation",
                200,
                Some(reference("CertificateStatus")),
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/sites/{site}/revoke",
            Perm(P::Admin),
            "sites.revoke",
            post(revoke_site),
            with_body(
                d(
                    "Revoke every certificate of the site issued until now (its sessions close at once)",
                    200,
                    Some(reference("SiteRevoked")),
                ),
                "Revocation",
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/certificates/{serial}/revoke",
            Perm(P::Admin),
            "certificates.revoke",
            post(revoke_cert),
            with_body(
                d(
                    "Revoke one agent certificate by serial (its session closes at once)",
                    200,
                    Some(reference("CertificateRevoked")),
                ),
                "Revocation",
            ),
        ),
    ]
}

/// `POST /api/v1/sites/{site}/enrollment-tokens`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Minutes until the token expires (1 to 4320, default 60).
    #[serde(default)]
    pub expires_minutes: Option<i64>,
}

/// A revocation's body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Why (1 to 500 characters), kept with the revocation.
    pub reason: String,
}

fn note(target: String, summary: Value) -> AuditNote {
    AuditNote {
        target: Some(target),
        summary,
        ..AuditNote::default()
    }
}

async fn new_token(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let site = super::new_site_param(&site)?;
    let req: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        parse_body(&body)?
    };
    let t = s
        .issuing
        .new_token(&s.db, &p.actor, &site, req.expires_minutes)
        .await?;
    tracing::info!(%site, token = %t.token_id, "enrollment token created");
    let summary = json!({ "after": { "token_id": t.token_id, "site": site, "expires_at": ts(t.expires_ms) } });
    let v = json!({
        "token_id": t.token_id, "site": t.site_id, "token": t.token,
        "expires_at": ts(t.expires_ms), "ca_fingerprint": t.ca_fingerprint,
        "enroll_address": s.issuing.enroll_address, "command": t.command,
    });
    Ok(noted(
        (StatusCode::CREATED, Json(v)).into_response(),
        note(format!("site {site}"), summary),
    ))
}

async fn list_certs(
    State(s): State<ApiState>,
    OriginalUri(uri): OriginalUri,
    Path(site): Path<String>,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    let site = super::site_param(&site)?;
    let limit = p.limit()?;
    let before = crate::domain::UnixMs::from_ms(page::after_i64(&p)?.unwrap_or(i64::MAX));
    let certs = s.db.certs().of_site(&site, before, limit + 1).await?;
    let status = s.db.certs().status(&site).await?;
    let items: Vec<Value> = certs
        .iter()
        .map(|c| {
            json!({
                "serial": c.serial, "via": c.via, "issued_at": ts(c.issued_ms),
                "issued_ms": c.issued_ms, "not_after": ts(c.not_after_ms),
                "revoked_at": c.revoked_ms.map(ts), "revoked_by": c.revoked_by, "reason": c.reason,
                "in_use": status.as_ref().is_some_and(|st| st.serial == c.serial),
            })
        })
        .collect();
    Ok(page::respond(&uri, items, limit, |v| {
        v["issued_ms"].to_string()
    }))
}

/// `GET /api/v1/sites/{site}/certificate-status`: what the site's agent
/// last reported of its certificate (renewal time, failures) and the
/// site's revocation.
async fn cert_status(
    State(s): State<ApiState>,
    Path(site): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let site = super::site_param(&site)?;
    let status = s.db.certs().status(&site).await?;
    let revoked = s.db.certs().site_revocation(&site).await?;
    Ok(Json(json!({
        "site": site,
        "agent": status.map(|st| json!({
            "serial": st.serial, "not_after": ts(st.not_after_ms), "renew_at": ts(st.renew_at_ms),
            "failures": st.failures, "last_error": st.last_error, "reported_at": ts(st.reported_ms),
        })),
        "site_revoked": revoked.map(|r| json!({
            "at": ts(r.revoked_ms), "by": r.revoked_by, "reason": r.reason,
        })),
    })))
}

async fn revoke_cert(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(serial): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: Revocation = parse_body(&body)?;
    let r = s
        .issuing
        .revoke_visible(&s.ctx(&p), &p.actor, (&serial, None), &req.reason)
        .await?;
    tracing::warn!(serial = %r.serial, site = ?r.site_id, reason = %req.reason, "agent certificate revoked");
    let v = json!({ "serial": r.serial, "site": r.site_id, "already_revoked": r.already, "renewals_revoked": r.renewals });
    let mut n = note(
        format!("certificate {}", r.serial),
        json!({ "before": if r.already { "revoked" } else { "valid" }, "after": "revoked", "reason": req.reason, "renewals_revoked": r.renewals }),
    );
    n.site = r.site_id.clone();
    Ok(noted(Json(v.clone()).into_response(), n))
}

async fn revoke_site(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(site): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let site = super::new_site_param(&site)?;
    let req: Revocation = parse_body(&body)?;
    let at = s
        .issuing
        .revoke_site(&s.db, &p.actor, &site, &req.reason)
        .await?;
    tracing::warn!(%site, reason = %req.reason, "every certificate of the site revoked");
    let v = json!({ "site": site, "revoked_at": ts(at) });
    Ok(noted(
        Json(v).into_response(),
        note(
            format!("site {site}"),
            json!({ "after": "every certificate issued before now revoked", "reason": req.reason }),
        ),
    ))
}
