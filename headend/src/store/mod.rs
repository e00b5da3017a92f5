//! The telemetry store: readings, gaps, latest values and rollups, on the
//! ingest hot path. One implementation per backend behind one type
//! ([`Telemetry`]); both pass the same conformance suite
//! (`tests/store_conformance.rs`).
//!
//! * SQLite ([`sqlite`]): one writer thread with rusqlite and cached
//!   prepared statements; readers on their own connections.
//! * PostgreSQL ([`pg`]): array (`UNNEST`) inserts through sqlx's native driver;
//!   readings partitioned by day, finished days packed (one row per point
//!   and hour), retention by dropping partitions.
//!
//! Schema and the exactly-once key: ADR 0006.

pub mod agent_records;
pub mod alarm_rules;
pub mod alarms;
pub mod api_keys;
pub mod audit;
pub mod backup;
pub mod certs;
pub mod commands;
pub mod devices;
pub mod escalation_moves;
pub mod escalations;
pub mod evaluation;
pub mod hello;
pub mod ingest;
pub mod inventory;
pub mod json;
pub mod leases;
pub mod loads;
pub mod login_locks;
pub mod mail;
pub mod notify;
pub mod outbox;
pub mod pg;
pub mod pool;
pub mod presence;
pub mod reads;
pub mod rows;
#[cfg(test)]
mod schema_policy;
pub mod sites;
pub mod sqlite;
#[cfg(test)]
pub mod testing;
pub mod users;

use std::collections::HashMap;
use std::hash::Hash;

use tankwatch_proto::v1;

use crate::Error;
use crate::domain::{Quality, SiteId, UnixMs};
pub use hello::HelloInfo;
pub use pool::{API_ACQUIRE, Backend, Db, INGEST_ACQUIRE, Readiness, WriteTx};
pub use reads::{DeliveryEventRow, GapRow};
pub use rows::PointKey;
pub use sites::{AssetRow, LatestRow, SiteRow};

/// `AND col IN ($first, …)` for a caller's scope, or any list of ids
/// (users too): empty for all; `1 = 0` for none. Bind the ids after the
/// other parameters.
pub fn site_in(col: &str, sites: Option<&[String]>, first: usize) -> String {
    match sites {
        None => String::new(),
        Some([]) => " AND 1 = 0".into(),
        Some(s) => {
            let ps: Vec<String> = (0..s.len()).map(|i| format!("${}", first + i)).collect();
            format!(" AND {col} IN ({})", ps.join(", "))
        }
    }
}

/// One session's batches, committed together.
#[derive(Debug, Clone)]
pub struct Group {
    pub site: crate::domain::SiteId,
    pub batches: Vec<v1::TelemetryBatch>,
}

/// A history query: one asset's readings, optionally of one field.
#[derive(Debug, Clone)]
pub struct ReadingQuery<'a> {
    pub site: &'a SiteId,
    pub asset: &'a str,
    pub field: Option<&'a str>,
    pub from_ms: UnixMs,
    pub to_ms: UnixMs,
    pub limit: i64,
    /// Newest first (`order=desc`): `limit=1` is then the latest reading.
    pub newest_first: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRow {
    pub seq: i64,
    pub field: String,
    /// None for a bad reading.
    pub value: Option<f64>,
    pub unit: String,
    pub quality: Quality,
    pub error: Option<String>,
    pub source_ts_ms: UnixMs,
    pub source: String,
}

/// Hourly rollups of one asset, optionally of one field, from..to (hour
/// starts), oldest first.
#[derive(Debug, Clone)]
pub struct RollupQuery<'a> {
    pub site: &'a SiteId,
    pub asset: &'a str,
    pub field: Option<&'a str>,
    pub from_ms: UnixMs,
    pub to_ms: UnixMs,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub field: String,
    pub unit: String,
    pub hour_ms: UnixMs,
    pub n: i64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub last_ts_ms: UnixMs,
    pub last: f64,
}

/// How long data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw: std::time::Duration,
    pub rollups: std::time::Duration,
}

impl Default for Retention {
    /// 90 days of raw readings, 2 years of hourly rollups.
    fn default() -> Self {
        Retention {
            raw: std::time::Duration::from_secs(90 * 86_400),
            rollups: std::time::Duration::from_secs(730 * 86_400),
        }
    }
}

impl Retention {
    /// The oldest source time of raw readings kept at `now_ms`.
    pub fn raw_cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.raw.as_millis().min(i64::MAX as u128) as i64)
    }

    /// The oldest hour of rollups kept at `now_ms`.
    pub fn rollup_cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.rollups.as_millis().min(i64::MAX as u128) as i64)
    }
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    pub readings: u64,
    pub rollups: u64,
    pub partitions_dropped: u64,
}

/// Most entries of a dimension cache (points, error texts) kept in memory;
/// past it the cache starts over (it is only a cache: the table is the
/// truth). Bounds what a hostile agent inventing points can cost.
pub const DIMENSION_CACHE: usize = 1_000_000;

/// A bounded id cache of a dimension table.
#[derive(Debug)]
pub struct DimCache<K> {
    map: HashMap<K, i64>,
}

impl<K: Hash + Eq> Default for DimCache<K> {
    fn default() -> Self {
        DimCache {
            map: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> DimCache<K> {
    pub fn get(&self, k: &K) -> Option<i64> {
        self.map.get(k).copied()
    }

    pub fn insert(&mut self, k: K, id: i64) {
        if self.map.len() >= DIMENSION_CACHE {
            self.map.clear();
        }
        self.map.insert(k, id);
    }
}

/// The telemetry store of the configured backend.
#[derive(Clone)]
pub enum Telemetry {
    Sqlite(std::sync::Arc<sqlite::SqliteTelemetry>),
    Postgres(std::sync::Arc<pg::PgTelemetry>),
}

impl Telemetry {
    /// Commits groups in one transaction where the backend has one writer
    /// (SQLite: one fsync for all), each group behind its own savepoint so
    /// that a bad group fails alone; PostgreSQL commits each group in its
    /// own transaction. Returns each group's cumulative ack, in order.
    pub async fn commit(&self, groups: Vec<Group>, now_ms: i64) -> Vec<Result<u64, Error>> {
        match self {
            Telemetry::Sqlite(s) => s.commit(groups, now_ms).await,
            Telemetry::Postgres(p) => {
                let mut out = Vec::with_capacity(groups.len());
                for g in &groups {
                    out.push(p.commit_group(g, now_ms).await);
                }
                out
            }
        }
    }

    pub async fn readings(&self, q: &ReadingQuery<'_>) -> Result<Vec<ReadingRow>, Error> {
        match self {
            Telemetry::Sqlite(s) => s.readings(q).await,
            Telemetry::Postgres(p) => p.readings(q).await,
        }
    }

    pub async fn rollups(&self, q: &RollupQuery<'_>) -> Result<Vec<RollupRow>, Error> {
        match self {
            Telemetry::Sqlite(s) => s.rollups(q).await,
            Telemetry::Postgres(p) => p.rollups(q).await,
        }
    }

    pub async fn rollup_buckets(
        &self,
        q: &RollupQuery<'_>,
        bucket_ms: i64,
    ) -> Result<Vec<RollupRow>, Error> {
        match self {
            Telemetry::Sqlite(s) => s.rollup_buckets(q, bucket_ms).await,
            Telemetry::Postgres(p) => p.rollup_buckets(q, bucket_ms).await,
        }
    }

    /// Removes raw readings older than the raw window and rollups older
    /// than theirs, in bounded steps (ingest commits go on between them).
    pub async fn retain(&self, r: Retention, now_ms: i64) -> Result<Retained, Error> {
        match self {
            Telemetry::Sqlite(s) => s.retain(r, now_ms).await,
            Telemetry::Postgres(p) => p.retain(r, now_ms).await,
        }
    }

    /// Prepares storage ahead of time (PostgreSQL: the day partitions from
    /// yesterday to two days ahead).
    pub async fn prepare(&self, now_ms: i64) -> Result<(), Error> {
        match self {
            Telemetry::Sqlite(_) => Ok(()),
            Telemetry::Postgres(p) => p.prepare(now_ms).await,
        }
    }

    /// Reorganises finished storage for reading (PostgreSQL: packs each
    /// finished day into one row per point and hour); returns the days
    /// reorganised.
    pub async fn compact(&self, now_ms: i64) -> Result<u64, Error> {
        match self {
            Telemetry::Sqlite(_) => Ok(0), // WITHOUT ROWID: already in key order
            Telemetry::Postgres(p) => p.compact(now_ms).await,
        }
    }

    /// Bytes the raw readings take (table plus indexes) and their count:
    /// the footprint figure of BENCHMARKS.
    pub async fn footprint(&self) -> Result<(u64, u64), Error> {
        match self {
            Telemetry::Sqlite(s) => s.footprint().await,
            Telemetry::Postgres(p) => p.footprint().await,
        }
    }
}
