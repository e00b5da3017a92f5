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
use crate::logwriter::{Latest, Record};
use crate::store::{Store, StoreError};
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
}

/// The executor's wiring.
pub struct Executor {
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
    async fn send_ack(&self, a: v1::CommandAck) -> Result<(), ExecError> {
        tracing::info!(command = %a.command_id, reason = %a.reason, detail = %a.detail, "command ack");
        self.e
            .records
            .send(Record::ack(a))
            .await
            .map_err(|_| ExecError::LogClosed)
    }

    /// Ends a command at the site with `reason` (state done).
    async fn finish(&self, id: &str, reason: AckReason, detail: String) -> Result<(), ExecError> {
        self.e.store.set_command_state(id, "done", now_ms())?;
        if reason.is_refusal() {
            self.e.metrics.refused.inc();
        }
        self.send_ack(ack(id, reason, detail, None)).await
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
        if !self
            .e
            .store
            .insert_new(&c.command_id, c.issued_seq, kind, c.expires_at_ms, now)?
        {
            self.e.metrics.duplicates.inc();
            tracing::info!(command = %c.command_id, "command delivered again; already handled (applied at most once)");
            return Ok(());
        }
        self.e.metrics.received.inc();
        if kind != "cancel" {
            self.send_ack(ack(&c.command_id, AckReason::Received, "", None))
                .await?;
        }
        if c.expires_at_ms > 0 && now > c.expires_at_ms {
            return self
                .finish(
                    &c.command_id,
                    AckReason::Expired,
                    format!("expired {} ms before it arrived", now - c.expires_at_ms),
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
                self.e.store.set_command_state(&c.command_id, "done", now)?;
                self.cancel(&x.command_id, c.issued_seq).await
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
                self.e.store.insert_new(target, seq, "cancelled", 0, now)?;
                self.finish(
                    target,
                    AckReason::Cancelled,
                    "cancelled before it reached the site".into(),
                )
                .await
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
        self.e.store.put_delivery(id, seq, &e, now)?;
        self.e.metrics.applied.inc();
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
        self.send_ack(ack(id, AckReason::Applied, detail, None))
            .await?;
        if let Some(p) = prev.filter(|p| p.command_id != id)
            && self.e.store.command_state(&p.command_id)?.as_deref() != Some("done")
        {
            self.e.store.set_command_state(&p.command_id, "done", now)?;
            self.send_ack(ack(
                &p.command_id,
                AckReason::Superseded,
                format!("by {id}"),
                None,
            ))
            .await?;
        }
        if e.cancelled {
            self.e.store.set_command_state(id, "done", now)?;
            self.send_ack(ack(
                id,
                AckReason::Completed,
                format!("load {} cancelled", e.load_ref),
                None,
            ))
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PointState;
    use adapter_api::WriteOutcome;
    use prost::Message;

    const YAML: &str = r#"site_id: site-1
headend: { address: "127.0.0.1:7443" }
tls: { cert: a.pem, key: a.key, ca: ca.pem }
assets:
  - { id: ctl, kind: controller }
  - { id: t1, kind: tank, capacity: 20000 }
devices:
  - modbus:
      name: dev
      address: 127.0.0.1:502
      points:
        - { asset: ctl, field: power_limit, register: 1002, type: f32, writable: true }
setpoints:
  - { asset: ctl, field: power_limit, min: 0, max: 80, default: 50 }
"#;

    struct Harness {
        commands: mpsc::Sender<v1::Command>,
        records: mpsc::Receiver<Record>,
        device: mpsc::Receiver<WriteRequest>,
        _stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
        _readings: mpsc::Receiver<Event>,
        gauge: mpsc::Sender<GaugeDelivery>,
        local: mpsc::Sender<LocalWrite>,
    }

    fn start() -> Harness {
        start_in(tempfile::tempdir().unwrap())
    }

    fn start_in(dir: tempfile::TempDir) -> Harness {
        let cfg = crate::config::parse("t.yaml", YAML).unwrap();
        let (dev_tx, device) = mpsc::channel(4);
        let (rec_tx, records) = mpsc::channel(64);
        let (read_tx, readings) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (gauge, gauge_rx) = mpsc::channel(4);
        let (local, local_rx) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let ex = Executor {
            cfg: Arc::new(cfg),
            store: Store::open(dir.path()).unwrap(),
            writes: HashMap::from([("dev".to_string(), dev_tx)]),
            latest: Arc::new(Latest::default()),
            records: rec_tx,
            readings: read_tx,
            metrics: CommandMetrics::default(),
        };
        let inputs = Inputs {
            commands: cmd_rx,
            gauge: gauge_rx,
            local: local_rx,
        };
        tokio::spawn(ex.run(inputs, stop_rx));
        Harness {
            commands: cmd_tx,
            records,
            device,
            _stop: stop,
            _dir: dir,
            _readings: readings,
            gauge,
            local,
        }
    }

    /// The next log record: an ack (id, reason) or a delivery event.
    async fn next_record(h: &mut Harness) -> v1::log_record::Kind {
        let r = tokio::time::timeout(Duration::from_secs(5), h.records.recv())
            .await
            .expect("a record in time")
            .expect("records open");
        v1::LogRecord::decode(r.payload.as_slice())
            .unwrap()
            .kind
            .expect("a record")
    }

    #[tokio::test]
    async fn a_gauge_record_completes_the_nearest_expected_load_once_and_says_its_source() {
        let mut h = start();
        let now = now_ms();
        let eta = |load: &str, eta_ms: i64| v1::Command {
            command_id: format!("eta-{load}"),
            expires_at_ms: now + 600_000,
            issued_seq: 2,
            action: Some(v1::command::Action::Eta(v1::EtaAction {
                load_ref: load.into(),
                tanks: vec!["t1".into()],
                planned_volume_l: 5000.0,
                eta_ms,
                eta_source: "manual".into(),
                ..Default::default()
            })),
        };
        // one load due now, one in two days (outside the 12 h window)
        for (load, at) in [("near", now), ("later", now + 48 * 3_600_000)] {
            h.commands.send(eta(load, at)).await.unwrap();
            assert_eq!(next_ack(&mut h).await.1, "received");
            assert_eq!(next_ack(&mut h).await.1, "applied");
        }
        let record = GaugeDelivery {
            device: "vr".into(),
            asset: "t1".into(),
            start_ms: now - 1_800_000,
            end_ms: now - 600_000,
            start_volume_l: 1000.0,
            end_volume_l: 6000.0,
            start_tc_volume_l: None,
            end_tc_volume_l: None,
            source: "veeder-root://x/tank1/i202".into(),
        };
        h.gauge.send(record.clone()).await.unwrap();
        let v1::log_record::Kind::CommandAck(a) = next_record(&mut h).await else {
            panic!("the load's ETA command completes first")
        };
        assert_eq!(
            (a.command_id.as_str(), a.reason.as_str()),
            ("eta-near", "completed")
        );
        assert!(a.detail.contains("tank gauge's record"), "{}", a.detail);
        let v1::log_record::Kind::Event(e) = next_record(&mut h).await else {
            panic!("then the delivery event")
        };
        let Some(v1::event::Kind::Delivery(d)) = e.kind else {
            panic!("{e:?}")
        };
        assert_eq!(d.source, v1::delivery_event::Source::Gauge as i32);
        assert_eq!(d.phase, v1::delivery_event::Phase::Ended as i32);
        assert_eq!(
            (d.load_ref.as_str(), d.delivered_volume_l),
            ("near", 5000.0)
        );
        // the gauge repeats it at its next poll: nothing new
        h.gauge.send(record.clone()).await.unwrap();
        // nor is an older record (it ends before the newest one reported)
        h.gauge
            .send(GaugeDelivery {
                asset: "t1".into(),
                end_ms: now - 700_000,
                ..record
            })
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), h.records.recv())
                .await
                .is_err(),
            "a repeated or older record is not reported again"
        );
    }

    fn setpoint(id: &str, value: f64, expires_at_ms: i64) -> v1::Command {
        v1::Command {
            command_id: id.into(),
            expires_at_ms,
            issued_seq: 1,
            action: Some(v1::command::Action::Setpoint(v1::Setpoint {
                asset_id: "ctl".into(),
                field: "power_limit".into(),
                value,
                duration_ms: 0,
            })),
        }
    }

    async fn next_ack(h: &mut Harness) -> (String, String) {
        let r = tokio::time::timeout(Duration::from_secs(5), h.records.recv())
            .await
            .expect("an ack in time")
            .expect("records open");
        match v1::LogRecord::decode(r.payload.as_slice()).unwrap().kind {
            Some(v1::log_record::Kind::CommandAck(a)) => (a.command_id, a.reason),
            other => panic!("not an ack: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_command_arriving_after_its_expiry_is_answered_expired_and_never_written() {
        let mut h = start();
        h.commands
            .send(setpoint("c1", 10.0, now_ms() - 1000))
            .await
            .unwrap();
        assert_eq!(next_ack(&mut h).await, ("c1".into(), "received".into()));
        assert_eq!(next_ack(&mut h).await, ("c1".into(), "expired".into()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(h.device.try_recv().is_err(), "nothing reached the device");
    }

    #[tokio::test]
    async fn a_command_delivered_twice_is_written_once() {
        let mut h = start();
        let c = setpoint("c2", 10.0, now_ms() + 60_000);
        h.commands.send(c.clone()).await.unwrap();
        h.commands.send(c).await.unwrap();
        let w = tokio::time::timeout(Duration::from_secs(5), h.device.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.value, 10.0);
        let _ = w.reply.send(WriteOutcome::Applied { readback: 10.0 });
        assert_eq!(next_ack(&mut h).await.1, "received");
        assert_eq!(next_ack(&mut h).await.1, "applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(h.device.try_recv().is_err(), "written once");
        assert!(h.records.try_recv().is_err(), "answered once");
    }

    #[tokio::test]
    async fn an_out_of_range_setpoint_is_rejected_before_the_device() {
        let mut h = start();
        h.commands
            .send(setpoint("c3", 81.0, now_ms() + 60_000))
            .await
            .unwrap();
        assert_eq!(next_ack(&mut h).await.1, "received");
        assert_eq!(next_ack(&mut h).await.1, "rejected_out_of_range");
        assert!(h.device.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_duration_that_ended_while_the_agent_was_down_is_reverted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.insert_new("c4", 1, "setpoint", 0, 1).unwrap();
        store
            .set_point(
                &PointState {
                    point: "ctl.power_limit".into(),
                    command_id: Some("c4".into()),
                    issued_seq: 1,
                    value: 70.0,
                    applied_ms: now_ms() - 120_000,
                    ends_ms: Some(now_ms() - 60_000),
                },
                1,
            )
            .unwrap();
        drop(store);
        let mut h = start_in(dir);
        let w = tokio::time::timeout(Duration::from_secs(5), h.device.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.value, 50.0, "the configured default");
        let _ = w.reply.send(WriteOutcome::Applied { readback: 50.0 });
        assert_eq!(next_ack(&mut h).await, ("c4".into(), "completed".into()));
    }

    async fn local(h: &Harness, value: f64) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        h.local
            .send(LocalWrite {
                asset: "ctl".into(),
                field: "power_limit".into(),
                value,
                origin: "opcua".into(),
                user: "alice".into(),
                client: "urn:scada".into(),
                reply,
            })
            .await
            .unwrap();
        rx
    }

    /// The next record must be a LocalCommand event; returns its id and seq.
    async fn next_local_command(h: &mut Harness) -> (String, i64) {
        let v1::log_record::Kind::Event(e) = next_record(h).await else {
            panic!("a local command event first")
        };
        let Some(v1::event::Kind::LocalCommand(c)) = e.kind else {
            panic!("{e:?}")
        };
        assert_eq!((c.origin.as_str(), c.user.as_str()), ("opcua", "alice"));
        (c.command_id, c.issued_seq)
    }

    #[tokio::test]
    async fn a_local_write_takes_the_same_path_as_a_headend_command_and_is_recorded_as_one() {
        let mut h = start();
        // out of range: refused before the device, recorded with its reason
        let rx = local(&h, 81.0).await;
        let (id, _) = next_local_command(&mut h).await;
        assert_eq!(next_ack(&mut h).await, (id, "rejected_out_of_range".into()));
        assert_eq!(rx.await.unwrap().reason, AckReason::RejectedOutOfRange);
        assert!(h.device.try_recv().is_err(), "never reached the device");

        // a headend command (issued_seq 1) is in force ...
        h.commands
            .send(setpoint("c1", 20.0, now_ms() + 60_000))
            .await
            .unwrap();
        let w = h.device.recv().await.unwrap();
        let _ = w.reply.send(WriteOutcome::Applied { readback: 20.0 });
        assert_eq!(next_ack(&mut h).await.1, "received");
        assert_eq!(next_ack(&mut h).await.1, "applied");
        // ... a local write supersedes it, with the newest issued_seq seen
        let rx = local(&h, 30.0).await;
        let (id, seq) = next_local_command(&mut h).await;
        assert_eq!(seq, 1);
        let w = h.device.recv().await.unwrap();
        assert_eq!(w.value, 30.0);
        let _ = w.reply.send(WriteOutcome::Applied { readback: 30.0 });
        assert_eq!(next_ack(&mut h).await, (id.clone(), "applied".into()));
        assert_eq!(next_ack(&mut h).await, ("c1".into(), "superseded".into()));
        let out = rx.await.unwrap();
        assert_eq!((out.reason, out.readback), (AckReason::Applied, Some(30.0)));
        // a command the headend issued later beats the local write
        let mut later = setpoint("c2", 40.0, now_ms() + 60_000);
        later.issued_seq = 2;
        h.commands.send(later).await.unwrap();
        let w = h.device.recv().await.unwrap();
        let _ = w.reply.send(WriteOutcome::Applied { readback: 40.0 });
        assert_eq!(next_ack(&mut h).await.1, "received");
        assert_eq!(next_ack(&mut h).await, ("c2".into(), "applied".into()));
        assert_eq!(next_ack(&mut h).await, (id, "superseded".into()));
        // a device that does not answer the local write: the outcome says so
        let rx = local(&h, 45.0).await;
        let (id, _) = next_local_command(&mut h).await;
        let w = h.device.recv().await.unwrap();
        let _ = w
            .reply
            .send(WriteOutcome::Unreachable("connection refused".into()));
        assert_eq!(next_ack(&mut h).await, (id, "device_unreachable".into()));
        assert_eq!(rx.await.unwrap().reason, AckReason::DeviceUnreachable);
    }
}
