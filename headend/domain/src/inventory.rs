//! Inventory rules, pure: how old a tank's data is, whether an
//! observation is plausible, which source's observation wins, and which
//! hourly volumes may be trusted for the rate. Every function takes the
//! clock and the facts as input (the forecast is in [`super::forecast`]).

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
        /// The gauge repeats one value while the tank should be selling.
        Stuck => "stuck",
    }
);

text_enum!(
    /// Where an observation came from, weakest first.
    ObsSource, "observation source" {
        Csv => "csv",
        Api => "api",
        Atg => "atg",
        Manual => "manual",
        /// Not an observation: the last one carried forward by the
        /// forecast while its source is silent (a tank's state only).
        Projected => "projected",
    }
);

impl ObsSource {
    /// Within the freshness window a higher rank wins: manual > ATG > API > CSV.
    pub fn rank(self) -> u8 {
        match self {
            ObsSource::Projected => 0,
            ObsSource::Csv => 1,
            ObsSource::Api => 2,
            ObsSource::Atg => 3,
            ObsSource::Manual => 4,
        }
    }
}

text_enum!(
    /// [`Freshness`] without the age, as stored and filtered on.
    FreshnessKind, "freshness" {
        Fresh => "fresh",
        Stale => "stale",
        Never => "never",
    }
);

impl Freshness {
    pub fn kind(self) -> FreshnessKind {
        match self {
            Freshness::Fresh { .. } => FreshnessKind::Fresh,
            Freshness::Stale { .. } => FreshnessKind::Stale,
            Freshness::Never => FreshnessKind::Never,
        }
    }

    pub fn age_ms(self) -> Option<i64> {
        match self {
            Freshness::Fresh { age_ms } | Freshness::Stale { age_ms } => Some(age_ms),
            Freshness::Never => None,
        }
    }
}

/// One observation offered for a tank's current volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub source: ObsSource,
    pub obs: Observation,
    /// 0..1 as the source gave it.
    pub confidence: f64,
}

/// The observation that stands for a tank now: among those no older than
/// `window_ms`, the highest-ranked source (the newest within it); when
/// none is that fresh, the newest of all.
pub fn winner(cands: &[Candidate], now_ms: i64, window_ms: i64) -> Option<Candidate> {
    let fresh = cands
        .iter()
        .filter(|c| now_ms - c.obs.at_ms <= window_ms)
        .max_by_key(|c| (c.source.rank(), c.obs.at_ms));
    fresh
        .or_else(|| cands.iter().max_by_key(|c| (c.obs.at_ms, c.source.rank())))
        .copied()
}

/// Since when a gauge has shown its current value: the previous
/// evaluation's (reading, since) carried over while the reading repeats to
/// the last bit (a live gauge's noise never does), else the current
/// observation's time (the earliest known for a new value).
pub fn flat_since(prev: Option<(f64, i64)>, current: &Observation) -> i64 {
    match prev {
        Some((v, since)) if v == current.volume_l && since <= current.at_ms => since,
        _ => current.at_ms,
    }
}

/// Consecutive jumps that agree with each other after which the new level
/// is believed (a gauge re-levelled, a tank pumped out for repair).
pub const REANCHOR_AFTER: usize = 3;

/// The hourly volumes (`(hour start, volume at its end)`, oldest first)
/// that may be trusted for the rate, and the flags of the newest one.
/// Each is judged against the last trusted one; a rise counts as a
/// delivery when `delivered(from, to)` says one was seen in between (with
/// its litres when known: then the change less the delivery is judged).
/// [`REANCHOR_AFTER`] hours that agree with each other but jumped from
/// the trusted level become the new trusted level.
pub fn trusted_hours(
    hourly: &[(i64, f64)],
    tank: &TankFacts,
    delivered: impl Fn(i64, i64) -> Option<f64>,
) -> (Vec<(i64, f64)>, Vec<Implausible>) {
    trusted_hours_with(hourly, tank, delivered, |_, _| None)
}

/// [`trusted_hours`] with the fall a consumption profile expects between
/// two times (see [`plausibility_with`]).
pub fn trusted_hours_with(
    hourly: &[(i64, f64)],
    tank: &TankFacts,
    delivered: impl Fn(i64, i64) -> Option<f64>,
    expected_fall: impl Fn(i64, i64) -> Option<f64>,
) -> (Vec<(i64, f64)>, Vec<Implausible>) {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(hourly.len());
    let mut pending: Vec<(i64, f64)> = Vec::new();
    let mut last_flags = Vec::new();
    for &(t, v) in hourly {
        let o = Observation {
            at_ms: t,
            volume_l: v,
            water_mm: None,
        };
        let prev = out.last().map(|&(pt, pv)| Observation {
            at_ms: pt,
            volume_l: pv,
            water_mm: None,
        });
        let came = prev.and_then(|p| delivered(p.at_ms, t));
        let expected = prev.and_then(|p| expected_fall(p.at_ms, t));
        let flags = plausibility_with(prev.as_ref(), &o, tank, came, expected);
        if flags.is_empty() {
            out.push((t, v));
            pending.clear();
        } else if flags
            .iter()
            .all(|f| matches!(f, Implausible::JumpUp | Implausible::JumpDown))
        {
            let agrees = pending.last().is_none_or(|&(pt, pv)| {
                let p = Observation {
                    at_ms: pt,
                    volume_l: pv,
                    water_mm: None,
                };
                plausibility(Some(&p), &o, tank, false).is_empty()
            });
            if !agrees {
                pending.clear();
            }
            pending.push((t, v));
            if pending.len() >= REANCHOR_AFTER {
                out.append(&mut pending);
                last_flags = Vec::new();
                continue;
            }
        } else {
            pending.clear();
        }
        last_flags = flags;
    }
    (out, last_flags)
}

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
    let delivered = delivery_open.then_some(f64::INFINITY);
    plausibility_with(prev, obs, tank, delivered, None)
}

/// A fall this much beyond what the tank's profile expected since the
/// previous observation is unexplained (times the expected fall, plus a
/// share of the capacity for a busy spell).
pub const FALL_OVER_EXPECTED: f64 = 3.0;
pub const FALL_SLACK_SHARE: f64 = 0.02;

/// [`plausibility`], with the fall the tank's consumption profile expects
/// between `prev` and `obs` when one is known: a fall more than
/// [`FALL_OVER_EXPECTED`] times that plus [`FALL_SLACK_SHARE`] of the
/// capacity is unexplained too (tighter than the fixed quarter an hour).
///
/// `delivered_l`: litres delivered between the two (None: no delivery;
/// infinite: a delivery of unknown volume, which explains any rise). A
/// known volume is a mass balance: the change less what came in must
/// look like sales.
pub fn plausibility_with(
    prev: Option<&Observation>,
    obs: &Observation,
    tank: &TankFacts,
    delivered_l: Option<f64>,
    expected_fall_l: Option<f64>,
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
        let raw = obs.volume_l - p.volume_l;
        let hours = (obs.at_ms - p.at_ms) as f64 / 3_600_000.0;
        // the change that sales must explain
        let change = match delivered_l {
            Some(l) if l.is_finite() => raw - l,
            _ => raw,
        };
        if change > tank.capacity_l * JUMP_UP_SHARE && delivered_l.is_none_or(f64::is_finite) {
            out.push(Implausible::JumpUp);
        }
        let mut max_fall = tank.capacity_l * JUMP_DOWN_SHARE_PER_H * hours.max(1.0 / 60.0);
        if let Some(e) = expected_fall_l {
            max_fall =
                max_fall.min(FALL_OVER_EXPECTED * e.max(0.0) + FALL_SLACK_SHARE * tank.capacity_l);
        }
        if -change > max_fall {
            out.push(Implausible::JumpDown);
        }
    }
    out
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
}
