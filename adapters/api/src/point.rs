//! The shared mapping model: what every adapter's point config says about a
//! point beside its protocol address (asset, field, unit, scale, drop class,
//! on-change, writable), and the resolved [`PointSpec`] the agent and the
//! runner use without knowing the protocol.

use serde::{Deserialize, Serialize};

use crate::units;

/// Which drop class a point's readings belong to when the agent's log is
/// full: telemetry goes first, alarms are kept longest. Set per point in
/// the configuration (`class: alarm`), never guessed from the field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropClass {
    #[default]
    Telemetry,
    Alarm,
}

impl DropClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DropClass::Telemetry => "telemetry",
            DropClass::Alarm => "alarm",
        }
    }
}

/// `canonical = raw * a + b`: a point's scale and offset composed with the
/// conversion of its device unit to the canonical unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    /// The canonical unit (`L`, `mm`, `degC`, ...).
    pub unit: &'static str,
    pub a: f64,
    pub b: f64,
}

impl Linear {
    /// `value = raw * scale + offset` in `unit`, then into the canonical
    /// unit; `None` for an unknown unit or a zero or non-finite scale.
    pub fn new(scale: f64, offset: f64, unit: &str) -> Option<Linear> {
        let (canon, f, o) = units::conversion(unit)?;
        if !(scale.is_finite() && offset.is_finite()) || scale == 0.0 {
            return None;
        }
        Some(Linear {
            unit: canon,
            a: scale * f,
            b: offset * f + o,
        })
    }
    /// The identity in `unit` (flags, bits).
    pub fn identity(unit: &str) -> Option<Linear> {
        Linear::new(1.0, 0.0, unit)
    }
    pub fn to_canonical(&self, raw: f64) -> f64 {
        raw * self.a + self.b
    }
    /// The raw device value that reads as `canonical` (for writes).
    pub fn to_raw(&self, canonical: f64) -> f64 {
        (canonical - self.b) / self.a
    }
}

/// One point as the agent and the runner see it, whatever the protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub asset: String,
    pub field: String,
    pub conv: Linear,
    pub writable: bool,
    pub class: DropClass,
    /// Emit only on change (and on the first good value after a failure).
    pub on_change: bool,
    /// `<kind>://<endpoint>/<address>`, carried by each reading.
    pub source: String,
}

/// Declares an adapter's point config struct with the shared mapping keys
/// (`asset`, `field`, `unit`, `scale`, `offset`, `class`, `on_change`,
/// `writable`) after the protocol's own keys, so every adapter's YAML reads
/// alike and unknown keys are still refused (`serde(flatten)` would lose
/// `deny_unknown_fields`).
#[macro_export]
macro_rules! mapped_point {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// Asset id the value belongs to (declared under `assets`).
            pub asset: String,
            /// Normalized field name, e.g. `volume`.
            pub field: String,
            /// Device unit of the scaled value (see `adapter_api::units::KNOWN`);
            /// converted to the canonical unit. Default none.
            #[serde(default)]
            pub unit: String,
            /// `value = raw * scale + offset`, before the unit conversion. Default 1.
            #[serde(default = "adapter_api::point::one")]
            pub scale: f64,
            #[serde(default)]
            pub offset: f64,
            /// Drop class when the log is full: `telemetry` (default) or `alarm`.
            #[serde(default)]
            pub class: adapter_api::DropClass,
            /// Emit only when the value changes. Default: true for `class: alarm`.
            #[serde(default)]
            pub on_change: Option<bool>,
            /// Commands may write the point (with a read-back). Default false.
            #[serde(default)]
            pub writable: bool,
        }

        impl $name {
            /// The shared mapping of this point; `None` for an unknown unit
            /// or a zero scale (`validate` reports those).
            pub fn linear(&self) -> Option<adapter_api::Linear> {
                adapter_api::Linear::new(self.scale, self.offset, &self.unit)
            }
            /// The protocol-free description, given the reading source.
            pub fn spec(&self, source: String) -> adapter_api::PointSpec {
                adapter_api::PointSpec {
                    asset: self.asset.clone(),
                    field: self.field.clone(),
                    conv: self.linear().unwrap_or(adapter_api::Linear { unit: "", a: 1.0, b: 0.0 }),
                    writable: self.writable,
                    class: self.class,
                    on_change: self.on_change.unwrap_or(self.class == adapter_api::DropClass::Alarm),
                    source,
                }
            }
            /// Checks the shared keys: `Err` names the key and what to do.
            pub fn check_mapping(&self) -> Result<(), String> {
                if adapter_api::units::conversion(&self.unit).is_none() {
                    return Err(format!(
                        "unknown unit {:?}; known units: {}",
                        self.unit,
                        adapter_api::units::KNOWN.join(", ")
                    ));
                }
                if !(self.scale.is_finite() && self.scale != 0.0 && self.offset.is_finite()) {
                    return Err(format!(
                        "scale {} / offset {}: use finite numbers and a non-zero scale",
                        self.scale, self.offset
                    ));
                }
                adapter_api::validate::ident(&self.asset).map_err(|e| format!("asset {e}"))?;
                adapter_api::validate::ident(&self.field).map_err(|e| format!("field {e}"))?;
                Ok(())
            }
        }
    };
}

/// serde default of `scale`.
pub fn one() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_offset_and_unit_compose_into_one_linear_map_both_ways() {
        // a gauge reporting tenths of a US gallon
        let l = Linear::new(0.1, 0.0, "gal").unwrap();
        assert_eq!(l.unit, "L");
        assert!((l.to_canonical(1000.0) - 378.541_178_4).abs() < 1e-9);
        assert!((l.to_raw(378.541_178_4) - 1000.0).abs() < 1e-9);
        // °F with an offset: raw 2120 tenths °F is 100 °C
        let t = Linear::new(0.1, 0.0, "degF").unwrap();
        assert!((t.to_canonical(2120.0) - 100.0).abs() < 1e-9);
        assert!((t.to_raw(100.0) - 2120.0).abs() < 1e-9);
        let i = Linear::new(1.0, 0.0, "in").unwrap();
        assert_eq!((i.unit, i.to_canonical(2.0)), ("mm", 50.8));
        assert!(Linear::new(1.0, 0.0, "barrels").is_none());
        assert!(
            Linear::new(0.0, 0.0, "L").is_none(),
            "zero scale cannot be inverted"
        );
        assert!(Linear::new(f64::NAN, 0.0, "L").is_none());
    }
}
