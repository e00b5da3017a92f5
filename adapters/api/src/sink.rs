//! Where an adapter's events go, and what happens when the agent cannot
//! take them as fast as they come.
//!
//! The channel to the log writer is bounded. A *poller* (Modbus, Veeder-Root,
//! OPC UA polling) simply waits when it is full: its next poll is delayed and
//! nothing is lost. A *push* adapter (MQTT, OPC UA subscriptions) must not
//! wait: its protocol (keepalives, acks, publish requests) would stall and
//! the peer would drop it. It sheds instead: each shed reading is counted,
//! and the run of shed readings becomes one [`SourceGap`] sent as soon as
//! the channel has room again, so the loss is on the record, as the log's
//! own drops are.

use tokio::sync::mpsc;

use crate::{Health, Reading};

/// What an adapter sends to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Reading(Reading),
    /// Data the agent will never see: shed here, or lost at the source.
    Gap(SourceGap),
    /// A delivery the device itself recorded (a tank gauge's delivery
    /// report). Devices repeat their recent records; the agent keeps track
    /// of which it has reported.
    Delivery(GaugeDelivery),
}

/// A delivery as a tank gauge recorded it, volumes in litres.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeDelivery {
    pub device: String,
    /// The tank's asset id.
    pub asset: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub start_volume_l: f64,
    pub end_volume_l: f64,
    /// Temperature-compensated volumes, when the gauge gives them.
    pub start_tc_volume_l: Option<f64>,
    pub end_tc_volume_l: Option<f64>,
    /// `<kind>://<endpoint>/<report>`.
    pub source: String,
}

/// What an adapter does when the agent's channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait (pollers): the next poll is delayed, nothing is dropped.
    Block,
    /// Drop and count (push adapters): the protocol stays alive.
    Shed,
}

/// Why data is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The adapter shed readings because the agent's channel was full.
    Shed,
    /// The source's sequence numbers jumped (a Sparkplug seq break).
    SourceSequence,
    /// The source says it dropped values (an OPC UA queue overflow).
    SourceOverflow,
}

impl GapReason {
    /// The wire text (`Gap.reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Shed => "adapter_shed",
            GapReason::SourceSequence => "source_sequence",
            GapReason::SourceOverflow => "source_overflow",
        }
    }
}

/// A run of data missing from one device.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceGap {
    pub device: String,
    pub reason: GapReason,
    /// Readings missing; 0 when the source cannot say (a seq break).
    pub count: u64,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A device timestamp further than `bound_ms` from the receive time is not
/// trusted: the reading keeps the receive time instead, a good quality
/// becomes uncertain, and the error text says why. Returns whether it
/// changed the reading. (A device clock an hour ahead would otherwise pin
/// the "latest" value for an hour; one far behind makes old data look
/// like history.)
pub fn untrusted_time(r: &mut Reading, bound_ms: i64) -> bool {
    let off = r.source_ts_ms.saturating_sub(r.received_ts_ms);
    if off.unsigned_abs() <= bound_ms.unsigned_abs() {
        return false;
    }
    r.source_ts_ms = r.received_ts_ms;
    if r.quality == crate::Quality::Good {
        r.quality = crate::Quality::Uncertain;
    }
    if r.error.is_empty() {
        r.error = format!(
            "device time {} s {} the agent's clock: receive time used",
            off.unsigned_abs() / 1000,
            if off > 0 { "ahead of" } else { "behind" }
        );
    }
    true
}

/// The agent closed the channel (it is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// An adapter's end of the channel to the agent, with its when-full policy.
pub struct Sink {
    tx: mpsc::Sender<Event>,
    policy: WhenFull,
    device: String,
    health: Health,
    /// Gaps waiting for room, at most one per reason (runs merge).
    pending: Vec<SourceGap>,
    /// Largest distance between a device's timestamp and the receive time
    /// that is trusted, ms (`None`: any).
    time_bound_ms: Option<i64>,
}

impl Sink {
    pub fn new(tx: mpsc::Sender<Event>, policy: WhenFull, device: &str, health: Health) -> Sink {
        Sink {
            tx,
            policy,
            device: device.to_string(),
            health,
            pending: Vec::new(),
            time_bound_ms: None,
        }
    }

    /// Device timestamps further than `bound_ms` from the receive time are
    /// not trusted (see [`untrusted_time`]).
    pub fn with_time_bound(mut self, bound_ms: i64) -> Sink {
        self.time_bound_ms = Some(bound_ms);
        self
    }

    pub fn policy(&self) -> WhenFull {
        self.policy
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Sends a reading under the sink's policy.
    pub async fn reading(&mut self, mut r: Reading) -> Result<(), Closed> {
        if let Some(bound) = self.time_bound_ms
            && untrusted_time(&mut r, bound)
        {
            self.health.update(|s| s.time_untrusted += 1);
        }
        self.flush_gaps().await?;
        match self.policy {
            WhenFull::Block => self.tx.send(Event::Reading(r)).await.map_err(|_| Closed),
            WhenFull::Shed => {
                let ts = r.received_ts_ms;
                if !self.pending.is_empty() {
                    // gaps still waiting: keep order, this one is shed too
                    self.record(GapReason::Shed, 1, ts, ts);
                    return Ok(());
                }
                match self.tx.try_send(Event::Reading(r)) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.record(GapReason::Shed, 1, ts, ts);
                        Ok(())
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
                }
            }
        }
    }

    /// Sends a delivery the device recorded, under the sink's policy (a
    /// shedding sink drops it when full: the device reports it again).
    pub async fn delivery(&mut self, d: GaugeDelivery) -> Result<(), Closed> {
        self.flush_gaps().await?;
        match self.policy {
            WhenFull::Block => self.tx.send(Event::Delivery(d)).await.map_err(|_| Closed),
            WhenFull::Shed => match self.tx.try_send(Event::Delivery(d)) {
                Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
                _ => Ok(()),
            },
        }
    }

    /// Records missing data and sends it as soon as there is room: a gap
    /// the source reported (a seq break, an overflow), or readings shed
    /// before they reached the sink (a push adapter's own bounded queue).
    pub async fn gap(
        &mut self,
        reason: GapReason,
        count: u64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(), Closed> {
        self.record(reason, count, from_ms, to_ms);
        self.flush_gaps().await
    }

    /// Counts missing data on the device's health (shed readings by
    /// number, source gaps by occurrence) and merges it into the pending
    /// gap of its reason.
    fn record(&mut self, reason: GapReason, count: u64, from_ms: i64, to_ms: i64) {
        self.health.update(|s| match reason {
            GapReason::Shed => s.shed = s.shed.saturating_add(count),
            GapReason::SourceSequence | GapReason::SourceOverflow => s.gaps += 1,
        });
        self.merge(SourceGap {
            device: self.device.clone(),
            reason,
            count,
            from_ms,
            to_ms,
        });
    }

    fn merge(&mut self, g: SourceGap) {
        match self.pending.iter_mut().find(|p| p.reason == g.reason) {
            Some(p) => {
                p.count = p.count.saturating_add(g.count);
                p.from_ms = p.from_ms.min(g.from_ms);
                p.to_ms = p.to_ms.max(g.to_ms);
            }
            None => self.pending.push(g),
        }
    }

    /// Sends the waiting gaps: a blocking sink waits for room, a shedding
    /// one sends what fits now and keeps the rest for the next call.
    async fn flush_gaps(&mut self) -> Result<(), Closed> {
        while let Some(g) = self.pending.first().cloned() {
            match self.policy {
                WhenFull::Block => self.tx.send(Event::Gap(g)).await.map_err(|_| Closed)?,
                WhenFull::Shed => match self.tx.try_send(Event::Gap(g)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => return Ok(()),
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
                },
            }
            self.pending.remove(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DropClass, Quality};

    fn r(ts: i64) -> Reading {
        Reading {
            asset_id: "t".into(),
            field: "volume".into(),
            value: 1.0,
            unit: "L".into(),
            quality: Quality::Good,
            source_ts_ms: ts,
            received_ts_ms: ts,
            source: "x".into(),
            error: String::new(),
            class: DropClass::Telemetry,
        }
    }

    #[tokio::test]
    async fn a_device_time_beyond_the_bound_gives_way_to_the_receive_time_uncertain_and_counted() {
        let (tx, mut rx) = mpsc::channel(8);
        let h = Health::default();
        let mut s = Sink::new(tx, WhenFull::Block, "plc", h.clone()).with_time_bound(300_000);
        let at = |source: i64, received: i64| Reading {
            source_ts_ms: source,
            received_ts_ms: received,
            ..r(0)
        };
        let now = 1_800_000_000_000;
        // (device time, quality stays?) cases: within, an hour ahead, a day behind
        s.reading(at(now - 299_000, now)).await.unwrap();
        s.reading(at(now + 3_600_000, now)).await.unwrap();
        s.reading(at(now - 86_400_000, now)).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let Some(Event::Reading(x)) = rx.recv().await else {
                panic!()
            };
            got.push(x);
        }
        assert_eq!(
            (got[0].source_ts_ms, got[0].quality),
            (now - 299_000, Quality::Good),
            "within the bound: the device's time"
        );
        assert_eq!(
            (got[1].source_ts_ms, got[1].quality),
            (now, Quality::Uncertain)
        );
        assert!(got[1].error.contains("3600 s ahead of"), "{}", got[1].error);
        assert_eq!(
            (got[2].source_ts_ms, got[2].quality),
            (now, Quality::Uncertain)
        );
        assert!(got[2].error.contains("behind"), "{}", got[2].error);
        assert_eq!(h.get().time_untrusted, 2);
    }

    #[tokio::test]
    async fn a_shedding_sink_never_waits_and_accounts_for_every_shed_reading_as_one_gap() {
        let (tx, mut rx) = mpsc::channel(2);
        let h = Health::default();
        let mut s = Sink::new(tx, WhenFull::Shed, "broker", h.clone());
        for ts in 1..=10 {
            // would hang on a blocking send: the channel holds 2
            tokio::time::timeout(std::time::Duration::from_millis(100), s.reading(r(ts)))
                .await
                .expect("a shedding sink never waits")
                .unwrap();
        }
        assert_eq!(h.get().shed, 8);
        assert_eq!(rx.recv().await, Some(Event::Reading(r(1))));
        assert_eq!(rx.recv().await, Some(Event::Reading(r(2))));
        // room again: the next reading first delivers the gap, in order
        s.reading(r(11)).await.unwrap();
        let Some(Event::Gap(g)) = rx.recv().await else {
            panic!("gap first")
        };
        assert_eq!(
            (g.reason, g.count, g.from_ms, g.to_ms),
            (GapReason::Shed, 8, 3, 10)
        );
        assert_eq!(g.device, "broker");
        assert_eq!(rx.recv().await, Some(Event::Reading(r(11))));
    }

    #[tokio::test]
    async fn a_blocking_sink_waits_for_room_and_drops_nothing() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut s = Sink::new(tx, WhenFull::Block, "atg", Health::default());
        s.reading(r(1)).await.unwrap();
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(50), s.reading(r(2))).await;
        assert!(blocked.is_err(), "a poller waits when the channel is full");
        assert_eq!(rx.recv().await, Some(Event::Reading(r(1))));
        s.reading(r(2)).await.unwrap();
        assert_eq!(rx.recv().await, Some(Event::Reading(r(2))));
    }

    #[tokio::test]
    async fn a_gap_the_source_reports_is_counted_and_sent() {
        let (tx, mut rx) = mpsc::channel(4);
        let h = Health::default();
        let mut s = Sink::new(tx, WhenFull::Shed, "spb", h.clone());
        s.gap(GapReason::SourceSequence, 0, 5, 6).await.unwrap();
        let Some(Event::Gap(g)) = rx.recv().await else {
            panic!()
        };
        assert_eq!((g.reason.as_str(), g.from_ms), ("source_sequence", 5));
        assert_eq!(h.get().gaps, 1);
        // readings shed upstream (a push adapter's own queue) count as shed, not as source gaps
        s.gap(GapReason::Shed, 40, 7, 8).await.unwrap();
        let Some(Event::Gap(g)) = rx.recv().await else {
            panic!()
        };
        assert_eq!((g.reason, g.count), (GapReason::Shed, 40));
        assert_eq!((h.get().shed, h.get().gaps), (40, 1));
        drop(rx);
        assert_eq!(s.reading(r(1)).await, Err(Closed));
    }
}
