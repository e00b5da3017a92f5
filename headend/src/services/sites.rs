//! The site list as an operator sees it: each site the caller may see,
//! with its agent's session on this replica (connected or not) and the
//! trouble its data is in. The REST list and the console read this.

use super::sessions::{IngestError, SessionInfo};
use super::{Context, Result, Sessions};
use crate::store::sites::SiteRow;

/// One site and what is known of it now.
#[derive(Clone, Debug)]
pub struct SiteView {
    pub row: SiteRow,
    /// Its agent's session, while connected to this replica.
    pub session: Option<SessionInfo>,
    /// Its data failing to commit (resent; nothing acknowledged).
    pub ingest_error: Option<IngestError>,
}

/// The sites in the caller's scope, by id, whose id starts with `q` or
/// whose name holds it (any case; all with none).
pub async fn list(ctx: &Context, sessions: &Sessions, q: Option<&str>) -> Result<Vec<SiteView>> {
    let mut rows = ctx.db.sites().await?;
    rows.retain(|r| ctx.scope.covers(&r.site_id));
    if let Some(q) = q.map(str::to_lowercase) {
        rows.retain(|r| {
            r.site_id.to_lowercase().starts_with(&q) || r.name.to_lowercase().contains(&q)
        });
    }
    rows.sort_by(|a, b| a.site_id.cmp(&b.site_id));
    ctx.metrics
        .sites_failing
        .set(sessions.failing_sites() as i64);
    Ok(rows
        .into_iter()
        .map(|row| SiteView {
            session: sessions.get(&row.site_id),
            ingest_error: sessions.ingest_error(&row.site_id),
            row,
        })
        .collect())
}
