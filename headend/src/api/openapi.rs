//! The API's OpenAPI 3.1 document, generated from the code and served at
//! `GET /api/openapi.json`: its paths are the access table
//! ([`super::route`]: one declaration per route, so a route is documented exactly when it is
//! routed and gated), each with what it needs (security, and the
//! permission in its description), its parameters and request bodies from
//! the Rust types (utoipa `ToSchema`/`IntoParams`), its success answer,
//! and the one error shape for everything else. An independent client
//! (schemathesis) checks real answers against it in the test suite.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::access::Need;
use super::route::{reference, schema_of};

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![Route::new(
        "GET",
        "/api/openapi.json",
        Public,
        "openapi",
        get(document),
        d("This document", 200, Some(json!({"type": "object"}))),
    )]
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
    let mut v = json!({
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
        "CommandRequest": one_of_kinds(
            "`POST /api/v1/commands`: what to do is the `kind`, and each kind takes its own fields.",
            &[("setpoint", "SetpointRequest"), ("eta", "EtaRequest")],
        ),
        "SetpointRequest": of_kind("setpoint", schema_of::<crate::services::commands::SetpointRequest>()),
        "EtaRequest": of_kind("eta", schema_of::<crate::services::commands::EtaRequest>()),
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
                                   "holidays": {"type": "array", "items": {"type": "string", "format": "date"}},
                                   "first_seen": ns(), "last_seen": ns()}),
                            &["site", "name", "time_zone", "stale_after_h"]),
        "Tank": obj(json!({"site": s(), "tank": s(), "name": s(), "product": s(), "capacity_l": n(),
                           "low_l": n(), "critical_l": n(), "floor_l": n(), "water_limit_mm": nullable("number"),
                           "volume_l": nullable("number"), "fill_pct": nullable("number"), "water_mm": nullable("number"),
                           "observed_at": ns(), "source": {"enum": ["manual", "atg", "api", "csv", "projected", null]},
                           "reading_l": nullable("number"),
                           "confidence": nullable("number"), "freshness": {"enum": ["fresh", "stale", "never"]},
                           "age_s": nullable("integer"), "stale_after_h": n(),
                           "flags": {"type": "array", "items": s()}, "rate_lph": nullable("number"),
                           "rate_basis": {"enum": ["flat", "hour_of_day", "hour_of_week", "trend", null]},
                           "rate_confidence": nullable("number"), "hours_to_runout": nullable("number"),
                           "runout_at": ns(), "runout_p10_at": ns(), "runout_p90_at": ns(), "risk": {"enum": ["unknown", "low", "medium", "high", "critical"]},
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
                                 "acknowledged_at": ns(), "acknowledged_by": ns(), "snoozed": {"type": "boolean"},
                                 "snoozed_until": ns(), "snooze_reason": ns(),
                                 "events": {"type": "array"}}),
                          &["id", "site", "tank", "cause", "state", "detail", "opened_ms"]),
        "DeadLetter": obj(json!({"id": i(), "subject": {"enum": ["escalation", "alarm"], "description": "what `escalation` names: an escalation or an alarm episode"},
                                 "escalation": s(), "event": s(), "attempts": i(), "last_error": s(),
                                 "created_at": ns(), "given_up_at": ns(), "payload": {}}),
                          &["id", "escalation", "event", "attempts", "last_error"]),
        "SiteRequest": schema_of::<crate::services::inventory::SiteRequest>(),
        "TankRequest": schema_of::<crate::services::inventory::TankRequest>(),
        "ObservationsRequest": schema_of::<crate::services::observations::ObservationsRequest>(),
        "ObservationRequest": schema_of::<crate::services::observations::ObservationRequest>(),
        "CsvBody": schema_of::<super::inventory::CsvBody>(),
        "MoveRequest": schema_of::<crate::services::escalations::MoveRequest>(),
        "NoteRequest": schema_of::<crate::services::escalations::NoteRequest>(),
        "EscAckRequest": schema_of::<crate::services::escalations::EscAckRequest>(),
        "SnoozeRequest": schema_of::<crate::services::escalations::SnoozeRequest>(),
    });
    if let (Some(all), Value::Object(alarms)) = (v.as_object_mut(), alarm_schemas()) {
        all.extend(alarms);
    }
    v
}

/// The alarm feature's schemas (issue 32).
fn alarm_schemas() -> Value {
    let s = || json!({"type": "string"});
    let ns = || nullable("string");
    let i = || json!({"type": "integer"});
    let obj = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    json!({
        "Alarm": schema_of::<super::alarms::AlarmView>(),
        "AckRequest": schema_of::<crate::services::alarms::AckRequest>(),
        "ShelveRequest": schema_of::<crate::services::alarms::ShelveRequest>(),
        "AlarmNoteRequest": schema_of::<crate::services::alarms::AlarmNoteRequest>(),
        "RecipientsRequest": schema_of::<crate::services::alarms::RecipientsRequest>(),
        "SeveritiesRequest": schema_of::<crate::services::alarms::SeveritiesRequest>(),
        "SeverityRequest": schema_of::<crate::services::alarms::SeverityRequest>(),
        "AlarmSeverities": obj(json!({"site": s(), "severities": {"type": "array", "items": obj(json!({
                                       "type": {"enum": crate::domain::alarm::AlarmType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>()},
                                       "severity": {"enum": ["critical", "major", "minor", "warning"]},
                                       "default": {"type": "boolean"}}), &["type", "severity", "default"])}}),
                               &["site", "severities"]),
        "RecipientRequest": schema_of::<crate::services::alarms::RecipientRequest>(),
        "AlarmRecipients": obj(json!({"site": s(), "recipients": {"type": "array", "items": obj(json!({"address": s(),
                                       "min_severity": {"enum": ["critical", "major", "minor", "warning"]}}), &["address", "min_severity"])}}),
                               &["site", "recipients"]),
        "Mail": obj(json!({"id": i(), "alarm": s(), "site": s(), "to": s(),
                           "kind": {"enum": crate::domain::notify::MailKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()},
                           "subject": s(), "state": {"enum": crate::domain::notify::MailState::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()},
                           "attempts": i(), "last_error": s(), "created_at": ns(), "done_at": ns()}),
                    &["id", "alarm", "site", "to", "kind", "subject", "state", "attempts", "last_error"]),
    })
}

/// The document.
pub fn build() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in super::routes() {
        let (r, d) = (route.rule, route.doc);
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
        if let Some(media) = d.media {
            ok["content"] = json!({ media: {"schema": {"type": "string"}}});
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
        for (status, answer) in d.also {
            responses.insert(status.to_string(), answer);
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

/// A body whose `kind` picks one of `kinds` (kind, schema name), as
/// `oneOf` with its discriminator. (utoipa's own form for a tagged enum
/// puts `kind` beside a schema that forbids other properties: nothing
/// satisfies it, as schemathesis found.)
fn one_of_kinds(description: &str, kinds: &[(&str, &str)]) -> Value {
    let refs: Vec<Value> = kinds.iter().map(|(_, name)| reference(name)).collect();
    let mapping: Map<String, Value> = kinds
        .iter()
        .map(|(k, name)| (k.to_string(), json!(format!("#/components/schemas/{name}"))))
        .collect();
    json!({
        "description": description,
        "oneOf": refs,
        "discriminator": {"propertyName": "kind", "mapping": mapping},
    })
}

/// A kind's own schema with its `kind` (required, that value only).
fn of_kind(kind: &str, mut schema: Value) -> Value {
    schema["properties"]["kind"] = json!({"type": "string", "enum": [kind]});
    match schema["required"].as_array_mut() {
        Some(r) => r.insert(0, json!("kind")),
        None => schema["required"] = json!(["kind"]),
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_rule_is_documented_with_its_security_and_every_reference_resolves() {
        let d = build();
        for r in crate::api::rules::rules() {
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

    /// Whether `new` still says everything `old` said: objects keep every
    /// key (new keys may be added), an `enum` keeps every value (new ones
    /// may be added: a later feature's cause), a list keeps its length and
    /// each item says what it said, anything else is equal.
    fn still_says(new: &Value, old: &Value, at: &str) -> Result<(), String> {
        match (new, old) {
            (Value::Object(n), Value::Object(o)) => o.iter().try_for_each(|(k, ov)| {
                let nv = n.get(k).ok_or_else(|| format!("{at}/{k}: gone"))?;
                if k == "enum" {
                    let (na, oa) = (nv.as_array(), ov.as_array());
                    return match (na, oa) {
                        (Some(na), Some(oa)) if oa.iter().all(|v| na.contains(v)) => Ok(()),
                        _ => Err(format!("{at}/enum: {ov} is not within {nv}")),
                    };
                }
                still_says(nv, ov, &format!("{at}/{k}"))
            }),
            (Value::Array(n), Value::Array(o)) if n.len() == o.len() => n
                .iter()
                .zip(o)
                .enumerate()
                .try_for_each(|(i, (nv, ov))| still_says(nv, ov, &format!("{at}/{i}"))),
            _ if new == old => Ok(()),
            _ => Err(format!("{at}: {old} became {new}")),
        }
    }

    /// Issue 31 moved each route's documentation next to its handler; the
    /// document must say what it said before (`openapi-before-issue-31.json`,
    /// built on 15c7ee6): later features may only add (paths, schemas,
    /// properties, enum values: issue 32's alarms), and one schema was made
    /// exact: `CommandRequest` was one object whose fields were all
    /// optional but `kind`; it is now one object per kind, which together
    /// take the same fields and the same kinds.
    #[test]
    fn the_document_says_what_it_said_before_routes_were_declared_once() {
        let before: Value =
            serde_json::from_str(include_str!("openapi-before-issue-31.json")).unwrap();
        let mut now = build();
        // every path it had still says what it said; paths added since are
        // features built after the change (issue 32: alarms), named here
        let added_since = |p: &str| {
            p.starts_with("/api/v1/alarms")
                || p == "/api/v1/mails"
                || p == "/api/v1/sites/{site}/alarm-recipients"
                || p == "/api/v1/sites/{site}/alarm-severities"
                || p == "/api/v1/escalations/{id}/acknowledge"
                || p == "/api/v1/escalations/{id}/snooze"
        };
        for (path, ops) in before["paths"].as_object().unwrap() {
            if let Err(e) = still_says(&now["paths"][path], ops, path) {
                panic!("the path {path} changed: {e}");
            }
        }
        for path in now["paths"].as_object().unwrap().keys() {
            assert!(
                before["paths"].get(path).is_some() || added_since(path),
                "a path {path} that is neither the old document's nor a later feature's"
            );
        }
        let (old, new) = (
            &before["components"]["schemas"],
            &now["components"]["schemas"],
        );
        for (name, schema) in old.as_object().unwrap() {
            if name == "CommandRequest" {
                continue;
            }
            if let Err(e) = still_says(&new[name], schema, name) {
                panic!("schema {name} changed: {e}");
            }
        }
        // CommandRequest: the same kinds, and each old field in a kind's object
        let variants = new["CommandRequest"]["oneOf"].as_array().unwrap();
        let mut kinds = Vec::new();
        let mut fields = std::collections::BTreeSet::from(["kind".to_string()]);
        for v in variants {
            let target = v["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
            fields.extend(
                new[target]["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned(),
            );
            assert_eq!(new[target]["additionalProperties"], false, "{target}");
            assert_eq!(new[target]["required"][0], "kind", "{target}");
            kinds.push(new[target]["properties"]["kind"]["enum"][0].clone());
        }
        assert_eq!(
            new["CommandRequest"]["discriminator"]["propertyName"],
            "kind"
        );
        assert_eq!(kinds, [json!("setpoint"), json!("eta")]);
        let old_fields: std::collections::BTreeSet<String> = old["CommandRequest"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(fields, old_fields, "the command kinds' fields");
        // what may differ: schemas added (and the version)
        now["components"]["schemas"] = old.clone();
        now["info"]["version"] = before["info"]["version"].clone();
        now["paths"] = before["paths"].clone();
        assert_eq!(now, before);
    }
}
