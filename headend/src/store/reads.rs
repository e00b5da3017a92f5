//! What a site's agent reported besides readings: delivery events and
//! gaps (data it dropped).

use crate::Error;
use crate::domain::SiteId;
use crate::domain::UnixMs;
use crate::store::Db;

impl Db {
    /// Data a site's agent dropped (gap records), newest first.
    /// The site's delivery events, newest first.
    pub async fn delivery_events(
        &self,
        site: &SiteId,
        limit: i64,
    ) -> Result<Vec<DeliveryEventRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT phase, load_id, tank, start_ms, end_ms, start_volume_l, end_volume_l, delivered_volume_l, source, ingested_ms, verdict
             FROM delivery_events WHERE site_id = $1 ORDER BY start_ms DESC, log_id, seq DESC LIMIT $2",
        )
        .bind(site)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn gaps(&self, site: &SiteId, limit: i64) -> Result<Vec<GapRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT log_id, seq, first_seq, last_seq, count, class, reason, from_ts_ms, to_ts_ms, ingested_ms, device
             FROM gaps WHERE site_id = $1 ORDER BY from_ts_ms DESC, seq DESC LIMIT $2",
        )
        .bind(site)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A delivery event as an agent reported it.
#[derive(sqlx::FromRow)]
pub struct DeliveryEventRow {
    pub phase: crate::domain::deliveries::DeliveryPhase,
    pub load_id: String,
    pub tank: String,
    pub start_ms: UnixMs,
    pub end_ms: UnixMs,
    pub start_volume_l: f64,
    pub end_volume_l: f64,
    pub delivered_volume_l: f64,
    pub source: crate::domain::DeliverySource,
    pub ingested_ms: UnixMs,
    /// The headend's verdict (None until the inventory job judged it).
    pub verdict: Option<crate::domain::deliveries::Verdict>,
}

#[derive(sqlx::FromRow)]
pub struct GapRow {
    /// The agent log's u64 id, stored bit-for-bit as i64.
    pub log_id: i64,
    pub seq: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: i64,
    pub class: String,
    pub reason: String,
    pub from_ts_ms: UnixMs,
    pub to_ts_ms: UnixMs,
    pub ingested_ms: UnixMs,
    /// The device whose data is missing (adapter gaps); '' for log drops.
    pub device: String,
}
