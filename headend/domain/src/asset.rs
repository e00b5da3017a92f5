//! What an asset is.

use tankwatch_proto::v1;

use super::{Unknown, text_enum};

text_enum! {
    /// The kind of a site asset, as the agent's Hello declares it.
    AssetKind, "asset kind" {
        Tank => "tank",
        Controller => "controller",
        Meter => "meter",
        Sensor => "sensor",
        Pump => "pump",
        /// The site's agent itself (asset id `AGENT_ASSET`): its own
        /// conditions as alarm points. Never in a Hello.
        Agent => "agent",
    }
}

impl AssetKind {
    /// From the agent's Hello; an unset or unknown kind is an error (an
    /// agent newer than this headend is told so, not stored as a guess).
    pub fn from_proto(k: i32) -> Result<AssetKind, Unknown> {
        match v1::AssetKind::try_from(k) {
            Ok(v1::AssetKind::Tank) => Ok(AssetKind::Tank),
            Ok(v1::AssetKind::Controller) => Ok(AssetKind::Controller),
            Ok(v1::AssetKind::Meter) => Ok(AssetKind::Meter),
            Ok(v1::AssetKind::Sensor) => Ok(AssetKind::Sensor),
            Ok(v1::AssetKind::Pump) => Ok(AssetKind::Pump),
            _ => Err(Unknown {
                what: "asset kind",
                value: k.to_string(),
            }),
        }
    }
}

/// A tank's capacity in litres from the agent's value and unit. Agents
/// send litres (`L`); older ones sent the configured unit, so every
/// volume spelling an agent knows is read. An empty unit is litres (the
/// agent's default). Any other unit is an error naming it: the tank is
/// then not set up from its Hello, and the log says why (issue 27: a
/// tank in `litre` was silently missing from every list).
pub fn capacity_litres(capacity: f64, unit: &str) -> Result<f64, Unknown> {
    let factor = match unit {
        "L" | "l" | "litre" | "liter" | "" => 1.0,
        "m3" => 1000.0,
        "gal" | "USgal" => 3.785_411_784,
        "impgal" => 4.546_09,
        _ => {
            return Err(Unknown {
                what: "volume unit",
                value: unit.into(),
            });
        }
    };
    Ok(capacity * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_volume_unit_an_agent_knows_reads_as_litres_and_others_are_errors() {
        for (v, u, l) in [
            (1.0, "L", 1.0),
            (1.0, "litre", 1.0),
            (1.0, "liter", 1.0),
            (2.0, "m3", 2000.0),
            (1.0, "gal", 3.785_411_784),
            (1.0, "impgal", 4.546_09),
            (5.0, "", 5.0),
        ] {
            assert!((capacity_litres(v, u).unwrap() - l).abs() < 1e-9, "{u}");
        }
        for bad in ["litres", "kW", "bbl", "L "] {
            assert!(capacity_litres(1.0, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn asset_kinds_round_trip_and_an_unset_kind_is_refused() {
        crate::round_trips(AssetKind::ALL);
        assert_eq!(
            AssetKind::from_proto(v1::AssetKind::Sensor as i32),
            Ok(AssetKind::Sensor)
        );
        assert!(AssetKind::from_proto(0).is_err());
        assert!(AssetKind::from_proto(99).is_err());
    }
}
