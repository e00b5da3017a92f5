//! The audit trail's one write path for the transports: an entry per
//! operator request, appended under the chain's head lock (`store::audit`);
//! and its one read path, within the reader's scope.

use super::{Context, Refused, refused};
use crate::Error;
use crate::domain::audit::Stored;
use crate::store::Db;
use crate::store::audit::{AuditQuery, NewEntry};

/// Appends `e` to the trail; returns its id.
pub async fn record(db: &Db, e: &NewEntry) -> Result<i64, Error> {
    db.audit().append(e).await
}

/// The entries matching `q` that the caller may read, newest first: a
/// scoped reader sees only its sites' entries, and a site outside its
/// scope is not found (`q.sites` is set here from `site`).
pub async fn list(
    ctx: &Context,
    site: Option<String>,
    q: AuditQuery,
) -> super::Result<Vec<Stored>> {
    let sites = match site {
        Some(site) if !ctx.scope.covers(&site) => {
            return Err(refused(
                Refused::OutOfScope,
                "site",
                format!("no site {site:?}"),
            ));
        }
        Some(site) => Some(vec![site]),
        None => ctx.scope.sites(),
    };
    Ok(ctx.db.audit().list(&AuditQuery { sites, ..q }).await?)
}
