//! A database lease: one row per job in `job_leases`, held by one replica
//! until its time runs out; the holder renews it each run.
//!
//! A replica is named by its host and its agent listen address
//! ([`replica_id`]), not by its process: a headend restarted in place
//! (the same host and port) takes its own leases back at once instead of
//! waiting for its dead predecessor's to run out (issue 27: `/tanks`
//! showed an evaluation 3 minutes old after a restart). A headend that
//! stops cleanly releases its leases ([`Lease::release`]).

use std::time::Duration;

use crate::Error;
use crate::db::{Db, now_ms};

pub struct Lease {
    job: &'static str,
    holder: String,
    ttl: Duration,
}

impl Lease {
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

    /// Gives the lease up if this holder has it (a clean stop), so that
    /// another replica takes the job at its next run.
    pub async fn release(&self, db: &Db) {
        let r = async {
            let (_w, mut tx) = db.begin_write().await?;
            sqlx::query("DELETE FROM job_leases WHERE job = $1 AND holder = $2")
                .bind(self.job)
                .bind(&self.holder)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<(), Error>(())
        };
        if let Err(e) = r.await {
            tracing::warn!(job = self.job, error = %e, "releasing a job lease failed; it runs out by itself");
        }
    }
}

/// This replica among replicas: its host and its agent listen address
/// (two replicas on one host cannot share a port).
pub fn replica_id(grpc: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}/{grpc}")
}
