//! The SQLite group committer: one writer transaction for every session
//! that is waiting.

use tankwatch_proto::v1;
use tokio::sync::mpsc;

use super::COALESCE_READINGS;
use crate::store::Db;

/// Sessions' commits waiting for the shared SQLite committer; when full,
/// committers wait (and their sessions stop reading: backpressure).
pub const GROUP_QUEUE: usize = 64;

/// One session's coalesced batches for the group committer.
pub(super) struct GroupJob {
    pub site: crate::domain::SiteId,
    pub batches: Vec<v1::TelemetryBatch>,
    pub reply: tokio::sync::oneshot::Sender<Result<u64, crate::Error>>,
}

/// SQLite group commit: one writer transaction (one fsync) carries the
/// batches of every session that is waiting, up to [`COALESCE_READINGS`].
/// With a hundred agents each committing alone, the fsyncs queue up and a
/// command ack waits behind all of them.
pub(super) fn spawn_group_committer(
    db: Db,
    metrics: crate::metrics::Metrics,
) -> mpsc::Sender<GroupJob> {
    let (tx, mut rx) = mpsc::channel::<GroupJob>(GROUP_QUEUE);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut readings: usize = first.batches.iter().map(|b| b.readings.len()).sum();
            let mut jobs = vec![first];
            while readings < COALESCE_READINGS {
                match rx.try_recv() {
                    Ok(j) => {
                        readings += j.batches.iter().map(|b| b.readings.len()).sum::<usize>();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let groups: Vec<crate::store::Group> = jobs
                .iter_mut()
                .map(|j| crate::store::Group {
                    site: j.site.clone(),
                    batches: std::mem::take(&mut j.batches),
                })
                .collect();
            let t = std::time::Instant::now();
            let results = db.ingest_groups(groups).await;
            metrics.db_write_seconds.observe(t.elapsed().as_secs_f64());
            for (j, r) in jobs.into_iter().zip(results) {
                let _ = j.reply.send(r);
            }
        }
    });
    tx
}
