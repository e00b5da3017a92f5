//! Consumption and runout, pure: a robust rate from hourly history, a
//! weekday/hour profile where the history allows, the runout time found
//! by walking that profile forward, and the risk level. Every function
//! takes the clock, the site's time zone and the facts as input.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::text_enum;

const H: i64 = 3_600_000;
/// Furthest a runout is forecast; beyond it the tank "does not run out".
pub const HORIZON_H: i64 = 60 * 24;
/// Fewest samples an hour bucket needs before its own median counts.
pub const MIN_BUCKET_SAMPLES: usize = 2;
/// History needed for an hour-of-day profile (days).
pub const DAYS_FOR_HOUR_OF_DAY: i64 = 2;
/// History needed for an hour-of-week profile (days).
pub const DAYS_FOR_HOUR_OF_WEEK: i64 = 14;

/// A consumption rate and how much history it stands on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub litres_per_hour: f64,
    /// Hourly intervals the rate was taken from.
    pub samples: usize,
    /// 0..1: how much to trust it (more samples, less spread: higher).
    pub confidence: f64,
}

/// The consumption rate from hourly volumes (`(hour start ms, volume)`,
/// oldest first, plausible ones only): the median of the hourly falls,
/// skipping rises (deliveries) and intervals across a gap. The median
/// keeps one odd hour from moving it; `None` below 3 usable hours.
pub fn consumption_rate(hourly: &[(i64, f64)]) -> Option<Rate> {
    let mut falls: Vec<f64> = hourly
        .windows(2)
        .filter_map(|w| {
            let ((t0, v0), (t1, v1)) = (w[0], w[1]);
            let hours = (t1 - t0) as f64 / 3_600_000.0;
            // a gap longer than 2 h hides what happened inside it
            if hours <= 0.0 || hours > 2.0 {
                return None;
            }
            let fall = (v0 - v1) / hours;
            // a rise is a delivery: neither consumption nor zero
            (fall >= 0.0).then_some(fall)
        })
        .collect();
    if falls.len() < 3 {
        return None;
    }
    falls.sort_by(f64::total_cmp);
    let median = percentile(&falls, 0.5);
    let spread = percentile(&falls, 0.75) - percentile(&falls, 0.25);
    let n = falls.len() as f64;
    let by_count = (n / 48.0).min(1.0);
    let by_spread = if median > 0.0 {
        (1.0 - spread / (2.0 * median)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Some(Rate {
        litres_per_hour: median,
        samples: falls.len(),
        confidence: (by_count * 0.5 + by_spread * 0.5).clamp(0.0, 1.0),
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let f = pos - lo as f64;
    sorted[lo] * (1.0 - f) + sorted[hi] * f
}

/// When a tank runs out at `rate`, from `volume_l` now, down to the
/// unusable bottom `floor_l`: (hours, time). `None` when nothing is
/// consumed.
pub fn runout(volume_l: f64, floor_l: f64, rate_l_per_h: f64, now_ms: i64) -> Option<(f64, i64)> {
    if rate_l_per_h <= 0.0 {
        return None;
    }
    let hours = ((volume_l - floor_l) / rate_l_per_h).max(0.0);
    Some((hours, now_ms + (hours * 3_600_000.0).round() as i64))
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
    }
);

/// Litres per hour for each local hour of the week (Monday 00:00 first).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub basis: Basis,
    pub overall: Rate,
    pub per_hour: Vec<f64>,
}

/// The local hour of the week (0 = Monday 00:00-01:00) of `ms` in `tz`.
pub fn hour_of_week(ms: i64, tz: &TimeZone) -> usize {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => {
            let z = t.to_zoned(tz.clone());
            let day = z.weekday().to_monday_zero_offset() as usize;
            day * 24 + z.hour() as usize
        }
        Err(_) => 0,
    }
}

/// The hourly falls `(end of interval ms, L/h)` of a plausible hourly
/// series, skipping rises and intervals across gaps (as [`consumption_rate`]).
fn falls(hourly: &[(i64, f64)]) -> Vec<(i64, f64)> {
    hourly
        .windows(2)
        .filter_map(|w| {
            let ((t0, v0), (t1, v1)) = (w[0], w[1]);
            let hours = (t1 - t0) as f64 / H as f64;
            if hours <= 0.0 || hours > 2.0 {
                return None;
            }
            let fall = (v0 - v1) / hours;
            (fall >= 0.0).then_some((t1, fall))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    // a bucket's center: the mean of what is left after the lowest and
    // highest quarter (the median of few samples is noisier than this)
    let cut = v.len() / 4;
    let mid = &v[cut..v.len() - cut];
    mid.iter().sum::<f64>() / mid.len() as f64
}

/// Each hour bucket's rate: its own center with [`MIN_BUCKET_SAMPLES`]
/// or more; else the mean of its nearest full neighbours on either side
/// (the hours around it sell alike; the day's median would put a
/// daytime rate into a night hour), averaged with its one sample if it
/// has one; `overall` when no bucket is full.
fn fill_sparse(buckets: &[Vec<f64>], overall: f64) -> Vec<f64> {
    let n = buckets.len();
    let full = |i: usize| buckets[i].len() >= MIN_BUCKET_SAMPLES;
    (0..n)
        .map(|h| {
            if full(h) {
                return median(buckets[h].clone());
            }
            let before = (1..n).map(|d| (h + n - d) % n).find(|&i| full(i));
            let after = (1..n).map(|d| (h + d) % n).find(|&i| full(i));
            let near = match (before, after) {
                (Some(a), Some(b)) => {
                    (median(buckets[a].clone()) + median(buckets[b].clone())) / 2.0
                }
                _ => overall,
            };
            match buckets[h].first() {
                Some(one) => (one + near) / 2.0,
                None => near,
            }
        })
        .collect()
}

/// The consumption profile of a tank from its plausible hourly volumes
/// (oldest first): an hour-of-week profile from 14 days of history, an
/// hour-of-day one from 2 days, else flat. A bucket with fewer than
/// [`MIN_BUCKET_SAMPLES`] falls takes the coarser rate. `None` without
/// enough history for a rate at all.
pub fn profile(hourly: &[(i64, f64)], tz: &TimeZone) -> Option<Profile> {
    let overall = consumption_rate(hourly)?;
    let f = falls(hourly);
    let span_days = match (hourly.first(), hourly.last()) {
        (Some(a), Some(b)) => (b.0 - a.0) / (24 * H),
        _ => 0,
    };
    let mut week: Vec<Vec<f64>> = vec![Vec::new(); 168];
    for &(t, r) in &f {
        week[hour_of_week(t, tz)].push(r);
    }
    let flat = vec![overall.litres_per_hour; 168];
    if span_days < DAYS_FOR_HOUR_OF_DAY {
        return Some(Profile {
            basis: Basis::Flat,
            overall,
            per_hour: flat,
        });
    }
    let mut day: Vec<Vec<f64>> = vec![Vec::new(); 24];
    for (i, b) in week.iter().enumerate() {
        day[i % 24].extend_from_slice(b);
    }
    let day_rate = fill_sparse(&day, overall.litres_per_hour);
    if span_days < DAYS_FOR_HOUR_OF_WEEK {
        return Some(Profile {
            basis: Basis::HourOfDay,
            overall,
            per_hour: (0..168).map(|i| day_rate[i % 24]).collect(),
        });
    }
    Some(Profile {
        basis: Basis::HourOfWeek,
        overall,
        per_hour: week
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                if b.len() >= MIN_BUCKET_SAMPLES {
                    median(b)
                } else {
                    day_rate[i % 24]
                }
            })
            .collect(),
    })
}

impl Profile {
    /// The mean rate over the `hours` after `from_ms`, L/h.
    pub fn mean_ahead(&self, from_ms: i64, hours: i64, tz: &TimeZone) -> f64 {
        let n = hours.max(1);
        (0..n)
            .map(|i| self.per_hour[hour_of_week(from_ms + i * H, tz)])
            .sum::<f64>()
            / n as f64
    }
}

/// Litres the profile sells between two times, hour by hour (partial
/// hours in proportion; at most [`HORIZON_H`]).
pub fn sold_between(profile: &Profile, from_ms: i64, to_ms: i64, tz: &TimeZone) -> f64 {
    let end = to_ms.min(from_ms + HORIZON_H * H);
    let mut t = from_ms;
    let mut sold = 0.0;
    while t < end {
        let hour_end = ((t.div_euclid(H) + 1) * H).min(end);
        sold += profile.per_hour[hour_of_week(t, tz)] * (hour_end - t) as f64 / H as f64;
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
    tz: &TimeZone,
) -> Option<i64> {
    let mut left = volume_l - floor_l;
    if left <= 0.0 {
        return Some(from_ms);
    }
    let mut t = from_ms;
    let end = from_ms + HORIZON_H * H;
    let mut how = hour_of_week(t, tz);
    let mut steps = 0;
    while t < end {
        // the zone is asked once a day (a DST change moves the hour)
        if steps > 0 {
            how = if steps % 24 == 0 {
                hour_of_week(t, tz)
            } else {
                (how + 1) % 168
            };
        }
        steps += 1;
        let rate = profile.per_hour[how];
        let hour_end = (t.div_euclid(H) + 1) * H;
        let dt_h = (hour_end - t) as f64 / H as f64;
        let used = rate * dt_h;
        if rate > 0.0 && used >= left {
            return Some(t + (left / rate * H as f64).round() as i64);
        }
        left -= used;
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

/// Critical: under 12 h to runout or at the critical level; high: under
/// 24 h or running out before the next delivery's ETA (+ margin);
/// medium: under 48 h or at the low level; else low.
pub fn risk(
    volume_l: Option<f64>,
    hours_to_runout: Option<f64>,
    margin_h: Option<f64>,
    levels: Levels,
) -> Risk {
    let Some(v) = volume_l else {
        return Risk::Unknown;
    };
    let h = hours_to_runout.unwrap_or(f64::INFINITY);
    if h < 12.0 || v <= levels.critical_l {
        Risk::Critical
    } else if h < 24.0 || margin_h.is_some_and(|m| m < 0.0) {
        Risk::High
    } else if h < 48.0 || v <= levels.low_l {
        Risk::Medium
    } else {
        Risk::Low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_of_a_tank_draining_100_l_an_hour_ignores_a_delivery_a_gap_and_an_odd_hour() {
        // hand-computed: 100 L/h for 24 h, a delivery of 8,000 L at hour
        // 10, a 5 h gap after hour 15, one hour that lost 900 L
        let mut v = 15_000.0;
        let mut hourly = Vec::new();
        for h in 0..30 {
            if (16..21).contains(&h) {
                v -= 100.0;
                continue; // the gap: no rows
            }
            if h == 10 {
                v += 8_000.0;
            }
            if h == 12 {
                v -= 800.0;
            }
            hourly.push((h * H, v));
            v -= 100.0;
        }
        let r = consumption_rate(&hourly).expect("enough history");
        assert_eq!(r.litres_per_hour, 100.0, "the median of the falls");
        // 22 falls: not the delivery interval, not the 6 h one across the gap
        assert!(r.samples >= 20, "{r:?}");
        assert!(r.confidence > 0.5 && r.confidence <= 1.0, "{r:?}");
        // runout: 2,000 L above a 200 L floor at 100 L/h → 18 h
        assert_eq!(
            runout(2_000.0, 200.0, r.litres_per_hour, 0),
            Some((18.0, 18 * H))
        );
        assert_eq!(
            runout(100.0, 200.0, 100.0, 0),
            Some((0.0, 0)),
            "already below the floor"
        );
        assert_eq!(
            runout(2_000.0, 200.0, 0.0, 0),
            None,
            "nothing consumed: no runout"
        );
        assert_eq!(consumption_rate(&hourly[..3]), None, "too little history");
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    /// A Monday 00:00 UTC (2026-11-23).
    const MONDAY: i64 = 1_795_392_000_000;

    #[test]
    fn hours_of_the_week_are_local_and_start_on_monday() {
        assert_eq!(hour_of_week(MONDAY, &utc()), 0);
        assert_eq!(hour_of_week(MONDAY + 25 * H, &utc()), 25);
        assert_eq!(hour_of_week(MONDAY - H, &utc()), 167, "Sunday 23:00");
        let berlin = TimeZone::get("Europe/Berlin").expect("zoneinfo");
        assert_eq!(hour_of_week(MONDAY, &berlin), 1, "01:00 in Berlin");
    }

    /// Hourly rollups (hour start, the volume at its end) of a tank that
    /// sells 300 L/h from 06:00 to 22:00 and 30 L/h at night.
    fn day_night(days: i64) -> Vec<(i64, f64)> {
        let mut v = 40_000.0;
        let mut out = Vec::new();
        for i in 0..days * 24 {
            v -= if (6..22).contains(&(i % 24)) {
                300.0
            } else {
                30.0
            };
            out.push((MONDAY + i * H, v));
        }
        out
    }

    #[test]
    fn a_day_night_pattern_gives_an_hour_of_day_profile_and_an_exact_runout() {
        let hist = day_night(3);
        let p = profile(&hist, &utc()).expect("a profile");
        assert_eq!(p.basis, Basis::HourOfDay);
        assert_eq!(p.per_hour[6], 300.0, "the fall during 06:00-07:00");
        assert_eq!(p.per_hour[5], 30.0);
        assert_eq!(p.per_hour[24 + 6], 300.0, "Tuesday too");
        // hand-computed: from Thursday 00:00 with 5,000 L above a 0 floor:
        // 6 night hours take 180 L, 06:00-22:00 takes 4,800 L, and the
        // last 20 L last 40 min at 30 L/h → 22:40
        let from = MONDAY + 3 * 24 * H;
        let at = runout_along(&p, 5_000.0, 0.0, from, &utc()).expect("runs out");
        assert_eq!(at, from + 22 * H + 40 * 60_000);
        let flat = runout(5_000.0, 0.0, p.overall.litres_per_hour, from).expect("flat");
        assert!(at - flat.1 > 5 * H, "the profile matters here");
        assert_eq!(
            profile(&hist[..30], &utc()).map(|p| p.basis),
            Some(Basis::Flat),
            "a day and a bit is too little for a pattern"
        );
        assert_eq!(
            profile(&day_night(15), &utc()).map(|p| p.basis),
            Some(Basis::HourOfWeek)
        );
    }

    #[test]
    fn nothing_consumed_means_no_runout_and_below_the_floor_means_now() {
        let flat: Vec<(i64, f64)> = (0..10).map(|i| (MONDAY + i * H, 1_000.0)).collect();
        let p = profile(&flat, &utc()).expect("a rate of zero");
        assert_eq!(runout_along(&p, 1_000.0, 0.0, MONDAY, &utc()), None);
        assert_eq!(runout_along(&p, 100.0, 200.0, MONDAY, &utc()), Some(MONDAY));
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
            assert_eq!(risk(v, h, m, l), want, "{v:?} {h:?} {m:?}");
        }
    }
}
