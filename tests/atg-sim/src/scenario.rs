//! Seeded scenarios with ground truth, for accuracy measurements: tanks
//! that sell with a day/night pattern, get deliveries, and suffer the
//! faults a real site has (sensor noise, stuck readings, gaps,
//! implausible jumps, negative dropouts, water ingress). Pure and
//! deterministic: the same seed gives the same minutes, faults and truth.
//!
//! What a reading shows is the truth plus the faults; the truth (true
//! volume, each delivery, each fault's window) is kept beside it.

/// Minutes in a simulated hour and day.
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// A scenario's settings.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    pub tanks: usize,
    /// Simulated days with readings.
    pub days: i64,
    /// Simulated days of consumption after the readings end (for the
    /// true runout of a tank near the end).
    pub tail_days: i64,
    pub start_ms: i64,
    pub seed: u64,
    /// Standard deviation of the gauge's reading noise, litres.
    pub noise_l: f64,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            tanks: 20,
            days: 7,
            tail_days: 14,
            // Monday 2026-11-23 00:00 UTC
            start_ms: 1_795_392_000_000,
            seed: 15,
            noise_l: 6.0,
        }
    }
}

/// The kinds of fault a scenario seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The gauge repeats one value (a stuck float).
    Stuck,
    /// No readings at all (a cut link, a dead gauge).
    Gap,
    /// The reading jumps up by a sizeable share of the tank and back.
    SpikeUp,
    /// The reading drops by a sizeable share of the tank and back.
    SpikeDown,
    /// The reading falls to a negative value and back.
    Negative,
    /// The reading goes above 110 % of the capacity and back.
    OverCapacity,
    /// Water rises above the tank's limit and stays.
    WaterIngress,
}

/// One seeded fault: its kind, tank, and window (`to_ms` exclusive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub tank: usize,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A delivery as it happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    pub tank: usize,
    pub start_ms: i64,
    pub end_ms: i64,
    pub litres: f64,
}

/// A tank's fixed facts.
#[derive(Debug, Clone, PartialEq)]
pub struct TankSpec {
    pub capacity_l: f64,
    pub floor_l: f64,
    pub water_limit_mm: f64,
    /// Mean litres per hour at each hour of the day (UTC).
    pub hourly_l: [f64; 24],
}

/// One minute of one tank: what the gauge reported (None in a gap) and
/// what was true.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minute {
    pub at_ms: i64,
    pub reading: Option<(f64, f64)>,
    pub true_volume_l: f64,
    pub true_water_mm: f64,
}

/// A generated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub cfg: ScenarioConfig,
    pub tanks: Vec<TankSpec>,
    /// Per tank, one entry per minute of the reading days.
    pub minutes: Vec<Vec<Minute>>,
    /// Per tank, litres sold in each minute from the start through the
    /// tail (the truth a runout is judged against).
    pub sold: Vec<Vec<f64>>,
    pub deliveries: Vec<Delivery>,
    pub faults: Vec<Fault>,
}

fn gauss(rng: &mut fastrand::Rng) -> f64 {
    // Box-Muller
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Day/night shape of a forecourt's sales (mean 1.0 over the day).
const SHAPE: [f64; 24] = [
    0.15, 0.1, 0.1, 0.1, 0.15, 0.4, 0.9, 1.6, 1.7, 1.3, 1.1, 1.1, 1.2, 1.2, 1.1, 1.2, 1.5, 1.8,
    1.7, 1.3, 0.9, 0.6, 0.4, 0.3,
];

impl Scenario {
    pub fn generate(cfg: ScenarioConfig) -> Scenario {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let shape_mean = SHAPE.iter().sum::<f64>() / 24.0;
        let n_min = (cfg.days * 24 * 60) as usize;
        let n_all = ((cfg.days + cfg.tail_days) * 24 * 60) as usize;
        let mut tanks = Vec::new();
        let mut minutes = Vec::new();
        let mut sold_all = Vec::new();
        let mut deliveries = Vec::new();
        let mut faults = Vec::new();
        for k in 0..cfg.tanks {
            let capacity = [20_000.0, 30_000.0, 40_000.0, 50_000.0][k % 4];
            let mean_lph = capacity * (0.004 + 0.006 * rng.f64());
            let mut hourly_l = [0.0; 24];
            for (h, v) in hourly_l.iter_mut().enumerate() {
                *v = mean_lph * SHAPE[h] / shape_mean;
            }
            let spec = TankSpec {
                capacity_l: capacity,
                floor_l: capacity * 0.03,
                water_limit_mm: 50.0,
                hourly_l,
            };
            // litres sold each minute: the hour's mean with sale-to-sale noise
            let sold: Vec<f64> = (0..n_all)
                .map(|i| {
                    let h = (i / 60) % 24;
                    (spec.hourly_l[h] / 60.0 * (1.0 + 0.5 * gauss(&mut rng))).max(0.0)
                })
                .collect();
            // the true course: deliveries when the tank is low (a lean one
            // waits longer, so some pass a day from running out)
            let reorder = capacity * (0.06 + 0.14 * rng.f64());
            let mut v = capacity * (0.3 + 0.5 * rng.f64());
            let mut truth = Vec::with_capacity(n_min);
            let mut due: Option<i64> = None;
            let mut filling: Option<(i64, f64, f64)> = None; // start, target, start volume
            for (i, sold_now) in sold.iter().enumerate().take(n_min) {
                let at = cfg.start_ms + i as i64 * MIN;
                v -= sold_now;
                if let Some((start, target, v0)) = filling {
                    v += 800.0;
                    if v >= target {
                        v = target;
                        deliveries.push(Delivery {
                            tank: k,
                            start_ms: start,
                            end_ms: at,
                            litres: target - v0,
                        });
                        filling = None;
                    }
                } else if let Some(d) = due {
                    if at >= d {
                        filling = Some((at, capacity * (0.85 + 0.05 * rng.f64()), v));
                        due = None;
                    }
                } else if v < reorder {
                    due = Some(at + (rng.f64() * 10.0 * HOUR as f64) as i64);
                }
                v = v.max(0.0);
                truth.push(v);
            }
            // faults: each tank gets one or two, spread over days 2..days
            let mut water_from: Option<i64> = None;
            let kinds = [
                FaultKind::Stuck,
                FaultKind::Gap,
                FaultKind::SpikeUp,
                FaultKind::SpikeDown,
                FaultKind::Negative,
                FaultKind::OverCapacity,
                FaultKind::WaterIngress,
            ];
            let mut mine: Vec<Fault> = Vec::new();
            for j in 0..2 {
                let kind = kinds[(k * 2 + j) % kinds.len()];
                let len = match kind {
                    FaultKind::Stuck => (4 + rng.i64(0..5)) * HOUR,
                    FaultKind::Gap => (2 + rng.i64(0..9)) * HOUR,
                    FaultKind::WaterIngress => (cfg.days * 24) * HOUR,
                    _ => (20 + rng.i64(0..70)) * MIN,
                };
                // in its own day, away from the other fault
                let day =
                    1 + (j as i64) * ((cfg.days - 1) / 2) + rng.i64(0..((cfg.days - 1) / 2).max(1));
                let from = cfg.start_ms + day * 24 * HOUR + rng.i64(0..12) * HOUR;
                let to = (from + len).min(cfg.start_ms + cfg.days * 24 * HOUR);
                if kind == FaultKind::WaterIngress {
                    water_from = Some(from);
                }
                mine.push(Fault {
                    kind,
                    tank: k,
                    from_ms: from,
                    to_ms: to,
                });
            }
            let mut out = Vec::with_capacity(n_min);
            let mut stuck_at: Option<f64> = None;
            for (i, &tv) in truth.iter().enumerate() {
                let at = cfg.start_ms + i as i64 * MIN;
                // water: 10 mm, rising 10 mm an hour after ingress starts
                let water = match water_from {
                    Some(f) if at >= f => 10.0 + (at - f) as f64 / HOUR as f64 * 10.0,
                    _ => 10.0,
                };
                let mut reading = Some(tv + cfg.noise_l * gauss(&mut rng));
                let mut stuck = false;
                for f in mine.iter().filter(|f| (f.from_ms..f.to_ms).contains(&at)) {
                    let share = 0.15 + 0.1 * ((f.from_ms / MIN) % 3) as f64;
                    reading = match (f.kind, reading) {
                        (FaultKind::Gap, _) => None,
                        (FaultKind::Stuck, Some(r)) => {
                            stuck = true;
                            Some(*stuck_at.get_or_insert(r))
                        }
                        (FaultKind::SpikeUp, Some(r)) => Some(r + capacity * share),
                        (FaultKind::SpikeDown, Some(r)) => {
                            Some((r - capacity * share).max(r * 0.2))
                        }
                        (FaultKind::Negative, Some(_)) => Some(-50.0),
                        (FaultKind::OverCapacity, Some(_)) => Some(capacity * 1.2),
                        (_, r) => r,
                    };
                }
                if !stuck {
                    stuck_at = None;
                }
                out.push(Minute {
                    at_ms: at,
                    reading: reading.map(|r| (r, water)),
                    true_volume_l: tv,
                    true_water_mm: water,
                });
            }
            faults.extend(mine);
            tanks.push(spec);
            minutes.push(out);
            sold_all.push(sold);
        }
        Scenario {
            cfg,
            tanks,
            minutes,
            sold: sold_all,
            deliveries,
            faults,
        }
    }

    /// The true runout of `tank` seen from minute `i` of the readings:
    /// when what is sold from then on (no more deliveries) takes the true
    /// volume down to the floor. None past the tail.
    pub fn true_runout_ms(&self, tank: usize, i: usize) -> Option<i64> {
        let m = &self.minutes[tank][i];
        let mut left = m.true_volume_l - self.tanks[tank].floor_l;
        if left <= 0.0 {
            return Some(m.at_ms);
        }
        for (j, s) in self.sold[tank].iter().enumerate().skip(i + 1) {
            left -= s;
            if left <= 0.0 {
                return Some(self.cfg.start_ms + j as i64 * MIN);
            }
        }
        None
    }

    /// Whether a fault of these kinds covers `tank` at `at_ms`.
    pub fn fault_at(&self, tank: usize, at_ms: i64, kinds: &[FaultKind]) -> bool {
        self.faults.iter().any(|f| {
            f.tank == tank && kinds.contains(&f.kind) && (f.from_ms..f.to_ms).contains(&at_ms)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_is_the_same_for_the_same_seed_and_keeps_its_truth() {
        let cfg = ScenarioConfig {
            tanks: 4,
            days: 3,
            tail_days: 2,
            ..Default::default()
        };
        let a = Scenario::generate(cfg.clone());
        let b = Scenario::generate(cfg);
        assert_eq!(a.minutes[2][1000], b.minutes[2][1000]);
        assert_eq!(a.faults, b.faults);
        assert_eq!(a.minutes[0].len(), 3 * 24 * 60);
        // every fault kind but water is seeded among 4 tanks × 2
        assert_eq!(a.faults.len(), 8);
        // a gap has no readings, a stuck gauge one value
        for f in &a.faults {
            let m = &a.minutes[f.tank];
            let inside: Vec<&Minute> = m
                .iter()
                .filter(|x| (f.from_ms..f.to_ms).contains(&x.at_ms))
                .collect();
            match f.kind {
                FaultKind::Gap => assert!(inside.iter().all(|x| x.reading.is_none())),
                FaultKind::Stuck => {
                    let first = inside[0].reading;
                    assert!(
                        inside
                            .iter()
                            .all(|x| x.reading.map(|r| r.0) == first.map(|r| r.0))
                    );
                }
                _ => {}
            }
        }
        // true volume never below 0, deliveries add what they say
        assert!(a.minutes.iter().flatten().all(|m| m.true_volume_l >= 0.0));
    }
}
