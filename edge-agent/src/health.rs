//! Device health to the headend: when a report is due ([`HealthReport`]).
//! State, not history: the latest per device goes on the session, never
//! into the log.

use std::time::Duration;

use tankwatch_proto::v1;

/// Device health is sent within a second when a device connects,
/// disconnects or gets a new error; within [`COUNTS_EVERY`] when only its
/// counters (errors, shed, gaps, malformed) moved; and at least every
/// [`HEALTH_EVERY`]. A busy device costs the headend at most one small
/// upsert per 5 s.
pub const HEALTH_EVERY: Duration = Duration::from_secs(60);
pub const COUNTS_EVERY: Duration = Duration::from_secs(5);

/// (connected, last error) and (errors, reconnects, shed, gaps, malformed) per device.
type HealthKey = (Vec<(bool, String)>, Vec<[u64; 5]>);

/// When the last device health went out, and what it said.
#[derive(Default)]
pub struct HealthReport {
    sent: Option<(tokio::time::Instant, HealthKey)>,
}

impl HealthReport {
    /// The report to send now, if one is due.
    pub fn due(
        &mut self,
        devices: &[crate::metrics::DeviceHealth],
        now: tokio::time::Instant,
    ) -> Option<v1::DeviceHealth> {
        let snap: Vec<(&crate::metrics::DeviceHealth, adapter_api::DeviceStatus)> =
            devices.iter().map(|d| (d, d.health.get())).collect();
        let key: HealthKey = (
            snap.iter()
                .map(|(_, s)| (s.connected, s.last_error.clone()))
                .collect(),
            snap.iter()
                .map(|(_, s)| [s.errors, s.reconnects, s.shed, s.gaps, s.malformed])
                .collect(),
        );
        if let Some((at, k)) = &self.sent {
            let age = now.duration_since(*at);
            let due = k.0 != key.0 || (k.1 != key.1 && age >= COUNTS_EVERY) || age >= HEALTH_EVERY;
            if !due {
                return None;
            }
        }
        self.sent = Some((now, key));
        Some(v1::DeviceHealth {
            ts_ms: adapter_api::now_ms(),
            devices: snap
                .into_iter()
                .map(|(d, s)| v1::DeviceStatus {
                    device: d.name.clone(),
                    kind: d.kind.to_string(),
                    connected: s.connected,
                    last_good_ms: s.last_good_ms,
                    last_error: s.last_error,
                    last_error_ms: s.last_error_ms,
                    errors: s.errors,
                    reconnects: s.reconnects,
                    shed: s.shed,
                    gaps: s.gaps,
                    malformed: s.malformed,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_health_goes_out_on_state_changes_at_once_on_counters_after_5_s_and_every_60_s() {
        let h = adapter_api::Health::default();
        let devices = vec![crate::metrics::DeviceHealth {
            name: "plc".into(),
            kind: "opcua",
            health: h.clone(),
        }];
        let mut r = HealthReport::default();
        let t0 = tokio::time::Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let first = r
            .due(&devices, t0)
            .expect("the first report after the HelloAck");
        assert_eq!(
            (
                first.devices[0].device.as_str(),
                first.devices[0].kind.as_str()
            ),
            ("plc", "opcua")
        );
        assert!(r.due(&devices, s(1)).is_none(), "nothing changed");
        h.update(|d| d.last_good_ms = 123);
        assert!(
            r.due(&devices, s(2)).is_none(),
            "a good read alone is not news"
        );
        h.update(|d| d.connected = true);
        assert!(
            r.due(&devices, s(2)).is_some(),
            "a connect goes out at once"
        );
        h.update(|d| d.malformed += 1);
        assert!(r.due(&devices, s(4)).is_none(), "counters wait 5 s");
        let c = r.due(&devices, s(7)).expect("counters after 5 s");
        assert_eq!(c.devices[0].malformed, 1);
        h.error("refused");
        assert!(
            r.due(&devices, s(8)).is_some(),
            "a new error goes out at once"
        );
        assert!(r.due(&devices, s(67)).is_none());
        assert!(r.due(&devices, s(68)).is_some(), "at least every 60 s");
    }
}
