//! The uplink: one outbound mTLS gRPC session to the headend at a time,
//! streaming durable log entries and trimming the log on cumulative acks.
//!
//! Replay: every session starts after the highest ack known (the log's own
//! or the headend's HelloAck, whichever is higher) and sends the log in seq
//! order, up to `window` batches in flight. On any error the session ends,
//! and the next one starts after an exponential backoff with jitter; it
//! resends everything not yet acknowledged (duplicates are dropped by the
//! headend's (site, log_id, seq) key).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::Backoff;
use sflog::Log;
use tankwatch_proto::v1::{
    self, AgentMessage, agent_link_client::AgentLinkClient, agent_message::Msg as Out,
    headend_message::Msg as In,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::AgentConfig;
use wire::WireBytes;

mod batch;
mod connect;
mod hello;
pub mod link;
pub mod pace;
mod watchdog;
pub use connect::{channel, explain, tls_files};
use connect::{connect, probe};
pub mod wire;
use hello::hello;
pub use watchdog::watchdog;

const HELLO_ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest time from dialling to the HelloAck: a headend that takes the
/// connection and then says nothing cannot hold the uplink.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// While a backlog drains, a preview batch of the newest entries goes out this often.
const PREVIEW_EVERY: Duration = Duration::from_secs(1);
/// The link's figures go to the headend this often.
const LINK_REPORT_EVERY: Duration = Duration::from_secs(30);
/// Most control entries (alarms, events, command answers) in one batch of the control lane.
const CONTROL_BATCH: usize = 256;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("TLS setup: {0}")]
    Tls(#[from] tankwatch_tls::Error),
    #[error("connect: {0}")]
    Connect(String),
    #[error("headend: {0}")]
    Status(#[from] tonic::Status),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("log: {0}")]
    Log(#[from] sflog::Error),
    /// Not a failure: the certificate was renewed; reconnect with it at once.
    #[error("certificate renewed ({0}); reconnecting with it")]
    Renewed(String),
    /// Not a failure: the headend takes compressed messages and a backlog
    /// waits; reconnect at once, compressing.
    #[error("the headend takes compressed messages; reconnecting to send them compressed")]
    Compress,
}

/// Shared uplink state, for status and tests.
#[derive(Debug, Clone, Default)]
pub struct UplinkStatus {
    pub connected: bool,
    pub sessions: u64,
    pub last_error: String,
    /// When the uplink last started dialling (or was connected).
    pub last_attempt: Option<tokio::time::Instant>,
    /// The agent certificate and its renewal (None: not readable).
    pub certificate: Option<crate::renew::CertificateView>,
    /// The headend's clock minus ours (ms) and when it was measured (our
    /// clock, Unix ms), from the last HelloAck.
    pub clock_offset: Option<(i64, i64)>,
    /// Whether the session sends compact batches (the headend takes them).
    pub compact: bool,
    /// Whether the session's messages are gzip-compressed.
    pub gzip: bool,
    /// The link's measured figures.
    pub link: link::LinkView,
}

/// What the uplink works with.
pub struct Uplink {
    pub cfg: Arc<AgentConfig>,
    pub log: Arc<Log>,
    /// The log's durable seq (the uplink sends up to it).
    pub durable: watch::Receiver<u64>,
    pub stop: watch::Receiver<bool>,
    pub status: watch::Sender<UplinkStatus>,
    pub metrics: crate::metrics::Metrics,
    /// Where commands from the headend go (the executor).
    pub commands: mpsc::Sender<v1::Command>,
    /// The devices whose health is reported to the headend.
    pub devices: Arc<Vec<crate::metrics::DeviceHealth>>,
    /// Certificate renewal (None until the certificate file reads).
    pub renewer: Option<crate::renew::Renewer>,
    /// The headend's clock, measured at each HelloAck (the executor judges expiry by it).
    pub clock: crate::clock::HeadendClock,
    /// The command state (whether it was lost: the Hello says so).
    pub store: crate::store::Store,
    /// Bytes on the wire, every session.
    pub wire: Arc<WireBytes>,
    /// The link's figures, over sessions.
    pub meter: link::LinkMeter,
    /// Whether the headend takes gzip-compressed messages (its last
    /// HelloAck offered compact batches; ADR 0013). Until a session has
    /// told, messages go uncompressed.
    pub compress: bool,
}

async fn session(u: &mut Uplink) -> Result<(), SessionError> {
    let Uplink {
        cfg,
        log,
        durable,
        stop,
        status,
        metrics,
        commands,
        devices,
        renewer,
        clock,
        store,
        wire,
        meter,
        compress,
    } = u;
    let cfg: &AgentConfig = cfg;
    if renewer.is_none() {
        match crate::renew::Renewer::load(tls_files(cfg), &cfg.site_id) {
            Ok(r) => *renewer = Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "the agent certificate does not read; no renewal until it does")
            }
        }
    } else if let Some(what) = crate::renew::recover(&tls_files(cfg)) {
        tracing::warn!(what, "certificate files");
    }
    let window = cfg.uplink.window as usize;
    let (tx, rx) = mpsc::channel::<AgentMessage>(window + 2);
    // the Hello is stamped with our clock when the stream takes it (after
    // dialling and TLS), so that the skew the headend measures is not the setup time
    let mut hello = hello(cfg, log)?;
    let state_lost = store.state_lost().unwrap_or(false);
    if let Some(Out::Hello(h)) = hello.msg.as_mut() {
        h.state_lost = state_lost;
    }
    let hello_sent = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stamp = hello_sent.clone();
    let hello_stream = tokio_stream::iter(std::iter::once_with(move || {
        let mut h = hello;
        let now = adapter_api::now_ms();
        stamp.store(now, std::sync::atomic::Ordering::Relaxed);
        if let Some(Out::Hello(x)) = h.msg.as_mut() {
            x.agent_time_ms = now;
        }
        h
    }));
    // dial, TLS, the stream's response headers and the HelloAck, under one deadline
    let setup = async {
        let channel = connect(cfg, wire).await?;
        let mut client = AgentLinkClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
        if *compress {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        let mut inbound = client
            .session(hello_stream.chain(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        let first = tokio::time::timeout(HELLO_ACK_TIMEOUT, inbound.message())
            .await
            .map_err(|_| SessionError::Protocol("no HelloAck within 15 s".into()))??;
        Ok::<_, SessionError>((inbound, first))
    };
    let (mut inbound, first) =
        tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .map_err(|_| {
                SessionError::Connect(format!(
                    "no session within {} s (connect, TLS, HelloAck)",
                    SETUP_TIMEOUT.as_secs()
                ))
            })??;
    let hello_ack = match first.and_then(|m| m.msg) {
        Some(In::HelloAck(h)) => h,
        other => {
            return Err(SessionError::Protocol(format!(
                "expected HelloAck, got {other:?}"
            )));
        }
    };
    let sent = hello_sent.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(o) = clock.record(sent, adapter_api::now_ms(), hello_ack.headend_time_ms) {
        metrics.clock_offset.set(o as f64 / 1000.0);
        if o.abs() > 2_000 {
            tracing::warn!(
                offset_ms = o,
                "this PC's clock differs from the headend's by more than 2 s; command expiry is judged by the headend's clock and the headend corrects our times (set this PC's clock, NTP)"
            );
        }
        status.send_modify(|s| s.clock_offset = clock.offset_ms());
    }
    log.ack(hello_ack.acked_through_seq)?;
    // The first session after a start does not know whether the headend
    // takes compressed messages; when its HelloAck says so, the agent
    // reconnects at once, compressing (one more handshake, ~5 kB, per start;
    // gzip saves more than that within minutes: ADR 0013).
    if std::mem::replace(compress, hello_ack.compact) != hello_ack.compact && hello_ack.compact {
        return Err(SessionError::Compress);
    }
    status.send_modify(|s| {
        s.connected = true;
        s.sessions += 1;
        s.last_attempt = Some(tokio::time::Instant::now());
    });
    metrics.sessions.inc();
    metrics.connected.set(1);
    tracing::info!(site = %hello_ack.site_id, acked = hello_ack.acked_through_seq, "connected to headend");
    if let Some(r) = renewer.as_mut() {
        r.new_session();
        let renewals = metrics.cert_renewals.get();
        status.send_modify(|s| s.certificate = Some(r.view(renewals)));
        tx.send(AgentMessage {
            msg: Some(Out::Certificate(r.status())),
        })
        .await
        .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
    }
    let max_readings =
        (cfg.uplink.batch_max_readings as usize).min(hello_ack.max_batch_readings.max(1) as usize);
    let max_bytes = cfg.uplink.batch_max_bytes as usize;
    let linger = Duration::from_millis(cfg.uplink.linger_ms);
    let mut out = batch::Outbound {
        tx,
        encoder: hello_ack
            .compact
            .then(tankwatch_proto::compact::Encoder::new),
    };
    let gzip = *compress;
    status.send_modify(|s| {
        s.compact = hello_ack.compact;
        s.gzip = gzip;
    });
    let mut next = log.stats().acked_through.max(hello_ack.acked_through_seq) + 1;
    // (last seq, entries, sent at) of each batch on the wire
    let mut in_flight: VecDeque<(u64, usize, tokio::time::Instant)> = VecDeque::new();
    let mut pace = pace::Pace::new(max_readings);
    // Live readings are not starved behind a backlog: while more is waiting
    // than the next seconds carry, the newest entries go out ahead as a
    // preview (stored at once, deduplicated, acknowledged later in order).
    // Everything in the log when the session starts is backlog; previews
    // carry only what arrived after that.
    let mut previewed_through = log.durable_seq();
    let mut last_preview: Option<tokio::time::Instant> = None;
    // The control lane: alarms, events and command answers go out ahead of
    // the telemetry backlog, as soon as they are durable.
    let mut control_through = next - 1;
    // since when unsent entries wait for a fuller batch (live: `linger`)
    let mut pending_since: Option<tokio::time::Instant> = None;
    let mut health = crate::health::HealthReport::default();
    let mut health_tick = tokio::time::interval(Duration::from_secs(1));
    let session_start = tokio::time::Instant::now();
    // the first report goes out with the first tick
    let mut last_link_report = session_start - LINK_REPORT_EVERY;
    loop {
        let control = log.read_control_for_preview(control_through.max(next - 1), CONTROL_BATCH)?;
        if let Some(b) = batch::batch_of(log, control, true) {
            control_through = b.last_seq;
            metrics.control_batches.inc();
            out.batch(b).await?;
        }
        loop {
            let durable_now = log.durable_seq();
            let pending = durable_now.saturating_sub(next - 1) as usize;
            if pending == 0 {
                pending_since = None;
                break;
            }
            let since = *pending_since.get_or_insert_with(tokio::time::Instant::now);
            let entries: usize = in_flight.iter().map(|b| b.1).sum();
            let want = pace.batch_entries();
            if !(pending >= want || since.elapsed() >= linger)
                || !pace.may_send(entries, in_flight.len(), window)
            {
                break;
            }
            let got = log.read_for_send(next, want, max_bytes)?;
            let count = got.len();
            let Some(b) = batch::batch_of(log, got, false) else {
                break;
            };
            next = b.last_seq + 1;
            if next > durable_now {
                pending_since = None;
            }
            in_flight.push_back((b.last_seq, count, tokio::time::Instant::now()));
            // (read_for_send protected these entries from the drop policy)
            metrics.sent_batches.inc();
            metrics.sent_readings.inc_by(b.readings.len() as u64);
            metrics.in_flight.set(in_flight.len() as i64);
            out.batch(b).await?;
        }
        let backlog =
            log.durable_seq().saturating_sub(next - 1) as usize > 2 * pace.batch_entries();
        if backlog && last_preview.is_none_or(|t| t.elapsed() >= PREVIEW_EVERY) {
            last_preview = Some(tokio::time::Instant::now());
            let entries =
                log.read_newest_for_preview(previewed_through.max(next - 1), max_readings)?;
            if let Some(b) = batch::batch_of(log, entries, true) {
                previewed_through = b.last_seq;
                metrics.preview_batches.inc();
                out.batch(b).await?;
            }
        }
        let linger_end = pending_since.map(|t| t + linger);
        tokio::select! {
            _ = tokio::time::sleep(PREVIEW_EVERY), if backlog => {}
            _ = tokio::time::sleep_until(linger_end.unwrap_or_else(tokio::time::Instant::now)), if linger_end.is_some() && in_flight.len() < window => {}
            m = inbound.message() => match m?.and_then(|m| m.msg) {
                Some(In::Ack(a)) => {
                    if a.log_id != log.log_id() {
                        return Err(SessionError::Protocol(format!("ack for log {} (ours is {})", a.log_id, log.log_id())));
                    }
                    log.ack(a.acked_through_seq)?;
                    let now = tokio::time::Instant::now();
                    while let Some(&(s, entries, sent)) = in_flight.front() {
                        if s > a.acked_through_seq {
                            break;
                        }
                        metrics.ack_latency.observe(sent.elapsed().as_secs_f64());
                        pace.acked(entries, sent.into_std(), now.into_std());
                        in_flight.pop_front();
                    }
                    metrics.in_flight.set(in_flight.len() as i64);
                }
                Some(In::Control(c)) => {
                    return Err(SessionError::Protocol(format!("headend asked to reconnect: {}", c.reason)));
                }
                Some(In::Command(c)) => {
                    // bounded: while the executor is busy the stream is not read
                    if commands.send(c).await.is_err() {
                        return Ok(()); // the executor stopped: the agent is stopping
                    }
                }
                Some(In::Renewed(reply)) => {
                    if let Some(r) = renewer.as_mut() {
                        let outcome = r.complete(reply, adapter_api::now_ms(), |files| probe(cfg, files)).await;
                        match &outcome {
                            crate::renew::Outcome::Renewed { .. } => {
                                metrics.cert_renewals.inc();
                            }
                            crate::renew::Outcome::Failed(_) => {
                                metrics.cert_renewal_failures.inc();
                            }
                            crate::renew::Outcome::Stray => {}
                        }
                        let renewals = metrics.cert_renewals.get();
                        status.send_modify(|s| s.certificate = Some(r.view(renewals)));
                        out.send(Out::Certificate(r.status())).await?;
                        if let crate::renew::Outcome::Renewed { serial } = outcome {
                            return Err(SessionError::Renewed(serial));
                        }
                    }
                }
                Some(In::HelloAck(_)) => return Err(SessionError::Protocol("unexpected second HelloAck".into())),
                None => return Err(SessionError::Protocol("headend closed the session".into())),
            },
            r = durable.changed() => { if r.is_err() { return Ok(()); } }
            _ = health_tick.tick() => {
                meter.record(link::Sample {
                    at: std::time::Instant::now(),
                    up: wire.up(),
                    down: wire.down(),
                    durable: log.durable_seq(),
                    acked: log.stats().acked_through,
                });
                let mut view = meter.view();
                view.oldest_ms = log.oldest()?.map(|(_, ts)| ts);
                view.backlog_age_s = view
                    .oldest_ms
                    .map(|t| (adapter_api::now_ms() - t).max(0) as f64 / 1000.0);
                metrics.link.set(&view, wire.up(), wire.down());
                if out.encoder.is_some() && last_link_report.elapsed() >= LINK_REPORT_EVERY {
                    last_link_report = tokio::time::Instant::now();
                    out.send(Out::Link(view.report(adapter_api::now_ms()))).await?;
                }
                status.send_modify(|s| s.link = view);
                // a session that lasted 30 s has had the active setpoints resent
                if state_lost
                    && session_start.elapsed() >= Duration::from_secs(30)
                    && store.state_lost().unwrap_or(false)
                {
                    if let Err(e) = store.set_state_lost(false) {
                        tracing::warn!(error = %e, "clearing the state-lost mark failed");
                    } else {
                        tracing::info!("the headend has resent the active setpoints");
                    }
                }
                if let Some(m) = health.due(devices, tokio::time::Instant::now()) {
                    out.send(Out::Devices(m)).await?;
                }
                if let Some(r) = renewer.as_mut() {
                    let now = adapter_api::now_ms();
                    let msg = if r.overdue(now) {
                        metrics.cert_renewal_failures.inc();
                        Some(Out::Certificate(r.status()))
                    } else if r.due(now) {
                        match r.request(now) {
                            Ok(req) => {
                                tracing::info!(serial = %r.cert.serial, "renewing the agent certificate");
                                Some(Out::Renew(req))
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "making a key for the renewal failed");
                                None
                            }
                        }
                    } else {
                        None
                    };
                    if let Some(m) = msg {
                        out.send(m).await?;
                    }
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Runs sessions until `stop`, reconnecting with exponential backoff and jitter.
pub async fn run(mut u: Uplink) {
    let mut backoff = Backoff::new(u.cfg.uplink.backoff_initial_ms, u.cfg.uplink.backoff_max_ms);
    loop {
        if *u.stop.borrow() {
            return;
        }
        u.status
            .send_modify(|s| s.last_attempt = Some(tokio::time::Instant::now()));
        let sessions_before = u.status.borrow().sessions;
        let r = session(&mut u).await;
        let Uplink {
            status,
            metrics,
            stop,
            compress,
            ..
        } = &mut u;
        status.send_modify(|s| s.connected = false);
        metrics.connected.set(0);
        metrics.in_flight.set(0);
        match r {
            Ok(()) => return,
            Err(SessionError::Renewed(serial)) => {
                tracing::info!(%serial, "reconnecting with the renewed certificate");
                backoff.reset();
                continue;
            }
            Err(e @ SessionError::Compress) => {
                tracing::info!("{e}");
                backoff.reset();
                continue;
            }
            Err(e) => {
                if let SessionError::Status(s) = &e
                    && s.code() == tonic::Code::Unimplemented
                    && *compress
                {
                    // a headend that no longer takes compressed messages
                    tracing::warn!(
                        "the headend refused a compressed message; sending uncompressed"
                    );
                    *compress = false;
                }
                let e = explain(&e.to_string());
                tracing::warn!(error = %e, "headend session ended");
                status.send_modify(|s| s.last_error = e);
            }
        }
        // a session that got as far as its HelloAck resets the backoff: the
        // next headend restart costs the initial delay again, not the cap
        if status.borrow().sessions > sessions_before {
            backoff.reset();
        }
        let wait = backoff.next_delay();
        tracing::info!(wait_ms = wait.as_millis() as u64, "reconnecting to headend");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
