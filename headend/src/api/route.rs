//! A route declared once: its method and path, the handler, what it
//! needs (the access gate's rule), the action its audit entries carry and
//! its OpenAPI operation. Each feature lists its routes (`routes()` in
//! `telemetry.rs`, `loads.rs`, …); the router, the access table
//! ([`super::rules::rules`]) and the OpenAPI document
//! ([`super::openapi::build`]) are all made from that one list, so a
//! route cannot be routed without a rule or documented without being
//! routed.

use axum::routing::MethodRouter;
use serde_json::Value;
use utoipa::openapi::path::ParameterIn;
use utoipa::{IntoParams, PartialSchema};

use super::ApiState;
pub use super::rules::{Need, Rule};

// what the declarations use
pub use super::page::PageParams;
pub use super::{audit, auth, commands, loads, telemetry};
pub use crate::domain::Permission as P;
pub use Need::{Perm, Public, Signed};
pub use axum::routing::{delete, get, patch, post, put};
pub use serde_json::json;

/// One route of the REST API.
pub struct Route {
    pub rule: Rule,
    pub doc: Doc,
    pub handler: MethodRouter<ApiState>,
}

impl Route {
    pub fn new(
        method: &'static str,
        path: &'static str,
        need: Need,
        action: &'static str,
        handler: MethodRouter<ApiState>,
        doc: Doc,
    ) -> Route {
        Route {
            rule: Rule {
                method,
                path,
                need,
                action,
            },
            doc,
            handler,
        }
    }
}

/// What one route documents beyond its rule.
pub struct Doc {
    pub summary: &'static str,
    /// The request body's schema (a name under `components/schemas`).
    pub body: Option<&'static str>,
    pub query: Vec<Value>,
    /// The success status.
    pub ok: u16,
    pub answer: Option<Value>,
    /// Plain text instead of JSON.
    pub text: bool,
    /// A media type of its own for the success answer (the metrics).
    pub media: Option<&'static str>,
    pub paged: bool,
    /// Other answers worth describing: (status, response object).
    pub also: Vec<(u16, Value)>,
}

/// A route answering `ok` with `answer` (a schema).
pub fn d(summary: &'static str, ok: u16, answer: Option<Value>) -> Doc {
    Doc {
        summary,
        body: None,
        query: Vec::new(),
        ok,
        answer,
        text: false,
        media: None,
        paged: false,
        also: Vec::new(),
    }
}

/// A paged list of `item`s with its query parameters.
pub fn paged(summary: &'static str, item: &str, query: Vec<Value>) -> Doc {
    Doc {
        query,
        paged: true,
        ..d(summary, 200, Some(list_of(item)))
    }
}

/// `x` with a JSON request body of schema `body`.
pub fn with_body(mut x: Doc, body: &'static str) -> Doc {
    x.body = Some(body);
    x
}

pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

pub fn list_of(name: &str) -> Value {
    json!({ "type": "array", "items": reference(name) })
}

pub fn schema_of<T: PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or(Value::Null)
}

pub fn params_of<T: IntoParams>() -> Vec<Value> {
    T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect()
}
