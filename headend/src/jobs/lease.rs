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
use crate::store::Db;
use crate::wallclock::now_ms;

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
        let until = now_ms.saturating_add(self.ttl.as_millis() as i64);
        db.leases()
            .hold(self.job, &self.holder, until, now_ms)
            .await
    }

    /// Runs `job` every `period` while this replica holds the lease (a
    /// replica without it waits its turn); at shutdown gives the lease up.
    /// The one loop of every leased job.
    pub async fn every<F, Fut>(
        &self,
        db: &Db,
        period: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut job: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            match self.hold(db).await {
                Ok(true) => job().await,
                Ok(false) => tracing::debug!(job = self.job, "runs on another replica"),
                Err(e) => {
                    tracing::warn!(job = self.job, error = %e, "taking the job's lease failed")
                }
            }
            let stopping = tokio::select! {
                _ = tokio::time::sleep(period) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                self.release(db).await;
                return;
            }
        }
    }

    pub async fn hold(&self, db: &Db) -> Result<bool, Error> {
        self.hold_at(db, now_ms()).await
    }

    /// Gives the lease up if this holder has it (a clean stop), so that
    /// another replica takes the job at its next run.
    pub async fn release(&self, db: &Db) {
        if let Err(e) = db.leases().release(self.job, &self.holder).await {
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
