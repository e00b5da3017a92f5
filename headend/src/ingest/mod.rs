//! gRPC ingest: the `AgentLink.Session` stream.
//!
//! Per stream: the first message must be a `Hello` whose `site_id` equals
//! the site in the client certificate (else PERMISSION_DENIED, nothing
//! stored). Then batches are committed one at a time, in order, and each
//! is acknowledged only after its transaction committed. While a commit is
//! pending the stream is not read, so HTTP/2 flow control pushes back on
//! the agent: a slow database slows agents down instead of filling memory.
//! If a commit fails the stream ends with UNAVAILABLE; the agent reconnects
//! with backoff and replays from its last ack.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tankwatch_proto::v1::{
    self, AgentMessage, HeadendMessage, agent_message::Msg as In, headend_message::Msg as Out,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub mod clock;
pub mod commit;
pub mod dispatch;
pub mod enroll;
mod open;
pub mod sanitize;
pub mod tls;
mod validate;

use crate::domain::{SiteId, UnixMs};
pub use crate::services::sessions::{IngestError, SessionInfo, Sessions};
pub use commit::GROUP_QUEUE;
use commit::{GroupJob, spawn_group_committer};
use tls::AgentIdentity;
pub use validate::{fuzz_agent_message, validate_batch};

use crate::store::Db;
use crate::wallclock::now_ms;

/// Most readings the headend accepts in one batch (told to agents in HelloAck).
pub const MAX_BATCH_READINGS: u32 = 5000;
/// Largest gRPC message accepted, bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Validated batches waiting for their commit, per session.
pub const PIPELINE_DEPTH: usize = 8;
/// Most readings committed in one transaction (batches are coalesced up to it).
pub const COALESCE_READINGS: usize = 20_000;
/// Outbound messages buffered per stream; when full the stream's reader waits.
const OUTBOUND_QUEUE: usize = 32;
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

/// One session: who, which of the site's sessions, which log.
struct Session<'a> {
    who: &'a AgentIdentity,
    id: u64,
    log_id: u64,
    /// Added to every agent time of the session (the site's clock skew, corrected).
    time_shift_ms: i64,
}

/// The ingest service.
#[derive(Clone)]
pub struct Ingest {
    db: Db,
    sessions: Sessions,
    /// Bounds concurrent database transactions across all streams.
    writers: Arc<Semaphore>,
    /// Turns true when the headend stops: every session ends.
    shutdown: tokio::sync::watch::Receiver<bool>,
    metrics: crate::metrics::Metrics,
    dispatcher: crate::services::Dispatcher,
    /// Tanks whose gauge readings were committed, for the quick evaluator.
    touched: crate::services::touched::Touched,
    /// The SQLite group committer (None on PostgreSQL).
    group: Option<mpsc::Sender<GroupJob>>,
    /// Signs renewals.
    issuing: crate::services::enrollment::SharedIssuing,
    /// Whether HelloAcks offer compact batches and gzip.
    compact: bool,
}

/// Shortest time between two renewals on one session.
pub const RENEW_SPACING: Duration = Duration::from_secs(5);

impl Ingest {
    pub fn new(
        db: Db,
        sessions: Sessions,
        max_concurrent_writes: usize,
        shutdown: tokio::sync::watch::Receiver<bool>,
        metrics: crate::metrics::Metrics,
        dispatcher: crate::services::Dispatcher,
        issuing: crate::services::enrollment::SharedIssuing,
    ) -> Self {
        let group = (db.backend == crate::store::Backend::Sqlite)
            .then(|| spawn_group_committer(db.clone(), metrics.clone()));
        Self {
            group,
            db,
            sessions,
            writers: Arc::new(Semaphore::new(max_concurrent_writes.max(1))),
            shutdown,
            metrics,
            dispatcher,
            issuing,
            touched: Default::default(),
            compact: true,
        }
    }

    /// Marks the tanks of each commit in `touched` (for the quick evaluator).
    pub fn marking(mut self, touched: crate::services::touched::Touched) -> Self {
        self.touched = touched;
        self
    }

    /// Whether agents are offered compact batches and gzip (default on).
    pub fn offer_compact(mut self, on: bool) -> Self {
        self.compact = on;
        self
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<HeadendMessage, Status>> + Send>>;

fn out(m: Out) -> Result<HeadendMessage, Status> {
    Ok(HeadendMessage { msg: Some(m) })
}

#[tonic::async_trait]
impl v1::agent_link_server::AgentLink for Ingest {
    type SessionStream = OutStream;

    async fn whoami(
        &self,
        req: Request<v1::WhoamiRequest>,
    ) -> Result<Response<v1::WhoamiReply>, Status> {
        let who = req.extensions().get::<AgentIdentity>().ok_or_else(|| {
            Status::unauthenticated("no verified client certificate on this connection")
        })?;
        Ok(Response::new(v1::WhoamiReply {
            site_id: who.site_id.to_string(),
            serial: who.serial.clone(),
            not_after_ms: who.not_after_ms.ms(),
        }))
    }

    async fn session(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let who = req
            .extensions()
            .get::<AgentIdentity>()
            .cloned()
            .ok_or_else(|| {
                Status::unauthenticated("no verified client certificate on this connection")
            })?;
        let mut inbound = req.into_inner();
        let (hello, clock, arrived_ms) = self.hello(&who, &mut inbound).await?;
        let acked = self.record(&who, &hello, clock, arrived_ms).await?;
        tracing::info!(site = %who.site_id, peer = %who.peer, version = %hello.agent_version, log_id = hello.log_id, acked, "agent session started");
        let (session_id, replaced, took_over) = self.sessions.start(
            &who.site_id,
            who.peer.to_string(),
            hello.agent_version.clone(),
            acked,
        );
        self.opened(
            &who.site_id,
            &who.peer.to_string(),
            session_id,
            &hello.agent_version,
        )
        .await;
        if took_over {
            self.metrics.session_takeovers.inc();
            tracing::warn!(site = %who.site_id, peer = %who.peer, "a newer session replaces the site's open one");
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let _ = tx
            .send(out(Out::HelloAck(v1::HelloAck {
                site_id: who.site_id.to_string(),
                acked_through_seq: acked,
                max_batch_readings: MAX_BATCH_READINGS,
                headend_time_ms: now_ms(),
                compact: self.compact,
                headend_version: env!("CARGO_PKG_VERSION").into(),
            })))
            .await;
        let this = self.clone();
        this.metrics.sessions.inc();
        let dispatch = {
            let (d, db, site, peer, tx, sent) = (
                this.dispatcher.clone(),
                this.db.clone(),
                who.site_id.clone(),
                who.peer.to_string(),
                tx.clone(),
                this.metrics.commands_sent.clone(),
            );
            let lost = hello.state_lost;
            tokio::spawn(async move { d.run(db, site, peer, tx, sent, lost).await })
        };
        tokio::spawn(async move {
            let site = who.site_id.clone();
            let session = Session {
                who: &who,
                id: session_id,
                log_id: hello.log_id,
                time_shift_ms: clock.correction_ms(),
            };
            if let Err(status) = this.pump(&session, inbound, replaced, &tx).await {
                tracing::warn!(%site, code = ?status.code(), msg = %status.message(), "agent session ended with error");
                let _ = tx.send(Err(status)).await;
            } else {
                tracing::info!(%site, "agent session closed");
            }
            dispatch.abort();
            this.sessions.end(&site, session_id);
            this.closed(&site, session_id).await;
            this.metrics.sessions.dec();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The assets with a gauge reading (volume, water) in `batches`: the
/// tanks to evaluate once they are committed.
fn gauged_assets(batches: &[v1::TelemetryBatch]) -> std::collections::BTreeSet<String> {
    use crate::services::evaluate::{VOLUME_FIELD, WATER_FIELDS};
    batches
        .iter()
        .flat_map(|b| &b.readings)
        .filter(|r| r.field == VOLUME_FIELD || WATER_FIELDS.contains(&r.field.as_str()))
        .map(|r| r.asset_id.clone())
        .collect()
}

impl Ingest {
    /// Commits one session's coalesced batches: through the shared group
    /// committer on SQLite, else in the session's own transaction (at most
    /// `max_concurrent_writes` at once).
    async fn commit(
        &self,
        site: &SiteId,
        batches: Vec<v1::TelemetryBatch>,
    ) -> Result<Result<u64, crate::Error>, Status> {
        let gauged = gauged_assets(&batches);
        let r = self.commit_batches(site, batches).await;
        if matches!(r, Ok(Ok(_))) {
            self.touched.mark(site, gauged.iter().map(String::as_str));
        }
        r
    }

    async fn commit_batches(
        &self,
        site: &SiteId,
        batches: Vec<v1::TelemetryBatch>,
    ) -> Result<Result<u64, crate::Error>, Status> {
        if let Some(g) = &self.group {
            let (reply, rx) = tokio::sync::oneshot::channel();
            g.send(GroupJob {
                site: site.clone(),
                batches,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
            return rx
                .await
                .map_err(|_| Status::unavailable("the committer stopped"));
        }
        let _permit = self
            .writers
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let t = std::time::Instant::now();
        let r = self.db.ingest_many(site, &batches).await;
        self.metrics
            .db_write_seconds
            .observe(t.elapsed().as_secs_f64());
        Ok(r)
    }

    /// Runs a session: a reader that validates and queues batches, and a
    /// committer that commits what is queued (coalesced, one transaction)
    /// and acknowledges it. The queue is bounded ([`PIPELINE_DEPTH`]): when
    /// the database is slow the reader stops reading and HTTP/2 flow
    /// control pushes back on the agent.
    async fn pump(
        &self,
        s: &Session<'_>,
        inbound: Streaming<AgentMessage>,
        replaced: tokio::sync::watch::Receiver<Option<String>>,
        tx: &mpsc::Sender<Result<HeadendMessage, Status>>,
    ) -> Result<(), Status> {
        let (queue_tx, queue_rx) = mpsc::channel::<v1::TelemetryBatch>(PIPELINE_DEPTH);
        let reader = self.read_session(s, inbound, queue_tx, replaced, tx);
        let committer = self.commit_session(s, queue_rx, tx);
        // the reader ends first (stream closed or error); the committer then drains the queue
        let (r, c) = tokio::join!(reader, committer);
        c.and(r)
    }

    async fn read_session(
        &self,
        s: &Session<'_>,
        mut inbound: Streaming<AgentMessage>,
        queue: mpsc::Sender<v1::TelemetryBatch>,
        mut replaced: tokio::sync::watch::Receiver<Option<String>>,
        tx: &mpsc::Sender<Result<HeadendMessage, Status>>,
    ) -> Result<(), Status> {
        let (who, log_id) = (s.who, s.log_id);
        let mut shutdown = self.shutdown.clone();
        let mut last_renewal: Option<tokio::time::Instant> = None;
        // the session's point aliases and deltas (CompactBatch)
        let mut compact = tankwatch_proto::compact::Decoder::new();
        loop {
            let msg = tokio::select! {
                m = inbound.message() => match m? { Some(m) => m, None => return Ok(()) },
                _ = queue.closed() => return Ok(()), // the committer failed
                why = async { replaced.wait_for(|r| r.is_some()).await.ok().and_then(|w| w.clone()) } => {
                    return Err(Status::aborted(why.unwrap_or_default()));
                }
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                    let _ = tx
                        .send(out(Out::Control(v1::SessionControl {
                            kind: v1::session_control::Kind::Reconnect as i32,
                            retry_after_ms: 1000,
                            reason: "headend shutting down".into(),
                        })))
                        .await;
                    return Err(Status::unavailable("headend shutting down"));
                }
            };
            match msg.msg {
                Some(In::Batch(b)) => {
                    let more = self.take_batch(s, b, &queue).await?;
                    if !more {
                        return Ok(());
                    }
                }
                Some(In::Compact(c)) => {
                    let b = compact
                        .decode(c, log_id)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    self.metrics.compact_batches.inc();
                    if !self.take_batch(s, b, &queue).await? {
                        return Ok(());
                    }
                }
                Some(In::Hello(_)) => {
                    return Err(Status::invalid_argument("a second Hello on one session"));
                }
                Some(In::Devices(mut h)) => {
                    if h.devices.len() > crate::store::devices::MAX_DEVICES {
                        return Err(Status::invalid_argument(format!(
                            "device health of {} devices (at most {})",
                            h.devices.len(),
                            crate::store::devices::MAX_DEVICES
                        )));
                    }
                    self.metrics
                        .sanitized_fields
                        .inc_by(sanitize::devices(&mut h));
                    if let Err(e) = self
                        .db
                        .record_device_health(&who.site_id, &h, crate::wallclock::now_ms())
                        .await
                    {
                        // state, not history: the next report replaces it anyway
                        tracing::warn!(site = %who.site_id, error = %e, "device health not stored");
                    }
                }
                Some(In::Renew(r)) => {
                    let reply = self.renewal(who, r, &mut last_renewal).await;
                    if tx.send(out(Out::Renewed(reply))).await.is_err() {
                        return Ok(());
                    }
                }
                Some(In::Certificate(c)) => self.certificate_status(who, c).await,
                Some(In::Link(r)) => {
                    let info = crate::services::sessions::LinkInfo::from_report(
                        &r,
                        s.time_shift_ms,
                        now_ms(),
                    );
                    self.sessions.set_link(&who.site_id, s.id, info);
                }
                Some(In::CommandAck(_)) | Some(In::Event(_)) => {
                    tracing::debug!(site = %who.site_id, "event/command ack received (handled by later issues)");
                }
                None => {}
            }
        }
    }

    /// Validates, corrects and queues one batch for its commit. False:
    /// the committer is gone (the session ends).
    async fn take_batch(
        &self,
        s: &Session<'_>,
        mut b: v1::TelemetryBatch,
        queue: &mpsc::Sender<v1::TelemetryBatch>,
    ) -> Result<bool, Status> {
        validate_batch(&b, s.log_id)?;
        clock::shift(&mut b, s.time_shift_ms);
        let m = &self.metrics;
        m.sanitized_fields.inc_by(sanitize::batch(&mut b));
        m.batches.inc();
        m.readings.inc_by(b.readings.len() as u64);
        m.gap_records.inc_by(b.gaps.len() as u64);
        m.command_acks.inc_by(b.command_acks.len() as u64);
        m.delivery_events.inc_by(b.events.len() as u64);
        if b.preview {
            m.preview_batches.inc();
        }
        m.queued_batches.inc();
        if queue.send(b).await.is_err() {
            m.queued_batches.dec();
            return Ok(false);
        }
        Ok(true)
    }

    /// Signs a renewal for the session's own site (at most one per
    /// [`RENEW_SPACING`]; a certificate holder cannot make the headend sign
    /// without end).
    async fn renewal(
        &self,
        who: &AgentIdentity,
        r: v1::RenewRequest,
        last: &mut Option<tokio::time::Instant>,
    ) -> v1::RenewReply {
        let mut reply = v1::RenewReply {
            request_id: r.request_id,
            ..Default::default()
        };
        if last.is_some_and(|t| t.elapsed() < RENEW_SPACING) {
            reply.error = format!(
                "renewals on one session are at least {} s apart",
                RENEW_SPACING.as_secs()
            );
            return reply;
        }
        *last = Some(tokio::time::Instant::now());
        match self
            .issuing
            .renew(
                &self.db,
                &who.site_id,
                &who.serial,
                &r.csr_der,
                &who.peer.to_string(),
            )
            .await
        {
            Ok(e) => {
                self.metrics.renewals.inc();
                tracing::info!(site = %who.site_id, old = %who.serial, new = %e.serial, "agent certificate renewed");
                reply.chain_pem = e.chain_pem;
            }
            Err(e) => {
                tracing::warn!(site = %who.site_id, error = %e, "agent certificate renewal refused");
                reply.error = e.to_string();
            }
        }
        reply
    }

    async fn certificate_status(&self, who: &AgentIdentity, mut c: v1::CertificateStatus) {
        if c.failures > 0 {
            tracing::warn!(site = %who.site_id, failures = c.failures, error = %c.last_error, "the agent reports failed certificate renewals");
        }
        sanitize::text(&mut c.last_error);
        sanitize::text(&mut c.serial);
        c.last_error = c.last_error.chars().take(500).collect();
        c.serial = c.serial.chars().take(64).collect();
        let row = crate::store::certs::CertStatusRow {
            site_id: who.site_id.to_string(),
            serial: c.serial,
            not_after_ms: UnixMs::from_ms(c.not_after_ms),
            renew_at_ms: UnixMs::from_ms(c.renew_at_ms),
            failures: i64::from(c.failures),
            last_error: c.last_error,
            reported_ms: crate::wallclock::now(),
        };
        if let Err(e) = self.db.certs().set_status(&row).await {
            tracing::warn!(site = %who.site_id, error = %e, "certificate status not stored");
        }
    }

    async fn commit_session(
        &self,
        s: &Session<'_>,
        mut queue: mpsc::Receiver<v1::TelemetryBatch>,
        tx: &mpsc::Sender<Result<HeadendMessage, Status>>,
    ) -> Result<(), Status> {
        let (who, log_id) = (s.who, s.log_id);
        let mut group = Vec::with_capacity(PIPELINE_DEPTH);
        while let Some(b) = queue.recv().await {
            group.push(b);
            let mut readings = group[0].readings.len();
            while readings < COALESCE_READINGS {
                match queue.try_recv() {
                    Ok(b) => {
                        readings += b.readings.len();
                        group.push(b);
                    }
                    Err(_) => break,
                }
            }
            self.metrics.queued_batches.dec_by(group.len() as i64);
            let ack = group.iter().any(|b| !b.preview);
            let acked = {
                let r = self
                    .commit(&who.site_id, std::mem::take(&mut group))
                    .await?;
                match r {
                    Ok(acked) => acked,
                    Err(e) => {
                        self.metrics.commit_failures.inc();
                        self.sessions.commit_failed(&who.site_id, &e.to_string());
                        // what is still queued goes with the session (the agent resends it)
                        self.metrics.queued_batches.dec_by(queue.len() as i64);
                        tracing::error!(site = %who.site_id, error = %e, "batch commit failed; not acknowledging");
                        return Err(Status::unavailable("database unavailable"));
                    }
                }
            };
            self.metrics.commits.inc();
            self.sessions.commit_succeeded(&who.site_id);
            if !ack {
                continue; // previews are stored, not acknowledged (see the proto)
            }
            self.sessions.set_acked(&who.site_id, s.id, acked);
            let ack = out(Out::Ack(v1::TelemetryAck {
                log_id,
                acked_through_seq: acked,
            }));
            if tx.send(ack).await.is_err() {
                return Ok(()); // agent went away
            }
        }
        Ok(())
    }
}
