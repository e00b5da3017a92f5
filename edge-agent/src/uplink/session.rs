//! One session: dial, TLS, the Hello and its HelloAck ([`open`]), then the
//! loop that sends the control lane, telemetry and previews ([`Live::send`])
//! and handles what the headend sends and the once-a-second duties
//! ([`Live::on_message`], [`Live::on_tick`]).

use std::collections::VecDeque;
use std::time::Duration;

use tankwatch_proto::v1::{
    self, AgentMessage, agent_link_client::AgentLinkClient, agent_message::Msg as Out,
    headend_message::Msg as In,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::connect::{connect, probe};
use super::hello::hello;
use super::{
    CONTROL_BATCH, HELLO_ACK_TIMEOUT, LINK_REPORT_EVERY, PREVIEW_EVERY, SETUP_TIMEOUT,
    SessionError, Uplink, batch, link, pace, tls_files,
};

/// What a session reads from the headend.
type Inbound = tonic::Streaming<v1::HeadendMessage>;

pub(super) async fn session(u: &mut Uplink) -> Result<(), SessionError> {
    load_renewer(u);
    let (tx, rx) = mpsc::channel::<AgentMessage>(u.cfg.uplink.window as usize + 2);
    let state_lost = u.store.state_lost().unwrap_or(false);
    let (mut inbound, hello_ack) = open(u, rx, state_lost).await?;
    u.status.send_modify(|s| {
        s.connected = true;
        s.sessions += 1;
        s.last_attempt = Some(tokio::time::Instant::now());
    });
    u.metrics.sessions.inc();
    u.metrics.connected.set(1);
    tracing::info!(site = %hello_ack.site_id, acked = hello_ack.acked_through_seq, "connected to headend");
    if let Some(r) = u.renewer.as_mut() {
        r.new_session();
        let renewals = u.metrics.cert_renewals.get();
        u.status
            .send_modify(|s| s.certificate = Some(r.view(renewals)));
        tx.send(AgentMessage {
            msg: Some(Out::Certificate(r.status())),
        })
        .await
        .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
    }
    let mut live = Live::new(u, tx, &hello_ack, state_lost);
    let mut health_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        live.send(u).await?;
        let backlog = live.backlog(u);
        let linger_end = live.pending_since.map(|t| t + live.linger);
        let window_open = live.in_flight.len() < live.window;
        tokio::select! {
            _ = tokio::time::sleep(PREVIEW_EVERY), if backlog => {}
            _ = tokio::time::sleep_until(linger_end.unwrap_or_else(tokio::time::Instant::now)), if linger_end.is_some() && window_open => {}
            m = inbound.message() => {
                if live.on_message(u, m?.and_then(|m| m.msg)).await? == Flow::Stop {
                    return Ok(());
                }
            }
            r = u.durable.changed() => { if r.is_err() { return Ok(()); } }
            _ = health_tick.tick() => live.on_tick(u).await?,
            _ = u.stop.changed() => return Ok(()),
        }
    }
}

/// Loads the agent certificate for renewal (once), or finishes a renewal
/// that a crash interrupted.
fn load_renewer(u: &mut Uplink) {
    if u.renewer.is_none() {
        match crate::renew::Renewer::load(tls_files(&u.cfg), &u.cfg.site_id) {
            Ok(r) => u.renewer = Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "the agent certificate does not read; no renewal until it does")
            }
        }
    } else if let Some(what) = crate::renew::recover(&tls_files(&u.cfg)) {
        tracing::warn!(what, "certificate files");
    }
}

/// Dials, sends the Hello and waits for the HelloAck, under one deadline;
/// records the headend's clock and its ack. The first session after a
/// start ends here when the headend takes compressed messages.
async fn open(
    u: &mut Uplink,
    rx: mpsc::Receiver<AgentMessage>,
    state_lost: bool,
) -> Result<(Inbound, v1::HelloAck), SessionError> {
    let cfg = &*u.cfg;
    // the Hello is stamped with our clock when the stream takes it (after
    // dialling and TLS), so that the skew the headend measures is not the setup time
    let mut hello = hello(cfg, &u.log)?;
    if let Some(Out::Hello(h)) = hello.msg.as_mut() {
        h.state_lost = state_lost;
    }
    let hello_sent = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
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
    let compress = u.compress;
    let wire = &u.wire;
    let address = u.failover.current().to_string();
    // dial, TLS, the stream's response headers and the HelloAck, under one deadline
    let setup = async {
        let channel = connect(cfg, &address, wire).await?;
        let mut client = AgentLinkClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
        if compress {
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
    let (inbound, first) = tokio::time::timeout(SETUP_TIMEOUT, setup)
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
    if let Some(o) = u
        .clock
        .record(sent, adapter_api::now_ms(), hello_ack.headend_time_ms)
    {
        u.metrics.clock_offset.set(o as f64 / 1000.0);
        if o.abs() > 2_000 {
            tracing::warn!(
                offset_ms = o,
                "this PC's clock differs from the headend's by more than 2 s; command expiry is judged by the headend's clock and the headend corrects our times (set this PC's clock, NTP)"
            );
        }
        let offset = u.clock.offset_ms();
        u.status.send_modify(|s| s.clock_offset = offset);
    }
    u.log.ack(hello_ack.acked_through_seq)?;
    if u.status.borrow().headend_version != hello_ack.headend_version {
        let v = hello_ack.headend_version.clone();
        u.status.send_modify(|s| s.headend_version = v);
    }
    // The first session after a start does not know whether the headend
    // takes compressed messages; when its HelloAck says so, the agent
    // reconnects at once, compressing (one more handshake, ~5 kB, per start;
    // gzip saves more than that within minutes: ADR 0013).
    if std::mem::replace(&mut u.compress, hello_ack.compact) != hello_ack.compact
        && hello_ack.compact
    {
        return Err(SessionError::Compress);
    }
    Ok((inbound, hello_ack))
}

/// Whether the session goes on.
#[derive(Debug, PartialEq)]
enum Flow {
    Go,
    Stop,
}

/// A session's state once its HelloAck is in.
struct Live {
    out: batch::Outbound,
    window: usize,
    max_readings: usize,
    max_bytes: usize,
    linger: Duration,
    state_lost: bool,
    /// The next seq to send.
    next: u64,
    /// (last seq, entries, sent at) of each batch on the wire
    in_flight: VecDeque<(u64, usize, tokio::time::Instant)>,
    pace: pace::Pace,
    /// Live readings are not starved behind a backlog: while more is
    /// waiting than the next seconds carry, the newest entries go out
    /// ahead as a preview (stored at once, deduplicated, acknowledged
    /// later in order). Everything in the log when the session starts is
    /// backlog; previews carry only what arrived after that.
    previewed_through: u64,
    last_preview: Option<tokio::time::Instant>,
    /// The control lane: alarms, events and command answers go out ahead
    /// of the telemetry backlog, as soon as they are durable.
    control_through: u64,
    /// since when unsent entries wait for a fuller batch (live: `linger`)
    pending_since: Option<tokio::time::Instant>,
    health: crate::health::HealthReport,
    session_start: tokio::time::Instant,
    last_link_report: tokio::time::Instant,
}

impl Live {
    fn new(
        u: &mut Uplink,
        tx: mpsc::Sender<AgentMessage>,
        hello_ack: &v1::HelloAck,
        state_lost: bool,
    ) -> Live {
        let cfg = &u.cfg;
        let max_readings = (cfg.uplink.batch_max_readings as usize)
            .min(hello_ack.max_batch_readings.max(1) as usize);
        let gzip = u.compress;
        u.status.send_modify(|s| {
            s.compact = hello_ack.compact;
            s.gzip = gzip;
        });
        let next = u.log.stats().acked_through.max(hello_ack.acked_through_seq) + 1;
        let session_start = tokio::time::Instant::now();
        Live {
            out: batch::Outbound {
                tx,
                encoder: hello_ack
                    .compact
                    .then(tankwatch_proto::compact::Encoder::new),
            },
            window: cfg.uplink.window as usize,
            max_readings,
            max_bytes: cfg.uplink.batch_max_bytes as usize,
            linger: Duration::from_millis(cfg.uplink.linger_ms),
            state_lost,
            next,
            in_flight: VecDeque::new(),
            pace: pace::Pace::new(max_readings),
            previewed_through: u.log.durable_seq(),
            last_preview: None,
            control_through: next - 1,
            pending_since: None,
            health: crate::health::HealthReport::default(),
            session_start,
            // the first report goes out with the first tick
            last_link_report: session_start - LINK_REPORT_EVERY,
        }
    }

    /// Whether more waits than the next batches carry (previews go out).
    fn backlog(&self, u: &Uplink) -> bool {
        u.log.durable_seq().saturating_sub(self.next - 1) as usize > 2 * self.pace.batch_entries()
    }

    /// Sends what is due: the control lane, telemetry within the window,
    /// and a preview while a backlog drains.
    async fn send(&mut self, u: &Uplink) -> Result<(), SessionError> {
        let log = &u.log;
        let control =
            log.read_control_for_preview(self.control_through.max(self.next - 1), CONTROL_BATCH)?;
        if let Some(b) = batch::batch_of(log, control, true) {
            self.control_through = b.last_seq;
            u.metrics.control_batches.inc();
            self.out.batch(b).await?;
        }
        self.send_telemetry(u).await?;
        if self.backlog(u)
            && self
                .last_preview
                .is_none_or(|t| t.elapsed() >= PREVIEW_EVERY)
        {
            self.last_preview = Some(tokio::time::Instant::now());
            let entries = log.read_newest_for_preview(
                self.previewed_through.max(self.next - 1),
                self.max_readings,
            )?;
            if let Some(b) = batch::batch_of(log, entries, true) {
                self.previewed_through = b.last_seq;
                u.metrics.preview_batches.inc();
                self.out.batch(b).await?;
            }
        }
        Ok(())
    }

    /// Telemetry in seq order, in batches as the pace sizes them, up to
    /// `window` batches in flight.
    async fn send_telemetry(&mut self, u: &Uplink) -> Result<(), SessionError> {
        let (log, metrics) = (&u.log, &u.metrics);
        loop {
            let durable_now = log.durable_seq();
            let pending = durable_now.saturating_sub(self.next - 1) as usize;
            if pending == 0 {
                self.pending_since = None;
                return Ok(());
            }
            let since = *self
                .pending_since
                .get_or_insert_with(tokio::time::Instant::now);
            let entries: usize = self.in_flight.iter().map(|b| b.1).sum();
            let want = self.pace.batch_entries();
            if !(pending >= want || since.elapsed() >= self.linger)
                || !self
                    .pace
                    .may_send(entries, self.in_flight.len(), self.window)
            {
                return Ok(());
            }
            let got = log.read_for_send(self.next, want, self.max_bytes)?;
            let count = got.len();
            let Some(b) = batch::batch_of(log, got, false) else {
                return Ok(());
            };
            self.next = b.last_seq + 1;
            if self.next > durable_now {
                self.pending_since = None;
            }
            self.in_flight
                .push_back((b.last_seq, count, tokio::time::Instant::now()));
            // (read_for_send protected these entries from the drop policy)
            metrics.sent_batches.inc();
            metrics.sent_readings.inc_by(b.readings.len() as u64);
            metrics.in_flight.set(self.in_flight.len() as i64);
            self.out.batch(b).await?;
        }
    }

    /// One message from the headend.
    async fn on_message(&mut self, u: &mut Uplink, m: Option<In>) -> Result<Flow, SessionError> {
        match m {
            Some(In::Ack(a)) => self.acked(u, &a)?,
            Some(In::Control(c)) => {
                return Err(SessionError::Protocol(format!(
                    "headend asked to reconnect: {}",
                    c.reason
                )));
            }
            Some(In::Command(c)) => {
                // bounded: while the executor is busy the stream is not read
                if u.commands.send(c).await.is_err() {
                    return Ok(Flow::Stop); // the executor stopped: the agent is stopping
                }
            }
            Some(In::Renewed(reply)) => self.renewed(u, reply).await?,
            Some(In::HelloAck(_)) => {
                return Err(SessionError::Protocol("unexpected second HelloAck".into()));
            }
            None => return Err(SessionError::Protocol("headend closed the session".into())),
        }
        Ok(Flow::Go)
    }

    /// A cumulative ack: trims the log, paces the next batches.
    fn acked(&mut self, u: &Uplink, a: &v1::TelemetryAck) -> Result<(), SessionError> {
        if a.log_id != u.log.log_id() {
            return Err(SessionError::Protocol(format!(
                "ack for log {} (ours is {})",
                a.log_id,
                u.log.log_id()
            )));
        }
        u.log.ack(a.acked_through_seq)?;
        let now = tokio::time::Instant::now();
        while let Some(&(s, entries, sent)) = self.in_flight.front() {
            if s > a.acked_through_seq {
                break;
            }
            u.metrics.ack_latency.observe(sent.elapsed().as_secs_f64());
            self.pace.acked(entries, sent.into_std(), now.into_std());
            self.in_flight.pop_front();
        }
        u.metrics.in_flight.set(self.in_flight.len() as i64);
        Ok(())
    }

    /// The headend signed a renewal: try it, install it, say so, and
    /// reconnect with it.
    async fn renewed(&mut self, u: &mut Uplink, reply: v1::RenewReply) -> Result<(), SessionError> {
        let Some(r) = u.renewer.as_mut() else {
            return Ok(());
        };
        let cfg = &u.cfg;
        let address = u.failover.current().to_string();
        let address = &address;
        let outcome = r
            .complete(reply, adapter_api::now_ms(), |files| {
                probe(cfg, address, files)
            })
            .await;
        match &outcome {
            crate::renew::Outcome::Renewed { .. } => {
                u.metrics.cert_renewals.inc();
            }
            crate::renew::Outcome::Failed(_) => {
                u.metrics.cert_renewal_failures.inc();
            }
            crate::renew::Outcome::Stray => {}
        }
        let renewals = u.metrics.cert_renewals.get();
        u.status
            .send_modify(|s| s.certificate = Some(r.view(renewals)));
        self.out.send(Out::Certificate(r.status())).await?;
        if let crate::renew::Outcome::Renewed { serial } = outcome {
            return Err(SessionError::Renewed(serial));
        }
        Ok(())
    }

    /// Once a second: the link's figures, the state-lost mark, device
    /// health and certificate renewal.
    async fn on_tick(&mut self, u: &mut Uplink) -> Result<(), SessionError> {
        let (log, wire, metrics) = (&u.log, &u.wire, &u.metrics);
        u.meter.record(link::Sample {
            at: std::time::Instant::now(),
            up: wire.up(),
            down: wire.down(),
            durable: log.durable_seq(),
            acked: log.stats().acked_through,
        });
        let mut view = u.meter.view();
        view.oldest_ms = log.oldest()?.map(|(_, ts)| ts);
        view.backlog_age_s = view
            .oldest_ms
            .map(|t| (adapter_api::now_ms() - t).max(0) as f64 / 1000.0);
        metrics.link.set(&view, wire.up(), wire.down());
        if self.out.encoder.is_some() && self.last_link_report.elapsed() >= LINK_REPORT_EVERY {
            self.last_link_report = tokio::time::Instant::now();
            self.out
                .send(Out::Link(view.report(adapter_api::now_ms())))
                .await?;
        }
        u.status.send_modify(|s| s.link = view);
        // a session that lasted 30 s has had the active setpoints resent
        if self.state_lost
            && self.session_start.elapsed() >= Duration::from_secs(30)
            && u.store.state_lost().unwrap_or(false)
        {
            if let Err(e) = u.store.set_state_lost(false) {
                tracing::warn!(error = %e, "clearing the state-lost mark failed");
            } else {
                tracing::info!("the headend has resent the active setpoints");
            }
        }
        if let Some(m) = self.health.due(&u.devices, tokio::time::Instant::now()) {
            self.out.send(Out::Devices(m)).await?;
        }
        self.renewal_due(u).await
    }

    /// Asks for a renewal when the certificate is due; says so when it is overdue.
    async fn renewal_due(&mut self, u: &mut Uplink) -> Result<(), SessionError> {
        let Some(r) = u.renewer.as_mut() else {
            return Ok(());
        };
        let now = adapter_api::now_ms();
        let msg = if r.overdue(now) {
            u.metrics.cert_renewal_failures.inc();
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
            self.out.send(m).await?;
        }
        Ok(())
    }
}
