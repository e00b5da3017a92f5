//! Inventory rules, pure (the first core of issue 15; not wired to any
//! route yet): how old a tank's data is, whether an observation is
//! plausible, the consumption rate from hourly history, and when a tank
//! runs out. Every function takes the clock and the facts as input.

use super::text_enum;

/// Default staleness threshold of a site: 6 h.
pub const DEFAULT_STALE_MS: i64 = 6 * 3_600_000;
/// A reading above capacity × this is implausible.
pub const OVER_CAPACITY: f64 = 1.1;
/// A rise of more than this share of capacity between two observations
/// with no delivery open is an unexplained jump.
pub const JUMP_UP_SHARE: f64 = 0.02;
/// A fall faster than this share of capacity per hour is an unexplained
/// jump (no station sells a quarter of a tank in an hour).
pub const JUMP_DOWN_SHARE_PER_H: f64 = 0.25;

text_enum!(
    /// Why an observation is not trusted for the rate and the forecast.
    Implausible, "plausibility flag" {
        Negative => "negative",
        AboveCapacity => "above_capacity",
        JumpUp => "unexplained_rise",
        JumpDown => "unexplained_fall",
        Water => "water_above_limit",
    }
);

/// One volume observation of a tank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub at_ms: i64,
    pub volume_l: f64,
    /// Water at the tank's bottom, mm, if the gauge reports it.
    pub water_mm: Option<f64>,
}

/// What the rules need to know of a tank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TankFacts {
    pub capacity_l: f64,
    pub water_limit_mm: Option<f64>,
}

/// How old a tank's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh {
        age_ms: i64,
    },
    Stale {
        age_ms: i64,
    },
    /// No observation at all.
    Never,
}

pub fn freshness(last_ms: Option<i64>, now_ms: i64, threshold_ms: i64) -> Freshness {
    match last_ms {
        None => Freshness::Never,
        Some(t) => {
            let age_ms = (now_ms - t).max(0);
            if age_ms > threshold_ms {
                Freshness::Stale { age_ms }
            } else {
                Freshness::Fresh { age_ms }
            }
        }
    }
}

/// The reasons an observation is implausible (empty: plausible), given
/// the previous plausible one and whether a delivery is open at the tank.
pub fn plausibility(
    prev: Option<&Observation>,
    obs: &Observation,
    tank: &TankFacts,
    delivery_open: bool,
) -> Vec<Implausible> {
    let mut out = Vec::new();
    if obs.volume_l < 0.0 {
        out.push(Implausible::Negative);
    }
    if obs.volume_l > tank.capacity_l * OVER_CAPACITY {
        out.push(Implausible::AboveCapacity);
    }
    if let (Some(w), Some(limit)) = (obs.water_mm, tank.water_limit_mm)
        && w > limit
    {
        out.push(Implausible::Water);
    }
    if let Some(p) = prev
        && obs.at_ms > p.at_ms
    {
        let change = obs.volume_l - p.volume_l;
        let hours = (obs.at_ms - p.at_ms) as f64 / 3_600_000.0;
        if change > tank.capacity_l * JUMP_UP_SHARE && !delivery_open {
            out.push(Implausible::JumpUp);
        }
        if -change > tank.capacity_l * JUMP_DOWN_SHARE_PER_H * hours.max(1.0 / 60.0) {
            out.push(Implausible::JumpDown);
        }
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const TANK: TankFacts = TankFacts {
        capacity_l: 20_000.0,
        water_limit_mm: Some(50.0),
    };

    fn obs(at_h: f64, volume_l: f64) -> Observation {
        Observation {
            at_ms: (at_h * H as f64) as i64,
            volume_l,
            water_mm: None,
        }
    }

    #[test]
    fn a_tank_is_stale_after_its_threshold_and_never_seen_is_its_own_case() {
        let now = 100 * H;
        assert_eq!(freshness(None, now, DEFAULT_STALE_MS), Freshness::Never);
        assert_eq!(
            freshness(Some(now - 6 * H), now, DEFAULT_STALE_MS),
            Freshness::Fresh { age_ms: 6 * H }
        );
        assert_eq!(
            freshness(Some(now - 6 * H - 1), now, DEFAULT_STALE_MS),
            Freshness::Stale { age_ms: 6 * H + 1 }
        );
        assert_eq!(
            freshness(Some(now + 5), now, DEFAULT_STALE_MS),
            Freshness::Fresh { age_ms: 0 },
            "a clock ahead is not negative age"
        );
    }

    #[test]
    fn implausible_readings_are_flagged_with_their_reason() {
        use Implausible::*;
        let prev = obs(0.0, 10_000.0);
        let cases: Vec<(Observation, bool, Vec<Implausible>)> = vec![
            (obs(1.0, 9_800.0), false, vec![]),
            (obs(1.0, -1.0), false, vec![Negative, JumpDown]),
            (obs(1.0, 22_001.0), false, vec![AboveCapacity, JumpUp]),
            (obs(1.0, 22_001.0), true, vec![AboveCapacity]),
            // a delivery explains a rise
            (obs(1.0, 15_000.0), true, vec![]),
            (obs(1.0, 10_500.0), false, vec![JumpUp]),
            // a quarter of the tank per hour is the fastest plausible fall
            (obs(1.0, 5_000.0), false, vec![]),
            (obs(1.0, 4_999.0), false, vec![JumpDown]),
            (obs(2.0, 1_000.0), false, vec![]),
            (
                Observation {
                    water_mm: Some(51.0),
                    ..obs(1.0, 9_900.0)
                },
                false,
                vec![Water],
            ),
        ];
        for (o, delivery, want) in cases {
            assert_eq!(
                plausibility(Some(&prev), &o, &TANK, delivery),
                want,
                "{o:?}"
            );
        }
        assert_eq!(plausibility(None, &obs(0.0, 1.0), &TANK, false), vec![]);
        assert_eq!(
            "unexplained_rise".parse::<Implausible>(),
            Ok(Implausible::JumpUp)
        );
        assert!("odd".parse::<Implausible>().is_err());
    }

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
}
