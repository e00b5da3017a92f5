//! Per-site dispatch split: a site-level target (e.g. a total power limit)
//! divided across the site's assets. Pure and deterministic.
//!
//! Policy `capacity-weighted-v1`:
//! 1. Offline assets get nothing (they are listed as excluded).
//! 2. Every online asset starts at its minimum; what is left of the total
//!    is shared in proportion to capacity, and an asset that would exceed
//!    its maximum is clamped there and its excess shared among the rest
//!    (repeated until nothing moves).
//! 3. Shares are rounded down to `step`; the remaining steps go one each to
//!    the largest remainders (ties: asset id order), so the shares add up
//!    to the total exactly (in steps).
//! 4. A total below the sum of minimums or above the sum of maximums
//!    cannot be met: an error, nothing is sent.

use serde::Serialize;

pub const POLICY_VERSION: &str = "capacity-weighted-v1";

/// One asset that can take a share.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub asset_id: String,
    pub capacity: f64,
    pub min: f64,
    pub max: f64,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub asset_id: String,
    pub value: f64,
    pub weight: f64,
    pub clamped: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub policy_version: &'static str,
    pub total: f64,
    pub step: f64,
    pub shares: Vec<Share>,
    /// Assets that got nothing, and why.
    pub excluded: Vec<(String, String)>,
}

pub fn split(total: f64, step: f64, candidates: &[Candidate]) -> Result<Split, String> {
    if !total.is_finite() || step.is_nan() || step <= 0.0 {
        return Err("the total must be a number and the step > 0".into());
    }
    let mut c: Vec<&Candidate> = candidates.iter().collect();
    c.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    let mut excluded = Vec::new();
    let mut online = Vec::new();
    for a in c {
        if !a.online {
            excluded.push((a.asset_id.clone(), "offline".into()));
        } else if a.capacity.is_nan() || a.capacity <= 0.0 {
            excluded.push((a.asset_id.clone(), "no capacity configured".into()));
        } else {
            online.push(a);
        }
    }
    if online.is_empty() {
        return Err("no online asset with a capacity can take a share".into());
    }
    let (lo, hi): (f64, f64) = online
        .iter()
        .fold((0.0, 0.0), |(l, h), a| (l + a.min, h + a.max));
    if total < lo - 1e-9 || total > hi + 1e-9 {
        return Err(format!(
            "{total} cannot be split: the online assets take from {lo} to {hi} in all"
        ));
    }
    // water-filling above the minimums
    let mut value: Vec<f64> = online.iter().map(|a| a.min).collect();
    let mut fixed = vec![false; online.len()];
    let mut left = total - lo;
    for _ in 0..=online.len() {
        let w: f64 = online
            .iter()
            .zip(&fixed)
            .filter(|(_, f)| !**f)
            .map(|(a, _)| a.capacity)
            .sum();
        if left <= 1e-12 || w <= 0.0 {
            break;
        }
        let mut over = false;
        let share = left / w;
        for (i, a) in online.iter().enumerate() {
            if !fixed[i] && value[i] + share * a.capacity > a.max {
                over = true;
            }
        }
        if !over {
            for (i, a) in online.iter().enumerate() {
                if !fixed[i] {
                    value[i] += share * a.capacity;
                }
            }
            break;
        }
        for (i, a) in online.iter().enumerate() {
            if !fixed[i] && value[i] + share * a.capacity > a.max {
                left -= a.max - value[i];
                value[i] = a.max;
                fixed[i] = true;
            }
        }
    }
    // round down to the step, then hand out the remaining steps by largest remainder
    let steps_total = (total / step).round() as i64;
    let mut steps: Vec<i64> = value
        .iter()
        .map(|v| (v / step + 1e-9).floor() as i64)
        .collect();
    let mut rest = steps_total - steps.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..online.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = value[a] / step - steps[a] as f64;
        let rb = value[b] / step - steps[b] as f64;
        rb.partial_cmp(&ra)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(order.len() * 2) {
        if rest <= 0 {
            break;
        }
        if ((steps[i] + 1) as f64) * step <= online[i].max + 1e-9 {
            steps[i] += 1;
            rest -= 1;
        }
    }
    let wsum: f64 = online.iter().map(|a| a.capacity).sum();
    let shares = online
        .iter()
        .zip(&steps)
        .zip(&fixed)
        .map(|((a, &s), &f)| Share {
            asset_id: a.asset_id.clone(),
            value: (s as f64 * step * 1e9).round() / 1e9,
            weight: a.capacity / wsum,
            clamped: f,
        })
        .collect();
    Ok(Split {
        policy_version: POLICY_VERSION,
        total,
        step,
        shares,
        excluded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, capacity: f64, min: f64, max: f64, online: bool) -> Candidate {
        Candidate {
            asset_id: id.into(),
            capacity,
            min,
            max,
            online,
        }
    }

    fn values(s: &Split) -> Vec<(&str, f64)> {
        s.shares
            .iter()
            .map(|x| (x.asset_id.as_str(), x.value))
            .collect()
    }

    #[test]
    fn the_split_follows_weights_clamps_rounds_and_skips_offline_assets() {
        type Case = (
            &'static str,
            f64,
            f64,
            Vec<Candidate>,
            Result<Vec<(&'static str, f64)>, ()>,
        );
        let cases: Vec<Case> = vec![
            (
                "weighted by capacity",
                90.0,
                0.1,
                vec![
                    cand("a", 100.0, 0.0, 100.0, true),
                    cand("b", 50.0, 0.0, 50.0, true),
                ],
                Ok(vec![("a", 60.0), ("b", 30.0)]),
            ),
            (
                "a clamped asset's excess goes to the others",
                120.0,
                1.0,
                vec![
                    cand("a", 100.0, 0.0, 50.0, true),
                    cand("b", 50.0, 0.0, 100.0, true),
                ],
                Ok(vec![("a", 50.0), ("b", 70.0)]),
            ),
            (
                "minimums are served first",
                30.0,
                1.0,
                vec![
                    cand("a", 100.0, 20.0, 100.0, true),
                    cand("b", 100.0, 0.0, 100.0, true),
                ],
                Ok(vec![("a", 25.0), ("b", 5.0)]),
            ),
            (
                "rounding hands out the last step by largest remainder",
                10.0,
                1.0,
                vec![
                    cand("a", 1.0, 0.0, 10.0, true),
                    cand("b", 1.0, 0.0, 10.0, true),
                    cand("c", 1.0, 0.0, 10.0, true),
                ],
                Ok(vec![("a", 4.0), ("b", 3.0), ("c", 3.0)]),
            ),
            (
                "an offline asset gets nothing and the rest take it all",
                90.0,
                0.1,
                vec![
                    cand("a", 100.0, 0.0, 100.0, true),
                    cand("b", 50.0, 0.0, 50.0, false),
                ],
                Ok(vec![("a", 90.0)]),
            ),
            (
                "more than the maximums allow is refused",
                200.0,
                1.0,
                vec![
                    cand("a", 100.0, 0.0, 100.0, true),
                    cand("b", 50.0, 0.0, 50.0, true),
                ],
                Err(()),
            ),
            (
                "no online asset is refused",
                10.0,
                1.0,
                vec![cand("a", 100.0, 0.0, 100.0, false)],
                Err(()),
            ),
        ];
        for (name, total, step, cands, want) in cases {
            let got = split(total, step, &cands);
            match (&got, want) {
                (Ok(s), Ok(w)) => {
                    assert_eq!(values(s), w, "{name}");
                    let sum: f64 = s.shares.iter().map(|x| x.value).sum();
                    assert!((sum - total).abs() < 1e-6, "{name}: shares add up to {sum}");
                    for x in &s.shares {
                        let c = cands.iter().find(|c| c.asset_id == x.asset_id).unwrap();
                        assert!(
                            x.value >= c.min - 1e-9 && x.value <= c.max + 1e-9,
                            "{name}: {x:?}"
                        );
                    }
                }
                (Err(_), Err(())) => {}
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn the_same_input_gives_the_same_split_whatever_the_order() {
        let a = vec![
            cand("x", 30.0, 0.0, 40.0, true),
            cand("y", 70.0, 5.0, 60.0, true),
        ];
        let b: Vec<Candidate> = a.iter().rev().cloned().collect();
        assert_eq!(split(77.7, 0.1, &a), split(77.7, 0.1, &b));
        assert_eq!(split(77.7, 0.1, &a).unwrap().policy_version, POLICY_VERSION);
    }
}
