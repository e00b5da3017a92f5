//! Configuration of one OPC UA server connection (a section of the agent's YAML).
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// One OPC UA server and the nodes read from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaDevice {
    /// Unique device name, used in logs and reading sources.
    pub name: String,
    /// `opc.tcp://host:port/path` of the server's endpoint.
    pub endpoint: String,
    /// `none`, `sign` or `sign_and_encrypt` (both with Basic256Sha256).
    /// Default `sign_and_encrypt`.
    #[serde(default)]
    pub security: Security,
    /// How the agent logs in. Default anonymous.
    #[serde(default)]
    pub auth: Auth,
    /// The agent's OPC UA certificate store: `own/cert.der` and
    /// `private/private.pem` (created on first start and kept), `trusted/`
    /// (put the server's certificate here), `rejected/` (where an untrusted
    /// server's certificate lands, to inspect and move). Default
    /// `opcua-pki` beside the config file.
    #[serde(default = "default_pki")]
    pub pki_dir: PathBuf,
    /// Trust an unknown server certificate on first use. Default false: a
    /// server is trusted only once its certificate is in `trusted/`.
    #[serde(default)]
    pub trust_on_first_use: bool,
    /// `subscribe` (monitored items, default) or `poll` (Read service every
    /// `poll_interval_ms`, for servers without subscriptions).
    #[serde(default)]
    pub mode: Mode,
    /// Sampling interval of monitored items, ms. 0 (fastest the server
    /// offers) to 3,600,000. Default 1000.
    #[serde(default = "default_interval", deserialize_with = "sampling_ms")]
    pub sampling_interval_ms: u64,
    /// Publishing interval of the subscription, ms. 10 to 3,600,000. Default 1000.
    #[serde(default = "default_interval", deserialize_with = "publishing_ms")]
    pub publishing_interval_ms: u64,
    /// Poll interval in `poll` mode, ms. 10 to 3,600,000. Default 1000.
    #[serde(default = "default_interval", deserialize_with = "publishing_ms")]
    pub poll_interval_ms: u64,
    /// Queue size per monitored item on the server. 1 to 1000. Default 10.
    #[serde(default = "default_queue", deserialize_with = "queue")]
    pub queue_size: u64,
    /// Connect and request timeout, ms. 100 to 120,000. Default 10,000.
    #[serde(default = "default_timeout", deserialize_with = "timeout_ms")]
    pub timeout_ms: u64,
    /// Upper bound of the reconnect backoff, ms. 100 to 600,000. Default 30,000.
    #[serde(
        default = "adapter_api::default_max_backoff_ms",
        deserialize_with = "adapter_api::max_backoff_ms"
    )]
    pub max_backoff_ms: u64,
    /// How often items the server refused (e.g. `BadNodeIdUnknown`) are
    /// tried again, ms. 1000 to 3,600,000. Default 30,000.
    #[serde(default = "default_retry", deserialize_with = "retry_ms")]
    pub retry_failed_items_ms: u64,
    /// The node map.
    pub points: Vec<Point>,
}

/// Message security (Basic256Sha256 when not `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    None,
    Sign,
    #[default]
    SignAndEncrypt,
}

/// How the agent identifies itself to the server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    #[default]
    Anonymous,
    /// `{ user_password: { user: ..., password_file: ... } }`
    UserPassword {
        user: String,
        /// First line is the password; keep the file 0600.
        password_file: PathBuf,
    },
    /// `{ certificate: { cert: user.der, key: user.pem } }`: an X.509 user token.
    Certificate { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Subscribe,
    Poll,
}

adapter_api::mapped_point! {
    /// One node, then the shared mapping keys.
    pub struct Point {
        /// The node id: `ns=2;s=Tank1.Volume`, `ns=3;i=1042`, or with the
        /// namespace URI, `nsu=urn:vendor:plc;s=Tank1.Volume`, which keeps
        /// working when the server renumbers its namespaces.
        pub node: String,
    }
}

fn default_pki() -> PathBuf {
    PathBuf::from("opcua-pki")
}
fn default_interval() -> u64 {
    1000
}
fn default_queue() -> u64 {
    10
}
fn default_timeout() -> u64 {
    10_000
}
fn default_retry() -> u64 {
    30_000
}
fn sampling_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "sampling_interval_ms", 0, 3_600_000)
}
fn publishing_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "publishing_interval_ms", 10, 3_600_000)
}
fn queue<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "queue_size", 1, 1000)
}
fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "timeout_ms", 100, 120_000)
}
fn retry_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "retry_failed_items_ms", 1000, 3_600_000)
}
