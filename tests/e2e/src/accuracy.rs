//! The inventory's accuracy against a simulated week with ground truth
//! (`atg_sim::scenario`): the agent's delivery detector and the headend's
//! verdict on each detection, and the headend's tank assessment (the same
//! pure functions the inventory job runs) every 10 simulated minutes,
//! compared with what really happened. Used by the `inventory_accuracy`
//! test (goals asserted) and the `accuracy` example (figures printed).

use atg_sim::scenario::{FaultKind, Scenario, ScenarioConfig};
use edge_agent::delivery::{DetectConfig, Detected, Detector};
use headend::domain::assess::{self, Inputs, TankConfig};
use headend::domain::calendar::Calendar;
use headend::domain::deliveries::{Verdict, verdict};
use headend::domain::forecast::{
    self, Basis, Levels, Outlook, Profile, Rate, Spread, runout_along,
};
use headend::domain::inventory::{self, Candidate, Freshness, Implausible, ObsSource, Observation};

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
/// Staleness threshold of the simulated sites.
pub const STALE_MS: i64 = 6 * H;
/// Evaluations this far apart (the job runs every minute; every tenth
/// simulated minute keeps the test quick).
pub const EVERY_MS: i64 = 10 * MIN;
/// Two deliveries match when their windows overlap within this.
pub const MATCH_SLACK_MS: i64 = 30 * MIN;

#[derive(Debug, Default, Clone)]
pub struct Accuracy {
    pub tanks: usize,
    pub days: i64,
    pub true_deliveries: usize,
    pub detections: usize,
    pub rejected_as_jumps: usize,
    pub matched_detections: usize,
    pub found_deliveries: usize,
    /// Runout errors (|forecast - truth| / (truth - now)) at instants 23-25 h before the truth.
    pub runout_errors: Vec<f64>,
    /// (tank, simulated day, error) of each runout instant.
    pub runout_detail: Vec<(usize, f64, f64)>,
    /// The same instants forecast by an oracle that knows each tank's true
    /// mean profile and true volume: the floor set by how the future's
    /// sales differ from their mean (no forecast can do better on average).
    pub oracle_errors: Vec<f64>,
    pub evaluations: usize,
    pub stale_truth: usize,
    pub stale_missed: usize,
    pub stale_false: usize,
    pub fault_instants: usize,
    pub fault_missed: usize,
    /// Fault instants flagged, but with another reason than the fault's.
    pub fault_other_reason: usize,
    /// Instants without any fault visible where a flag was raised.
    pub flags_without_fault: usize,
    /// Instants where the newest reading is 6-7 h old (a gap, no other
    /// fault on the tank and no delivery since the reading): the error of
    /// the projected volume against the true one, |projected - true| / true.
    pub silent_errors: Vec<f64>,
    /// At those instants, the risk equal to the one computed from the
    /// true volume and true runout.
    pub silent_risk_matches: usize,
    /// The same instants, the last reading's error (what the tank list
    /// showed before it projected).
    pub silent_reading_errors: Vec<f64>,
    /// Each stuck fault at a tank truly selling at least 50 L in the hour
    /// after the gauge stuck: the time from the gauge sticking to the first
    /// evaluation flagging it (`None`: never), and that hour's litres.
    pub stuck_delays: Vec<(Option<i64>, f64)>,
    pub missed: Vec<String>,
}

impl Accuracy {
    pub fn precision(&self) -> f64 {
        self.matched_detections as f64 / self.detections.max(1) as f64
    }
    pub fn recall(&self) -> f64 {
        self.found_deliveries as f64 / self.true_deliveries.max(1) as f64
    }
    fn sorted(&self) -> Vec<f64> {
        let mut e = self.runout_errors.clone();
        e.sort_by(f64::total_cmp);
        e
    }
    /// The share of silent instants whose projected volume is within `share` of the truth.
    pub fn silent_within(&self, share: f64) -> f64 {
        self.silent_errors.iter().filter(|e| **e <= share).count() as f64
            / self.silent_errors.len().max(1) as f64
    }

    pub fn runout_within(&self, share: f64) -> f64 {
        within(&self.runout_errors, share)
    }
    pub fn oracle_within(&self, share: f64) -> f64 {
        within(&self.oracle_errors, share)
    }
    pub fn runout_p(&self, q: f64) -> f64 {
        let e = self.sorted();
        if e.is_empty() {
            return f64::NAN;
        }
        e[((e.len() - 1) as f64 * q).round() as usize]
    }
}

fn within(e: &[f64], share: f64) -> f64 {
    e.iter().filter(|x| **x <= share).count() as f64 / e.len().max(1) as f64
}

/// A delivery as the headend would know it at a time.
#[derive(Debug, Clone, Copy)]
struct Seen {
    start_ms: i64,
    end_ms: i64,
    litres: f64,
    verdict: Verdict,
}

/// Runs the agent's detector over a tank's readings, then the headend's
/// verdict on each ended detection (with the readings from its start to
/// its end).
fn detect(readings: &[(i64, f64)]) -> Vec<Seen> {
    let mut d = Detector::new(DetectConfig::default());
    let mut out = Vec::new();
    for &(t, v) in readings {
        if let Some(Detected::Ended {
            start_ms,
            end_ms,
            start_volume,
            end_volume,
        }) = d.sample(t, v)
        {
            let window: Vec<(i64, f64)> = readings
                .iter()
                .copied()
                .filter(|(x, _)| (start_ms..=end_ms).contains(x))
                .collect();
            out.push(Seen {
                start_ms,
                end_ms,
                litres: end_volume - start_volume,
                verdict: verdict(&window, end_volume - start_volume),
            });
        }
    }
    out
}

fn overlaps(a: (i64, i64), b: (i64, i64)) -> bool {
    a.0 <= b.1 + MATCH_SLACK_MS && b.0 <= a.1 + MATCH_SLACK_MS
}

pub fn measure(cfg: ScenarioConfig) -> Accuracy {
    let sc = Scenario::generate(cfg);
    let cal = Calendar::utc();
    let mut acc = Accuracy {
        tanks: sc.tanks.len(),
        days: sc.cfg.days,
        true_deliveries: sc.deliveries.len(),
        ..Default::default()
    };
    for (k, spec) in sc.tanks.iter().enumerate() {
        let mins = &sc.minutes[k];
        let readings: Vec<(i64, f64)> = mins
            .iter()
            .filter_map(|m| m.reading.map(|(v, _)| (m.at_ms, v)))
            .collect();
        let seen = detect(&readings);
        let confirmed: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.verdict == Verdict::Confirmed)
            .collect();
        let truth: Vec<(i64, i64)> = sc
            .deliveries
            .iter()
            .filter(|d| d.tank == k)
            .map(|d| (d.start_ms, d.end_ms))
            .collect();
        acc.detections += confirmed.len();
        acc.rejected_as_jumps += seen.len() - confirmed.len();
        acc.matched_detections += confirmed
            .iter()
            .filter(|s| truth.iter().any(|t| overlaps(*t, (s.start_ms, s.end_ms))))
            .count();
        acc.found_deliveries += truth
            .iter()
            .filter(|t| {
                confirmed
                    .iter()
                    .any(|s| overlaps(**t, (s.start_ms, s.end_ms)))
            })
            .count();

        let tank = TankConfig {
            capacity_l: spec.capacity_l,
            low_l: spec.capacity_l * 0.25,
            critical_l: spec.capacity_l * 0.10,
            floor_l: spec.floor_l,
            water_limit_mm: Some(spec.water_limit_mm),
        };
        // hourly rollups as the store keeps them: (hour, last reading)
        let mut hourly: Vec<(i64, f64)> = Vec::new();
        let mut next_reading = 0;
        let mut last: Option<(i64, f64, f64)> = None;
        // the last evaluation's (reading, since), as tank_state keeps it
        let mut flat: Option<(f64, i64)> = None;
        // each stuck fault of this tank: when first flagged
        let stucks: Vec<&atg_sim::scenario::Fault> = sc
            .faults
            .iter()
            .filter(|f| f.tank == k && f.kind == FaultKind::Stuck)
            .collect();
        let mut stuck_seen: Vec<Option<i64>> = vec![None; stucks.len()];
        let start = sc.cfg.start_ms + 24 * H;
        let mut now = sc.cfg.start_ms;
        let end = sc.cfg.start_ms + sc.cfg.days * 24 * H;
        while now < end {
            now += EVERY_MS;
            // the readings up to now reach the store
            while next_reading < mins.len() && mins[next_reading].at_ms <= now {
                let m = &mins[next_reading];
                if let Some((v, w)) = m.reading {
                    let hour = m.at_ms - m.at_ms.rem_euclid(H);
                    match hourly.last_mut() {
                        Some(h) if h.0 == hour => h.1 = v,
                        _ => hourly.push((hour, v)),
                    }
                    last = Some((m.at_ms, v, w));
                }
                next_reading += 1;
            }
            if now < start {
                continue;
            }
            let windows: Vec<(i64, i64, Option<f64>)> = confirmed
                .iter()
                .filter(|s| s.end_ms <= now)
                .map(|s| (s.start_ms, s.end_ms, Some(s.litres)))
                .collect();
            let cands: Vec<Candidate> = last
                .map(|(at, v, w)| Candidate {
                    source: ObsSource::Atg,
                    obs: Observation {
                        at_ms: at,
                        volume_l: v,
                        water_mm: Some(w),
                    },
                    confidence: 1.0,
                })
                .into_iter()
                .collect();
            let hist_from = now - 21 * 24 * H;
            let first = hourly.partition_point(|h| h.0 < hist_from);
            let flat_since_ms = cands.first().map(|c| inventory::flat_since(flat, &c.obs));
            flat = cands
                .first()
                .zip(flat_since_ms)
                .map(|(c, s)| (c.obs.volume_l, s));
            let a = assess::assess(&Inputs {
                tank,
                stale_after_ms: STALE_MS,
                cal: &cal,
                hourly: &hourly[first..],
                candidates: &cands,
                deliveries: &windows,
                next_eta_ms: None,
                flat_since_ms,
                now_ms: now,
            });
            acc.evaluations += 1;
            if a.flags.contains(&Implausible::Stuck) {
                for (f, seen) in stucks.iter().zip(stuck_seen.iter_mut()) {
                    if seen.is_none() && (f.from_ms..=f.to_ms).contains(&now) {
                        *seen = Some(now - f.from_ms);
                    }
                }
            }
            let i = ((now - sc.cfg.start_ms) / MIN) as usize;
            let i = i.min(mins.len() - 1);

            // stale: the truth is the age of the newest reading
            let truly_stale = last.is_none_or(|(at, _, _)| now - at > STALE_MS);
            let flagged_stale = matches!(a.freshness, Freshness::Stale { .. } | Freshness::Never);
            if truly_stale {
                acc.stale_truth += 1;
                if !flagged_stale {
                    acc.stale_missed += 1;
                    acc.missed
                        .push(format!("tank {k} at {now}: stale not flagged"));
                }
            } else if flagged_stale {
                acc.stale_false += 1;
            }

            // implausible: a fault the newest reading shows must be flagged
            let at = last.map(|l| l.0).unwrap_or(0);
            let want: Option<&[Implausible]> = sc
                .faults
                .iter()
                .filter(|f| f.tank == k && (f.from_ms..f.to_ms).contains(&at) && at <= now)
                .find_map(|f| match f.kind {
                    FaultKind::SpikeUp => {
                        Some(&[Implausible::JumpUp, Implausible::AboveCapacity][..])
                    }
                    FaultKind::SpikeDown => Some(&[Implausible::JumpDown][..]),
                    FaultKind::Negative => Some(&[Implausible::Negative][..]),
                    FaultKind::OverCapacity => Some(&[Implausible::AboveCapacity][..]),
                    FaultKind::WaterIngress if mins[i].true_water_mm > spec.water_limit_mm => {
                        Some(&[Implausible::Water][..])
                    }
                    // stuck: due once it has repeated for 3 full hours and the
                    // tank truly sold 1 % of its capacity meanwhile
                    FaultKind::Stuck => {
                        let hour_after = f.from_ms - f.from_ms.rem_euclid(H) + H;
                        let from = ((hour_after - sc.cfg.start_ms) / MIN) as usize;
                        let sold: f64 = sc.sold[k][from.min(i)..i].iter().sum();
                        (now >= hour_after + 4 * H && sold >= 0.01 * spec.capacity_l)
                            .then_some(&[Implausible::Stuck][..])
                    }
                    _ => None,
                });
            match want {
                Some(kinds) => {
                    acc.fault_instants += 1;
                    if a.flags.is_empty() {
                        acc.fault_missed += 1;
                        acc.missed
                            .push(format!("tank {k} at {now}: {kinds:?} not flagged"));
                    } else if !a.flags.iter().any(|f| kinds.contains(f)) {
                        acc.fault_other_reason += 1;
                        acc.missed.push(format!(
                            "tank {k} at {now}: {kinds:?} flagged as {:?}",
                            a.flags
                        ));
                    }
                }
                None => {
                    let any_fault = sc.faults.iter().any(|f| {
                        f.tank == k
                            && f.from_ms <= now
                            && now <= f.to_ms + 3 * H
                            && f.kind != FaultKind::Gap
                    });
                    if !a.flags.is_empty() && !any_fault {
                        acc.flags_without_fault += 1;
                    }
                }
            }

            // silent 6-7 h: the projection against the truth
            let silent_ms = last.map_or(0, |l| now - l.0);
            if (6 * H..7 * H).contains(&silent_ms) {
                let since = now - silent_ms;
                let other_fault = sc.faults.iter().any(|f| {
                    f.tank == k
                        && f.kind != FaultKind::Gap
                        && f.kind != FaultKind::WaterIngress
                        && f.from_ms <= now
                        && f.to_ms + 6 * H >= since
                });
                let delivery = sc
                    .deliveries
                    .iter()
                    .any(|d| d.tank == k && d.end_ms >= since - 3 * H && d.start_ms <= now);
                if !other_fault && !delivery {
                    let truth = mins[i].true_volume_l;
                    let shown = a
                        .projected
                        .map_or(a.current.map_or(f64::NAN, |c| c.obs.volume_l), |p| {
                            p.volume_l
                        });
                    let err = (shown - truth).abs() / truth.max(1.0);
                    if err > 0.05 {
                        acc.missed.push(format!(
                            "tank {k} at {now}: silent {:.1} h, shown {shown:.0} L, truth {truth:.0} L",
                            silent_ms as f64 / H as f64
                        ));
                    }
                    acc.silent_errors.push(err);
                    // what was shown before issue 33: the last reading
                    let reading = last.map_or(f64::NAN, |l| l.1);
                    acc.silent_reading_errors
                        .push((reading - truth).abs() / truth.max(1.0));
                    let true_h = sc
                        .true_runout_ms(k, i)
                        .map(|r| ((r - now) as f64 / H as f64).max(0.0));
                    let levels = Levels {
                        low_l: tank.low_l,
                        critical_l: tank.critical_l,
                    };
                    if forecast::risk(Some(truth), Outlook::exact(true_h, None), levels) == a.risk {
                        acc.silent_risk_matches += 1;
                    }
                }
            }

            // runout 24 h ahead: where the truth is 23-25 h away, no fault in
            // the last 6 h and no delivery in the last 3 h
            if let Some(truth) = sc.true_runout_ms(k, i) {
                let ahead = truth - now;
                let quiet = !sc.faults.iter().any(|f| {
                    f.tank == k
                        && f.from_ms <= now
                        && f.to_ms + 6 * H >= now
                        && f.kind != FaultKind::WaterIngress
                }) && !sc
                    .deliveries
                    .iter()
                    .any(|d| d.tank == k && d.start_ms <= now && d.end_ms + 3 * H >= now);
                if (23 * H..=25 * H).contains(&ahead)
                    && quiet
                    && now >= sc.cfg.start_ms + 2 * 24 * H
                {
                    let e = match a.runout_ms {
                        Some(r) => (r - truth) as f64 / ahead as f64,
                        None => f64::INFINITY,
                    };
                    acc.runout_errors.push(e.abs());
                    let oracle = Profile {
                        basis: Basis::HourOfDay,
                        overall: Rate {
                            litres_per_hour: 0.0,
                            samples: 0,
                            confidence: 1.0,
                        },
                        per_hour: (0..168).map(|h| spec.hourly_l[h % 24]).collect(),
                        spread: Spread::default(),
                    };
                    let o = runout_along(&oracle, mins[i].true_volume_l, spec.floor_l, now, &cal)
                        .map_or(f64::INFINITY, |r| (r - truth).abs() as f64 / ahead as f64);
                    acc.oracle_errors.push(o);
                    acc.runout_detail.push((
                        k,
                        (now - sc.cfg.start_ms) as f64 / (24 * H) as f64,
                        e,
                    ));
                }
            }
        }
        for (f, seen) in stucks.iter().zip(&stuck_seen) {
            // what the tank truly sold in the hour after the gauge stuck
            let from = ((f.from_ms - sc.cfg.start_ms) / MIN) as usize;
            let hour_end = (from + 60).min(mins.len());
            let rate = sc.sold[k][from.min(hour_end)..hour_end].iter().sum::<f64>();
            if rate >= 50.0 && f.from_ms >= start {
                acc.stuck_delays.push((*seen, rate));
            }
        }
    }
    acc
}
