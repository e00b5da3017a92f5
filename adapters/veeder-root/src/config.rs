//! Configuration of one Veeder-Root TLS console (a section of the agent's YAML).
use serde::{Deserialize, Deserializer};

use crate::frame::Format;

/// One TLS console (TLS-3XX/4XX, or a serial-to-TCP bridge in front of one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VeederRootDevice {
    /// Unique device name, used in logs and reading sources.
    pub name: String,
    /// `host:port` of the console's serial interface (usually port 10001).
    pub address: String,
    /// Reply format: `computer` (default; checksummed) or `display`
    /// (the printed report; older consoles and many bridges only offer it).
    #[serde(default = "default_format")]
    pub format: Format,
    /// The console's serial security code, if it has one (6 characters,
    /// sent before each command). Default none.
    #[serde(default)]
    pub security_code: String,
    /// Ask each mapped tank on its own (`i20101`, `i20102`, ...) instead of
    /// all tanks at once (`i20100`): for a console with many tanks of which
    /// the site maps few, behind a slow serial line. Default false.
    #[serde(default)]
    pub per_tank_requests: bool,
    /// Time between inventory polls (i201, and i205 when alarms are
    /// mapped), ms. 1,000 to 3,600,000. Default 10,000.
    #[serde(default = "default_poll", deserialize_with = "poll_ms")]
    pub poll_interval_ms: u64,
    /// Time between delivery report polls (i202), ms; 0 = do not read
    /// delivery reports. 0 or 5,000 to 86,400,000. Default 60,000.
    #[serde(
        default = "default_delivery_poll",
        deserialize_with = "delivery_poll_ms"
    )]
    pub delivery_poll_ms: u64,
    /// Longest silence (before a reply's first byte, and between its bytes)
    /// and the connect timeout, ms. 100 to 60,000. Default 5,000. A reply
    /// that keeps coming may take longer (a 16-tank i202 at 9600 baud takes
    /// 17 s), up to 90 s in all.
    #[serde(default = "default_timeout", deserialize_with = "timeout_ms")]
    pub timeout_ms: u64,
    /// Upper bound of the reconnect backoff, ms. 100 to 600,000. Default 30,000.
    #[serde(
        default = "adapter_api::default_max_backoff_ms",
        deserialize_with = "adapter_api::max_backoff_ms"
    )]
    pub max_backoff_ms: u64,
    /// Time zone of the console's clock (IANA name, e.g. `America/Chicago`):
    /// delivery times are read in it. Default: the agent machine's zone.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Which values become which asset field.
    pub points: Vec<Point>,
}

adapter_api::mapped_point! {
    /// One value of one tank: its tank number and item, then the shared
    /// mapping keys. The unit is the console's (gal/L, in/mm, degF/degC).
    pub struct Point {
        /// Tank number on the console, 1-99.
        pub tank: u8,
        /// What to read: `volume`, `tc_volume`, `ullage`, `height`, `water`,
        /// `temperature` (i201); `water_volume`, `status.delivery_in_progress`,
        /// `status.leak_test_in_progress`, `status.invalid_height` (i201,
        /// computer format only); `alarm.count` or `alarm.<type>` (i205,
        /// 1 while active; types in docs/veeder-root.md).
        pub item: crate::Item,
    }
}

fn default_format() -> Format {
    Format::Computer
}
fn default_poll() -> u64 {
    10_000
}
fn default_delivery_poll() -> u64 {
    60_000
}
fn default_timeout() -> u64 {
    5_000
}
fn poll_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "poll_interval_ms", 1_000, 3_600_000)
}
fn delivery_poll_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = adapter_api::bounded_u64(d, "delivery_poll_ms", 0, 86_400_000)?;
    if v != 0 && v < 5_000 {
        return Err(serde::de::Error::custom(format!(
            "delivery_poll_ms: {v} is out of range: use 0 (off) or a value from 5000 to 86400000"
        )));
    }
    Ok(v)
}
fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "timeout_ms", 100, 60_000)
}
