//! What the link does, measured (issue 30): throughput, bytes on the wire
//! per log entry delivered, how fast the backlog drains and when it will
//! be gone. Pure: fed a sample of counters each second, it answers over
//! the last [`WINDOW`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The span the figures are measured over.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    /// Bytes written and read on the uplink's TCP connections (TLS records).
    pub up: u64,
    pub down: u64,
    /// The log's durable seq (entries appended) and acked seq (delivered).
    pub durable: u64,
    pub acked: u64,
}

/// The link's figures (None where the window holds too little to say).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LinkView {
    pub up_bytes_per_s: Option<f64>,
    pub down_bytes_per_s: Option<f64>,
    /// Wire bytes, both ways, per log entry acknowledged.
    pub bytes_per_entry: Option<f64>,
    /// Entries appended and acknowledged per second.
    pub live_per_s: Option<f64>,
    pub acked_per_s: Option<f64>,
    /// Entries not yet acknowledged.
    pub backlog: u64,
    /// Seconds until the backlog is gone at the current rates (None: not
    /// draining, or nothing to drain).
    pub drain_eta_s: Option<f64>,
    /// Append time of the oldest entry not yet acknowledged, and its age
    /// in seconds (set by the uplink).
    pub oldest_ms: Option<i64>,
    pub backlog_age_s: Option<f64>,
}

impl LinkView {
    /// The report the headend gets.
    pub fn report(&self, now_ms: i64) -> tankwatch_proto::v1::LinkReport {
        tankwatch_proto::v1::LinkReport {
            ts_ms: now_ms,
            up_bytes_per_s: self.up_bytes_per_s,
            down_bytes_per_s: self.down_bytes_per_s,
            bytes_per_entry: self.bytes_per_entry,
            live_per_s: self.live_per_s,
            acked_per_s: self.acked_per_s,
            backlog: self.backlog,
            oldest_ms: self.oldest_ms.unwrap_or(0),
            drain_eta_s: self.drain_eta_s,
        }
    }
}

/// The link's figures as Prometheus metrics (`tankwatch_agent_uplink_*`).
#[derive(Clone, Default)]
pub struct LinkMetrics {
    wire_bytes: Family<DirectionLabel, Counter>,
    bytes_per_second: Family<DirectionLabel, Gauge<f64, AtomicU64>>,
    bytes_per_entry: Gauge<f64, AtomicU64>,
    backlog: Gauge<i64, AtomicI64>,
    drain_eta: Gauge<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

impl LinkMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "uplink_wire_bytes",
            "Bytes on the uplink's TCP connections (TLS records: everything but TCP/IP headers)",
            self.wire_bytes.clone(),
        );
        r.register(
            "uplink_wire_bytes_per_second",
            "Wire bytes per second over the last 30 s",
            self.bytes_per_second.clone(),
        );
        r.register(
            "uplink_wire_bytes_per_entry",
            "Wire bytes (both ways) per log entry acknowledged, over the last 30 s (NaN: none acknowledged)",
            self.bytes_per_entry.clone(),
        );
        r.register(
            "uplink_backlog_entries",
            "Log entries not yet acknowledged by the headend",
            self.backlog.clone(),
        );
        r.register(
            "uplink_drain_eta_seconds",
            "Estimated seconds until the backlog is acknowledged at the current rates (-1: not draining)",
            self.drain_eta.clone(),
        );
    }

    pub fn set(&self, v: &LinkView, up: u64, down: u64) {
        for (d, total, rate) in [
            ("up", up, v.up_bytes_per_s),
            ("down", down, v.down_bytes_per_s),
        ] {
            let l = DirectionLabel { direction: d };
            let c = self.wire_bytes.get_or_create(&l);
            c.inc_by(total.saturating_sub(c.get()));
            self.bytes_per_second
                .get_or_create(&l)
                .set(rate.unwrap_or(0.0));
        }
        self.bytes_per_entry
            .set(v.bytes_per_entry.unwrap_or(f64::NAN));
        self.backlog.set(v.backlog.min(i64::MAX as u64) as i64);
        self.drain_eta.set(v.drain_eta_s.unwrap_or(-1.0));
    }
}

#[derive(Debug, Default)]
pub struct LinkMeter {
    samples: VecDeque<Sample>,
}

impl LinkMeter {
    pub fn record(&mut self, s: Sample) {
        while self
            .samples
            .front()
            .is_some_and(|f| s.at.saturating_duration_since(f.at) > WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn view(&self) -> LinkView {
        let (Some(a), Some(b)) = (self.samples.front(), self.samples.back()) else {
            return LinkView::default();
        };
        let backlog = b.durable.saturating_sub(b.acked);
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
        if secs < 1.0 {
            return LinkView {
                backlog,
                ..Default::default()
            };
        }
        let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        let acked = b.acked.saturating_sub(a.acked);
        let wire = b.up.saturating_sub(a.up) + b.down.saturating_sub(a.down);
        let (live, drain) = (per_s(a.durable, b.durable), per_s(a.acked, b.acked));
        LinkView {
            up_bytes_per_s: Some(per_s(a.up, b.up)),
            down_bytes_per_s: Some(per_s(a.down, b.down)),
            bytes_per_entry: (acked > 0).then(|| wire as f64 / acked as f64),
            live_per_s: Some(live),
            acked_per_s: Some(drain),
            backlog,
            drain_eta_s: (backlog > 0 && drain > live).then(|| backlog as f64 / (drain - live)),
            oldest_ms: None,
            backlog_age_s: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_window_and_a_draining_backlog_has_an_eta() {
        let t0 = Instant::now();
        let mut m = LinkMeter::default();
        assert_eq!(m.view(), LinkView::default());
        let at = |s: u64, up, down, durable, acked| Sample {
            at: t0 + Duration::from_secs(s),
            up,
            down,
            durable,
            acked,
        };
        m.record(at(0, 0, 0, 1000, 0));
        assert_eq!(m.view().backlog, 1000);
        assert_eq!(m.view().drain_eta_s, None, "nothing measured yet");
        // 10 s: 20 appended/s, 100 acked/s, 8 kB/s up, 1 kB/s down
        m.record(at(10, 80_000, 10_000, 1200, 1000));
        let v = m.view();
        assert_eq!(v.up_bytes_per_s, Some(8000.0));
        assert_eq!(v.bytes_per_entry, Some(90.0));
        assert_eq!((v.live_per_s, v.acked_per_s), (Some(20.0), Some(100.0)));
        assert_eq!(v.backlog, 200);
        assert_eq!(v.drain_eta_s, Some(2.5));
        // older than the window: forgotten
        m.record(at(45, 80_000, 10_000, 1200, 1200));
        let v = m.view();
        assert_eq!(v.up_bytes_per_s, None, "one sample left in the window");
        assert_eq!(v.backlog, 0);
        // not draining: no eta
        m.record(at(55, 80_000, 10_000, 1300, 1250));
        assert_eq!(m.view().drain_eta_s, None);
    }
}
