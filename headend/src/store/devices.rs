//! The site devices aggregate: each device's latest health as its agent
//! reports it (`device_status`, one row per device, replaced by each report).

use crate::domain::UnixMs;
use tankwatch_proto::v1;

use crate::Error;
use crate::domain::SiteId;
use crate::store::Db;

/// Most devices one report may carry; a larger report is refused.
pub const MAX_DEVICES: usize = 1000;

#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct DeviceRow {
    pub device: String,
    pub kind: String,
    pub connected: i64,
    pub last_good_ms: UnixMs,
    pub last_error: String,
    pub last_error_ms: UnixMs,
    pub errors: i64,
    pub reconnects: i64,
    pub shed: i64,
    pub gaps: i64,
    pub malformed: i64,
    pub reported_ms: UnixMs,
}

/// A device its agent reports disconnected.
#[derive(sqlx::FromRow, Clone, Debug)]
pub struct DeviceDownRow {
    pub site_id: String,
    pub device: String,
    pub kind: String,
    pub last_good_ms: UnixMs,
    pub last_error: String,
    pub last_error_ms: UnixMs,
}

/// Counters are u64 on the wire, i64 in SQL: saturate rather than wrap.
fn sql_count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Db {
    /// Replaces the stored health of the devices in `h` for `site`.
    pub async fn record_device_health(
        &self,
        site: &SiteId,
        h: &v1::DeviceHealth,
        now_ms: i64,
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.begin_write().await?;
        for d in &h.devices {
            sqlx::query(
                "INSERT INTO device_status (site_id, device, kind, connected, last_good_ms, last_error, last_error_ms,
                   errors, reconnects, shed, gaps, malformed, reported_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (site_id, device) DO UPDATE SET kind = excluded.kind, connected = excluded.connected,
                   last_good_ms = excluded.last_good_ms, last_error = excluded.last_error,
                   last_error_ms = excluded.last_error_ms, errors = excluded.errors, reconnects = excluded.reconnects,
                   shed = excluded.shed, gaps = excluded.gaps, malformed = excluded.malformed,
                   reported_ms = excluded.reported_ms",
            )
            .bind(site)
            .bind(&d.device)
            .bind(&d.kind)
            .bind(i64::from(d.connected))
            .bind(d.last_good_ms)
            .bind(&d.last_error)
            .bind(d.last_error_ms)
            .bind(sql_count(d.errors))
            .bind(sql_count(d.reconnects))
            .bind(sql_count(d.shed))
            .bind(sql_count(d.gaps))
            .bind(sql_count(d.malformed))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Devices their agents report disconnected, at `sites` (`None`:
    /// all), by site and name: at most `limit`.
    pub async fn devices_down(
        &self,
        sites: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<DeviceDownRow>, Error> {
        let sql = format!(
            "SELECT site_id, device, kind, last_good_ms, last_error, last_error_ms
             FROM device_status WHERE connected = 0 {} ORDER BY site_id, device LIMIT $1",
            super::site_in("site_id", sites, 2)
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(limit);
        for s in sites.unwrap_or_default() {
            q = q.bind(s);
        }
        Ok(q.fetch_all(self.pool()).await?)
    }

    /// Each site's devices: (site, connected, all), at `sites` (`None`:
    /// all).
    pub async fn device_counts(
        &self,
        sites: Option<&[String]>,
    ) -> Result<Vec<(String, i64, i64)>, Error> {
        let sql = format!(
            "SELECT site_id, CAST(SUM(CASE WHEN connected = 0 THEN 0 ELSE 1 END) AS BIGINT), CAST(COUNT(*) AS BIGINT)
             FROM device_status WHERE 1 = 1 {} GROUP BY site_id",
            super::site_in("site_id", sites, 1)
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for s in sites.unwrap_or_default() {
            q = q.bind(s);
        }
        Ok(q.fetch_all(self.pool()).await?)
    }

    /// The site's devices, by name.
    pub async fn devices(&self, site: &SiteId) -> Result<Vec<DeviceRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT device, kind, connected, last_good_ms, last_error, last_error_ms, errors, reconnects, shed, gaps,
                    malformed, reported_ms
             FROM device_status WHERE site_id = $1 ORDER BY device",
        )
        .bind(site)
        .fetch_all(self.pool())
        .await?)
    }
}
