//! The PostgreSQL store's upkeep: day partitions (made ahead, on demand,
//! dropped by retention), batched retention deletes, clustering finished
//! days by point, and the footprint figure.

use std::collections::BTreeSet;

use super::super::rows::{self, DAY_MS};
use super::super::{Group, Retained, Retention};
use super::{PARTITION_LOCK, PgTelemetry, RETENTION_STEP_ROWS};
use crate::Error;

impl PgTelemetry {
    /// The day partitions that exist: (name, day start).
    pub(super) async fn partitions(&self) -> Result<Vec<(String, i64)>, Error> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'readings'::regclass",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(names
            .into_iter()
            .filter_map(|n| rows::partition_day(&n).map(|d| (n, d)))
            .collect())
    }

    /// Makes the day partition starting at `day` unless it exists; rows of
    /// that day already in the default partition move into it.
    async fn make_partition(&self, day: i64) -> Result<(), Error> {
        let name = rows::partition_name(day);
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            let (lo, hi) = (day, day + DAY_MS);
            // `name` is readings_p + 8 digits (rows::partition_name)
            for sql in [
                format!("CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
                format!(
                    "WITH moved AS (DELETE FROM readings_default WHERE ts_ms >= {lo} AND ts_ms < {hi}
                       RETURNING ts_ms, seq, value, point_id, error_id, quality)
                     INSERT INTO {name} (ts_ms, seq, value, point_id, error_id, quality) SELECT * FROM moved"
                ),
                format!("ALTER TABLE readings ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
            tracing::info!(partition = %name, "readings partition created");
        }
        tx.commit().await?;
        self.days_lock().insert(day);
        Ok(())
    }

    /// The partitions from yesterday to two days ahead.
    pub async fn prepare(&self, now_ms: i64) -> Result<(), Error> {
        for d in -1..=2 {
            let day = rows::day_of(now_ms) + d * DAY_MS;
            if !self.days_lock().contains(&day) {
                self.make_partition(day).await?;
            }
        }
        Ok(())
    }

    /// Partitions for the days these readings fall on, inside the window
    /// kept (older or far-future times go to the default partition).
    pub(super) async fn partitions_for(&self, g: &Group, now_ms: i64) -> Result<(), Error> {
        let lo = self.retention.raw_cutoff(now_ms);
        let hi = now_ms.saturating_add(2 * DAY_MS);
        let missing: BTreeSet<i64> = {
            let days = self.days_lock();
            g.batches
                .iter()
                .flat_map(|b| &b.readings)
                .map(|r| r.source_ts_ms)
                .filter(|t| (lo..hi).contains(t))
                .map(rows::day_of)
                .filter(|d| !days.contains(d))
                .collect()
        };
        for day in missing {
            self.make_partition(day).await?;
        }
        Ok(())
    }

    pub async fn retain(&self, r: Retention, now_ms: i64) -> Result<Retained, Error> {
        let raw_cutoff = r.raw_cutoff(now_ms);
        let mut done = Retained::default();
        // whole days before the cutoff: drop their partitions
        for (name, day) in self.partitions().await? {
            if day + DAY_MS <= raw_cutoff {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PARTITION_LOCK)
                    .execute(&mut *tx)
                    .await?;
                // `name` came from pg_class and parsed as readings_pYYYYMMDD
                let n: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {name}")))
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {name}")))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.days_lock().remove(&day);
                done.readings += n as u64;
                done.partitions_dropped += 1;
                tracing::info!(partition = %name, rows = n, "readings partition dropped (retention)");
            }
        }
        // the default partition and the day that holds the cutoff: batched deletes
        done.readings += self.delete_before("readings_default", raw_cutoff).await?;
        let cut_day = rows::day_of(raw_cutoff);
        if self.days_lock().contains(&cut_day) {
            done.readings += self
                .delete_before(&rows::partition_name(cut_day), raw_cutoff)
                .await?;
        }
        // rollups: per point range on the primary key, in bounded groups
        let rollup_cutoff = r.rollup_cutoff(now_ms);
        let mut after = 0i32;
        loop {
            let ids: Vec<i32> = sqlx::query_scalar(
                "SELECT point_id FROM points WHERE point_id > $1 ORDER BY point_id LIMIT 256",
            )
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
            let Some(&last) = ids.last() else { break };
            done.rollups +=
                sqlx::query("DELETE FROM rollups_hourly WHERE point_id = ANY($1) AND hour_ms < $2")
                    .bind(&ids)
                    .bind(rollup_cutoff)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            after = last;
        }
        self.prepare(now_ms).await?;
        Ok(done)
    }

    /// Deletes the rows of one partition older than `cutoff`, in batches
    /// of [`RETENTION_STEP_ROWS`] (each its own transaction).
    async fn delete_before(&self, partition: &str, cutoff: i64) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            // `partition` is readings_default or readings_p + 8 digits
            let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {partition} WHERE ctid IN (SELECT ctid FROM {partition} WHERE ts_ms < $1 LIMIT $2)"
            )))
            .bind(cutoff)
            .bind(RETENTION_STEP_ROWS)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += n;
            if n < RETENTION_STEP_ROWS as u64 {
                return Ok(total);
            }
        }
    }

    /// Rewrites each finished day's partition in key order (`CLUSTER` on
    /// its primary key), once: time-major arrival scatters one point's
    /// rows over every page of the day; clustered, a point's month is a
    /// few contiguous pages and the index is packed. A day counts as
    /// finished an hour after it ended (late arrivals still land; they
    /// are only not in order). Returns the partitions clustered.
    pub async fn compact(&self, now_ms: i64) -> Result<u64, Error> {
        let todo: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_index x ON x.indrelid = c.oid AND x.indisprimary
             WHERE i.inhparent = 'readings'::regclass AND NOT x.indisclustered",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut n = 0;
        for name in todo {
            let Some(day) = rows::partition_day(&name) else {
                continue; // the default partition
            };
            if day + DAY_MS + 3_600_000 > now_ms {
                continue;
            }
            let t = std::time::Instant::now();
            let index: String = sqlx::query_scalar(
                "SELECT ic.relname::text FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
                 WHERE x.indrelid = $1::regclass AND x.indisprimary",
            )
            .bind(&name)
            .fetch_one(&self.pool)
            .await?;
            // both names come from pg_class; the partition's parsed as readings_pYYYYMMDD
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CLUSTER {name} USING \"{}\"",
                index.replace('"', "")
            )))
            .execute(&self.pool)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {name}")))
                .execute(&self.pool)
                .await?;
            tracing::info!(partition = %name, took_ms = t.elapsed().as_millis() as u64, "readings partition clustered by point");
            n += 1;
        }
        Ok(n)
    }

    pub async fn footprint(&self) -> Result<(u64, u64), Error> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(inhrelid)), 0)::int8 FROM pg_inherits
             WHERE inhparent = 'readings'::regclass",
        )
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
            .fetch_one(&self.pool)
            .await?;
        Ok((bytes as u64, n as u64))
    }
}
