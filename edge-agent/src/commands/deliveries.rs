//! Deliveries at the executor: the volume-rise detector's findings and the
//! tank gauge's own delivery records, tied to the expected loads and sent
//! to the headend as `DeliveryEvent`s that say which source they came from.
//!
//! Precedence: a gauge's record beats the detector. A gauge record is
//! tied to the load the detector already matched (a delivery under way, or
//! one the detector ended within [`crate::delivery::OVERLAP_SLACK_MS`]),
//! else to the expected load with the nearest ETA; it sets the load's
//! delivered volume even when the detector set it first. A detector end
//! that a gauge record already covers keeps the gauge's load, and the
//! headend never lets it overwrite the gauge's volume. Gauges repeat their
//! recent records at every poll: the newest end time reported per tank is
//! kept in the state store ([`crate::delivery::is_new_report`]).

use adapter_api::{Event, GaugeDelivery, Reading, now_ms};
use tankwatch_proto::v1::{self, AckReason};

use super::{ExecError, Running};
use crate::delivery::{self, Detected, Recent};
use crate::logwriter::Record;

/// Deliveries remembered per tank for matching the other source.
const RECENT_PER_TANK: usize = 8;

impl Running {
    /// Samples tank volumes; a detected delivery becomes events tied to the
    /// matching expected load, and a `delivery.in_progress` reading.
    pub(super) async fn detect(&mut self) -> Result<(), ExecError> {
        let mut found = Vec::new();
        for (tank, det) in &mut self.detectors {
            let Some((v, ts)) = self.e.latest.good(tank, "volume") else {
                continue;
            };
            if self.last_sample.get(tank) == Some(&ts) {
                continue;
            }
            self.last_sample.insert(tank.clone(), ts);
            let was = det.delivering();
            let d = det.sample(ts, v);
            // saved while a delivery is under way and when it ends (idle
            // baselines are cheap to relearn; no fsync per sample then)
            if was || det.delivering() {
                self.e
                    .store
                    .save_detector(tank, &det.snapshot(), now_ms())?;
            }
            if let Some(d) = d {
                found.push((tank.clone(), d));
            }
        }
        for (tank, d) in found {
            self.detected(&tank, d).await?;
        }
        Ok(())
    }

    fn remember(&mut self, tank: &str, r: Recent) {
        let q = self.recent.entry(tank.to_string()).or_default();
        if q.len() == RECENT_PER_TANK {
            q.pop_front();
        }
        q.push_back(r);
    }

    async fn detected(&mut self, tank: &str, d: Detected) -> Result<(), ExecError> {
        let now = now_ms();
        let loads = self.e.store.deliveries()?;
        let (delivering, ev) = match d {
            Detected::Started {
                start_ms,
                start_volume,
            } => {
                let load_ref =
                    delivery::nearest_expected(&loads, tank, start_ms, delivery::LOAD_MATCH_MS)
                        .map(|l| l.load_ref.clone())
                        .unwrap_or_default();
                if !load_ref.is_empty() {
                    self.e
                        .store
                        .set_delivery_state(&load_ref, "delivering", None, now)?;
                }
                (
                    true,
                    v1::DeliveryEvent {
                        phase: v1::delivery_event::Phase::Started as i32,
                        load_ref,
                        tank: tank.to_string(),
                        start_ms,
                        start_volume_l: start_volume,
                        source: v1::delivery_event::Source::Detector as i32,
                        ..Default::default()
                    },
                )
            }
            Detected::Ended {
                start_ms,
                end_ms,
                start_volume,
                end_volume,
            } => {
                let delivered = end_volume - start_volume;
                // a gauge record for this delivery came first: it keeps its load and volume
                let by_gauge = self
                    .recent
                    .get(tank)
                    .and_then(|q| delivery::overlapping(q, start_ms, end_ms, true))
                    .map(|r| r.load_ref.clone());
                let load_ref = match by_gauge {
                    Some(l) => l,
                    None => {
                        let load = loads
                            .iter()
                            .find(|l| l.state == "delivering" && l.tanks.iter().any(|t| t == tank));
                        let load_ref = load.map(|l| l.load_ref.clone()).unwrap_or_default();
                        self.finish_load(load, delivered, tank, "").await?;
                        load_ref
                    }
                };
                self.remember(
                    tank,
                    Recent {
                        start_ms,
                        end_ms,
                        load_ref: load_ref.clone(),
                        gauge: false,
                    },
                );
                self.e.metrics.deliveries.inc();
                (
                    false,
                    v1::DeliveryEvent {
                        phase: v1::delivery_event::Phase::Ended as i32,
                        load_ref,
                        tank: tank.to_string(),
                        start_ms,
                        end_ms,
                        start_volume_l: start_volume,
                        end_volume_l: end_volume,
                        delivered_volume_l: delivered,
                        source: v1::delivery_event::Source::Detector as i32,
                    },
                )
            }
        };
        self.send_delivery(ev, now).await?;
        // an interlock input ("no pump enable while a delivery is in progress")
        let _ = self
            .e
            .readings
            .send(Event::Reading(in_progress(tank, delivering)))
            .await;
        Ok(())
    }

    /// Marks `load` delivered (if any) and completes its ETA command.
    async fn finish_load(
        &mut self,
        load: Option<&crate::store::Delivery>,
        delivered: f64,
        tank: &str,
        by: &str,
    ) -> Result<(), ExecError> {
        let Some(l) = load else { return Ok(()) };
        let now = now_ms();
        self.e
            .store
            .set_delivery_state(&l.load_ref, "delivered", Some(delivered), now)?;
        if self.e.store.command_state(&l.command_id)?.as_deref() != Some("done") {
            self.finish(
                &l.command_id,
                AckReason::Completed,
                format!(
                    "load {} delivered: {delivered:.0} L into {tank}{by}",
                    l.load_ref
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// A delivery record from a tank gauge (repeated at every poll; only
    /// a new one is acted on).
    pub(super) async fn gauge(&mut self, g: GaugeDelivery) -> Result<(), ExecError> {
        let now = now_ms();
        let tank = g.asset.clone();
        if !self.detectors.contains_key(&tank) {
            // deliveries belong to tanks; the config maps this gauge's tank elsewhere
            tracing::warn!(asset = %tank, device = %g.device, "a gauge delivery record for an asset that is not a tank: ignored; declare the asset `kind: tank`");
            return Ok(());
        }
        let mark = self.e.store.gauge_mark(&tank)?;
        if !delivery::is_new_report(mark, now, g.start_ms, g.end_ms) {
            return Ok(());
        }
        let loads = self.e.store.deliveries()?;
        let delivered = g.end_volume_l - g.start_volume_l;
        // the load the detector tied to this delivery, else the nearest expected one
        let seen = self
            .recent
            .get(&tank)
            .and_then(|q| delivery::overlapping(q, g.start_ms, g.end_ms, false))
            .map(|r| r.load_ref.clone())
            .filter(|l| !l.is_empty());
        let load = match seen {
            Some(r) => loads.iter().find(|l| l.load_ref == r),
            None => loads
                .iter()
                .find(|l| l.state == "delivering" && l.tanks.contains(&tank))
                .or_else(|| {
                    delivery::nearest_expected(&loads, &tank, g.start_ms, delivery::LOAD_MATCH_MS)
                }),
        };
        let load_ref = load.map(|l| l.load_ref.clone()).unwrap_or_default();
        self.finish_load(load, delivered, &tank, " (tank gauge's record)")
            .await?;
        self.e.store.set_gauge_mark(&tank, g.end_ms, now)?;
        self.remember(
            &tank,
            Recent {
                start_ms: g.start_ms,
                end_ms: g.end_ms,
                load_ref: load_ref.clone(),
                gauge: true,
            },
        );
        self.e.metrics.deliveries.inc();
        tracing::info!(tank, device = %g.device, load = %load_ref, delivered, source = %g.source, "delivery reported by the tank gauge");
        let ev = v1::DeliveryEvent {
            phase: v1::delivery_event::Phase::Ended as i32,
            load_ref,
            tank,
            start_ms: g.start_ms,
            end_ms: g.end_ms,
            start_volume_l: g.start_volume_l,
            end_volume_l: g.end_volume_l,
            delivered_volume_l: delivered,
            source: v1::delivery_event::Source::Gauge as i32,
        };
        self.send_delivery(ev, now).await
    }

    async fn send_delivery(&mut self, ev: v1::DeliveryEvent, now: i64) -> Result<(), ExecError> {
        tracing::info!(tank = %ev.tank, load = %ev.load_ref, phase = ev.phase, source = ev.source, delivered = ev.delivered_volume_l, "delivery event");
        self.e
            .records
            .send(Record::event(v1::Event {
                ts_ms: now,
                kind: Some(v1::event::Kind::Delivery(ev)),
                seq: 0,
            }))
            .await
            .map_err(|_| ExecError::LogClosed)
    }
}

/// The `<tank>.delivery.in_progress` reading (an interlock input).
pub(super) fn in_progress(tank: &str, delivering: bool) -> Reading {
    let now = now_ms();
    Reading {
        asset_id: tank.to_string(),
        field: "delivery.in_progress".into(),
        value: if delivering { 1.0 } else { 0.0 },
        unit: "bool".into(),
        quality: adapter_api::Quality::Good,
        source_ts_ms: now,
        received_ts_ms: now,
        source: "agent://delivery-detector".into(),
        error: String::new(),
        // an interlock input: kept as long as alarms
        class: adapter_api::DropClass::Alarm,
    }
}
