//! Orchestration: what an operator's request does, between the REST layer
//! ([`crate::api`]) and the stores ([`crate::store`]). A service checks
//! the request against the facts, applies the pure rules
//! ([`crate::domain`]), writes through a store and tells the dispatcher.
//! It knows no HTTP: a refusal names its kind and the field at fault, and
//! the API turns that into a status and the one error shape.

pub mod access;
pub mod admin;
pub mod alarms;
pub mod audit;
pub mod commands;
pub mod dispatch;
pub mod enrollment;
pub mod escalations;
pub mod evaluate;
pub mod fleet;
pub mod inventory;
pub mod load_import;
pub mod loads;
pub mod notify;
pub mod observations;
pub mod sessions;
pub mod sheet;
pub mod sites;
#[cfg(test)]
mod tests;
pub mod today;
pub mod touched;

pub use dispatch::Dispatcher;
pub use sessions::Sessions;

use crate::domain::Scope;
use crate::metrics::Metrics;
use crate::store::Db;

/// What services need.
#[derive(Clone)]
pub struct Context {
    pub db: Db,
    /// Where lists and charts are read (`--read-database-url`, else
    /// `db`): they may lag the primary by the replica's replay delay.
    /// Only reads that tolerate that go here; a check before a write
    /// never does.
    pub reads: Db,
    pub metrics: Metrics,
    pub dispatcher: Dispatcher,
    /// Tanks with new observations, for the quick evaluation.
    pub touched: touched::Touched,
    /// The sites the caller may see and act on.
    pub scope: Scope,
}

impl Context {
    /// Refuses a site outside the caller's scope as if it did not exist
    /// (a scoped caller cannot probe which site ids exist).
    pub fn visible(&self, site: &str, field: &str, what: impl FnOnce() -> String) -> Result<()> {
        if self.scope.covers(site) {
            Ok(())
        } else {
            Err(refused(Refused::OutOfScope, field, what()))
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Malformed or out of bounds on its own.
    Invalid,
    /// Names something that does not exist.
    NotFound,
    /// Well-formed but not possible against the facts (limits, targets).
    Unprocessable,
    /// Not possible in the current state (ended, key reused).
    Conflict,
    /// Beyond what the caller holds (a grant wider than its own).
    Forbidden,
    /// About a site outside the caller's scope: answered as [`Refused::NotFound`]
    /// (and audited as a denial).
    OutOfScope,
}

/// A service's failure: a refusal naming the field at fault, or the store.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{field}: {message}")]
    Refused {
        kind: Refused,
        field: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] crate::Error),
}

pub type Result<T> = std::result::Result<T, ServiceError>;

pub fn refused(kind: Refused, field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::Refused {
        kind,
        field: field.into(),
        message: message.into(),
    }
}

/// A site named by a caller (a REST or console path, a form) as a site
/// id: a text that is no site id names no site, not found as a
/// well-formed id that does not exist (no field is named: it is the
/// same answer).
pub fn site_named(site: &str) -> Result<crate::domain::SiteId> {
    crate::domain::SiteId::parse(site)
        .map_err(|_| refused(Refused::NotFound, "", format!("no site {site:?}")))
}

pub fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
    refused(Refused::Invalid, field, message)
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

/// A time field given as RFC 3339 text or Unix ms (number or text).
pub fn time_value(field: &str, v: &serde_json::Value) -> Result<i64> {
    use serde_json::Value;
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| invalid(field, "Unix ms must be an integer")),
        Value::String(s) => crate::domain::time::parse(s)
            .ok_or_else(|| invalid(field, format!("{s:?}: {}", crate::domain::time::HOW))),
        _ => Err(invalid(field, crate::domain::time::HOW)),
    }
}
