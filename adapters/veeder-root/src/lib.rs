//! Veeder-Root TLS console adapter: in-tank inventory (i201), tank alarms
//! (i205) and the console's own delivery records (i202), in the computer
//! format (checksummed hex floats) or the display format (the printed
//! report), chosen per device.
//!
//! Sans-IO: [`frame`] (commands, reply framing, checksum), [`computer`]
//! and [`display`] (the reports), [`report`] (what they say). The socket
//! is the thin shell in `session.rs`; the shared runner reconnects.
//! A poller: when the agent's channel is full it waits.
//!
//! Delivery records become [`adapter_api::GaugeDelivery`] events; the
//! agent decides which are new and ties them to loads (the gauge's record
//! beats its own volume-rise detector).

pub mod computer;
pub mod config;
pub mod display;
pub mod frame;
pub mod probe;
pub mod report;
mod session;

use adapter_api::runner::{self, Io, Points, Retry};
use adapter_api::{Adapter, AdapterError, BoxFuture, PointSpec, Sink, Stop, WhenFull, WriteRx};

pub use config::{Point, VeederRootDevice};
pub use frame::Format;

/// What a point reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Item {
    Volume,
    TcVolume,
    Ullage,
    Height,
    Water,
    Temperature,
    WaterVolume,
    DeliveryInProgress,
    LeakTestInProgress,
    InvalidHeight,
    AlarmCount,
    /// `alarm.<type>`: the type's code in [`report::TANK_ALARMS`].
    Alarm(u8),
}

impl TryFrom<String> for Item {
    type Error = String;
    fn try_from(s: String) -> Result<Item, String> {
        Ok(match s.as_str() {
            "volume" => Item::Volume,
            "tc_volume" => Item::TcVolume,
            "ullage" => Item::Ullage,
            "height" => Item::Height,
            "water" => Item::Water,
            "temperature" => Item::Temperature,
            "water_volume" => Item::WaterVolume,
            "status.delivery_in_progress" => Item::DeliveryInProgress,
            "status.leak_test_in_progress" => Item::LeakTestInProgress,
            "status.invalid_height" => Item::InvalidHeight,
            "alarm.count" => Item::AlarmCount,
            other => match other
                .strip_prefix("alarm.")
                .and_then(|a| report::TANK_ALARMS.iter().find(|t| t.1 == a))
            {
                Some(t) => Item::Alarm(t.0),
                None => {
                    return Err(format!(
                        "unknown item {other:?}: use volume, tc_volume, ullage, height, water, temperature, water_volume, status.delivery_in_progress, status.leak_test_in_progress, status.invalid_height, alarm.count or alarm.<type> ({})",
                        report::alarm_items().collect::<Vec<_>>().join(", ")
                    ));
                }
            },
        })
    }
}

impl Item {
    /// Read from i205 rather than i201.
    pub fn is_alarm(&self) -> bool {
        matches!(self, Item::AlarmCount | Item::Alarm(_))
    }
    /// Only the computer format carries it.
    fn computer_only(&self) -> bool {
        matches!(
            self,
            Item::WaterVolume
                | Item::DeliveryInProgress
                | Item::LeakTestInProgress
                | Item::InvalidHeight
        )
    }
    /// The item's config text.
    pub fn name(&self) -> String {
        match self {
            Item::Volume => "volume".into(),
            Item::TcVolume => "tc_volume".into(),
            Item::Ullage => "ullage".into(),
            Item::Height => "height".into(),
            Item::Water => "water".into(),
            Item::Temperature => "temperature".into(),
            Item::WaterVolume => "water_volume".into(),
            Item::DeliveryInProgress => "status.delivery_in_progress".into(),
            Item::LeakTestInProgress => "status.leak_test_in_progress".into(),
            Item::InvalidHeight => "status.invalid_height".into(),
            Item::AlarmCount => "alarm.count".into(),
            Item::Alarm(c) => format!("alarm.{}", report::TankAlarm::Known(*c).item()),
        }
    }
}

/// Configuration errors (console failures become readings).
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
            adapter: "veeder_root".into(),
            detail: e.to_string(),
        }
    }
}

/// Checks a reply (SOH..=ETX) to `cmd` and parses its report; a parse
/// error carries the raw reply like a framing error.
pub fn decode(cmd: &frame::Command, raw: &[u8]) -> Result<report::Report, frame::FrameError> {
    let data = frame::check(cmd, raw)?;
    match cmd.format {
        Format::Computer => computer::parse(cmd.function, &data),
        Format::Display => display::parse(cmd.function, &data),
    }
    .map_err(|what| frame::FrameError::Malformed {
        what: format!("{}: {what}", cmd.text()),
        raw: raw.to_vec(),
    })
}

/// The console clock's zone: the named one, or the system's.
pub fn timezone(dev: &VeederRootDevice) -> Result<jiff::tz::TimeZone, String> {
    match &dev.timezone {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
            format!("timezone {name:?}: {e}; use an IANA name such as America/Chicago or UTC")
        }),
        None => Ok(jiff::tz::TimeZone::system()),
    }
}

/// Checks what serde cannot: the address, the security code, every point,
/// and that each tank number belongs to one asset.
pub fn validate(dev: &VeederRootDevice) -> Result<(), Error> {
    let cfg = |detail: String| Error::Config {
        device: dev.name.clone(),
        detail,
    };
    adapter_api::validate::host_port(&dev.address).map_err(|e| cfg(format!("address {e}")))?;
    if !dev.security_code.is_empty()
        && (dev.security_code.len() != 6
            || !dev.security_code.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(cfg(
            "security_code: use the console's 6 letters or digits, or leave it out".into(),
        ));
    }
    timezone(dev).map_err(cfg)?;
    if dev.points.is_empty() {
        return Err(cfg("has no points; add at least one under `points`".into()));
    }
    for (index, p) in dev.points.iter().enumerate() {
        let perr = |detail: String| Error::Point {
            device: dev.name.clone(),
            point: format!("{index} ({}.{})", p.asset, p.field),
            detail,
        };
        p.check_mapping().map_err(perr)?;
        if !(1..=99).contains(&p.tank) {
            return Err(perr(format!(
                "tank {}: use the console's tank number, 1 to 99",
                p.tank
            )));
        }
        if p.writable {
            return Err(perr(
                "a tank gauge's values are read-only; remove `writable`".into(),
            ));
        }
        if dev.format == Format::Display && p.item.computer_only() {
            return Err(perr(format!(
                "item {} is only in the computer format; use format: computer or remove the point",
                p.item.name()
            )));
        }
        if let Some(other) = dev
            .points
            .iter()
            .find(|o| o.tank == p.tank && o.asset != p.asset)
        {
            return Err(perr(format!(
                "tank {} is mapped to asset {} and to {}: one tank, one asset",
                p.tank, p.asset, other.asset
            )));
        }
    }
    if dev.delivery_poll_ms > 0 {
        for p in &dev.points {
            if !dev
                .points
                .iter()
                .any(|o| o.tank == p.tank && o.item == Item::Volume)
            {
                return Err(cfg(format!(
                    "tank {} has no `volume` point: delivery reports need its unit; add one or set delivery_poll_ms: 0",
                    p.tank
                )));
            }
        }
    }
    Ok(())
}

/// The protocol-free points, in config order.
pub fn specs(dev: &VeederRootDevice) -> Vec<PointSpec> {
    dev.points
        .iter()
        .map(|p| {
            p.spec(format!(
                "veeder-root://{}/tank{}/{}",
                dev.address,
                p.tank,
                p.item.name()
            ))
        })
        .collect()
}

/// The adapter for one console.
pub struct VeederRootAdapter {
    dev: VeederRootDevice,
}

impl VeederRootAdapter {
    pub fn new(dev: VeederRootDevice) -> Result<Self, Error> {
        validate(&dev)?;
        Ok(Self { dev })
    }
}

impl Adapter for VeederRootAdapter {
    fn kind(&self) -> &'static str {
        "veeder_root"
    }
    fn name(&self) -> &str {
        &self.dev.name
    }
    fn points(&self) -> Vec<PointSpec> {
        specs(&self.dev)
    }
    fn when_full(&self) -> WhenFull {
        WhenFull::Block
    }
    fn run(
        self: Box<Self>,
        sink: Sink,
        writes: WriteRx,
        stop: Stop,
    ) -> BoxFuture<Result<(), AdapterError>> {
        Box::pin(async move {
            let dev = self.dev;
            let tz = timezone(&dev).map_err(|detail| Error::Config {
                device: dev.name.clone(),
                detail,
            })?;
            let retry = Retry {
                initial_ms: 500,
                max_ms: dev.max_backoff_ms,
            };
            let io = Io::new(sink, Points::new(specs(&dev)), writes, stop);
            runner::run(session::Console::new(dev, tz), io, retry).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(yaml: &str) -> Result<VeederRootDevice, String> {
        let d: VeederRootDevice = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        validate(&d).map_err(|e| e.to_string())?;
        Ok(d)
    }

    const BASE: &str = "name: atg\naddress: \"10.0.0.5:10001\"\ntimezone: UTC\n";

    #[test]
    fn a_console_config_is_checked_point_by_point_with_the_fix_named() {
        let ok = format!(
            "{BASE}points:\n  - {{ tank: 1, item: volume, asset: t1, field: volume, unit: gal }}\n  - {{ tank: 1, item: alarm.high_water, asset: t1, field: alarm.water, unit: bool, class: alarm }}\n"
        );
        let d = dev(&ok).unwrap();
        assert_eq!(d.format, Format::Computer);
        assert_eq!(d.points[1].item, Item::Alarm(3));
        let s = specs(&d);
        assert_eq!(s[0].source, "veeder-root://10.0.0.5:10001/tank1/volume");
        assert_eq!(s[0].conv.unit, "L");
        assert!(s[1].on_change, "alarms: on change");
        let cases = [
            (
                ok.replace("alarm.high_water", "alarm.nope"),
                "unknown item \"alarm.nope\"",
            ),
            (
                ok.replace("tank: 1, item: volume", "tank: 0, item: volume"),
                "1 to 99",
            ),
            (
                ok.replace("unit: gal }", "unit: gal, writable: true }"),
                "read-only",
            ),
            (
                ok.replace("tank: 1, item: alarm", "tank: 2, item: alarm"),
                "tank 2 has no `volume` point",
            ),
            (
                ok.replace("asset: t1, field: alarm", "asset: t9, field: alarm"),
                "one tank, one asset",
            ),
            (
                ok.replace("timezone: UTC", "timezone: Mars/Olympus"),
                "timezone \"Mars/Olympus\"",
            ),
            (
                ok.replace("timezone: UTC", "security_code: ab"),
                "security_code",
            ),
            (ok.replace("10.0.0.5:10001", "nohost"), "address"),
            (
                format!("{ok}poll_interval_ms: 10\n"),
                "poll_interval_ms: 10 is out of range",
            ),
            (format!("{ok}delivery_poll_ms: 10\n"), "use 0 (off)"),
            (format!("{ok}format: binary\n"), "unknown variant"),
        ];
        for (yaml, want) in cases {
            let e = dev(&yaml).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        let display = format!("{ok}format: display\n").replace(
            "item: alarm.high_water",
            "item: status.delivery_in_progress",
        );
        assert!(
            dev(&display)
                .unwrap_err()
                .contains("only in the computer format")
        );
        let no_deliveries = format!("{ok}delivery_poll_ms: 0\n")
            .replace("tank: 1, item: alarm", "tank: 2, item: alarm")
            .replace("asset: t1, field: alarm", "asset: t2, field: alarm");
        assert!(dev(&no_deliveries).is_ok());
    }
}
