//! SQL storage through sqlx. One code path for both backends via sqlx's
//! `Any` driver: `sqlite://` (the embedded default) or `postgres://`,
//! selected by the URL scheme. Migrations are embedded per backend and run
//! at start. Queries use `$n` placeholders, which both backends accept.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tankwatch_proto::v1;

use crate::Error;

/// Readings per INSERT statement (13 columns: stays far below both
/// backends' bind-parameter limits).
const ROWS_PER_INSERT: usize = 400;

/// Which SQL backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::Config(format!(
                "database URL {url:?}: unsupported scheme; use sqlite://PATH or postgres://USER@HOST/DB"
            )))
        }
    }
}

/// The database handle shared by ingest and the REST API.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    pub backend: Backend,
    /// SQLite has one writer: transactions that write queue here, in
    /// process, instead of spinning in SQLite's busy handler (its sleeps
    /// of up to 100 ms made every commit wait behind the others).
    /// PostgreSQL writes concurrently (no permit needed).
    writer: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

/// A write transaction (holding the SQLite writer permit, if any).
pub type WriteTx = (
    Option<tokio::sync::OwnedSemaphorePermit>,
    sqlx::Transaction<'static, sqlx::Any>,
);

/// What a hello tells us about a site.
pub struct HelloInfo<'a> {
    pub site: &'a str,
    pub hello: &'a v1::Hello,
}

fn log_id_sql(log_id: u64) -> i64 {
    log_id as i64
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn quality_str(q: i32) -> &'static str {
    match v1::Quality::try_from(q) {
        Ok(v1::Quality::Good) => "good",
        Ok(v1::Quality::Uncertain) => "uncertain",
        _ => "bad",
    }
}

impl Db {
    /// Connects, creating a SQLite file (and its directory) if needed, and runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_string();
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or("");
            let dir = std::path::Path::new(path).parent();
            if let Some(dir) = dir.filter(|d| path != ":memory:" && !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite {
                max_connections.min(4)
            } else {
                max_connections
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer; FULL sync: an acked batch survives power loss.
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous=FULL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| Error::Db(format!("connecting to {}: {e}", redact(&url))))?;
        let writer = (backend == Backend::Sqlite)
            .then(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)));
        let db = Db {
            pool,
            backend,
            writer,
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), Error> {
        let m = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        m.run(&self.pool)
            .await
            .map_err(|e| Error::Db(format!("migrations: {e}")))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that writes (queued behind other writers on SQLite).
    pub async fn begin_write(&self) -> Result<WriteTx, Error> {
        let permit = match &self.writer {
            Some(w) => Some(
                w.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Db("writer closed".into()))?,
            ),
            None => None,
        };
        Ok((permit, self.pool.begin().await?))
    }

    /// `SELECT 1`: readiness probe.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Records a hello: the site, its agent version and its assets. Returns
    /// the log's committed high-water mark.
    pub async fn record_hello(&self, h: HelloInfo<'_>) -> Result<u64, Error> {
        let now = now_ms();
        let (_w, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sites (site_id, first_seen_ms, last_seen_ms, agent_version) VALUES ($1, $2, $2, $3)
             ON CONFLICT (site_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms, agent_version = excluded.agent_version",
        )
        .bind(h.site)
        .bind(now)
        .bind(&h.hello.agent_version)
        .execute(&mut *tx)
        .await?;
        for a in &h.hello.assets {
            let kind = match v1::AssetKind::try_from(a.kind) {
                Ok(v1::AssetKind::Tank) => "tank",
                Ok(v1::AssetKind::Controller) => "controller",
                _ => "unknown",
            };
            let details = serde_json::to_string(&a.details).unwrap_or_else(|_| "{}".into());
            let writable = serde_json::Value::Array(
                a.writable
                    .iter()
                    .map(|w| {
                        serde_json::json!({ "field": w.field, "min": w.min, "max": w.max, "default": w.default })
                    })
                    .collect(),
            )
            .to_string();
            sqlx::query(
                "INSERT INTO assets (site_id, asset_id, kind, name, product, capacity, capacity_unit, details, updated_ms, writable)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (site_id, asset_id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                   product = excluded.product, capacity = excluded.capacity, capacity_unit = excluded.capacity_unit,
                   details = excluded.details, updated_ms = excluded.updated_ms, writable = excluded.writable",
            )
            .bind(h.site)
            .bind(&a.asset_id)
            .bind(kind)
            .bind(&a.name)
            .bind(&a.product)
            .bind(a.capacity)
            .bind(&a.capacity_unit)
            .bind(details)
            .bind(now)
            .bind(writable)
            .execute(&mut *tx)
            .await?;
        }
        let acked: Option<i64> = sqlx::query_scalar(
            "SELECT acked_through FROM agent_logs WHERE site_id = $1 AND log_id = $2",
        )
        .bind(h.site)
        .bind(log_id_sql(h.hello.log_id))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(acked.unwrap_or(0).max(0) as u64)
    }

    /// Commits one telemetry batch in one transaction. Readings already
    /// stored (same site, log, seq) are skipped. Returns the log's new
    /// cumulative ack (>= `batch.last_seq`); a preview batch is stored but
    /// does not move the ack (see the proto).
    pub async fn ingest(&self, site: &str, batch: &v1::TelemetryBatch) -> Result<u64, Error> {
        self.ingest_many(site, std::slice::from_ref(batch)).await
    }

    /// Commits several batches of one log in one transaction (the ingest
    /// pipeline coalesces what is queued); returns the cumulative ack.
    pub async fn ingest_many(
        &self,
        site: &str,
        batches: &[v1::TelemetryBatch],
    ) -> Result<u64, Error> {
        let (_w, mut tx) = self.begin_write().await?;
        let acked = self.ingest_in(&mut tx, site, batches).await?;
        tx.commit().await?;
        Ok(acked)
    }

    /// Commits the batches of several sessions in one transaction (one
    /// fsync): SQLite's group commit across agents. Returns each group's
    /// cumulative ack in order. When the shared transaction fails, each
    /// group is retried in its own, so that one bad batch fails only its
    /// own session.
    pub async fn ingest_groups(
        &self,
        groups: &[(String, Vec<v1::TelemetryBatch>)],
    ) -> Vec<Result<u64, Error>> {
        let shared = async {
            let (_w, mut tx) = self.begin_write().await?;
            let mut acks = Vec::with_capacity(groups.len());
            for (site, batches) in groups {
                acks.push(self.ingest_in(&mut tx, site, batches).await?);
            }
            tx.commit().await?;
            Ok::<_, Error>(acks)
        };
        match shared.await {
            Ok(acks) => acks.into_iter().map(Ok).collect(),
            Err(e) if groups.len() > 1 => {
                tracing::warn!(error = %e, groups = groups.len(), "group commit failed; committing each session alone");
                let mut out = Vec::with_capacity(groups.len());
                for (site, batches) in groups {
                    out.push(self.ingest_many(site, batches).await);
                }
                out
            }
            Err(e) => vec![Err(e)],
        }
    }

    /// The body of a batch commit, inside the caller's transaction.
    async fn ingest_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        site: &str,
        batches: &[v1::TelemetryBatch],
    ) -> Result<u64, Error> {
        let Some(first) = batches.first() else {
            return Ok(0);
        };
        let now = now_ms();
        let log_id = log_id_sql(first.log_id);
        for batch in batches {
            self.insert_batch(tx, site, log_id, now, batch).await?;
        }
        let ack_to = batches
            .iter()
            .filter(|b| !b.preview)
            .map(|b| b.last_seq as i64)
            .max()
            .unwrap_or(0);
        let acked: i64 = sqlx::query_scalar(
            "INSERT INTO agent_logs (site_id, log_id, acked_through, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (site_id, log_id) DO UPDATE SET
               acked_through = CASE WHEN excluded.acked_through > agent_logs.acked_through THEN excluded.acked_through ELSE agent_logs.acked_through END,
               updated_ms = excluded.updated_ms
             RETURNING acked_through",
        )
        .bind(site)
        .bind(log_id)
        // previews leave the cumulative ack where it is (0 never raises it)
        .bind(ack_to)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query("UPDATE sites SET last_seen_ms = $1 WHERE site_id = $2")
            .bind(now)
            .bind(site)
            .execute(&mut **tx)
            .await?;
        Ok(acked.max(0) as u64)
    }

    async fn insert_batch(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        site: &str,
        log_id: i64,
        now: i64,
        batch: &v1::TelemetryBatch,
    ) -> Result<(), Error> {
        for chunk in batch.readings.chunks(ROWS_PER_INSERT) {
            let mut sql = String::with_capacity(128 + chunk.len() * 80);
            sql.push_str(
                "INSERT INTO readings (site_id, log_id, seq, asset_id, field, value, unit, quality, source_ts_ms, received_ts_ms, ingested_ms, source, error) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 13;
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 1..=13 {
                    if c > 1 {
                        sql.push(',');
                    }
                    sql.push('$');
                    sql.push_str(&(b + c).to_string());
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (site_id, log_id, seq) DO NOTHING");
            // Only `$n` placeholders are generated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(site)
                    .bind(log_id)
                    .bind(r.seq as i64)
                    .bind(&r.asset_id)
                    .bind(&r.field)
                    .bind(r.value)
                    .bind(&r.unit)
                    .bind(quality_str(r.quality))
                    .bind(r.source_ts_ms)
                    .bind(r.received_ts_ms)
                    .bind(now)
                    .bind(&r.source)
                    .bind(&r.error);
            }
            q.execute(&mut **tx).await?;
        }
        crate::commands::apply_agent_records(tx, site, log_id, now, batch).await?;
        // newest reading per point in this batch
        let mut newest: HashMap<(&str, &str), &v1::Reading> = HashMap::new();
        for r in &batch.readings {
            let e = newest
                .entry((r.asset_id.as_str(), r.field.as_str()))
                .or_insert(r);
            if (r.source_ts_ms, r.seq) >= (e.source_ts_ms, e.seq) {
                *e = r;
            }
        }
        for r in newest.values() {
            let q = quality_str(r.quality);
            sqlx::query(
                "INSERT INTO latest_values (site_id, asset_id, field, value, unit, quality, error, source_ts_ms, received_ts_ms, good_ts_ms, source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (site_id, asset_id, field) DO UPDATE SET
                   value = CASE WHEN excluded.quality = 'bad' THEN latest_values.value ELSE excluded.value END,
                   good_ts_ms = CASE WHEN excluded.quality = 'bad' THEN latest_values.good_ts_ms ELSE excluded.good_ts_ms END,
                   unit = excluded.unit, quality = excluded.quality, error = excluded.error,
                   source_ts_ms = excluded.source_ts_ms, received_ts_ms = excluded.received_ts_ms, source = excluded.source
                 WHERE excluded.source_ts_ms >= latest_values.source_ts_ms",
            )
            .bind(site)
            .bind(&r.asset_id)
            .bind(&r.field)
            .bind(r.value)
            .bind(&r.unit)
            .bind(q)
            .bind(&r.error)
            .bind(r.source_ts_ms)
            .bind(r.received_ts_ms)
            .bind(if q == "bad" { 0 } else { r.source_ts_ms })
            .bind(&r.source)
            .execute(&mut **tx)
            .await?;
        }
        for g in &batch.gaps {
            sqlx::query(
                "INSERT INTO gaps (site_id, log_id, seq, first_seq, last_seq, count, class, reason, from_ts_ms, to_ts_ms, ingested_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (site_id, log_id, seq) DO NOTHING",
            )
            .bind(site)
            .bind(log_id)
            .bind(g.seq as i64)
            .bind(g.first_seq as i64)
            .bind(g.last_seq as i64)
            .bind(g.count as i64)
            .bind(&g.class)
            .bind(&g.reason)
            .bind(g.from_ts_ms)
            .bind(g.to_ts_ms)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    pub async fn sites(&self) -> Result<Vec<SiteRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT s.site_id, s.first_seen_ms, s.last_seen_ms, s.agent_version,
                    (SELECT COUNT(*) FROM assets a WHERE a.site_id = s.site_id) AS assets
             FROM sites s ORDER BY s.site_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn site_exists(&self, site: &str) -> Result<bool, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sites WHERE site_id = $1")
            .bind(site)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    pub async fn assets(&self, site: &str) -> Result<Vec<AssetRow>, Error> {
        let mut assets: Vec<AssetRow> = sqlx::query_as(
            "SELECT asset_id, kind, name, product, capacity, capacity_unit, details FROM assets WHERE site_id = $1 ORDER BY asset_id",
        )
        .bind(site)
        .fetch_all(&self.pool)
        .await?;
        let latest: Vec<LatestRow> = sqlx::query_as(
            "SELECT asset_id, field, value, unit, quality, error, source_ts_ms, received_ts_ms, good_ts_ms, source
             FROM latest_values WHERE site_id = $1 ORDER BY asset_id, field",
        )
        .bind(site)
        .fetch_all(&self.pool)
        .await?;
        for v in latest {
            match assets.iter_mut().find(|a| a.asset_id == v.asset_id) {
                Some(a) => a.fields.push(v),
                // readings for an asset the config did not declare: show it anyway
                None => assets.push(AssetRow {
                    asset_id: v.asset_id.clone(),
                    kind: "unknown".into(),
                    name: String::new(),
                    product: String::new(),
                    capacity: 0.0,
                    capacity_unit: String::new(),
                    details: "{}".into(),
                    fields: vec![v],
                }),
            }
        }
        Ok(assets)
    }

    pub async fn readings(&self, q: &ReadingQuery<'_>) -> Result<Vec<ReadingRow>, Error> {
        const BASE: &str = "SELECT seq, field, value, unit, quality, error, source_ts_ms, received_ts_ms, source FROM readings
             WHERE site_id = $1 AND asset_id = $2 AND source_ts_ms >= $3 AND source_ts_ms <= $4";
        let dir = if q.newest_first { "DESC" } else { "ASC" };
        let query = match q.field {
            Some(f) => sqlx::query_as::<_, ReadingRow>(sqlx::AssertSqlSafe(format!(
                "{BASE} AND field = $6 ORDER BY source_ts_ms {dir}, seq {dir} LIMIT $5"
            )))
            .bind(q.site)
            .bind(q.asset)
            .bind(q.from_ms)
            .bind(q.to_ms)
            .bind(q.limit)
            .bind(f),
            None => sqlx::query_as::<_, ReadingRow>(sqlx::AssertSqlSafe(format!(
                "{BASE} ORDER BY source_ts_ms {dir}, seq {dir} LIMIT $5"
            )))
            .bind(q.site)
            .bind(q.asset)
            .bind(q.from_ms)
            .bind(q.to_ms)
            .bind(q.limit),
        };
        Ok(query.fetch_all(&self.pool).await?)
    }
}

impl Db {
    /// Data a site's agent dropped (gap records), newest first.
    pub async fn gaps(&self, site: &str, limit: i64) -> Result<Vec<GapRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT log_id, seq, first_seq, last_seq, count, class, reason, from_ts_ms, to_ts_ms, ingested_ms
             FROM gaps WHERE site_id = $1 ORDER BY from_ts_ms DESC, seq DESC LIMIT $2",
        )
        .bind(site)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
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
    pub from_ts_ms: i64,
    pub to_ts_ms: i64,
    pub ingested_ms: i64,
}

fn redact(url: &str) -> String {
    // never log a password embedded in a URL
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

#[derive(sqlx::FromRow)]
pub struct SiteRow {
    pub site_id: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub agent_version: String,
    pub assets: i64,
}

#[derive(sqlx::FromRow)]
pub struct AssetRow {
    pub asset_id: String,
    pub kind: String,
    pub name: String,
    pub product: String,
    pub capacity: f64,
    pub capacity_unit: String,
    pub details: String,
    #[sqlx(skip)]
    pub fields: Vec<LatestRow>,
}

#[derive(sqlx::FromRow)]
pub struct LatestRow {
    pub asset_id: String,
    pub field: String,
    pub value: f64,
    pub unit: String,
    pub quality: String,
    pub error: String,
    pub source_ts_ms: i64,
    pub received_ts_ms: i64,
    pub good_ts_ms: i64,
    pub source: String,
}

pub struct ReadingQuery<'a> {
    pub site: &'a str,
    pub asset: &'a str,
    pub field: Option<&'a str>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: i64,
    /// Newest first (`order=desc`): `limit=1` is then the latest reading.
    pub newest_first: bool,
}

#[derive(sqlx::FromRow)]
pub struct ReadingRow {
    pub seq: i64,
    pub field: String,
    pub value: f64,
    pub unit: String,
    pub quality: String,
    pub error: String,
    pub source_ts_ms: i64,
    pub received_ts_ms: i64,
    pub source: String,
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Backend::from_url(s)
    }
}
