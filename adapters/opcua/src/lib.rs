//! OPC UA client adapter on async-opcua: monitored items (or polling), the
//! status code as the reading's quality, node writes with read-back, and
//! recovery after a server restart without anyone restarting the agent.
//!
//! Each connection is one session with automatic reconnects turned off:
//! when it is lost, the shared runner marks the points bad, backs off and
//! connects afresh, and the new session resolves the node ids again
//! (`nsu=` ids follow a renumbered namespace table) and creates every item
//! again. Items the server refuses (`BadNodeIdUnknown`) are retried every
//! `retry_failed_items_ms` ([`items`]).
//!
//! A push adapter when subscribing: the data-change callback runs inside
//! the OPC UA event loop and must not wait, so it hands values to the
//! session through a bounded queue ([`NOTICES`]) and counts what does not
//! fit; the session turns each shed run into a gap record. An overflow bit
//! from the server (its queue dropped values) is a gap record too. Polling
//! mode waits instead, like any poller.

pub mod config;
pub mod items;
pub mod probe;
mod session;
mod trust;
mod write;

use adapter_api::runner::{self, Io, Points, Retry};
use adapter_api::{Adapter, AdapterError, BoxFuture, PointSpec, Sink, Stop, WhenFull, WriteRx};

pub use config::OpcUaDevice;
use config::{Auth, Mode, Security};
use items::{Items, NodeRef};

/// Values waiting between the OPC UA event loop and the session; when
/// full, values are shed (counted, then a gap record).
pub const NOTICES: usize = 8192;

/// Configuration errors (server failures become readings).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("device {device}: {detail}")]
    Config { device: String, detail: String },
    #[error("device {device}: point {point}: {detail}")]
    Point {
        device: String,
        point: String,
        detail: String,
    },
}

impl From<Error> for AdapterError {
    fn from(e: Error) -> Self {
        AdapterError::Config {
            adapter: "opcua".into(),
            detail: e.to_string(),
        }
    }
}

/// `host:port` of an `opc.tcp://host:port/path` URL.
pub fn endpoint_host_port(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("opc.tcp://")
        .ok_or_else(|| format!("endpoint {url:?}: use opc.tcp://host:port/path"))?;
    let hp = rest.split('/').next().unwrap_or_default();
    let hp = if hp.contains(':') && !hp.ends_with(']') {
        hp.to_string()
    } else {
        format!("{hp}:4840")
    };
    adapter_api::validate::host_port(&hp).map_err(|e| format!("endpoint {url:?}: {e}"))?;
    if url.chars().any(char::is_control) || url.len() > 1024 {
        return Err(format!("endpoint {url:?}: control characters or too long"));
    }
    Ok(hp)
}

/// Checks what serde cannot: the endpoint, every node id and mapping.
pub fn validate(dev: &OpcUaDevice) -> Result<(), Error> {
    let cfg = |detail: String| Error::Config {
        device: dev.name.clone(),
        detail,
    };
    endpoint_host_port(&dev.endpoint).map_err(cfg)?;
    if dev.points.is_empty() {
        return Err(cfg("has no points; add at least one under `points`".into()));
    }
    if let Auth::UserPassword { user, .. } = &dev.auth {
        adapter_api::validate::text(user).map_err(|e| cfg(format!("auth user {e}")))?;
    }
    if dev.security == Security::None && !matches!(dev.auth, Auth::Anonymous) {
        return Err(cfg(
            "a password or user certificate over `security: none` would travel unprotected; use sign_and_encrypt".into(),
        ));
    }
    for (index, p) in dev.points.iter().enumerate() {
        let perr = |detail: String| Error::Point {
            device: dev.name.clone(),
            point: format!("{index} ({}.{})", p.asset, p.field),
            detail,
        };
        p.check_mapping().map_err(perr)?;
        items::parse_node(&p.node).map_err(perr)?;
    }
    Ok(())
}

/// The protocol-free points, in config order.
pub fn specs(dev: &OpcUaDevice) -> Vec<PointSpec> {
    let hp = endpoint_host_port(&dev.endpoint).unwrap_or_default();
    dev.points
        .iter()
        .map(|p| p.spec(format!("opcua://{hp}/{}", p.node)))
        .collect()
}

/// The adapter for one OPC UA server.
pub struct OpcUaAdapter {
    dev: OpcUaDevice,
}

impl OpcUaAdapter {
    pub fn new(dev: OpcUaDevice) -> Result<Self, Error> {
        validate(&dev)?;
        Ok(Self { dev })
    }
}

impl Adapter for OpcUaAdapter {
    fn kind(&self) -> &'static str {
        "opcua"
    }
    fn name(&self) -> &str {
        &self.dev.name
    }
    fn points(&self) -> Vec<PointSpec> {
        specs(&self.dev)
    }
    fn when_full(&self) -> WhenFull {
        match self.dev.mode {
            Mode::Subscribe => WhenFull::Shed,
            Mode::Poll => WhenFull::Block,
        }
    }
    fn run(
        self: Box<Self>,
        sink: Sink,
        writes: WriteRx,
        stop: Stop,
    ) -> BoxFuture<Result<(), AdapterError>> {
        let retry = Retry {
            initial_ms: 500,
            max_ms: self.dev.max_backoff_ms,
        };
        let io = Io::new(sink, Points::new(specs(&self.dev)), writes, stop);
        let nodes: Vec<NodeRef> = self
            .dev
            .points
            .iter()
            .map(|p| {
                items::parse_node(&p.node).unwrap_or(NodeRef {
                    ns: items::Namespace::Index(0),
                    id: "i=0".into(),
                })
            })
            .collect();
        let server = session::Server {
            items: Items::new(nodes, self.dev.retry_failed_items_ms),
            dev: self.dev,
        };
        Box::pin(runner::run(server, io, retry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_points_are_validated() {
        // as in the agent's config: enums as `{ variant: {...} }`
        let d = |y: &str| -> OpcUaDevice {
            serde_yaml::with::singleton_map_recursive::deserialize(
                serde_yaml::Deserializer::from_str(y),
            )
            .unwrap()
        };
        let ok = d(
            "name: plc\nendpoint: opc.tcp://10.0.0.9:4840/ua\npoints:\n  - { node: \"nsu=urn:x;s=T1.Vol\", asset: t, field: volume, unit: gal }\n",
        );
        assert!(validate(&ok).is_ok());
        assert_eq!(ok.security, Security::SignAndEncrypt, "secure by default");
        assert_eq!(
            specs(&ok)[0].source,
            "opcua://10.0.0.9:4840/nsu=urn:x;s=T1.Vol"
        );
        assert_eq!(endpoint_host_port("opc.tcp://plc").unwrap(), "plc:4840");
        for (y, want) in [
            (
                "name: p\nendpoint: http://x\npoints:\n  - { node: i=5, asset: t, field: v }\n",
                "opc.tcp",
            ),
            (
                "name: p\nendpoint: opc.tcp://x:4840\npoints: []\n",
                "no points",
            ),
            (
                "name: p\nendpoint: opc.tcp://x:4840\npoints:\n  - { node: \"ns=2;q=1\", asset: t, field: v }\n",
                "node",
            ),
            (
                "name: p\nendpoint: opc.tcp://x:4840\nsecurity: none\nauth: { user_password: { user: u, password_file: p } }\npoints:\n  - { node: i=5, asset: t, field: v }\n",
                "unprotected",
            ),
        ] {
            let e = validate(&d(y)).unwrap_err().to_string();
            assert!(e.contains(want), "{y}: {e}");
        }
    }
}
