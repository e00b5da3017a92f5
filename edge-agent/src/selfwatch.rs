//! The agent's own conditions as alarm points: a device offline longer
//! than its bound, the log dropping data, the log's storage nearly full,
//! the agent's certificate about to expire.
//!
//! They go into the log as readings of the reserved asset [`ASSET`] with a
//! field `alarm.<condition>` (`alarm.device_offline.<device>` per device),
//! class alarm, value 1 or 0, like a gauge's alarm points: the headend
//! makes episodes of them by the same rule, exactly once, with the agent's
//! times even when the uplink was down. The rules ([`Watch::step`]) are
//! pure: facts and the clock in, the conditions that changed out. After a
//! start every condition is sent once, so a condition that ended while the
//! agent was down is cleared at the headend.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The asset id of the agent's own conditions (no configured asset may
/// take it).
pub const ASSET: &str = tankwatch_proto::AGENT_ASSET;

/// How often the conditions are evaluated.
pub const TICK: Duration = Duration::from_secs(2);

/// When the agent's own conditions become alarms (`self_alarms:` in the
/// configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfAlarmsConfig {
    /// A device with no good read for this long is offline. 2 to 86,400 s;
    /// default 300 (5 minutes).
    #[serde(default = "default_offline_s", deserialize_with = "offline_s")]
    pub device_offline_after_s: u64,
    /// The log's room (its `max_bytes`, or less when the disk has less)
    /// used at this percentage or more: storage nearly full (cleared 5
    /// points below). 50 to 99; default 90.
    #[serde(default = "default_pct", deserialize_with = "pct")]
    pub storage_nearly_full_pct: u64,
    /// The log dropping data is raised at a drop and cleared after this
    /// long without one. 10 to 86,400 s; default 600.
    #[serde(default = "default_dropping_s", deserialize_with = "dropping_s")]
    pub log_dropping_clear_after_s: u64,
    /// The agent's certificate expiring within this long (its renewal has
    /// been failing): raised until a renewal installs a new one. 60 s to
    /// 365 days; default 7 days.
    #[serde(default = "default_cert_s", deserialize_with = "cert_s")]
    pub certificate_expiring_within_s: u64,
}

impl Default for SelfAlarmsConfig {
    fn default() -> Self {
        Self {
            device_offline_after_s: default_offline_s(),
            storage_nearly_full_pct: default_pct(),
            log_dropping_clear_after_s: default_dropping_s(),
            certificate_expiring_within_s: default_cert_s(),
        }
    }
}

fn default_offline_s() -> u64 {
    300
}
fn default_pct() -> u64 {
    90
}
fn default_dropping_s() -> u64 {
    600
}
fn default_cert_s() -> u64 {
    7 * 86_400
}
fn offline_s<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "device_offline_after_s", 2, 86_400)
}
fn pct<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "storage_nearly_full_pct", 50, 99)
}
fn dropping_s<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "log_dropping_clear_after_s", 10, 86_400)
}
fn cert_s<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "certificate_expiring_within_s", 60, 365 * 86_400)
}

/// What the agent knows of itself at one instant.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub now_ms: i64,
    /// When the agent started (a device never read counts from here).
    pub started_ms: i64,
    /// Each configured device and its last good read (0: never).
    pub devices: Vec<(String, i64)>,
    /// Bytes the log uses, and the room it may use (0: unknown).
    pub log_bytes: u64,
    pub log_room: u64,
    /// Entries the log has dropped since the agent started (bound and
    /// corruption), all classes.
    pub dropped: u64,
    /// The certificate's end of validity, if it could be read.
    pub cert_not_after_ms: Option<i64>,
}

/// The field of an agent condition.
pub fn device_offline(device: &str) -> String {
    format!("alarm.device_offline.{device}")
}
pub const LOG_DROPPING: &str = "alarm.log_dropping";
pub const STORAGE_NEARLY_FULL: &str = "alarm.storage_nearly_full";
pub const CERTIFICATE_EXPIRING: &str = "alarm.certificate_expiring";

/// The conditions' last states sent, and what the log-dropping rule
/// remembers.
#[derive(Debug)]
pub struct Watch {
    cfg: SelfAlarmsConfig,
    sent: BTreeMap<String, bool>,
    dropped_seen: Option<u64>,
    last_drop_ms: Option<i64>,
}

impl Watch {
    pub fn new(cfg: SelfAlarmsConfig) -> Watch {
        Watch {
            cfg,
            sent: BTreeMap::new(),
            dropped_seen: None,
            last_drop_ms: None,
        }
    }

    /// Each condition's state now.
    fn states(&mut self, f: &Facts) -> Vec<(String, bool)> {
        let mut out = Vec::with_capacity(f.devices.len() + 3);
        let after = self.cfg.device_offline_after_s as i64 * 1000;
        for (d, last_good) in &f.devices {
            let since = (*last_good).max(f.started_ms);
            out.push((device_offline(d), f.now_ms - since >= after));
        }
        if self.dropped_seen.is_some_and(|seen| f.dropped > seen) {
            self.last_drop_ms = Some(f.now_ms);
        }
        self.dropped_seen = Some(f.dropped);
        let clear_after = self.cfg.log_dropping_clear_after_s as i64 * 1000;
        out.push((
            LOG_DROPPING.into(),
            self.last_drop_ms
                .is_some_and(|t| f.now_ms - t < clear_after),
        ));
        let was_full = self.sent.get(STORAGE_NEARLY_FULL).copied().unwrap_or(false);
        let pct = self.cfg.storage_nearly_full_pct - if was_full { 5 } else { 0 };
        out.push((
            STORAGE_NEARLY_FULL.into(),
            f.log_room > 0 && f.log_bytes.saturating_mul(100) >= f.log_room.saturating_mul(pct),
        ));
        let within = self.cfg.certificate_expiring_within_s as i64 * 1000;
        let expiring = match f.cert_not_after_ms {
            Some(t) => t - f.now_ms < within,
            // unreadable for a moment (a renewal installing): as it was
            None => self
                .sent
                .get(CERTIFICATE_EXPIRING)
                .copied()
                .unwrap_or(false),
        };
        out.push((CERTIFICATE_EXPIRING.into(), expiring));
        out
    }

    /// The conditions whose state changed since the last step (every one
    /// at the first step), as (field, active).
    pub fn step(&mut self, f: &Facts) -> Vec<(String, bool)> {
        self.states(f)
            .into_iter()
            .filter(|(field, active)| self.sent.insert(field.clone(), *active) != Some(*active))
            .collect()
    }
}

/// Where the watch reads its facts.
pub struct Sources {
    pub site: String,
    pub log: std::sync::Arc<sflog::Log>,
    pub devices: std::sync::Arc<Vec<crate::metrics::DeviceHealth>>,
    /// The agent's certificate (renewals replace the file).
    pub cert: std::path::PathBuf,
    pub started_ms: i64,
}

impl Sources {
    /// The agent's own sources, as it starts now.
    pub fn of(
        cfg: &crate::config::AgentConfig,
        log: &std::sync::Arc<sflog::Log>,
        devices: &std::sync::Arc<Vec<crate::metrics::DeviceHealth>>,
    ) -> Sources {
        Sources {
            site: cfg.site_id.clone(),
            log: log.clone(),
            devices: devices.clone(),
            cert: cfg.tls.cert.clone(),
            started_ms: adapter_api::now_ms(),
        }
    }

    fn facts(&self, now_ms: i64) -> Facts {
        let st = self.log.stats();
        Facts {
            now_ms,
            started_ms: self.started_ms,
            devices: self
                .devices
                .iter()
                .map(|d| (d.name.clone(), d.health.get().last_good_ms))
                .collect(),
            log_bytes: st.bytes,
            log_room: st.effective_max_bytes,
            dropped: st.dropped.iter().sum::<u64>() + st.corrupt,
            cert_not_after_ms: crate::renew::read_cert(&self.cert)
                .ok()
                .map(|c| c.not_after_ms),
        }
    }
}

/// Evaluates the conditions every [`TICK`] and appends each change to the
/// log (through the readings channel: when it is full, the watch waits
/// like an adapter). Ends when the agent stops.
pub async fn run(
    mut watch: Watch,
    src: Sources,
    tx: tokio::sync::mpsc::Sender<adapter_api::Event>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        let now = adapter_api::now_ms();
        // a lock, a statvfs and a small file every 2 s: fine on the runtime
        let facts = src.facts(now);
        for (field, active) in watch.step(&facts) {
            tracing::info!(site = %src.site, condition = %field, active, "agent condition changed");
            let r = reading(&src.site, &field, active, now);
            if tx.send(adapter_api::Event::Reading(r)).await.is_err() {
                return if *stop.borrow() {
                    Ok(())
                } else {
                    Err("the log writer is gone".into())
                };
            }
        }
    }
}

/// The reading of a condition, as the log keeps it.
pub fn reading(site: &str, field: &str, active: bool, now_ms: i64) -> adapter_api::Reading {
    adapter_api::Reading {
        asset_id: ASSET.into(),
        field: field.into(),
        value: if active { 1.0 } else { 0.0 },
        unit: "bool".into(),
        quality: adapter_api::Quality::Good,
        source_ts_ms: now_ms,
        received_ts_ms: now_ms,
        source: format!("agent://{site}/{}", field.trim_start_matches("alarm.")),
        error: String::new(),
        class: adapter_api::DropClass::Alarm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn facts(now_ms: i64) -> Facts {
        Facts {
            now_ms,
            started_ms: 0,
            devices: vec![],
            log_bytes: 10,
            log_room: 100,
            dropped: 0,
            cert_not_after_ms: Some(now_ms + 30 * 86_400_000),
        }
    }

    fn active(changes: &[(String, bool)], field: &str) -> Option<bool> {
        changes.iter().find(|(f, _)| f == field).map(|(_, a)| *a)
    }

    #[test]
    fn the_first_step_sends_every_condition_and_then_only_changes() {
        let mut w = Watch::new(SelfAlarmsConfig::default());
        let mut f = facts(10 * MIN);
        f.devices = vec![("atg".into(), 10 * MIN)];
        let first = w.step(&f);
        assert_eq!(
            first,
            vec![
                ("alarm.device_offline.atg".to_string(), false),
                (LOG_DROPPING.into(), false),
                (STORAGE_NEARLY_FULL.into(), false),
                (CERTIFICATE_EXPIRING.into(), false),
            ],
            "after a start each condition is sent once, so a stale episode is cleared"
        );
        f.now_ms = 11 * MIN;
        assert!(w.step(&f).is_empty(), "nothing changed");
    }

    #[test]
    fn a_device_is_offline_after_its_bound_without_a_good_read_counted_from_the_start() {
        let mut w = Watch::new(SelfAlarmsConfig::default());
        let mut f = facts(0);
        f.devices = vec![("atg".into(), 0), ("plc".into(), 0)];
        w.step(&f);
        f.now_ms = 5 * MIN - 1;
        assert!(
            w.step(&f).is_empty(),
            "never read, but started under 5 min ago"
        );
        f.now_ms = 5 * MIN;
        f.devices[1].1 = 4 * MIN;
        assert_eq!(
            w.step(&f),
            vec![("alarm.device_offline.atg".to_string(), true)],
            "each device is its own point"
        );
        f.now_ms = 9 * MIN;
        assert_eq!(active(&w.step(&f), "alarm.device_offline.plc"), Some(true));
        f.devices[0].1 = 9 * MIN;
        assert_eq!(
            w.step(&f),
            vec![("alarm.device_offline.atg".to_string(), false)],
            "one good read clears it"
        );
    }

    #[test]
    fn log_dropping_is_raised_at_a_drop_and_cleared_after_its_quiet_time() {
        let cfg = SelfAlarmsConfig {
            log_dropping_clear_after_s: 600,
            ..Default::default()
        };
        let mut w = Watch::new(cfg);
        let mut f = facts(0);
        f.dropped = 7;
        assert_eq!(
            active(&w.step(&f), LOG_DROPPING),
            Some(false),
            "drops before this agent's first look are not news"
        );
        f.now_ms = MIN;
        f.dropped = 9;
        assert_eq!(active(&w.step(&f), LOG_DROPPING), Some(true));
        f.now_ms = 8 * MIN;
        f.dropped = 12;
        assert!(w.step(&f).is_empty(), "still dropping");
        f.now_ms = 18 * MIN - 1;
        assert!(w.step(&f).is_empty(), "quiet for less than 10 min");
        f.now_ms = 18 * MIN;
        assert_eq!(active(&w.step(&f), LOG_DROPPING), Some(false));
    }

    #[test]
    fn storage_nearly_full_has_a_five_point_hysteresis_and_ignores_an_unknown_room() {
        let mut w = Watch::new(SelfAlarmsConfig::default());
        let mut f = facts(0);
        let mut at = |w: &mut Watch, bytes: u64, room: u64| {
            f.log_bytes = bytes;
            f.log_room = room;
            f.now_ms += 1;
            active(&w.step(&f), STORAGE_NEARLY_FULL)
        };
        assert_eq!(at(&mut w, 89, 100), Some(false));
        assert_eq!(at(&mut w, 90, 100), Some(true), "90 % of the room");
        assert_eq!(at(&mut w, 86, 100), None, "above 85 % it stays raised");
        assert_eq!(at(&mut w, 84, 100), Some(false));
        assert_eq!(at(&mut w, 89, 100), None);
        assert_eq!(at(&mut w, 95, 0), None, "room unknown: no alarm");
        assert_eq!(
            at(&mut w, u64::MAX / 2, u64::MAX / 2),
            Some(true),
            "no overflow"
        );
    }

    #[test]
    fn the_certificate_alarm_stands_while_it_expires_within_the_bound_and_ends_at_renewal() {
        let mut w = Watch::new(SelfAlarmsConfig::default());
        let day = 86_400_000;
        let mut f = facts(0);
        f.cert_not_after_ms = Some(7 * day + 1);
        assert_eq!(active(&w.step(&f), CERTIFICATE_EXPIRING), Some(false));
        f.now_ms = 2;
        assert_eq!(active(&w.step(&f), CERTIFICATE_EXPIRING), Some(true));
        f.now_ms = 8 * day;
        assert!(w.step(&f).is_empty(), "expired: still raised");
        f.cert_not_after_ms = Some(f.now_ms + 60 * day);
        assert_eq!(
            active(&w.step(&f), CERTIFICATE_EXPIRING),
            Some(false),
            "a renewed certificate clears it"
        );
        f.cert_not_after_ms = None;
        assert!(
            w.step(&f).is_empty(),
            "a certificate that cannot be read is no news here (the uplink reports it)"
        );
    }

    #[test]
    fn a_condition_reading_is_a_good_alarm_point_of_the_agent_asset() {
        let r = reading("site-1", &device_offline("atg"), true, 42);
        assert_eq!(
            (
                r.asset_id.as_str(),
                r.value,
                r.source.as_str(),
                r.class,
                r.quality
            ),
            (
                "agent",
                1.0,
                "agent://site-1/device_offline.atg",
                adapter_api::DropClass::Alarm,
                adapter_api::Quality::Good
            )
        );
    }
}
