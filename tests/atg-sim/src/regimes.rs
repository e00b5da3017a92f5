//! Seeded forecasting scenarios with ground truth, one regime per tank,
//! for judging runout forecasts on sales the forecast was not shaped
//! around: weekday/weekend shapes, holidays, trend changes, low-use
//! tanks, bursty truck-stop sales, tanks shared by two products' pumps
//! and a gauge whose noise varies.
//!
//! Sales are drawn per hour as a compound Poisson process (a number of
//! sales of a regime's typical size around the hour's true mean, scaled by
//! a day's demand factor), so lumpy regimes are lumpy and busy ones smooth.
//! Each tank keeps its true mean profile (what an oracle may know), the
//! litres sold each hour through a tail after the readings end (what a
//! runout is judged against), its true volume, and the gauge's hourly
//! readings. Pure and deterministic: the same seed gives the same tanks.

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// How a tank sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Regime {
    /// A forecourt with one day/night shape every day.
    Forecourt,
    /// Commuter weekdays, a late Saturday, a quiet Sunday.
    WeekdayWeekend,
    /// Weekday/weekend, with weekdays that sell like a Sunday.
    Holiday,
    /// Demand that ramps up or steps down partway.
    Trend,
    /// A small tank selling a few litres an hour in small sales (AdBlue).
    LowUse,
    /// Few large sales around the clock (trucks).
    TruckStop,
    /// One tank feeding a forecourt's pumps and a truck lane's.
    Shared,
    /// A forecourt whose gauge's noise changes from a few litres to tens.
    NoisyGauge,
}

impl Regime {
    pub const ALL: [Regime; 8] = [
        Regime::Forecourt,
        Regime::WeekdayWeekend,
        Regime::Holiday,
        Regime::Trend,
        Regime::LowUse,
        Regime::TruckStop,
        Regime::Shared,
        Regime::NoisyGauge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Regime::Forecourt => "forecourt",
            Regime::WeekdayWeekend => "weekday/weekend",
            Regime::Holiday => "holiday",
            Regime::Trend => "trend change",
            Regime::LowUse => "low use",
            Regime::TruckStop => "truck stop",
            Regime::Shared => "shared tank",
            Regime::NoisyGauge => "noisy gauge",
        }
    }
}

/// A regime scenario's settings.
#[derive(Debug, Clone)]
pub struct RegimeConfig {
    pub seed: u64,
    /// Tanks of each regime.
    pub tanks_per_regime: usize,
    /// Days with readings.
    pub days: i64,
    /// Days of sales after the readings end (for the truth near the end).
    pub tail_days: i64,
    /// A Monday 00:00 UTC.
    pub start_ms: i64,
}

impl Default for RegimeConfig {
    fn default() -> Self {
        RegimeConfig {
            seed: 1,
            tanks_per_regime: 2,
            days: 28,
            tail_days: 14,
            // Monday 2026-11-02 00:00 UTC
            start_ms: 1_793_577_600_000,
        }
    }
}

/// One tank of a regime scenario.
#[derive(Debug, Clone)]
pub struct RegimeTank {
    pub regime: Regime,
    pub capacity_l: f64,
    pub floor_l: f64,
    /// The true mean litres per hour of each hour from the start through
    /// the tail (the full oracle's knowledge).
    pub mean_lph: Vec<f64>,
    /// Litres truly sold in each hour from the start through the tail.
    pub sold: Vec<f64>,
    /// The true volume at the end of each reading hour.
    pub volume: Vec<f64>,
    /// The gauge's reading at the end of each reading hour.
    pub reading: Vec<f64>,
    /// Deliveries: (start, end, litres).
    pub deliveries: Vec<(i64, i64, f64)>,
    /// Days (from the start) that sell like a Sunday: the public holidays
    /// the site's calendar names.
    pub holidays: Vec<i64>,
}

/// A generated regime scenario.
#[derive(Debug, Clone)]
pub struct Regimes {
    pub cfg: RegimeConfig,
    pub tanks: Vec<RegimeTank>,
}

fn gauss(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Poisson draw (Knuth below 30, a rounded normal above).
fn poisson(rng: &mut fastrand::Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * gauss(rng)).round().max(0.0) as u64;
    }
    let l = (-lambda).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.f64();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

/// A forecourt's day (mean 1.0 over the day).
const FORECOURT: [f64; 24] = [
    0.15, 0.1, 0.1, 0.1, 0.15, 0.4, 0.9, 1.6, 1.7, 1.3, 1.1, 1.1, 1.2, 1.2, 1.1, 1.2, 1.5, 1.8,
    1.7, 1.3, 0.9, 0.6, 0.4, 0.3,
];
/// A commuter weekday: sharp peaks at 7-9 and 16-19.
const COMMUTER: [f64; 24] = [
    0.1, 0.05, 0.05, 0.05, 0.2, 0.6, 1.6, 2.4, 2.0, 1.1, 0.9, 0.9, 1.0, 1.0, 1.0, 1.3, 2.0, 2.4,
    1.9, 1.1, 0.7, 0.5, 0.3, 0.2,
];
/// A Saturday: late, broad, through the afternoon.
const SATURDAY: [f64; 24] = [
    0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 0.7, 1.1, 1.5, 1.8, 1.9, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.2,
    1.0, 0.8, 0.7, 0.6, 0.5,
];
/// A Sunday or holiday: late and flat.
const SUNDAY: [f64; 24] = [
    0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.3, 1.6, 1.8, 1.8, 1.7, 1.7, 1.7, 1.7, 1.6, 1.5,
    1.3, 1.0, 0.8, 0.5, 0.4,
];
/// Trucks: around the clock, a little more by day.
const TRUCKS: [f64; 24] = [
    0.7, 0.6, 0.6, 0.6, 0.8, 1.0, 1.2, 1.3, 1.3, 1.2, 1.1, 1.1, 1.1, 1.1, 1.1, 1.2, 1.2, 1.2, 1.1,
    1.0, 0.9, 0.9, 0.8, 0.8,
];

fn mean24(s: &[f64; 24]) -> f64 {
    s.iter().sum::<f64>() / 24.0
}

/// What a regime's tank is: capacity, its pump lines (shape by day kind,
/// mean L/h, sale size) and the gauge's noise.
struct Plan {
    capacity_l: f64,
    lines: Vec<Line>,
    /// The gauge's noise (sd, litres) in each day.
    noise: Vec<f64>,
    /// Days (from the start) that sell like a Sunday.
    holidays: Vec<i64>,
    /// The level's factor on each day (trend).
    level: Vec<f64>,
}

struct Line {
    weekday: [f64; 24],
    saturday: [f64; 24],
    sunday: [f64; 24],
    /// Mean litres per hour over a weekday.
    mean_lph: f64,
    sale_l: f64,
}

impl Line {
    fn same(shape: [f64; 24], mean_lph: f64, sale_l: f64) -> Line {
        Line {
            weekday: shape,
            saturday: shape,
            sunday: shape,
            mean_lph,
            sale_l,
        }
    }
    fn week(mean_lph: f64, sale_l: f64) -> Line {
        Line {
            weekday: COMMUTER,
            saturday: SATURDAY.map(|v| v * 0.85),
            sunday: SUNDAY.map(|v| v * 0.6),
            mean_lph,
            sale_l,
        }
    }
    /// The true mean L/h at hour `h` of a day of kind `dow` (0 Monday).
    fn at(&self, dow: i64, h: usize, holiday: bool) -> f64 {
        let (shape, norm) = match dow {
            _ if holiday => (&self.sunday, mean24(&self.weekday)),
            5 => (&self.saturday, mean24(&self.weekday)),
            6 => (&self.sunday, mean24(&self.weekday)),
            _ => (&self.weekday, mean24(&self.weekday)),
        };
        self.mean_lph * shape[h] / norm
    }
}

fn plan(regime: Regime, rng: &mut fastrand::Rng, days: i64) -> Plan {
    let capacity = [20_000.0, 30_000.0, 40_000.0, 50_000.0][rng.usize(0..4)];
    let forecourt_lph = capacity * (0.004 + 0.006 * rng.f64());
    let quiet = vec![6.0; days as usize];
    let flat_level = vec![1.0; days as usize];
    let mut p = Plan {
        capacity_l: capacity,
        lines: vec![Line::same(FORECOURT, forecourt_lph, 35.0)],
        noise: quiet,
        holidays: Vec::new(),
        level: flat_level,
    };
    match regime {
        Regime::Forecourt => {}
        Regime::WeekdayWeekend => p.lines = vec![Line::week(forecourt_lph, 35.0)],
        Regime::Holiday => {
            p.lines = vec![Line::week(forecourt_lph, 35.0)];
            // two weekdays in the last three weeks
            for w in [1 + rng.i64(0..2), 3] {
                p.holidays.push(7 * w + rng.i64(0..5));
            }
        }
        Regime::Trend => {
            let from = 10 + rng.i64(0..10);
            let up = rng.bool();
            for (d, l) in p.level.iter_mut().enumerate() {
                let d = d as i64;
                if d >= from {
                    *l = if up {
                        // +3 % a day, up to +45 %
                        (1.0 + 0.03 * (d - from) as f64).min(1.45)
                    } else {
                        // a competitor opens: -30 % from one day
                        0.7
                    };
                }
            }
        }
        Regime::LowUse => {
            p.capacity_l = [1_000.0, 1_500.0, 2_000.0][rng.usize(0..3)];
            p.lines = vec![Line::same(FORECOURT, 2.0 + 5.0 * rng.f64(), 10.0)];
            p.noise = vec![2.0; days as usize];
        }
        Regime::TruckStop => {
            p.lines = vec![Line::same(
                TRUCKS,
                capacity * (0.004 + 0.004 * rng.f64()),
                300.0,
            )];
        }
        Regime::Shared => {
            p.lines = vec![
                Line::same(FORECOURT, forecourt_lph * 0.6, 35.0),
                Line::same(TRUCKS, forecourt_lph * 0.5, 300.0),
            ];
        }
        Regime::NoisyGauge => {
            let mut d = 0;
            let mut loud = rng.bool();
            while d < days as usize {
                let len = 1 + rng.usize(0..3);
                for n in p.noise.iter_mut().skip(d).take(len) {
                    *n = if loud { 40.0 + 40.0 * rng.f64() } else { 4.0 };
                }
                d += len;
                loud = !loud;
            }
        }
    }
    p
}

impl Regimes {
    pub fn generate(cfg: RegimeConfig) -> Regimes {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let all_days = cfg.days + cfg.tail_days;
        let n_all = (all_days * 24) as usize;
        let n_read = (cfg.days * 24) as usize;
        let mut tanks = Vec::new();
        for regime in Regime::ALL {
            for _ in 0..cfg.tanks_per_regime {
                let mut p = plan(regime, &mut rng, all_days);
                p.noise.resize(all_days as usize, 6.0);
                let mut mean = Vec::with_capacity(n_all);
                let mut sold = Vec::with_capacity(n_all);
                let mut day_factor = 1.0;
                for i in 0..n_all {
                    let day = (i / 24) as i64;
                    let h = i % 24;
                    if h == 0 {
                        // a day's demand (weather, events): ±8 %
                        day_factor = (0.08 * gauss(&mut rng)).exp();
                    }
                    let dow = day % 7;
                    let holiday = p.holidays.contains(&day);
                    let level = p.level.get(day as usize).copied().unwrap_or(1.0);
                    let mut m = 0.0;
                    let mut s = 0.0;
                    for line in &p.lines {
                        let lm = line.at(dow, h, holiday) * level;
                        m += lm;
                        let n = poisson(&mut rng, lm * day_factor / line.sale_l);
                        for _ in 0..n {
                            s += line.sale_l * (0.5 + rng.f64());
                        }
                    }
                    mean.push(m);
                    sold.push(s);
                }
                let mean_total = mean.iter().take(7 * 24).sum::<f64>() / (7.0 * 24.0);
                // reorder so a full tank lasts days: a lean one waits
                let reorder = p.capacity_l * (0.06 + 0.14 * rng.f64());
                let mut v = p.capacity_l * (0.3 + 0.5 * rng.f64());
                let mut volume = Vec::with_capacity(n_read);
                let mut reading = Vec::with_capacity(n_read);
                let mut deliveries = Vec::new();
                let mut due: Option<usize> = None;
                for (i, s) in sold.iter().enumerate().take(n_read) {
                    v = (v - s).max(0.0);
                    if due.is_some_and(|d| i >= d) {
                        let target = p.capacity_l * (0.85 + 0.05 * rng.f64());
                        let start = cfg.start_ms + i as i64 * HOUR + 10 * MIN;
                        let litres = (target - v).max(0.0);
                        deliveries.push((start, start + 30 * MIN, litres));
                        v = target;
                        due = None;
                    } else if due.is_none() && v < reorder.max(mean_total * 12.0) {
                        due = Some(i + 2 + rng.usize(0..9));
                    }
                    volume.push(v);
                    let sd = p.noise[i / 24];
                    reading.push(v + sd * gauss(&mut rng));
                }
                tanks.push(RegimeTank {
                    regime,
                    capacity_l: p.capacity_l,
                    floor_l: p.capacity_l * 0.03,
                    mean_lph: mean,
                    sold,
                    volume,
                    reading,
                    deliveries,
                    holidays: p.holidays,
                });
            }
        }
        Regimes { cfg, tanks }
    }

    /// The end of reading hour `i` (when its reading is the newest).
    pub fn hour_end_ms(&self, i: usize) -> i64 {
        self.cfg.start_ms + (i as i64 + 1) * HOUR
    }
}

impl RegimeTank {
    /// When the tank truly runs out seen from the end of reading hour `i`
    /// (what is sold from then on, no more deliveries, takes the true
    /// volume to the floor; within an hour sales are even). None past the
    /// tail.
    pub fn true_runout_ms(&self, start_ms: i64, i: usize) -> Option<i64> {
        Self::walk(&self.sold, self.volume[i] - self.floor_l, start_ms, i)
    }

    /// The same walk along any hourly rates from hour `i + 1` on.
    pub fn walk(rates: &[f64], mut left: f64, start_ms: i64, i: usize) -> Option<i64> {
        let from = start_ms + (i as i64 + 1) * HOUR;
        if left <= 0.0 {
            return Some(from);
        }
        for (j, s) in rates.iter().enumerate().skip(i + 1) {
            if *s >= left && *s > 0.0 {
                return Some(start_ms + j as i64 * HOUR + (left / s * HOUR as f64) as i64);
            }
            left -= s;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regime_scenario_is_the_same_for_a_seed_and_its_sales_follow_the_true_means() {
        let cfg = RegimeConfig {
            tanks_per_regime: 1,
            ..Default::default()
        };
        let a = Regimes::generate(cfg.clone());
        let b = Regimes::generate(cfg);
        assert_eq!(a.tanks.len(), Regime::ALL.len());
        assert_eq!(a.tanks[3].sold, b.tanks[3].sold);
        for t in &a.tanks {
            let sold: f64 = t.sold.iter().sum();
            let mean: f64 = t.mean_lph.iter().sum();
            // 42 days of sales: within 5 % of the mean's total
            assert!(
                (sold / mean - 1.0).abs() < 0.05,
                "{:?}: sold {sold:.0} against a mean of {mean:.0}",
                t.regime
            );
            assert!(t.volume.iter().all(|v| *v >= 0.0 && *v <= t.capacity_l));
        }
        // the weekday/weekend tank sells less on Sundays than on Mondays
        let w = &a.tanks[1];
        let day = |d: usize| w.mean_lph[d * 24..(d + 1) * 24].iter().sum::<f64>();
        assert!(day(6) < 0.7 * day(0), "{} {}", day(6), day(0));
        // a walk along known sales: 100 L left, 60 L/h → 1 h 40 min
        let r = RegimeTank::walk(&[0.0, 60.0, 60.0, 60.0], 100.0, 0, 0);
        assert_eq!(r, Some(HOUR + HOUR + 40 * MIN));
    }
}
