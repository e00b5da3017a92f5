//! The socket shell of the MQTT adapter: one broker session on rumqttc
//! (connect and subscribe, publishes routed to topic and Sparkplug points,
//! writes and their read-backs, the primary host STATE). The event loop's
//! own task is in `pump.rs`, the TLS config in `tls.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::runner::{self, Device, Ended, Io};
use adapter_api::{GapReason, Quality, WriteOutcome, WriteRequest, now_ms};
use rumqttc::{AsyncClient, EventLoop, MqttOptions, Packet, QoS, Transport};
use sparkplug_b::SparkplugTopic;

use crate::pump::{self, Inbound, READ_CAP, connect_failure, inbound};
use crate::tls::tls_config;
use crate::{
    INBOX, MALFORMED_LOG_EVERY_MS, MqttDevice, SUBSCRIBE_CHUNK, config, decode, parse_url,
    sparkplug, topic,
};

/// A write waiting for its read-back.
struct PendingWrite {
    point: usize,
    /// Canonical value written.
    wrote: f64,
    /// Last value seen for the point since the write.
    seen: Option<f64>,
    deadline: tokio::time::Instant,
    reply: tokio::sync::oneshot::Sender<WriteOutcome>,
}

pub(crate) struct Broker {
    dev: MqttDevice,
    /// Topic filters and the points they feed.
    by_filter: Vec<(String, Vec<usize>)>,
    /// Sparkplug metric name -> points.
    by_metric: HashMap<String, Vec<usize>>,
    node: sparkplug::Node,
    pending: Vec<PendingWrite>,
    last_malformed_log: i64,
    malformed_unlogged: u64,
    /// The timestamp of this connection's STATE messages (primary host).
    state_ts: i64,
}

impl Broker {
    pub(crate) fn new(dev: MqttDevice) -> Broker {
        let mut by_filter: Vec<(String, Vec<usize>)> = Vec::new();
        let mut by_metric: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in dev.points.iter().enumerate() {
            if let Some(t) = &p.topic {
                match by_filter.iter_mut().find(|(f, _)| f == t) {
                    Some((_, v)) => v.push(i),
                    None => by_filter.push((t.clone(), vec![i])),
                }
            }
            if let Some(m) = &p.metric {
                by_metric.entry(m.clone()).or_default().push(i);
            }
        }
        let device = dev.sparkplug.as_ref().and_then(|s| s.device_id.clone());
        Broker {
            dev,
            by_filter,
            by_metric,
            node: sparkplug::Node::new(device),
            pending: Vec::new(),
            last_malformed_log: i64::MIN / 2,
            malformed_unlogged: 0,
            state_ts: 0,
        }
    }

    fn qos(&self) -> QoS {
        if self.dev.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    fn options(&self) -> Result<MqttOptions, String> {
        let (tls, host, port) = parse_url(&self.dev.url)?;
        let id = self
            .dev
            .client_id
            .clone()
            .unwrap_or_else(|| format!("tankwatch-{}", self.dev.name));
        let mut o = MqttOptions::new(id, host.clone(), port);
        o.set_keep_alive(Duration::from_secs(self.dev.keep_alive_s));
        o.set_clean_session(self.dev.clean_session);
        // read up to READ_CAP: a message over max_payload_bytes is read, then
        // skipped and counted, and the connection kept (issue 29, item 11:
        // rumqttc refusing it dropped the connection, and a retained one
        // kept the device down for good)
        let out = self.dev.max_payload_bytes as usize + 1024;
        o.set_max_packet_size(READ_CAP.max(out), out);
        // QoS 1: a message is acknowledged once the session has handled it,
        // so a burst waits at the broker (its in-flight window) instead of
        // being shed here
        o.set_manual_acks(true);
        // Sparkplug 3.0 primary host: offline is the will, with the same
        // timestamp as the online state published at ConnAck
        if let Some((topic, _, offline)) = self.host_state() {
            o.set_last_will(rumqttc::LastWill::new(
                topic,
                offline,
                QoS::AtLeastOnce,
                true,
            ));
        }
        if let Some(user) = &self.dev.username {
            let pass = match &self.dev.password_file {
                Some(f) => std::fs::read_to_string(f)
                    .map_err(|e| format!("password_file {}: {e}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            };
            o.set_credentials(user.clone(), pass);
        }
        if tls && let Some(t) = &self.dev.tls {
            let cfg = tls_config(t)?;
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(cfg)),
            ));
        }
        Ok(o)
    }

    /// The STATE topic and its online and offline payloads, when this
    /// agent is a Sparkplug primary host (`sparkplug.host_id`).
    fn host_state(&self) -> Option<(String, String, String)> {
        let host = self.dev.sparkplug.as_ref()?.host_id.as_ref()?;
        let ts = self.state_ts;
        Some((
            format!("spBv1.0/STATE/{host}"),
            format!("{{\"online\":true,\"timestamp\":{ts}}}"),
            format!("{{\"online\":false,\"timestamp\":{ts}}}"),
        ))
    }

    fn subscriptions(&self) -> Vec<String> {
        let mut subs: Vec<String> = self.by_filter.iter().map(|(f, _)| f.clone()).collect();
        if let Some(s) = &self.dev.sparkplug {
            subs.push(format!("spBv1.0/{}/+/{}", s.group_id, s.edge_node_id));
            subs.push(format!("spBv1.0/{}/+/{}/+", s.group_id, s.edge_node_id));
        }
        subs
    }

    fn malformed(&mut self, io: &Io, topic: &str, why: &str) {
        io.sink.health().update(|s| s.malformed += 1);
        let now = now_ms();
        if now - self.last_malformed_log >= MALFORMED_LOG_EVERY_MS {
            tracing::warn!(device = %self.dev.name, topic, error = why, suppressed = self.malformed_unlogged, "malformed MQTT payload ignored (logged at most every 10 s)");
            self.last_malformed_log = now;
            self.malformed_unlogged = 0;
        } else {
            self.malformed_unlogged += 1;
        }
    }

    /// One message from the broker: skipped and counted when over
    /// `max_payload_bytes`, else routed; then acknowledged (QoS 1).
    async fn inbound(
        &mut self,
        io: &mut Io,
        client: &AsyncClient,
        m: Inbound,
    ) -> Result<(), Ended> {
        let Inbound::Publish {
            topic,
            payload,
            size,
            retained,
            ack,
        } = m
        else {
            return Ok(());
        };
        let r = if size > self.dev.max_payload_bytes as usize {
            self.malformed(
                io,
                &topic,
                &format!(
                    "{size} bytes, over max_payload_bytes ({}); skipped",
                    self.dev.max_payload_bytes
                ),
            );
            Ok(())
        } else {
            self.publish(io, client, &topic, &payload, retained).await
        };
        if let Some(p) = ack {
            // waits for room in the client's queue, which the event loop drains
            if client.ack(&p).await.is_err() {
                return Err(Ended::Lost("the event loop ended".into()));
            }
        }
        r
    }

    /// A value for point `i`: emitted, and checked against a pending write.
    async fn value(&mut self, io: &mut Io, i: usize, raw: f64, ts: i64) -> Result<(), Ended> {
        io.good(i, raw, Quality::Good, ts).await?;
        let canonical = io.points.specs()[i].conv.to_canonical(raw);
        if let Some(k) = self.pending.iter().position(|w| w.point == i) {
            let w = &mut self.pending[k];
            w.seen = Some(canonical);
            if same(canonical, w.wrote) {
                let w = self.pending.swap_remove(k);
                let _ = w.reply.send(WriteOutcome::Applied {
                    readback: canonical,
                });
            }
        }
        Ok(())
    }

    async fn publish(
        &mut self,
        io: &mut Io,
        client: &AsyncClient,
        topic: &str,
        payload: &[u8],
        retained: bool,
    ) -> Result<(), Ended> {
        let now = now_ms();
        if topic.starts_with("spBv1.0/") {
            return self.sparkplug(io, client, topic, payload, now).await;
        }
        let mut hit = false;
        for k in 0..self.by_filter.len() {
            if !topic::matches(&self.by_filter[k].0, topic) {
                continue;
            }
            hit = true;
            let points = self.by_filter[k].1.clone();
            for i in points {
                match decode(&self.dev.points[i], payload, now) {
                    // a retained message without its own time is the broker's
                    // last copy, of unknown age (issue 29, item 13): uncertain,
                    // stamped when received, and said so
                    Ok((raw, ts)) if retained && ts == now => {
                        io.good(i, raw, Quality::Uncertain, ts).await?;
                        io.error(&format!(
                            "{topic}: a retained value without a time of its own: uncertain, its age unknown"
                        ));
                    }
                    Ok((raw, ts)) => self.value(io, i, raw, ts).await?,
                    Err(why) => {
                        self.malformed(io, topic, &why);
                        io.bad(i, &format!("malformed payload on {topic}: {why}"), now)
                            .await?;
                    }
                }
            }
        }
        if !hit {
            tracing::debug!(device = %self.dev.name, topic, "a publish no point maps");
        }
        Ok(())
    }

    async fn sparkplug(
        &mut self,
        io: &mut Io,
        client: &AsyncClient,
        topic: &str,
        payload: &[u8],
        now: i64,
    ) -> Result<(), Ended> {
        let Some(s) = self.dev.sparkplug.clone() else {
            return Ok(());
        };
        let (ty, device) = match SparkplugTopic::parse(topic) {
            Ok(SparkplugTopic::Node { group, edge, ty })
                if group.as_str() == s.group_id && edge.as_str() == s.edge_node_id =>
            {
                (ty, None)
            }
            Ok(SparkplugTopic::Device {
                group,
                edge,
                device,
                ty,
            }) if group.as_str() == s.group_id && edge.as_str() == s.edge_node_id => {
                (ty, Some(device.as_str().to_string()))
            }
            Ok(_) => return Ok(()),
            Err(e) => {
                self.malformed(io, topic, &format!("not a Sparkplug topic: {e}"));
                return Ok(());
            }
        };
        for out in self.node.handle(ty, device.as_deref(), payload, now) {
            match out {
                sparkplug::Out::Value { metric, value, ts } => {
                    for i in self.by_metric.get(&metric).cloned().unwrap_or_default() {
                        self.value(io, i, value, ts).await?;
                    }
                }
                sparkplug::Out::NotNumeric { metric, why } => {
                    for i in self.by_metric.get(&metric).cloned().unwrap_or_default() {
                        io.bad(i, &format!("metric {metric}: {why}"), now).await?;
                    }
                }
                sparkplug::Out::Offline(why) => {
                    tracing::warn!(device = %self.dev.name, why, "sparkplug source offline");
                    for i in self
                        .by_metric
                        .values()
                        .flatten()
                        .copied()
                        .collect::<Vec<_>>()
                    {
                        io.bad(i, &why, now).await?;
                    }
                }
                sparkplug::Out::Gap { expected, got } => {
                    let lost = sparkplug::missing(expected, got);
                    tracing::warn!(device = %self.dev.name, expected, got, lost, "sparkplug seq gap: messages lost; asking for a rebirth");
                    io.sink
                        .gap(GapReason::SourceSequence, lost, now, now)
                        .await?;
                }
                sparkplug::Out::Rebirth(why) => self.rebirth(client, &s, &why),
                sparkplug::Out::Malformed(why) => self.malformed(io, topic, &why),
            }
        }
        Ok(())
    }

    fn rebirth(&self, client: &AsyncClient, s: &config::Sparkplug, why: &str) {
        let topic = format!("spBv1.0/{}/NCMD/{}", s.group_id, s.edge_node_id);
        tracing::info!(device = %self.dev.name, %topic, why, "asking the sparkplug edge node for a rebirth");
        if let Err(e) = client.try_publish(
            topic,
            QoS::AtMostOnce,
            false,
            sparkplug::rebirth_payload(now_ms()),
        ) {
            tracing::warn!(device = %self.dev.name, error = %e, "rebirth request not sent");
        }
    }

    /// Publishes a write; its answer comes with the read-back (or the deadline).
    fn write(&mut self, io: &Io, client: &AsyncClient, req: WriteRequest) {
        let Some(i) = io.points.writable(&req.asset_id, &req.field) else {
            let _ = req.reply.send(WriteOutcome::UnknownPoint);
            return;
        };
        let p = &self.dev.points[i];
        let raw = io.points.specs()[i].conv.to_raw(req.value);
        let (topic, payload) = match (&p.command_topic, &p.metric, &self.dev.sparkplug) {
            (Some(t), _, _) => (t.clone(), format_number(raw).into_bytes()),
            (None, Some(m), Some(s)) => {
                let Some(dt) = self.node.datatype(m) else {
                    let _ = req.reply.send(WriteOutcome::Unreachable(format!(
                        "metric {m} not born yet (no NBIRTH/DBIRTH seen): its type is unknown"
                    )));
                    return;
                };
                let value = match sparkplug::value_of(dt, raw) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = req.reply.send(WriteOutcome::NotRepresentable(e));
                        return;
                    }
                };
                let topic = match &s.device_id {
                    Some(d) => format!("spBv1.0/{}/DCMD/{}/{d}", s.group_id, s.edge_node_id),
                    None => format!("spBv1.0/{}/NCMD/{}", s.group_id, s.edge_node_id),
                };
                (topic, sparkplug::command_payload(m, value, now_ms()))
            }
            _ => {
                let _ = req.reply.send(WriteOutcome::UnknownPoint);
                return;
            }
        };
        // a newer write of the same point supersedes the one waiting
        if let Some(k) = self.pending.iter().position(|w| w.point == i) {
            let old = self.pending.swap_remove(k);
            let _ = old.reply.send(WriteOutcome::Failed(
                "superseded by a newer write before its read-back".into(),
            ));
        }
        if let Err(e) = client.try_publish(topic, self.qos(), false, payload) {
            let _ = req
                .reply
                .send(WriteOutcome::Unreachable(format!("publish: {e}")));
            return;
        }
        self.pending.push(PendingWrite {
            point: i,
            wrote: req.value,
            seen: None,
            deadline: tokio::time::Instant::now() + Duration::from_millis(self.dev.timeout_ms),
            reply: req.reply,
        });
    }

    /// Answers the writes whose read-back did not come in time.
    fn expire_writes(&mut self) {
        let now = tokio::time::Instant::now();
        let ms = self.dev.timeout_ms;
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.pending = keep;
        for w in due {
            let _ = w.reply.send(match w.seen {
                Some(read) => WriteOutcome::ReadbackMismatch {
                    wrote: w.wrote,
                    read,
                },
                None => WriteOutcome::Unreachable(format!(
                    "no read-back: the device published no value within {ms} ms"
                )),
            });
        }
    }

    fn fail_writes(&mut self, why: &str) {
        for w in self.pending.drain(..) {
            let _ = w.reply.send(WriteOutcome::Unreachable(why.to_string()));
        }
    }
}

/// A connected, subscribed broker session.
pub(crate) struct Conn {
    pub(crate) client: AsyncClient,
    pub(crate) el: EventLoop,
    /// Publishes received before the last SubAck.
    early: Vec<Inbound>,
}

impl Conn {
    /// The messages received before the last SubAck: (topic, payload), an
    /// oversized one empty (the probe shows them).
    pub(crate) fn early(&self) -> Vec<(&str, &[u8])> {
        self.early
            .iter()
            .filter_map(|m| match m {
                Inbound::Publish { topic, payload, .. } => {
                    Some((topic.as_str(), payload.as_slice()))
                }
                Inbound::Shed { .. } => None,
            })
            .collect()
    }
}

impl Device for Broker {
    type Conn = Conn;

    fn name(&self) -> &str {
        &self.dev.name
    }

    /// Connects and subscribes; ready when the broker has acknowledged
    /// every subscription (a refused one is an error: check the ACL).
    /// Publishes that arrive meanwhile are kept for the session.
    async fn connect(&mut self) -> Result<Conn, runner::ConnectError> {
        use adapter_api::probe::Failure;
        let device = |m: String| runner::ConnectError::new(Failure::Device, m);
        self.state_ts = now_ms();
        let opts = self
            .options()
            .map_err(|e| runner::ConnectError::new(Failure::Usage, e))?;
        let state = self.host_state();
        let subs = self.subscriptions();
        // one SUBSCRIBE per SUBSCRIBE_CHUNK filters; each answered by one SubAck
        let chunks: Vec<Vec<String>> = subs
            .chunks(SUBSCRIBE_CHUNK)
            .map(<[String]>::to_vec)
            .collect();
        // room for the acks of a full inbox (the pump acknowledges as it
        // enqueues) beside the subscriptions and writes
        let (client, mut el) = AsyncClient::new(opts, chunks.len() + INBOX + 256);
        let qos = self.qos();
        let max_payload = self.dev.max_payload_bytes as usize;
        let mut early = Vec::new();
        runner::connecting(self.dev.timeout_ms, "connect and subscribe", async {
            let mut acked = 0;
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some((topic, online, _)) = &state {
                            client
                                .try_publish(topic.clone(), QoS::AtLeastOnce, true, online.clone())
                                .map_err(|e| {
                                    device(format!("publishing the primary host STATE: {e}"))
                                })?;
                        }
                        for c in &chunks {
                            client
                                .try_subscribe_many(
                                    c.iter()
                                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos)),
                                )
                                .map_err(|e| device(format!("subscribe: {e}")))?;
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::SubAck(a))) => {
                        if let Some(k) = a
                            .return_codes
                            .iter()
                            .position(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        {
                            return Err(runner::ConnectError::new(
                                Failure::Trust,
                                format!(
                                    "the broker refused subscription {} (check its ACL)",
                                    chunks
                                        .get(acked)
                                        .and_then(|c| c.get(k))
                                        .map(String::as_str)
                                        .unwrap_or("?")
                                ),
                            ));
                        }
                        acked += 1;
                        if acked == chunks.len() {
                            return Ok(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        // kept for the session (acknowledged there); past
                        // INBOX a QoS 0 one is dropped, a QoS 1 one is
                        // redelivered by the broker after a reconnect
                        if early.len() < INBOX {
                            early.push(inbound(p, max_payload, true));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(connect_failure(&e)),
                }
            }
        })
        .await??;
        tracing::info!(device = %self.dev.name, url = %self.dev.url, subscriptions = subs.len(), "mqtt connected and subscribed");
        Ok(Conn { client, el, early })
    }

    async fn session(&mut self, conn: Conn, io: &mut Io) -> Ended {
        let Conn { client, el, early } = conn;
        let (tx, mut rx) = tokio::sync::mpsc::channel(INBOX);
        let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<String>();
        let max_payload = self.dev.max_payload_bytes as usize;
        let acker = client.clone();
        // the event loop never waits on the session (pump.rs)
        let pump = pump::spawn(el, tx, lost_tx, max_payload, acker);
        let _abort = AbortOnDrop(pump);
        self.node.reset();
        if let Some(s) = self.dev.sparkplug.clone()
            && let Some(sparkplug::Out::Rebirth(why)) =
                self.node.ask_rebirth("a new MQTT session", now_ms())
        {
            self.rebirth(&client, &s, &why);
        }
        for m in early {
            if let Err(e) = self.inbound(io, &client, m).await {
                return e;
            }
        }
        let stopped = io.stopped();
        tokio::pin!(stopped);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let end = loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m @ Inbound::Publish { .. }) => {
                        if let Err(e) = self.inbound(io, &client, m).await {
                            break e;
                        }
                    }
                    Some(Inbound::Shed { count, from_ms, to_ms }) => {
                        tracing::warn!(device = %self.dev.name, count, "MQTT publishes shed: the agent could not keep up");
                        if io.sink.gap(GapReason::Shed, count, from_ms, to_ms).await.is_err() {
                            break Ended::SinkClosed;
                        }
                    }
                    None => break Ended::Lost("event loop ended".into()),
                },
                e = &mut lost => break Ended::Lost(e.unwrap_or_else(|_| "event loop ended".into())),
                req = io.next_write() => self.write(io, &client, req),
                _ = tick.tick() => self.expire_writes(),
                _ = &mut stopped => {
                    // a clean stop sends no will: say offline first
                    if let Some((topic, _, offline)) = self.host_state() {
                        let _ = client.try_publish(topic, QoS::AtLeastOnce, true, offline);
                        // (the event loop task sends it)
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let _ = client.try_disconnect();
                    break Ended::Stopped;
                }
            }
        };
        self.fail_writes(&match &end {
            Ended::Lost(e) => format!("broker link lost: {e}"),
            _ => "adapter stopping".into(),
        });
        end
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}
