//! The SQLite telemetry store: one writer thread owning one rusqlite
//! connection with cached prepared statements (no `$N` name lookups, no
//! per-statement channel hop), fed by a bounded queue; reads on their own
//! connections in blocking tasks. WAL mode: readers never block the writer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::rows::{self, PointKey, Rollups};
use super::{
    DimCache, Group, ReadingQuery, ReadingRow, Retained, Retention, RollupQuery, RollupRow,
};
use crate::Error;
use crate::domain::{Quality, UnixMs};

/// Jobs waiting for the writer thread; when full, committers wait (their
/// sessions stop reading: backpressure to the agents).
const WRITER_QUEUE: usize = 16;
/// Idle read connections kept open.
const READERS_KEPT: usize = 4;
/// Rows one retention step deletes before it lets commits through.
const RETENTION_STEP_ROWS: u64 = 20_000;

fn db_err(e: rusqlite::Error) -> Error {
    Error::Sqlite(e)
}

enum Job {
    Commit {
        groups: Vec<Group>,
        now_ms: i64,
        reply: oneshot::Sender<Vec<Result<u64, Error>>>,
    },
    Retain {
        raw_cutoff: i64,
        rollup_cutoff: i64,
        after_point: i64,
        reply: oneshot::Sender<Result<(Retained, Option<i64>), Error>>,
    },
}

pub struct SqliteTelemetry {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
}

fn open(path: &Path) -> Result<Connection, Error> {
    let c = Connection::open(path).map_err(db_err)?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_err)?;
    // WAL: readers never block the writer; FULL: an acked batch survives power loss
    c.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    c.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    // 64 MiB of page cache: the readings B-tree's inner pages stay in memory
    c.pragma_update(None, "cache_size", -65_536)
        .map_err(db_err)?;
    c.set_prepared_statement_cache_capacity(32);
    Ok(c)
}

impl SqliteTelemetry {
    /// Opens the store on a migrated database file and starts its writer.
    pub fn open(path: &Path) -> Result<SqliteTelemetry, Error> {
        let conn = open(path)?;
        let (tx, mut rx) = mpsc::channel::<Job>(WRITER_QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut w = Writer {
                    conn,
                    points: DimCache::default(),
                    errors: DimCache::default(),
                };
                while let Some(job) = rx.blocking_recv() {
                    match job {
                        Job::Commit {
                            groups,
                            now_ms,
                            reply,
                        } => {
                            let _ = reply.send(w.commit(&groups, now_ms));
                        }
                        Job::Retain {
                            raw_cutoff,
                            rollup_cutoff,
                            after_point,
                            reply,
                        } => {
                            let _ =
                                reply.send(w.retain_step(raw_cutoff, rollup_cutoff, after_point));
                        }
                    }
                }
            })
            .map_err(|e| Error::Db(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(SqliteTelemetry {
            jobs: tx,
            path: path.to_path_buf(),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub async fn commit(&self, groups: Vec<Group>, now_ms: i64) -> Vec<Result<u64, Error>> {
        let n = groups.len();
        let (reply, rx) = oneshot::channel();
        let stopped = || {
            (0..n)
                .map(|_| Err(Error::Db("the SQLite writer thread stopped".into())))
                .collect()
        };
        if self
            .jobs
            .send(Job::Commit {
                groups,
                now_ms,
                reply,
            })
            .await
            .is_err()
        {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
    }

    /// Runs `f` on a read connection in a blocking task.
    async fn read<T: Send + 'static>(
        self: &SqliteTelemetry,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let conn = {
            let mut r = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            r.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&conn);
            (conn, out)
        })
        .await
        .map_err(|e| Error::Db(format!("sqlite reader: {e}")))?;
        let mut r = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() < READERS_KEPT {
            r.push(conn);
        }
        out
    }

    pub async fn readings(&self, q: &ReadingQuery<'_>) -> Result<Vec<ReadingRow>, Error> {
        let dir = if q.newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT r.seq, p.field, r.value, p.unit, r.quality, e.text, r.ts_ms, p.source
             FROM points p JOIN readings r ON r.point_id = p.point_id
             LEFT JOIN reading_errors e ON e.error_id = r.error_id
             WHERE p.site_id = ?1 AND p.asset_id = ?2 AND (?3 IS NULL OR p.field = ?3)
               AND r.ts_ms >= ?4 AND r.ts_ms <= ?5
             ORDER BY r.ts_ms {dir}, r.seq {dir} LIMIT ?6"
        );
        let (site, asset, field) = (
            q.site.to_string(),
            q.asset.to_string(),
            q.field.map(str::to_string),
        );
        let (from, to, limit) = (q.from_ms.ms(), q.to_ms.ms(), q.limit);
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql).map_err(db_err)?;
            let rows = st
                .query_map(params![site, asset, field, from, to, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<f64>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for r in rows {
                let (seq, field, value, unit, quality, error, source_ts_ms, source) =
                    r.map_err(db_err)?;
                out.push(ReadingRow {
                    seq,
                    field,
                    value,
                    unit,
                    quality: Quality::from_sql(quality)?,
                    error,
                    source_ts_ms: UnixMs::from_ms(source_ts_ms),
                    source,
                });
            }
            Ok(out)
        })
        .await
    }

    pub async fn rollup_buckets(
        &self,
        q: &RollupQuery<'_>,
        bucket_ms: i64,
    ) -> Result<Vec<RollupRow>, Error> {
        let (site, asset, field) = (
            q.site.to_string(),
            q.asset.to_string(),
            q.field.unwrap_or_default().to_string(),
        );
        let (from, to, limit, bucket) = (
            q.from_ms.ms(),
            q.to_ms.ms(),
            q.limit,
            bucket_ms.max(3_600_000),
        );
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT p.field, p.unit, (h.hour_ms / ?6) * ?6 AS b, SUM(h.n), MIN(h.min_value),
                            MAX(h.max_value), SUM(h.sum_value), MAX(h.last_ts_ms)
                     FROM points p JOIN rollups_hourly h ON h.point_id = p.point_id
                     WHERE p.site_id = ?1 AND p.asset_id = ?2 AND p.field = ?3
                       AND h.hour_ms >= ?4 AND h.hour_ms <= ?5
                     GROUP BY p.field, p.unit, b ORDER BY b LIMIT ?7",
                )
                .map_err(db_err)?;
            let rows = st
                .query_map(params![site, asset, field, from, to, bucket, limit], |r| {
                    let n: i64 = r.get(3)?;
                    let sum: f64 = r.get(6)?;
                    let mean = if n > 0 { sum / n as f64 } else { 0.0 };
                    Ok(RollupRow {
                        field: r.get(0)?,
                        unit: r.get(1)?,
                        hour_ms: UnixMs::from_ms(r.get(2)?),
                        n,
                        min: r.get(4)?,
                        max: r.get(5)?,
                        mean,
                        last_ts_ms: UnixMs::from_ms(r.get(7)?),
                        last: mean,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    pub async fn rollups(&self, q: &RollupQuery<'_>) -> Result<Vec<RollupRow>, Error> {
        let (site, asset, field) = (
            q.site.to_string(),
            q.asset.to_string(),
            q.field.map(str::to_string),
        );
        let (from, to, limit) = (q.from_ms.ms(), q.to_ms.ms(), q.limit);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT p.field, p.unit, h.hour_ms, h.n, h.min_value, h.max_value, h.sum_value, h.last_ts_ms, h.last_value
                     FROM points p JOIN rollups_hourly h ON h.point_id = p.point_id
                     WHERE p.site_id = ?1 AND p.asset_id = ?2 AND (?3 IS NULL OR p.field = ?3)
                       AND h.hour_ms >= ?4 AND h.hour_ms <= ?5
                     ORDER BY h.hour_ms, p.field LIMIT ?6",
                )
                .map_err(db_err)?;
            let rows = st
                .query_map(params![site, asset, field, from, to, limit], |r| {
                    let n: i64 = r.get(3)?;
                    let sum: f64 = r.get(6)?;
                    Ok(RollupRow {
                        field: r.get(0)?,
                        unit: r.get(1)?,
                        hour_ms: UnixMs::from_ms(r.get(2)?),
                        n,
                        min: r.get(4)?,
                        max: r.get(5)?,
                        mean: if n > 0 { sum / n as f64 } else { 0.0 },
                        last_ts_ms: UnixMs::from_ms(r.get(7)?),
                        last: r.get(8)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    pub async fn retain(&self, r: Retention, now_ms: i64) -> Result<Retained, Error> {
        let mut total = Retained::default();
        let mut after_point = 0;
        loop {
            let (reply, rx) = oneshot::channel();
            self.jobs
                .send(Job::Retain {
                    raw_cutoff: r.raw_cutoff(now_ms),
                    rollup_cutoff: r.rollup_cutoff(now_ms),
                    after_point,
                    reply,
                })
                .await
                .map_err(|_| Error::Db("the SQLite writer thread stopped".into()))?;
            let (step, next) = rx
                .await
                .map_err(|_| Error::Db("the SQLite writer thread stopped".into()))??;
            total.readings += step.readings;
            total.rollups += step.rollups;
            match next {
                Some(p) => after_point = p,
                None => return Ok(total),
            }
        }
    }

    pub async fn footprint(&self) -> Result<(u64, u64), Error> {
        self.read(|c| {
            // dbstat: the pages of the readings B-tree (table = its key)
            let bytes: i64 = c
                .query_row(
                    "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = 'readings'",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
                .map_err(db_err)?;
            Ok((bytes as u64, n as u64))
        })
        .await
    }
}

/// The writer thread's state: its connection and the dimension caches
/// (entries are added only after the transaction that made them commits).
struct Writer {
    conn: Connection,
    points: DimCache<PointKey>,
    errors: DimCache<String>,
}

/// Dimension ids made inside a transaction, not yet committed.
#[derive(Default)]
struct Pending {
    points: Vec<(PointKey, i64)>,
    errors: Vec<(String, i64)>,
}

impl Pending {
    fn point(&self, k: &PointKey) -> Option<i64> {
        self.points
            .iter()
            .rev()
            .find(|(p, _)| p == k)
            .map(|(_, id)| *id)
    }
    fn error(&self, k: &str) -> Option<i64> {
        self.errors
            .iter()
            .rev()
            .find(|(p, _)| p == k)
            .map(|(_, id)| *id)
    }
    fn absorb(&mut self, o: Pending) {
        self.points.extend(o.points);
        self.errors.extend(o.errors);
    }
}

impl Writer {
    fn commit(&mut self, groups: &[Group], now_ms: i64) -> Vec<Result<u64, Error>> {
        match self.commit_all(groups, now_ms) {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                (0..groups.len())
                    .map(|_| Err(Error::Db(msg.clone())))
                    .collect()
            }
        }
    }

    fn commit_all(
        &mut self,
        groups: &[Group],
        now_ms: i64,
    ) -> Result<Vec<Result<u64, Error>>, Error> {
        let Writer {
            conn,
            points,
            errors,
        } = self;
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(groups.len());
        let mut pending = Pending::default();
        let mut rollups = Rollups::default();
        for g in groups {
            let sp = tx.savepoint().map_err(db_err)?;
            let mut mine = Pending::default();
            let mut r = Rollups::default();
            let res = write_group(&sp, g, now_ms, points, errors, &pending, &mut mine, &mut r);
            match res {
                Ok(acked) => {
                    sp.commit().map_err(db_err)?;
                    pending.absorb(mine);
                    rollups.absorb(r);
                    out.push(Ok(acked));
                }
                Err(e) => {
                    drop(sp); // rolls this group back, keeps the others
                    tracing::warn!(site = %g.site, error = %e, "group refused by SQLite; the other sessions' batches commit");
                    out.push(Err(e));
                }
            }
        }
        upsert_rollups(&tx, &rollups)?;
        tx.commit().map_err(db_err)?;
        for (k, id) in pending.points {
            points.insert(k, id);
        }
        for (k, id) in pending.errors {
            errors.insert(k, id);
        }
        Ok(out)
    }

    fn retain_step(
        &mut self,
        raw_cutoff: i64,
        rollup_cutoff: i64,
        after_point: i64,
    ) -> Result<(Retained, Option<i64>), Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut done = Retained::default();
        let mut next = None;
        {
            let mut pts = tx
                .prepare_cached(
                    "SELECT point_id FROM points WHERE point_id > ?1 ORDER BY point_id LIMIT 256",
                )
                .map_err(db_err)?;
            let ids: Vec<i64> = pts
                .query_map([after_point], |r| r.get(0))
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?;
            let mut raw = tx
                .prepare_cached("DELETE FROM readings WHERE point_id = ?1 AND ts_ms < ?2")
                .map_err(db_err)?;
            let mut hourly = tx
                .prepare_cached("DELETE FROM rollups_hourly WHERE point_id = ?1 AND hour_ms < ?2")
                .map_err(db_err)?;
            let mut finished = true;
            for id in &ids {
                done.readings += raw.execute(params![id, raw_cutoff]).map_err(db_err)? as u64;
                done.rollups += hourly.execute(params![id, rollup_cutoff]).map_err(db_err)? as u64;
                next = Some(*id);
                if done.readings >= RETENTION_STEP_ROWS {
                    finished = false;
                    break;
                }
            }
            if finished && ids.len() < 256 {
                next = None; // past the last point
            }
        }
        tx.commit().map_err(db_err)?;
        Ok((done, next))
    }
}

#[allow(clippy::too_many_arguments)]
fn write_group(
    c: &Connection,
    g: &Group,
    now_ms: i64,
    points: &DimCache<PointKey>,
    errors: &DimCache<String>,
    outer: &Pending,
    mine: &mut Pending,
    rollups: &mut Rollups,
) -> Result<u64, Error> {
    let site = g.site.as_str();
    let Some(first) = g.batches.first() else {
        return Ok(0);
    };
    let log_id = first.log_id as i64;
    let mut ins = c
        .prepare_cached(
            "INSERT INTO readings (point_id, ts_ms, seq, value, quality, error_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )
        .map_err(db_err)?;
    for b in &g.batches {
        for r in &b.readings {
            let key = PointKey::of(site, r);
            let point = match points
                .get(&key)
                .or_else(|| outer.point(&key))
                .or_else(|| mine.point(&key))
            {
                Some(id) => id,
                None => {
                    let id = point_id(c, &key)?;
                    mine.points.push((key, id));
                    id
                }
            };
            let error = if r.error.is_empty() {
                None
            } else {
                Some(
                    match errors
                        .get(&r.error)
                        .or_else(|| outer.error(&r.error))
                        .or_else(|| mine.error(&r.error))
                    {
                        Some(id) => id,
                        None => {
                            let id = error_id(c, &r.error)?;
                            mine.errors.push((r.error.clone(), id));
                            id
                        }
                    },
                )
            };
            let value = rows::stored_value(r);
            let q = Quality::from_proto(r.quality);
            let n = ins
                .execute(params![
                    point,
                    r.source_ts_ms,
                    r.seq as i64,
                    value,
                    q.sql(),
                    error
                ])
                .map_err(db_err)?;
            if n == 1 {
                rollups.add(point, r.source_ts_ms, r.seq as i64, value);
            }
        }
        for gap in &b.gaps {
            c.prepare_cached(
                "INSERT INTO gaps (site_id, log_id, seq, first_seq, last_seq, count, class, reason, from_ts_ms, to_ts_ms, ingested_ms, device)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (site_id, log_id, seq) DO NOTHING",
            )
            .map_err(db_err)?
            .execute(params![
                site,
                log_id,
                gap.seq as i64,
                gap.first_seq as i64,
                gap.last_seq as i64,
                gap.count as i64,
                gap.class,
                gap.reason,
                gap.from_ts_ms,
                gap.to_ts_ms,
                now_ms,
                gap.device
            ])
            .map_err(db_err)?;
        }
    }
    let mut latest = c
        .prepare_cached(
            "INSERT INTO latest_values (site_id, asset_id, field, value, unit, quality, error, source_ts_ms, received_ts_ms, good_ts_ms, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (site_id, asset_id, field) DO UPDATE SET
               value = CASE WHEN excluded.quality = 'bad' THEN latest_values.value ELSE excluded.value END,
               good_ts_ms = CASE WHEN excluded.quality = 'bad' THEN latest_values.good_ts_ms ELSE excluded.good_ts_ms END,
               unit = excluded.unit, quality = excluded.quality, error = excluded.error,
               source_ts_ms = excluded.source_ts_ms, received_ts_ms = excluded.received_ts_ms, source = excluded.source
             WHERE excluded.source_ts_ms >= latest_values.source_ts_ms",
        )
        .map_err(db_err)?;
    for r in rows::newest_per_field(&g.batches) {
        let q = Quality::from_proto(r.quality);
        latest
            .execute(params![
                site,
                r.asset_id,
                r.field,
                r.value,
                r.unit,
                q.as_str(),
                r.error,
                r.source_ts_ms,
                r.received_ts_ms,
                if q == Quality::Bad { 0 } else { r.source_ts_ms },
                r.source
            ])
            .map_err(db_err)?;
    }
    let acked: i64 = c
        .prepare_cached(
            "INSERT INTO agent_logs (site_id, log_id, acked_through, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (site_id, log_id) DO UPDATE SET
               acked_through = MAX(agent_logs.acked_through, excluded.acked_through),
               updated_ms = excluded.updated_ms
             RETURNING acked_through",
        )
        .map_err(db_err)?
        .query_row(params![site, log_id, rows::ack_to(&g.batches), now_ms], |r| r.get(0))
        .map_err(db_err)?;
    c.prepare_cached("UPDATE sites SET last_seen_ms = ?1 WHERE site_id = ?2")
        .map_err(db_err)?
        .execute(params![now_ms, site])
        .map_err(db_err)?;
    Ok(acked.max(0) as u64)
}

fn point_id(c: &Connection, k: &PointKey) -> Result<i64, Error> {
    c.prepare_cached(
        "INSERT INTO points (site_id, asset_id, field, unit, source) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
    )
    .map_err(db_err)?
    .execute(params![k.site, k.asset, k.field, k.unit, k.source])
    .map_err(db_err)?;
    c.prepare_cached(
        "SELECT point_id FROM points WHERE site_id = ?1 AND asset_id = ?2 AND field = ?3 AND unit = ?4 AND source = ?5",
    )
    .map_err(db_err)?
    .query_row(params![k.site, k.asset, k.field, k.unit, k.source], |r| r.get(0))
    .map_err(db_err)
}

fn error_id(c: &Connection, text: &str) -> Result<i64, Error> {
    c.prepare_cached("INSERT INTO reading_errors (text) VALUES (?1) ON CONFLICT DO NOTHING")
        .map_err(db_err)?
        .execute([text])
        .map_err(db_err)?;
    c.prepare_cached("SELECT error_id FROM reading_errors WHERE text = ?1")
        .map_err(db_err)?
        .query_row([text], |r| r.get(0))
        .map_err(db_err)
}

fn upsert_rollups(c: &Connection, r: &Rollups) -> Result<(), Error> {
    if r.0.is_empty() {
        return Ok(());
    }
    let mut st = c
        .prepare_cached(
            "INSERT INTO rollups_hourly (point_id, hour_ms, n, min_value, max_value, sum_value, last_ts_ms, last_value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (point_id, hour_ms) DO UPDATE SET
               n = rollups_hourly.n + excluded.n,
               min_value = MIN(rollups_hourly.min_value, excluded.min_value),
               max_value = MAX(rollups_hourly.max_value, excluded.max_value),
               sum_value = rollups_hourly.sum_value + excluded.sum_value,
               last_value = CASE WHEN excluded.last_ts_ms >= rollups_hourly.last_ts_ms THEN excluded.last_value ELSE rollups_hourly.last_value END,
               last_ts_ms = MAX(rollups_hourly.last_ts_ms, excluded.last_ts_ms)",
        )
        .map_err(db_err)?;
    for ((point, hour), h) in &r.0 {
        st.execute(params![
            point,
            hour,
            h.n,
            h.min,
            h.max,
            h.sum,
            h.last_ts_ms,
            h.last
        ])
        .map_err(db_err)?;
    }
    Ok(())
}
