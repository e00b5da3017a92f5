//! Alarms, pure: what a gauge's alarm point means (its type and default
//! severity), how its readings become episodes (raised, cleared, exactly
//! once under redelivery, late and repeated readings), and where an episode
//! stands for the people working it (active, acknowledged, shelved,
//! cleared) given the clock.
//!
//! An alarm point is a reading whose field is `alarm.<name>` with a value
//! of 0 or 1 (the agent's `class: alarm` points: Modbus status bits,
//! Veeder-Root i205 items, MQTT/Sparkplug booleans). `alarm.count` is a
//! number (how many alarms a console shows), not a condition.

use super::text_enum;

text_enum!(
    /// What an alarm is about. Gauges name the same condition several
    /// ways; [`AlarmType::of_field`] maps each name to one type.
    AlarmType, "alarm type" {
        Leak => "leak",
        SuddenLoss => "sudden_loss",
        Overfill => "overfill",
        HighProduct => "high_product",
        HighWater => "high_water",
        WaterInFuel => "water_in_fuel",
        LowProduct => "low_product",
        DeliveryNeeded => "delivery_needed",
        Sensor => "sensor",
        Probe => "probe",
        Communication => "communication",
        /// The agent's own conditions (asset `agent`): a device with no
        /// good read for longer than the agent's bound (one point per
        /// device, `alarm.device_offline.<device>`), ...
        DeviceOffline => "device_offline",
        /// ... the agent's log dropping data (its bound, a full disk,
        /// corruption), ...
        LogDropping => "log_dropping",
        /// ... the log's room (its bound, or the disk) nearly used up, ...
        StorageNearlyFull => "storage_nearly_full",
        /// ... and the agent's certificate about to expire (renewal failing).
        CertificateExpiring => "certificate_expiring",
        /// A point named `alarm.<name>` with a name this table does not
        /// know: kept (with its field) and major by default, never dropped.
        Other => "other",
    }
);

text_enum!(
    /// How urgent an alarm is; decides escalation and notification.
    Severity, "alarm severity" {
        Critical => "critical",
        Major => "major",
        Minor => "minor",
        Warning => "warning",
    }
);

text_enum!(
    /// Where an episode stands, derived from its facts and the clock
    /// ([`AlarmState::of`]): never stored, so a shelf that ran out needs
    /// no job to end it.
    AlarmState, "alarm state" {
        /// Raised at the device and nobody has acknowledged it.
        Active => "active",
        /// Raised and acknowledged; it stays listed until the device clears it.
        Acknowledged => "acknowledged",
        /// Raised and shelved until a time (notifications held back).
        Shelved => "shelved",
        /// Cleared by the device (only the device clears an alarm).
        Cleared => "cleared",
    }
);

text_enum!(
    /// What an episode's timeline entry records.
    AlarmEventKind, "alarm event" {
        Raised => "raised",
        /// A late reading showed the alarm was raised earlier than known.
        Earlier => "earlier",
        Cleared => "cleared",
        Acknowledged => "acknowledged",
        Shelved => "shelved",
        Unshelved => "unshelved",
        Note => "note",
    }
);

/// Names gauges and configurations use, by type (the part after `alarm.`).
/// The Veeder-Root items (`report::TANK_ALARMS`) are all here.
const NAMES: &[(&str, AlarmType)] = &[
    ("leak", AlarmType::Leak),
    ("gross_leak_test_fail", AlarmType::Leak),
    ("periodic_leak_test_fail", AlarmType::Leak),
    ("annual_leak_test_fail", AlarmType::Leak),
    ("line_gross_leak", AlarmType::Leak),
    ("sudden_loss", AlarmType::SuddenLoss),
    ("overfill", AlarmType::Overfill),
    ("high_product", AlarmType::HighProduct),
    ("max_product", AlarmType::HighProduct),
    ("high_level", AlarmType::HighProduct),
    ("high_water", AlarmType::HighWater),
    ("high_water_warning", AlarmType::HighWater),
    ("water", AlarmType::HighWater),
    ("water_in_fuel", AlarmType::WaterInFuel),
    ("low_product", AlarmType::LowProduct),
    ("low_level", AlarmType::LowProduct),
    ("delivery_needed", AlarmType::DeliveryNeeded),
    ("sensor", AlarmType::Sensor),
    ("sensor_fault", AlarmType::Sensor),
    ("invalid_fuel_level", AlarmType::Sensor),
    ("setup_data_warning", AlarmType::Sensor),
    ("probe", AlarmType::Probe),
    ("probe_out", AlarmType::Probe),
    ("probe_fault", AlarmType::Probe),
    ("communication", AlarmType::Communication),
    ("communication_fault", AlarmType::Communication),
    ("device_offline", AlarmType::DeviceOffline),
    ("log_dropping", AlarmType::LogDropping),
    ("storage_nearly_full", AlarmType::StorageNearlyFull),
    ("certificate_expiring", AlarmType::CertificateExpiring),
];

impl AlarmType {
    /// The type of an alarm point's field, or `None` when the field is no
    /// alarm condition (not `alarm.<name>`, or `alarm.count`). A name with
    /// a qualifier (`device_offline.atg`: one point per device) takes the
    /// type of the part before the first dot when the whole is unknown.
    pub fn of_field(field: &str) -> Option<AlarmType> {
        let name = field.strip_prefix("alarm.")?;
        if name.is_empty() || name == "count" {
            return None;
        }
        let find = |n: &str| NAMES.iter().find(|(k, _)| *k == n).map(|(_, t)| *t);
        Some(
            find(name)
                .or_else(|| name.split_once('.').and_then(|(head, _)| find(head)))
                .unwrap_or(AlarmType::Other),
        )
    }

    /// The fuel domain's default: leak, sudden loss, overfill and high
    /// product critical; water major; low product and delivery needed
    /// minor; sensor, probe and communication faults warning. An alarm of
    /// a name we do not know is major: it must not go unseen.
    pub fn default_severity(self) -> Severity {
        use AlarmType::*;
        match self {
            Leak | SuddenLoss | Overfill | HighProduct => Severity::Critical,
            HighWater | WaterInFuel | Other => Severity::Major,
            LowProduct | DeliveryNeeded => Severity::Minor,
            Sensor | Probe | Communication => Severity::Warning,
            // the site is blind or losing its record: someone must act
            DeviceOffline | LogDropping | CertificateExpiring => Severity::Major,
            StorageNearlyFull => Severity::Minor,
        }
    }
}

/// What the headend knows of one alarm point (site, asset, field): the
/// last reading applied and the open episode, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub active: bool,
    pub last_ts_ms: i64,
    /// The agent log and position of the last reading applied.
    pub last_log: (i64, i64),
    /// When the last episode of this point cleared (device time).
    pub last_cleared_ms: Option<i64>,
    /// The open episode's raise time (device time).
    pub open_raised_ms: Option<i64>,
}

/// One good reading of an alarm point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmReading {
    pub active: bool,
    pub ts_ms: i64,
    pub log_id: i64,
    pub seq: i64,
}

/// What one reading does to its point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A new episode, raised at the reading's time.
    Raise,
    /// The open episode ends at the reading's time.
    Clear,
    /// The open episode began earlier than known: its raise time moves to
    /// the reading's (a late reading from before, with no clear between).
    Earlier,
    /// The same state again (a repeat after an agent restart): only the
    /// point's last reading moves.
    Same,
    /// Already applied (the same log position or before it): nothing.
    Duplicate,
    /// Older than what is known and changes nothing that can be placed:
    /// counted, the history of readings keeps it.
    Late,
}

/// The one rule for a reading of an alarm point. Readings of one agent
/// log come in log order; a redelivery (same log, position not after the
/// last applied) is a duplicate. Device time orders readings across logs
/// (an agent whose log was replaced), and a reading older than the last
/// applied one is late: it can only move an open episode's start earlier.
pub fn step(point: Option<&Point>, r: &AlarmReading) -> Step {
    let Some(p) = point else {
        return if r.active { Step::Raise } else { Step::Same };
    };
    if p.last_log.0 == r.log_id && r.seq <= p.last_log.1 {
        return Step::Duplicate;
    }
    if r.ts_ms < p.last_ts_ms {
        let after_last_clear = p.last_cleared_ms.is_none_or(|c| r.ts_ms > c);
        return match p.open_raised_ms {
            Some(raised) if r.active && r.ts_ms < raised && after_last_clear => Step::Earlier,
            _ => Step::Late,
        };
    }
    match (r.active, p.open_raised_ms.is_some()) {
        (true, false) => Step::Raise,
        (false, true) => Step::Clear,
        _ => Step::Same,
    }
}

/// The point after a reading's step (for every step but `Duplicate` and
/// `Late`, which leave it as it was).
pub fn advance(point: Option<&Point>, r: &AlarmReading, s: Step) -> Option<Point> {
    let base = point.copied().unwrap_or(Point {
        active: false,
        last_ts_ms: r.ts_ms,
        last_log: (r.log_id, r.seq),
        last_cleared_ms: None,
        open_raised_ms: None,
    });
    let moved = Point {
        active: r.active,
        last_ts_ms: r.ts_ms,
        last_log: (r.log_id, r.seq),
        ..base
    };
    match s {
        Step::Duplicate | Step::Late => point.copied(),
        Step::Earlier => Some(Point {
            open_raised_ms: Some(r.ts_ms),
            ..base
        }),
        Step::Raise => Some(Point {
            open_raised_ms: Some(r.ts_ms),
            ..moved
        }),
        Step::Clear => Some(Point {
            open_raised_ms: None,
            last_cleared_ms: Some(r.ts_ms),
            ..moved
        }),
        Step::Same => Some(moved),
    }
}

/// The facts of an episode that decide its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    pub cleared_ms: Option<i64>,
    pub acked_ms: Option<i64>,
    pub shelved_until_ms: Option<i64>,
}

impl AlarmState {
    /// Cleared wins; then a shelf still running; then an acknowledgement.
    pub fn of(f: &Facts, now_ms: i64) -> AlarmState {
        if f.cleared_ms.is_some() {
            AlarmState::Cleared
        } else if f.shelved_until_ms.is_some_and(|u| u > now_ms) {
            AlarmState::Shelved
        } else if f.acked_ms.is_some() {
            AlarmState::Acknowledged
        } else {
            AlarmState::Active
        }
    }
}

/// The longest a person may shelve an alarm.
pub const MAX_SHELVE_MS: i64 = 7 * 24 * 3_600_000;

/// Why a person's move on an episode is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the alarm is already acknowledged")]
    AlreadyAcknowledged,
    #[error("the alarm is cleared: only an open alarm can be shelved")]
    Cleared,
    #[error("the shelf must end in the future and within 7 days")]
    ShelfOutOfRange,
    #[error("the alarm is not shelved")]
    NotShelved,
}

/// Acknowledging: once per episode, open or cleared (a cleared alarm
/// nobody saw can still be acknowledged for the record).
pub fn may_acknowledge(f: &Facts) -> Result<(), Refused> {
    match f.acked_ms {
        Some(_) => Err(Refused::AlreadyAcknowledged),
        None => Ok(()),
    }
}

/// Shelving: an open alarm, until a time after now and at most
/// [`MAX_SHELVE_MS`] ahead (shelving again moves the end).
pub fn may_shelve(f: &Facts, until_ms: i64, now_ms: i64) -> Result<(), Refused> {
    if f.cleared_ms.is_some() {
        return Err(Refused::Cleared);
    }
    if until_ms <= now_ms || until_ms - now_ms > MAX_SHELVE_MS {
        return Err(Refused::ShelfOutOfRange);
    }
    Ok(())
}

/// Unshelving: only a shelf still running.
pub fn may_unshelve(f: &Facts, now_ms: i64) -> Result<(), Refused> {
    match AlarmState::of(f, now_ms) {
        AlarmState::Shelved => Ok(()),
        _ => Err(Refused::NotShelved),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_form_round_trips() {
        crate::round_trips(AlarmType::ALL);
        crate::round_trips(Severity::ALL);
        crate::round_trips(AlarmState::ALL);
        crate::round_trips(AlarmEventKind::ALL);
    }

    #[test]
    fn alarm_fields_map_to_types_and_other_names_are_kept_as_other() {
        use AlarmType::*;
        let table: &[(&str, Option<AlarmType>)] = &[
            ("alarm.leak", Some(Leak)),
            ("alarm.line_gross_leak", Some(Leak)),
            ("alarm.overfill", Some(Overfill)),
            ("alarm.high_level", Some(HighProduct)),
            ("alarm.max_product", Some(HighProduct)),
            ("alarm.water", Some(HighWater)),
            ("alarm.low_level", Some(LowProduct)),
            ("alarm.probe_out", Some(Probe)),
            ("alarm.something_new", Some(Other)),
            ("alarm.something.new", Some(Other)),
            ("alarm.device_offline.atg", Some(DeviceOffline)),
            ("alarm.device_offline.plc.2", Some(DeviceOffline)),
            ("alarm.log_dropping", Some(LogDropping)),
            ("alarm.storage_nearly_full", Some(StorageNearlyFull)),
            ("alarm.certificate_expiring", Some(CertificateExpiring)),
            ("alarm.leak.tank2", Some(Leak)),
            ("alarm.count", None),
            ("alarm.", None),
            ("volume", None),
            ("alarmleak", None),
        ];
        for (field, want) in table {
            assert_eq!(AlarmType::of_field(field), *want, "{field}");
        }
    }

    #[test]
    fn every_veeder_root_alarm_item_has_a_type_of_its_own() {
        // the agent's VR items are `alarm.<item>`; none may fall to Other
        for item in [
            "setup_data_warning",
            "leak",
            "high_water",
            "overfill",
            "low_product",
            "sudden_loss",
            "high_product",
            "invalid_fuel_level",
            "probe_out",
            "high_water_warning",
            "delivery_needed",
            "max_product",
            "gross_leak_test_fail",
            "periodic_leak_test_fail",
            "annual_leak_test_fail",
            "line_gross_leak",
        ] {
            let t = AlarmType::of_field(&format!("alarm.{item}"));
            assert!(t.is_some_and(|t| t != AlarmType::Other), "{item}: {t:?}");
        }
    }

    #[test]
    fn default_severities_follow_the_fuel_domain() {
        use AlarmType::*;
        use Severity::*;
        for (t, s) in [
            (Leak, Critical),
            (SuddenLoss, Critical),
            (Overfill, Critical),
            (HighProduct, Critical),
            (HighWater, Major),
            (WaterInFuel, Major),
            (Other, Major),
            (LowProduct, Minor),
            (DeliveryNeeded, Minor),
            (Sensor, Warning),
            (Probe, Warning),
            (Communication, Warning),
            (DeviceOffline, Major),
            (LogDropping, Major),
            (CertificateExpiring, Major),
            (StorageNearlyFull, Minor),
        ] {
            assert_eq!(t.default_severity(), s, "{t}");
        }
    }

    fn r(active: bool, ts_ms: i64, log_id: i64, seq: i64) -> AlarmReading {
        AlarmReading {
            active,
            ts_ms,
            log_id,
            seq,
        }
    }

    /// Runs readings through `step` and `advance`; returns the steps and
    /// the episodes (raised, cleared) they make.
    fn run(readings: &[AlarmReading]) -> (Vec<Step>, Vec<(i64, Option<i64>)>) {
        let mut p: Option<Point> = None;
        let (mut steps, mut eps) = (vec![], vec![]);
        for x in readings {
            let s = step(p.as_ref(), x);
            match s {
                Step::Raise => eps.push((x.ts_ms, None)),
                Step::Clear => {
                    if let Some(e) = eps.last_mut() {
                        e.1 = Some(x.ts_ms);
                    }
                }
                Step::Earlier => {
                    if let Some(e) = eps.last_mut() {
                        e.0 = x.ts_ms;
                    }
                }
                _ => {}
            }
            p = advance(p.as_ref(), x, s);
            steps.push(s);
        }
        (steps, eps)
    }

    #[test]
    fn readings_become_episodes_exactly_once() {
        use Step::*;
        type Case<'a> = (
            &'a str,
            Vec<AlarmReading>,
            Vec<Step>,
            Vec<(i64, Option<i64>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "raise then clear",
                vec![r(true, 100, 1, 1), r(false, 200, 1, 2)],
                vec![Raise, Clear],
                vec![(100, Some(200))],
            ),
            (
                "a first reading that is clear opens nothing",
                vec![r(false, 100, 1, 1), r(true, 150, 1, 2)],
                vec![Same, Raise],
                vec![(150, None)],
            ),
            (
                "a redelivered raise after the clear is a duplicate",
                vec![r(true, 100, 1, 1), r(false, 100, 1, 2), r(true, 100, 1, 1)],
                vec![Raise, Clear, Duplicate],
                vec![(100, Some(100))],
            ),
            (
                "the agent restarted (new readings, same log) and sent the state again",
                vec![r(true, 100, 1, 1), r(true, 300, 1, 9), r(false, 400, 1, 10)],
                vec![Raise, Same, Clear],
                vec![(100, Some(400))],
            ),
            (
                "a replaced log: positions restart, device time orders",
                vec![r(true, 100, 1, 50), r(false, 500, 2, 1), r(true, 600, 2, 2)],
                vec![Raise, Clear, Raise],
                vec![(100, Some(500)), (600, None)],
            ),
            (
                "a late raise from before an open episode moves its start",
                vec![r(true, 300, 2, 1), r(true, 100, 1, 7)],
                vec![Raise, Earlier],
                vec![(100, None)],
            ),
            (
                "a late raise from before the last clear is only late",
                vec![r(true, 300, 2, 1), r(false, 400, 2, 2), r(true, 100, 1, 7)],
                vec![Raise, Clear, Late],
                vec![(300, Some(400))],
            ),
            (
                "a late clear is late",
                vec![r(true, 300, 2, 1), r(false, 200, 1, 7)],
                vec![Raise, Late],
                vec![(300, None)],
            ),
            (
                "flapping fifty times gives fifty episodes",
                (0..100)
                    .map(|i| r(i % 2 == 0, 1000 + i, 1, i + 1))
                    .collect(),
                (0..100)
                    .map(|i| if i % 2 == 0 { Raise } else { Clear })
                    .collect(),
                (0..50)
                    .map(|i| (1000 + 2 * i, Some(1001 + 2 * i)))
                    .collect(),
            ),
        ];
        for (name, readings, want_steps, want_eps) in cases {
            let (steps, eps) = run(&readings);
            assert_eq!(steps, want_steps, "{name}: steps");
            assert_eq!(eps, want_eps, "{name}: episodes");
        }
    }

    #[test]
    fn redelivering_any_prefix_changes_nothing() {
        let rs: Vec<AlarmReading> = (0..20).map(|i| r(i % 3 == 0, 10 * i, 4, i + 1)).collect();
        let (_, once) = run(&rs);
        for cut in 0..rs.len() {
            let mut again = rs[..cut].to_vec();
            again.extend_from_slice(&rs[..cut]);
            again.extend_from_slice(&rs[cut..]);
            again.extend_from_slice(&rs);
            assert_eq!(run(&again).1, once, "redelivery of the first {cut}");
        }
    }

    #[test]
    fn the_state_follows_clear_then_shelf_then_acknowledgement() {
        let now = 1_000;
        let f = |cleared, acked, shelved| Facts {
            cleared_ms: cleared,
            acked_ms: acked,
            shelved_until_ms: shelved,
        };
        use AlarmState::*;
        for (facts, want) in [
            (f(None, None, None), Active),
            (f(None, Some(5), None), Acknowledged),
            (f(None, None, Some(2_000)), Shelved),
            (f(None, Some(5), Some(2_000)), Shelved),
            (f(None, None, Some(1_000)), Active),
            (f(None, Some(5), Some(500)), Acknowledged),
            (f(Some(900), None, Some(2_000)), Cleared),
            (f(Some(900), Some(5), None), Cleared),
        ] {
            assert_eq!(AlarmState::of(&facts, now), want, "{facts:?}");
        }
    }

    #[test]
    fn moves_are_refused_with_a_reason() {
        let now = 10_000;
        let open = Facts::default();
        let acked = Facts {
            acked_ms: Some(1),
            ..open
        };
        let cleared = Facts {
            cleared_ms: Some(5),
            ..open
        };
        let shelved = Facts {
            shelved_until_ms: Some(now + 1),
            ..open
        };
        assert_eq!(may_acknowledge(&open), Ok(()));
        assert_eq!(may_acknowledge(&cleared), Ok(()));
        assert_eq!(may_acknowledge(&acked), Err(Refused::AlreadyAcknowledged));
        assert_eq!(may_shelve(&open, now + 60_000, now), Ok(()));
        assert_eq!(may_shelve(&shelved, now + 60_000, now), Ok(()));
        assert_eq!(
            may_shelve(&cleared, now + 60_000, now),
            Err(Refused::Cleared)
        );
        assert_eq!(may_shelve(&open, now, now), Err(Refused::ShelfOutOfRange));
        assert_eq!(
            may_shelve(&open, now + MAX_SHELVE_MS + 1, now),
            Err(Refused::ShelfOutOfRange)
        );
        assert_eq!(may_shelve(&open, now + MAX_SHELVE_MS, now), Ok(()));
        assert_eq!(may_unshelve(&shelved, now), Ok(()));
        assert_eq!(may_unshelve(&open, now), Err(Refused::NotShelved));
        assert_eq!(may_unshelve(&shelved, now + 1), Err(Refused::NotShelved));
    }
}
