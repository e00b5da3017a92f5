//! The agent's side of its OPC UA server (`agent-opcua-server`): the
//! site's model from the configuration, the write service (local writes
//! into the executor, the same path as a headend command), and the
//! publisher of the agent's own state and upcoming deliveries.

use std::sync::Arc;
use std::time::Duration;

use adapter_api::now_ms;
use agent_opcua_server::model::{self, Kind};
use agent_opcua_server::{
    AgentStatus, Delivery, DeviceState, WRITE_WAIT, WriteCall, WriteResult, Writer,
};
use tankwatch_proto::v1::AckReason;
use tokio::sync::{mpsc, oneshot, watch};

use crate::commands::LocalWrite;
use crate::config::{AgentConfig, AssetKind};

/// How often `Agent/...` and `Deliveries/...` are refreshed.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The site as the OPC UA address space shows it. Only writable points
/// with a `setpoints:` entry are writable there.
pub fn site_model(cfg: &AgentConfig) -> model::Site {
    let points: Vec<adapter_api::PointSpec> = cfg.devices.iter().flat_map(|d| d.points()).collect();
    let assets = cfg
        .assets
        .iter()
        .map(|a| {
            let mut pts: Vec<model::Point> = Vec::new();
            for p in points.iter().filter(|p| p.asset == a.id) {
                if pts.iter().any(|x| x.field == p.field) {
                    continue;
                }
                let limits = cfg
                    .setpoints
                    .iter()
                    .find(|l| l.asset == a.id && l.field == p.field);
                pts.push(model::Point {
                    field: p.field.clone(),
                    unit: p.conv.unit.to_string(),
                    write_range: limits.filter(|_| p.writable).map(|l| (l.min, l.max)),
                });
            }
            if a.kind == AssetKind::Tank && !pts.iter().any(|p| p.field == "delivery.in_progress") {
                // made by the executor's delivery detection
                pts.push(model::Point {
                    field: "delivery.in_progress".into(),
                    unit: "bool".into(),
                    write_range: None,
                });
            }
            // a tank's capacity in litres (the canonical volume unit), if given in a volume unit
            let capacity_l = adapter_api::units::conversion(&a.capacity_unit)
                .filter(|(unit, _, _)| {
                    a.kind == AssetKind::Tank && *unit == "L" && a.capacity > 0.0
                })
                .map(|(_, f, o)| a.capacity * f + o);
            model::Asset {
                id: a.id.clone(),
                kind: match a.kind {
                    AssetKind::Tank => Kind::Tank,
                    AssetKind::Controller => Kind::Controller,
                    AssetKind::Meter => Kind::Meter,
                    AssetKind::Sensor => Kind::Sensor,
                    AssetKind::Pump => Kind::Pump,
                },
                name: a.name.clone(),
                product: a.product.clone(),
                capacity_l,
                points: pts,
            }
        })
        .collect();
    model::Site {
        id: cfg.site_id.clone(),
        assets,
        devices: cfg.devices.iter().map(|d| d.name().to_string()).collect(),
    }
}

/// What a client's write became at the site.
pub fn result_of(reason: AckReason) -> WriteResult {
    match reason {
        AckReason::Applied | AckReason::Completed => WriteResult::Good,
        AckReason::RejectedOutOfRange => WriteResult::OutOfRange,
        AckReason::RejectedInterlock => WriteResult::Interlock,
        AckReason::RejectedInvalid => WriteResult::Invalid,
        AckReason::Superseded | AckReason::Cancelled => WriteResult::Superseded,
        AckReason::DeviceUnreachable => WriteResult::Unreachable,
        AckReason::WriteFailed | AckReason::ReadbackMismatch => WriteResult::DeviceFailure,
        AckReason::Expired | AckReason::Received | AckReason::Unspecified => WriteResult::Invalid,
    }
}

/// The write service the server calls: a local write into the executor,
/// waiting at most [`WRITE_WAIT`] for its outcome.
pub fn writer(local: mpsc::Sender<LocalWrite>, metrics: crate::commands::CommandMetrics) -> Writer {
    let records = Arc::new(std::sync::Mutex::new(RefusalRecords::default()));
    Arc::new(move |c: WriteCall| {
        let local = local.clone();
        let metrics = metrics.clone();
        let records = records.clone();
        Box::pin(async move {
            if let Some((status, why)) = &c.refused {
                // counted always; recorded at the headend when it names a
                // point and within the rate (a client hammering refused
                // writes must not fill the log)
                metrics
                    .opcua_writes
                    .get_or_create(&vec![("status", status.to_string())])
                    .inc();
                let record = !c.asset.is_empty()
                    && records
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take(tokio::time::Instant::now());
                if !record {
                    metrics.opcua_refused_writes_unrecorded.inc();
                    return (
                        WriteResult::Invalid,
                        format!("{status}: {why} (counted, not recorded)"),
                    );
                }
                let (reply, _rx) = oneshot::channel();
                let w = LocalWrite {
                    asset: c.asset,
                    field: c.field,
                    value: if c.value.is_finite() { c.value } else { 0.0 },
                    origin: "opcua".into(),
                    user: c.user,
                    client: c.client,
                    refused: Some(format!("{status}: {why}")),
                    reply,
                };
                // recorded without waiting for the executor's answer: the
                // client has its status already; a full queue drops the record
                if local.try_send(w).is_err() {
                    metrics.opcua_refused_writes_unrecorded.inc();
                }
                return (WriteResult::Invalid, format!("{status}: {why}"));
            }
            let (reply, rx) = oneshot::channel();
            let w = LocalWrite {
                asset: c.asset,
                field: c.field,
                value: c.value,
                origin: "opcua".into(),
                user: c.user,
                client: c.client,
                refused: None,
                reply,
            };
            let asked = async {
                local.send(w).await.ok()?;
                rx.await.ok()
            };
            let (result, detail) = match tokio::time::timeout(WRITE_WAIT, asked).await {
                Ok(Some(o)) => (result_of(o.reason), o.detail),
                Ok(None) => (WriteResult::Stopped, "the agent is stopping".into()),
                Err(_) => (
                    WriteResult::Timeout,
                    format!("no outcome within {} s", WRITE_WAIT.as_secs()),
                ),
            };
            metrics
                .opcua_writes
                .get_or_create(&vec![("status", result.status_name())])
                .inc();
            (result, detail)
        })
    })
}

/// Refused writes recorded at the headend: a token bucket of
/// [`REFUSALS_BURST`], one more every [`REFUSAL_EVERY`]; past it a refused
/// write is only counted (`opcua_refused_writes_unrecorded_total`).
pub const REFUSALS_BURST: u32 = 10;
/// See [`REFUSALS_BURST`].
pub const REFUSAL_EVERY: Duration = Duration::from_secs(6);

#[derive(Debug)]
struct RefusalRecords {
    tokens: u32,
    last: Option<tokio::time::Instant>,
}

impl Default for RefusalRecords {
    fn default() -> Self {
        RefusalRecords {
            tokens: REFUSALS_BURST,
            last: None,
        }
    }
}

impl RefusalRecords {
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        if let Some(last) = self.last {
            let earned = (now.saturating_duration_since(last).as_millis()
                / REFUSAL_EVERY.as_millis().max(1)) as u32;
            if earned > 0 {
                self.tokens = (self.tokens + earned).min(REFUSALS_BURST);
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What the publisher reads.
pub struct Sources {
    pub log: Arc<sflog::Log>,
    pub store: crate::store::Store,
    pub uplink: watch::Receiver<crate::uplink::UplinkStatus>,
    pub devices: Arc<Vec<crate::metrics::DeviceHealth>>,
    pub status: watch::Sender<AgentStatus>,
    pub deliveries: watch::Sender<Vec<Delivery>>,
}

/// Refreshes `Agent/...` and `Deliveries/...` every [`PUBLISH_EVERY`] until `stop`.
pub async fn publish(s: Sources, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    let mut acked = s.log.stats().acked_through;
    let mut last_ack_ms = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let st = s.log.stats();
        if st.acked_through > acked {
            acked = st.acked_through;
            last_ack_ms = Some(now_ms());
        }
        let status = AgentStatus {
            headend_connected: s.uplink.borrow().connected,
            log_entries: st.entries,
            last_ack_ms,
            devices: s
                .devices
                .iter()
                .map(|d| {
                    let h = d.health.get();
                    DeviceState {
                        name: d.name.clone(),
                        connected: h.connected,
                        last_error: h.last_error,
                    }
                })
                .collect(),
        };
        s.status.send_if_modified(|cur| {
            let changed = *cur != status;
            *cur = status;
            changed
        });
        match s.store.deliveries() {
            Ok(list) => {
                let list: Vec<Delivery> = list
                    .into_iter()
                    .filter(|d| d.state != "cancelled")
                    .map(|d| Delivery {
                        load: d.load_ref,
                        eta_ms: d.eta_ms,
                        eta_source: d.eta_source,
                        planned_volume_l: d.planned_volume_l,
                        status: d.state,
                    })
                    .collect();
                s.deliveries.send_if_modified(|cur| {
                    let changed = *cur != list;
                    *cur = list;
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading upcoming deliveries for the OPC UA server")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ack_reason_has_a_write_result_and_only_applied_is_good() {
        for n in 0..=12 {
            let r = AckReason::try_from(n).unwrap();
            let w = result_of(r);
            assert_eq!(
                w == WriteResult::Good,
                matches!(r, AckReason::Applied | AckReason::Completed),
                "{r:?}"
            );
        }
        assert_eq!(
            result_of(AckReason::RejectedOutOfRange).status(),
            agent_opcua_server::WriteResult::OutOfRange.status()
        );
    }

    fn call() -> WriteCall {
        WriteCall {
            asset: "ctl".into(),
            field: "power_limit".into(),
            value: 1.0,
            user: "alice".into(),
            client: "urn:c".into(),
            refused: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refused_writes_are_counted_and_recorded_within_a_rate() {
        let metrics = crate::commands::CommandMetrics::default();
        let (tx, mut rx) = mpsc::channel(64);
        let w = writer(tx, metrics.clone());
        let refused = || WriteCall {
            refused: Some((
                agent_opcua_server::StatusCode::BadUserAccessDenied,
                "user bob may not write".into(),
            )),
            ..call()
        };
        for _ in 0..15 {
            let (r, _) = w(refused()).await;
            assert_eq!(r, WriteResult::Invalid);
        }
        let count = metrics
            .opcua_writes
            .get_or_create(&vec![("status", "BadUserAccessDenied".to_string())])
            .get();
        assert_eq!(count, 15, "every refusal is counted");
        let mut recorded = Vec::new();
        while let Ok(l) = rx.try_recv() {
            recorded.push(l);
        }
        assert_eq!(recorded.len(), REFUSALS_BURST as usize);
        assert!(
            recorded[0]
                .refused
                .as_deref()
                .is_some_and(|d| d.contains("BadUserAccessDenied")),
            "{:?}",
            recorded[0].refused
        );
        assert_eq!(metrics.opcua_refused_writes_unrecorded.get(), 5);
        // the bucket refills
        tokio::time::advance(REFUSAL_EVERY * 2).await;
        let _ = w(refused()).await;
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_executor_never_answers_times_out_and_one_to_a_stopped_agent_says_so() {
        let metrics = crate::commands::CommandMetrics::default();
        // a busy executor: the queue is never read
        let (tx, _rx) = mpsc::channel(1);
        let w = writer(tx, metrics.clone());
        let started = tokio::time::Instant::now();
        let (r, detail) = w(call()).await;
        assert_eq!(r, WriteResult::Timeout, "{detail}");
        assert_eq!(started.elapsed(), WRITE_WAIT);
        // the executor is gone
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let (r, _) = writer(tx, metrics.clone())(call()).await;
        assert_eq!(r, WriteResult::Stopped);
        let count = |s: &str| {
            metrics
                .opcua_writes
                .get_or_create(&vec![("status", s.to_string())])
                .get()
        };
        assert_eq!((count("BadTimeout"), count("BadShutdown")), (1, 1));
    }
}
