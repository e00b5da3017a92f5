//! The operator REST API: thin handlers per feature, one error shape, and
//! the extractors they share. Handlers parse, call a service (or a store
//! for plain reads) and render; the rules live in [`crate::services`] and
//! [`crate::domain`].
//!
//! * [`telemetry`]: health, readiness, metrics, sites, assets, readings,
//!   rollups, gaps.
//! * [`commands`]: setpoints and ETA pushes with their lifecycle.
//! * [`loads`]: planned deliveries.
//! * [`edge`]: what every request must satisfy first (Host, content type,
//!   control characters, body size).
//!
//! Every error is `{"error": {"code", "message", "field"}}`: `code` is a
//! stable machine-readable word (below), `field` names the field at fault
//! or is null.

pub mod access;
pub mod admin;
pub mod alarm_rules;
pub mod alarms;
pub mod audit;
pub mod auth;
pub mod certs;
pub mod commands;
pub mod console;
pub mod edge;
pub mod escalations;
pub mod inventory;
pub mod loads;
pub mod mail;
pub mod openapi;
pub mod openapi_params;
pub mod page;
pub mod route;
pub mod rules;
pub mod telemetry;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::domain::Actor;
use crate::metrics::Metrics;
use crate::services::Dispatcher;
use crate::services::Sessions;
use crate::services::access::{Guard, Principal};
use crate::services::{Context, Refused, ServiceError};
use crate::store::Db;
use access::AuditNote;
pub use access::Caller;

#[derive(Clone)]
pub struct ApiState {
    pub db: Db,
    /// Where lists and charts are read: a read replica, or `db`.
    pub reads: Db,
    pub sessions: Sessions,
    pub metrics: Metrics,
    pub dispatcher: Dispatcher,
    /// Login throttling and the password-hashing bound.
    pub guard: Guard,
    /// Enrollment tokens and revocations.
    pub issuing: crate::services::enrollment::SharedIssuing,
    /// A webhook is configured: escalation changes queue notifications.
    pub webhook: bool,
    /// Tanks with new observations, for the quick evaluation.
    pub touched: crate::services::touched::Touched,
}

impl ApiState {
    /// The services' context of the headend itself (every site): what
    /// `/metrics` reports.
    pub fn system_ctx(&self) -> Context {
        self.ctx_in(crate::domain::access::Scope::All)
    }

    /// The services' context for this caller (its site scope).
    pub fn ctx(&self, p: &Principal) -> Context {
        self.ctx_in(p.scope.clone())
    }

    fn ctx_in(&self, scope: crate::domain::access::Scope) -> Context {
        Context {
            db: self.db.clone(),
            reads: self.reads.clone(),
            metrics: self.metrics.clone(),
            dispatcher: self.dispatcher.clone(),
            touched: self.touched.clone(),
            scope,
        }
    }
}

/// Every route, behind the access gate (authentication, role, scope,
/// audit: [`access`]), the edge checks ([`edge`]) and the request id.
pub fn router(state: ApiState, edge: edge::Edge) -> Router {
    let gate = access::Gate::new(state.clone());
    let console = crate::api::console::router(state.clone(), edge.https);
    routes()
        .into_iter()
        .fold(Router::new(), |r, route| {
            r.route(route.rule.path, route.handler)
        })
        .route_layer(axum::middleware::from_fn_with_state(gate, access::gate))
        .with_state(state)
        .merge(console)
        .fallback(|uri: axum::http::Uri| async move {
            if crate::api::console::owns(uri.path()) {
                crate::api::console::not_found()
            } else {
                ApiError::not_found("no such route (the API is described at /api/openapi.json)")
                    .into_response()
            }
        })
        .layer(axum::extract::DefaultBodyLimit::max(edge::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(edge::json_errors))
        .layer(axum::middleware::from_fn_with_state(edge, edge::guard))
        .layer(axum::middleware::from_fn(access::request_id))
}

/// Every route of the API, as the features declare them.
pub fn routes() -> Vec<route::Route> {
    [
        telemetry::routes(),
        commands::routes(),
        loads::routes(),
        auth::routes(),
        admin::routes(),
        audit::routes(),
        certs::routes(),
        inventory::routes(),
        escalations::routes(),
        alarms::routes(),
        mail::routes(),
        alarm_rules::routes(),
        openapi::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// An API error: `{"error": {"code", "message", "field"}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// `invalid`, `not_found`, `unprocessable`, `conflict`,
    /// `database_unavailable`, `database_read_only`, `stored_value_invalid`, `internal`, or an
    /// edge refusal (`host`, `content_type`, `control_character`,
    /// `too_large`).
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Refused for who asked (audited as a denial).
    pub denied: bool,
    /// For 429: seconds to wait.
    pub retry_after_s: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            denied: false,
            retry_after_s: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401 (with `WWW-Authenticate: Bearer`).
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError {
            denied: true,
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
        }
    }

    /// 429 with `Retry-After`.
    pub fn throttled(wait_ms: i64) -> ApiError {
        let s = (wait_ms.max(1) + 999) / 1000;
        ApiError {
            denied: true,
            retry_after_s: Some(s),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("too many attempts; retry in {s} s"),
            )
        }
    }

    /// A 400 naming the field at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: (!field.is_empty()).then(|| field.to_string()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    pub fn body(&self) -> Value {
        let message = match &self.field {
            Some(f) => format!("{f}: {}", self.message),
            None => self.message.clone(),
        };
        json!({ "error": { "code": self.code, "message": message, "field": self.field } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.denied {
            r.extensions_mut().insert(AuditNote {
                denied: true,
                summary: json!({ "error": self.code, "message": self.message }),
                ..AuditNote::default()
            });
        }
        r
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Refused {
                kind,
                field,
                message,
            } => {
                let (status, code) = match kind {
                    Refused::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
                    Refused::NotFound | Refused::OutOfScope => (StatusCode::NOT_FOUND, "not_found"),
                    Refused::Unprocessable => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
                    Refused::Conflict => (StatusCode::CONFLICT, "conflict"),
                    Refused::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
                };
                ApiError {
                    field: (!field.is_empty()).then_some(field),
                    denied: kind == Refused::OutOfScope,
                    ..ApiError::new(status, code, message)
                }
            }
            ServiceError::Store(e) => e.into(),
        }
    }
}

/// The error and every source under it, for the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// How a failure below the API reaches the client. The whole chain goes
/// to the log; the client gets the class and what it can do about it.
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        use crate::Error as E;
        let (status, code, message) = match &e {
            _ if e.outage() == Some(crate::error::Outage::ReadOnly) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_read_only",
                "the database is read-only (a standby, or a failover in progress); retry later"
                    .into(),
            ),
            _ if e.outage().is_some() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is unavailable; retry later (details in the headend's log)".into(),
            ),
            E::Stored(u) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored_value_invalid",
                format!("a stored value is not one this headend knows ({u})"),
            ),
            E::Corrupt { column, key, .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored_value_invalid",
                format!(
                    "the stored {column} of {key:?} does not parse; it was not used (details in the headend's log)"
                ),
            ),
            E::Sql(sqlx::Error::ColumnDecode { index, source }) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored_value_invalid",
                format!("the stored {index} is not a value this headend knows ({source})"),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request failed inside the headend (details in its log)".into(),
            ),
        };
        tracing::error!(error = %chain(&e), %code, "REST request failed");
        ApiError::new(status, code, message)
    }
}

/// `axum`'s `Query` with its refusals in the one error shape (400, JSON)
/// instead of plain text.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, s).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::invalid("", e.body_text())),
        }
    }
}

/// A stored time as RFC 3339, or null when it is not a time we can write
/// (0, negative, or past year 9999): a row can never make a read fail.
pub fn ts(t: impl Into<crate::domain::UnixMs>) -> Value {
    t.into().rfc3339().map_or(Value::Null, Value::String)
}

/// An optional query parameter of a closed set (a state, a cause): an
/// unknown value is refused naming the parameter and the choices.
pub fn query_enum<T: crate::domain::TextEnum>(
    name: &str,
    v: Option<&str>,
) -> Result<Option<T>, ApiError> {
    v.map(|v| {
        v.parse::<T>()
            .map_err(|_| ApiError::invalid(name, format!("{v:?}: use one of {}", T::choices())))
    })
    .transpose()
}

/// A time query parameter: RFC 3339 or Unix ms.
pub fn query_time(name: &str, v: &str) -> Result<crate::domain::UnixMs, ApiError> {
    crate::domain::UnixMs::parse(v).ok_or_else(|| {
        ApiError::invalid(
            name,
            format!("query parameter {name}={v:?}: {}", crate::domain::time::HOW),
        )
    })
}

/// A `{site}` path parameter as a site id. A text that is no site id names
/// no site: 404, as for a well-formed id that does not exist.
pub fn site_param(site: &str) -> Result<crate::domain::SiteId, ApiError> {
    Ok(crate::services::site_named(site)?)
}

/// An `{id}` path parameter as the id of `what` (a command, a load): a
/// text that is no such id names nothing, 404 as for one that does not exist.
pub fn id_param<T: std::str::FromStr>(id: &str, what: &str) -> Result<T, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no {what} {id:?}")))
}

/// A `{site}` path parameter naming a site that need not exist yet (an
/// enrollment token for a new site, a revocation): a text that is no site
/// id is refused as invalid, naming `site`.
pub fn new_site_param(site: &str) -> Result<crate::domain::SiteId, ApiError> {
    crate::domain::SiteId::parse(site).map_err(|e| ApiError::invalid("site", e.to_string()))
}

/// Parses a JSON body; errors name the field path. Strings with control
/// characters or over 1,000 characters are refused (see [`edge`]).
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(json_body(body)?).map_err(named)
}

/// A body as JSON, refused (naming where) when it is not JSON or holds
/// what no body may (see `edge::check_json`).
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = edge::strict_json(body)
        .map_err(|e| ApiError::invalid("", format!("not valid JSON: {e}")))?;
    if let Some((path, problem)) = edge::check_json(&v) {
        return Err(ApiError::invalid(&path, problem));
    }
    Ok(v)
}

/// A deserialization error as a 400 naming its field.
fn named(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let msg = e.into_inner().to_string();
    // "unknown field `x`" and "missing field `x`" are about a key at this path
    let field = if path == "." {
        msg.split('`').nth(1).unwrap_or("").to_string()
    } else {
        path
    };
    ApiError::invalid(&field, msg)
}

/// A body whose `kind` says which shape the rest has (an internally
/// tagged enum). Read in two steps, the kind and then the kind's own
/// struct, because serde loses the path inside tagged content: a bad
/// `value` would be refused without naming it.
pub trait Kinded: Sized {
    /// The kinds, as the wire spells them.
    const KINDS: &'static [&'static str];
    /// The rest of the body (without `kind`) as kind `kind`, one of `KINDS`.
    fn of_kind(
        kind: &str,
        rest: Value,
    ) -> Result<Self, serde_path_to_error::Error<serde_json::Error>>;
}

/// Reads a [`Kinded`] body, naming the field at fault.
pub fn parse_kinded<T: Kinded>(body: &Bytes) -> Result<T, ApiError> {
    let mut v = json_body(body)?;
    let kinds = || {
        T::KINDS
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(map) = v.as_object_mut() else {
        return Err(ApiError::invalid("", "expected a JSON object"));
    };
    let kind = match map.remove("kind") {
        Some(Value::String(k)) if T::KINDS.contains(&k.as_str()) => k,
        Some(Value::String(k)) => {
            return Err(ApiError::invalid(
                "kind",
                format!("{k:?} is not a kind; use one of {}", kinds()),
            ));
        }
        Some(_) => return Err(ApiError::invalid("kind", format!("one of {}", kinds()))),
        None => {
            return Err(ApiError::invalid(
                "kind",
                format!("missing field `kind` (one of {})", kinds()),
            ));
        }
    };
    T::of_kind(&kind, v).map_err(named)
}

/// Fuzzing entry (`fuzz/`): every REST body parser and the pure checks
/// behind it, on arbitrary bytes, and the rendering of any stored time.
/// Must never panic.
#[doc(hidden)]
pub fn fuzz_bodies(body: &[u8]) {
    use crate::services::{commands as c, loads as l};
    let b = Bytes::copy_from_slice(body);
    let now = crate::wallclock::now_ms();
    if let Ok(r) = parse_kinded::<c::CommandRequest>(&b) {
        let (expires_in_s, expires_at) = r.expiry_given();
        let _ = c::expiry(now, expires_in_s, expires_at, c::DEFAULT_EXPIRY_S);
        let _ = serde_json::to_string(&r);
    }
    if let Ok(r) = parse_body::<l::LoadRequest>(&b) {
        let _ = l::volume_value(r.planned_volume_l);
        let _ = l::eta_value(&r.eta, now);
        let _ = l::eta_source(&r.eta_source);
    }
    if let Ok(p) = parse_body::<l::LoadPatch>(&b) {
        if let Some(e) = &p.eta {
            let _ = l::eta_value(e, now);
        }
        if let Some(v) = p.planned_volume_l {
            let _ = l::volume_value(v);
        }
    }
    {
        use crate::services::{escalations as e, inventory as i};
        // a site's holidays, as the service reads them
        if let Ok(i::SiteRequest {
            holidays: Some(h), ..
        }) = parse_body::<i::SiteRequest>(&b)
        {
            let _ = crate::domain::calendar::Calendar::parse_holidays(&h);
        }
        let _ = parse_body::<i::TankRequest>(&b);
        let _ = parse_body::<e::MoveRequest>(&b);
        let _ = parse_body::<e::NoteRequest>(&b);
        let _ = parse_body::<inventory::CsvBody>(&b);
        if let Ok(crate::services::observations::ObservationsRequest::One(o)) =
            parse_body::<crate::services::observations::ObservationsRequest>(&b)
        {
            let _ = crate::services::time_value("at", &o.at);
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = query_time("from", text);
        let _ = edge::has_control(text);
        let _ = edge::host_of(text);
        let _ = text.parse::<Actor>();
        let _ = text.parse::<crate::domain::CommandState>();
    }
    if let Some(head) = body.get(..8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(head);
        let _ = ts(i64::from_le_bytes(a));
    }
}
