//! What the inventory job reads beside the other stores, and what it
//! keeps: the gauges' newest volumes, the deliveries of the history
//! window and their verdicts, and the failed commands past its cursor.

use crate::Error;
use crate::domain::deliveries::{DeliveryPhase, Verdict};
use crate::domain::{CommandState, Reason, SiteId, UnixMs};
use crate::store::Db;

/// A gauge's newest good value of a volume or water field.
#[derive(sqlx::FromRow)]
pub struct GaugeLatest {
    pub site_id: SiteId,
    pub asset_id: String,
    pub field: String,
    pub value: f64,
    pub good_ts_ms: UnixMs,
}

/// A delivery an agent reported, with the headend's verdict once judged.
#[derive(sqlx::FromRow)]
pub struct DeliveryFact {
    pub site_id: SiteId,
    pub log_id: i64,
    pub seq: i64,
    pub phase: DeliveryPhase,
    pub tank: String,
    pub start_ms: UnixMs,
    pub end_ms: UnixMs,
    pub start_volume_l: f64,
    pub end_volume_l: f64,
    pub delivered_volume_l: f64,
    pub verdict: Option<Verdict>,
}

/// A command that failed, or whose revert failed (an agent's write
/// failure on an active command).
#[derive(sqlx::FromRow)]
pub struct CommandFailure {
    pub id: i64,
    pub command_id: String,
    pub site_id: SiteId,
    pub asset_id: String,
    pub state: CommandState,
    pub reason: Reason,
    pub detail: String,
}

pub struct Evaluation<'a>(&'a Db);

impl Db {
    pub fn evaluation(&self) -> Evaluation<'_> {
        Evaluation(self)
    }
}

impl Evaluation<'_> {
    /// The newest good value of each volume and water field.
    /// Each tank's last reading and since when the gauge has shown it
    /// (kept from the last evaluation: a stuck gauge is judged by it).
    pub async fn flat(&self) -> Result<Vec<(String, String, Option<f64>, Option<i64>)>, Error> {
        Ok(
            sqlx::query_as("SELECT site_id, tank_id, reading_l, flat_since_ms FROM tank_state")
                .fetch_all(self.0.pool())
                .await?,
        )
    }

    pub async fn gauge_latest(&self, fields: &[&str]) -> Result<Vec<GaugeLatest>, Error> {
        let list = (0..fields.len())
            .map(|i| format!("${}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT site_id, asset_id, field, value, good_ts_ms FROM latest_values
             WHERE field IN ({list}) AND good_ts_ms > 0"
        );
        // the placeholders are the only text added
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for f in fields {
            q = q.bind(*f);
        }
        Ok(q.fetch_all(self.0.pool()).await?)
    }

    /// Every site's delivery events that started at `from_ms` or later.
    pub async fn deliveries_since(&self, from_ms: i64) -> Result<Vec<DeliveryFact>, Error> {
        Ok(sqlx::query_as(
            "SELECT site_id, log_id, seq, phase, tank, start_ms, end_ms, start_volume_l, end_volume_l, delivered_volume_l, verdict
             FROM delivery_events WHERE start_ms >= $1",
        )
        .bind(from_ms)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Keeps the verdict on a delivery.
    pub async fn set_verdict(&self, d: &DeliveryFact, v: Verdict) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "UPDATE delivery_events SET verdict = $1 WHERE site_id = $2 AND log_id = $3 AND seq = $4",
        )
        .bind(v)
        .bind(&d.site_id)
        .bind(d.log_id)
        .bind(d.seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Failed commands (and failed reverts) past the job's cursor, oldest first.
    pub async fn command_failures(&self, cursor: &str) -> Result<Vec<CommandFailure>, Error> {
        let after: Option<i64> = sqlx::query_scalar("SELECT value FROM job_cursors WHERE job = $1")
            .bind(cursor)
            .fetch_optional(self.0.pool())
            .await?;
        Ok(sqlx::query_as(
            "SELECT e.id, e.command_id, c.site_id, c.asset_id, e.state, e.reason, e.detail
             FROM command_events e JOIN commands c ON c.command_id = e.command_id
             WHERE e.id > $1 AND c.kind <> 'split'
               AND (e.state = 'failed' OR (e.state = 'active' AND e.reason IN ('write_failed', 'device_unreachable', 'readback_mismatch')))
             ORDER BY e.id",
        )
        .bind(after.unwrap_or(0))
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Moves the job's cursor to `id`.
    pub async fn advance_cursor(&self, cursor: &str, id: i64) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "INSERT INTO job_cursors (job, value) VALUES ($1, $2) ON CONFLICT (job) DO UPDATE SET value = excluded.value",
        )
        .bind(cursor)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
