//! The agent's OPC UA server for SCADA clients ([ADR 0009]).
//!
//! ```text
//! log writer --Feed::update (latest per point, coalesced; never waits)--> updater --set_values--> subscriptions
//! agent      --watch: AgentStatus, deliveries--------------------------> updater
//! client write --> nodes.rs (role, channel, type) --Writer--> the agent's executor (same path as a headend command)
//! ```
//!
//! - `model.rs` (pure): the address space as a plan.
//! - `auth.rs`: users, roles, lockout; the session token says the role.
//! - `nodes.rs`: the node manager (the plan as nodes, writes).
//! - here: start-up (certificate made on first start and kept, endpoints,
//!   limits), the feed of values and the updater task.
//!
//! Bounds: the feed holds one slot per variable (a reading for an unknown
//! point is ignored); between two updater rounds only a point's newest
//! value is kept (SCADA sees the newest, never a queue); sessions are
//! capped by `max_sessions`; every write waits at most [`WRITE_WAIT`].
//!
//! [ADR 0009]: ../../docs/adr/0009-the-agent-serves-opc-ua.md

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_api::{Quality, Reading};
use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::AddressSpace;
use opcua::server::node_manager::ServerContext;
use opcua::server::node_manager::memory::{InMemoryNodeManager, InMemoryNodeManagerBuilder};
use opcua::server::{ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerEndpoint, ServerUserToken};
use opcua::types::{DataValue, DateTime, MessageSecurityMode, NodeId, StatusCode, Variant};
use tokio::sync::{Notify, watch};

pub mod auth;
pub mod config;
pub mod model;
mod nodes;

pub use config::{Role, Security, ServerConfig, User};

/// Longest a client's write waits for the agent's answer (the device's
/// write timeout is 10 s; a busy executor adds to it).
pub const WRITE_WAIT: Duration = Duration::from_secs(30);

/// How often the stack looks at subscriptions due to publish, ms.
pub const SUBSCRIPTION_TICK_MS: u64 = 10;

/// How a write ended, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// Written and read back.
    Good,
    /// Outside the point's limits (or its ramp).
    OutOfRange,
    /// An interlock refused it (e.g. a delivery in progress).
    Interlock,
    /// The point has no safety limits: it cannot be written.
    NotWritable,
    /// Refused as invalid.
    Invalid,
    /// A newer command is in force on the point.
    Superseded,
    /// The device did not answer.
    Unreachable,
    /// The device refused the write or read back another value.
    DeviceFailure,
    /// No answer from the agent within [`WRITE_WAIT`].
    Timeout,
    /// The agent is stopping.
    Stopped,
}

impl WriteResult {
    /// The status's name, e.g. `BadOutOfRange` (metric label).
    pub fn status_name(self) -> &'static str {
        match self {
            WriteResult::Good => "Good",
            WriteResult::OutOfRange => "BadOutOfRange",
            WriteResult::Interlock | WriteResult::Superseded => "BadInvalidState",
            WriteResult::NotWritable => "BadNotWritable",
            WriteResult::Invalid => "BadInvalidArgument",
            WriteResult::Unreachable => "BadCommunicationError",
            WriteResult::DeviceFailure => "BadDeviceFailure",
            WriteResult::Timeout => "BadTimeout",
            WriteResult::Stopped => "BadShutdown",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            WriteResult::Good => StatusCode::Good,
            WriteResult::OutOfRange => StatusCode::BadOutOfRange,
            WriteResult::Interlock => StatusCode::BadInvalidState,
            WriteResult::NotWritable => StatusCode::BadNotWritable,
            WriteResult::Invalid => StatusCode::BadInvalidArgument,
            WriteResult::Superseded => StatusCode::BadInvalidState,
            WriteResult::Unreachable => StatusCode::BadCommunicationError,
            WriteResult::DeviceFailure => StatusCode::BadDeviceFailure,
            WriteResult::Timeout => StatusCode::BadTimeout,
            WriteResult::Stopped => StatusCode::BadShutdown,
        }
    }
}

/// A write a client asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteCall {
    pub asset: String,
    pub field: String,
    pub value: f64,
    /// The OPC UA user.
    pub user: String,
    /// The client's application URI.
    pub client: String,
}

/// The agent's write service: the outcome and its detail (for the log).
pub type Writer = Arc<
    dyn Fn(WriteCall) -> Pin<Box<dyn Future<Output = (WriteResult, String)> + Send>> + Send + Sync,
>;

/// The quality of a reading as a StatusCode: Good, Uncertain or Bad (the
/// last known value is kept with it).
pub fn status_of(q: Quality) -> StatusCode {
    match q {
        Quality::Good => StatusCode::Good,
        Quality::Uncertain => StatusCode::Uncertain,
        Quality::Bad => StatusCode::Bad,
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    value: Option<f64>,
    status: StatusCode,
    ts_ms: i64,
}

#[derive(Default)]
struct Slots {
    samples: Vec<Option<Sample>>,
    dirty: Vec<usize>,
    queued: Vec<bool>,
}

/// Readings into the address space: the newest per point, coalesced.
pub struct Feed {
    index: HashMap<(String, String), usize>,
    slots: Mutex<Slots>,
    notify: Notify,
}

impl Feed {
    fn new(keys: Vec<(String, String)>) -> Feed {
        let n = keys.len();
        Feed {
            index: keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect(),
            slots: Mutex::new(Slots {
                samples: vec![None; n],
                dirty: Vec::with_capacity(n),
                queued: vec![false; n],
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a reading (never waits on the server). A bad reading keeps
    /// the last known value and changes only the status.
    pub fn update(&self, r: &Reading) {
        let Some(&i) = self.index.get(&(r.asset_id.clone(), r.field.clone())) else {
            return;
        };
        {
            let mut s = self.lock();
            let last = s.samples[i].and_then(|x| x.value);
            s.samples[i] = Some(Sample {
                value: if r.quality == Quality::Bad || !r.value.is_finite() {
                    last
                } else {
                    Some(r.value)
                },
                status: status_of(r.quality),
                ts_ms: r.source_ts_ms,
            });
            if !s.queued[i] {
                s.queued[i] = true;
                s.dirty.push(i);
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<(usize, Sample)> {
        let mut s = self.lock();
        let dirty = std::mem::take(&mut s.dirty);
        dirty
            .into_iter()
            .filter_map(|i| {
                s.queued[i] = false;
                s.samples[i].map(|x| (i, x))
            })
            .collect()
    }
}

/// The agent's own state, for `Agent/...`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStatus {
    pub headend_connected: bool,
    pub log_entries: u64,
    /// When the headend last acknowledged the log, Unix ms.
    pub last_ack_ms: Option<i64>,
    pub devices: Vec<DeviceState>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceState {
    pub name: String,
    pub connected: bool,
    pub last_error: String,
}

/// An expected delivery, for `Deliveries/<load>/...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub load: String,
    pub eta_ms: i64,
    pub eta_source: String,
    pub planned_volume_l: f64,
    /// expected | delivering | delivered | cancelled
    pub status: String,
}

/// What the agent keeps to feed a running server.
pub struct Handle {
    pub feed: Arc<Feed>,
    pub status: watch::Sender<AgentStatus>,
    pub deliveries: watch::Sender<Vec<Delivery>>,
    /// The address it listens on (the port when 0 was asked for).
    pub addr: SocketAddr,
    /// `opc.tcp://HOST:PORT/`.
    pub endpoint: String,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opcua_server.listen: cannot listen on {addr}: {e}")]
    Listen { addr: SocketAddr, e: std::io::Error },
    #[error("opcua_server: {0}")]
    Plan(#[from] model::PlanError),
    #[error("opcua_server.pki_dir {dir}: {msg}")]
    Pki { dir: String, msg: String },
    #[error("opcua_server: the OPC UA stack refused the configuration: {0}")]
    Build(String),
}

fn endpoints(cfg: &ServerConfig) -> Vec<(String, ServerEndpoint)> {
    let users: Vec<String> = cfg.users.iter().map(|u| u.name.clone()).collect();
    cfg.security
        .iter()
        .map(|s| {
            let (policy, mode) = match s {
                Security::Basic256sha256SignAndEncrypt => (
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                ),
                Security::Basic256sha256Sign => {
                    (SecurityPolicy::Basic256Sha256, MessageSecurityMode::Sign)
                }
                Security::Aes256sha256rsapssSignAndEncrypt => (
                    SecurityPolicy::Aes256Sha256RsaPss,
                    MessageSecurityMode::SignAndEncrypt,
                ),
                Security::Aes256sha256rsapssSign => (
                    SecurityPolicy::Aes256Sha256RsaPss,
                    MessageSecurityMode::Sign,
                ),
                Security::None => (SecurityPolicy::None, MessageSecurityMode::None),
            };
            let tokens = if *s == Security::None {
                vec![ANONYMOUS_USER_TOKEN_ID.to_string()]
            } else {
                users.clone()
            };
            (
                s.as_str().to_string(),
                ServerEndpoint::new("/", policy, mode, &tokens),
            )
        })
        .collect()
}

/// Starts the server: binds, makes (or loads) its certificate, builds the
/// address space. Returns the handle and the task to run until `stop`.
pub fn start(
    cfg: &ServerConfig,
    site: &model::Site,
    writer: Writer,
    on_login_refused: auth::OnRefused,
    mut stop: watch::Receiver<bool>,
) -> Result<(Handle, impl Future<Output = Result<(), String>> + use<>), StartError> {
    let plan = model::plan(site)?;
    let listen_err = |e| StartError::Listen {
        addr: cfg.listen,
        e,
    };
    // bound here (not by the stack) so that a taken port fails the start
    let listener = std::net::TcpListener::bind(cfg.listen).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_err)?;
    let addr = listener.local_addr().map_err(|e| StartError::Listen {
        addr: cfg.listen,
        e,
    })?;
    let host = match &cfg.host_name {
        Some(h) => h.clone(),
        None => opcua::crypto::hostname().unwrap_or_else(|_| "localhost".into()),
    };
    let pki = cfg.pki_dir.display().to_string();
    for sub in ["trusted", "rejected", "own", "private"] {
        std::fs::create_dir_all(cfg.pki_dir.join(sub)).map_err(|e| StartError::Pki {
            dir: pki.clone(),
            msg: format!("cannot create {sub}/: {e}"),
        })?;
    }
    let ns_uri = format!("urn:tankwatch:agent:{}", site.id);
    let app_uri = format!("urn:tankwatch:agent:{}:opcua-server", site.id);
    let mut b = ServerBuilder::new()
        .application_name(format!("tankwatch agent {}", site.id))
        .application_uri(app_uri.as_str())
        .product_uri("urn:tankwatch:edge-agent")
        .host(host.as_str())
        .port(addr.port())
        .pki_dir(&cfg.pki_dir)
        .certificate_path("own/cert.der")
        .private_key_path("private/private.pem")
        .create_sample_keypair(true)
        .trust_client_certs(false)
        .check_cert_time(true)
        .max_sessions(cfg.max_sessions as usize)
        .discovery_urls(vec!["/".to_string()])
        .diagnostics_enabled(false)
        // the stack checks subscriptions on this timer: at its default (100 ms)
        // a 100 ms publishing interval became up to 200 ms (measured p99 279 ms
        // from a device change to the client; BENCHMARKS)
        .subscription_poll_interval_ms(SUBSCRIPTION_TICK_MS)
        .with_authenticator(Arc::new(auth::Auth::new(&cfg.users, on_login_refused)));
    {
        let l = b.limits_mut();
        l.subscriptions.min_sampling_interval_ms = cfg.min_interval_ms as f64;
        l.subscriptions.min_publishing_interval_ms = cfg.min_interval_ms as f64;
    }
    for u in &cfg.users {
        // the stack's own config check wants every endpoint's users defined;
        // logins are checked by `auth::Auth`, never against this
        b = b.add_user_token(
            u.name.as_str(),
            ServerUserToken {
                user: u.name.clone(),
                pass: Some(u.password_hash.clone()),
                ..Default::default()
            },
        );
    }
    for (id, e) in endpoints(cfg) {
        b = b.add_endpoint(id, e);
    }
    let keys: Vec<(String, String)> = plan
        .vars
        .iter()
        .filter_map(|v| match &v.source {
            model::Source::Reading { asset, field } => Some((asset.clone(), field.clone())),
            _ => None,
        })
        .collect();
    let plan_for_nodes = plan.clone();
    let ns_for_nodes = ns_uri.clone();
    b = b.with_node_manager(InMemoryNodeManagerBuilder::new(
        move |context: ServerContext, space: &mut AddressSpace| {
            nodes::AgentNodes::new(&ns_for_nodes, &context, space, &plan_for_nodes, writer)
        },
    ));
    let (server, handle) = b.build().map_err(StartError::Build)?;
    if !cfg.pki_dir.join("own/cert.der").exists()
        || !cfg.pki_dir.join("private/private.pem").exists()
    {
        return Err(StartError::Pki {
            dir: pki,
            msg: "no server certificate and key after start (own/cert.der, private/private.pem): is the folder writable?".into(),
        });
    }
    let nm = handle
        .node_managers()
        .get_of_type::<InMemoryNodeManager<nodes::AgentNodes>>()
        .ok_or_else(|| StartError::Build("the agent's node manager is missing".into()))?;
    let ns = handle
        .get_namespace_index(&ns_uri)
        .ok_or_else(|| StartError::Build("the agent's namespace is missing".into()))?;
    let feed = Arc::new(Feed::new(keys));
    let (status_tx, status_rx) = watch::channel(AgentStatus::default());
    let (deliv_tx, deliv_rx) = watch::channel(Vec::new());
    let endpoint = format!("opc.tcp://{host}:{}/", addr.port());
    tracing::info!(%endpoint, listen = %addr, security = ?cfg.security.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        variables = plan.vars.len(), "OPC UA server listening");
    let updater = Updater {
        nm,
        subs: handle.subscriptions().clone(),
        ns,
        site: site.id.clone(),
        plan,
        feed: feed.clone(),
        loads: HashSet::new(),
    };
    let run = {
        let handle = handle.clone();
        async move {
            let stopper = {
                let handle = handle.clone();
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                    handle.cancel();
                }
            };
            let serve = server.run_with(listener);
            tokio::select! {
                r = serve => r,
                r = updater.run(status_rx, deliv_rx) => r,
                _ = stopper => Ok(()),
            }
        }
    };
    Ok((
        Handle {
            feed,
            status: status_tx,
            deliveries: deliv_tx,
            addr,
            endpoint,
        },
        run,
    ))
}

struct Updater {
    nm: Arc<InMemoryNodeManager<nodes::AgentNodes>>,
    subs: Arc<opcua::server::SubscriptionCache>,
    ns: u16,
    site: String,
    plan: model::Plan,
    feed: Arc<Feed>,
    loads: HashSet<String>,
}

fn dv(value: Variant, status: StatusCode, ts_ms: i64) -> DataValue {
    let now = DateTime::now();
    DataValue {
        value: Some(value),
        status: Some(status),
        source_timestamp: Some(ms_time(ts_ms).unwrap_or(now)),
        server_timestamp: Some(now),
        ..Default::default()
    }
}

fn ms_time(ms: i64) -> Option<DateTime> {
    let t = chrono_like(ms)?;
    Some(DateTime::from(t))
}

/// Unix ms as the stack's time type.
fn chrono_like(ms: i64) -> Option<opcua::types::date_time::DateTimeUtc> {
    opcua::types::date_time::DateTimeUtc::from_timestamp_millis(ms)
}

impl Updater {
    async fn run(
        mut self,
        mut status: watch::Receiver<AgentStatus>,
        mut deliveries: watch::Receiver<Vec<Delivery>>,
    ) -> Result<(), String> {
        let reading_vars: Vec<(NodeId, model::Type)> = self
            .plan
            .vars
            .iter()
            .filter(|v| matches!(v.source, model::Source::Reading { .. }))
            .map(|v| (nodes::node(self.ns, &v.id), v.ty))
            .collect();
        // (status, value) last published per reading variable
        let mut last: Vec<(StatusCode, Option<f64>)> =
            vec![(StatusCode::BadWaitingForInitialData, None); reading_vars.len()];
        loop {
            tokio::select! {
                _ = self.feed.notify.notified() => {
                    let changed = self.feed.take();
                    let mut first: Vec<(&NodeId, Option<&opcua::types::NumericRange>, DataValue)> = Vec::new();
                    let mut values: Vec<(&NodeId, Option<&opcua::types::NumericRange>, DataValue)> = Vec::new();
                    for (i, s) in &changed {
                        let Some((id, ty)) = reading_vars.get(*i) else { continue };
                        let value = match (s.value, ty) {
                            (Some(v), model::Type::Boolean) => Variant::from(v != 0.0),
                            (Some(v), _) => Variant::from(v),
                            (None, t) => nodes::empty(*t),
                        };
                        // async-opcua notifies a monitored item without a filter on a
                        // value change only (the spec's default is status or value):
                        // a status change that keeps the value goes out as an empty
                        // value first, then the last known value with the new status
                        if let Some(prev) = last.get_mut(*i) {
                            if prev.0 != s.status && prev.1 == s.value && prev.1.is_some() {
                                first.push((id, None, dv(Variant::Empty, s.status, s.ts_ms)));
                            }
                            *prev = (s.status, s.value);
                        }
                        values.push((id, None, dv(value, s.status, s.ts_ms)));
                    }
                    if !first.is_empty()
                        && let Err(e) = self.nm.set_values(&self.subs, first.into_iter())
                    {
                        return Err(format!("updating values: {e}"));
                    }
                    if let Err(e) = self.nm.set_values(&self.subs, values.into_iter()) {
                        return Err(format!("updating values: {e}"));
                    }
                }
                r = status.changed() => {
                    if r.is_err() { return Ok(()); }
                    let s = status.borrow_and_update().clone();
                    self.agent(&s)?;
                }
                r = deliveries.changed() => {
                    if r.is_err() { return Ok(()); }
                    let d = deliveries.borrow_and_update().clone();
                    self.deliveries(&d)?;
                }
            }
        }
    }

    fn agent(&self, s: &AgentStatus) -> Result<(), String> {
        let now = adapter_api::now_ms();
        let mut values: Vec<(NodeId, DataValue)> = Vec::new();
        for v in &self.plan.vars {
            let model::Source::Agent(a) = &v.source else {
                continue;
            };
            let dev = |name: &str| s.devices.iter().find(|d| d.name == name);
            let (value, status) = match a {
                model::AgentVar::HeadendConnected => {
                    (Variant::from(s.headend_connected), StatusCode::Good)
                }
                model::AgentVar::LogEntries => (Variant::from(s.log_entries), StatusCode::Good),
                model::AgentVar::LastAck => match s.last_ack_ms.and_then(ms_time) {
                    Some(t) => (Variant::from(t), StatusCode::Good),
                    None => (
                        Variant::from(DateTime::null()),
                        StatusCode::UncertainInitialValue,
                    ),
                },
                model::AgentVar::DeviceStatus(d) => (
                    Variant::from(match dev(d) {
                        Some(x) if x.connected => "connected",
                        Some(_) => "disconnected",
                        None => "unknown",
                    }),
                    StatusCode::Good,
                ),
                model::AgentVar::DeviceConnected(d) => (
                    Variant::from(dev(d).is_some_and(|x| x.connected)),
                    StatusCode::Good,
                ),
                model::AgentVar::DeviceLastError(d) => (
                    Variant::from(dev(d).map(|x| x.last_error.as_str()).unwrap_or("")),
                    StatusCode::Good,
                ),
            };
            values.push((nodes::node(self.ns, &v.id), dv(value, status, now)));
        }
        self.nm
            .set_values(
                &self.subs,
                values.iter().map(|(id, d)| (id, None, d.clone())),
            )
            .map_err(|e| format!("updating agent state: {e}"))
    }

    fn deliveries(&mut self, list: &[Delivery]) -> Result<(), String> {
        let now = adapter_api::now_ms();
        let wanted: HashSet<String> = list
            .iter()
            .filter(|d| {
                !d.load.is_empty() && !d.load.contains('/') && !d.load.chars().any(char::is_control)
            })
            .map(|d| d.load.clone())
            .collect();
        {
            let mut space = self.nm.address_space().write();
            for gone in self.loads.difference(&wanted) {
                let (folder, vars) = model::delivery_vars(&self.site, gone);
                for v in vars {
                    space.delete(&nodes::node(self.ns, &v.id), true);
                }
                space.delete(&nodes::node(self.ns, &folder.id), true);
            }
            for new in wanted.difference(&self.loads) {
                let (folder, vars) = model::delivery_vars(&self.site, new);
                nodes::add_folder(&mut space, self.ns, &folder);
                for v in &vars {
                    nodes::add_var(&mut space, self.ns, v);
                }
            }
        }
        self.loads = wanted;
        let mut values: Vec<(NodeId, DataValue)> = Vec::new();
        for d in list.iter().filter(|d| self.loads.contains(&d.load)) {
            let base = model::site_path(&self.site, &["Deliveries", &d.load]);
            let eta = ms_time(d.eta_ms)
                .map(Variant::from)
                .unwrap_or(Variant::from(DateTime::null()));
            for (name, value) in [
                ("Eta", eta),
                ("EtaSource", Variant::from(d.eta_source.as_str())),
                ("PlannedVolume", Variant::from(d.planned_volume_l)),
                ("Status", Variant::from(d.status.as_str())),
            ] {
                values.push((
                    nodes::node(self.ns, &format!("{base}/{name}")),
                    dv(value, StatusCode::Good, now),
                ));
            }
        }
        self.nm
            .set_values(
                &self.subs,
                values.iter().map(|(id, d)| (id, None, d.clone())),
            )
            .map_err(|e| format!("updating deliveries: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(field: &str, value: f64, quality: Quality, ts: i64) -> Reading {
        Reading {
            asset_id: "t1".into(),
            field: field.into(),
            value,
            unit: "L".into(),
            quality,
            source_ts_ms: ts,
            received_ts_ms: ts,
            source: String::new(),
            error: String::new(),
            class: adapter_api::DropClass::Telemetry,
        }
    }

    #[test]
    fn the_feed_keeps_the_newest_value_per_point_and_a_bad_reading_keeps_the_last_value() {
        let f = Feed::new(vec![
            ("t1".into(), "volume".into()),
            ("t1".into(), "height".into()),
        ]);
        f.update(&reading("volume", 100.0, Quality::Good, 1));
        f.update(&reading("volume", 110.0, Quality::Good, 2));
        f.update(&reading("unknown", 1.0, Quality::Good, 2));
        let t = f.take();
        assert_eq!(t.len(), 1, "coalesced, unknown ignored");
        assert_eq!((t[0].1.value, t[0].1.ts_ms), (Some(110.0), 2));
        f.update(&reading("volume", 0.0, Quality::Bad, 3));
        let t = f.take();
        assert_eq!(
            (t[0].1.value, t[0].1.status),
            (Some(110.0), StatusCode::Bad)
        );
        assert!(f.take().is_empty());
        f.update(&reading("height", 5.0, Quality::Bad, 4));
        assert_eq!(f.take()[0].1.value, None, "never known: no value");
    }

    #[test]
    fn write_results_map_to_the_status_codes_a_scada_client_expects() {
        assert_eq!(WriteResult::Good.status(), StatusCode::Good);
        assert_eq!(WriteResult::OutOfRange.status(), StatusCode::BadOutOfRange);
        assert_eq!(
            WriteResult::Unreachable.status(),
            StatusCode::BadCommunicationError
        );
        assert_eq!(status_of(Quality::Uncertain), StatusCode::Uncertain);
        for w in [
            WriteResult::Good,
            WriteResult::OutOfRange,
            WriteResult::Interlock,
            WriteResult::NotWritable,
            WriteResult::Invalid,
            WriteResult::Superseded,
            WriteResult::Unreachable,
            WriteResult::DeviceFailure,
            WriteResult::Timeout,
            WriteResult::Stopped,
        ] {
            let shown = w.status().to_string();
            assert_eq!(shown.split(',').next(), Some(w.status_name()), "{w:?}");
        }
    }
}
