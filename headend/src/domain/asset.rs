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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_kinds_round_trip_and_an_unset_kind_is_refused() {
        crate::domain::round_trips(AssetKind::ALL);
        assert_eq!(
            AssetKind::from_proto(v1::AssetKind::Sensor as i32),
            Ok(AssetKind::Sensor)
        );
        assert!(AssetKind::from_proto(0).is_err());
        assert!(AssetKind::from_proto(99).is_err());
    }
}
