//! Agent metrics (Prometheus/OpenMetrics text) and the local status
//! endpoint: `GET /metrics`, `GET /status` (JSON), on a loopback address by
//! default (`status.listen`), so nothing is opened to the network.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sflog::{Class, Log};
use tokio::sync::watch;

use crate::uplink::UplinkStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    pub device: String,
    pub kind: &'static str,
}

/// One device's health handle, with what `/status` names it by.
#[derive(Clone)]
pub struct DeviceHealth {
    pub name: String,
    pub kind: &'static str,
    pub health: adapter_api::Health,
}

/// The per-device metrics, set from each device's health at render time.
#[derive(Clone, Default)]
struct DeviceMetrics {
    connected: Family<DeviceLabel, Gauge<i64, AtomicI64>>,
    last_good_age: Family<DeviceLabel, Gauge<f64, AtomicU64>>,
    errors: Family<DeviceLabel, Counter>,
    reconnects: Family<DeviceLabel, Counter>,
    shed: Family<DeviceLabel, Counter>,
    gaps: Family<DeviceLabel, Counter>,
    malformed: Family<DeviceLabel, Counter>,
}

impl DeviceMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "device_connected",
            "1 while the device's connection is up",
            self.connected.clone(),
        );
        r.register(
            "device_last_good_age_seconds",
            "Seconds since the device last gave data (-1: never)",
            self.last_good_age.clone(),
        );
        for (name, help, f) in [
            (
                "device_errors",
                "Device errors (connect failures, lost links, protocol errors)",
                &self.errors,
            ),
            (
                "device_reconnects",
                "Device sessions that ended and were reconnected",
                &self.reconnects,
            ),
            (
                "device_shed_readings",
                "Readings a push adapter shed because the agent could not keep up (each run is a gap record)",
                &self.shed,
            ),
            (
                "device_source_gaps",
                "Gaps the source reported (Sparkplug seq breaks, OPC UA overflows)",
                &self.gaps,
            ),
            (
                "device_malformed_payloads",
                "Payloads that could not be decoded",
                &self.malformed,
            ),
        ] {
            r.register(name, help, f.clone());
        }
    }

    fn set(&self, devices: &[DeviceHealth]) {
        let now = adapter_api::now_ms();
        for d in devices {
            let st = d.health.get();
            let l = DeviceLabel {
                device: d.name.clone(),
                kind: d.kind,
            };
            self.connected
                .get_or_create(&l)
                .set(i64::from(st.connected));
            self.last_good_age
                .get_or_create(&l)
                .set(if st.last_good_ms > 0 {
                    ((now - st.last_good_ms) as f64 / 1000.0).max(0.0)
                } else {
                    -1.0
                });
            for (f, v) in [
                (&self.errors, st.errors),
                (&self.reconnects, st.reconnects),
                (&self.shed, st.shed),
                (&self.gaps, st.gaps),
                (&self.malformed, st.malformed),
            ] {
                let c = f.get_or_create(&l);
                c.inc_by(v.saturating_sub(c.get()));
            }
        }
    }
}

/// Every metric of the agent (handles are shared; clone freely).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub sent_readings: Counter,
    pub sent_batches: Counter,
    pub preview_batches: Counter,
    pub control_batches: Counter,
    pub link: crate::uplink::link::LinkMetrics,
    pub sessions: Counter,
    pub connected: Gauge<i64, AtomicI64>,
    pub in_flight: Gauge<i64, AtomicI64>,
    pub ack_latency: Histogram,
    log_entries: Gauge<i64, AtomicI64>,
    log_bytes: Gauge<i64, AtomicI64>,
    log_max_bytes: Gauge<i64, AtomicI64>,
    log_oldest_age: Gauge<f64, AtomicU64>,
    log_next_seq: Gauge<i64, AtomicI64>,
    log_acked_seq: Gauge<i64, AtomicI64>,
    log_dropped: Family<ClassLabel, Counter>,
    log_corrupt: Counter,
    pub uplink_stalls: Counter,
    /// Certificates renewed and installed; renewal attempts that failed.
    pub cert_renewals: Counter,
    pub cert_renewal_failures: Counter,
    log_fs_free: Gauge<i64, AtomicI64>,
    log_effective_max: Gauge<i64, AtomicI64>,
    log_disk_full: Counter,
    log_vacuumed: Counter,
    log_lines_suppressed: Counter,
    /// The headend's clock minus ours at the last HelloAck, seconds.
    pub clock_offset: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Times the uplink moved to another headend address (issue 35).
    pub failovers: Counter,
    /// 1 for the headend address the uplink dials now, 0 for the others.
    pub headend_address: Family<AddressLabel, Gauge<i64, AtomicI64>>,
    devices: DeviceMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct AddressLabel {
    pub address: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(crate::commands::CommandMetrics::default())
    }
}

impl Metrics {
    /// Registers the agent's metrics, including the command executor's.
    pub fn new(c: crate::commands::CommandMetrics) -> Self {
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            sent_readings: Counter::default(),
            sent_batches: Counter::default(),
            preview_batches: Counter::default(),
            control_batches: Counter::default(),
            link: Default::default(),
            sessions: Counter::default(),
            connected: Gauge::default(),
            in_flight: Gauge::default(),
            ack_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            log_entries: Gauge::default(),
            log_bytes: Gauge::default(),
            log_max_bytes: Gauge::default(),
            log_oldest_age: Gauge::default(),
            log_next_seq: Gauge::default(),
            log_acked_seq: Gauge::default(),
            log_dropped: Family::default(),
            log_corrupt: Counter::default(),
            uplink_stalls: Counter::default(),
            cert_renewals: Counter::default(),
            cert_renewal_failures: Counter::default(),
            log_fs_free: Gauge::default(),
            log_effective_max: Gauge::default(),
            log_disk_full: Counter::default(),
            log_vacuumed: Counter::default(),
            log_lines_suppressed: Counter::default(),
            clock_offset: Gauge::default(),
            failovers: Counter::default(),
            headend_address: Family::default(),
            devices: DeviceMetrics::default(),
        };
        let mut r = Registry::with_prefix("tankwatch_agent");
        m.devices.register(&mut r);
        m.link.register(&mut r);
        m.register_uplink(&mut r);
        m.register_log(&mut r);
        r.register(
            "build",
            "This agent's release (1, labelled with its version)",
            prometheus_client::metrics::info::Info::new(vec![(
                "version",
                env!("CARGO_PKG_VERSION"),
            )]),
        );
        register_commands(&c, &mut r);
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }
}

impl Metrics {
    /// The uplink's session, batch and certificate figures.
    fn register_uplink(&self, r: &mut Registry) {
        r.register(
            "uplink_sent_readings",
            "Readings sent to the headend (replays included; rate = replay rate)",
            self.sent_readings.clone(),
        );
        r.register(
            "uplink_sent_batches",
            "Batches sent to the headend",
            self.sent_batches.clone(),
        );
        r.register(
            "uplink_preview_batches",
            "Preview batches (newest entries ahead of a backlog)",
            self.preview_batches.clone(),
        );
        r.register(
            "uplink_control_batches",
            "Control-lane batches (alarms, events, command answers ahead of the telemetry backlog)",
            self.control_batches.clone(),
        );
        r.register(
            "uplink_sessions",
            "Sessions opened with the headend",
            self.sessions.clone(),
        );
        r.register(
            "uplink_connected",
            "1 while a session with the headend is open",
            self.connected.clone(),
        );
        r.register(
            "uplink_in_flight_batches",
            "Batches sent and not yet acknowledged",
            self.in_flight.clone(),
        );
        r.register(
            "uplink_ack_latency_seconds",
            "Time from sending a batch to its acknowledgement",
            self.ack_latency.clone(),
        );
        r.register(
            "uplink_failovers",
            "Times the uplink moved to another address of headend.address (an attempt there failed)",
            self.failovers.clone(),
        );
        r.register(
            "uplink_headend_address",
            "1 for the headend address the uplink dials now (headend.address), 0 for the others",
            self.headend_address.clone(),
        );
        r.register(
            "uplink_stalls",
            "Times the uplink made no connection attempt within backoff_max_ms (+ setup deadline) while disconnected",
            self.uplink_stalls.clone(),
        );
        r.register(
            "cert_renewals",
            "Agent certificates renewed and installed (after a trial connection)",
            self.cert_renewals.clone(),
        );
        r.register(
            "cert_renewal_failures",
            "Certificate renewal attempts that failed (the current certificate stays)",
            self.cert_renewal_failures.clone(),
        );
    }

    /// The log's figures, the clock offset and suppressed log lines.
    fn register_log(&self, r: &mut Registry) {
        r.register(
            "log_fs_free_bytes",
            "Free bytes on the filesystem of the log",
            self.log_fs_free.clone(),
        );
        r.register(
            "log_effective_max_bytes",
            "The log's bound in force: log.max_bytes, or less when its filesystem has less room",
            self.log_effective_max.clone(),
        );
        r.register(
            "log_disk_full",
            "Times SQLite reported a full disk under the log (recovered by dropping)",
            self.log_disk_full.clone(),
        );
        r.register(
            "log_vacuumed_bytes",
            "Bytes given back to the filesystem after the log drained",
            self.log_vacuumed.clone(),
        );
        r.register(
            "log_lines_suppressed",
            "The agent's own log lines held back by the per-call-site rate limit (a repeating fault)",
            self.log_lines_suppressed.clone(),
        );
        r.register(
            "clock_offset_seconds",
            "The headend's clock minus this PC's at the last session start (positive: this PC is behind)",
            self.clock_offset.clone(),
        );
        r.register(
            "log_entries",
            "Entries in the store-and-forward log",
            self.log_entries.clone(),
        );
        r.register(
            "log_bytes",
            "Bytes the log uses on disk (live pages)",
            self.log_bytes.clone(),
        );
        r.register(
            "log_max_bytes",
            "The log's byte bound",
            self.log_max_bytes.clone(),
        );
        r.register(
            "log_oldest_age_seconds",
            "Age of the oldest entry in the log",
            self.log_oldest_age.clone(),
        );
        r.register(
            "log_next_seq",
            "Next sequence number the log assigns",
            self.log_next_seq.clone(),
        );
        r.register(
            "log_acked_seq",
            "Highest sequence number the headend acknowledged",
            self.log_acked_seq.clone(),
        );
        r.register(
            "log_dropped",
            "Entries dropped by the log's byte bound, per class",
            self.log_dropped.clone(),
        );
        r.register(
            "log_corrupt",
            "Corrupt log records skipped",
            self.log_corrupt.clone(),
        );
    }
}

/// The command executor's counters.
fn register_commands(c: &crate::commands::CommandMetrics, r: &mut Registry) {
    for (name, help, counter) in [
        (
            "commands_received",
            "Commands received (first delivery)",
            &c.received,
        ),
        (
            "commands_duplicate",
            "Commands delivered again and ignored (applied at most once)",
            &c.duplicates,
        ),
        (
            "commands_applied",
            "Setpoints written and read back, ETAs stored",
            &c.applied,
        ),
        (
            "commands_refused",
            "Commands refused, expired, superseded or failed",
            &c.refused,
        ),
        (
            "device_writes",
            "Write requests sent to device adapters",
            &c.device_writes,
        ),
        (
            "deliveries_detected",
            "Deliveries detected from tank volume",
            &c.deliveries,
        ),
        (
            "opcua_logins_refused",
            "OPC UA server logins refused (wrong password, unknown or locked user name)",
            &c.opcua_logins_refused,
        ),
        (
            "opcua_refused_writes_unrecorded",
            "OPC UA writes the server refused that were counted in opcua_writes_total but not recorded at the headend (past 10 at once and one per 6 s, or the executor busy)",
            &c.opcua_refused_writes_unrecorded,
        ),
        (
            "revert_failures",
            "Reverts of a point to its default that failed (each is retried every few seconds)",
            &c.revert_failures,
        ),
    ] {
        r.register(name, help, counter.clone());
    }
    r.register(
        "reverts_pending",
        "Points whose revert failed and is being retried: a setpoint still in force past its end",
        c.reverts_pending.clone(),
    );
    r.register(
        "opcua_writes",
        "OPC UA server writes by the status the client got (Good, BadOutOfRange, ...)",
        c.opcua_writes.clone(),
    );
}

impl Metrics {
    /// Updates the log and device gauges and renders the text exposition.
    pub fn render(&self, log: &Log, devices: &[DeviceHealth]) -> String {
        self.devices.set(devices);
        let st = log.stats();
        self.log_entries.set(st.entries as i64);
        self.log_bytes.set(st.bytes as i64);
        self.log_max_bytes.set(st.max_bytes as i64);
        self.log_next_seq.set(st.next_seq as i64);
        self.log_acked_seq.set(st.acked_through as i64);
        let age = match log.oldest() {
            Ok(Some((_, ts))) => ((adapter_api::now_ms() - ts) as f64 / 1000.0).max(0.0),
            _ => 0.0,
        };
        self.log_oldest_age.set(age);
        for c in Class::ALL {
            let counter = self
                .log_dropped
                .get_or_create(&ClassLabel { class: c.name() });
            counter.inc_by(st.dropped[c as usize].saturating_sub(counter.get()));
        }
        self.log_corrupt
            .inc_by(st.corrupt.saturating_sub(self.log_corrupt.get()));
        self.log_fs_free.set(st.fs_free_bytes as i64);
        self.log_effective_max.set(st.effective_max_bytes as i64);
        self.log_disk_full
            .inc_by(st.disk_full_events.saturating_sub(self.log_disk_full.get()));
        self.log_vacuumed
            .inc_by(st.vacuumed_bytes.saturating_sub(self.log_vacuumed.get()));
        self.log_lines_suppressed.inc_by(
            tankwatch_logging::suppressed_total().saturating_sub(self.log_lines_suppressed.get()),
        );
        let mut s = String::new();
        if let Err(e) = encode(&mut s, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        s
    }
}

/// What `/status` and `/metrics` show.
#[derive(Clone)]
pub struct Sources {
    pub site: String,
    pub log: Arc<Log>,
    pub store: crate::store::Store,
    pub metrics: Metrics,
    pub uplink: watch::Receiver<UplinkStatus>,
    /// Each device's health.
    pub devices: Arc<Vec<DeviceHealth>>,
}

type State = Sources;

/// Binds the status endpoint; returns its address. A bind failure is
/// logged and the agent runs on without it.
pub fn serve(
    listen: SocketAddr,
    sources: Sources,
    mut stop: watch::Receiver<bool>,
) -> Option<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::routing::get;
    let bound = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .and_then(tokio::net::TcpListener::from_std);
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%listen, error = %e, "status endpoint not started (status.listen); the agent runs on without it");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|axum::extract::State(s): axum::extract::State<State>| async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    s.metrics.render(&s.log, &s.devices),
                )
            }),
        )
        .route(
            "/status",
            get(|axum::extract::State(s): axum::extract::State<State>| async move {
                let st = s.log.stats();
                let up = s.uplink.borrow().clone();
                axum::Json(serde_json::json!({
                    "site_id": s.site,
                    "version": env!("CARGO_PKG_VERSION"),
                    "uplink": {
                        "connected": up.connected, "sessions": up.sessions, "last_error": up.last_error,
                        // which of headend.address it dials, and its moves (issue 35)
                        "address": up.address, "addresses": up.addresses, "failovers": up.failovers,
                        // CompactBatch in use; the link's measured figures (issue 30)
                        "compact": up.compact,
                        "headend_version": up.headend_version,
                        "gzip": up.gzip,
                        "link": up.link,
                    },
                    // the headend's clock minus ours (ms) at the last session start
                    "clock": up.clock_offset.map(|(o, at)| serde_json::json!({
                        "headend_offset_ms": o,
                        "measured_ms": at,
                        "in_sync": o.abs() <= 2_000,
                    })),
                    "certificate": up.certificate.as_ref().map(|c| serde_json::json!({
                        "serial": c.serial,
                        "not_after_ms": c.not_after_ms,
                        "renew_at_ms": c.renew_at_ms,
                        "renewals": c.renewals,
                        "failures": c.failures,
                        "last_error": c.last_error,
                    })),
                    "log": {
                        "log_id": s.log.log_id().to_string(),
                        "entries": st.entries, "bytes": st.bytes, "max_bytes": st.max_bytes,
                        "next_seq": st.next_seq, "acked_through": st.acked_through,
                        "dropped": { "telemetry": st.dropped[0], "alarm": st.dropped[1], "event": st.dropped[2], "command_ack": st.dropped[3] },
                        "corrupt": st.corrupt,
                        "fs_free_bytes": st.fs_free_bytes,
                        "effective_max_bytes": st.effective_max_bytes,
                        "disk_full_events": st.disk_full_events,
                    },
                    "devices": s.devices.iter().map(|d| {
                        let mut v = serde_json::to_value(d.health.get()).unwrap_or_default();
                        if let Some(o) = v.as_object_mut() {
                            o.insert("kind".into(), d.kind.into());
                        }
                        (d.name.clone(), v)
                    }).collect::<serde_json::Map<String, serde_json::Value>>(),
                    "deliveries": s.store.deliveries().unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "reading deliveries for /status");
                        Vec::new()
                    }),
                }))
            }),
        )
        .with_state(sources);
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "status endpoint failed");
        }
    });
    tracing::info!(%addr, "status endpoint: /metrics, /status");
    Some((addr, task))
}
