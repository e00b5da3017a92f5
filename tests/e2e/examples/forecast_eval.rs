//! The runout forecast on the regime scenarios, next to the two oracles,
//! per horizon band and per regime (docs/BENCHMARKS.md). Development seeds
//! by default (1..=6); the held-out seeds are the `forecast_regimes`
//! test's, run in CI only.
//!
//! `cargo run --release -p e2e --example forecast_eval [SEED...]`

use e2e::forecast_eval::{BANDS, evaluate_seeds, shortfalls, silent_table, table};

fn main() {
    let seeds = e2e::seeds_from_args(&[1, 2, 3, 4, 5, 6]);
    let t = std::time::Instant::now();
    let ev = evaluate_seeds(&seeds, true);
    println!("seeds {seeds:?} ({:.1} s)", t.elapsed().as_secs_f64());
    print!("{}", table(&ev));
    println!("without the sites' holiday calendars:");
    print!("{}", table(&evaluate_seeds(&seeds, false)));
    print!("{}", silent_table(&ev));
    for (k, v) in &ev.rate_errors {
        let mut a: Vec<f64> = v.iter().map(|x| x.abs()).collect();
        a.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "24-h rate against the true mean, {k}: bias {mean:+.3}, |error| p50 {:.3} p90 {:.3}",
            a[a.len() / 2],
            a[a.len() * 9 / 10]
        );
    }
    for (k, n) in &ev.bases {
        println!("basis {k}: {n}");
    }
    for (b, (label, _, to)) in BANDS.iter().enumerate() {
        if to.is_finite() {
            let s = shortfalls(&ev.band(b));
            if !s.is_empty() {
                println!("{label}: short of the goal: {}", s.join("; "));
            }
        }
    }
}
