//! The socket shell of the OPC UA adapter: one session on async-opcua
//! (client and trust store, the event loop task, the namespace table, the
//! subscription and its items or the polling reads, writes with
//! read-back). The rules it applies are in `items.rs`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use adapter_api::runner::{self, Device, Ended, Io};
use adapter_api::{GapReason, Quality, WriteOutcome, WriteRequest, now_ms};
use futures::StreamExt;
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, Session, SessionPollResult};
use opcua::types::{
    AttributeId, DataValue, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn, UserTokenPolicy,
    Variant, WriteValue,
};

use crate::config::{Auth, Mode, Security};
use crate::items::{self, Items};
use crate::{NOTICES, OpcUaDevice};

/// A subscription silent this long is checked with a read of the
/// server's clock (a frozen server or a cut link answers nothing).
pub(crate) const LIVENESS_AFTER: Duration = Duration::from_secs(5);

pub(crate) struct Server {
    pub(crate) dev: OpcUaDevice,
    pub(crate) items: Items,
}

/// A data change from the event loop.
struct Notice {
    handle: u32,
    value: DataValue,
}

/// A live session: the session, its event loop task, and its values.
pub(crate) struct Live {
    session: Arc<Session>,
    pump: tokio::task::JoinHandle<()>,
    lost: tokio::sync::oneshot::Receiver<String>,
}

impl Live {
    /// The session (for the probe).
    pub(crate) fn session(&self) -> Arc<Session> {
        self.session.clone()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

fn status_text(s: StatusCode) -> String {
    format!("{s}")
}

impl Server {
    fn ms(&self) -> Duration {
        Duration::from_millis(self.dev.timeout_ms)
    }

    fn identity(&self) -> Result<IdentityToken, String> {
        Ok(match &self.dev.auth {
            Auth::Anonymous => IdentityToken::Anonymous,
            Auth::UserPassword {
                user,
                password_file,
            } => {
                let pass = std::fs::read_to_string(password_file)
                    .map_err(|e| format!("auth password_file {}: {e}", password_file.display()))?;
                IdentityToken::new_user_name(
                    user.clone(),
                    pass.lines().next().unwrap_or_default().to_string(),
                )
            }
            Auth::Certificate { cert, key } => {
                let der = std::fs::read(cert)
                    .map_err(|e| format!("auth cert {}: {e}", cert.display()))?;
                let x509 = opcua::crypto::X509::from_der(&der)
                    .or_else(|_| opcua::crypto::X509::from_pem(&der))
                    .map_err(|e| format!("auth cert {}: {e:?}", cert.display()))?;
                let pk = opcua::crypto::PrivateKey::read_pem_file(Path::new(key))
                    .map_err(|e| format!("auth key {}: {e:?}", key.display()))?;
                IdentityToken::X509(Box::new(x509), Box::new(pk))
            }
        })
    }

    /// The server's namespace table (Server.NamespaceArray, i=2255).
    pub(crate) async fn namespaces(&self, session: &Session) -> Result<Vec<String>, String> {
        let read = ReadValueId {
            node_id: NodeId::new(0, 2255u32),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        };
        let v = runner::within(
            self.dev.timeout_ms,
            "reading the namespace array",
            session.read(&[read], TimestampsToReturn::Neither, 0.0),
        )
        .await?
        .map_err(|e| format!("reading the namespace array: {e}"))?;
        let Some(Variant::Array(a)) = v.into_iter().next().and_then(|d| d.value) else {
            return Err("the server's namespace array is not an array".into());
        };
        Ok(a.values
            .into_iter()
            .map(|v| match v {
                Variant::String(s) => s.as_ref().to_string(),
                other => format!("{other:?}"),
            })
            .collect())
    }

    /// Reads the NodeClass of every monitored item's node: one the server
    /// no longer has is marked bad and created again until it is back.
    async fn audit(
        &mut self,
        session: &Session,
        namespaces: &[String],
        io: &mut Io,
    ) -> Result<(), Ended> {
        let mut ids = Vec::new();
        let mut reads = Vec::new();
        for (i, p) in self.dev.points.iter().enumerate() {
            if self.items.state(i) != Some(&items::ItemState::Monitored) {
                continue;
            }
            let Ok(node) = items::parse_node(&p.node)
                .and_then(|n| n.resolve(namespaces))
                .and_then(|s| s.parse::<NodeId>().map_err(|_| s))
            else {
                continue;
            };
            ids.push(i);
            reads.push(ReadValueId {
                node_id: node,
                attribute_id: AttributeId::NodeClass as u32,
                ..Default::default()
            });
        }
        for (chunk_ids, chunk) in ids.chunks(1000).zip(reads.chunks(1000)) {
            let values = runner::within(
                self.dev.timeout_ms,
                "checking the monitored nodes",
                session.read(chunk, TimestampsToReturn::Neither, 0.0),
            )
            .await
            .map_err(Ended::Lost)?
            .map_err(|e| Ended::Lost(format!("checking the monitored nodes: {e}")))?;
            for (&i, v) in chunk_ids.iter().zip(values) {
                let status = v.status.unwrap_or(StatusCode::Good);
                if matches!(status.bits() & 0xFFFF_0000, 0x8034_0000 | 0x8033_0000) {
                    self.value(io, i, v).await?;
                }
            }
        }
        Ok(())
    }

    /// Reads the server's clock (`Server/ServerStatus/CurrentTime`,
    /// i=2258): `Err` when it does not answer within the timeout.
    async fn alive(&self, session: &Session) -> Result<(), String> {
        let read = ReadValueId {
            node_id: NodeId::new(0, 2258u32),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        };
        let quiet = LIVENESS_AFTER.as_secs();
        runner::within(
            self.dev.timeout_ms,
            &format!("the server's answer to a read of its clock (no data for {quiet} s): frozen or cut off;"),
            session.read(&[read], TimestampsToReturn::Neither, 0.0),
        )
        .await?
        .map(|_| ())
        .map_err(|e| format!("reading the server's clock after {quiet} s without data: {e}"))
    }

    /// Creates the items that are due; reports the refused ones bad.
    async fn create_due(
        &mut self,
        session: &Session,
        sub: u32,
        namespaces: &[String],
        io: &mut Io,
    ) -> Result<(), Ended> {
        let now = now_ms();
        let (create, unresolved) = self.items.due(namespaces, now);
        for (i, why) in unresolved {
            io.bad(i, &why, now).await?;
        }
        if create.is_empty() {
            return Ok(());
        }
        // items made again (their node was gone) lose their old server item
        let stale: Vec<u32> = create
            .iter()
            .filter_map(|(i, _, _)| self.items.take_id(*i))
            .collect();
        if !stale.is_empty() {
            let _ = runner::within(
                self.dev.timeout_ms,
                "deleting monitored items",
                session.delete_monitored_items(sub, &stale),
            )
            .await;
        }
        let mut ok_ids = Vec::new();
        let mut requests = Vec::new();
        for (i, handle, id) in create {
            match id.parse::<NodeId>() {
                Ok(node_id) => {
                    ok_ids.push(i);
                    requests.push(MonitoredItemCreateRequest {
                        item_to_monitor: ReadValueId {
                            node_id,
                            attribute_id: AttributeId::Value as u32,
                            ..Default::default()
                        },
                        monitoring_mode: MonitoringMode::Reporting,
                        requested_parameters: MonitoringParameters {
                            client_handle: handle,
                            sampling_interval: self.dev.sampling_interval_ms as f64,
                            queue_size: self.dev.queue_size as u32,
                            discard_oldest: true,
                            ..Default::default()
                        },
                    });
                }
                Err(_) => {
                    let why = format!("node id {id} does not parse");
                    self.items.created(i, Err(why.clone()), now);
                    io.bad(i, &why, now).await?;
                }
            }
        }
        // at most 1000 items per request (servers limit MaxMonitoredItemsPerCall)
        for (chunk_ids, chunk) in ok_ids.chunks(1000).zip(requests.chunks(1000)) {
            let res = runner::within(
                self.dev.timeout_ms,
                "creating monitored items",
                session.create_monitored_items(sub, TimestampsToReturn::Both, chunk.to_vec()),
            )
            .await
            .map_err(Ended::Lost)?
            .map_err(|e| Ended::Lost(format!("creating monitored items: {e}")))?;
            for (&i, r) in chunk_ids.iter().zip(res.iter()) {
                let code = r.result.status_code;
                if code.is_good() {
                    self.items.created(i, Ok(()), now);
                    self.items.set_id(i, r.result.monitored_item_id);
                } else {
                    let why = format!(
                        "{} (node {}; tried again every {} s)",
                        status_text(code),
                        self.dev.points[i].node,
                        self.dev.retry_failed_items_ms / 1000
                    );
                    tracing::warn!(device = %self.dev.name, node = %self.dev.points[i].node, status = %code, "the server refused a monitored item");
                    self.items.created(i, Err(why.clone()), now);
                    io.error(&why);
                    io.bad(i, &why, now).await?;
                }
            }
        }
        Ok(())
    }

    /// One value of point `i` from the server.
    async fn value(&mut self, io: &mut Io, i: usize, v: DataValue) -> Result<(), Ended> {
        let now = now_ms();
        let status = v.status.unwrap_or(StatusCode::Good);
        let ts = v
            .source_timestamp
            .or(v.server_timestamp)
            .map(|t| t.as_chrono().timestamp_millis())
            .filter(|t| *t > 0)
            .unwrap_or(now);
        if items::overflow(status.bits()) {
            tracing::warn!(device = %self.dev.name, node = %self.dev.points[i].node, "the server's queue overflowed: values were lost");
            io.sink.gap(GapReason::SourceOverflow, 0, ts, ts).await?;
        }
        let quality = items::quality(status.bits());
        if quality == Quality::Bad {
            // the code without its info bits: BadNodeIdUnknown, BadNodeIdInvalid
            if matches!(status.bits() & 0xFFFF_0000, 0x8034_0000 | 0x8033_0000)
                && self.items.lost(i, &status_text(status), now)
            {
                tracing::warn!(device = %self.dev.name, node = %self.dev.points[i].node, %status,
                    retry_s = self.dev.retry_failed_items_ms / 1000,
                    "the server says a monitored node is gone; it is asked for again until it is back");
            }
            return Ok(io.bad(i, &status_text(status), ts).await?);
        }
        match v.value.as_ref().and_then(number) {
            Some(x) => Ok(io.good(i, x, quality, ts).await?),
            None => Ok(io.bad(i, "the value is empty or not a number", ts).await?),
        }
    }

    /// Polls every resolved item once (polling mode).
    async fn poll(
        &mut self,
        session: &Session,
        namespaces: &[String],
        io: &mut Io,
    ) -> Result<(), Ended> {
        let mut ids = Vec::new();
        let mut reads = Vec::new();
        for (i, p) in self.dev.points.iter().enumerate() {
            let node = items::parse_node(&p.node).map_err(Ended::Lost)?;
            match node.resolve(namespaces).and_then(|s| {
                s.parse::<NodeId>()
                    .map_err(|_| format!("node id {s} does not parse"))
            }) {
                Ok(n) => {
                    ids.push(i);
                    reads.push(ReadValueId {
                        node_id: n,
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    });
                }
                Err(why) => io.bad(i, &why, now_ms()).await?,
            }
        }
        for (chunk_ids, chunk) in ids.chunks(1000).zip(reads.chunks(1000)) {
            let values = runner::within(
                self.dev.timeout_ms,
                "read",
                session.read(chunk, TimestampsToReturn::Both, 0.0),
            )
            .await
            .map_err(Ended::Lost)?
            .map_err(|e| Ended::Lost(format!("read: {e}")))?;
            for (&i, v) in chunk_ids.iter().zip(values) {
                self.value(io, i, v).await?;
            }
        }
        Ok(())
    }

    /// A node write with read-back. `Err` when the link is unusable.
    async fn write(
        &self,
        session: &Session,
        namespaces: &[String],
        io: &Io,
        req: WriteRequest,
    ) -> Result<(), String> {
        let Some(i) = io.points.writable(&req.asset_id, &req.field) else {
            let _ = req.reply.send(WriteOutcome::UnknownPoint);
            return Ok(());
        };
        let node = match items::parse_node(&self.dev.points[i].node)
            .and_then(|n| n.resolve(namespaces))
            .and_then(|s| {
                s.parse::<NodeId>()
                    .map_err(|_| format!("node id {s} does not parse"))
            }) {
            Ok(n) => n,
            Err(e) => {
                let _ = req.reply.send(WriteOutcome::Failed(e));
                return Ok(());
            }
        };
        let conv = io.points.specs()[i].conv;
        let raw = conv.to_raw(req.value);
        let read = ReadValueId {
            node_id: node.clone(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        };
        let link = |e: String, reply: tokio::sync::oneshot::Sender<WriteOutcome>| {
            let _ = reply.send(WriteOutcome::Unreachable(e.clone()));
            Err(e)
        };
        // the variable's current type decides the written type (a Double
        // written to a Float variable is BadTypeMismatch on most servers)
        let current = match runner::within(
            self.dev.timeout_ms,
            "read before write",
            session.read(
                std::slice::from_ref(&read),
                TimestampsToReturn::Neither,
                0.0,
            ),
        )
        .await
        {
            Err(e) => return link(e, req.reply),
            Ok(Err(e)) => return link(format!("read before write: {e}"), req.reply),
            Ok(Ok(v)) => v.into_iter().next().and_then(|d| d.value),
        };
        let value = match typed(current.as_ref(), raw) {
            Ok(v) => v,
            Err(e) => {
                let _ = req.reply.send(WriteOutcome::NotRepresentable(e));
                return Ok(());
            }
        };
        let w = WriteValue {
            node_id: node,
            attribute_id: AttributeId::Value as u32,
            value: DataValue {
                value: Some(value),
                ..Default::default()
            },
            ..Default::default()
        };
        match runner::within(self.dev.timeout_ms, "write", session.write(&[w])).await {
            Err(e) => return link(e, req.reply),
            Ok(Err(e)) => return link(format!("write: {e}"), req.reply),
            Ok(Ok(codes)) => {
                let code = codes
                    .first()
                    .copied()
                    .unwrap_or(StatusCode::BadUnexpectedError);
                if !code.is_good() {
                    let _ = req.reply.send(WriteOutcome::Failed(format!(
                        "the server refused the write: {code}"
                    )));
                    return Ok(());
                }
            }
        }
        let back = match runner::within(
            self.dev.timeout_ms,
            "read-back",
            session.read(&[read], TimestampsToReturn::Neither, 0.0),
        )
        .await
        {
            Err(e) => return link(e, req.reply),
            Ok(Err(e)) => return link(format!("read-back: {e}"), req.reply),
            Ok(Ok(v)) => v
                .into_iter()
                .next()
                .and_then(|d| d.value)
                .as_ref()
                .and_then(number),
        };
        let read_value = back.map(|r| conv.to_canonical(r)).unwrap_or(f64::NAN);
        let same = (read_value - req.value).abs() <= 1e-6 * req.value.abs().max(1.0)
            // a Float variable holds the nearest f32
            || (read_value - req.value).abs() <= f64::from(f32::EPSILON) * req.value.abs().max(1.0) * 4.0;
        let _ = req.reply.send(if same {
            WriteOutcome::Applied {
                readback: read_value,
            }
        } else {
            WriteOutcome::ReadbackMismatch {
                wrote: req.value,
                read: read_value,
            }
        });
        Ok(())
    }
}

/// A numeric or boolean variant as f64.
fn number(v: &Variant) -> Option<f64> {
    match v {
        Variant::Boolean(b) => Some(f64::from(u8::from(*b))),
        other => other.as_f64().filter(|x| x.is_finite()),
    }
}

/// `raw` as a variant of the same type as `current` (Double when unknown).
pub(crate) fn typed(current: Option<&Variant>, raw: f64) -> Result<Variant, String> {
    let int = |lo: f64, hi: f64| {
        if raw.fract() == 0.0 && (lo..=hi).contains(&raw) {
            Ok(raw)
        } else {
            Err(format!(
                "{raw} does not fit the node's integer type (range {lo} to {hi})"
            ))
        }
    };
    Ok(match current {
        Some(Variant::Boolean(_)) if raw == 0.0 || raw == 1.0 => Variant::Boolean(raw == 1.0),
        Some(Variant::Boolean(_)) => return Err(format!("{raw} is not a boolean (0 or 1)")),
        Some(Variant::SByte(_)) => Variant::SByte(int(-128.0, 127.0)? as i8),
        Some(Variant::Byte(_)) => Variant::Byte(int(0.0, 255.0)? as u8),
        Some(Variant::Int16(_)) => Variant::Int16(int(-32768.0, 32767.0)? as i16),
        Some(Variant::UInt16(_)) => Variant::UInt16(int(0.0, 65535.0)? as u16),
        Some(Variant::Int32(_)) => Variant::Int32(int(-2_147_483_648.0, 2_147_483_647.0)? as i32),
        Some(Variant::UInt32(_)) => Variant::UInt32(int(0.0, 4_294_967_295.0)? as u32),
        Some(Variant::Int64(_)) => Variant::Int64(int(-9.0e18, 9.0e18)? as i64),
        Some(Variant::UInt64(_)) => Variant::UInt64(int(0.0, 1.8e19)? as u64),
        Some(Variant::Float(_)) if raw.is_finite() && raw.abs() <= f64::from(f32::MAX) => {
            Variant::Float(raw as f32)
        }
        Some(Variant::Float(_)) => return Err(format!("{raw} does not fit a Float")),
        _ if raw.is_finite() => Variant::Double(raw),
        _ => return Err(format!("{raw} is not a finite number")),
    })
}

impl Device for Server {
    type Conn = Live;

    fn name(&self) -> &str {
        &self.dev.name
    }

    async fn connect(&mut self) -> Result<Live, String> {
        let (policy, mode) = match self.dev.security {
            Security::None => ("None", MessageSecurityMode::None),
            Security::Sign => ("Basic256Sha256", MessageSecurityMode::Sign),
            Security::SignAndEncrypt => ("Basic256Sha256", MessageSecurityMode::SignAndEncrypt),
        };
        // devices sharing a pki_dir must not create the agent's key pair
        // at the same moment (one would overwrite the other's half)
        static KEYPAIR: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = KEYPAIR.lock().unwrap_or_else(|p| p.into_inner());
        let uri = app_uri();
        own_cert_names(&self.dev.pki_dir, &uri)?;
        let client = ClientBuilder::new()
            .application_name("tankwatch edge-agent")
            .application_uri(uri)
            .product_uri("urn:tankwatch:edge-agent")
            .pki_dir(self.dev.pki_dir.clone())
            .create_sample_keypair(true)
            .trust_server_certs(self.dev.trust_on_first_use)
            .verify_server_certs(true)
            .session_retry_limit(0)
            .request_timeout(self.ms())
            .session_timeout(60_000)
            .client();
        drop(guard);
        let mut client =
            client.map_err(|e| format!("OPC UA client configuration: {}", e.join("; ")))?;
        let endpoint: opcua::types::EndpointDescription = (
            self.dev.endpoint.as_str(),
            policy,
            mode,
            UserTokenPolicy::anonymous(),
        )
            .into();
        let identity = self.identity()?;
        let (session, event_loop) = runner::within(
            self.dev.timeout_ms,
            "getting the server's endpoints",
            client.connect_to_matching_endpoint(endpoint, identity),
        )
        .await?
        .map_err(|e| explain(&format!("{e}"), &self.dev))?;
        session.disable_reconnects();
        let (lost_tx, lost) = tokio::sync::oneshot::channel();
        let pump = tokio::spawn(async move {
            let stream = event_loop.enter();
            tokio::pin!(stream);
            let why = loop {
                match stream.next().await {
                    Some(Ok(SessionPollResult::ConnectionLost(code))) => {
                        break format!("connection lost: {code}");
                    }
                    Some(Ok(SessionPollResult::ReconnectFailed(code))) => {
                        break format!("connect failed: {code}");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(code)) => break format!("session ended: {code}"),
                    None => break "session closed".to_string(),
                }
            };
            let _ = lost_tx.send(why);
        });
        let mut live = Live {
            session,
            pump,
            lost,
        };
        tokio::select! {
            ok = runner::within(self.dev.timeout_ms, "opening the session", live.session.wait_for_connection()) => {
                if !ok? {
                    return Err("the session did not open".into());
                }
            }
            why = &mut live.lost => return Err(explain(&why.unwrap_or_default(), &self.dev)),
        }
        tracing::info!(device = %self.dev.name, endpoint = %self.dev.endpoint, security = ?self.dev.security, "opc ua session open");
        Ok(live)
    }

    async fn session(&mut self, mut live: Live, io: &mut Io) -> Ended {
        let session = live.session.clone();
        let end = self.serve(&session, &mut live.lost, io).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
        end
    }
}

impl Server {
    async fn serve(
        &mut self,
        session: &Session,
        lost: &mut tokio::sync::oneshot::Receiver<String>,
        io: &mut Io,
    ) -> Ended {
        self.items.reset();
        let namespaces = match self.namespaces(session).await {
            Ok(n) => n,
            Err(e) => return Ended::Lost(e),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Notice>(NOTICES);
        let shed = Arc::new(AtomicU64::new(0));
        let mut sub = None;
        if self.dev.mode == Mode::Subscribe {
            let shed_cb = shed.clone();
            let cb = DataChangeCallback::new(move |value, item| {
                if tx
                    .try_send(Notice {
                        handle: item.client_handle(),
                        value,
                    })
                    .is_err()
                {
                    shed_cb.fetch_add(1, Ordering::Relaxed);
                }
            });
            let publishing = Duration::from_millis(self.dev.publishing_interval_ms);
            // lifetime 3x keepalive (OPC UA requires it); keepalive ~10 s
            let keepalive = (10_000 / self.dev.publishing_interval_ms.max(1)).clamp(1, 1000) as u32;
            match runner::within(
                self.dev.timeout_ms,
                "creating the subscription",
                session.create_subscription(publishing, keepalive * 3, keepalive, 0, 0, true, cb),
            )
            .await
            {
                Ok(Ok(id)) => sub = Some(id),
                Ok(Err(e)) => return Ended::Lost(format!("creating the subscription: {e}")),
                Err(e) => return Ended::Lost(e),
            }
        }
        let stopped = io.stopped();
        tokio::pin!(stopped);
        let mut tick = tokio::time::interval(Duration::from_millis(match self.dev.mode {
            Mode::Subscribe => 1000,
            Mode::Poll => self.dev.poll_interval_ms,
        }));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shed_seen = 0;
        let mut heard = tokio::time::Instant::now();
        let audit_every = Duration::from_millis(self.dev.retry_failed_items_ms)
            .clamp(Duration::from_secs(5), Duration::from_secs(60));
        let mut audited = tokio::time::Instant::now();
        loop {
            tokio::select! {
                Some(n) = rx.recv() => {
                    heard = tokio::time::Instant::now();
                    if let Some(i) = self.items.point(n.handle)
                        && let Err(e) = self.value(io, i, n.value).await
                    {
                        return e;
                    }
                }
                _ = tick.tick() => {
                    // a subscription that says nothing may be a frozen server
                    // or a silent partition (issue 29, item 8): ask the
                    // server's clock, within the device's timeout
                    if sub.is_some() && heard.elapsed() >= LIVENESS_AFTER {
                        if let Err(e) = self.alive(session).await {
                            return Ended::Lost(e);
                        }
                        heard = tokio::time::Instant::now();
                    }
                    // a monitored node deleted on the server says nothing on
                    // most stacks (asyncua): ask for the nodes now and then
                    if sub.is_some() && audited.elapsed() >= audit_every {
                        audited = tokio::time::Instant::now();
                        if let Err(e) = self.audit(session, &namespaces, io).await {
                            return e;
                        }
                    }
                    let r = match sub {
                        Some(id) => self.create_due(session, id, &namespaces, io).await,
                        None => self.poll(session, &namespaces, io).await,
                    };
                    if let Err(e) = r {
                        return e;
                    }
                    let s = shed.load(Ordering::Relaxed);
                    if s > shed_seen {
                        let n = s - shed_seen;
                        shed_seen = s;
                        tracing::warn!(device = %self.dev.name, count = n, "OPC UA values shed: the agent could not keep up");
                        let now = now_ms();
                        if io.sink.gap(GapReason::Shed, n, now, now).await.is_err() {
                            return Ended::SinkClosed;
                        }
                    }
                }
                req = io.next_write() => {
                    if let Err(e) = self.write(session, &namespaces, io, req).await {
                        return Ended::Lost(format!("during a write: {e}"));
                    }
                }
                why = &mut *lost => return Ended::Lost(why.unwrap_or_else(|_| "session ended".into())),
                _ = &mut stopped => return Ended::Stopped,
            }
        }
    }
}

/// The agent's ApplicationUri as an OPC UA client: one per machine, the
/// same for every device and for `edge-agent probe` (they share the key
/// pair in `pki_dir`; issue 29, item 10: it was per device, so the second
/// device on a shared `pki_dir` claimed a URI its certificate did not carry
/// and was refused for good).
pub(crate) fn app_uri() -> String {
    let host = opcua::crypto::hostname().unwrap_or_else(|_| "localhost".into());
    format!("urn:tankwatch:edge-agent:{host}")
}

/// Makes sure the agent's certificate in `pki` names `uri`: one made by
/// an older version (or on another machine) is kept as `.old` and a new
/// one is made at the connection, with a warning saying what to trust.
pub(crate) fn own_cert_names(pki: &Path, uri: &str) -> Result<(), String> {
    let cert = pki.join("own/cert.der");
    if !cert.exists() {
        return Ok(());
    }
    let x = opcua::crypto::CertificateStore::read_cert(&cert)
        .map_err(|e| format!("{}: {e}; delete it to have a new one made", cert.display()))?;
    if x.is_application_uri_valid(uri).is_ok() {
        return Ok(());
    }
    for p in [cert.clone(), pki.join("private/private.pem")] {
        if p.exists() {
            let mut old = p.as_os_str().to_owned();
            old.push(".old");
            std::fs::rename(&p, &old)
                .map_err(|e| format!("cannot keep {} as .old: {e}", p.display()))?;
        }
    }
    tracing::warn!(pki_dir = %pki.display(), uri,
        "the agent's OPC UA client certificate named another application URI; a new one is made: servers that trusted the old one must trust {}/own/cert.der",
        pki.display());
    Ok(())
}

/// A connection error with what an installer should check.
fn explain(e: &str, dev: &OpcUaDevice) -> String {
    let hint = if e.contains("BadCertificateUntrusted")
        || e.contains("BadSecurityChecksFailed")
        || e.contains("Untrusted")
    {
        // which side refused: ours files the server's certificate in rejected/
        let ours = std::fs::read_dir(dev.pki_dir.join("rejected"))
            .map(|d| d.flatten().any(|f| f.path().is_file()))
            .unwrap_or(false);
        if ours {
            format!(
                " (the server's certificate is not trusted: move it from {}/rejected/ to {}/trusted/)",
                dev.pki_dir.display(),
                dev.pki_dir.display()
            )
        } else {
            format!(
                " (the server does not trust the agent's certificate: trust {}/own/cert.der in the server, e.g. in its rejected list)",
                dev.pki_dir.display()
            )
        }
    } else if e.contains("BadCertificateHostNameInvalid") {
        format!(
            " (the server's certificate does not name the host in the endpoint {}: dial a host name or address its certificate names)",
            dev.endpoint
        )
    } else if e.contains("BadCertificateUriInvalid") {
        format!(
            " (a certificate's application URI does not match: the server's certificate must name the server's ApplicationUri; the agent's names {})",
            app_uri()
        )
    } else if e.contains("BadIdentityToken") || e.contains("BadUserAccessDenied") {
        " (check auth: user, password or user certificate)".to_string()
    } else if e.contains("BadTcpEndpointUrlInvalid")
        || e.contains("no matching endpoint")
        || e.contains("BadSecurityPolicyRejected")
    {
        format!(
            " (the server offers no endpoint {} with security {:?})",
            dev.endpoint, dev.security
        )
    } else {
        String::new()
    };
    format!("{e}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_take_the_type_of_the_variable() {
        assert_eq!(
            typed(Some(&Variant::Float(1.0)), 2.5),
            Ok(Variant::Float(2.5))
        );
        assert_eq!(typed(Some(&Variant::Int16(1)), 7.0), Ok(Variant::Int16(7)));
        assert!(typed(Some(&Variant::Int16(1)), 7.5).is_err());
        assert!(typed(Some(&Variant::Byte(1)), 300.0).is_err());
        assert_eq!(
            typed(Some(&Variant::Boolean(false)), 1.0),
            Ok(Variant::Boolean(true))
        );
        assert_eq!(typed(None, 3.0), Ok(Variant::Double(3.0)));
        assert!(typed(None, f64::NAN).is_err());
    }
}
