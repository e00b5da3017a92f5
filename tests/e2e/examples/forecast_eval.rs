//! The runout forecast on the regime scenarios, next to the two oracles,
//! per horizon band and per regime (docs/BENCHMARKS.md). Development seeds
//! by default (1..=6); the held-out seeds are the `forecast_regimes`
//! test's, run in CI only.
//!
//! `cargo run --release -p e2e --example forecast_eval [SEED...]`

use e2e::forecast_eval::{BANDS, evaluate_seeds, shortfalls, silent_table, table, within};

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
    // the bands without the trend-change tanks (whose future only the
    // full oracle knows): where the rest stand
    for (b, (label, _, to)) in BANDS.iter().enumerate() {
        let (mut f, mut o, mut n) = (0.0, 0.0, 0.0);
        for ((band, regime), e) in &ev.cells {
            if *band == b && *regime != "trend change" {
                let k = e.n() as f64;
                f += within(&e.forecast, 0.10) * k;
                o += within(&e.full_oracle, 0.10) * k;
                n += k;
            }
        }
        if to.is_finite() && o > 0.0 {
            println!(
                "{label} without the trend-change tanks: within 10 % {:.3} (full oracle {:.3}): {:.2} ×",
                f / n,
                o / n,
                f / o
            );
        }
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
