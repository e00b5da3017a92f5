//! Committing batches: the records they carry (command acks, delivery
//! events) and then their telemetry, per backend.

use tankwatch_proto::v1;

use crate::Error;
use crate::domain::SiteId;
use crate::store::{Db, Group, ReadingQuery, ReadingRow, RollupQuery, RollupRow};
use crate::wallclock::now_ms;

impl Db {
    /// Commits one telemetry batch. Readings already stored are skipped.
    /// Returns the log's new cumulative ack (>= `batch.last_seq`); a
    /// preview batch is stored but does not move the ack (see the proto).
    pub async fn ingest(&self, site: &SiteId, batch: &v1::TelemetryBatch) -> Result<u64, Error> {
        self.ingest_many(site, std::slice::from_ref(batch)).await
    }

    /// Commits several batches of one log together; returns the cumulative ack.
    pub async fn ingest_many(
        &self,
        site: &SiteId,
        batches: &[v1::TelemetryBatch],
    ) -> Result<u64, Error> {
        let groups = vec![Group {
            site: site.clone(),
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
        if !g.batches.iter().any(|b| {
            !b.command_acks.is_empty()
                || !b.events.is_empty()
                || crate::store::alarms::carries_alarms(b)
        }) {
            return Ok(());
        }
        let now = now_ms();
        let (_w, mut tx) = self.begin_write().await?;
        for b in &g.batches {
            crate::store::agent_records::apply(&mut tx, &g.site, b.log_id as i64, now, b).await?;
            for c in
                crate::store::alarms::apply(&mut tx, &g.site, b.log_id as i64, now, self.notify, b)
                    .await?
            {
                tracing::info!(site = %g.site, episode = %c.episode_id, change = %c.kind, "alarm");
            }
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

    /// Hourly rollups of one field merged into buckets of `bucket_ms`
    /// (a whole number of hours) in SQL, oldest first: a long window's
    /// chart reads one row per bucket, not per hour. `field` is required.
    pub async fn rollup_buckets(
        &self,
        q: &RollupQuery<'_>,
        bucket_ms: i64,
    ) -> Result<Vec<RollupRow>, Error> {
        self.telemetry.rollup_buckets(q, bucket_ms).await
    }
}
