//! The agent's YAML configuration. Relative paths are resolved against the
//! directory of the config file. `edge-agent check-config FILE` runs
//! [`load`] and prints the first problem with its line and column.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

pub use crate::devices::DeviceConfig;

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {msg}", match (.line, .column) { (Some(l), Some(c)) => format!(":{l}:{c}"), (Some(l), None) => format!(":{l}"), _ => String::new() })]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub msg: String,
}

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This site's id; must equal the site in the agent certificate.
    pub site_id: String,
    pub headend: HeadendConfig,
    pub tls: TlsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub uplink: UplinkConfig,
    #[serde(default)]
    pub status: StatusConfig,
    /// How far a device's own timestamp may be from the agent's clock.
    #[serde(default)]
    pub device_time: DeviceTimeConfig,
    /// The site's assets (tanks, controllers, meters, sensors, pumps).
    pub assets: Vec<AssetConfig>,
    /// The devices to read, each with its point mapping:
    /// `- modbus: { name: ..., address: ..., points: [...] }`,
    /// `- mqtt: { name: ..., url: ..., topics: [...] }`.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub devices: Vec<DeviceConfig>,
    /// Safety limits of writable points (setpoints); a writable point
    /// without an entry here cannot be written by a command.
    #[serde(default)]
    pub setpoints: Vec<crate::limits::SetpointLimits>,
    /// Delivery detection from tank volume rises (matched to the loads the
    /// headend announced with ETA actions).
    #[serde(default)]
    pub deliveries: crate::delivery::DetectConfig,
    /// The agent's OPC UA server for SCADA clients. Absent: no server, and
    /// the agent listens nowhere on the network.
    #[serde(default)]
    pub opcua_server: Option<agent_opcua_server::ServerConfig>,
    /// When the agent's own conditions (a device offline, the log
    /// dropping, storage nearly full, the certificate expiring) become
    /// alarms of the asset `agent`.
    #[serde(default)]
    pub self_alarms: crate::selfwatch::SelfAlarmsConfig,
}

impl AgentConfig {
    /// The device that has the writable point `asset.field`, if any.
    pub fn device_of_writable(&self, asset: &str, field: &str) -> Option<&str> {
        self.devices.iter().find_map(|d| {
            d.points()
                .iter()
                .any(|p| p.writable && p.asset == asset && p.field == field)
                .then_some(d.name())
        })
    }

    /// The kind of asset `id`, if declared.
    pub fn asset_kind(&self, id: &str) -> Option<AssetKind> {
        self.assets.iter().find(|a| a.id == id).map(|a| a.kind)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadendConfig {
    /// `host:port` of the headend's gRPC (mTLS) endpoint, or a list of
    /// them (replicas, or load balancers): the agent starts at one picked
    /// at random, keeps a working one and moves on when one fails. Names
    /// are resolved again at each connect.
    pub address: Addresses,
    /// Name to verify in the headend's certificate (the service's name,
    /// the same for every replica). Default: the host of the address dialled.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// One `host:port` or a list of them (1 to [`Addresses::MAX`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses(Vec<String>);

impl Addresses {
    pub const MAX: usize = 16;

    pub fn list(&self) -> &[String] {
        &self.0
    }

    pub fn first(&self) -> &str {
        self.0.first().map(String::as_str).unwrap_or("")
    }
}

impl std::fmt::Display for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let v = match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "headend.address: a host:port, or a list of them (e.g. [a.example.com:7443, b.example.com:7443])",
            )
        })? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        Ok(Addresses(v))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Agent certificate (PEM), issued by `pki agent --site SITE`.
    pub cert: PathBuf,
    /// Agent private key (PEM, mode 0600).
    pub key: PathBuf,
    /// CA certificate the headend's certificate must chain to.
    pub ca: PathBuf,
}

/// Store-and-forward log settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Directory of the on-disk log. Default `data/log`.
    #[serde(default = "default_log_dir")]
    pub dir: PathBuf,
    /// Longest time a reading waits in memory before its fsync, ms; a crash
    /// (or power loss) can lose at most this window of never-sent readings.
    /// 1 to 10,000. Default 200.
    #[serde(default = "default_flush", deserialize_with = "flush_ms")]
    pub flush_interval_ms: u64,
    /// Fsync after every group of appends instead of every interval.
    #[serde(default)]
    pub sync_every_batch: bool,
    /// Bound of the log on disk, bytes (plus a write-ahead log of at most
    /// 1 MiB). 1 MiB to 1 TiB. Default 1 GiB (about 8 million readings).
    #[serde(default = "default_max_bytes", deserialize_with = "max_bytes")]
    pub max_bytes: u64,
    /// What to drop when the log is full: `priority` (default: oldest
    /// telemetry first; alarms, events, command acks kept longest) or
    /// `oldest` (oldest first, whatever it is). Every drop is counted and
    /// reported to the headend as a gap.
    #[serde(default)]
    pub drop_policy: DropPolicyConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropPolicyConfig {
    #[default]
    Priority,
    Oldest,
}

impl LogConfig {
    /// The log's open options.
    pub fn options(&self) -> sflog::Options {
        sflog::Options {
            max_bytes: self.max_bytes,
            policy: match self.drop_policy {
                DropPolicyConfig::Priority => sflog::DropPolicy::Priority,
                DropPolicyConfig::Oldest => sflog::DropPolicy::Oldest,
            },
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dir: default_log_dir(),
            flush_interval_ms: default_flush(),
            sync_every_batch: false,
            max_bytes: default_max_bytes(),
            drop_policy: DropPolicyConfig::default(),
        }
    }
}

/// Uplink (agent -> headend) settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Most readings per batch (the headend may lower it). 1 to 5000. Default 1000.
    #[serde(default = "default_batch", deserialize_with = "batch_n")]
    pub batch_max_readings: u64,
    /// Most payload bytes per batch. 1 KiB to 8 MiB. Default 1 MiB.
    #[serde(default = "default_batch_bytes", deserialize_with = "batch_bytes")]
    pub batch_max_bytes: u64,
    /// Batches sent but not yet acknowledged. 1 to 64. Default 4. (Fewer
    /// when the link is slow: at most ~3 s of the measured rate is
    /// unacknowledged, and a batch is ~1 s of it.)
    #[serde(default = "default_window", deserialize_with = "window")]
    pub window: u64,
    /// Longest a live entry waits for a fuller batch, ms: fewer, fuller
    /// batches cost fewer bytes per reading on a metered link. Alarms,
    /// events and command answers never wait. 0 to 10,000. Default 2,000.
    #[serde(default = "default_linger", deserialize_with = "linger")]
    pub linger_ms: u64,
    /// First reconnect delay, ms (then doubling, with jitter). 50 to
    /// 60,000. Default 500.
    #[serde(
        default = "default_backoff_initial",
        deserialize_with = "backoff_initial"
    )]
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, ms; the uplink tries at least this often.
    /// 1,000 to 3,600,000, and not below `backoff_initial_ms`. Default 30,000.
    #[serde(default = "default_backoff_max", deserialize_with = "backoff_max")]
    pub backoff_max_ms: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            batch_max_readings: default_batch(),
            batch_max_bytes: default_batch_bytes(),
            window: default_window(),
            linger_ms: default_linger(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
        }
    }
}

/// Device timestamps the agent does not trust (issue 29): a reading whose
/// device time is further than `max_skew_s` from the agent's receive time
/// (an hour in the future pins the "latest" value for an hour; a retained
/// value from long ago looks fresh) is kept with the receive time instead,
/// quality `uncertain`, and counted (`time_untrusted` on `/status`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceTimeConfig {
    /// 1 to 86,400 s. Default 300 (5 minutes).
    #[serde(default = "default_skew_s", deserialize_with = "skew_s")]
    pub max_skew_s: u64,
}

impl Default for DeviceTimeConfig {
    fn default() -> Self {
        Self {
            max_skew_s: default_skew_s(),
        }
    }
}

fn default_skew_s() -> u64 {
    300
}

fn skew_s<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "max_skew_s", 1, 86_400)
}

/// The local status endpoint (`/metrics`, `/status`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// Address to serve on; loopback by default so that nothing is open to
    /// the network. `null` turns the endpoint off. Default 127.0.0.1:9470.
    #[serde(default = "default_status_listen")]
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            listen: default_status_listen(),
        }
    }
}

fn default_status_listen() -> Option<std::net::SocketAddr> {
    Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9470)))
}

/// What an asset is. Only tanks get delivery detection and its
/// `delivery.in_progress` interlock reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    Tank,
    /// A site controller (pumps, setpoints, interlocks).
    Controller,
    /// A flow or energy meter.
    Meter,
    /// A standalone sensor (temperature probe, leak or sump sensor).
    Sensor,
    /// A pump or dispenser.
    #[serde(alias = "dispenser")]
    Pump,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Unique asset id within the site, e.g. `tank-1`.
    pub id: String,
    pub kind: AssetKind,
    #[serde(default)]
    pub name: String,
    /// Product (tanks), e.g. `diesel`.
    #[serde(default)]
    pub product: String,
    /// Nominal capacity (tanks), in `capacity_unit`.
    #[serde(default)]
    pub capacity: f64,
    #[serde(default = "default_litres")]
    pub capacity_unit: String,
    /// Free-form extensions.
    #[serde(default)]
    pub details: std::collections::BTreeMap<String, String>,
}

fn default_log_dir() -> PathBuf {
    PathBuf::from("data/log")
}
fn default_flush() -> u64 {
    200
}
fn default_max_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn max_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "max_bytes", 1024 * 1024, 1 << 40)
}
fn default_batch() -> u64 {
    1000
}
fn default_batch_bytes() -> u64 {
    1024 * 1024
}
fn default_window() -> u64 {
    4
}
fn default_linger() -> u64 {
    2000
}
fn default_backoff_initial() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    30_000
}
fn default_litres() -> String {
    "L".into()
}

fn flush_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "flush_interval_ms", 1, 10_000)
}
fn batch_n<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "batch_max_readings", 1, 5000)
}
fn batch_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "batch_max_bytes", 1024, 8 * 1024 * 1024)
}
fn window<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "window", 1, 64)
}
fn linger<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "linger_ms", 0, 10_000)
}
fn backoff_initial<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "backoff_initial_ms", 50, 60_000)
}
fn backoff_max<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "backoff_max_ms", 1000, 3_600_000)
}

mod check;
pub use check::{load, load_for_enroll, parse};

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"site_id: site-1
headend:
  address: 127.0.0.1:7443
tls: { cert: a.pem, key: a.key, ca: ca.pem }
assets:
  - { id: tank-1, kind: tank, capacity: 20000 }
devices:
  - modbus:
      name: atg
      address: 127.0.0.1:502
      points:
        - { asset: tank-1, field: volume, register: 0, type: f32, unit: L }
"#;

    fn err_of(text: &str) -> ConfigError {
        parse("site.yaml", text).unwrap_err()
    }

    #[test]
    fn the_headend_address_is_one_host_port_or_a_list_of_them() {
        let c = parse("site.yaml", GOOD).unwrap();
        assert_eq!(c.headend.address.list(), ["127.0.0.1:7443"]);
        let listed = GOOD.replace(
            "address: 127.0.0.1:7443",
            "address: [he-1.example.com:7443, \"[::1]:7443\", 10.0.0.3:7443]",
        );
        let c = parse("site.yaml", &listed).unwrap();
        assert_eq!(
            c.headend.address.list(),
            ["he-1.example.com:7443", "[::1]:7443", "10.0.0.3:7443"]
        );
        let many = format!(
            "address: [{}]",
            (0..17)
                .map(|i| format!("h{i}:7443"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let e = err_of(&GOOD.replace("address: 127.0.0.1:7443", &many));
        assert!(e.msg.contains("17 addresses; give 1 to 16"), "{e}");
    }

    #[test]
    fn a_valid_file_parses_with_defaults() {
        let c = parse("site.yaml", GOOD).unwrap();
        assert_eq!(c.log.flush_interval_ms, 200);
        assert_eq!(c.uplink.batch_max_readings, 1000);
        let DeviceConfig::Modbus(m) = &c.devices[0] else {
            panic!("a modbus device")
        };
        assert_eq!(m.poll_interval_ms, 1000);
    }

    #[test]
    fn an_unknown_key_is_named_with_line_and_column() {
        let e = err_of(&GOOD.replace(
            "      address: 127.0.0.1:502",
            "      adress: 127.0.0.1:502",
        ));
        assert_eq!(e.line, Some(10), "{e}");
        assert!(e.column.is_some());
        assert!(e.to_string().contains("unknown field `adress`"), "{e}");
        assert!(e.to_string().starts_with("site.yaml:10:"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let e = err_of(&GOOD.replace("register: 0", "register: zero"));
        assert_eq!(e.line, Some(12), "{e}");
        assert!(
            e.msg.contains("invalid type") || e.msg.contains("invalid value"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = err_of(&GOOD.replace("site_id: site-1\n", ""));
        assert!(e.msg.contains("missing field `site_id`"), "{e}");
        assert!(e.line.is_some());
    }

    #[test]
    fn an_out_of_range_value_says_the_range() {
        let e = err_of(&GOOD.replace(
            "      address: 127.0.0.1:502",
            "      address: 127.0.0.1:502\n      poll_interval_ms: 5",
        ));
        assert!(e.msg.contains("from 10 to 3600000"), "{e}");
        assert_eq!(e.line, Some(11), "{e}");
    }

    #[test]
    fn a_point_naming_an_undeclared_asset_points_at_its_line() {
        let e = err_of(&GOOD.replace("asset: tank-1", "asset: tank-9"));
        assert_eq!(e.line, Some(12), "{e}");
        assert!(e.msg.contains("not declared"), "{e}");
    }

    #[test]
    fn setpoint_limits_must_name_a_writable_point() {
        let with = |extra: &str| {
            format!(
                "{GOOD}setpoints:\n  - {{ asset: tank-1, field: volume, min: 0, max: 10 }}\n{extra}"
            )
        };
        let e = err_of(&with(""));
        assert!(e.msg.contains("not a writable point"), "{e}");
        let ok = GOOD.replace("unit: L }", "unit: L, writable: true }")
            + "setpoints:\n  - { asset: tank-1, field: volume, min: 0, max: 10 }\n";
        assert_eq!(parse("site.yaml", &ok).unwrap().setpoints.len(), 1);
        let e = err_of(&ok.replace("min: 0, max: 10", "min: 10, max: 0"));
        assert!(e.msg.contains("above max"), "{e}");
    }

    #[test]
    fn an_unknown_unit_lists_the_known_ones() {
        let e = err_of(&GOOD.replace("unit: L }", "unit: barrels }"));
        assert!(
            e.msg.contains("unknown unit") && e.msg.contains("gal"),
            "{e}"
        );
    }

    /// Issue 27: `litre` and typos passed, and the tank never reached the
    /// headend's lists.
    #[test]
    fn a_tank_capacity_unit_must_be_a_volume_unit_the_agent_knows_named_at_its_line() {
        for ok in ["L", "litre", "m3", "gal", "impgal"] {
            let text = GOOD.replace(
                "capacity: 20000 }",
                &format!("capacity: 20000, capacity_unit: {ok} }}"),
            );
            assert!(parse("site.yaml", &text).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("litres", "not a volume unit"),
            ("kW", "not a volume unit"),
            ("Ltr", "not a volume unit"),
        ] {
            let e = err_of(&GOOD.replace(
                "capacity: 20000 }",
                &format!("capacity: 20000, capacity_unit: {bad} }}"),
            ));
            assert!(e.msg.contains(says) && e.msg.contains("m3"), "{bad}: {e}");
            assert_eq!(e.line, Some(6), "{e}");
        }
        let e = err_of(&GOOD.replace(
            "capacity: 20000 }",
            "capacity: 20000 }\n  - { id: c-1, kind: controller, capacity: 40, capacity_unit: kilowatt }",
        ));
        assert!(e.msg.contains("not a unit this agent knows"), "{e}");
    }

    /// Issue 8, item 8: each of these passed `check-config` before.
    #[test]
    fn hostile_values_are_refused_with_the_key_and_line() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "headend:\n",
                "uplink: { backoff_initial_ms: 0 }\nheadend:\n",
                "backoff_initial_ms: 0 is out of range",
            ),
            (
                "headend:\n",
                "uplink: { backoff_max_ms: 18446744073709551615 }\nheadend:\n",
                "backoff_max_ms",
            ),
            (
                "headend:\n",
                "uplink: { backoff_initial_ms: 50000, backoff_max_ms: 2000 }\nheadend:\n",
                "above backoff_max_ms",
            ),
            (
                "capacity: 20000",
                "capacity: -5",
                "capacity -5 is out of range",
            ),
            (
                "capacity: 20000",
                "capacity: .inf",
                "capacity inf is out of range",
            ),
            (
                "capacity: 20000",
                "capacity: .nan",
                "capacity NaN is out of range",
            ),
            ("address: 127.0.0.1:502", "address: 127.0.0.1:99999", "port"),
            ("address: 127.0.0.1:502", "address: \"::::\"", "address"),
            (
                "address: 127.0.0.1:7443",
                "address: \"::::\"",
                "headend.address",
            ),
            (
                "address: 127.0.0.1:7443",
                "address: \"bad host:7443\"",
                "headend.address",
            ),
            (
                "address: 127.0.0.1:7443",
                "address: [a.example.com:7443, \"b example:7443\"]",
                "headend.address \"b example:7443\"",
            ),
            (
                "address: 127.0.0.1:7443",
                "address: [a.example.com:7443, a.example.com:7443]",
                "listed twice",
            ),
            ("address: 127.0.0.1:7443", "address: []", "0 addresses"),
            (
                "address: 127.0.0.1:7443",
                "address: { host: a }",
                "a host:port, or a list of them",
            ),
            ("id: tank-1, kind", "id: \"tank\\0-1\", kind", "assets: id"),
            (
                "id: tank-1, kind",
                "id: agent, kind",
                "reserved for the agent's own conditions",
            ),
            (
                "kind: tank,",
                "kind: tank, name: \"Tank\\0one\",",
                "control character",
            ),
            ("name: atg", "name: \"atg\\u0007\"", "devices: name"),
            (
                "field: volume",
                "field: \"vol ume\"",
                "(tank-1.vol ume): field",
            ),
        ];
        for (from, to, want) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{from} not found");
            let e = err_of(&text);
            assert!(e.to_string().contains(want), "{to}: {e}");
            assert!(e.line.is_some(), "{to}: no line in {e}");
        }
    }

    #[test]
    fn self_alarm_bounds_are_checked_and_default_when_absent() {
        let e = err_of(&format!(
            "{GOOD}self_alarms:\n  device_offline_after_s: 1\n"
        ));
        assert!(e.to_string().contains("device_offline_after_s"), "{e}");
        let e = err_of(&format!(
            "{GOOD}self_alarms:\n  storage_nearly_full_pct: 100\n"
        ));
        assert!(e.to_string().contains("storage_nearly_full_pct"), "{e}");
        let e = err_of(&format!("{GOOD}self_alarms:\n  disk_pct: 90\n"));
        assert!(e.to_string().contains("disk_pct"), "{e}");
        let ok = parse(
            "site.yaml",
            &format!("{GOOD}self_alarms:\n  device_offline_after_s: 120\n"),
        )
        .expect("valid");
        assert_eq!(ok.self_alarms.device_offline_after_s, 120);
        assert_eq!(ok.self_alarms.storage_nearly_full_pct, 90);
    }

    #[test]
    fn yaml_amplification_and_deep_nesting_are_refused_quickly() {
        let laughs = format!(
            "{GOOD}x: &a [\"lol\",\"lol\",\"lol\",\"lol\"]\ny: &b [*a,*a,*a,*a]\nz: &c [*b,*b,*b,*b]\n"
        );
        let e = err_of(&laughs);
        assert!(e.msg.contains("anchors"), "{e}");
        assert_eq!(e.line, Some(13), "{e}");
        let deep = format!("{GOOD}x: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let t = std::time::Instant::now();
        assert!(err_of(&deep).msg.contains("nested"));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }
}
