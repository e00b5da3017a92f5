//! A database lease: one row per job in `job_leases`, held by one replica
//! until its time runs out; the holder renews it each run.

use std::time::Duration;

use crate::Error;
use crate::db::{Db, now_ms};

pub struct Lease {
    job: &'static str,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// A lease on `job` for this process, valid `ttl` after each hold.
    pub fn new(job: &'static str, ttl: Duration) -> Lease {
        Lease::with_holder(job, ttl, holder_id())
    }

    pub fn with_holder(job: &'static str, ttl: Duration, holder: String) -> Lease {
        Lease { job, holder, ttl }
    }

    /// Takes or renews the lease at `now_ms`; false when another holder's
    /// lease is still running.
    pub async fn hold_at(&self, db: &Db, now_ms: i64) -> Result<bool, Error> {
        let (_w, mut tx) = db.begin_write().await?;
        let n = sqlx::query(
            "INSERT INTO job_leases (job, holder, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
             WHERE job_leases.until_ms < $4 OR job_leases.holder = excluded.holder",
        )
        .bind(self.job)
        .bind(&self.holder)
        .bind(now_ms.saturating_add(self.ttl.as_millis() as i64))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn hold(&self, db: &Db) -> Result<bool, Error> {
        self.hold_at(db, now_ms()).await
    }
}

/// This process among replicas: host name, pid and a random part.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}/{}/{:08x}", std::process::id(), fastrand::u32(..))
}
