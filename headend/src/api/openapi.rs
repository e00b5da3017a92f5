//! The API's OpenAPI 3.1 document, generated from the code and served at
//! `GET /api/openapi.json`: its paths are the access table
//! ([`super::access::RULES`], so a route is documented exactly when it is
//! routed and gated), each with what it needs (security, and the
//! permission in its description), its parameters and request bodies from
//! the Rust types (utoipa `ToSchema`/`IntoParams`), its success answer,
//! and the one error shape for everything else. An independent client
//! (schemathesis) checks real answers against it in the test suite.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use utoipa::openapi::path::ParameterIn;
use utoipa::{IntoParams, PartialSchema};

use super::ApiState;
use super::access::{Need, RULES, Rule};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/openapi.json", get(document))
}

async fn document() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| build().to_string()).clone();
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn schema_of<T: PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or(Value::Null)
}

fn params_of<T: IntoParams>() -> Vec<Value> {
    T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect()
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

/// The success answers' schemas (components), as the handlers build them.
fn schemas() -> Value {
    let s = || json!({"type": "string"});
    let ns = || nullable("string");
    let n = || json!({"type": "number"});
    let i = || json!({"type": "integer"});
    let b = || json!({"type": "boolean"});
    let sites = || json!({"oneOf": [{"type": "string", "const": "*"}, {"type": "array", "items": {"type": "string"}}]});
    let obj = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    json!({
        "Error": obj(json!({"error": obj(json!({"code": s(), "message": s(), "field": ns()}), &["code", "message", "field"])}), &["error"]),
        "Site": obj(json!({"site_id": s(), "name": s(), "time_zone": s(), "agent_version": s(), "assets": i(), "first_seen": ns(), "last_seen": ns(),
                           "connected": b(),
                           "clock": {"type": ["object", "null"], "description": "The site PC's clock against the headend's at its last session: skew_ms (positive: ahead), skew (for people), corrected (more than 2 s off: the session's times were corrected), checked",
                                     "properties": {"skew_ms": i(), "skew": s(), "corrected": b(), "checked": ns()}},
                           "session": {"type": ["object", "null"], "description": "The site's open agent session (null: not connected): peer, since_ms, agent_version, acked_through, and link: the link as the agent measures it over its last 30 s (bytes per second each way, wire bytes per reading, readings logged and acknowledged per second, backlog, the age of its oldest entry and the time to drain it; null before the first report and for agents that do not report it)",
                                       "properties": {"peer": s(), "since_ms": i(), "agent_version": s(), "acked_through": i(),
                                                      "link": {"type": ["object", "null"], "properties": {
                                                          "reported_ms": i(), "up_bytes_per_s": nullable("number"), "down_bytes_per_s": nullable("number"),
                                                          "bytes_per_reading": nullable("number"), "live_per_s": nullable("number"), "acked_per_s": nullable("number"),
                                                          "backlog": i(), "backlog_age_s": nullable("number"), "drain_eta_s": nullable("number")}}}}}), &["site_id", "connected"]),
        "Asset": obj(json!({"asset_id": s(), "kind": s(), "name": s(), "product": s(), "capacity": n(),
                            "fields": {"type": "object"}}), &["asset_id", "kind", "fields"]),
        "Reading": obj(json!({"seq": i(), "field": s(), "value": nullable("number"), "unit": s(),
                              "quality": {"enum": ["good", "uncertain", "bad"]}, "source_ts": ns(), "source_ts_ms": i()}),
                       &["seq", "field", "value", "quality", "source_ts_ms"]),
        "Rollup": obj(json!({"field": s(), "unit": s(), "hour": ns(), "hour_ms": i(), "count": i(), "min": n(), "max": n(),
                             "mean": n(), "last": n()}), &["field", "hour_ms", "count"]),
        "Gap": obj(json!({"log_id": s(), "first_seq": i(), "last_seq": i(), "count": i(), "reason": s()}), &["log_id", "count"]),
        "Delivery": obj(json!({"phase": s(), "source": s(), "tank": s(), "start_volume_l": n()}), &["phase", "source", "tank"]),
        "Device": obj(json!({"device": s(), "kind": s(), "connected": b(), "errors": i()}), &["device", "connected"]),
        "Command": obj(json!({"command_id": s(), "kind": {"enum": ["setpoint", "eta", "split"]}, "site": s(),
                              "asset": ns(), "field": ns(), "value": nullable("number"), "state": s(), "reason": s(),
                              "issued_seq": i(), "created_by": s(), "origin": {"enum": ["headend", "site_opcua"]},
                              "created_at": ns(), "updated_at": ns()}),
                       &["command_id", "kind", "site", "state", "reason", "issued_seq", "created_by", "origin"]),
        "Load": obj(json!({"load_id": s(), "reference": s(), "carrier": s(), "site": s(), "product": s(),
                           "planned_volume_l": n(), "eta": ns(), "eta_ms": i(), "eta_source": s(), "status": s(),
                           "delivered_volume_l": nullable("number"), "events": {"type": "array"},
                           "etas": {"type": "array"}, "timing": {"enum": ["late", "missing", null]},
                           "reconciliation": {"type": ["object", "null"]}}),
                    &["load_id", "site", "eta_ms", "status", "events"]),
        "LoadPushed": obj(json!({"load": {"$ref": "#/components/schemas/Load"},
                                 "command": {"anyOf": [{"$ref": "#/components/schemas/Command"}, {"type": "null"}]},
                                 "eta_applied": nullable("boolean")}),
                          &["load", "command"]),
        "Tokens": obj(json!({"access_token": s(), "refresh_token": s(), "token_type": {"const": "Bearer"},
                             "expires_in": i(), "session_id": s(), "user": s(), "role": s()}),
                      &["access_token", "refresh_token", "token_type", "expires_in", "session_id"]),
        "Me": obj(json!({"kind": {"enum": ["user", "api_key"]}, "id": s(), "role": s(), "sites": sites(),
                         "session_id": ns(), "actor": s()}), &["kind", "id", "role", "sites", "actor"]),
        "Session": obj(json!({"session_id": s(), "user": s(), "client": s(), "created_at": ns(), "created_ms": i(),
                              "expires_at": ns(), "revoked_at": ns(), "revoked_reason": ns()}),
                       &["session_id", "user", "created_ms"]),
        "User": obj(json!({"user": s(), "role": s(), "sites": sites(), "disabled": b(), "created_at": ns()}),
                    &["user", "role", "sites", "disabled"]),
        "ApiKey": obj(json!({"key_id": s(), "name": s(), "role": s(), "sites": sites(), "created_by": s(),
                             "created_ms": i(), "expires_at": ns(), "last_used_at": ns(), "revoked_at": ns(),
                             "api_key": {"type": "string", "description": "only in the answer that created it"}}),
                      &["key_id", "name", "role", "sites", "created_ms"]),
        "AuditEntry": obj(json!({"seq": i(), "at": ns(), "at_ms": i(), "actor": s(), "role": s(), "action": s(),
                                 "target": s(), "outcome": {"enum": ["ok", "denied", "refused", "failed"]},
                                 "status": i(), "client": s(), "request_id": s(), "prev_hash": s(), "hash": s()}),
                          &["seq", "at_ms", "actor", "role", "action", "target", "outcome", "status", "client",
                            "request_id", "prev_hash", "hash"]),
        "CommandRequest": schema_of::<crate::services::commands::CommandRequest>(),
        "LoadRequest": schema_of::<crate::services::loads::LoadRequest>(),
        "LoadPatch": schema_of::<crate::services::loads::LoadPatch>(),
        "Login": schema_of::<super::auth::Login>(),
        "Refresh": schema_of::<super::auth::Refresh>(),
        "NewUser": schema_of::<crate::services::admin::NewUser>(),
        "UserPatch": schema_of::<crate::services::admin::UserPatch>(),
        "NewPassword": schema_of::<super::admin::NewPassword>(),
        "NewKey": schema_of::<crate::services::admin::NewKey>(),
        "TokenRequest": schema_of::<super::certs::TokenRequest>(),
        "Revocation": schema_of::<super::certs::Revocation>(),
        "EnrollmentToken": obj(json!({"token_id": s(), "site": s(), "token": s(), "expires_at": s(),
                                      "ca_fingerprint": s(), "enroll_address": s(), "command": s()}),
                               &["token_id", "site", "token", "expires_at", "ca_fingerprint", "command"]),
        "Certificate": obj(json!({"serial": s(), "via": {"enum": ["enrollment", "renewal"]}, "issued_at": ns(),
                                  "issued_ms": i(), "not_after": ns(), "revoked_at": ns(), "revoked_by": ns(),
                                  "reason": ns(), "in_use": b()}),
                           &["serial", "via", "issued_ms", "in_use"]),
        "CertificateStatus": obj(json!({"site": s(), "agent": {"type": ["object", "null"]},
                                        "site_revoked": {"type": ["object", "null"]}}),
                                 &["site", "agent", "site_revoked"]),
        "CertificateRevoked": obj(json!({"serial": s(), "site": ns(), "already_revoked": b(),
                                         "renewals_revoked": {"type": "array", "items": s()}}),
                                  &["serial", "site", "already_revoked", "renewals_revoked"]),
        "SiteRevoked": obj(json!({"site": s(), "revoked_at": ns()}), &["site", "revoked_at"]),
        "SiteSettings": obj(json!({"site": s(), "name": s(), "time_zone": s(), "stale_after_h": n(),
                                   "first_seen": ns(), "last_seen": ns()}),
                            &["site", "name", "time_zone", "stale_after_h"]),
        "Tank": obj(json!({"site": s(), "tank": s(), "name": s(), "product": s(), "capacity_l": n(),
                           "low_l": n(), "critical_l": n(), "floor_l": n(), "water_limit_mm": nullable("number"),
                           "volume_l": nullable("number"), "fill_pct": nullable("number"), "water_mm": nullable("number"),
                           "observed_at": ns(), "source": {"enum": ["manual", "atg", "api", "csv", null]},
                           "confidence": nullable("number"), "freshness": {"enum": ["fresh", "stale", "never"]},
                           "age_s": nullable("integer"), "stale_after_h": n(),
                           "flags": {"type": "array", "items": s()}, "rate_lph": nullable("number"),
                           "rate_basis": {"enum": ["flat", "hour_of_day", "hour_of_week", null]},
                           "rate_confidence": nullable("number"), "hours_to_runout": nullable("number"),
                           "runout_at": ns(), "risk": {"enum": ["unknown", "low", "medium", "high", "critical"]},
                           "next_load": ns(), "next_eta": ns(), "margin_h": nullable("number"),
                           "evaluated_at": ns(), "position": i()}),
                    &["site", "tank", "capacity_l", "freshness", "flags", "risk"]),
        "ImportReport": obj(json!({"rows": i(), "added": i(), "updated": i(), "unchanged": i(), "rejected": i(),
                                   "problems": {"type": "array", "items": obj(json!({"row": i(), "column": s(), "problem": s()}),
                                                                               &["row", "column", "problem"])}}),
                            &["rows", "added", "unchanged", "rejected", "problems"]),
        "Escalation": obj(json!({"id": s(), "site": s(), "tank": s(),
                                 "cause": {"enum": crate::domain::escalation::Cause::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>()},
                                 "state": {"enum": ["created", "assigned", "investigating", "resolved"]},
                                 "subject": s(), "detail": s(), "assignee": ns(), "opened_at": ns(), "opened_ms": i(),
                                 "updated_at": ns(), "resolved_at": ns(), "context": {},
                                 "events": {"type": "array"}}),
                          &["id", "site", "tank", "cause", "state", "detail", "opened_ms"]),
        "DeadLetter": obj(json!({"id": i(), "escalation": s(), "event": s(), "attempts": i(), "last_error": s(),
                                 "created_at": ns(), "given_up_at": ns(), "payload": {}}),
                          &["id", "escalation", "event", "attempts", "last_error"]),
        "SiteRequest": schema_of::<crate::services::inventory::SiteRequest>(),
        "TankRequest": schema_of::<crate::services::inventory::TankRequest>(),
        "ObservationsRequest": schema_of::<crate::services::inventory::ObservationsRequest>(),
        "ObservationRequest": schema_of::<crate::services::inventory::ObservationRequest>(),
        "CsvBody": schema_of::<super::inventory::CsvBody>(),
        "MoveRequest": schema_of::<crate::services::escalations::MoveRequest>(),
        "NoteRequest": schema_of::<crate::services::escalations::NoteRequest>(),
    })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn list_of(name: &str) -> Value {
    json!({ "type": "array", "items": reference(name) })
}

/// What one route documents beyond its rule.
struct Doc {
    summary: &'static str,
    body: Option<&'static str>,
    query: Vec<Value>,
    ok: u16,
    answer: Option<Value>,
    /// Plain text instead of JSON.
    text: bool,
    paged: bool,
}

fn doc(r: &Rule) -> Doc {
    use super::{audit, auth, commands, loads, page::PageParams, telemetry};
    let d = |summary, ok, answer: Option<Value>| Doc {
        summary,
        body: None,
        query: Vec::new(),
        ok,
        answer,
        text: false,
        paged: false,
    };
    let paged = |summary, item: &str, query: Vec<Value>| Doc {
        query,
        paged: true,
        ..d(summary, 200, Some(list_of(item)))
    };
    let with_body = |mut x: Doc, body| {
        x.body = Some(body);
        x
    };
    match (r.method, r.path) {
        ("GET", "/health") => Doc {
            text: true,
            ..d("The process is alive", 200, None)
        },
        ("GET", "/ready") => Doc {
            text: true,
            ..d("The database answers (else 503)", 200, None)
        },
        ("GET", "/api/openapi.json") => d("This document", 200, Some(json!({"type": "object"}))),
        ("GET", "/metrics") => Doc {
            text: true,
            ..d("Prometheus metrics (OpenMetrics text)", 200, None)
        },
        ("POST", "/api/v1/auth/login") => with_body(
            d(
                "Log in: an access token and a refresh token",
                200,
                Some(reference("Tokens")),
            ),
            "Login",
        ),
        ("POST", "/api/v1/auth/refresh") => with_body(
            d(
                "New tokens for a refresh token (single use; reuse revokes the session)",
                200,
                Some(reference("Tokens")),
            ),
            "Refresh",
        ),
        ("POST", "/api/v1/auth/logout") => d("End the caller's session", 204, None),
        ("GET", "/api/v1/auth/me") => d("Who the credential is", 200, Some(reference("Me"))),
        ("GET", "/api/v1/auth/sessions") => paged(
            "Live sessions: the caller's, or (admin) anyone's",
            "Session",
            params_of::<auth::SessionList>(),
        ),
        ("POST", "/api/v1/auth/sessions/{id}/revoke") => d(
            "Revoke a session: one's own, or (admin) anyone's",
            200,
            Some(reference("Session")),
        ),
        ("GET", "/api/v1/sites") => paged(
            "Sites in the caller's scope",
            "Site",
            params_of::<PageParams>(),
        ),
        ("GET", "/api/v1/sites/{site}/assets") => paged(
            "A site's assets with their latest values",
            "Asset",
            params_of::<PageParams>(),
        ),
        ("GET", "/api/v1/sites/{site}/assets/{asset}/readings") => Doc {
            paged: false,
            ..paged(
                "History of an asset's readings",
                "Reading",
                params_of::<telemetry::HistoryParams>(),
            )
        },
        ("GET", "/api/v1/sites/{site}/assets/{asset}/rollups") => Doc {
            paged: false,
            ..paged(
                "Hourly rollups of an asset",
                "Rollup",
                params_of::<telemetry::HistoryParams>(),
            )
        },
        ("GET", "/api/v1/sites/{site}/gaps") => paged(
            "Data the site had to drop",
            "Gap",
            params_of::<PageParams>(),
        ),
        ("GET", "/api/v1/sites/{site}/deliveries") => paged(
            "Deliveries the site reported",
            "Delivery",
            params_of::<PageParams>(),
        ),
        ("GET", "/api/v1/sites/{site}/devices") => paged(
            "The site's devices and their health",
            "Device",
            params_of::<PageParams>(),
        ),
        ("GET", "/api/v1/commands") => paged(
            "Commands, newest first",
            "Command",
            params_of::<commands::ListParams>(),
        ),
        ("POST", "/api/v1/commands") => with_body(
            d(
                "Submit a setpoint or an ETA push (201; 200 for an idempotent repeat)",
                201,
                Some(reference("Command")),
            ),
            "CommandRequest",
        ),
        ("GET", "/api/v1/commands/{id}") => d(
            "A command with its timeline",
            200,
            Some(reference("Command")),
        ),
        ("POST", "/api/v1/commands/{id}/cancel") => {
            d("Cancel a command", 202, Some(reference("Command")))
        }
        ("GET", "/api/v1/loads") => paged("Loads by ETA", "Load", params_of::<loads::LoadList>()),
        ("POST", "/api/v1/loads") => with_body(
            d(
                "Plan a delivery (pushes its ETA to the site)",
                201,
                Some(reference("LoadPushed")),
            ),
            "LoadRequest",
        ),
        ("GET", "/api/v1/loads/{id}") => d("A load with its events", 200, Some(reference("Load"))),
        ("PATCH", "/api/v1/loads/{id}") => with_body(
            d(
                "Change a load's ETA, volume or status",
                200,
                Some(reference("LoadPushed")),
            ),
            "LoadPatch",
        ),
        ("GET", "/api/v1/audit") => paged(
            "The audit trail, newest first (read only)",
            "AuditEntry",
            params_of::<audit::AuditParams>(),
        ),
        ("GET", "/api/v1/users") => paged("Users", "User", params_of::<PageParams>()),
        ("POST", "/api/v1/users") => {
            with_body(d("Add a user", 201, Some(reference("User"))), "NewUser")
        }
        ("GET", "/api/v1/users/{user}") => d("A user", 200, Some(reference("User"))),
        ("PATCH", "/api/v1/users/{user}") => with_body(
            d(
                "Change a user's role, sites or disabled (ends their sessions)",
                200,
                Some(reference("User")),
            ),
            "UserPatch",
        ),
        ("POST", "/api/v1/users/{user}/password") => with_body(
            d(
                "Set a user's password (ends their sessions and lifts their login locks)",
                204,
                None,
            ),
            "NewPassword",
        ),
        ("POST", "/api/v1/users/{user}/unlock") => d(
            "Lift a user's login locks (every network, every replica; locks are per name and client network)",
            200,
            None,
        ),
        ("GET", "/api/v1/api-keys") => paged(
            "API keys (never their secrets)",
            "ApiKey",
            params_of::<PageParams>(),
        ),
        ("POST", "/api/v1/api-keys") => with_body(
            d(
                "Create an API key: the key is in this answer only",
                201,
                Some(reference("ApiKey")),
            ),
            "NewKey",
        ),
        ("GET", "/api/v1/api-keys/{id}") => d("An API key", 200, Some(reference("ApiKey"))),
        ("POST", "/api/v1/api-keys/{id}/revoke") => {
            d("Revoke an API key", 200, Some(reference("ApiKey")))
        }
        ("POST", "/api/v1/sites/{site}/enrollment-tokens") => with_body(
            d(
                "A one-time enrollment token for the site (shown once) and the installer's command",
                201,
                Some(reference("EnrollmentToken")),
            ),
            "TokenRequest",
        ),
        ("GET", "/api/v1/sites/{site}/certificates") => paged(
            "The agent certificates issued for a site, newest first, with their revocations",
            "Certificate",
            params_of::<PageParams>(),
        ),
        ("GET", "/api/v1/sites/{site}/certificate-status") => d(
            "What the site's agent last reported of its certificate (renewal time, failures) and the site's revocation",
            200,
            Some(reference("CertificateStatus")),
        ),
        ("POST", "/api/v1/sites/{site}/revoke") => with_body(
            d(
                "Revoke every certificate of the site issued until now (its sessions close at once)",
                200,
                Some(reference("SiteRevoked")),
            ),
            "Revocation",
        ),
        ("POST", "/api/v1/certificates/{serial}/revoke") => with_body(
            d(
                "Revoke one agent certificate by serial (its session closes at once)",
                200,
                Some(reference("CertificateRevoked")),
            ),
            "Revocation",
        ),
        ("POST", "/api/v1/sites") => with_body(
            d(
                "Create a site before its agent's first hello (unscoped credentials)",
                201,
                Some(reference("SiteSettings")),
            ),
            "SiteRequest",
        ),
        ("GET", "/api/v1/sites/{site}") => {
            d("A site's settings", 200, Some(reference("SiteSettings")))
        }
        ("PATCH", "/api/v1/sites/{site}") => with_body(
            d(
                "Change a site's name, time zone or staleness threshold",
                200,
                Some(reference("SiteSettings")),
            ),
            "SiteRequest",
        ),
        ("GET", "/api/v1/tanks") => paged(
            "Tanks with their volume, freshness and age, flags, source, rate, runout and risk",
            "Tank",
            params_of::<super::inventory::TankList>(),
        ),
        ("PUT", "/api/v1/sites/{site}/tanks/{tank}") => with_body(
            d(
                "Create (201) or replace (200) a tank's settings",
                200,
                Some(reference("Tank")),
            ),
            "TankRequest",
        ),
        ("GET", "/api/v1/sites/{site}/tanks/{tank}") => {
            d("A tank with its state", 200, Some(reference("Tank")))
        }
        ("DELETE", "/api/v1/sites/{site}/tanks/{tank}") => d(
            "Remove a tank, its state and observations (204 also when there was none)",
            204,
            None,
        ),
        ("POST", "/api/v1/inventory/observations") => with_body(
            d(
                "Push one observation or a batch; a per-item report (repeats are no-ops)",
                200,
                Some(reference("ImportReport")),
            ),
            "ObservationsRequest",
        ),
        ("POST", "/api/v1/sites/{site}/inventory/import") => with_body(
            d(
                "Import observations as CSV (text/csv, or {\"csv\": ...}); good rows stored in one transaction, bad ones reported by row and column; a repeat is a no-op",
                200,
                Some(reference("ImportReport")),
            ),
            "CsvBody",
        ),
        ("POST", "/api/v1/sites/{site}/loads/import") => with_body(
            d(
                "Import loads as CSV (text/csv, or {\"csv\": ...}): new references planned, known ones updated under the ETA source ranking, all in one transaction; bad rows reported by row and column; a repeat is a no-op",
                200,
                Some(reference("ImportReport")),
            ),
            "CsvBody",
        ),
        ("GET", "/api/v1/risk") => paged(
            "Tanks by soonest runout, with the next delivery's ETA and the margin",
            "Tank",
            params_of::<super::inventory::RiskList>(),
        ),
        ("GET", "/api/v1/escalations") => paged(
            "Escalations, newest first",
            "Escalation",
            params_of::<super::escalations::EscList>(),
        ),
        ("GET", "/api/v1/escalations/{id}") => d(
            "An escalation with its timeline and decision context",
            200,
            Some(reference("Escalation")),
        ),
        ("POST", "/api/v1/escalations/{id}/move") => with_body(
            d(
                "Move an escalation: assigned, investigating or resolved",
                200,
                Some(reference("Escalation")),
            ),
            "MoveRequest",
        ),
        ("POST", "/api/v1/escalations/{id}/notes") => with_body(
            d(
                "Add a note to an escalation's timeline",
                200,
                Some(reference("Escalation")),
            ),
            "NoteRequest",
        ),
        ("GET", "/api/v1/webhooks/dead") => Doc {
            query: params_of::<PageParams>(),
            ..d(
                "Webhook notifications given up after their last attempt",
                200,
                Some(list_of("DeadLetter")),
            )
        },
        _ => d("(undocumented)", 200, None),
    }
}

/// The document.
pub fn build() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in RULES {
        let d = doc(r);
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}))
            .collect();
        params.extend(d.query);
        super::openapi_params::annotate(r.path, &mut params);
        let need = match r.need {
            Need::Public => "No credential.".to_string(),
            Need::Signed => "Any valid credential.".to_string(),
            Need::Perm(p) => format!(
                "Needs the `{p}` permission (roles: {}).",
                crate::domain::Role::ALL
                    .iter()
                    .filter(|role| role.may(p))
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut ok = json!({ "description": d.summary });
        if r.path == "/metrics" {
            ok["content"] = json!({"application/openmetrics-text; version=1.0.0; charset=utf-8": {"schema": {"type": "string"}}});
        } else if d.text {
            ok["content"] = json!({"text/plain; charset=utf-8": {"schema": {"type": "string"}}});
        } else if let Some(a) = d.answer {
            ok["content"] = json!({"application/json": {"schema": a}});
        }
        if d.paged {
            ok["headers"] = json!({
                "Link": {"description": "rel=\"next\": the next page", "schema": {"type": "string"}},
                "X-Next-Cursor": {"description": "the next page's cursor", "schema": {"type": "string"}},
            });
        }
        let mut responses = Map::new();
        responses.insert(d.ok.to_string(), ok);
        if r.path == "/api/v1/commands" && r.method == "POST" {
            responses.insert(
                "200".into(),
                json!({"description": "An idempotent repeat: the first command",
                "content": {"application/json": {"schema": reference("Command")}}}),
            );
        }
        if r.path == "/ready" {
            responses.insert(
                "503".into(),
                json!({"description": "The database does not answer",
                "content": {"text/plain; charset=utf-8": {"schema": {"type": "string"}}}}),
            );
        }
        responses.insert(
            "default".into(),
            json!({"description": "Any refusal or failure: 400 invalid, 401 unauthenticated, 403 forbidden, 404 not found (or outside the caller's scope), 405, 409 conflict, 413, 415, 421, 422, 429 (with Retry-After), 500, 503",
                   "content": {"application/json": {"schema": reference("Error")}}}),
        );
        let mut op = json!({
            "operationId": r.action,
            "summary": d.summary,
            "description": format!("{need} Audited as `{}`.", r.action),
            "tags": [r.action.split('.').next().unwrap_or("api")],
            "parameters": params,
            "responses": responses,
            "security": if r.need == Need::Public { json!([]) } else { json!([{"bearer": []}]) },
        });
        if let Some(b) = d.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": reference(b)}}});
        }
        let item = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        item[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        // relative: the API is described by the headend that serves it
        "servers": [{"url": "/", "description": "this headend"}],
        "info": {
            "title": "tankwatch headend",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The operator API. Authenticate with `Authorization: Bearer` and an access token (POST /api/v1/auth/login) or an API key. Lists page with `limit` and `cursor` (the next page is in the Link and X-Next-Cursor headers). Every answer carries X-Request-Id.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "an access token (twa_…) or an API key (twk_…)"}},
            "schemas": schemas(),
        },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_rule_is_documented_with_its_security_and_every_reference_resolves() {
        let d = build();
        for r in RULES {
            let op = &d["paths"][r.path][r.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {}", r.method, r.path);
            assert_ne!(op["summary"], "(undocumented)", "{} {}", r.method, r.path);
            assert_eq!(
                op["security"].as_array().map(Vec::is_empty),
                Some(r.need == Need::Public)
            );
        }
        let text = d.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                d["components"]["schemas"][name].is_object(),
                "{name} is referenced but missing"
            );
        }
        assert_eq!(d["openapi"], "3.1.0");
        assert!(d["components"]["schemas"]["LoadRequest"]["properties"]["site"].is_object());
    }
}
