//! The connect / serve / reconnect loop every adapter shares, and the
//! emission rules of its points.
//!
//! An adapter implements [`Device`]: how to connect, and how to serve one
//! connected session (poll or subscribe, answer writes). [`run`] does the
//! rest the same way for every protocol:
//! - connects with the device's timeout, and after a failure or a lost link
//!   waits a backoff with jitter (reset after a session that read data);
//! - marks every point bad once when the link is lost (`fail_all`), so the
//!   headend sees the outage, not silence; after a session that worked for
//!   [`QUICK_RETRY_AFTER`], one reconnect is tried at once first, and the
//!   points turn bad only if it fails;
//! - answers a write that arrives while disconnected at once with
//!   `Unreachable`, never queueing it for later;
//! - keeps the device's [`Health`] (connected, last good read, last error,
//!   error and reconnect counts);
//! - returns when the agent stops.
//!
//! [`Points`] holds the emission rules, pure and unit-tested: a good value
//! is emitted every time (or on change only, per point); a bad one only
//! when a point *enters* a failure or its error changes, so a dead device
//! does not flood the log; a point's times never go backwards (issue 29,
//! item 7: after a reconnect an OPC UA server sends an unchanged value with
//! its old source time, older than the bad marker of the outage; the
//! latest value is chosen by time, so the point stayed bad for good: such a
//! value is stamped with the time it was received).

use std::future::Future;
use std::time::Duration;

use crate::sink::{Closed, Sink};
use crate::{
    AdapterError, Backoff, PointSpec, Quality, Reading, Stop, WriteOutcome, WriteRequest, WriteRx,
    now_ms,
};

/// Per point: the last error reported (absent = good) and the last value
/// emitted (for on-change points). Bounded by the configured points.
pub struct Points {
    specs: Vec<PointSpec>,
    failing: Vec<Option<String>>,
    last: Vec<Option<f64>>,
    /// The time of the last reading emitted per point.
    last_ts: Vec<i64>,
}

impl Points {
    pub fn new(specs: Vec<PointSpec>) -> Points {
        let n = specs.len();
        Points {
            specs,
            failing: vec![None; n],
            last: vec![None; n],
            last_ts: vec![i64::MIN; n],
        }
    }

    pub fn specs(&self) -> &[PointSpec] {
        &self.specs
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The index of the writable point `asset.field`.
    pub fn writable(&self, asset: &str, field: &str) -> Option<usize> {
        self.specs
            .iter()
            .position(|p| p.writable && p.asset == asset && p.field == field)
    }

    /// A good raw value of point `i` at device time `ts`: the reading to
    /// emit, if any (`quality` lets a source say `uncertain`).
    pub fn good(&mut self, i: usize, raw: f64, quality: Quality, ts: i64) -> Option<Reading> {
        let spec = self.specs.get(i)?;
        if !raw.is_finite() {
            return self.bad(i, "value is NaN or infinite", ts);
        }
        let value = spec.conv.to_canonical(raw);
        let recovered = self.failing[i].take().is_some();
        if spec.on_change && !recovered && self.last[i] == Some(value) {
            return None;
        }
        self.last[i] = Some(value);
        let ts = self.not_before_last(i, ts);
        Some(self.reading(i, value, quality, String::new(), ts))
    }

    /// `ts`, or the receive time when `ts` is older than the point's last
    /// reading (the value is known to hold now; its source time would put
    /// it behind what was already emitted).
    fn not_before_last(&mut self, i: usize, ts: i64) -> i64 {
        let ts = if ts < self.last_ts[i] {
            now_ms().max(self.last_ts[i])
        } else {
            ts
        };
        self.last_ts[i] = ts;
        ts
    }

    /// Point `i` failed with `msg`: a bad reading when the failure is new.
    pub fn bad(&mut self, i: usize, msg: &str, ts: i64) -> Option<Reading> {
        if i >= self.specs.len() || self.failing[i].as_deref() == Some(msg) {
            return None;
        }
        self.failing[i] = Some(msg.to_string());
        let ts = self.not_before_last(i, ts);
        // a bad reading's value carries no information; 0 keeps SQL NOT NULL
        Some(self.reading(i, 0.0, Quality::Bad, msg.to_string(), ts))
    }

    fn reading(&self, i: usize, value: f64, quality: Quality, error: String, ts: i64) -> Reading {
        let p = &self.specs[i];
        Reading {
            asset_id: p.asset.clone(),
            field: p.field.clone(),
            value,
            unit: p.conv.unit.to_string(),
            quality,
            source_ts_ms: ts,
            received_ts_ms: now_ms(),
            source: p.source.clone(),
            error,
            class: p.class,
        }
    }
}

/// What a session gets: the sink, the write requests, the stop signal and
/// the points with their emission state.
pub struct Io {
    pub sink: Sink,
    pub points: Points,
    writes: WriteRx,
    writes_open: bool,
    stop: Stop,
}

impl Io {
    pub fn new(sink: Sink, points: Points, writes: WriteRx, stop: Stop) -> Io {
        Io {
            sink,
            points,
            writes,
            writes_open: true,
            stop,
        }
    }

    /// Emits a good raw value of point `i` (see [`Points::good`]).
    pub async fn good(
        &mut self,
        i: usize,
        raw: f64,
        quality: Quality,
        ts: i64,
    ) -> Result<(), Closed> {
        self.sink
            .health()
            .update(|s| s.last_good_ms = s.last_good_ms.max(ts));
        match self.points.good(i, raw, quality, ts) {
            Some(r) => self.sink.reading(r).await,
            None => Ok(()),
        }
    }

    /// Reports point `i` failing with `msg` (see [`Points::bad`]).
    pub async fn bad(&mut self, i: usize, msg: &str, ts: i64) -> Result<(), Closed> {
        match self.points.bad(i, msg, ts) {
            Some(r) => self.sink.reading(r).await,
            None => Ok(()),
        }
    }

    /// Every point failed with `msg` (the link is lost).
    pub async fn fail_all(&mut self, msg: &str) -> Result<(), Closed> {
        let ts = now_ms();
        for i in 0..self.points.len() {
            self.bad(i, msg, ts).await?;
        }
        Ok(())
    }

    /// The next write request; pending forever once the agent closed the
    /// write side (use it inside `select!`).
    pub async fn next_write(&mut self) -> WriteRequest {
        if self.writes_open {
            match self.writes.recv().await {
                Some(w) => return w,
                None => self.writes_open = false,
            }
        }
        std::future::pending().await
    }

    /// Resolves when the agent asks the adapter to stop (or is gone). The
    /// future borrows nothing, so it can sit in a `select!` beside
    /// [`Io::next_write`].
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut stop = self.stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Records an error on the device's health (last error, error count).
    pub fn error(&self, msg: &str) {
        self.sink.health().error(msg);
    }
}

/// How a connected session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The agent asked to stop.
    Stopped,
    /// The link is unusable (timeout, I/O error, peer gone): reconnect.
    Lost(String),
    /// The agent closed the channel.
    SinkClosed,
}

impl From<Closed> for Ended {
    fn from(_: Closed) -> Ended {
        Ended::SinkClosed
    }
}

/// One device, as the runner drives it.
pub trait Device: Send + 'static {
    /// A live connection (a Modbus context, an MQTT event loop, an OPC UA session).
    type Conn: Send;
    /// Device name, for logs.
    fn name(&self) -> &str;
    /// Connects (within the device's connect timeout). A failure says its
    /// kind where it is known (refused, timed out, not trusted, the
    /// device's own error): `edge-agent probe` exits with it, so nothing
    /// downstream reads the kind out of the message.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Conn, ConnectError>> + Send;
    /// Serves one connected session until it ends.
    fn session(&mut self, conn: Self::Conn, io: &mut Io) -> impl Future<Output = Ended> + Send;
}

/// A session that lasted this long and read data gets one reconnect
/// attempt at once when its link is lost, before its points turn bad.
pub const QUICK_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Reconnect backoff bounds, ms.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub initial_ms: u64,
    pub max_ms: u64,
}

/// Drives `dev` until stopped: connect, serve, and on failure mark every
/// point bad, wait a backoff (answering writes `Unreachable`) and retry.
pub async fn run<D: Device>(mut dev: D, mut io: Io, retry: Retry) -> Result<(), AdapterError> {
    let mut backoff = Backoff::new(retry.initial_ms, retry.max_ms);
    let closed = |name: &str| AdapterError::SinkClosed {
        adapter: name.to_string(),
    };
    // a connection made at once after a working session was lost
    let mut again: Option<D::Conn> = None;
    loop {
        if io.is_stopped() {
            return Ok(());
        }
        let connected = match again.take() {
            Some(conn) => Ok(conn),
            None => tokio::select! {
                c = dev.connect() => c,
                _ = io.stopped() => return Ok(()),
            },
        };
        let why = match connected {
            Ok(conn) => {
                tracing::info!(device = dev.name(), "device connected");
                let health = io.sink.health().clone();
                health.update(|s| s.connected = true);
                let good_before = health.get().last_good_ms;
                let began = tokio::time::Instant::now();
                let ended = dev.session(conn, &mut io).await;
                health.update(|s| {
                    s.connected = false;
                    s.reconnects += 1;
                });
                let worked = health.get().last_good_ms > good_before;
                if worked {
                    backoff.reset();
                }
                match ended {
                    Ended::Stopped => return Ok(()),
                    Ended::SinkClosed => return Err(closed(dev.name())),
                    Ended::Lost(e) => {
                        tracing::warn!(device = dev.name(), error = %e, "device link lost; reconnecting");
                        // a session that worked for a while: one attempt at
                        // once, before its points are marked bad (issue 29,
                        // item 14: a device that drops idle connections, or
                        // a gateway restart, flipped every point bad at once)
                        if worked && began.elapsed() >= QUICK_RETRY_AFTER {
                            let quick = tokio::select! {
                                c = dev.connect() => c,
                                _ = io.stopped() => return Ok(()),
                            };
                            match quick {
                                Ok(conn) => {
                                    io.error(&e);
                                    again = Some(conn);
                                    continue;
                                }
                                Err(e2) => {
                                    tracing::warn!(device = dev.name(), error = %e2, "device reconnect failed; its points are bad")
                                }
                            }
                        }
                        e
                    }
                }
            }
            Err(e) => {
                tracing::warn!(device = dev.name(), error = %e, "device connect failed");
                e.message
            }
        };
        io.error(&why);
        io.fail_all(&why).await.map_err(|_| closed(dev.name()))?;
        let wait = tokio::time::sleep(backoff.next_delay());
        let stopped = io.stopped();
        tokio::pin!(wait, stopped);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                // no connection: a write is answered at once, never queued for later
                req = io.next_write() => {
                    let _ = req.reply.send(WriteOutcome::Unreachable(format!(
                        "device {} not connected: {why}",
                        dev.name()
                    )));
                }
                _ = &mut stopped => return Ok(()),
            }
        }
    }
}

/// A timeout as an error message (`what timed out after N ms`).
/// Why a connection attempt failed: its kind and the installer's words.
pub use crate::probe::ProbeError as ConnectError;

/// [`within`] for a step of connecting: running out of time is a
/// [`Failure::Timeout`](crate::probe::Failure::Timeout).
pub async fn connecting<T>(
    ms: u64,
    what: &str,
    fut: impl Future<Output = T>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(Duration::from_millis(ms), fut)
        .await
        .map_err(|_| {
            ConnectError::new(
                crate::probe::Failure::Timeout,
                format!("{what} timed out after {ms} ms"),
            )
        })
}

pub async fn within<T>(ms: u64, what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_millis(ms), fut)
        .await
        .map_err(|_| format!("{what} timed out after {ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DropClass, Linear};

    fn spec(field: &str, on_change: bool) -> PointSpec {
        PointSpec {
            asset: "tank-1".into(),
            field: field.into(),
            conv: Linear::new(1.0, 0.0, "gal").unwrap(),
            writable: false,
            class: if on_change {
                DropClass::Alarm
            } else {
                DropClass::Telemetry
            },
            on_change,
            source: "test://x".into(),
        }
    }

    #[test]
    fn good_values_are_converted_and_bad_ones_reported_once_per_failure() {
        let mut p = Points::new(vec![spec("volume", false)]);
        let r = p.good(0, 100.0, Quality::Good, 5).unwrap();
        assert!((r.value - 378.541_178_4).abs() < 1e-9);
        assert_eq!((r.unit.as_str(), r.source_ts_ms), ("L", 5));
        assert!(p.good(0, 100.0, Quality::Good, 6).is_some(), "every poll");
        let b = p.bad(0, "timeout", 7).unwrap();
        assert_eq!((b.quality, b.error.as_str()), (Quality::Bad, "timeout"));
        assert!(p.bad(0, "timeout", 8).is_none(), "same failure: once");
        assert!(p.bad(0, "refused", 9).is_some(), "a new error is news");
        let nan = p.good(0, f64::NAN, Quality::Good, 10).unwrap();
        assert_eq!(nan.quality, Quality::Bad);
        assert!(p.bad(9, "x", 1).is_none() && p.good(9, 1.0, Quality::Good, 1).is_none());
    }

    #[test]
    fn on_change_points_emit_changes_and_the_first_value_after_a_failure() {
        let mut p = Points::new(vec![spec("alarm.high", true)]);
        assert!(p.good(0, 1.0, Quality::Good, 1).is_some());
        assert!(p.good(0, 1.0, Quality::Good, 2).is_none());
        assert!(p.good(0, 0.0, Quality::Good, 3).is_some());
        assert!(p.bad(0, "lost", 4).is_some());
        let back = p.good(0, 0.0, Quality::Good, 5);
        assert!(back.is_some(), "recovery is reported even if unchanged");
        assert_eq!(back.unwrap().class, DropClass::Alarm);
    }

    #[test]
    fn an_unchanged_value_resent_with_its_old_source_time_after_an_outage_is_newer_than_the_outage()
    {
        let mut p = Points::new(vec![spec("water", true)]);
        let first = now_ms() - 3_600_000;
        assert_eq!(
            p.good(0, 1.0, Quality::Good, first).unwrap().source_ts_ms,
            first
        );
        let lost = now_ms() - 1_000;
        assert_eq!(
            p.bad(0, "connection lost", lost).unwrap().source_ts_ms,
            lost
        );
        // the server sends the unchanged value with its old source time
        let before = now_ms();
        let back = p.good(0, 1.0, Quality::Good, first).unwrap();
        assert!(
            back.source_ts_ms >= before && back.source_ts_ms > lost,
            "stamped with the receive time: {} (outage at {lost})",
            back.source_ts_ms
        );
        // a bad marker with an older time than the last value moves up too
        let later = back.source_ts_ms;
        assert!(p.bad(0, "lost again", first).unwrap().source_ts_ms >= later);
        // times that move forward are kept as they are
        let t = now_ms() + 10;
        assert_eq!(p.good(0, 2.0, Quality::Good, t).unwrap().source_ts_ms, t);
    }
}
