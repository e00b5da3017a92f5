//! Background jobs. Each holds a database lease while it runs, so that
//! with several headend replicas on one database only one runs it; a
//! replica that dies loses its lease when the lease's time runs out.
//!
//! * [`sweep`]: commands that expired before they could be sent (every second).
//! * [`retention`]: raw readings and rollups past their windows; the
//!   PostgreSQL day partitions ahead, and finished days packed (one row
//!   per point and hour, ADR 0006) (every `RETENTION_EVERY`).
//! * [`revocations`]: every replica reloads the revocation list (every
//!   [`REVOCATION_POLL`]; no lease: each replica needs it).

pub mod lease;

use std::time::Duration;

use tokio::sync::watch;

use crate::db::{Db, now_ms};
pub use lease::Lease;

/// How often the retention job runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// How often each replica reloads the revocation list: a revocation made
/// through another replica closes sessions here within this (plus the
/// query).
pub const REVOCATION_POLL: Duration = Duration::from_secs(2);

/// Reloads the revocation list from SQL every [`REVOCATION_POLL`].
pub async fn revocations(
    db: Db,
    issuing: crate::services::enrollment::SharedIssuing,
    mut stop: watch::Receiver<bool>,
) {
    while pause(REVOCATION_POLL, &mut stop).await {
        issuing.refresh(&db).await;
    }
}

/// Sleeps `d` or until shutdown; false at shutdown.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Marks commands that expired before they could be sent.
pub async fn sweep(db: Db, mut stop: watch::Receiver<bool>) {
    let lease = Lease::new("command-expiry", Duration::from_secs(10));
    loop {
        match lease.hold(&db).await {
            Ok(true) => match db.commands().expire_unsent(now_ms()).await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(count = ids.len(), ids = ?ids, "commands expired before they could be sent")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "expiry sweep: lease"),
        }
        if !pause(Duration::from_secs(1), &mut stop).await {
            return;
        }
    }
}

/// Applies the retention windows (and makes partitions ahead), then packs
/// finished days.
pub async fn retention(db: Db, metrics: crate::metrics::Metrics, mut stop: watch::Receiver<bool>) {
    let lease = Lease::new("retention", RETENTION_EVERY * 2);
    loop {
        match lease.hold(&db).await {
            Ok(true) => {
                let t = std::time::Instant::now();
                match db.telemetry.retain(db.retention, now_ms()).await {
                    Ok(r) => {
                        metrics.retention_readings.inc_by(r.readings);
                        metrics.retention_rollups.inc_by(r.rollups);
                        tracing::info!(
                            readings = r.readings,
                            rollups = r.rollups,
                            partitions_dropped = r.partitions_dropped,
                            took_ms = t.elapsed().as_millis() as u64,
                            "retention applied"
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "retention failed; retried at the next run")
                    }
                }
                let t = std::time::Instant::now();
                match db.telemetry.compact(now_ms()).await {
                    Ok(0) => {}
                    Ok(days) => tracing::info!(
                        days,
                        took_ms = t.elapsed().as_millis() as u64,
                        "finished days packed"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "packing failed; retried at the next run")
                    }
                }
            }
            Ok(false) => tracing::debug!("retention runs on another replica"),
            Err(e) => tracing::warn!(error = %e, "retention: lease"),
        }
        if !pause(RETENTION_EVERY, &mut stop).await {
            return;
        }
    }
}
