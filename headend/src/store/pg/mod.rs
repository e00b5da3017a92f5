//! The PostgreSQL telemetry store, on sqlx's native driver: readings go in
//! as arrays (`UNNEST`), one insert per commit, and the newly stored ones
//! are rolled up by hour in the same transaction; readings are partitioned
//! by UTC day, made ahead (and on demand for times inside the retention
//! window). Times outside it land in `readings_default`. Finished days are
//! packed (one row per point and hour) and queries read both forms.
//! Partitions, retention and packing: [`maintenance`].

mod maintenance;

use std::collections::BTreeSet;
use std::sync::Mutex;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tankwatch_proto::v1;

use super::rows::{self, PointKey};
use super::{DimCache, Group, ReadingQuery, ReadingRow, Retention, RollupQuery, RollupRow};
use crate::Error;
use crate::domain::{Quality, UnixMs};

/// Partition work is serialised across replicas with this advisory lock.
const PARTITION_LOCK: i64 = 0x7461_6e6b_7061_7274; // "tankpart"
/// Rows one batched retention delete removes.
const RETENTION_STEP_ROWS: i64 = 20_000;

/// A reading as queried: point, seq, value, quality, error id, time.
type Row = (i32, i64, Option<f64>, i16, Option<i32>, i64);

pub struct PgTelemetry {
    pool: PgPool,
    retention: Retention,
    points: Mutex<DimCache<PointKey>>,
    errors: Mutex<DimCache<String>>,
    /// Day partitions known to exist (their start, ms).
    days: Mutex<BTreeSet<i64>>,
}

/// The insert for a group of new readings (all of them, the usual case).
const INSERT_NEW_READINGS: &str = "
INSERT INTO readings (point_id, ts_ms, seq, value, quality, error_id)
SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::int8[], $4::float8[], $5::int2[], $6::int4[])";

/// The insert for a group that holds readings already stored (a
/// redelivery): skips them and returns the rows stored now (for rollups).
const INSERT_READINGS: &str = "
INSERT INTO readings (point_id, ts_ms, seq, value, quality, error_id)
SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::int8[], $4::float8[], $5::int2[], $6::int4[])
ON CONFLICT DO NOTHING
RETURNING point_id, ts_ms, seq, value";

const UPSERT_LATEST: &str = "
INSERT INTO latest_values (site_id, asset_id, field, value, unit, quality, error, source_ts_ms, received_ts_ms, good_ts_ms, source)
SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::text[])
ON CONFLICT (site_id, asset_id, field) DO UPDATE SET
  value = CASE WHEN excluded.quality = 'bad' THEN latest_values.value ELSE excluded.value END,
  good_ts_ms = CASE WHEN excluded.quality = 'bad' THEN latest_values.good_ts_ms ELSE excluded.good_ts_ms END,
  unit = excluded.unit, quality = excluded.quality, error = excluded.error,
  source_ts_ms = excluded.source_ts_ms, received_ts_ms = excluded.received_ts_ms, source = excluded.source
WHERE excluded.source_ts_ms >= latest_values.source_ts_ms";

/// Adds newly stored readings' hours to `rollups_hourly` (one statement).
async fn upsert_rollups(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    r: &rows::Rollups,
) -> Result<(), Error> {
    if r.0.is_empty() {
        return Ok(());
    }
    /// point, hour, n, min, max, sum, last time, last value
    type Columns = (
        Vec<i32>,
        Vec<i64>,
        Vec<i64>,
        Vec<f64>,
        Vec<f64>,
        Vec<f64>,
        Vec<i64>,
        Vec<f64>,
    );
    let mut cols: Columns = Default::default();
    for ((point, hour), h) in &r.0 {
        cols.0.push(*point as i32);
        cols.1.push(*hour);
        cols.2.push(h.n);
        cols.3.push(h.min);
        cols.4.push(h.max);
        cols.5.push(h.sum);
        cols.6.push(h.last_ts_ms);
        cols.7.push(h.last);
    }
    sqlx::query(
        "INSERT INTO rollups_hourly (point_id, hour_ms, n, min_value, max_value, sum_value, last_ts_ms, last_value)
         SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::int8[], $4::float8[], $5::float8[], $6::float8[], $7::int8[], $8::float8[])
         ON CONFLICT (point_id, hour_ms) DO UPDATE SET
           n = rollups_hourly.n + excluded.n,
           min_value = LEAST(rollups_hourly.min_value, excluded.min_value),
           max_value = GREATEST(rollups_hourly.max_value, excluded.max_value),
           sum_value = rollups_hourly.sum_value + excluded.sum_value,
           last_value = CASE WHEN excluded.last_ts_ms >= rollups_hourly.last_ts_ms THEN excluded.last_value ELSE rollups_hourly.last_value END,
           last_ts_ms = GREATEST(rollups_hourly.last_ts_ms, excluded.last_ts_ms)",
    )
    .bind(&cols.0)
    .bind(&cols.1)
    .bind(&cols.2)
    .bind(&cols.3)
    .bind(&cols.4)
    .bind(&cols.5)
    .bind(&cols.6)
    .bind(&cols.7)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl PgTelemetry {
    /// Connects its own native pool to a migrated database.
    pub async fn open(
        url: &str,
        max_connections: u32,
        retention: Retention,
    ) -> Result<PgTelemetry, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| Error::Db(format!("telemetry store: {e}")))?;
        let t = PgTelemetry {
            pool,
            retention,
            points: Mutex::new(DimCache::default()),
            errors: Mutex::new(DimCache::default()),
            days: Mutex::new(BTreeSet::new()),
        };
        // a day counts as made when both its partitions exist
        let packed = t.packed_days().await?;
        for (_, day) in t.partitions().await? {
            if packed.contains(&day) {
                t.days_lock().insert(day);
            }
        }
        Ok(t)
    }

    fn days_lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.days.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Point ids of every reading of the group, in order (made as needed,
    /// in their own statement: a dimension row is harmless if the batch
    /// then fails).
    async fn point_ids(&self, g: &Group) -> Result<Vec<i32>, Error> {
        // the distinct points of the group, and each reading's index into them
        let mut seen: std::collections::HashMap<(&str, &str, &str, &str), usize> =
            std::collections::HashMap::new();
        let mut keys: Vec<PointKey> = Vec::new();
        let index: Vec<usize> = g
            .batches
            .iter()
            .flat_map(|b| &b.readings)
            .map(|r| {
                *seen
                    .entry((&r.asset_id, &r.field, &r.unit, &r.source))
                    .or_insert_with(|| {
                        keys.push(PointKey::of(&g.site, r));
                        keys.len() - 1
                    })
            })
            .collect();
        let missing: BTreeSet<(String, String, String, String, String)> = {
            let cache = self.points.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter()
                .filter(|k| cache.get(k).is_none())
                .map(|k| {
                    (
                        k.site.clone(),
                        k.asset.clone(),
                        k.field.clone(),
                        k.unit.clone(),
                        k.source.clone(),
                    )
                })
                .collect()
        };
        if !missing.is_empty() {
            let cols =
                |f: fn(&(String, String, String, String, String)) -> &String| -> Vec<String> {
                    missing.iter().map(|k| f(k).clone()).collect()
                };
            let (s, a, f, u, src) = (
                cols(|k| &k.0),
                cols(|k| &k.1),
                cols(|k| &k.2),
                cols(|k| &k.3),
                cols(|k| &k.4),
            );
            // sorted keys: two sessions inserting overlapping sets cannot deadlock
            sqlx::query(
                "INSERT INTO points (site_id, asset_id, field, unit, source)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(&s)
            .bind(&a)
            .bind(&f)
            .bind(&u)
            .bind(&src)
            .execute(&self.pool)
            .await?;
            let found: Vec<(i32, String, String, String, String, String)> = sqlx::query_as(
                "SELECT p.point_id, p.site_id, p.asset_id, p.field, p.unit, p.source FROM points p
                 JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS k(s, a, f, u, src)
                   ON p.site_id = k.s AND p.asset_id = k.a AND p.field = k.f AND p.unit = k.u AND p.source = k.src",
            )
            .bind(&s)
            .bind(&a)
            .bind(&f)
            .bind(&u)
            .bind(&src)
            .fetch_all(&self.pool)
            .await?;
            let mut cache = self.points.lock().unwrap_or_else(|p| p.into_inner());
            for (id, site, asset, field, unit, source) in found {
                cache.insert(
                    PointKey {
                        site,
                        asset,
                        field,
                        unit,
                        source,
                    },
                    i64::from(id),
                );
            }
        }
        let cache = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<i32> = keys
            .iter()
            .map(|k| {
                cache
                    .get(k)
                    .map(|id| id as i32)
                    .ok_or_else(|| Error::Db(format!("point {k:?} has no id")))
            })
            .collect::<Result<_, _>>()?;
        Ok(index.into_iter().map(|i| ids[i]).collect())
    }

    /// Error ids of every reading (None where it has no error).
    async fn error_ids(&self, g: &Group) -> Result<Vec<Option<i32>>, Error> {
        let texts: Vec<&str> = g
            .batches
            .iter()
            .flat_map(|b| &b.readings)
            .map(|r| r.error.as_str())
            .collect();
        let missing: BTreeSet<String> = {
            let cache = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            texts
                .iter()
                .filter(|t| !t.is_empty() && cache.get(&t.to_string()).is_none())
                .map(|t| t.to_string())
                .collect()
        };
        if !missing.is_empty() {
            let v: Vec<String> = missing.into_iter().collect();
            sqlx::query(
                "INSERT INTO reading_errors (text) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(&v)
            .execute(&self.pool)
            .await?;
            let found: Vec<(i32, String)> = sqlx::query_as(
                "SELECT error_id, text FROM reading_errors WHERE text = ANY($1::text[])",
            )
            .bind(&v)
            .fetch_all(&self.pool)
            .await?;
            let mut cache = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            for (id, t) in found {
                cache.insert(t, i64::from(id));
            }
        }
        let cache = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        texts
            .iter()
            .map(|t| {
                if t.is_empty() {
                    return Ok(None);
                }
                cache
                    .get(&t.to_string())
                    .map(|id| Some(id as i32))
                    .ok_or_else(|| Error::Db(format!("error text {t:?} has no id")))
            })
            .collect()
    }

    /// One session's batches in one transaction; returns the cumulative ack.
    pub async fn commit_group(&self, g: &Group, now_ms: i64) -> Result<u64, Error> {
        let Some(first) = g.batches.first() else {
            return Ok(0);
        };
        let log_id = first.log_id as i64;
        let points = self.point_ids(g).await?;
        let errors = self.error_ids(g).await?;
        self.partitions_for(g, now_ms).await?;
        let all = || g.batches.iter().flat_map(|b| &b.readings);
        let ts: Vec<i64> = all().map(|r| r.source_ts_ms).collect();
        let seq: Vec<i64> = all().map(|r| r.seq as i64).collect();
        let value: Vec<Option<f64>> = all().map(rows::stored_value).collect();
        let quality: Vec<i16> = all()
            .map(|r| Quality::from_proto(r.quality).sql())
            .collect();
        let mut tx = self.pool.begin().await?;
        if !ts.is_empty() {
            // The usual case: every reading is new, and a plain insert is
            // the fast way in. A redelivery collides with the key; the
            // savepoint then undoes the insert and the one that skips what
            // is stored (and says what it stored) runs instead. Not `COPY`:
            // sqlx 0.9 leaves Nagle's algorithm on, and COPY's separate
            // CopyDone write then waits ~40 ms for a delayed ACK whenever
            // the data fit in one segment (BENCHMARKS: 1,000-reading
            // commits took 43 ms by COPY; the drain went from 128k to 229k
            // readings/s by insert).
            sqlx::query("SAVEPOINT insert_fast")
                .execute(&mut *tx)
                .await?;
            // the six columns, bound alike to either insert
            macro_rules! columns {
                ($q:expr) => {
                    $q.bind(&points)
                        .bind(&ts)
                        .bind(&seq)
                        .bind(&value)
                        .bind(&quality)
                        .bind(&errors)
                };
            }
            let inserted = columns!(sqlx::query(INSERT_NEW_READINGS))
                .execute(&mut *tx)
                .await;
            let mut r = rows::Rollups::default();
            match inserted {
                Ok(_) => {
                    sqlx::query("RELEASE SAVEPOINT insert_fast")
                        .execute(&mut *tx)
                        .await?;
                    for i in 0..ts.len() {
                        r.add(i64::from(points[i]), ts[i], seq[i], value[i]);
                    }
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                    sqlx::query("ROLLBACK TO SAVEPOINT insert_fast")
                        .execute(&mut *tx)
                        .await?;
                    let stored: Vec<(i32, i64, i64, Option<f64>)> =
                        columns!(sqlx::query_as(INSERT_READINGS))
                            .fetch_all(&mut *tx)
                            .await?;
                    for (p, t, s, v) in stored {
                        r.add(i64::from(p), t, s, v);
                    }
                }
                Err(e) => return Err(e.into()),
            }
            upsert_rollups(&mut tx, &r).await?;
        }
        for b in &g.batches {
            for gap in &b.gaps {
                sqlx::query(
                    "INSERT INTO gaps (site_id, log_id, seq, first_seq, last_seq, count, class, reason, from_ts_ms, to_ts_ms, ingested_ms, device)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (site_id, log_id, seq) DO NOTHING",
                )
                .bind(g.site.as_str())
                .bind(log_id)
                .bind(gap.seq as i64)
                .bind(gap.first_seq as i64)
                .bind(gap.last_seq as i64)
                .bind(gap.count as i64)
                .bind(&gap.class)
                .bind(&gap.reason)
                .bind(gap.from_ts_ms)
                .bind(gap.to_ts_ms)
                .bind(now_ms)
                .bind(&gap.device)
                .execute(&mut *tx)
                .await?;
            }
        }
        let newest = rows::newest_per_field(&g.batches);
        if !newest.is_empty() {
            let q = |r: &v1::Reading| Quality::from_proto(r.quality);
            sqlx::query(UPSERT_LATEST)
                .bind(g.site.as_str())
                .bind(
                    newest
                        .iter()
                        .map(|r| r.asset_id.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(newest.iter().map(|r| r.field.clone()).collect::<Vec<_>>())
                .bind(newest.iter().map(|r| r.value).collect::<Vec<_>>())
                .bind(newest.iter().map(|r| r.unit.clone()).collect::<Vec<_>>())
                .bind(
                    newest
                        .iter()
                        .map(|r| q(r).as_str().to_string())
                        .collect::<Vec<_>>(),
                )
                .bind(newest.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
                .bind(newest.iter().map(|r| r.source_ts_ms).collect::<Vec<_>>())
                .bind(newest.iter().map(|r| r.received_ts_ms).collect::<Vec<_>>())
                .bind(
                    newest
                        .iter()
                        .map(|r| {
                            if q(r) == Quality::Bad {
                                0
                            } else {
                                r.source_ts_ms
                            }
                        })
                        .collect::<Vec<_>>(),
                )
                .bind(newest.iter().map(|r| r.source.clone()).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
        let acked: i64 = sqlx::query_scalar(
            "INSERT INTO agent_logs (site_id, log_id, acked_through, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (site_id, log_id) DO UPDATE SET
               acked_through = GREATEST(agent_logs.acked_through, excluded.acked_through),
               updated_ms = excluded.updated_ms
             RETURNING acked_through",
        )
        .bind(g.site.as_str())
        .bind(log_id)
        .bind(rows::ack_to(&g.batches))
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE sites SET last_seen_ms = $1 WHERE site_id = $2")
            .bind(now_ms)
            .bind(g.site.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(acked.max(0) as u64)
    }

    /// One asset's readings: its points first, then narrow rows by point
    /// id (the point's strings are not repeated on every row).
    pub async fn readings(&self, q: &ReadingQuery<'_>) -> Result<Vec<ReadingRow>, Error> {
        let points: Vec<(i32, String, String, String)> = sqlx::query_as(
            "SELECT point_id, field, unit, source FROM points
             WHERE site_id = $1 AND asset_id = $2 AND ($3::text IS NULL OR field = $3)",
        )
        .bind(q.site.as_str())
        .bind(q.asset)
        .bind(q.field)
        .fetch_all(&self.pool)
        .await?;
        if points.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i32> = points.iter().map(|p| p.0).collect();
        let dir = if q.newest_first { "DESC" } else { "ASC" };
        // Raw rows first, then packed ones: a day packed in between moves
        // its rows in one transaction, so it is then seen twice (and
        // deduplicated below), never missed.
        // `dir` is one of two constants
        let mut rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT point_id, seq, value, quality, error_id, ts_ms FROM readings
             WHERE point_id = ANY($1) AND ts_ms >= $2 AND ts_ms <= $3
             ORDER BY ts_ms {dir}, seq {dir} LIMIT $4"
        )))
        .bind(&ids)
        .bind(q.from_ms.ms())
        .bind(q.to_ms.ms())
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.extend(self.packed_rows(&ids, q, dir).await?);
        let key = |r: &Row| (r.5, r.1, r.0);
        if q.newest_first {
            rows.sort_unstable_by_key(|r| std::cmp::Reverse(key(r)));
        } else {
            rows.sort_unstable_by_key(key);
        }
        rows.dedup_by_key(|r| key(r));
        rows.truncate(usize::try_from(q.limit).unwrap_or(0));
        let error_ids: BTreeSet<i32> = rows.iter().filter_map(|r| r.4).collect();
        let errors: std::collections::HashMap<i32, String> = if error_ids.is_empty() {
            Default::default()
        } else {
            sqlx::query_as::<_, (i32, String)>(
                "SELECT error_id, text FROM reading_errors WHERE error_id = ANY($1)",
            )
            .bind(error_ids.into_iter().collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect()
        };
        let by_id: std::collections::HashMap<i32, &(i32, String, String, String)> =
            points.iter().map(|p| (p.0, p)).collect();
        rows.into_iter()
            .map(|(point, seq, value, quality, error, source_ts_ms)| {
                let p = by_id
                    .get(&point)
                    .ok_or_else(|| Error::Db(format!("reading of unknown point {point}")))?;
                Ok(ReadingRow {
                    seq,
                    field: p.1.clone(),
                    value,
                    unit: p.2.clone(),
                    quality: Quality::from_sql(quality.into())?,
                    error: error.and_then(|e| errors.get(&e).cloned()),
                    source_ts_ms: UnixMs::from_ms(source_ts_ms),
                    source: p.3.clone(),
                })
            })
            .collect()
    }

    /// The packed readings of these points inside the query's window, in
    /// its order, at least its `limit` of them where there are (whole
    /// hours are read; reading stops at the first hour past the limit).
    async fn packed_rows(
        &self,
        ids: &[i32],
        q: &ReadingQuery<'_>,
        dir: &str,
    ) -> Result<Vec<Row>, Error> {
        use tokio_stream::StreamExt;
        type Packed = (
            i32,
            i64,
            Vec<i64>,
            Vec<i64>,
            Vec<Option<f64>>,
            Vec<i16>,
            Option<Vec<Option<i32>>>,
        );
        let limit = usize::try_from(q.limit).unwrap_or(0);
        let mut out: Vec<Row> = Vec::new();
        // `dir` is one of two constants
        let sql = format!(
            "SELECT point_id, hour_ms, ts_ms, seq, value, quality, error_id FROM packed_readings
             WHERE point_id = ANY($1) AND hour_ms >= $2 AND hour_ms <= $3
             ORDER BY hour_ms {dir}"
        );
        let mut stream = sqlx::query_as::<_, Packed>(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .bind(rows::hour_of(q.from_ms.ms().max(i64::MIN + rows::HOUR_MS)))
            .bind(q.to_ms.ms())
            .fetch(&self.pool);
        let mut last_hour = None;
        while let Some(row) = stream.next().await {
            let (point, hour, ts, seq, value, quality, errors) = row?;
            if out.len() >= limit && last_hour != Some(hour) {
                break;
            }
            last_hour = Some(hour);
            if [seq.len(), value.len(), quality.len()] != [ts.len(); 3]
                || errors.as_ref().is_some_and(|e| e.len() != ts.len())
            {
                return Err(Error::Db(format!(
                    "packed readings of point {point} at hour {hour} have arrays of different lengths"
                )));
            }
            for i in 0..ts.len() {
                if (q.from_ms.ms()..=q.to_ms.ms()).contains(&ts[i]) {
                    let error = errors.as_ref().and_then(|e| e[i]);
                    out.push((point, seq[i], value[i], quality[i], error, ts[i]));
                }
            }
        }
        Ok(out)
    }

    pub async fn rollup_buckets(
        &self,
        q: &RollupQuery<'_>,
        bucket_ms: i64,
    ) -> Result<Vec<RollupRow>, Error> {
        type Row = (String, String, i64, i64, f64, f64, f64, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT p.field, p.unit, (h.hour_ms / $6) * $6 AS b, SUM(h.n)::BIGINT, MIN(h.min_value),
                    MAX(h.max_value), SUM(h.sum_value), MAX(h.last_ts_ms)
             FROM points p JOIN rollups_hourly h ON h.point_id = p.point_id
             WHERE p.site_id = $1 AND p.asset_id = $2 AND p.field = $3
               AND h.hour_ms >= $4 AND h.hour_ms <= $5
             GROUP BY p.field, p.unit, b ORDER BY b LIMIT $7",
        )
        .bind(q.site.as_str())
        .bind(q.asset)
        .bind(q.field.unwrap_or_default())
        .bind(q.from_ms.ms())
        .bind(q.to_ms.ms())
        .bind(bucket_ms.max(3_600_000))
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(field, unit, hour_ms, n, min, max, sum, last_ts_ms)| {
                let mean = if n > 0 { sum / n as f64 } else { 0.0 };
                RollupRow {
                    field,
                    unit,
                    hour_ms: UnixMs::from_ms(hour_ms),
                    n,
                    min,
                    max,
                    mean,
                    last_ts_ms: UnixMs::from_ms(last_ts_ms),
                    last: mean,
                }
            })
            .collect())
    }

    pub async fn rollups(&self, q: &RollupQuery<'_>) -> Result<Vec<RollupRow>, Error> {
        type Row = (String, String, i64, i64, f64, f64, f64, i64, f64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT p.field, p.unit, h.hour_ms, h.n, h.min_value, h.max_value, h.sum_value, h.last_ts_ms, h.last_value
             FROM points p JOIN rollups_hourly h ON h.point_id = p.point_id
             WHERE p.site_id = $1 AND p.asset_id = $2 AND ($3::text IS NULL OR p.field = $3)
               AND h.hour_ms >= $4 AND h.hour_ms <= $5
             ORDER BY h.hour_ms, p.field LIMIT $6",
        )
        .bind(q.site.as_str())
        .bind(q.asset)
        .bind(q.field)
        .bind(q.from_ms.ms())
        .bind(q.to_ms.ms())
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(field, unit, hour_ms, n, min, max, sum, last_ts_ms, last)| RollupRow {
                    field,
                    unit,
                    hour_ms: UnixMs::from_ms(hour_ms),
                    n,
                    min,
                    max,
                    mean: if n > 0 { sum / n as f64 } else { 0.0 },
                    last_ts_ms: UnixMs::from_ms(last_ts_ms),
                    last,
                },
            )
            .collect())
    }
}
