//! The contract between the agent and its device adapters.
//!
//! An adapter owns one device connection. Its config lists its points in
//! the shared mapping model ([`point`]); the agent learns from
//! [`Adapter::points`] which exist, which are writable and their drop class,
//! without knowing the protocol. The agent gives the adapter a [`Sink`] (a
//! bounded channel of [`Event`]s: readings and gaps, with the adapter's
//! [`WhenFull`] policy), write requests and a [`Stop`] signal, and spawns
//! [`Adapter::run`]. Most adapters run on [`runner::run`], the shared
//! connect / serve / reconnect loop; device status goes to the device's
//! [`Health`] (state, not history: `/status` and the headend read the
//! latest, nothing queues).
//!
//! When-full policy: pollers wait (nothing lost); push adapters shed and
//! count, and the shed run becomes a gap record ([`sink`]).
//!
//! Adapters never depend on each other or on the agent; only on this crate.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Quality of a reading (OPC UA-like, three-valued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
        }
    }
}

/// One normalized reading, as produced by an adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Asset id from the configuration, e.g. `tank-1`.
    pub asset_id: String,
    /// Normalized field, e.g. `volume`.
    pub field: String,
    /// Value in the canonical unit.
    pub value: f64,
    /// Canonical unit (see [`units`]).
    pub unit: String,
    pub quality: Quality,
    /// Device timestamp, or poll time when the device has none (Unix ms).
    pub source_ts_ms: i64,
    /// When the agent received it (Unix ms).
    pub received_ts_ms: i64,
    /// `<kind>://<endpoint>/<point>`.
    pub source: String,
    /// Why quality is not good; empty otherwise.
    pub error: String,
    /// What the log drops first when full.
    pub class: DropClass,
}

pub mod point;
pub mod probe;
pub mod runner;
pub mod sink;

pub use point::{DropClass, Linear, PointSpec};
pub use sink::{Closed, Event, GapReason, GaugeDelivery, Sink, SourceGap, WhenFull};

/// Stop signal: the adapter returns soon after the value becomes `true`.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// A request to write one writable point (a setpoint), answered once.
/// The command path (safety limits, expiry, acks) lives in the agent; an
/// adapter only writes, reads back and says what happened, so every
/// protocol (Modbus now, OPC UA node writes and MQTT publishes later) plugs
/// into the same path.
#[derive(Debug)]
pub struct WriteRequest {
    pub asset_id: String,
    pub field: String,
    /// Value in the point's canonical unit.
    pub value: f64,
    pub reply: tokio::sync::oneshot::Sender<WriteOutcome>,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Written, and reading back gave the written value (canonical unit).
    Applied { readback: f64 },
    /// This adapter has no writable point `asset.field`.
    UnknownPoint,
    /// The value cannot be represented by the point's data type.
    NotRepresentable(String),
    /// The device could not be reached (not connected, timeout).
    Unreachable(String),
    /// The device refused the write (e.g. a Modbus exception).
    Failed(String),
    /// The write was accepted but reading back gave another value.
    ReadbackMismatch { wrote: f64, read: f64 },
}

/// Where an adapter receives write requests. Bounded; the agent's command
/// path waits when it is full.
pub type WriteRx = tokio::sync::mpsc::Receiver<WriteRequest>;

/// Errors an adapter reports when it cannot run at all (bad configuration).
/// Device and network failures are *not* errors: they become readings with
/// [`Quality::Bad`] and a reconnect.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("adapter {adapter}: invalid configuration: {detail}")]
    Config { adapter: String, detail: String },
    #[error("adapter {adapter}: the reading sink was closed (agent shutting down)")]
    SinkClosed { adapter: String },
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A device adapter.
pub trait Adapter: Send + 'static {
    /// Short protocol name, e.g. `modbus`.
    fn kind(&self) -> &'static str;
    /// Human name of this adapter instance (the device name).
    fn name(&self) -> &str;
    /// The device's points, protocol-free.
    fn points(&self) -> Vec<PointSpec>;
    /// What to do when the agent's channel is full.
    fn when_full(&self) -> WhenFull;
    /// Connect, poll or subscribe, emit events into `sink`, serve write
    /// requests from `writes`, and return when `stop` turns true or the
    /// sink closes.
    fn run(
        self: Box<Self>,
        sink: Sink,
        writes: WriteRx,
        stop: Stop,
    ) -> BoxFuture<Result<(), AdapterError>>;
}

/// Deserializes an integer setting and checks it lies in `lo..=hi`; the
/// error names the key and the range (configuration files of the agent and
/// of every adapter use it, so their messages read the same).
pub fn bounded_u64<'de, D: serde::Deserializer<'de>>(
    d: D,
    key: &str,
    lo: u64,
    hi: u64,
) -> Result<u64, D::Error> {
    let v = <u64 as Deserialize>::deserialize(d)?;
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "{key}: {v} is out of range: use a value from {lo} to {hi}"
        )))
    }
}

/// serde `deserialize_with` of the `max_backoff_ms` every adapter takes:
/// the reconnect backoff's cap, 100 to 600,000 ms.
pub fn max_backoff_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded_u64(d, "max_backoff_ms", 100, 600_000)
}

/// serde default of `max_backoff_ms`: 30 s.
pub fn default_max_backoff_ms() -> u64 {
    30_000
}

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// [base/2, min(max, base * 2^n)].
pub struct Backoff {
    base: u64,
    max: u64,
    n: u32,
}

impl Backoff {
    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        Self {
            base: base_ms.max(1),
            max: max_ms.max(base_ms.max(1)),
            n: 0,
        }
    }
    pub fn reset(&mut self) {
        self.n = 0;
    }
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u64 << self.n.min(20))
            .min(self.max);
        self.n = self.n.saturating_add(1);
        let lo = (self.base / 2).min(cap);
        Duration::from_millis(fastrand::u64(lo..=cap))
    }
}

/// Canonical units and conversions into them.
///
/// Canonical units: volume `L`, length `mm`, temperature `degC`, power `kW`, flags
/// `bool`, ratios `%`. A device unit is converted on the way in, so every
/// reading leaving the agent is in canonical units.
pub mod validate;

/// A device's health as its adapter last saw it, for `/status`. Shared
/// between the adapter (writer) and the agent (reader); one per device.
#[derive(Clone, Default)]
pub struct Health(std::sync::Arc<std::sync::Mutex<DeviceStatus>>);

/// What `/status` shows per device.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceStatus {
    pub connected: bool,
    /// Unix ms of the last request the device answered with data (0: never).
    pub last_good_ms: i64,
    pub last_error: String,
    pub last_error_ms: i64,
    /// Errors since start (connect failures, lost links, protocol errors).
    pub errors: u64,
    /// Sessions that ended (each is followed by a reconnect).
    pub reconnects: u64,
    /// Readings shed because the agent's channel was full (push adapters).
    pub shed: u64,
    /// Gaps the source reported (a Sparkplug seq break, an OPC UA overflow).
    pub gaps: u64,
    /// Payloads that could not be decoded (malformed JSON, unknown alias).
    pub malformed: u64,
    /// Exception responses received since start.
    pub exceptions: u64,
    /// Merged requests split after an address/value exception.
    pub split_requests: u64,
    /// Readings whose device time was too far from the agent's clock (kept
    /// with the receive time, quality uncertain; see `Sink::with_time_bound`).
    pub time_untrusted: u64,
}

impl Health {
    /// Changes the status under its lock.
    pub fn update(&self, f: impl FnOnce(&mut DeviceStatus)) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }
    /// A copy of the status.
    pub fn get(&self) -> DeviceStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Records an error now.
    pub fn error(&self, msg: &str) {
        self.update(|s| {
            s.last_error = msg.to_string();
            s.last_error_ms = now_ms();
            s.errors += 1;
        });
    }
}

pub mod units {
    /// Returns `(canonical_unit, factor, offset)` such that
    /// `canonical = raw * factor + offset`, or `None` for an unknown unit.
    pub fn conversion(unit: &str) -> Option<(&'static str, f64, f64)> {
        Some(match unit {
            "L" | "l" | "litre" | "liter" => ("L", 1.0, 0.0),
            "m3" => ("L", 1000.0, 0.0),
            "gal" | "USgal" => ("L", 3.785_411_784, 0.0),
            "impgal" => ("L", 4.546_09, 0.0),
            "mm" => ("mm", 1.0, 0.0),
            "cm" => ("mm", 10.0, 0.0),
            "m" => ("mm", 1000.0, 0.0),
            "in" => ("mm", 25.4, 0.0),
            "degC" | "C" => ("degC", 1.0, 0.0),
            "degF" | "F" => ("degC", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
            "kW" => ("kW", 1.0, 0.0),
            "W" => ("kW", 0.001, 0.0),
            "bool" => ("bool", 1.0, 0.0),
            "%" => ("%", 1.0, 0.0),
            "" => ("", 1.0, 0.0),
            _ => return None,
        })
    }

    /// The units accepted in configuration files.
    pub const KNOWN: &[&str] = &[
        "L", "l", "litre", "liter", "m3", "gal", "USgal", "impgal", "mm", "cm", "m", "in", "degC",
        "C", "degF", "F", "kW", "W", "bool", "%", "",
    ];
}

#[cfg(test)]
mod tests {
    use super::units::conversion;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = super::Backoff::new(100, 1000);
        let waits: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert!(waits.iter().all(|&w| (50..=1000).contains(&w)), "{waits:?}");
        assert!(waits[0] <= 100);
        assert!(waits[9] >= 50);
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
    }

    #[test]
    fn device_units_convert_to_canonical_units() {
        let (u, f, o) = conversion("gal").unwrap();
        assert_eq!(u, "L");
        assert!((100.0 * f + o - 378.541_178_4).abs() < 1e-9);
        let (u, f, o) = conversion("degF").unwrap();
        assert_eq!(u, "degC");
        assert!((212.0 * f + o - 100.0).abs() < 1e-9);
        assert!(conversion("furlong").is_none());
    }
}
