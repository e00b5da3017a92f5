//! The socket shell of the OPC UA adapter: one session on async-opcua
//! (client and trust store, the event loop task, the namespace table, the
//! subscription and its items or the polling reads, the liveness check and
//! the node audit). Writes with read-back are in `write.rs`, the client's
//! identity and its errors explained in `trust.rs`, the rules it applies in
//! `items.rs`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use adapter_api::runner::{self, Device, Ended, Io};
use adapter_api::{GapReason, Quality, now_ms};
use futures::StreamExt;
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, Session, SessionPollResult};
use opcua::types::{
    AttributeId, DataValue, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn, UserTokenPolicy,
    Variant,
};

use crate::config::{Auth, Mode, Security};
use crate::items::{self, Items};
use crate::trust::{app_uri, explain, own_cert_names};
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
    lost: tokio::sync::oneshot::Receiver<Lost>,
}

/// Why a session ended: the server's status, when it gave one, and the words.
type Lost = (Option<StatusCode>, String);

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
        let values = self
            .read_all(
                session,
                &reads,
                TimestampsToReturn::Neither,
                "checking the monitored nodes",
            )
            .await?;
        for (&i, v) in ids.iter().zip(values) {
            let status = v.status.unwrap_or(StatusCode::Good);
            if items::node_gone(status.bits()) {
                self.value(io, i, v).await?;
            }
        }
        Ok(())
    }

    /// Reads `reads` in requests of at most 1,000 nodes (servers limit
    /// MaxNodesPerRead), each within the device's timeout.
    async fn read_all(
        &self,
        session: &Session,
        reads: &[ReadValueId],
        timestamps: TimestampsToReturn,
        what: &str,
    ) -> Result<Vec<DataValue>, Ended> {
        let mut out = Vec::with_capacity(reads.len());
        for chunk in reads.chunks(1000) {
            let values = runner::within(
                self.dev.timeout_ms,
                what,
                session.read(chunk, timestamps, 0.0),
            )
            .await
            .map_err(Ended::Lost)?
            .map_err(|e| Ended::Lost(format!("{what}: {e}")))?;
            out.extend(values);
        }
        Ok(out)
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
            if items::node_gone(status.bits()) && self.items.lost(i, &status_text(status), now) {
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
        let values = self
            .read_all(session, &reads, TimestampsToReturn::Both, "read")
            .await?;
        for (&i, v) in ids.iter().zip(values) {
            self.value(io, i, v).await?;
        }
        Ok(())
    }
}

/// A numeric or boolean variant as f64.
pub(crate) fn number(v: &Variant) -> Option<f64> {
    match v {
        Variant::Boolean(b) => Some(f64::from(u8::from(*b))),
        other => other.as_f64().filter(|x| x.is_finite()),
    }
}

impl Device for Server {
    type Conn = Live;

    fn name(&self) -> &str {
        &self.dev.name
    }

    async fn connect(&mut self) -> Result<Live, runner::ConnectError> {
        use adapter_api::probe::Failure;
        let failed = |kind, m: String| runner::ConnectError::new(kind, m);
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
        own_cert_names(&self.dev.pki_dir, &uri).map_err(|e| failed(Failure::Trust, e))?;
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
        let mut client = client.map_err(|e| {
            failed(
                Failure::Usage,
                format!("OPC UA client configuration: {}", e.join("; ")),
            )
        })?;
        let endpoint: opcua::types::EndpointDescription = (
            self.dev.endpoint.as_str(),
            policy,
            mode,
            UserTokenPolicy::anonymous(),
        )
            .into();
        let identity = self.identity().map_err(|e| failed(Failure::Usage, e))?;
        let (session, event_loop) = runner::connecting(
            self.dev.timeout_ms,
            "getting the server's endpoints",
            client.connect_to_matching_endpoint(endpoint, identity),
        )
        .await?
        .map_err(|e| failed(failure_of(e.status()), explain(&format!("{e}"), &self.dev)))?;
        session.disable_reconnects();
        let (lost_tx, lost) = tokio::sync::oneshot::channel();
        let pump = tokio::spawn(async move {
            let stream = event_loop.enter();
            tokio::pin!(stream);
            let why = loop {
                match stream.next().await {
                    Some(Ok(SessionPollResult::ConnectionLost(code))) => {
                        break (Some(code), format!("connection lost: {code}"));
                    }
                    Some(Ok(SessionPollResult::ReconnectFailed(code))) => {
                        break (Some(code), format!("connect failed: {code}"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(code)) => break (Some(code), format!("session ended: {code}")),
                    None => break (None, "session closed".to_string()),
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
            ok = runner::connecting(self.dev.timeout_ms, "opening the session", live.session.wait_for_connection()) => {
                if !ok? {
                    return Err(failed(Failure::Unreachable, "the session did not open".into()));
                }
            }
            why = &mut live.lost => {
                let (code, why) = why.unwrap_or_default();
                let kind = code.map_or(Failure::Unreachable, failure_of);
                return Err(failed(kind, explain(&why, &self.dev)));
            }
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
        lost: &mut tokio::sync::oneshot::Receiver<Lost>,
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
                why = &mut *lost => return Ended::Lost(why.map_or_else(|_| "session ended".into(), |w| w.1)),
                _ = &mut stopped => return Ended::Stopped,
            }
        }
    }
}

/// What kind of failure a server's status is (`edge-agent probe` exits
/// with it): from the status code, not from its text.
pub(crate) fn failure_of(code: StatusCode) -> adapter_api::probe::Failure {
    use adapter_api::probe::Failure;
    use opcua::types::status_code::SubStatusCode as S;
    match code.sub_code() {
        S::BadCertificateUntrusted
        | S::BadCertificateInvalid
        | S::BadCertificateHostNameInvalid
        | S::BadCertificateUriInvalid
        | S::BadCertificateTimeInvalid
        | S::BadCertificateRevoked
        | S::BadCertificateUseNotAllowed
        | S::BadSecurityChecksFailed
        | S::BadSecurityPolicyRejected
        | S::BadSecurityModeRejected
        | S::BadIdentityTokenInvalid
        | S::BadIdentityTokenRejected
        | S::BadUserAccessDenied => Failure::Trust,
        S::BadTimeout | S::BadRequestTimeout => Failure::Timeout,
        S::BadCommunicationError
        | S::BadNotConnected
        | S::BadConnectionClosed
        | S::BadConnectionRejected
        | S::BadTcpEndpointUrlInvalid
        | S::BadServerNotConnected
        | S::BadServerHalted
        | S::BadDisconnect
        | S::BadTcpInternalError
        | S::BadResourceUnavailable => Failure::Unreachable,
        _ => Failure::Device,
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;
    use adapter_api::probe::Failure;

    #[test]
    fn a_servers_status_is_classified_by_its_code_not_its_text() {
        let cases = [
            (StatusCode::BadCertificateUntrusted, Failure::Trust),
            (StatusCode::BadUserAccessDenied, Failure::Trust),
            (StatusCode::BadIdentityTokenRejected, Failure::Trust),
            (StatusCode::BadSecurityPolicyRejected, Failure::Trust),
            (StatusCode::BadTimeout, Failure::Timeout),
            (StatusCode::BadCommunicationError, Failure::Unreachable),
            (StatusCode::BadConnectionClosed, Failure::Unreachable),
            (StatusCode::BadNotConnected, Failure::Unreachable),
            (StatusCode::BadNodeIdUnknown, Failure::Device),
        ];
        for (code, kind) in cases {
            assert_eq!(failure_of(code), kind, "{code}");
        }
    }
}
