//! The inventory's accuracy against the simulator's ground truth, for
//! docs/BENCHMARKS.md: a simulated week of 20 tanks with seeded faults,
//! for each seed given (default 15 and 1..=4).
//!
//! `cargo run --release -p e2e --example accuracy [SEED...]`

use atg_sim::scenario::ScenarioConfig;
use e2e::accuracy::measure;

fn main() {
    let seeds = e2e::seeds_from_args(&[15, 1, 2, 3, 4]);
    println!(
        "| seed | deliveries (true / detected / jumps rejected) | precision | recall | runout instants | within 5 % (oracle) | p50 | p95 | max | stale instants (missed) | implausible instants (missed; other reason) | flags without a fault |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for seed in seeds {
        let t = std::time::Instant::now();
        let a = measure(ScenarioConfig {
            seed,
            ..Default::default()
        });
        println!(
            "| {seed} | {} / {} / {} | {:.4} | {:.4} | {} | {:.3} ({:.3}) | {:.4} | {:.4} | {:.4} | {} ({}) | {} ({}; {}) | {} of {} | ",
            a.true_deliveries,
            a.detections,
            a.rejected_as_jumps,
            a.precision(),
            a.recall(),
            a.runout_errors.len(),
            a.runout_within(0.05),
            a.oracle_within(0.05),
            a.runout_p(0.5),
            a.runout_p(0.95),
            a.runout_p(1.0),
            a.stale_truth,
            a.stale_missed,
            a.fault_instants,
            a.fault_missed,
            a.fault_other_reason,
            a.flags_without_fault,
            a.evaluations
        );
        eprintln!("seed {seed}: {:.1} s", t.elapsed().as_secs_f64());
        let late: Vec<f64> = a
            .runout_detail
            .iter()
            .filter(|d| d.1 >= 3.0)
            .map(|d| d.2.abs())
            .collect();
        let early: Vec<f64> = a
            .runout_detail
            .iter()
            .filter(|d| d.1 < 3.0)
            .map(|d| d.2.abs())
            .collect();
        let share =
            |v: &[f64]| v.iter().filter(|x| **x <= 0.05).count() as f64 / v.len().max(1) as f64;
        eprintln!(
            "  with 2-3 days of history: {} instants, {:.3} within 5 %; with 3+ days: {} instants, {:.3} within 5 %",
            early.len(),
            share(&early),
            late.len(),
            share(&late)
        );
        let mut worst = a.runout_detail.clone();
        worst.sort_by(|x, y| y.2.abs().total_cmp(&x.2.abs()));
        for (k, day, e) in worst.iter().take(2) {
            eprintln!("  runout tank {k} day {day:.2}: {e:+.4}");
        }
        for m in a.missed.iter().take(5) {
            eprintln!("  {m}");
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let worst_stuck = a
            .stuck_delays
            .iter()
            .map(|(d, _)| d.unwrap_or(i64::MAX))
            .max();
        eprintln!(
            "  stuck at selling tanks: {} faults, slowest flagged after {} min; silent 6-7 h: {} instants, within 5 %: {:.2}, mean error {:.3} (last reading {:.3}), risk as the truth's {} of {}",
            a.stuck_delays.len(),
            worst_stuck.map_or("-".into(), |d| if d == i64::MAX {
                "never".into()
            } else {
                (d / 60_000).to_string()
            }),
            a.silent_errors.len(),
            a.silent_within(0.05),
            mean(&a.silent_errors),
            mean(&a.silent_reading_errors),
            a.silent_risk_matches,
            a.silent_errors.len()
        );
    }
}
