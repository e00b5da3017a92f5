//! The socket shell of the MQTT adapter: one broker session on rumqttc
//! (connect and subscribe, the event loop task that sheds into the inbox,
//! publishes routed to topic and Sparkplug points, writes and their
//! read-backs, TLS).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::runner::{self, Device, Ended, Io};
use adapter_api::{GapReason, Quality, WriteOutcome, WriteRequest, now_ms};
use rumqttc::{AsyncClient, EventLoop, MqttOptions, Packet, QoS, Transport};
use sparkplug_b::SparkplugTopic;

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
        let max = self.dev.max_payload_bytes as usize + 1024;
        o.set_max_packet_size(max, max);
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
                    tracing::warn!(device = %self.dev.name, expected, got, "sparkplug seq gap: messages lost; asking for a rebirth");
                    io.sink.gap(GapReason::SourceSequence, 0, now, now).await?;
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
    pub(crate) early: Vec<(String, Vec<u8>)>,
}

/// What the event loop task hands the session.
enum Inbound {
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// Publishes shed because the inbox was full since the last message.
    Shed {
        count: u64,
        from_ms: i64,
        to_ms: i64,
    },
}

impl Device for Broker {
    type Conn = Conn;

    fn name(&self) -> &str {
        &self.dev.name
    }

    /// Connects and subscribes; ready when the broker has acknowledged
    /// every subscription (a refused one is an error: check the ACL).
    /// Publishes that arrive meanwhile are kept for the session.
    async fn connect(&mut self) -> Result<Conn, String> {
        let opts = self.options()?;
        let subs = self.subscriptions();
        // one SUBSCRIBE per SUBSCRIBE_CHUNK filters; each answered by one SubAck
        let chunks: Vec<Vec<String>> = subs
            .chunks(SUBSCRIBE_CHUNK)
            .map(<[String]>::to_vec)
            .collect();
        let (client, mut el) = AsyncClient::new(opts, chunks.len() + 64);
        let qos = self.qos();
        let mut early = Vec::new();
        runner::within(self.dev.timeout_ms, "connect and subscribe", async {
            let mut acked = 0;
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                        for c in &chunks {
                            client
                                .try_subscribe_many(
                                    c.iter()
                                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos)),
                                )
                                .map_err(|e| format!("subscribe: {e}"))?;
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::SubAck(a))) => {
                        if let Some(k) = a
                            .return_codes
                            .iter()
                            .position(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        {
                            return Err(format!(
                                "the broker refused subscription {} (check its ACL)",
                                chunks
                                    .get(acked)
                                    .and_then(|c| c.get(k))
                                    .map(String::as_str)
                                    .unwrap_or("?")
                            ));
                        }
                        acked += 1;
                        if acked == chunks.len() {
                            return Ok(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) if early.len() < INBOX => {
                        early.push((p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(connect_error(&e)),
                }
            }
        })
        .await??;
        tracing::info!(device = %self.dev.name, url = %self.dev.url, subscriptions = subs.len(), "mqtt connected and subscribed");
        Ok(Conn { client, el, early })
    }

    async fn session(&mut self, conn: Conn, io: &mut Io) -> Ended {
        let Conn {
            client,
            mut el,
            early,
        } = conn;
        let (tx, mut rx) = tokio::sync::mpsc::channel(INBOX);
        let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<String>();
        // the event loop never waits on the session: it sheds instead
        let pump = tokio::spawn(async move {
            let mut run: Option<(u64, i64, i64)> = None;
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        let now = now_ms();
                        if let Some((count, from_ms, to_ms)) = run
                            && tx
                                .try_send(Inbound::Shed {
                                    count,
                                    from_ms,
                                    to_ms,
                                })
                                .is_ok()
                        {
                            run = None;
                        }
                        let msg = Inbound::Publish {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                        };
                        if run.is_some() || tx.try_send(msg).is_err() {
                            if tx.is_closed() {
                                return;
                            }
                            let r = run.get_or_insert((0, now, now));
                            r.0 += 1;
                            r.2 = now;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = lost_tx.send(connect_error(&e));
                        return;
                    }
                }
            }
        });
        let _abort = AbortOnDrop(pump);
        self.node.reset();
        if let Some(s) = self.dev.sparkplug.clone()
            && let Some(sparkplug::Out::Rebirth(why)) =
                self.node.ask_rebirth("a new MQTT session", now_ms())
        {
            self.rebirth(&client, &s, &why);
        }
        for (topic, payload) in early {
            if let Err(e) = self.publish(io, &client, &topic, &payload).await {
                return e;
            }
        }
        let stopped = io.stopped();
        tokio::pin!(stopped);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let end = loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Inbound::Publish { topic, payload }) => {
                        if let Err(e) = self.publish(io, &client, &topic, &payload).await {
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

/// A connection error in an installer's words.
fn connect_error(e: &rumqttc::ConnectionError) -> String {
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection: {code:?} (check username, password, client id and ACL)"
        ),
        rumqttc::ConnectionError::Tls(t) => {
            format!("TLS: {t} (check tls.ca and the broker's certificate name)")
        }
        other => other.to_string(),
    }
}

/// Loads the TLS client config: the CA roots, and a client certificate.
fn tls_config(t: &config::MqttTls) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut roots = rustls::RootCertStore::empty();
    let ca = read(&t.ca)?;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        let c = c.map_err(|e| format!("tls.ca {}: {e}", t.ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("tls.ca {}: {e}", t.ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "tls.ca {}: no certificate in the file",
            t.ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&read(c)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.cert {}: {e}", c.display()))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read(k)?)
                .map_err(|e| format!("tls.key {}: {e}", k.display()))?;
            b.with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls.cert/key: {e}"))
        }
        _ => Ok(b.with_no_client_auth()),
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
