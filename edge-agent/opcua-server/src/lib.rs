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
//! - `live.rs`: the feed of values and the updater task.
//! - here: the write contract and start-up (certificate made on first start
//!   and kept, endpoints, limits).
//!
//! Bounds: the feed holds one slot per variable (a reading for an unknown
//! point is ignored); between two updater rounds only a point's newest
//! value is kept (SCADA sees the newest, never a queue); sessions are
//! capped by `max_sessions`; every write waits at most [`WRITE_WAIT`].
//!
//! [ADR 0009]: ../../docs/adr/0009-the-agent-serves-opc-ua.md

// no non-test function over ~150 code lines (clippy.toml sets the bound)
#![deny(clippy::too_many_lines)]

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::AddressSpace;
use opcua::server::node_manager::ServerContext;
use opcua::server::node_manager::memory::{InMemoryNodeManager, InMemoryNodeManagerBuilder};
use opcua::server::{ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerEndpoint, ServerUserToken};
use opcua::types::MessageSecurityMode;
use tokio::sync::watch;

pub mod auth;
pub mod cert;
pub mod config;
mod live;
pub mod model;
mod nodes;
pub mod verify;

pub use live::{AgentStatus, Delivery, DeviceState, Feed, status_of};

pub use config::{Role, Security, ServerConfig, User};
/// The OPC UA status codes (a refused write carries one).
pub use opcua::types::StatusCode;

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
    /// The status's name, e.g. `BadOutOfRange` (a metric label): the
    /// stack's own text of [`WriteResult::status`].
    pub fn status_name(self) -> String {
        self.status().to_string()
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
    /// Set when the server refused the write itself (role, channel, type,
    /// a variable that is not a setpoint): the status the client got and
    /// why. The agent counts it and records it at the headend; it never
    /// reaches a device.
    pub refused: Option<(StatusCode, String)>,
}

/// The agent's write service: the outcome and its detail (for the log).
pub type Writer = Arc<
    dyn Fn(WriteCall) -> Pin<Box<dyn Future<Output = (WriteResult, String)> + Send>> + Send + Sync,
>;

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

/// What `Server/ServerStatus/BuildInfo` says (before: all empty).
fn build_info() -> opcua::types::BuildInfo {
    opcua::types::BuildInfo {
        product_uri: "urn:tankwatch:edge-agent".into(),
        manufacturer_name: "tankwatch".into(),
        product_name: "tankwatch edge-agent".into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        build_number: env!("CARGO_PKG_VERSION").into(),
        build_date: opcua::types::DateTime::null(),
    }
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

/// Makes the PKI folders and the server's own certificate (or keeps a
/// valid one), and logs which.
fn own_certificate(
    cfg: &ServerConfig,
    app_uri: &str,
    host: &str,
    site_id: &str,
) -> Result<(), StartError> {
    let pki = cfg.pki_dir.display().to_string();
    for sub in ["trusted", "rejected", "own", "private"] {
        std::fs::create_dir_all(cfg.pki_dir.join(sub)).map_err(|e| StartError::Pki {
            dir: pki.clone(),
            msg: format!("cannot create {sub}/: {e}"),
        })?;
    }
    let own =
        cert::ensure(&cfg.pki_dir, app_uri, host, site_id).map_err(|msg| StartError::Pki {
            dir: pki.clone(),
            msg,
        })?;
    match &own.outcome {
        cert::Outcome::Renewed(why) => {
            tracing::warn!(thumbprint = %own.thumbprint, not_after = %own.not_after, why,
            "OPC UA server certificate renewed: SCADA clients that trusted the old one must trust this one ({}/own/cert.der)", pki)
        }
        o => {
            tracing::info!(thumbprint = %own.thumbprint, not_after = %own.not_after, outcome = ?o, "OPC UA server certificate")
        }
    }
    Ok(())
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
    let ns_uri = format!("urn:tankwatch:agent:{}", site.id);
    let app_uri = format!("urn:tankwatch:agent:{}:opcua-server", site.id);
    own_certificate(cfg, &app_uri, &host, &site.id)?;
    let endpoint = format!("opc.tcp://{host}:{}/", addr.port());
    let mut b = ServerBuilder::new()
        .application_name(format!("tankwatch agent {}", site.id))
        .application_uri(app_uri.as_str())
        .product_uri("urn:tankwatch:edge-agent")
        .host(host.as_str())
        .port(addr.port())
        .pki_dir(&cfg.pki_dir)
        .certificate_path("own/cert.der")
        .private_key_path("private/private.pem")
        .create_sample_keypair(false)
        .trust_client_certs(false)
        .check_cert_time(true)
        .max_sessions(cfg.max_sessions as usize)
        .discovery_urls(vec![endpoint.clone()])
        .build_info(build_info())
        .diagnostics_enabled(false)
        // the stack checks subscriptions on this timer: at its default (100 ms)
        // a 100 ms publishing interval became up to 200 ms (measured p99 279 ms
        // from a device change to the client; BENCHMARKS)
        .subscription_poll_interval_ms(SUBSCRIPTION_TICK_MS)
        .max_connections(cfg.max_connections as usize)
        .with_authenticator(Arc::new(
            auth::Auth::new(&cfg.users, on_login_refused)
                .map_err(|e| StartError::Build(format!("cannot start the login thread: {e}")))?,
        ));
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
    tracing::info!(%endpoint, listen = %addr, security = ?cfg.security.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        variables = plan.vars.len(), "OPC UA server listening");
    let updater = live::Updater {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_results_map_to_the_status_codes_a_scada_client_expects() {
        assert_eq!(WriteResult::Good.status(), StatusCode::Good);
        assert_eq!(WriteResult::OutOfRange.status(), StatusCode::BadOutOfRange);
        assert_eq!(
            WriteResult::Unreachable.status(),
            StatusCode::BadCommunicationError
        );
        assert_eq!(
            status_of(adapter_api::Quality::Uncertain),
            StatusCode::Uncertain
        );
        assert_eq!(WriteResult::OutOfRange.status_name(), "BadOutOfRange");
    }
}
