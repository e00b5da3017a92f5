//! Runout, pure: the time a tank reaches its floor found by walking its
//! consumption profile ([`super::consumption`]) forward, with a p10-p90
//! interval from the profile's spread, and the risk level. Every function
//! takes the clock, the site's time zone and the facts as input.

use super::calendar::Calendar;
use super::text_enum;

const H: i64 = 3_600_000;
/// Furthest a runout is forecast; beyond it the tank "does not run out".
pub const HORIZON_H: i64 = 60 * 24;
/// A consumption rate and how much history it stands on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub litres_per_hour: f64,
    /// Hourly intervals the rate was taken from.
    pub samples: usize,
    /// 0..1: how much to trust it (more samples, less spread: higher).
    pub confidence: f64,
}

text_enum!(
    /// What a forecast's hourly rates stand on.
    Basis, "rate basis" {
        /// One rate for every hour (too little history for a pattern).
        Flat => "flat",
        /// A rate per local hour of the day.
        HourOfDay => "hour_of_day",
        /// A rate per local hour of the week (weekday and hour).
        HourOfWeek => "hour_of_week",
        /// The hour-of-week shape at the level of the last three days.
        Trend => "trend",
    }
);

/// Litres per hour for each local hour of the week (Monday 00:00 first).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub basis: Basis,
    pub overall: Rate,
    pub per_hour: Vec<f64>,
    /// How what is sold strays from `per_hour`.
    pub spread: Spread,
}

/// The spread of what is sold around a profile, as relative variances:
/// what is sold over `T` hours strays from the profile by a relative
/// standard deviation of `sqrt(hour / T + day * min(1, 24 / T) + level)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spread {
    /// One hour's sales (sale to sale; the gauge's noise included).
    pub hour: f64,
    /// One day's, beyond its hours' (weather, events).
    pub day: f64,
    /// The profile's level itself (thin history, drifting demand).
    pub level: f64,
}

/// z of the 90th percentile of a normal distribution.
const Z90: f64 = 1.281_551_6;

impl Spread {
    /// The relative standard deviation of what is sold over `hours`.
    pub fn rel_sd(&self, hours: f64) -> f64 {
        let t = hours.max(0.25);
        (self.hour / t + self.day * (24.0 / t).min(1.0) + self.level)
            .sqrt()
            .min(3.0)
    }
}

impl Profile {
    /// The mean rate over the `hours` after `from_ms`, L/h.
    pub fn mean_ahead(&self, from_ms: i64, hours: i64, cal: &Calendar) -> f64 {
        let n = hours.max(1);
        (0..n)
            .map(|i| self.per_hour[cal.slot(from_ms + i * H)])
            .sum::<f64>()
            / n as f64
    }
}

/// Litres the profile sells between two times, hour by hour (partial
/// hours in proportion; at most [`HORIZON_H`]).
pub fn sold_between(profile: &Profile, from_ms: i64, to_ms: i64, cal: &Calendar) -> f64 {
    let end = to_ms.min(from_ms + HORIZON_H * H);
    let mut t = from_ms;
    let mut sold = 0.0;
    while t < end {
        let hour_end = ((t.div_euclid(H) + 1) * H).min(end);
        sold += profile.per_hour[cal.slot(t)] * (hour_end - t) as f64 / H as f64;
        t = hour_end;
    }
    sold
}

/// When a tank with `volume_l` at `from_ms` reaches `floor_l`, walking the
/// profile hour by hour: the time, or `None` when it does not within
/// [`HORIZON_H`] (nothing consumed).
pub fn runout_along(
    profile: &Profile,
    volume_l: f64,
    floor_l: f64,
    from_ms: i64,
    cal: &Calendar,
) -> Option<i64> {
    first_reaching(profile, volume_l - floor_l, from_ms, cal, |sold, _| sold)
}

/// The runout's p10 and p90: the times by which what is sold, at the
/// profile's spread, takes the tank to its floor one time in ten (early)
/// and nine times in ten (late).
pub fn runout_interval(
    profile: &Profile,
    volume_l: f64,
    floor_l: f64,
    from_ms: i64,
    cal: &Calendar,
) -> (Option<i64>, Option<i64>) {
    let left = volume_l - floor_l;
    let s = &profile.spread;
    let early = first_reaching(profile, left, from_ms, cal, |sold, h| {
        sold * (Z90 * s.rel_sd(h)).exp()
    });
    let late = first_reaching(profile, left, from_ms, cal, |sold, h| {
        sold * (-Z90 * s.rel_sd(h)).exp()
    });
    (early, late)
}

/// The first time `reach(litres sold since from_ms, hours since)` comes to
/// `left`, walking the profile hour by hour (linear within an hour); `None`
/// within [`HORIZON_H`] when it does not.
fn first_reaching(
    profile: &Profile,
    left: f64,
    from_ms: i64,
    cal: &Calendar,
    reach: impl Fn(f64, f64) -> f64,
) -> Option<i64> {
    if left <= 0.0 {
        return Some(from_ms);
    }
    let mut t = from_ms;
    let end = from_ms + HORIZON_H * H;
    let mut how = cal.slot(t);
    let mut steps = 0;
    let mut sold = 0.0;
    let mut reached = 0.0;
    while t < end {
        // the calendar is asked at each local midnight (a holiday starts
        // or ends) and once a day (a DST change moves the hour)
        if steps > 0 {
            how = if steps % 24 == 0 || how % 24 == 23 {
                cal.slot(t)
            } else {
                (how + 1) % 168
            };
        }
        steps += 1;
        let hour_end = (t.div_euclid(H) + 1) * H;
        sold += profile.per_hour[how] * (hour_end - t) as f64 / H as f64;
        let now_reached = reach(sold, (hour_end - from_ms) as f64 / H as f64);
        if now_reached >= left && now_reached > reached {
            let f = (left - reached) / (now_reached - reached);
            return Some(t + (f * (hour_end - t) as f64).round() as i64);
        }
        reached = now_reached;
        t = hour_end;
    }
    None
}

text_enum!(
    /// How urgently a tank needs attention.
    Risk, "risk level" {
        /// No forecast (no rate or no volume).
        Unknown => "unknown",
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

/// The levels a risk is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    pub low_l: f64,
    pub critical_l: f64,
}

/// What the forecast says of a tank's runout, for its risk: the point
/// and the early end of its interval (p10), to runout and to the next
/// delivery's ETA.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Outlook {
    pub hours: Option<f64>,
    pub early_hours: Option<f64>,
    /// Runout minus the next ETA, hours.
    pub margin_h: Option<f64>,
    /// The p10 runout minus the next ETA, hours.
    pub early_margin_h: Option<f64>,
}

impl Outlook {
    /// A runout known exactly (the truth): no interval.
    pub fn exact(hours: Option<f64>, margin_h: Option<f64>) -> Outlook {
        Outlook {
            hours,
            early_hours: hours,
            margin_h,
            early_margin_h: margin_h,
        }
    }
}

/// Critical: under 12 h to runout (6 h at the interval's early end) or at
/// the critical level; high: under 24 h (12 h early), or running out
/// before the next delivery's ETA one time in ten or more (the p10 before
/// it); medium: under 48 h (24 h early) or at the low level; else low.
pub fn risk(volume_l: Option<f64>, o: Outlook, levels: Levels) -> Risk {
    let Some(v) = volume_l else {
        return Risk::Unknown;
    };
    let h = o.hours.unwrap_or(f64::INFINITY);
    let early = o.early_hours.unwrap_or(h);
    let before_eta = |m: Option<f64>| m.is_some_and(|m| m < 0.0);
    if h < 12.0 || early < 6.0 || v <= levels.critical_l {
        Risk::Critical
    } else if h < 24.0 || early < 12.0 || before_eta(o.margin_h) || before_eta(o.early_margin_h) {
        Risk::High
    } else if h < 48.0 || early < 24.0 || v <= levels.low_l {
        Risk::Medium
    } else {
        Risk::Low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use jiff::tz::TimeZone;

    fn utc() -> Calendar {
        Calendar::utc()
    }

    /// A Monday 00:00 UTC (2026-11-23).
    const MONDAY: i64 = 1_795_392_000_000;

    #[test]
    fn hours_of_the_week_are_local_and_start_on_monday() {
        assert_eq!(utc().slot(MONDAY), 0);
        assert_eq!(utc().slot(MONDAY + 25 * H), 25);
        assert_eq!(utc().slot(MONDAY - H), 167, "Sunday 23:00");
        let berlin = Calendar::new(TimeZone::get("Europe/Berlin").expect("zoneinfo"));
        assert_eq!(berlin.slot(MONDAY), 1, "01:00 in Berlin");
    }

    /// 300 L/h from 06:00 to 22:00 and 30 L/h at night, every day.
    fn day_night(spread: Spread) -> Profile {
        Profile {
            basis: Basis::HourOfDay,
            overall: Rate {
                litres_per_hour: 208.75,
                samples: 72,
                confidence: 1.0,
            },
            per_hour: (0..168)
                .map(|i| {
                    if (6..22).contains(&(i % 24)) {
                        300.0
                    } else {
                        30.0
                    }
                })
                .collect(),
            spread,
        }
    }

    #[test]
    fn a_runout_walks_the_profile_hour_by_hour() {
        let p = day_night(Spread::default());
        // hand-computed: from Thursday 00:00 with 5,000 L above a 0 floor:
        // 6 night hours take 180 L, 06:00-22:00 takes 4,800 L, and the
        // last 20 L last 40 min at 30 L/h → 22:40
        let from = MONDAY + 3 * 24 * H;
        let at = runout_along(&p, 5_000.0, 0.0, from, &utc()).expect("runs out");
        assert_eq!(at, from + 22 * H + 40 * 60_000);
        assert_eq!(
            runout_interval(&p, 5_000.0, 0.0, from, &utc()),
            (Some(at), Some(at)),
            "no spread, no interval"
        );
        // selling nothing: no runout; below the floor: now
        let none = Profile {
            per_hour: vec![0.0; 168],
            ..p
        };
        assert_eq!(runout_along(&none, 1_000.0, 0.0, MONDAY, &utc()), None);
        assert_eq!(
            runout_along(&none, 100.0, 200.0, MONDAY, &utc()),
            Some(MONDAY)
        );
    }

    #[test]
    fn a_holiday_in_the_calendar_is_walked_at_the_sundays_rates() {
        // 100 L/h on weekdays and Saturdays, 10 L/h on Sundays
        let p = Profile {
            basis: Basis::HourOfWeek,
            overall: Rate {
                litres_per_hour: 87.1,
                samples: 500,
                confidence: 1.0,
            },
            per_hour: (0..168)
                .map(|i| if i >= 6 * 24 { 10.0 } else { 100.0 })
                .collect(),
            spread: Spread::default(),
        };
        // hand-computed from Monday 00:00 with 3,000 L: 30 h on weekdays;
        // with Tuesday a holiday, Monday sells 2,400 L, Tuesday 240 L and
        // the last 360 L take until Wednesday 03:36
        let plain = runout_along(&p, 3_000.0, 0.0, MONDAY, &utc());
        assert_eq!(plain, Some(MONDAY + 30 * H));
        let tuesday = "2026-11-24".parse().expect("date");
        let cal = Calendar::utc().with_holidays([tuesday]);
        let with = runout_along(&p, 3_000.0, 0.0, MONDAY, &cal);
        assert_eq!(with, Some(MONDAY + 51 * H + 36 * 60_000));
        assert!((sold_between(&p, MONDAY, MONDAY + 48 * H, &cal) - 2_640.0).abs() < 1e-9);
        // from Monday 05:00 the walk enters the holiday at its local
        // midnight, not 24 steps on: 1,900 L on Monday, 240 L on Tuesday,
        // the last 860 L until Wednesday 08:36
        let late = runout_along(&p, 3_000.0, 0.0, MONDAY + 5 * H, &cal);
        assert_eq!(late, Some(MONDAY + 56 * H + 36 * 60_000));
        assert!((p.mean_ahead(MONDAY + 24 * H, 24, &cal) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn the_interval_holds_the_runout_at_the_spread_of_its_horizon() {
        // 100 L/h flat, only a level spread of 10 %: 1,000 L last 10 h at
        // the point; p10 when 1,000 L = C × e^(1.2816 × 0.1) → 8.797 h,
        // p90 when 1,000 L = C × e^(-0.12816) → 11.367 h
        let p = Profile {
            basis: Basis::Flat,
            overall: Rate {
                litres_per_hour: 100.0,
                samples: 100,
                confidence: 1.0,
            },
            per_hour: vec![100.0; 168],
            spread: Spread {
                hour: 0.0,
                day: 0.0,
                level: 0.01,
            },
        };
        let (lo, hi) = runout_interval(&p, 1_000.0, 0.0, MONDAY, &utc());
        let hours = |t: Option<i64>| (t.expect("runs out") - MONDAY) as f64 / H as f64;
        assert!((hours(lo) - 8.797).abs() < 0.01, "{}", hours(lo));
        assert!((hours(hi) - 11.367).abs() < 0.01, "{}", hours(hi));
        // the spread of what is sold shrinks with the horizon, to the level's
        let s = Spread {
            hour: 0.25,
            day: 0.01,
            level: 0.0009,
        };
        assert!((s.rel_sd(1.0) - (0.25_f64 + 0.01 + 0.0009).sqrt()).abs() < 1e-12);
        assert!((s.rel_sd(100.0) - (0.0025_f64 + 0.0024 + 0.0009).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn risk_levels_follow_hours_to_runout_levels_and_the_delivery_margin() {
        let l = Levels {
            low_l: 5_000.0,
            critical_l: 2_000.0,
        };
        let cases = [
            (None, None, None, Risk::Unknown),
            (Some(10_000.0), None, None, Risk::Low),
            (Some(10_000.0), Some(100.0), Some(20.0), Risk::Low),
            (Some(10_000.0), Some(100.0), Some(-1.0), Risk::High),
            (Some(10_000.0), Some(47.0), None, Risk::Medium),
            (Some(4_000.0), Some(100.0), None, Risk::Medium),
            (Some(10_000.0), Some(23.0), None, Risk::High),
            (Some(10_000.0), Some(11.0), None, Risk::Critical),
            (Some(1_000.0), None, None, Risk::Critical),
        ];
        for (v, h, m, want) in cases {
            assert_eq!(risk(v, Outlook::exact(h, m), l), want, "{v:?} {h:?} {m:?}");
        }
    }

    #[test]
    fn the_early_end_of_the_interval_raises_the_risk() {
        let l = Levels {
            low_l: 5_000.0,
            critical_l: 2_000.0,
        };
        let o = |hours, early, margin, early_margin| Outlook {
            hours: Some(hours),
            early_hours: Some(early),
            margin_h: margin,
            early_margin_h: early_margin,
        };
        let cases = [
            (o(100.0, 80.0, None, None), Risk::Low),
            (o(100.0, 20.0, None, None), Risk::Medium),
            (o(100.0, 10.0, None, None), Risk::High),
            (o(30.0, 5.0, None, None), Risk::Critical),
            // the point after the ETA, the p10 before it: may run out first
            (o(100.0, 60.0, Some(10.0), Some(-2.0)), Risk::High),
            (o(100.0, 60.0, Some(10.0), Some(2.0)), Risk::Low),
        ];
        for (outlook, want) in cases {
            assert_eq!(risk(Some(10_000.0), outlook, l), want, "{outlook:?}");
        }
    }
}
