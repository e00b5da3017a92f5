//! Messages for tests (feature `fixtures`, turned on by the
//! dev-dependencies of the headend and the e2e crate only).

use crate::v1;

/// A Hello from `site` with one 20,000 L tank `tank-1` ("Tank 1") and
/// the given writable points (`field`, min, max).
pub fn tank_hello(site: &str, writable: &[(&str, f64, f64)]) -> v1::Hello {
    v1::Hello {
        site_id: site.into(),
        log_id: 1,
        agent_version: "test".into(),
        assets: vec![v1::Asset {
            asset_id: "tank-1".into(),
            kind: v1::AssetKind::Tank as i32,
            name: "Tank 1".into(),
            capacity: 20_000.0,
            writable: writable
                .iter()
                .map(|&(field, min, max)| v1::WritablePoint {
                    field: field.into(),
                    min: Some(min),
                    max: Some(max),
                    default: None,
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}
