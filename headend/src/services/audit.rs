//! The audit trail's one write path for the transports: an entry per
//! operator request, appended under the chain's head lock (`store::audit`).

use crate::Error;
use crate::store::Db;
use crate::store::audit::NewEntry;

/// Appends `e` to the trail; returns its id.
pub async fn record(db: &Db, e: &NewEntry) -> Result<i64, Error> {
    db.audit().append(e).await
}
