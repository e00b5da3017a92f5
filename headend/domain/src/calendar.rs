//! A site's local calendar, pure: its time zone and the days that sell
//! like a Sunday (public holidays, which the operator names per site).
//! Sales follow the local hour of the week, except on a holiday, whose
//! hours are the Sunday's: in the history a holiday adds to the Sunday's
//! evidence instead of pulling its weekday down, and ahead it is walked
//! at the Sunday's rates.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// Most holidays a site's calendar holds (ten years of them).
pub const MAX_HOLIDAYS: usize = 200;
/// The hour of the week a holiday's hours are (Sunday 00:00).
const SUNDAY: usize = 6 * 24;

/// A holiday: a local date, `YYYY-MM-DD` on the wire and in SQL; anything
/// else is refused (jiff alone would also take a date-time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Holiday(pub Date);

impl FromStr for Holiday {
    type Err = String;
    fn from_str(s: &str) -> Result<Holiday, String> {
        let b = s.as_bytes();
        let shaped = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        shaped
            .then(|| s.parse::<Date>().ok())
            .flatten()
            .map(Holiday)
            .ok_or_else(|| format!("{:?} is not a date (YYYY-MM-DD)", truncated(s)))
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(40).collect()
}

impl fmt::Display for Holiday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for Holiday {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Holiday {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Holiday, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A site's zone and holidays.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    tz: TimeZone,
    holidays: BTreeSet<Date>,
}

/// Why a calendar's holidays were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("holiday {index}: {reason}")]
    NotADate { index: usize, reason: String },
    #[error("at most {MAX_HOLIDAYS} holidays ({0} given)")]
    TooMany(usize),
}

impl Calendar {
    /// A zone with no holidays.
    pub fn new(tz: TimeZone) -> Calendar {
        Calendar {
            tz,
            holidays: BTreeSet::new(),
        }
    }

    /// UTC, no holidays.
    pub fn utc() -> Calendar {
        Calendar::new(TimeZone::UTC)
    }

    /// The same zone with these holidays.
    pub fn with_holidays(mut self, days: impl IntoIterator<Item = Date>) -> Calendar {
        self.holidays.extend(days);
        self
    }

    /// Holidays as given (`YYYY-MM-DD` each), validated, sorted and
    /// without repeats; a malformed one is an error naming it, never
    /// skipped.
    pub fn parse_holidays(days: &[String]) -> Result<Vec<Holiday>, CalendarError> {
        if days.len() > MAX_HOLIDAYS {
            return Err(CalendarError::TooMany(days.len()));
        }
        let set = days
            .iter()
            .enumerate()
            .map(|(index, d)| {
                d.parse::<Holiday>()
                    .map_err(|reason| CalendarError::NotADate { index, reason })
            })
            .collect::<Result<BTreeSet<Holiday>, _>>()?;
        Ok(set.into_iter().collect())
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    pub fn holidays(&self) -> impl Iterator<Item = &Date> {
        self.holidays.iter()
    }

    /// The hour of the week whose sales `ms` follows: its local hour of
    /// the week (0 = Monday 00:00-01:00), or the Sunday's same hour on a
    /// holiday.
    pub fn slot(&self, ms: i64) -> usize {
        let Ok(t) = Timestamp::from_millisecond(ms) else {
            return 0;
        };
        let z = t.to_zoned(self.tz.clone());
        let hour = z.hour() as usize;
        if !self.holidays.is_empty() && self.holidays.contains(&z.date()) {
            return SUNDAY + hour;
        }
        z.weekday().to_monday_zero_offset() as usize * 24 + hour
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Monday 00:00 UTC (2026-11-23).
    const MONDAY: i64 = 1_795_392_000_000;
    const H: i64 = 3_600_000;

    #[test]
    fn a_holiday_sells_like_a_sunday_in_its_own_zone() {
        let berlin = TimeZone::get("Europe/Berlin").expect("zoneinfo");
        let tuesday: Date = "2026-11-24".parse().expect("date");
        let cal = Calendar::new(berlin).with_holidays([tuesday]);
        // Monday 23:00 UTC is Tuesday 00:00 in Berlin: the holiday's first hour
        assert_eq!(cal.slot(MONDAY + 23 * H), SUNDAY);
        assert_eq!(cal.slot(MONDAY + 22 * H), 23, "Monday 23:00 in Berlin");
        assert_eq!(cal.slot(MONDAY + (23 + 13) * H), SUNDAY + 13);
        // Wednesday 00:00 in Berlin: a weekday again
        assert_eq!(cal.slot(MONDAY + 47 * H), 48);
        assert_eq!(Calendar::utc().slot(MONDAY + 25 * H), 25);
    }

    #[test]
    fn holidays_parse_as_dates_and_anything_else_is_refused_by_index() {
        let ok = Calendar::parse_holidays(&[
            "2026-12-26".into(),
            "2026-12-25".into(),
            "2026-12-26".into(),
        ])
        .expect("dates");
        let shown: Vec<String> = ok.iter().map(|h| h.to_string()).collect();
        assert_eq!(shown, ["2026-12-25", "2026-12-26"], "sorted, once each");
        let json = serde_json::to_string(&ok).expect("json");
        assert_eq!(json, r#"["2026-12-25","2026-12-26"]"#);
        assert_eq!(serde_json::from_str::<Vec<Holiday>>(&json).ok(), Some(ok));
        assert!(serde_json::from_str::<Vec<Holiday>>(r#"["2026-02-30"]"#).is_err());
        for bad in [
            "2026-13-01",
            "25.12.2026",
            "2026-12-25T00:00",
            "",
            "2026-2-01",
            "+2026-1-01",
            "２０２６-12-25",
        ] {
            let e = Calendar::parse_holidays(&["2026-12-24".into(), bad.into()]);
            assert!(
                matches!(e, Err(CalendarError::NotADate { index: 1, .. })),
                "{bad:?}: {e:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_HOLIDAYS).map(|_| "2026-01-01".into()).collect();
        assert_eq!(
            Calendar::parse_holidays(&many),
            Err(CalendarError::TooMany(MAX_HOLIDAYS + 1))
        );
    }
}
