//! REST for commands.
//!
//! * `POST /api/v1/commands`: a setpoint (`kind: setpoint`, target `asset`,
//!   or `site` alone for a site-level target split across its assets) or
//!   an ETA push (`kind: eta`, `load_id`). Idempotent with
//!   `idempotency_key` (body) or the `Idempotency-Key` header: a repeat
//!   returns the first command (200), a key reused for another request is
//!   refused (422).
//! * `GET /api/v1/commands/{id}`: the command with its timeline.
//! * `GET /api/v1/commands?site=&state=&limit=&cursor=`: newest first (paged).
//! * `POST /api/v1/commands/{id}/cancel`

use super::Query;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{AuditNote, noted};
use super::page::{self, PageParams};
use super::{ApiError, ApiState, Caller, parse_kinded, ts};
use crate::domain::CommandKind;
use crate::services::commands::{self as svc, CommandRequest, CommandView, Outcome};
use crate::store::commands::CommandRow;

/// This feature's routes, each declared once: its handler, what it
/// needs, its audit action and its OpenAPI operation.
pub fn routes() -> Vec<super::route::Route> {
    use super::route::*;
    vec![
        Route::new(
            "POST",
            "/api/v1/commands",
            Perm(P::Command),
            "commands.create",
            post(post_command),
            Doc {
                also: vec![(
                    200,
                    json!({"description": "An idempotent repeat: the first command",
                        "content": {"application/json": {"schema": reference("Command")}}}),
                )],
                ..with_body(
                    d(
                        "Submit a setpoint or an ETA push (201; 200 for an idempotent repeat)",
                        201,
                        Some(reference("Command")),
                    ),
                    "CommandRequest",
                )
            },
        ),
        Route::new(
            "GET",
            "/api/v1/commands",
            Perm(P::Read),
            "commands.list",
            get(list_commands),
            paged(
                "Commands, newest first",
                "Command",
                params_of::<commands::ListParams>(),
            ),
        ),
        Route::new(
            "GET",
            "/api/v1/commands/{id}",
            Perm(P::Read),
            "commands.get",
            get(get_command),
            d(
                "A command with its timeline",
                200,
                Some(reference("Command")),
            ),
        ),
        Route::new(
            "POST",
            "/api/v1/commands/{id}/cancel",
            Perm(P::Command),
            "commands.cancel",
            post(cancel_command),
            d("Cancel a command", 202, Some(reference("Command"))),
        ),
    ]
}

async fn post_command(
    State(s): State<ApiState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CommandRequest = parse_kinded(&body)?;
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = svc::idempotency_key(header_key, req.idempotency_key())?;
    let (code, v, repeated) = match svc::submit(&s.ctx(&p), req, key, p.actor.clone()).await? {
        Outcome::Created(v) => (StatusCode::CREATED, v, false),
        Outcome::Repeated(v) => (StatusCode::OK, v, true),
    };
    Ok(noted(
        (code, Json(command_json(&v))).into_response(),
        audit_note(&v, None, repeated),
    ))
}

/// A command's audit summary: what it asks, and its state before/after.
fn audit_note(v: &CommandView, before: Option<&str>, repeated: bool) -> AuditNote {
    let r = &v.row;
    AuditNote {
        target: Some(r.command_id.to_string()),
        summary: json!({
            "site": r.site_id, "asset": r.asset_id, "kind": r.kind, "field": r.field,
            "value": r.value, "load_id": r.load_id, "before": before, "after": r.state,
            "repeated": repeated,
        }),
        ..AuditNote::default()
    }
}

fn row_json(r: &CommandRow) -> Value {
    let mut v = json!({
        "command_id": r.command_id,
        "kind": r.kind,
        "site": r.site_id,
        "asset": if r.asset_id.is_empty() { Value::Null } else { Value::String(r.asset_id.clone()) },
        "field": if r.field.is_empty() { Value::Null } else { Value::String(r.field.clone()) },
        "value": r.value,
        "duration_s": if r.duration_ms > 0 { json!(r.duration_ms as f64 / 1000.0) } else { Value::Null },
        "expires_at": ts(r.expires_at_ms),
        "state": r.state,
        "reason": r.reason,
        "detail": r.detail,
        "readback": r.readback,
        "load_id": r.load_id,
        "parent_id": r.parent_id,
        "idempotency_key": r.idempotency_key,
        "issued_seq": r.seq,
        "created_by": r.created_by,
        // where it was asked for: the headend, or at the site (an OPC UA write)
        "origin": match r.created_by {
            crate::domain::Actor::OpcUaUser { .. } => "site_opcua",
            _ => "headend",
        },
        "created_at": ts(r.created_ms),
        "updated_at": ts(r.updated_ms),
        "cancel_requested_at": r.cancel_requested_ms.map(ts),
        "warnings": r.warnings,
    });
    if !r.policy_version.is_empty() {
        v["policy_version"] = json!(r.policy_version);
    }
    match r.kind {
        CommandKind::Eta => v["eta"] = json!(r.payload),
        CommandKind::Split => v["split"] = json!(r.payload),
        CommandKind::Setpoint => {}
    }
    v
}

/// A command as JSON: with its children (a split) and its timeline (when
/// the view carries one).
pub fn command_json(c: &CommandView) -> Value {
    let mut v = row_json(&c.row);
    if c.row.kind == CommandKind::Split {
        v["children"] = Value::Array(c.children.iter().map(row_json).collect());
    }
    if !c.timeline.is_empty() {
        v["timeline"] = Value::Array(
            c.timeline
                .iter()
                .map(|e| {
                    json!({
                        "at": ts(e.at_ms), "at_ms": e.at_ms, "state": e.state, "reason": e.reason,
                        "detail": e.detail, "by": e.actor,
                    })
                })
                .collect(),
        );
    }
    v
}

async fn get_command(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = super::id_param::<crate::domain::CommandId>(&id, "command")?;
    Ok(Json(command_json(&svc::get(&s.ctx(&p), &id).await?)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this site's commands.
    pub site: Option<String>,
    /// Only commands in this state.
    pub state: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn list_commands(
    State(s): State<ApiState>,
    Caller(p): Caller,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ListParams>,
) -> Result<Response, ApiError> {
    let pg = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = pg.limit()?;
    let before = page::after_i64(&pg)?;
    let views = svc::list(
        &s.ctx(&p),
        q.site.as_deref(),
        q.state.as_deref(),
        limit + 1,
        before,
    )
    .await?;
    let items = views.iter().map(command_json).collect();
    Ok(page::respond(&uri, items, limit, |v| {
        v["issued_seq"].to_string()
    }))
}

async fn cancel_command(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = super::id_param::<crate::domain::CommandId>(&id, "command")?;
    let v = svc::cancel(&s.ctx(&p), &id, &p.actor).await?;
    Ok(noted(
        (StatusCode::ACCEPTED, Json(command_json(&v))).into_response(),
        audit_note(&v, None, false),
    ))
}

impl super::Kinded for CommandRequest {
    const KINDS: &'static [&'static str] = &["setpoint", "eta"];

    fn of_kind(
        kind: &str,
        rest: serde_json::Value,
    ) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
        if kind == "eta" {
            serde_path_to_error::deserialize(rest).map(CommandRequest::Eta)
        } else {
            serde_path_to_error::deserialize(rest).map(CommandRequest::Setpoint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> (String, String) {
        match super::parse_kinded::<CommandRequest>(&Bytes::copy_from_slice(body.as_bytes())) {
            Ok(r) => panic!("taken: {r:?}"),
            Err(e) => {
                let v = e.body();
                (
                    v["error"]["field"].as_str().unwrap_or("").to_string(),
                    v["error"]["message"].as_str().unwrap_or("").to_string(),
                )
            }
        }
    }

    /// A path id that is no id of its kind names nothing (404, as an id
    /// that does not exist); a new site's id that is none is refused as
    /// invalid, naming `site`.
    #[test]
    fn a_path_parameter_that_is_no_id_is_not_found_or_invalid_for_a_new_site() {
        use crate::domain::{AssetId, CommandId, LoadId};
        use axum::http::StatusCode;
        assert!(super::super::site_param("site-a").is_ok());
        for bad in ["Site A", "", "a/b", "-x"] {
            let e = super::super::site_param(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_FOUND, "{bad}");
            let e = super::super::new_site_param(bad).unwrap_err();
            assert_eq!(
                (e.status, e.field.as_deref()),
                (StatusCode::BAD_REQUEST, Some("site"))
            );
        }
        assert!(super::super::id_param::<CommandId>("cmd-00ff", "command").is_ok());
        for bad in ["cmd 1", "", "x/y"] {
            let e = super::super::id_param::<CommandId>(bad, "command").unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_FOUND);
            assert!(e.message.contains("no command"), "{}", e.message);
            assert!(super::super::id_param::<LoadId>(bad, "load").is_err());
            assert!(super::super::id_param::<AssetId>(bad, "asset").is_err());
        }
    }

    #[test]
    fn a_command_request_names_the_field_it_cannot_take() {
        for (body, field) in [
            (r#"{"kind": "launch"}"#, "kind"),
            (r#"{"asset": "a", "field": "f", "value": 1}"#, "kind"),
            (
                r#"{"kind": "setpoint", "asset": "a", "field": "f"}"#,
                "value",
            ),
            (r#"{"kind": "setpoint", "asset": "a", "value": 1}"#, "field"),
            (
                r#"{"kind": "setpoint", "asset": "a", "field": "f", "value": "x"}"#,
                "value",
            ),
            (
                r#"{"kind": "setpoint", "asset": "a", "field": "f", "value": 1, "load_id": "l"}"#,
                "load_id",
            ),
            (r#"{"kind": "eta"}"#, "load_id"),
            (r#"{"kind": "eta", "load_id": "l", "value": 1}"#, "value"),
            (r#"{"kind": 1}"#, "kind"),
            // ids are checked where they enter
            (r#"{"kind": "eta", "load_id": "a/b"}"#, "load_id"),
            (
                r#"{"kind": "setpoint", "site": "Site A", "field": "f", "value": 1}"#,
                "site",
            ),
            (r#"[1]"#, ""),
        ] {
            let (f, msg) = refusal(body);
            assert_eq!(f, field, "{body}: {msg}");
        }
        // what it takes reads back as it was written (the stored request)
        let r: CommandRequest = super::parse_kinded(&Bytes::from_static(
            br#"{"kind": "setpoint", "asset": "s/a", "field": "f", "value": 2}"#,
        ))
        .unwrap();
        let again: CommandRequest =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(format!("{r:?}"), format!("{again:?}"));
    }
}
