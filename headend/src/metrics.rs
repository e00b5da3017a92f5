//! Headend metrics, served as Prometheus/OpenMetrics text on `GET /metrics`.
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric of the headend (cheap to clone: all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub batches: Counter,
    pub preview_batches: Counter,
    pub compact_batches: Counter,
    pub readings: Counter,
    pub gap_records: Counter,
    pub commits: Counter,
    pub commit_failures: Counter,
    pub db_write_seconds: Histogram,
    pub queued_batches: Gauge<i64, AtomicI64>,
    pub sessions: Gauge<i64, AtomicI64>,
    pub sessions_refused: Counter,
    /// Agent certificates issued by renewal and by enrollment.
    pub renewals: Counter,
    pub enrollments: Counter,
    /// Enrollments refused (token unknown, used, expired, other site; bad CSR).
    pub enrollments_refused: Counter,
    pub commands_submitted: Counter,
    pub commands_sent: Counter,
    pub command_acks: Counter,
    pub delivery_events: Counter,
    /// Sessions that replaced an open session of the same site.
    pub session_takeovers: Counter,
    /// Inventory job runs, failed runs, and escalations opened/cleared.
    pub inventory_runs: Counter,
    pub inventory_quick_runs: Counter,
    pub inventory_failures: Counter,
    /// Stored observations the inventory job refused as corrupt.
    pub observations_refused: Counter,
    pub escalations_opened: Counter,
    pub escalations_cleared: Counter,
    /// Webhook notifications delivered, retried, and given up (dead letters).
    pub webhooks_delivered: Counter,
    pub webhook_retries: Counter,
    pub webhooks_dead: Counter,
    pub mails_sent: Counter,
    pub mail_retries: Counter,
    pub mails_dead: Counter,
    pub mails_held: Counter,
    /// Raw readings and hourly rollups removed by retention.
    pub retention_readings: Counter,
    pub retention_rollups: Counter,
    /// Agent text fields with control characters replaced (see `sanitize`).
    pub sanitized_fields: Counter,
    /// Sites whose last ingest commit failed (set when rendered).
    pub sites_failing: Gauge<i64, AtomicI64>,
    /// Agent TLS connections open now (handshaking or in a session).
    pub connections: Gauge<i64, AtomicI64>,
    /// Agent connections closed by a limit, by reason.
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// REST requests refused at the edge (content type, host, control characters), by reason.
    pub http_refused: Family<ReasonLabel, Counter>,
    /// REST requests refused for their credential (401), audited or throttled.
    pub auth_refused: Counter,
    /// Logins refused (wrong name or password, locked, throttled).
    pub logins_refused: Counter,
    /// Audit entries that could not be appended (the request's own result stood).
    pub audit_failed: Counter,
    /// Connections open per listener (rest, enrollment, agent pending).
    pub listener_connections: Family<ListenerLabel, Gauge<i64, AtomicI64>>,
    /// Each listener's bounds, for dashboards and alerts beside the above.
    pub listener_limit: Family<LimitLabel, Gauge<i64, AtomicI64>>,
    /// Connections a listener closed by its bounds: evicted (idle, to make
    /// room), refused (their network full), timed out (handshake, first
    /// request, idle keep-alive).
    pub listener_closed: Family<ListenerReason, Counter>,
    /// Log lines held back by the rate limit (updated at each render).
    pub log_lines_suppressed: Counter,
    /// Sessions whose site clock was off by more than 2 s (times corrected).
    pub clock_corrected: Counter,
    /// Sessions refused: the site clock off by more than a day.
    pub clock_refused: Counter,
    /// Wake-ups of session dispatchers, by cause (issue 35).
    pub dispatch_wakes: Family<CauseLabel, Counter>,
    /// Dispatch's reads of the commands table (per session and the
    /// replica's safety net): what the database sees from dispatch.
    pub dispatch_queries: Counter,
    /// Notes to other replicas that could not be sent (retried).
    pub notes_failed: Counter,
    /// 1 while this replica listens to the others' notes (PostgreSQL).
    pub listening: Gauge<i64, AtomicI64>,
    /// 1 while the database takes writes, 0 while it is away or
    /// read-only (the database watch, every 5 s).
    pub database_ready: Gauge<i64, AtomicI64>,
    /// The fleet's health, read from the database at each scrape
    /// (`services::fleet`), by figure.
    pub fleet: Family<FigureLabel, Gauge<i64, AtomicI64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FigureLabel {
    pub figure: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub listener: &'static str,
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReason {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("tankwatch_headend");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            batches: Counter::default(),
            preview_batches: Counter::default(),
            compact_batches: Counter::default(),
            readings: Counter::default(),
            gap_records: Counter::default(),
            commits: Counter::default(),
            commit_failures: Counter::default(),
            db_write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            queued_batches: Gauge::default(),
            sessions: Gauge::default(),
            sessions_refused: Counter::default(),
            renewals: Counter::default(),
            enrollments: Counter::default(),
            enrollments_refused: Counter::default(),
            commands_submitted: Counter::default(),
            commands_sent: Counter::default(),
            command_acks: Counter::default(),
            delivery_events: Counter::default(),
            sanitized_fields: Counter::default(),
            session_takeovers: Counter::default(),
            retention_readings: Counter::default(),
            retention_rollups: Counter::default(),
            inventory_runs: Counter::default(),
            inventory_quick_runs: Counter::default(),
            inventory_failures: Counter::default(),
            observations_refused: Counter::default(),
            escalations_opened: Counter::default(),
            escalations_cleared: Counter::default(),
            webhooks_delivered: Counter::default(),
            webhook_retries: Counter::default(),
            webhooks_dead: Counter::default(),
            mails_sent: Counter::default(),
            mail_retries: Counter::default(),
            mails_dead: Counter::default(),
            mails_held: Counter::default(),
            sites_failing: Gauge::default(),
            connections: Gauge::default(),
            connections_refused: Family::default(),
            http_refused: Family::default(),
            auth_refused: Counter::default(),
            logins_refused: Counter::default(),
            audit_failed: Counter::default(),
            listener_connections: Family::default(),
            listener_limit: Family::default(),
            listener_closed: Family::default(),
            log_lines_suppressed: Counter::default(),
            clock_corrected: Counter::default(),
            clock_refused: Counter::default(),
            dispatch_wakes: Family::default(),
            dispatch_queries: Counter::default(),
            notes_failed: Counter::default(),
            listening: Gauge::default(),
            database_ready: Gauge::default(),
            fleet: Family::default(),
        };
        Metrics::register_ingest(&mut r, &m);
        Metrics::register_operations(&mut r, &m);
        // every reason from the start: a first refusal then shows in rate()
        for reason in [
            "total",
            "evicted_pending",
            "handshake_timeout",
            "bad_identity",
            "per_identity",
            "idle",
            "revoked",
            "expired",
        ] {
            let _ = m.connections_refused.get_or_create(&ReasonLabel { reason });
        }
        for cause in ["local", "peer", "poll", "reconnect"] {
            let _ = m.dispatch_wakes.get_or_create(&CauseLabel { cause });
        }
        Metrics::register_replicas(&mut r, &m);
        r.register(
            "build",
            "This headend's release (1, labelled with its version)",
            prometheus_client::metrics::info::Info::new(vec![(
                "version",
                env!("CARGO_PKG_VERSION"),
            )]),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }
}

/// The registrations, in two halves of one list (help texts are the
/// metrics' documentation).
impl Metrics {
    /// Dispatch and the notes between replicas (issue 35).
    fn register_replicas(r: &mut Registry, m: &Metrics) {
        r.register(
            "dispatch_wakes",
            "Wake-ups of agent sessions' dispatchers, by cause: local (a change on this replica), peer (another replica's note), poll (the 30 s safety net), reconnect (this replica's listener reconnected; every session woken)",
            m.dispatch_wakes.clone(),
        );
        r.register(
            "dispatch_queries",
            "Reads of the commands table by dispatch (sessions and the safety net): the load dispatch puts on the database",
            m.dispatch_queries.clone(),
        );
        r.register(
            "notes_failed",
            "Notes to other replicas (LISTEN/NOTIFY) that could not be sent; retried each second",
            m.notes_failed.clone(),
        );
        r.register(
            "fleet",
            "The fleet as the database says at this scrape, the same on every replica: sites, connected (a session on any replica), silent (no session and no data for 15 min), devices_down, certificates_expiring (within 14 days), commands_failed (ended failed in the last hour)",
            m.fleet.clone(),
        );
        r.register(
            "database_ready",
            "1 while the database takes writes; 0 while it is unreachable or read-only (checked every 5 s; /ready says why)",
            m.database_ready.clone(),
        );
        r.register(
            "listening",
            "1 while this replica listens to the other replicas' notes (PostgreSQL LISTEN); 0 while it reconnects, or on SQLite",
            m.listening.clone(),
        );
    }

    /// Sessions, batches, commits, enrollment.
    fn register_ingest(r: &mut Registry, m: &Metrics) {
        r.register(
        "listener_connections",
        "Connections a listener holds now (rest, enrollment; agent_pending: agent connections before their TLS handshake ended)",
        m.listener_connections.clone(),
    );
        r.register(
        "listener_limit",
        "A listener's bounds: max_connections, max_per_address, handshake_timeout_seconds, first_request_timeout_seconds, idle_timeout_seconds",
        m.listener_limit.clone(),
    );
        r.register(
        "listener_closed",
        "Connections a listener closed by its bounds (evicted_idle, per_address_full, handshake_timeout, first_request_timeout, idle_timeout)",
        m.listener_closed.clone(),
    );
        r.register(
        "log_lines_suppressed",
        "The headend's own log lines held back by the per-call-site rate limit (a repeating fault)",
        m.log_lines_suppressed.clone(),
    );
        r.register(
        "clock_corrected_sessions",
        "Agent sessions whose site clock was off by more than 2 s; their times were corrected (see /sites clock)",
        m.clock_corrected.clone(),
    );
        r.register(
            "clock_refused_sessions",
            "Agent sessions refused because the site clock was off by more than 24 h",
            m.clock_refused.clone(),
        );
        r.register(
        "session_takeovers",
        "Sessions that replaced an open session of the same site (the older one is closed, told why)",
        m.session_takeovers.clone(),
    );
        for (name, help, c) in [
            (
                "inventory_runs",
                "Inventory evaluations of every tank (on the replica holding the lease)",
                &m.inventory_runs,
            ),
            (
                "inventory_quick_runs",
                "Evaluations of the tanks whose gauge readings were just committed (within a second of the commit)",
                &m.inventory_quick_runs,
            ),
            (
                "inventory_failures",
                "Inventory evaluations that failed (retried at the next run)",
                &m.inventory_failures,
            ),
            (
                "observations_refused",
                "Stored observations whose source does not parse, left out of their tank's assessment (each logged as stored_value_invalid)",
                &m.observations_refused,
            ),
            (
                "escalations_opened",
                "Escalations opened by the inventory job",
                &m.escalations_opened,
            ),
            (
                "escalations_cleared",
                "Escalations the inventory job resolved because their cause cleared",
                &m.escalations_cleared,
            ),
            (
                "webhooks_delivered",
                "Escalation and alarm notifications the webhook accepted (2xx)",
                &m.webhooks_delivered,
            ),
            (
                "webhook_retries",
                "Webhook attempts that failed and were scheduled again",
                &m.webhook_retries,
            ),
            (
                "webhooks_dead",
                "Webhook notifications given up after their last attempt (dead letters)",
                &m.webhooks_dead,
            ),
            (
                "mails_sent",
                "Alarm mails the SMTP server accepted (digests included)",
                &m.mails_sent,
            ),
            (
                "mail_retries",
                "Alarm mail attempts that failed and were scheduled again",
                &m.mail_retries,
            ),
            (
                "mails_dead",
                "Alarm mails given up after their last attempt",
                &m.mails_dead,
            ),
            (
                "mails_held",
                "Alarm mails held for a digest (over a recipient's limit)",
                &m.mails_held,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        r.register(
            "retention_readings_deleted",
            "Raw readings removed because they passed the raw retention window",
            m.retention_readings.clone(),
        );
        r.register(
            "retention_rollups_deleted",
            "Hourly rollups removed because they passed the rollup retention window",
            m.retention_rollups.clone(),
        );
        r.register(
            "sanitized_fields",
            "Text fields from agents whose control characters were replaced with U+FFFD",
            m.sanitized_fields.clone(),
        );
        r.register(
            "sites_failing",
            "Sites whose last ingest commit failed (see GET /api/v1/sites, ingest_error)",
            m.sites_failing.clone(),
        );
        r.register(
            "agent_connections",
            "Agent TLS connections open now (handshaking, idle or in a session)",
            m.connections.clone(),
        );
        r.register(
            "agent_connections_refused",
            "Agent connections closed by a limit (per_identity, total, idle, handshake_timeout)",
            m.connections_refused.clone(),
        );
        r.register(
            "http_refused",
            "REST requests refused at the edge (content_type, host, control_chars)",
            m.http_refused.clone(),
        );
    }

    /// Commands, jobs, webhooks, listeners and the rest.
    fn register_operations(r: &mut Registry, m: &Metrics) {
        for (name, help, c) in [
            (
                "auth_refused",
                "REST requests refused for a missing, unknown, expired or revoked credential",
                &m.auth_refused,
            ),
            (
                "logins_refused",
                "Logins refused: wrong name or password, locked name, throttled address",
                &m.logins_refused,
            ),
            (
                "audit_append_failed",
                "Audit entries that could not be appended (logged with the request id)",
                &m.audit_failed,
            ),
            (
                "commands_submitted",
                "Commands created through REST (split children included)",
                &m.commands_submitted,
            ),
            (
                "commands_sent",
                "Commands and cancels written to agent sessions (redeliveries included)",
                &m.commands_sent,
            ),
            (
                "command_acks",
                "Command acks received from agents (replays included)",
                &m.command_acks,
            ),
            (
                "delivery_events",
                "Delivery events received from agents (replays included)",
                &m.delivery_events,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        r.register(
            "batches",
            "Telemetry batches received (previews included)",
            m.batches.clone(),
        );
        r.register(
            "preview_batches",
            "Preview batches received (stored, not acknowledged)",
            m.preview_batches.clone(),
        );
        r.register(
            "compact_batches",
            "Batches received as CompactBatch (aliases, deltas; counted in batches too)",
            m.compact_batches.clone(),
        );
        r.register(
            "readings",
            "Readings received in batches (duplicates included)",
            m.readings.clone(),
        );
        r.register(
            "gap_records",
            "Gap records received (data an agent had to drop)",
            m.gap_records.clone(),
        );
        r.register(
            "commits",
            "Ingest transactions committed",
            m.commits.clone(),
        );
        r.register(
            "commit_failures",
            "Ingest transactions that failed (nothing acknowledged)",
            m.commit_failures.clone(),
        );
        r.register(
            "db_write_seconds",
            "Duration of one ingest transaction",
            m.db_write_seconds.clone(),
        );
        r.register(
            "queued_batches",
            "Validated batches waiting for their commit, all sessions",
            m.queued_batches.clone(),
        );
        r.register(
            "agent_sessions",
            "Agent sessions open now",
            m.sessions.clone(),
        );
        r.register(
            "sessions_refused",
            "Sessions refused (site claim, bad hello)",
            m.sessions_refused.clone(),
        );
        r.register(
            "agent_cert_renewals",
            "Agent certificates issued by renewal over a live session",
            m.renewals.clone(),
        );
        r.register(
            "agent_enrollments",
            "Agent certificates issued by enrollment (one-time token)",
            m.enrollments.clone(),
        );
        r.register(
            "agent_enrollments_refused",
            "Enrollments refused (token unknown, used, expired or for another site; unusable CSR)",
            m.enrollments_refused.clone(),
        );
    }
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
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
