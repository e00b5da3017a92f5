//! The PostgreSQL store's upkeep: day partitions (made ahead, on demand,
//! dropped by retention), batched retention deletes, packing finished
//! days (one row per point and hour, ADR 0006), and the footprint figure.

use std::collections::BTreeSet;

use super::super::rows::{self, DAY_MS};
use super::super::{Group, Retained, Retention};
use super::{PARTITION_LOCK, PgTelemetry, RETENTION_STEP_ROWS};
use crate::Error;

impl PgTelemetry {
    /// The names of a partitioned table's partitions.
    async fn children(&self, parent: &str) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::regclass",
        )
        .bind(parent)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The day partitions that exist: (name, day start).
    pub(super) async fn partitions(&self) -> Result<Vec<(String, i64)>, Error> {
        Ok(self
            .children("readings")
            .await?
            .into_iter()
            .filter_map(|n| rows::partition_day(&n).map(|d| (n, d)))
            .collect())
    }

    /// The days whose packed partition exists.
    pub(super) async fn packed_days(&self) -> Result<BTreeSet<i64>, Error> {
        Ok(self
            .children("packed_readings")
            .await?
            .iter()
            .filter_map(|n| n.strip_prefix("packed_").and_then(rows::partition_day))
            .collect())
    }

    /// Makes the day's partitions (raw and packed) unless they exist; rows
    /// of that day already in the default partition move into the raw one.
    async fn make_partition(&self, day: i64) -> Result<(), Error> {
        let name = rows::partition_name(day);
        let packed = format!("packed_{name}");
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
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&packed)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            let (lo, hi) = (day, day + DAY_MS);
            // `packed` is packed_readings_p + 8 digits
            for sql in [
                format!(
                    "CREATE TABLE {packed} (LIKE packed_readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ),
                format!(
                    "ALTER TABLE packed_readings ATTACH PARTITION {packed} FOR VALUES FROM ({lo}) TO ({hi})"
                ),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await?;
            }
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
        // whole days before the cutoff: drop their partitions, raw and packed
        let mut days: BTreeSet<i64> = self.partitions().await?.into_iter().map(|p| p.1).collect();
        days.extend(self.packed_days().await?);
        for day in days.into_iter().filter(|d| d + DAY_MS <= raw_cutoff) {
            let name = rows::partition_name(day);
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PARTITION_LOCK)
                .execute(&mut *tx)
                .await?;
            let mut n = 0i64;
            // `name` is readings_p + 8 digits (rows::partition_name)
            for (table, count) in [
                (name.clone(), "COUNT(*)"),
                (format!("packed_{name}"), "COALESCE(SUM(n), 0)"),
            ] {
                let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(&table)
                    .fetch_one(&mut *tx)
                    .await?;
                if exists {
                    n += sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                        "SELECT {count}::int8 FROM {table}"
                    )))
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            self.days_lock().remove(&day);
            done.readings += n as u64;
            done.partitions_dropped += 1;
            tracing::info!(partition = %name, readings = n, "readings partitions dropped (retention)");
        }
        // the default partition and the day that holds the cutoff: batched
        // deletes of raw rows; packed hours wholly before the cutoff go, the
        // hour that holds it is trimmed
        done.readings += self.delete_before("readings_default", raw_cutoff).await?;
        let cut_day = rows::day_of(raw_cutoff);
        if self.days_lock().contains(&cut_day) {
            done.readings += self
                .delete_before(&rows::partition_name(cut_day), raw_cutoff)
                .await?;
        }
        done.readings += self.trim_packed_before(raw_cutoff).await?;
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

    /// Removes packed readings older than `cutoff`: hours wholly before
    /// it are deleted, the hour that holds it keeps its readings from the
    /// cutoff on. Returns the readings removed.
    async fn trim_packed_before(&self, cutoff: i64) -> Result<u64, Error> {
        let gone: i64 = sqlx::query_scalar(
            "WITH d AS (DELETE FROM packed_readings
                        WHERE hour_ms < $1 AND (hour_ms <= $1 - 3600000 OR ts_ms[n] < $1) RETURNING n)
             SELECT COALESCE(SUM(n), 0)::int8 FROM d",
        )
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await?;
        let trimmed: i64 = sqlx::query_scalar(
            "WITH t AS (
               UPDATE packed_readings k SET
                 n = s.n, ts_ms = s.ts_ms, seq = s.seq, value = s.value, quality = s.quality,
                 error_id = CASE WHEN k.error_id IS NULL THEN NULL ELSE s.error_id END
               FROM packed_readings o, LATERAL (
                 SELECT COUNT(*)::int4 AS n,
                        ARRAY_AGG(u.t ORDER BY u.t, u.q) AS ts_ms, ARRAY_AGG(u.q ORDER BY u.t, u.q) AS seq,
                        ARRAY_AGG(u.v ORDER BY u.t, u.q) AS value, ARRAY_AGG(u.k ORDER BY u.t, u.q) AS quality,
                        ARRAY_AGG(u.e ORDER BY u.t, u.q) AS error_id
                 FROM UNNEST(o.ts_ms, o.seq, o.value, o.quality, o.error_id) AS u(t, q, v, k, e)
                 WHERE u.t >= $1) s
               WHERE o.point_id = k.point_id AND o.hour_ms = k.hour_ms
                 AND k.hour_ms > $1 - 3600000 AND k.hour_ms <= $1 AND k.ts_ms[1] < $1
               RETURNING o.n - s.n AS gone)
             SELECT COALESCE(SUM(gone), 0)::int8 FROM t",
        )
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await?;
        Ok((gone + trimmed) as u64)
    }

    /// Packs each finished day (an hour after it ended: late arrivals
    /// still land in its raw partition and are packed at the next run):
    /// its raw rows move into `packed_readings`, one row per point and
    /// hour, deduplicated, in (time, seq) order, and those hours' rollups
    /// are recomputed from what is packed (exact even if a redelivery
    /// slipped past the key in between). Rows packed before are merged
    /// with late ones. Returns the days packed.
    pub async fn compact(&self, now_ms: i64) -> Result<u64, Error> {
        let rollups_from = self.retention.raw_cutoff(now_ms);
        let mut n = 0;
        for (name, day) in self.partitions().await? {
            if day + DAY_MS + 3_600_000 > now_ms {
                continue;
            }
            // `name` came from pg_class and parsed as readings_pYYYYMMDD
            let (has_rows, bytes): (bool, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT 1 FROM {name}), pg_total_relation_size('{name}'::regclass)"
            )))
            .fetch_one(&self.pool)
            .await?;
            if !has_rows {
                // packed before, but not truncated then (an empty table
                // is one 8 KiB index page)
                if bytes > 8192 {
                    self.release(&name).await?;
                }
                continue;
            }
            if !self.days_lock().contains(&day) {
                self.make_partition(day).await?; // a day made before packing existed
            }
            let t = std::time::Instant::now();
            let readings = self.pack_day(&name, rollups_from).await?;
            self.release(&name).await?;
            tracing::info!(partition = %name, readings, took_ms = t.elapsed().as_millis() as u64, "readings day packed");
            n += 1;
        }
        Ok(n)
    }

    /// Gives an emptied raw partition's space back: its heap and, what
    /// VACUUM cannot shrink, its index. `TRUNCATE` needs the table to
    /// itself for a moment: readers are not kept waiting behind it for
    /// long (a lock timeout), and rows that arrived since are kept (it
    /// only runs on an empty table). Skipped, it is retried next run.
    async fn release(&self, name: &str) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '2s'")
            .execute(&mut *tx)
            .await?;
        // `name` is readings_p + 8 digits
        let locked = sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await;
        match locked {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                tracing::info!(partition = %name, "packed day not truncated yet: readers held it");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let empty: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {name})"
        )))
        .fetch_one(&mut *tx)
        .await?;
        if empty {
            sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {name}")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One day's packing, in one transaction; returns the readings packed.
    async fn pack_day(&self, name: &str, rollups_from: i64) -> Result<i64, Error> {
        let packed = format!("packed_{name}");
        let hour = "ts_ms - (((ts_ms % 3600000) + 3600000) % 3600000)";
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        // writers of this day wait (readers do not): the rollups
        // recomputed below must see every reading of their hours
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {name} IN EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await?;
        // hours packed before that got late rows: unpack them into the raw
        // partition (the key drops a redelivered duplicate), to repack whole
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH old AS (
               DELETE FROM {packed} p USING (SELECT DISTINCT point_id, {hour} AS hour_ms FROM {name}) k
               WHERE p.point_id = k.point_id AND p.hour_ms = k.hour_ms
               RETURNING p.point_id, p.ts_ms, p.seq, p.value, p.quality, p.error_id)
             INSERT INTO {name} (point_id, ts_ms, seq, value, quality, error_id)
             SELECT o.point_id, u.* FROM old o,
                    UNNEST(o.ts_ms, o.seq, o.value, o.quality, o.error_id) AS u(ts_ms, seq, value, quality, error_id)
             ON CONFLICT DO NOTHING"
        )))
        .execute(&mut *tx)
        .await?;
        let readings: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "WITH moved AS (
               DELETE FROM {name} RETURNING point_id, ts_ms, seq, value, quality, error_id, {hour} AS hour_ms),
             packed AS (
               INSERT INTO {packed} (hour_ms, point_id, n, ts_ms, seq, value, quality, error_id)
               SELECT hour_ms, point_id, COUNT(*),
                      ARRAY_AGG(ts_ms ORDER BY ts_ms, seq), ARRAY_AGG(seq ORDER BY ts_ms, seq),
                      ARRAY_AGG(value ORDER BY ts_ms, seq), ARRAY_AGG(quality ORDER BY ts_ms, seq),
                      CASE WHEN COUNT(error_id) > 0 THEN ARRAY_AGG(error_id ORDER BY ts_ms, seq) END
               FROM moved GROUP BY hour_ms, point_id
               RETURNING n),
             rolled AS (
               INSERT INTO rollups_hourly (point_id, hour_ms, n, min_value, max_value, sum_value, last_ts_ms, last_value)
               SELECT point_id, hour_ms, COUNT(*), MIN(value), MAX(value), SUM(value), MAX(ts_ms),
                      (ARRAY_AGG(value ORDER BY ts_ms DESC, seq DESC))[1]
               FROM moved WHERE value IS NOT NULL AND hour_ms >= $1
               GROUP BY point_id, hour_ms
               ON CONFLICT (point_id, hour_ms) DO UPDATE SET
                 n = excluded.n, min_value = excluded.min_value, max_value = excluded.max_value,
                 sum_value = excluded.sum_value, last_ts_ms = excluded.last_ts_ms,
                 last_value = excluded.last_value)
             SELECT COALESCE(SUM(n), 0)::int8 FROM packed"
        )))
        .bind(rollups_from)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(readings)
    }

    pub async fn footprint(&self) -> Result<(u64, u64), Error> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(inhrelid)), 0)::int8 FROM pg_inherits
             WHERE inhparent IN ('readings'::regclass, 'packed_readings'::regclass)",
        )
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM readings) + (SELECT COALESCE(SUM(n), 0) FROM packed_readings)::int8",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((bytes as u64, n as u64))
    }
}
