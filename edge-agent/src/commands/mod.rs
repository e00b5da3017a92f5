//! The command executor: applies the headend's commands at the site.
//!
//! ```text
//! uplink --Command (bounded, COMMAND_QUEUE; the uplink waits)--> executor
//! OPC UA server --LocalWrite (bounded, LOCAL_QUEUE; the writer waits)--> executor
//! executor --dedup, expiry, supersession, safety limits--> device write + read-back
//! executor --CommandAck / delivery Event--> log writer (fsynced at once) --> headend
//! ```
//!
//! Every answer is a log entry (class command_ack or event), so it survives
//! restarts and outages and reaches the headend exactly once. The command
//! id is stored durably ([`crate::store`]) *before* the `received` ack, and
//! a redelivered id is ignored: a command is applied at most once.
//!
//! Order of checks for a setpoint: redelivery, expiry, known point and
//! default (for a duration), supersession (a newer command is in force on
//! the point), safety limits ([`crate::limits`]), then the write and its
//! read-back. A setpoint with a duration is reverted to the point's
//! configured default when it ends (also after a restart: the end time is
//! stored); a failed revert is retried every [`REVERT_RETRY`] until it
//! succeeds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::{Event, GaugeDelivery, WriteRequest, now_ms};
use tankwatch_proto::v1::{self, AckReason};
use tokio::sync::{mpsc, watch};

use crate::config::{AgentConfig, AssetKind};
use crate::delivery::Detector;

mod deliveries;
mod points;
mod settle;
use crate::logwriter::{Latest, Record};
use crate::store::{Note, Store, StoreError};
use deliveries::in_progress;
use points::Revert;
pub use points::{LocalWrite, Outcome};

/// Commands waiting for the executor; when full the uplink stops reading
/// the stream (HTTP/2 flow control then holds the headend back).
pub const COMMAND_QUEUE: usize = 64;
/// Local writes (OPC UA clients) waiting for the executor; when full the
/// writer waits (the OPC UA server answers the client when its wait ends).
pub const LOCAL_QUEUE: usize = 16;
/// Longest wait for a device to answer a write (and its read-back).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry period of a failed revert.
pub const REVERT_RETRY: Duration = Duration::from_secs(5);
/// How often tank volumes are sampled for delivery detection.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Counters for `/metrics`.
#[derive(Clone, Default)]
pub struct CommandMetrics {
    pub received: prometheus_client::metrics::counter::Counter,
    pub duplicates: prometheus_client::metrics::counter::Counter,
    pub applied: prometheus_client::metrics::counter::Counter,
    pub refused: prometheus_client::metrics::counter::Counter,
    pub device_writes: prometheus_client::metrics::counter::Counter,
    pub deliveries: prometheus_client::metrics::counter::Counter,
    /// OPC UA client writes, by the status the client got.
    pub opcua_writes: prometheus_client::metrics::family::Family<
        Vec<(&'static str, String)>,
        prometheus_client::metrics::counter::Counter,
    >,
    /// OPC UA logins refused (wrong password, unknown or locked name).
    pub opcua_logins_refused: prometheus_client::metrics::counter::Counter,
    /// OPC UA writes the server refused that were counted but not recorded
    /// at the headend (past the rate, or the executor's queue full).
    pub opcua_refused_writes_unrecorded: prometheus_client::metrics::counter::Counter,
    /// Reverts to a point's default that failed (each retried).
    pub revert_failures: prometheus_client::metrics::counter::Counter,
    /// Points whose revert failed and is being retried now (a setpoint
    /// still in force past its end: the alert `TankwatchRevertFailing`).
    pub reverts_pending: prometheus_client::metrics::gauge::Gauge,
}

/// The executor's wiring.
pub struct Executor {
    /// The headend's clock (command expiry is a headend time).
    pub clock: crate::clock::HeadendClock,
    pub cfg: Arc<AgentConfig>,
    pub store: Store,
    pub writes: HashMap<String, mpsc::Sender<WriteRequest>>,
    pub latest: Arc<Latest>,
    pub records: mpsc::Sender<Record>,
    pub readings: mpsc::Sender<Event>,
    pub metrics: CommandMetrics,
}

fn point_key(asset: &str, field: &str) -> String {
    format!("{asset}.{field}")
}

fn ack(
    id: &str,
    reason: AckReason,
    detail: impl Into<String>,
    readback: Option<f64>,
) -> v1::CommandAck {
    v1::CommandAck::new(id, reason, detail, now_ms(), readback)
}

#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the log writer has stopped")]
    LogClosed,
}

impl Executor {
    /// Runs until `stop`.
    pub async fn run(self, inputs: Inputs, mut stop: watch::Receiver<bool>) {
        let Inputs {
            commands: mut rx,
            mut gauge,
            mut local,
        } = inputs;
        let saved = self.store.detectors().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading saved delivery detector states");
            HashMap::new()
        });
        let mut ex = Running {
            detectors: self
                .cfg
                .assets
                .iter()
                .filter(|a| a.kind == AssetKind::Tank)
                .map(|a| {
                    let cfg = self.cfg.deliveries.clone();
                    let det = match saved.get(&a.id) {
                        Some(s) => Detector::restore(cfg, s),
                        None => Detector::new(cfg),
                    };
                    (a.id.clone(), det)
                })
                .collect(),
            last_sample: HashMap::new(),
            recent: HashMap::new(),
            retry_at: HashMap::new(),
            e: self,
        };
        // the interlock input starts known: a delivery under way at a
        // restart resumes from the saved detector state
        for (tank, det) in &ex.detectors {
            let _ =
                ex.e.readings
                    .send(Event::Reading(in_progress(tank, det.delivering())))
                    .await;
        }
        if let Err(e) = ex.e.store.prune(now_ms()) {
            tracing::warn!(error = %e, "pruning the command store failed");
        }
        // what a crash left half-done is answered before anything new
        match ex.settle().await {
            Ok(()) => {}
            Err(ExecError::LogClosed) => return,
            Err(e) => tracing::error!(error = %e, "settling commands after a restart failed"),
        }
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let due = ex.next_due();
            let r = tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => ex.handle(c).await,
                    None => return,
                },
                _ = tokio::time::sleep(due), if due < Duration::MAX => ex.revert_due().await,
                _ = sample.tick() => ex.detect().await,
                Some(g) = gauge.recv() => ex.gauge(g).await,
                Some(w) = local.recv() => ex.local_write(w).await,
                _ = stop.changed() => return,
            };
            match r {
                Ok(()) => {}
                Err(ExecError::LogClosed) => return,
                Err(e) => {
                    // the state store failed (disk): the command is not acked
                    // as applied; the headend redelivers it after a reconnect
                    tracing::error!(error = %e, "command executor");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// What the executor acts on.
pub struct Inputs {
    /// The headend's commands (from the uplink).
    pub commands: mpsc::Receiver<v1::Command>,
    /// Delivery records from tank gauges (from the log writer).
    pub gauge: mpsc::Receiver<GaugeDelivery>,
    /// Setpoints written at the site (the OPC UA server).
    pub local: mpsc::Receiver<LocalWrite>,
}

struct Running {
    e: Executor,
    detectors: HashMap<String, Detector>,
    last_sample: HashMap<String, i64>,
    /// Recent deliveries per tank, from either source (for matching the other).
    recent: HashMap<String, std::collections::VecDeque<crate::delivery::Recent>>,
    /// Reverts that failed, and when to try again.
    retry_at: HashMap<String, tokio::time::Instant>,
}

impl Running {
    /// Hands outbox rows to the log writer; each row leaves the outbox
    /// once the log has it on disk (a task per row waits for that).
    async fn emit(&self, out: Vec<crate::store::Outgoing>) -> Result<(), ExecError> {
        for o in out {
            let row = o.row;
            let (rec, durable) = Record::from_outbox(o);
            if let Ok(v1::LogRecord {
                kind: Some(v1::log_record::Kind::CommandAck(a)),
            }) = <v1::LogRecord as prost::Message>::decode(rec.payload.as_slice())
            {
                tracing::info!(command = %a.command_id, reason = %a.reason, detail = %a.detail, "command ack");
            }
            self.e
                .records
                .send(rec)
                .await
                .map_err(|_| ExecError::LogClosed)?;
            let store = self.e.store.clone();
            tokio::spawn(async move {
                // not told (the log writer stopped): the row stays for the next start
                if durable.await.is_ok()
                    && let Err(e) = store.outbox_done(row)
                {
                    tracing::warn!(row, error = %e, "clearing an outbox row failed; it is sent again at the next start");
                }
            });
        }
        Ok(())
    }

    /// Ends a command at the site with `reason` (state done, in the same
    /// transaction as its ack).
    pub(super) async fn finish(
        &self,
        id: &str,
        reason: AckReason,
        detail: String,
    ) -> Result<(), ExecError> {
        if reason.is_refusal() {
            self.e.metrics.refused.inc();
        }
        let out = self.e.store.finish(
            id,
            "done",
            &[Note::Ack(ack(id, reason, detail, None))],
            now_ms(),
        )?;
        self.emit(out).await
    }

    async fn handle(&mut self, c: v1::Command) -> Result<(), ExecError> {
        use v1::command::Action;
        let now = now_ms();
        let kind = match &c.action {
            Some(Action::Setpoint(_)) => "setpoint",
            Some(Action::Eta(_)) => "eta",
            Some(Action::Cancel(_)) => "cancel",
            None => "unknown",
        };
        // stored with its body before anything is done about it (write-ahead)
        let received = (kind != "cancel")
            .then(|| Note::Ack(ack(&c.command_id, AckReason::Received, "", None)));
        let body = prost::Message::encode_to_vec(&c);
        let Some(out) = self.e.store.insert_new(
            &c.command_id,
            c.issued_seq,
            kind,
            "received",
            c.expires_at_ms,
            now,
            Some(&body),
            received.as_slice(),
        )?
        else {
            self.e.metrics.duplicates.inc();
            tracing::info!(command = %c.command_id, "command delivered again; already handled (applied at most once)");
            return Ok(());
        };
        self.e.metrics.received.inc();
        self.emit(out).await?;
        self.process(c).await
    }

    /// Acts on a command already stored as `received` (a new one, or one
    /// a crash left unsettled): expiry, then its action.
    async fn process(&mut self, mut c: v1::Command) -> Result<(), ExecError> {
        use v1::command::Action;
        if c.resume {
            // in force before this agent lost its state: no expiry, and its
            // duration ends when it was due to (see the proto)
            if let Some(Action::Setpoint(s)) = c.action.as_mut() {
                s.duration_ms = match c.resume_ends_ms {
                    0 => 0,
                    end => (end - now_ms()).max(1),
                };
            }
            tracing::warn!(command = %c.command_id, "resuming a setpoint the headend has in force (the command state was lost)");
            c.expires_at_ms = 0;
        }
        // expiry is a headend time: judged by the headend's clock as measured at the HelloAck
        let headend_now = self.e.clock.headend_now_ms();
        if c.expires_at_ms > 0 && headend_now > c.expires_at_ms {
            return self
                .finish(
                    &c.command_id,
                    AckReason::Expired,
                    format!(
                        "expired {} ms before it arrived (headend clock)",
                        headend_now - c.expires_at_ms
                    ),
                )
                .await;
        }
        match c.action {
            Some(Action::Setpoint(s)) => self
                .setpoint(&c.command_id, c.issued_seq, s)
                .await
                .map(|_| ()),
            Some(Action::Eta(e)) => self.eta(&c.command_id, c.issued_seq, e).await,
            Some(Action::Cancel(x)) => {
                // the cancel is done once its target is settled (a crash
                // in between: settled again at the next start)
                self.cancel(&x.command_id, c.issued_seq).await?;
                self.e
                    .store
                    .set_command_state(&c.command_id, "done", now_ms())?;
                Ok(())
            }
            None => {
                self.finish(
                    &c.command_id,
                    AckReason::RejectedInvalid,
                    "the command carries no action this agent understands".into(),
                )
                .await
            }
        }
    }

    /// Ends an applied command early, or makes sure an unapplied one never is.
    async fn cancel(&mut self, target: &str, seq: i64) -> Result<(), ExecError> {
        let now = now_ms();
        match self.e.store.command_state(target)?.as_deref() {
            None => {
                // not here yet: remember it as done so it is never applied
                let out = self.e.store.insert_new(
                    target,
                    seq,
                    "cancelled",
                    "done",
                    0,
                    now,
                    None,
                    &[Note::Ack(ack(
                        target,
                        AckReason::Cancelled,
                        "cancelled before it reached the site",
                        None,
                    ))],
                )?;
                self.emit(out.unwrap_or_default()).await
            }
            Some("done") => Ok(()),
            Some("applied") => {
                if let Some(p) = self.e.store.point_of_command(target)? {
                    return self.revert(p, Revert::Cancelled).await;
                }
                if let Some(d) = self
                    .e
                    .store
                    .deliveries()?
                    .into_iter()
                    .find(|d| d.command_id == target)
                {
                    // (a crash before the finish: the cancel is settled again, and finds it done)
                    self.e
                        .store
                        .set_delivery_state(&d.load_ref, "cancelled", None, now)?;
                    return self
                        .finish(
                            target,
                            AckReason::Completed,
                            format!("cancelled: load {} removed", d.load_ref),
                        )
                        .await;
                }
                self.finish(target, AckReason::Completed, "cancelled".into())
                    .await
            }
            Some(_) => {
                self.finish(
                    target,
                    AckReason::Cancelled,
                    "cancelled before it was applied".into(),
                )
                .await
            }
        }
    }

    async fn eta(&mut self, id: &str, seq: i64, e: v1::EtaAction) -> Result<(), ExecError> {
        if e.load_ref.trim().is_empty() {
            return self
                .finish(id, AckReason::RejectedInvalid, "load_ref is empty".into())
                .await;
        }
        let tanks: Vec<&str> = self
            .e
            .cfg
            .assets
            .iter()
            .filter(|a| a.kind == AssetKind::Tank)
            .map(|a| a.id.as_str())
            .collect();
        if e.tanks.is_empty() {
            return self
                .finish(id, AckReason::RejectedInvalid, "no tank given".into())
                .await;
        }
        if let Some(t) = e.tanks.iter().find(|t| !tanks.contains(&t.as_str())) {
            return self
                .finish(
                    id,
                    AckReason::RejectedInvalid,
                    format!(
                        "{t:?} is not a tank of this site (tanks: {})",
                        tanks.join(", ")
                    ),
                )
                .await;
        }
        let prev = self.e.store.delivery(&e.load_ref)?;
        if let Some(p) = prev.as_ref().filter(|p| p.issued_seq > seq) {
            return self
                .finish(
                    id,
                    AckReason::Superseded,
                    format!(
                        "a newer ETA ({}) for load {} is already here",
                        p.command_id, e.load_ref
                    ),
                )
                .await;
        }
        let now = now_ms();
        let detail = if e.cancelled {
            format!("load {} cancelled", e.load_ref)
        } else {
            format!(
                "load {} expected at {} ({}) on {}",
                e.load_ref,
                e.eta_ms,
                e.eta_source,
                e.tanks.join(", ")
            )
        };
        let mut notes = vec![Note::Ack(ack(id, AckReason::Applied, detail, None))];
        let mut done: Vec<String> = Vec::new();
        if let Some(p) = prev.filter(|p| p.command_id != id)
            && self.e.store.command_state(&p.command_id)?.as_deref() != Some("done")
        {
            notes.push(Note::Ack(ack(
                &p.command_id,
                AckReason::Superseded,
                format!("by {id}"),
                None,
            )));
            done.push(p.command_id);
        }
        if e.cancelled {
            notes.push(Note::Ack(ack(
                id,
                AckReason::Completed,
                format!("load {} cancelled", e.load_ref),
                None,
            )));
            done.push(id.to_string());
        }
        let done: Vec<&str> = done.iter().map(String::as_str).collect();
        let out = self.e.store.put_delivery(id, seq, &e, now, &done, &notes)?;
        self.e.metrics.applied.inc();
        self.emit(out).await
    }
}

#[cfg(test)]
mod tests;
