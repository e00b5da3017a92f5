//! The session's Hello: who this agent is, where its log stands, and the
//! site's assets with their writable points and canonical capacities.

use sflog::Log;
use tankwatch_proto::v1::{self, AgentMessage, agent_message::Msg as Out};

use super::SessionError;
use crate::config::AgentConfig;

pub(super) fn hello(cfg: &AgentConfig, log: &Log) -> Result<AgentMessage, SessionError> {
    let st = log.stats();
    Ok(AgentMessage {
        msg: Some(Out::Hello(v1::Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            // stamped when the stream takes it (see `session`)
            agent_time_ms: 0,
            state_lost: false,
            site_id: cfg.site_id.clone(),
            log_id: log.log_id(),
            log_first_seq: log.first_seq()?.unwrap_or(0),
            log_next_seq: st.next_seq,
            assets: cfg
                .assets
                .iter()
                .map(|a| (a, canonical_capacity(a)))
                .map(|(a, (capacity, capacity_unit))| v1::Asset {
                    asset_id: a.id.clone(),
                    kind: match a.kind {
                        crate::config::AssetKind::Tank => v1::AssetKind::Tank,
                        crate::config::AssetKind::Controller => v1::AssetKind::Controller,
                        crate::config::AssetKind::Meter => v1::AssetKind::Meter,
                        crate::config::AssetKind::Sensor => v1::AssetKind::Sensor,
                        crate::config::AssetKind::Pump => v1::AssetKind::Pump,
                    } as i32,
                    name: a.name.clone(),
                    product: a.product.clone(),
                    // in its canonical unit, as readings are (litres for a tank)
                    capacity,
                    capacity_unit,
                    details: a.details.clone().into_iter().collect(),
                    writable: cfg
                        .setpoints
                        .iter()
                        .filter(|l| l.asset == a.id)
                        .map(|l| v1::WritablePoint {
                            field: l.field.clone(),
                            min: l.min,
                            max: l.max,
                            default: l.default,
                        })
                        .collect(),
                })
                .collect(),
        })),
    })
}

/// An asset's capacity in the canonical unit of its configured unit
/// (check-config refused a unit it does not know; unknown here: as given).
fn canonical_capacity(a: &crate::config::AssetConfig) -> (f64, String) {
    match adapter_api::units::conversion(&a.capacity_unit) {
        Some((unit, f, o)) if a.capacity > 0.0 => (a.capacity * f + o, unit.to_string()),
        Some((unit, _, _)) => (a.capacity, unit.to_string()),
        None => (a.capacity, a.capacity_unit.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tank_capacity_goes_to_the_headend_in_litres_whatever_unit_the_site_wrote() {
        let tank = |cap: f64, unit: &str| crate::config::AssetConfig {
            id: "tank-1".into(),
            kind: crate::config::AssetKind::Tank,
            name: String::new(),
            product: String::new(),
            capacity: cap,
            capacity_unit: unit.into(),
            details: Default::default(),
        };
        assert_eq!(
            canonical_capacity(&tank(20.0, "m3")),
            (20_000.0, "L".into())
        );
        assert_eq!(
            canonical_capacity(&tank(1000.0, "litre")),
            (1000.0, "L".into())
        );
        let (l, u) = canonical_capacity(&tank(100.0, "gal"));
        assert!((l - 378.541_178_4).abs() < 1e-9 && u == "L");
        assert_eq!(canonical_capacity(&tank(40.0, "kW")), (40.0, "kW".into()));
    }
}
