//! Configuration of one MQTT broker connection (a section of the agent's YAML).
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// One broker connection and the points read from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDevice {
    /// Unique device name, used in logs and reading sources.
    pub name: String,
    /// `mqtt://host:port` (plain, usually 1883) or `mqtts://host:port`
    /// (TLS, usually 8883).
    pub url: String,
    /// Client id. Default `tankwatch-<name>`. Two clients with one id
    /// disconnect each other at the broker.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// Read from this file (first line), so the YAML holds no secret.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS settings of an `mqtts://` URL.
    #[serde(default)]
    pub tls: Option<MqttTls>,
    /// QoS of subscriptions and command publishes: 0 or 1. Default 1.
    #[serde(default = "default_qos", deserialize_with = "qos")]
    pub qos: u8,
    /// Start without the broker's stored session. Default true.
    #[serde(default = "yes")]
    pub clean_session: bool,
    /// Keepalive, s. 5 to 3600. Default 30.
    #[serde(default = "default_keepalive", deserialize_with = "keepalive")]
    pub keep_alive_s: u64,
    /// Connect (and write read-back) timeout, ms. 100 to 60,000. Default 5000.
    #[serde(default = "default_timeout", deserialize_with = "timeout_ms")]
    pub timeout_ms: u64,
    /// Upper bound of the reconnect backoff, ms. 100 to 600,000. Default 30,000.
    #[serde(
        default = "adapter_api::default_max_backoff_ms",
        deserialize_with = "adapter_api::max_backoff_ms"
    )]
    pub max_backoff_ms: u64,
    /// Largest payload accepted, bytes. 1 KiB to 16 MiB. Default 256 KiB;
    /// a larger one closes the connection (the broker's limit should match).
    #[serde(default = "default_max_payload", deserialize_with = "max_payload")]
    pub max_payload_bytes: u64,
    /// The Sparkplug B edge node whose metrics `metric:` points name.
    #[serde(default)]
    pub sparkplug: Option<Sparkplug>,
    /// The topic and metric map.
    pub points: Vec<Point>,
}

/// TLS of an `mqtts://` connection: the CA the broker's certificate must
/// chain to, and optionally a client certificate. The broker's certificate
/// must name the URL's host (use the broker's DNS name in `url`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// CA certificate(s), PEM.
    pub ca: PathBuf,
    /// Client certificate chain (PEM) for brokers that require one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// One Sparkplug B edge node (and optionally one of its devices).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sparkplug {
    pub group_id: String,
    pub edge_node_id: String,
    /// The device whose DBIRTH/DDATA carry the metrics; absent: the edge
    /// node's own NBIRTH/NDATA.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Act as this Sparkplug 3.0 primary host application: publish
    /// `spBv1.0/STATE/<host_id>` (retained, QoS 1) `{"online":true,...}` once
    /// connected, with `{"online":false,...}` as the connection's will and
    /// at a clean stop. Edge nodes configured to wait for a primary host
    /// publish only while it is online. Absent: no STATE is published.
    #[serde(default)]
    pub host_id: Option<String>,
}

adapter_api::mapped_point! {
    /// One value: a topic (plain number or JSON payload) or a Sparkplug
    /// metric, then the shared mapping keys.
    pub struct Point {
        /// Topic filter (`+` and `#` wildcards allowed) whose payloads carry
        /// the value: a plain number, or JSON with `json_path`.
        #[serde(default)]
        pub topic: Option<String>,
        /// Dotted path of the value in a JSON payload (`level.volume`,
        /// `tanks.0.volume`); absent: the payload is a plain number.
        #[serde(default)]
        pub json_path: Option<String>,
        /// Dotted path of the device timestamp in a JSON payload: Unix ms
        /// (a number) or RFC 3339 text. Absent: the receive time.
        #[serde(default)]
        pub ts_path: Option<String>,
        /// Sparkplug metric name (needs the device's `sparkplug` section).
        #[serde(default)]
        pub metric: Option<String>,
        /// Writes of a `topic` point: the topic the new value is published
        /// to, as a plain number in the device unit. The read-back is the
        /// next value on `topic`. (A writable `metric` point is written
        /// with NCMD/DCMD.)
        #[serde(default)]
        pub command_topic: Option<String>,
    }
}

fn yes() -> bool {
    true
}
fn default_qos() -> u8 {
    1
}
fn default_keepalive() -> u64 {
    30
}
fn default_timeout() -> u64 {
    5000
}
fn default_max_payload() -> u64 {
    256 * 1024
}
fn qos<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    adapter_api::bounded_u64(d, "qos", 0, 1).map(|v| v as u8)
}
fn keepalive<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "keep_alive_s", 5, 3600)
}
fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "timeout_ms", 100, 60_000)
}
fn max_payload<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "max_payload_bytes", 1024, 16 * 1024 * 1024)
}
