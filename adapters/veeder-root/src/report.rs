//! What the three functions report, format-independent. Values are in the
//! console's own units (set up on the console: gallons or litres, inches or
//! millimetres, °F or °C); the point config says which.

/// The console's clock: local time, minute resolution, no zone (the
/// device config names the zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsoleTime {
    pub year: i16,
    pub month: i8,
    pub day: i8,
    pub hour: i8,
    pub minute: i8,
}

impl ConsoleTime {
    /// `YYMMDDHHmm` (computer format; years 2000-2099).
    pub fn parse_compact(s: &str) -> Option<ConsoleTime> {
        if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = |i: usize| s[i..i + 2].parse::<i8>().ok();
        ConsoleTime {
            year: 2000 + i16::from(n(0)?),
            month: n(2)?,
            day: n(4)?,
            hour: n(6)?,
            minute: n(8)?,
        }
        .valid()
    }

    /// The same time if it is a possible calendar time.
    pub fn valid(self) -> Option<ConsoleTime> {
        jiff::civil::DateTime::new(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            0,
            0,
        )
        .ok()
        .map(|_| self)
    }

    /// Unix ms, read in time zone `tz` (an ambiguous or skipped local time
    /// at a DST change takes the earlier instant).
    pub fn to_unix_ms(self, tz: &jiff::tz::TimeZone) -> Option<i64> {
        let dt = jiff::civil::DateTime::new(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            0,
            0,
        )
        .ok()?;
        let z = tz.to_ambiguous_zoned(dt).compatible().ok()?;
        Some(z.timestamp().as_millisecond())
    }
}

impl std::fmt::Display for ConsoleTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }
}

/// Function 201, one tank.
#[derive(Debug, Clone, PartialEq)]
pub struct TankInventory {
    pub tank: u8,
    /// The product code (computer format: one character) or name (display).
    pub product: String,
    /// Status bits (computer format only): bit 0 delivery in progress,
    /// bit 1 leak test in progress, bit 2 invalid fuel height alarm.
    pub status: Option<u16>,
    pub volume: f64,
    pub tc_volume: f64,
    pub ullage: f64,
    pub height: f64,
    pub water: f64,
    pub temperature: f64,
    /// Water volume (computer format only).
    pub water_volume: Option<f64>,
}

/// Function 202, one delivery as the console recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub start: ConsoleTime,
    pub end: ConsoleTime,
    pub start_volume: f64,
    pub start_tc_volume: f64,
    pub start_water: f64,
    pub start_temperature: f64,
    pub end_volume: f64,
    pub end_tc_volume: f64,
    pub end_water: f64,
    pub end_temperature: f64,
    pub start_height: f64,
    pub end_height: f64,
}

/// Function 202, one tank's recent deliveries (the console keeps the last few).
#[derive(Debug, Clone, PartialEq)]
pub struct TankDeliveries {
    pub tank: u8,
    pub product: String,
    pub deliveries: Vec<Delivery>,
}

/// Function 205, one tank's active alarms.
#[derive(Debug, Clone, PartialEq)]
pub struct TankAlarms {
    pub tank: u8,
    pub alarms: Vec<TankAlarm>,
}

/// A reply, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// `at`: the console's clock, when its date line was readable (not
    /// needed: readings are stamped with the agent's clock).
    Inventory {
        at: Option<ConsoleTime>,
        tanks: Vec<TankInventory>,
    },
    Deliveries {
        at: ConsoleTime,
        tanks: Vec<TankDeliveries>,
    },
    Alarms {
        at: Option<ConsoleTime>,
        tanks: Vec<TankAlarms>,
    },
}

/// Tank alarm types of function 205 (TLS-3XX serial interface manual,
/// tank alarm category): (code, config item, the console's display text).
pub const TANK_ALARMS: &[(u8, &str, &str)] = &[
    (1, "setup_data_warning", "SETUP DATA WARNING"),
    (2, "leak", "LEAK ALARM"),
    (3, "high_water", "HIGH WATER ALARM"),
    (4, "overfill", "OVERFILL ALARM"),
    (5, "low_product", "LOW PRODUCT ALARM"),
    (6, "sudden_loss", "SUDDEN LOSS ALARM"),
    (7, "high_product", "HIGH PRODUCT ALARM"),
    (8, "invalid_fuel_level", "INVALID FUEL LEVEL"),
    (9, "probe_out", "PROBE OUT"),
    (10, "high_water_warning", "HIGH WATER WARNING"),
    (11, "delivery_needed", "DELIVERY NEEDED"),
    (12, "max_product", "MAX PRODUCT ALARM"),
    (13, "gross_leak_test_fail", "GROSS TEST FAIL"),
    (14, "periodic_leak_test_fail", "PER TEST FAIL"),
    (15, "annual_leak_test_fail", "ANNUAL TEST FAIL"),
    (16, "periodic_test_needed_warning", "PER TEST NEEDED WARN"),
    (17, "annual_test_needed_warning", "ANNUAL TEST NEEDED WARN"),
    (18, "periodic_test_needed", "PER TEST NEEDED ALARM"),
    (19, "annual_test_needed", "ANNUAL TEST NEEDED ALARM"),
    (20, "leak_test_active", "LEAK TEST ACTIVE"),
    (21, "no_csld_idle_time", "NO CSLD IDLE TIME"),
    (22, "siphon_break_active", "SIPHON BREAK ACTIVE"),
    (23, "csld_rate_increase", "CSLD RATE INCR WARN"),
    (24, "accuchart_calibration", "ACCUCHART CAL WARN"),
    (
        25,
        "hrm_reconciliation_warning",
        "HRM RECONCILIATION WARNING",
    ),
    (26, "hrm_reconciliation", "HRM RECONCILIATION ALARM"),
    (27, "cold_temperature", "COLD TEMPERATURE WARNING"),
    (28, "missing_delivery_ticket", "MISSING DELIVERY TICKET"),
    (29, "line_gross_leak", "TANK/LINE GROSS LEAK"),
];

/// One active tank alarm: a known type or one this table does not name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TankAlarm {
    Known(u8),
    /// A code (computer format) or text (display format) not in [`TANK_ALARMS`].
    Other(String),
}

impl TankAlarm {
    pub fn from_code(code: &str) -> TankAlarm {
        match code.parse::<u8>() {
            Ok(n) if TANK_ALARMS.iter().any(|a| a.0 == n) => TankAlarm::Known(n),
            _ => TankAlarm::Other(code.to_string()),
        }
    }
    pub fn from_text(text: &str) -> TankAlarm {
        let t = text.trim();
        match TANK_ALARMS.iter().find(|a| a.2 == t) {
            Some(a) => TankAlarm::Known(a.0),
            None => TankAlarm::Other(t.to_string()),
        }
    }
    /// The config item name (`high_water`), or `code_<x>` for another one.
    pub fn item(&self) -> String {
        match self {
            TankAlarm::Known(n) => TANK_ALARMS
                .iter()
                .find(|a| a.0 == *n)
                .map(|a| a.1.to_string())
                .unwrap_or_default(),
            TankAlarm::Other(s) => format!("other:{s}"),
        }
    }
}

/// The item names a point may use for an alarm (`alarm.<name>`).
pub fn alarm_items() -> impl Iterator<Item = &'static str> {
    TANK_ALARMS.iter().map(|a| a.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_times_parse_check_the_calendar_and_follow_the_zone() {
        let t = ConsoleTime::parse_compact("2611231504").unwrap();
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute),
            (2026, 11, 23, 15, 4)
        );
        assert_eq!(ConsoleTime::parse_compact("2613011504"), None, "month 13");
        assert_eq!(ConsoleTime::parse_compact("26022915a4"), None);
        assert_eq!(ConsoleTime::parse_compact("260229"), None);
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(t.to_unix_ms(&utc), Some(1_795_446_240_000));
        let chicago = jiff::tz::TimeZone::get("America/Chicago").unwrap();
        assert_eq!(
            t.to_unix_ms(&chicago),
            Some(1_795_446_240_000 + 6 * 3_600_000)
        );
        // summer time: UTC-5
        let july = ConsoleTime { month: 7, ..t };
        assert_eq!(
            july.to_unix_ms(&chicago).unwrap() - july.to_unix_ms(&utc).unwrap(),
            5 * 3_600_000
        );
    }

    #[test]
    fn alarms_by_code_or_text_map_to_items_and_unknown_ones_are_kept() {
        assert_eq!(TankAlarm::from_code("03").item(), "high_water");
        assert_eq!(TankAlarm::from_text(" OVERFILL ALARM ").item(), "overfill");
        assert_eq!(TankAlarm::from_code("77"), TankAlarm::Other("77".into()));
        assert_eq!(TankAlarm::from_text("FOO").item(), "other:FOO");
    }
}
