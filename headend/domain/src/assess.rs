//! One tank's assessment, pure: from the tank's settings, its trusted
//! hourly history, the observations on offer and the next delivery, what
//! the tank holds now (and which source says so), how fresh that is,
//! what is implausible, the consumption profile, the runout and the risk.
//! The inventory job and the accuracy benchmark both run exactly this.

use super::calendar::Calendar;
use super::consumption;
use super::forecast::{self, Basis, Levels, Outlook, Risk};
use super::inventory::{
    self, Candidate, Freshness, Implausible, ObsSource, Observation, TankFacts,
};

const H: f64 = 3_600_000.0;

/// Hours a gauge must repeat one exact value (after the hour it first
/// showed it) to be stuck...
pub const STUCK_HOURS: usize = 3;
/// ... while the profile says at least this share of the tank was sold.
pub const STUCK_SHARE: f64 = 0.01;
/// Or: the gauge has shown one value to the last bit (`flat_since_ms`)
/// while the profile expected at least this many litres sold: an hour at a
/// tank selling 50 L/h.
pub const STUCK_LITRES: f64 = 50.0;

/// The hours with runs of one exact repeated value cut to their first
/// hour: a live gauge's noise never repeats a value to the last bit, a
/// stuck one does, and its flat hours must not pull the rate down.
fn without_repeats(hours: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(hours.len());
    let mut i = 0;
    while i < hours.len() {
        let mut j = i + 1;
        while j < hours.len() && hours[j].1 == hours[i].1 {
            j += 1;
        }
        if j - i > STUCK_HOURS {
            out.push(hours[i]);
        } else {
            out.extend_from_slice(&hours[i..j]);
        }
        i = j;
    }
    out
}

/// A tank whose newest observation is older than this is projected: its
/// volume now is that observation less what the profile sold since.
pub const PROJECT_AFTER_MS: i64 = 3_600_000;

/// The volume now of a tank whose source is silent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projection {
    pub volume_l: f64,
    /// The observation it is projected from.
    pub from_ms: i64,
    pub from_volume_l: f64,
}

/// A tank as the operator configured it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TankConfig {
    pub capacity_l: f64,
    pub low_l: f64,
    pub critical_l: f64,
    pub floor_l: f64,
    pub water_limit_mm: Option<f64>,
}

/// Everything the assessment looks at.
pub struct Inputs<'a> {
    pub tank: TankConfig,
    pub stale_after_ms: i64,
    /// The site's zone and holidays.
    pub cal: &'a Calendar,
    /// The gauge's hourly volumes: (hour start, volume at its end), oldest first.
    pub hourly: &'a [(i64, f64)],
    /// The newest observation of each source (the gauge's included).
    pub candidates: &'a [Candidate],
    /// Deliveries seen at the tank: (start, end, litres if known).
    pub deliveries: &'a [(i64, i64, Option<f64>)],
    /// The next delivery's ETA, if one is planned.
    pub next_eta_ms: Option<i64>,
    /// Since when the gauge has shown its current value
    /// ([`inventory::flat_since`]), if known.
    pub flat_since_ms: Option<i64>,
    pub now_ms: i64,
}

/// What the job concludes of a tank.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The observation that stands for the tank now.
    pub current: Option<Candidate>,
    /// Its volume carried forward by the profile, when it is older than
    /// [`PROJECT_AFTER_MS`] (the risk follows the projection).
    pub projected: Option<Projection>,
    pub freshness: Freshness,
    /// Why the current observation is not trusted (empty: it is).
    pub flags: Vec<Implausible>,
    /// Mean consumption over the next 24 h, L/h.
    pub rate_lph: Option<f64>,
    pub basis: Option<Basis>,
    pub rate_confidence: Option<f64>,
    pub hours_to_runout: Option<f64>,
    pub runout_ms: Option<i64>,
    /// The runout's p10 and p90: it comes before p10 one time in ten,
    /// after p90 one time in ten.
    pub runout_p10_ms: Option<i64>,
    pub runout_p90_ms: Option<i64>,
    /// Runout minus the next ETA, hours.
    pub margin_h: Option<f64>,
    pub risk: Risk,
}

impl TankConfig {
    fn facts(&self) -> TankFacts {
        TankFacts {
            capacity_l: self.capacity_l,
            water_limit_mm: self.water_limit_mm,
        }
    }
}

/// Whether the gauge is stuck: it has shown one value since
/// `flat_since_ms` while the profile expected [`STUCK_LITRES`] sold (judged
/// against that hour's sales: within the hour at a tank selling 50 L/h),
/// or its hourly volumes repeated it for [`STUCK_HOURS`] full hours while
/// the profile says [`STUCK_SHARE`] of the tank sold.
fn stuck(i: &Inputs<'_>, c: &Candidate, profile: Option<&forecast::Profile>) -> bool {
    if let (Some(p), Some(since)) = (profile, i.flat_since_ms)
        && forecast::sold_between(p, since, c.obs.at_ms, i.cal) >= STUCK_LITRES
    {
        return true;
    }
    let run: Vec<&(i64, f64)> = i
        .hourly
        .iter()
        .rev()
        .take_while(|(_, v)| *v == c.obs.volume_l)
        .collect();
    let (Some(p), Some(first)) = (profile, run.last()) else {
        return false;
    };
    if run.len() <= STUCK_HOURS {
        return false;
    }
    let hours = ((c.obs.at_ms - (first.0 + H as i64)) as f64 / H)
        .floor()
        .max(0.0) as i64;
    let expected = p.mean_ahead(first.0 + H as i64, hours, i.cal) * hours as f64;
    expected >= STUCK_SHARE * i.tank.capacity_l
}

pub fn assess(i: &Inputs<'_>) -> Assessment {
    let facts = i.tank.facts();
    // litres delivered between two times (infinite when a delivery there
    // has no known volume); a delivery counts when it ended after `from`
    // and started before `to`
    let delivered = |from: i64, to: i64| -> Option<f64> {
        let mut hit = false;
        let mut litres = 0.0;
        for &(s, e, l) in i.deliveries {
            if s <= to && e > from {
                hit = true;
                litres += l.unwrap_or(f64::INFINITY);
            }
        }
        hit.then_some(litres)
    };
    // two passes: a first profile from the hours the fixed rules trust,
    // then the hours judged against what that profile expects
    // complete hours only: the current hour's volume is its latest
    // reading, and its fall is not yet an hour's
    let fit = |hours: &[(i64, f64)]| {
        let complete = hours.partition_point(|h| h.0 + H as i64 <= i.now_ms);
        consumption::profile(&consumption::falls(&hours[..complete], i.cal, |a, b| {
            delivered(a, b).is_some()
        }))
    };
    let (first, _) = inventory::trusted_hours(i.hourly, &facts, delivered);
    let first = fit(&without_repeats(&first));
    // what the profile expects, plus two standard deviations of its
    // hours' sales: lumpy sales (trucks) sell far above their mean in an
    // hour and are no fault
    let expected = |from: i64, to: i64| {
        let p = first.as_ref()?;
        let hours = ((to - from) as f64 / H).ceil().max(1.0) as i64;
        let span = (to - from) as f64 / H;
        let sd = (p.spread.hour * span).sqrt() * p.overall.litres_per_hour;
        Some(p.mean_ahead(from, hours, i.cal) * span + 2.0 * sd)
    };
    let (trusted, _) = inventory::trusted_hours_with(i.hourly, &facts, delivered, expected);
    let trusted = without_repeats(&trusted);
    let profile = fit(&trusted);
    let current = inventory::winner(i.candidates, i.now_ms, i.stale_after_ms);
    let freshness = inventory::freshness(current.map(|c| c.obs.at_ms), i.now_ms, i.stale_after_ms);
    let flags = match current {
        None => Vec::new(),
        Some(c) => {
            // judged against the last trusted hour before it; a person's
            // override is a correction, judged only for range and water
            // (an hour's volume is its last reading, just before its end)
            let prev = trusted
                .iter()
                .rev()
                .find(|&&(t, _)| t + H as i64 <= c.obs.at_ms)
                .map(|&(t, v)| Observation {
                    at_ms: t + H as i64 - 1,
                    volume_l: v,
                    water_mm: None,
                });
            let prev = if c.source == ObsSource::Manual {
                None
            } else {
                prev
            };
            let came = prev.and_then(|p| delivered(p.at_ms, c.obs.at_ms));
            // what the profile says went since the previous hour
            let expected = match (&profile, prev) {
                (Some(p), Some(pv)) => {
                    let hours = ((c.obs.at_ms - pv.at_ms) as f64 / H).ceil().max(1.0) as i64;
                    Some(p.mean_ahead(pv.at_ms, hours, i.cal) * (c.obs.at_ms - pv.at_ms) as f64 / H)
                }
                _ => None,
            };
            let mut flags =
                inventory::plausibility_with(prev.as_ref(), &c.obs, &facts, came, expected);
            if c.source == ObsSource::Atg && stuck(i, &c, profile.as_ref()) {
                flags.push(Implausible::Stuck);
            }
            flags
        }
    };
    // an implausible volume is kept but the forecast starts from the last
    // trusted one (water does not make the volume wrong)
    let volume_untrusted = flags.iter().any(|f| *f != Implausible::Water);
    let start = match current {
        Some(c) if !volume_untrusted => Some((c.obs.volume_l, c.obs.at_ms)),
        _ => trusted.last().map(|&(t, v)| (v, t + H as i64)),
    };
    let r = runout_of(profile.as_ref(), start, i);
    // silent: the volume now is the trusted observation less what the
    // profile sold since, unless a delivery came in meanwhile (its litres
    // are the gauge's to tell)
    let projected = match (&profile, current, start) {
        (Some(p), Some(c), Some((v, at)))
            if !volume_untrusted
                && i.now_ms - at > PROJECT_AFTER_MS
                && delivered(at, i.now_ms).is_none() =>
        {
            Some(Projection {
                volume_l: (v - forecast::sold_between(p, at, i.now_ms, i.cal)).max(0.0),
                from_ms: c.obs.at_ms,
                from_volume_l: v,
            })
        }
        _ => None,
    };
    let risk = forecast::risk(
        projected
            .map(|p| p.volume_l)
            .or(current.map(|c| c.obs.volume_l)),
        r.outlook,
        Levels {
            low_l: i.tank.low_l,
            critical_l: i.tank.critical_l,
        },
    );
    Assessment {
        current,
        projected,
        freshness,
        flags,
        rate_lph: profile.as_ref().map(|p| p.mean_ahead(i.now_ms, 24, i.cal)),
        basis: profile.as_ref().map(|p| p.basis),
        rate_confidence: profile.as_ref().map(|p| p.overall.confidence),
        hours_to_runout: r.outlook.hours,
        runout_ms: r.at,
        runout_p10_ms: r.p10,
        runout_p90_ms: r.p90,
        margin_h: r.outlook.margin_h,
        risk,
    }
}

/// A runout: its time, its p10-p90 interval, and what the risk reads of
/// them.
struct Runout {
    at: Option<i64>,
    p10: Option<i64>,
    p90: Option<i64>,
    outlook: Outlook,
}

/// The runout from `start` (volume, when), walking the profile.
fn runout_of(
    profile: Option<&forecast::Profile>,
    start: Option<(f64, i64)>,
    i: &Inputs<'_>,
) -> Runout {
    let (at, (p10, p90)) = match (profile, start) {
        (Some(p), Some((v, from))) => (
            forecast::runout_along(p, v, i.tank.floor_l, from, i.cal),
            forecast::runout_interval(p, v, i.tank.floor_l, from, i.cal),
        ),
        _ => (None, (None, None)),
    };
    let hours = |r: Option<i64>| r.map(|r| ((r - i.now_ms) as f64 / H).max(0.0));
    let margin = |r: Option<i64>| match (r, i.next_eta_ms) {
        (Some(r), Some(eta)) => Some((r - eta) as f64 / H),
        _ => None,
    };
    Runout {
        at,
        p10,
        p90,
        outlook: Outlook {
            hours: hours(at),
            early_hours: hours(p10),
            margin_h: margin(at),
            early_margin_h: margin(p10),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HM: i64 = 3_600_000;
    static UTC: std::sync::LazyLock<Calendar> = std::sync::LazyLock::new(Calendar::utc);
    const T0: i64 = 1_795_392_000_000; // Monday 2026-11-23 00:00 UTC
    const TANK: TankConfig = TankConfig {
        capacity_l: 30_000.0,
        low_l: 6_000.0,
        critical_l: 2_000.0,
        floor_l: 500.0,
        water_limit_mm: Some(50.0),
    };

    fn gauge(at_ms: i64, volume_l: f64) -> Candidate {
        Candidate {
            source: ObsSource::Atg,
            obs: Observation {
                at_ms,
                volume_l,
                water_mm: Some(10.0),
            },
            confidence: 1.0,
        }
    }

    /// 40 h of a tank draining 200 L/h from 20,000 L with a 12,000 L
    /// delivery during hour 20.
    fn drain_with_delivery() -> Vec<(i64, f64)> {
        (0..40)
            .map(|h| {
                let mut v = 20_000.0 - 200.0 * (h + 1) as f64;
                if h >= 20 {
                    v += 12_000.0;
                }
                (T0 + h * HM, v)
            })
            .collect()
    }

    fn inputs<'a>(
        hourly: &'a [(i64, f64)],
        cands: &'a [Candidate],
        deliveries: &'a [(i64, i64, Option<f64>)],
        eta: Option<i64>,
        now_ms: i64,
    ) -> Inputs<'a> {
        Inputs {
            tank: TANK,
            stale_after_ms: 6 * HM,
            cal: &UTC,
            hourly,
            candidates: cands,
            deliveries,
            next_eta_ms: eta,
            flat_since_ms: None,
            now_ms,
        }
    }

    #[test]
    fn a_tank_draining_at_a_known_rate_with_a_delivery_gives_the_rate_and_runout() {
        let hourly = drain_with_delivery();
        // the newest reading: end of hour 39 = 40 h after T0, 24,000 L
        let now = T0 + 40 * HM;
        let cands = [gauge(now, 24_000.0)];
        let deliveries = [(
            T0 + 20 * HM + 10 * 60_000,
            T0 + 20 * HM + 40 * 60_000,
            Some(12_000.0),
        )];
        let a = assess(&inputs(&hourly, &cands, &deliveries, None, now));
        assert_eq!(a.flags, vec![]);
        assert_eq!(a.rate_lph, Some(200.0));
        // hand-computed: (24,000 - 500 floor) / 200 L/h = 117.5 h
        assert_eq!(a.hours_to_runout, Some(117.5));
        assert_eq!(a.runout_ms, Some(now + 117 * HM + 30 * 60_000));
        assert_eq!(a.risk, Risk::Low);
        assert_eq!(a.freshness, Freshness::Fresh { age_ms: 0 });
        // an ETA 120 h out leaves the tank dry for 2.5 h: high risk
        let a = assess(&inputs(
            &hourly,
            &cands,
            &deliveries,
            Some(now + 120 * HM),
            now,
        ));
        assert_eq!(a.margin_h, Some(-2.5));
        assert_eq!(a.risk, Risk::High);
    }

    #[test]
    fn the_current_hour_half_gone_does_not_count_as_an_hours_fall() {
        // 20 min into hour 40: its rollup holds the newest reading, 67 L
        // lower, which is no hour's fall (with it the mean would drop)
        let mut hourly = drain_with_delivery();
        hourly.push((T0 + 40 * HM, 24_000.0 - 200.0 / 3.0));
        let now = T0 + 40 * HM + 20 * 60_000;
        let cands = [gauge(now, 24_000.0 - 200.0 / 3.0)];
        let deliveries = [(
            T0 + 20 * HM + 10 * 60_000,
            T0 + 20 * HM + 40 * 60_000,
            Some(12_000.0),
        )];
        let a = assess(&inputs(&hourly, &cands, &deliveries, None, now));
        assert_eq!(a.rate_lph, Some(200.0));
    }

    #[test]
    fn an_implausible_reading_is_flagged_and_left_out_of_the_rate_and_forecast() {
        let mut hourly = drain_with_delivery();
        let deliveries = [(
            T0 + 20 * HM + 10 * 60_000,
            T0 + 20 * HM + 40 * 60_000,
            Some(12_000.0),
        )];
        // hour 30 reads 5,000 L low (a sensor dropout), hour 35 above capacity
        hourly[30].1 -= 5_000.0;
        hourly[35].1 = 40_000.0;
        let now = T0 + 40 * HM;
        let cands = [gauge(now, 24_000.0)];
        let a = assess(&inputs(&hourly, &cands, &deliveries, None, now));
        assert_eq!(a.rate_lph, Some(200.0), "the dropout did not move the rate");
        assert_eq!(a.hours_to_runout, Some(117.5));
        // the newest reading itself jumps 3,000 L with no delivery
        let cands = [gauge(now, 27_000.0)];
        let a = assess(&inputs(&hourly, &cands, &deliveries, None, now));
        assert_eq!(a.flags, vec![Implausible::JumpUp]);
        // the forecast starts from the last trusted hour (24,200 L at 39 h)
        assert_eq!(a.hours_to_runout, Some((24_200.0 - 500.0) / 200.0 - 1.0));
        // kept as the current observation, shown with its flag
        assert_eq!(a.current.map(|c| c.obs.volume_l), Some(27_000.0));
    }

    #[test]
    fn a_stale_tank_is_flagged_after_the_threshold() {
        let hourly = drain_with_delivery();
        let last = T0 + 40 * HM;
        let cands = [gauge(last, 24_000.0)];
        let at = |now| assess(&inputs(&hourly, &cands, &[], None, now)).freshness;
        assert_eq!(at(last + 6 * HM), Freshness::Fresh { age_ms: 6 * HM });
        assert_eq!(
            at(last + 6 * HM + 1),
            Freshness::Stale { age_ms: 6 * HM + 1 }
        );
        assert_eq!(
            assess(&inputs(&hourly, &[], &[], None, last)).freshness,
            Freshness::Never
        );
    }

    #[test]
    fn a_manual_override_beats_the_gauge_within_the_window_and_not_after() {
        let hourly = drain_with_delivery();
        let now = T0 + 40 * HM;
        let manual = Candidate {
            source: ObsSource::Manual,
            obs: Observation {
                at_ms: now - 2 * HM,
                volume_l: 21_000.0,
                water_mm: None,
            },
            confidence: 1.0,
        };
        let csv = Candidate {
            source: ObsSource::Csv,
            obs: Observation {
                at_ms: now,
                volume_l: 1.0,
                water_mm: None,
            },
            confidence: 0.5,
        };
        let cands = [gauge(now - HM, 24_200.0), manual, csv];
        let a = assess(&inputs(&hourly, &cands, &[], None, now));
        assert_eq!(a.current.map(|c| c.source), Some(ObsSource::Manual));
        assert_eq!(a.flags, vec![], "a person's correction is not a jump");
        let later = now + 5 * HM;
        let cands = [gauge(later, 23_000.0), manual, csv];
        let a = assess(&inputs(&hourly, &cands, &[], None, later));
        assert_eq!(
            a.current.map(|c| c.source),
            Some(ObsSource::Atg),
            "the override is past the 6 h window"
        );
        // nothing fresh at all: the newest wins, whatever its rank
        let cands = [manual, csv];
        let a = assess(&inputs(&hourly, &cands, &[], None, now + 10 * HM));
        assert_eq!(a.current.map(|c| c.source), Some(ObsSource::Csv));
        assert!(matches!(a.freshness, Freshness::Stale { .. }));
    }

    #[test]
    fn a_silent_gauges_volume_is_projected_by_the_profile_and_the_risk_follows_it() {
        let hourly = drain_with_delivery();
        let deliveries = [(
            T0 + 20 * HM + 10 * 60_000,
            T0 + 20 * HM + 40 * 60_000,
            Some(12_000.0),
        )];
        let last = T0 + 40 * HM;
        // (now after the last reading, projected volume) at 200 L/h
        let table = [
            (0, None),
            (HM, None), // not silent yet: exactly the bound
            (HM + 30 * 60_000, Some(24_000.0 - 300.0)),
            (6 * HM, Some(24_000.0 - 1_200.0)),
            (200 * HM, Some(0.0)), // never below empty
        ];
        for (after, want) in table {
            let cands = [gauge(last, 24_000.0)];
            let a = assess(&inputs(&hourly, &cands, &deliveries, None, last + after));
            assert_eq!(
                a.projected.map(|p| p.volume_l),
                want,
                "{} h after",
                after as f64 / HM as f64
            );
            if let Some(p) = a.projected {
                assert_eq!((p.from_ms, p.from_volume_l), (last, 24_000.0));
            }
        }
        // 6,500 L read 20 h ago: 2,500 L now, under the 6,000 L low level
        // (the last reading alone says low) and the 2,000 L critical one soon
        let low: Vec<(i64, f64)> = (0..40)
            .map(|h| (T0 + h * HM, 14_500.0 - 200.0 * (h + 1) as f64))
            .collect();
        let cands = [gauge(last, 6_500.0)];
        let a = assess(&inputs(&low, &cands, &[], None, last + 20 * HM));
        assert_eq!(a.projected.map(|p| p.volume_l), Some(2_500.0));
        assert_eq!(a.risk, Risk::Critical, "10 h to the floor");
        // a delivery after the last reading: its litres are unknown here, no projection
        let later = [(last + 2 * HM, last + 3 * HM, None)];
        let cands = [gauge(last, 24_000.0)];
        let a = assess(&inputs(&hourly, &cands, &later, None, last + 6 * HM));
        assert_eq!(a.projected, None);
    }

    #[test]
    fn a_gauge_that_repeats_one_value_for_hours_is_stuck_and_does_not_slow_the_rate() {
        let mut hourly = drain_with_delivery();
        // from hour 40 the gauge repeats 24,000 L for 5 more hours
        for h in 40..45 {
            hourly.push((T0 + h * HM, 24_000.0));
        }
        let now = T0 + 45 * HM;
        let a = assess(&inputs(&hourly, &[gauge(now, 24_000.0)], &[], None, now));
        assert_eq!(a.flags, vec![Implausible::Stuck]);
        assert_eq!(a.rate_lph, Some(200.0), "the flat hours are not sales of 0");
        // hand-computed: from the last real hour (24,000 L at 40 h) at 200 L/h
        assert_eq!(a.runout_ms, Some(T0 + 40 * HM + 117 * HM + 30 * 60_000));
        // two repeated hours are not yet stuck
        let now = T0 + 42 * HM;
        let a = assess(&inputs(
            &hourly[..42],
            &[gauge(now, 24_000.0)],
            &[],
            None,
            now,
        ));
        assert_eq!(a.flags, vec![]);
    }

    #[test]
    fn a_gauge_flat_while_the_profile_expects_50_litres_sold_is_stuck_within_the_hour() {
        // 200 L/h: 50 L are expected 15 minutes after the value froze
        let hourly = drain_with_delivery();
        let froze = T0 + 40 * HM;
        let table = [
            (froze, 14 * 60_000, false),
            (froze, 15 * 60_000, true),
            (froze, 59 * 60_000, true),
            (froze + 30 * 60_000, 10 * 60_000, false),
        ];
        for (since, after, want) in table {
            let now = since + after;
            let mut i = inputs(&hourly, &[], &[], None, now);
            let cands = [gauge(now, 24_000.0)];
            i.candidates = &cands;
            i.flat_since_ms = Some(since);
            let a = assess(&i);
            assert_eq!(
                a.flags.contains(&Implausible::Stuck),
                want,
                "flat for {} min",
                after / 60_000
            );
        }
        // no profile (no history): no judgement
        let mut i = inputs(&[], &[], &[], None, froze + 5 * HM);
        let cands = [gauge(froze + 5 * HM, 24_000.0)];
        i.candidates = &cands;
        i.flat_since_ms = Some(froze);
        assert!(assess(&i).flags.is_empty());
    }

    #[test]
    fn a_value_is_flat_since_its_first_evaluation_and_a_new_value_starts_again() {
        let obs = |at_ms, volume_l| Observation {
            at_ms,
            volume_l,
            water_mm: None,
        };
        use super::inventory::flat_since;
        assert_eq!(flat_since(None, &obs(10, 5.0)), 10);
        assert_eq!(flat_since(Some((5.0, 10)), &obs(70, 5.0)), 10);
        assert_eq!(flat_since(Some((5.0, 10)), &obs(70, 5.000001)), 70);
        assert_eq!(
            flat_since(Some((5.0, 90)), &obs(70, 5.0)),
            70,
            "a since after the observation is no since"
        );
    }

    #[test]
    fn water_above_its_limit_is_flagged_but_the_volume_still_counts() {
        let hourly = drain_with_delivery();
        let now = T0 + 40 * HM;
        let mut g = gauge(now, 24_000.0);
        g.obs.water_mm = Some(80.0);
        let a = assess(&inputs(&hourly, &[g], &[], None, now));
        assert_eq!(a.flags, vec![Implausible::Water]);
        assert_eq!(a.hours_to_runout, Some(117.5));
    }
}
