//! The history a simulator's tanks would have had before it started:
//! each tank ends at the volume it starts with ([`crate::initial_tanks`]),
//! held more fuel before (sold at its own rate), and was filled by a
//! delivery (600 L/min, from 15 % to 90 % of capacity) when, walking back,
//! its volume reaches 90 %: the live simulator's own rules, run backwards.
//! Pure: the clock is an argument. A site can then be shown with days of
//! history at once (the demo backfills it into the agent's log).

use crate::{SimConfig, initial_tanks};

/// One past reading of a tank.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub asset: String,
    pub field: &'static str,
    pub ts_ms: i64,
    pub value: f64,
    pub unit: &'static str,
}

/// `hours` of history before `now_ms`, one reading per field every
/// `step_ms`, oldest first (the last one `step_ms` before `now_ms`).
pub fn before_start(cfg: &SimConfig, now_ms: i64, hours: u32, step_ms: i64) -> Vec<Point> {
    let step_ms = step_ms.max(1_000);
    let steps = i64::from(hours) * 3_600_000 / step_ms;
    let dt_h = step_ms as f64 / 3_600_000.0;
    let mut out = Vec::new();
    for tank in initial_tanks(cfg) {
        let mut series = Vec::with_capacity(steps as usize);
        let (mut v, mut filling) = (tank.volume, false);
        for k in 1..=steps {
            // one step further back
            if filling {
                v -= 36_000.0 * dt_h;
                if v <= tank.capacity * 0.15 {
                    filling = false;
                }
            } else {
                v += tank.sales_rate * dt_h;
                if v >= tank.capacity * 0.9 {
                    filling = true;
                }
            }
            v = v.clamp(0.0, tank.capacity);
            series.push((now_ms - k * step_ms, v));
        }
        series.reverse();
        for (ts_ms, v) in series {
            let fields: [(&'static str, f64, &'static str); 5] = [
                ("volume", v, "L"),
                ("ullage", tank.capacity - v, "L"),
                ("height", v / tank.capacity * tank.max_height, "mm"),
                ("water_height", tank.water_height, "mm"),
                ("temperature", tank.temperature, "degC"),
            ];
            for (field, value, unit) in fields {
                out.push(Point {
                    asset: tank.id.clone(),
                    field,
                    ts_ms,
                    value: (value * 10.0).round() / 10.0,
                    unit,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_ends_where_the_live_tanks_start_and_falls_at_each_tanks_sales_rate() {
        let cfg = SimConfig::default();
        let now = 1_800_000_000_000;
        let h = before_start(&cfg, now, 6, 300_000);
        let tanks = initial_tanks(&cfg);
        for t in &tanks {
            let vols: Vec<&Point> = h
                .iter()
                .filter(|p| p.asset == t.id && p.field == "volume")
                .collect();
            assert_eq!(vols.len(), 72, "6 h of 5-minute readings");
            let last = vols[vols.len() - 1];
            assert_eq!(last.ts_ms, now - 300_000);
            // one step before the start: the start volume plus 5 minutes of sales
            // (unless the walk back met a delivery)
            let want = t.volume + t.sales_rate / 12.0;
            assert!(
                (last.value - want).abs() < 1.0 || last.value < want,
                "{}: {} vs {want}",
                t.id,
                last.value
            );
            assert!(vols.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
            assert!(vols.iter().all(|p| p.value >= 0.0 && p.value <= t.capacity));
        }
    }

    #[test]
    fn walking_back_past_ninety_percent_finds_a_delivery() {
        let cfg = SimConfig::default();
        let h = before_start(&cfg, 0, 24 * 7, 300_000);
        // a week back every tank has been filled at least once: its volume
        // rose somewhere along the series (oldest first)
        for t in initial_tanks(&cfg) {
            let v: Vec<f64> = h
                .iter()
                .filter(|p| p.asset == t.id && p.field == "volume")
                .map(|p| p.value)
                .collect();
            assert!(v.windows(2).any(|w| w[1] > w[0] + 1000.0), "{}", t.id);
        }
    }
}
