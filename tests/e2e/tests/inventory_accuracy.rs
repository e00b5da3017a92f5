//! The inventory's accuracy against the simulator's ground truth over a
//! simulated week of 20 tanks with seeded faults (figures in
//! docs/BENCHMARKS.md): delivery detection ≥ 99 % precision and recall,
//! the runout 24 h ahead within 5 % of the truth, and not one stale or
//! implausible flag missed on the seeded faults.

use atg_sim::scenario::ScenarioConfig;
use e2e::accuracy::measure;

#[test]
fn a_simulated_week_of_20_tanks_with_faults_meets_the_accuracy_goals() {
    let a = measure(ScenarioConfig::default());
    eprintln!(
        "accuracy: {} tanks × {} days; deliveries {} true, {} detected ({} rejected as jumps): precision {:.4}, recall {:.4}; \
         runout 24 h ahead: {} instants, within 5 %: {:.3}, p50 {:.4}, p95 {:.4}, max {:.4}; \
         stale instants {} (missed {}, false {}); implausible instants {} (missed {}, other reason {}); flags with no fault {} of {} evaluations",
        a.tanks,
        a.days,
        a.true_deliveries,
        a.detections,
        a.rejected_as_jumps,
        a.precision(),
        a.recall(),
        a.runout_errors.len(),
        a.runout_within(0.05),
        a.runout_p(0.5),
        a.runout_p(0.95),
        a.runout_p(1.0),
        a.stale_truth,
        a.stale_missed,
        a.stale_false,
        a.fault_instants,
        a.fault_missed,
        a.fault_other_reason,
        a.flags_without_fault,
        a.evaluations
    );
    eprintln!(
        "silent 6-7 h (clean): {} instants, projected volume within 5 % of the truth: {:.3}, mean error {:.3} (the last reading's: {:.3}); risk as from the truth: {} of {}",
        a.silent_errors.len(),
        a.silent_within(0.05),
        mean(&a.silent_errors),
        mean(&a.silent_reading_errors),
        a.silent_risk_matches,
        a.silent_errors.len()
    );
    let delays: Vec<String> = a
        .stuck_delays
        .iter()
        .map(|(d, r)| match d {
            Some(d) => format!("{} min at {r:.0} L/h", d / 60_000),
            None => format!("never at {r:.0} L/h"),
        })
        .collect();
    eprintln!("stuck gauges selling ≥ 50 L/h, flagged after: {delays:?}");
    for m in a.missed.iter().take(20) {
        eprintln!("  {m}");
    }
    assert!(a.true_deliveries >= 20, "the week has deliveries to find");
    assert!(
        a.precision() >= 0.99 && a.recall() >= 0.99,
        "delivery detection"
    );
    assert!(a.runout_errors.len() >= 20, "enough runout instants");
    assert!(
        a.runout_within(0.05) >= 0.95,
        "runout within 5 % 24 h ahead"
    );
    // and no worse than an oracle that knows the true mean profile (the
    // misses left are the future's sales straying from their mean)
    assert!(
        a.runout_within(0.05) >= a.oracle_within(0.05) - 0.03,
        "runout against the oracle"
    );
    assert!(
        a.stale_truth > 0 && a.stale_missed == 0,
        "no stale flag missed"
    );
    assert!(
        a.fault_instants > 0 && a.fault_missed == 0,
        "no implausible flag missed"
    );
    // a stuck gauge at a tank that sells: flagged within the hour (issue 33)
    assert!(!a.stuck_delays.is_empty(), "stuck faults at selling tanks");
    assert!(
        a.stuck_delays
            .iter()
            .all(|(d, _)| d.is_some_and(|d| d <= 60 * 60_000)),
        "every stuck gauge flagged within 60 minutes: {delays:?}"
    );
    // a silent gauge: the projection, not the last reading (issue 33)
    assert!(a.silent_errors.len() >= 6, "enough silent instants");
    assert!(
        mean(&a.silent_errors) < mean(&a.silent_reading_errors) / 2.0,
        "the projection at least halves the error of showing the last reading"
    );
    assert!(
        a.silent_risk_matches as f64 >= 0.9 * a.silent_errors.len() as f64,
        "the risk of a silent tank follows the projection"
    );
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}
