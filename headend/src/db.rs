//! SQL storage through sqlx. One code path for both backends via sqlx's
//! `Any` driver: `sqlite://` (the embedded default) or `postgres://`,
//! selected by the URL scheme. Migrations are embedded per backend and run
//! at start. Queries use `$n` placeholders, which both backends accept.

use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tankwatch_proto::v1;

use crate::Error;
pub use crate::store::{
    Group, ReadingQuery, ReadingRow, Retention, RollupQuery, RollupRow, Telemetry,
};
use crate::store::{pg::PgTelemetry, sqlite::SqliteTelemetry};

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
    /// The URL the pool was opened with (for [`Db::with_own_pool`]).
    url: String,
    pub backend: Backend,
    /// SQLite has one writer: transactions that write queue here, in
    /// process, instead of spinning in SQLite's busy handler (its sleeps
    /// of up to 100 ms made every commit wait behind the others).
    /// PostgreSQL writes concurrently (no permit needed).
    writer: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// The telemetry hot path, native per backend (store/).
    pub telemetry: Telemetry,
    pub retention: Retention,
}

/// A write transaction (holding the SQLite writer permit, if any).
pub type WriteTx = (
    Option<tokio::sync::OwnedSemaphorePermit>,
    sqlx::Transaction<'static, sqlx::Any>,
);

/// Site and asset rows (their queries are in `store::sites`).
pub use crate::store::sites::{AssetRow, LatestRow, SiteRow};

/// What a hello tells us about a site.
pub struct HelloInfo<'a> {
    pub site: &'a str,
    pub hello: &'a v1::Hello,
}

fn log_id_sql(log_id: u64) -> i64 {
    log_id as i64
}

/// What a hello says about its site (agent version and assets), as a
/// digest: FNV-1a 64 over a canonical text (map keys sorted), so equal
/// hellos give equal digests on every build and machine.
pub fn hello_digest(h: &v1::Hello) -> String {
    let assets: Vec<serde_json::Value> = h
        .assets
        .iter()
        .map(|a| {
            let details: std::collections::BTreeMap<&String, &String> = a.details.iter().collect();
            serde_json::json!([
                a.asset_id,
                a.kind,
                a.name,
                a.product,
                a.capacity,
                a.capacity_unit,
                details,
                a.writable
                    .iter()
                    .map(|w| serde_json::json!([w.field, w.min, w.max, w.default]))
                    .collect::<Vec<_>>(),
            ])
        })
        .collect();
    let text = serde_json::json!([h.agent_version, assets]).to_string();
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        x ^= u64::from(b);
        x = x.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{x:016x}")
}

/// How long ingest and the jobs wait for a connection.
pub const INGEST_ACQUIRE: Duration = Duration::from_secs(10);
/// How long an operator's request waits for one.
pub const API_ACQUIRE: Duration = Duration::from_secs(1);

/// A pool on the database (SQLite: at most 4 connections; WAL, full sync
/// and a busy timeout on each).
async fn open_pool(
    url: &str,
    backend: Backend,
    max_connections: u32,
    acquire: Duration,
) -> Result<AnyPool, Error> {
    AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite {
            max_connections.min(4)
        } else {
            max_connections
        })
        .acquire_timeout(acquire)
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
        .connect(url)
        .await
        .map_err(|e| Error::Db(format!("connecting to {}: {e}", redact(url))))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Connects, creating a SQLite file (and its directory) if needed, and runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, Error> {
        Db::connect_with(url, max_connections, Retention::default()).await
    }

    /// [`Db::connect`] with the retention periods to keep.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        retention: Retention,
    ) -> Result<Db, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_string();
        if backend == Backend::Sqlite {
            let path = sqlite_path(&url);
            if path.is_empty() || path == ":memory:" {
                return Err(Error::Config(format!(
                    "database URL {url:?}: the headend needs a SQLite file (sqlite://PATH), not an in-memory database"
                )));
            }
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
        let pool = open_pool(&url, backend, max_connections, INGEST_ACQUIRE).await?;
        let writer = (backend == Backend::Sqlite)
            .then(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)));
        migrate(&pool, backend).await?;
        let telemetry = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(&url);
                Telemetry::Sqlite(std::sync::Arc::new(SqliteTelemetry::open(
                    std::path::Path::new(path),
                )?))
            }
            Backend::Postgres => Telemetry::Postgres(std::sync::Arc::new(
                PgTelemetry::open(&url, max_connections, retention).await?,
            )),
        };
        telemetry.prepare(now_ms()).await?;
        Ok(Db {
            pool,
            url,
            backend,
            writer,
            telemetry,
            retention,
        })
    }

    /// The same database through a pool of its own (a bulkhead): the
    /// operator API's requests then never queue behind agent sessions for
    /// a connection (a reconnect storm of 10,000 hellos held the shared
    /// pool for seconds). SQLite writes still queue on the one writer.
    /// A copy on a pool of its own that gives up waiting for a connection
    /// after [`API_ACQUIRE`]: an operator (or a load balancer's check)
    /// gets a quick `503 database_unavailable` during an outage, not a
    /// request that hangs for 20 s (issue 27).
    pub async fn with_own_pool(&self, max_connections: u32) -> Result<Db, Error> {
        Ok(Db {
            pool: open_pool(&self.url, self.backend, max_connections, API_ACQUIRE).await?,
            ..self.clone()
        })
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
    ///
    /// A hello that says what the stored one said (its digest matches: the
    /// usual reconnect) is answered by a read alone. A reconnect storm of
    /// thousands of agents then costs no writer transaction (on SQLite, no
    /// fsync) per session; `last_seen` moves with the site's batches.
    pub async fn record_hello(&self, h: HelloInfo<'_>) -> Result<u64, Error> {
        let digest = hello_digest(h.hello);
        let known: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT s.hello_digest, l.acked_through FROM sites s
               LEFT JOIN agent_logs l ON l.site_id = s.site_id AND l.log_id = $2
             WHERE s.site_id = $1",
        )
        .bind(h.site)
        .bind(log_id_sql(h.hello.log_id))
        .fetch_optional(&self.pool)
        .await?;
        if let Some((d, acked)) = known
            && d == digest
        {
            return Ok(acked.unwrap_or(0).max(0) as u64);
        }
        let now = now_ms();
        let (_w, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sites (site_id, first_seen_ms, last_seen_ms, agent_version, hello_digest) VALUES ($1, $2, $2, $3, $4)
             ON CONFLICT (site_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms, agent_version = excluded.agent_version,
               hello_digest = excluded.hello_digest,
               first_seen_ms = CASE WHEN sites.first_seen_ms = 0 THEN excluded.first_seen_ms ELSE sites.first_seen_ms END",
        )
        .bind(h.site)
        .bind(now)
        .bind(&h.hello.agent_version)
        .bind(&digest)
        .execute(&mut *tx)
        .await?;
        for a in &h.hello.assets {
            // checked at the Hello (ingest refuses an unknown kind)
            let kind = crate::domain::AssetKind::from_proto(a.kind)
                .map_err(|e| Error::Db(format!("asset {}: {e}", a.asset_id)))?;
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
            // a tank the operator has not configured yet: the agent's
            // capacity and product, default levels; never overwritten here
            let litres = match crate::domain::asset::capacity_litres(a.capacity, &a.capacity_unit) {
                Ok(l) => Some(l),
                Err(e) if kind == crate::domain::AssetKind::Tank => {
                    tracing::warn!(site = %h.site, tank = %a.asset_id, error = %e,
                        "a tank's capacity is in a unit this headend cannot read; set the tank up with PUT /api/v1/sites/SITE/tanks/TANK or fix the agent's capacity_unit");
                    None
                }
                Err(_) => None,
            };
            if let Some(cap) = litres.filter(|c| c.is_finite() && *c > 0.0)
                && kind == crate::domain::AssetKind::Tank
            {
                sqlx::query(
                    "INSERT INTO tanks (site_id, tank_id, name, product, capacity_l, low_l, critical_l, floor_l, water_limit_mm, created_ms, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, NULL, $8, $8) ON CONFLICT (site_id, tank_id) DO NOTHING",
                )
                .bind(h.site)
                .bind(&a.asset_id)
                .bind(&a.name)
                .bind(&a.product)
                .bind(cap)
                .bind(cap * 0.25)
                .bind(cap * 0.10)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
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

    /// Commits one telemetry batch. Readings already stored are skipped.
    /// Returns the log's new cumulative ack (>= `batch.last_seq`); a
    /// preview batch is stored but does not move the ack (see the proto).
    pub async fn ingest(&self, site: &str, batch: &v1::TelemetryBatch) -> Result<u64, Error> {
        self.ingest_many(site, std::slice::from_ref(batch)).await
    }

    /// Commits several batches of one log together; returns the cumulative ack.
    pub async fn ingest_many(
        &self,
        site: &str,
        batches: &[v1::TelemetryBatch],
    ) -> Result<u64, Error> {
        let groups = vec![Group {
            site: site.to_string(),
            batches: batches.to_vec(),
        }];
        self.ingest_groups(groups)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::Db("no result".into())))
    }

    /// Commits the batches of several sessions: on SQLite in one
    /// transaction (one fsync, each session behind its own savepoint, so
    /// that one bad batch fails only its own session). Returns each
    /// group's cumulative ack in order.
    ///
    /// What the batches carry besides telemetry (command acks, delivery
    /// events) is applied first, in its own transaction: each entry is
    /// keyed by its log position, so a redelivery after a failure between
    /// the two applies nothing twice.
    pub async fn ingest_groups(&self, groups: Vec<Group>) -> Vec<Result<u64, Error>> {
        let mut out: Vec<Result<u64, Error>> = Vec::with_capacity(groups.len());
        let (mut todo, mut idx) = (Vec::new(), Vec::new());
        for (i, g) in groups.into_iter().enumerate() {
            match self.apply_records(&g).await {
                Ok(()) => {
                    out.push(Ok(0)); // replaced by the telemetry commit's answer
                    idx.push(i);
                    todo.push(g);
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let _permit = match &self.writer {
            Some(w) => match w.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => {
                    for i in idx {
                        out[i] = Err(Error::Db("the SQLite writer is closed".into()));
                    }
                    return out;
                }
            },
            None => None,
        };
        for (i, r) in idx
            .into_iter()
            .zip(self.telemetry.commit(todo, now_ms()).await)
        {
            out[i] = r;
        }
        out
    }

    /// A group's command acks and delivery events, in one transaction.
    async fn apply_records(&self, g: &Group) -> Result<(), Error> {
        if !g
            .batches
            .iter()
            .any(|b| !b.command_acks.is_empty() || !b.events.is_empty())
        {
            return Ok(());
        }
        let now = now_ms();
        let (_w, mut tx) = self.begin_write().await?;
        for b in &g.batches {
            crate::store::agent_records::apply(&mut tx, &g.site, b.log_id as i64, now, b).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn readings(&self, q: &ReadingQuery<'_>) -> Result<Vec<ReadingRow>, Error> {
        self.telemetry.readings(q).await
    }

    pub async fn rollups(&self, q: &RollupQuery<'_>) -> Result<Vec<RollupRow>, Error> {
        self.telemetry.rollups(q).await
    }
}

impl Db {
    /// Data a site's agent dropped (gap records), newest first.
    /// The site's delivery events, newest first.
    pub async fn delivery_events(
        &self,
        site: &str,
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

    pub async fn gaps(&self, site: &str, limit: i64) -> Result<Vec<GapRow>, Error> {
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
    pub phase: String,
    pub load_id: String,
    pub tank: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub start_volume_l: f64,
    pub end_volume_l: f64,
    pub delivered_volume_l: f64,
    pub source: crate::domain::DeliverySource,
    pub ingested_ms: i64,
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
    pub from_ts_ms: i64,
    pub to_ts_ms: i64,
    pub ingested_ms: i64,
    /// The device whose data is missing (adapter gaps); '' for log drops.
    pub device: String,
}

async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), Error> {
    let m = match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    m.run(pool)
        .await
        .map_err(|e| Error::Db(format!("migrations: {e}")))
}

/// The file path of a `sqlite:` URL.
fn sqlite_path(url: &str) -> &str {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    path.split('?').next().unwrap_or("")
}

fn redact(url: &str) -> String {
    // never log a password embedded in a URL
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Backend::from_url(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_digest_depends_on_what_the_hello_says_not_on_map_order() {
        let asset = |pairs: &[(&str, &str)], cap: f64| v1::Asset {
            asset_id: "tank-1".into(),
            capacity: cap,
            details: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let hello = |a: v1::Asset| v1::Hello {
            agent_version: "1".into(),
            assets: vec![a],
            ..Default::default()
        };
        let many: Vec<(String, String)> = (0..50)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut rev = pairs.clone();
        rev.reverse();
        let d = hello_digest(&hello(asset(&pairs, 1.0)));
        assert_eq!(d, hello_digest(&hello(asset(&rev, 1.0))));
        assert_ne!(d, hello_digest(&hello(asset(&pairs, 2.0))));
        assert_ne!(d, hello_digest(&hello(asset(&pairs[1..], 1.0))));
        assert_eq!(d.len(), 16);
    }
}
