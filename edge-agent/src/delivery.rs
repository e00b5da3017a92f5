//! Delivery detection from a tank's volume: a pure state machine (no I/O)
//! fed with (time, volume) samples.
//!
//! * Idle: the lowest recent volume is the baseline (a baseline older than
//!   `window_ms` is moved up to the current volume, so slow thermal drift
//!   never adds up to a false delivery). A rise of at least `min_rise_l`
//!   above the baseline starts a delivery at the baseline's time and volume.
//! * Delivering: the peak is tracked; when the volume has not risen above
//!   the peak (by more than the noise band) for `settle_ms`, the delivery
//!   ended at the peak: delivered = peak - baseline.

use serde::{Deserialize, Serialize};

use crate::store::Delivery;

/// Detection settings (`deliveries:` in the agent's YAML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Smallest rise that counts as a delivery, litres. Default 300.
    #[serde(default = "d_rise")]
    pub min_rise_l: f64,
    /// A delivery has ended when the volume stopped rising for this long, ms. Default 120,000.
    #[serde(default = "d_settle")]
    pub settle_ms: i64,
    /// Rises smaller than this are noise (level waves, temperature), litres. Default 20.
    #[serde(default = "d_noise")]
    pub noise_l: f64,
    /// Baseline memory, ms. Default 600,000.
    #[serde(default = "d_window")]
    pub window_ms: i64,
}

fn d_rise() -> f64 {
    300.0
}
fn d_settle() -> i64 {
    120_000
}
fn d_noise() -> f64 {
    20.0
}
fn d_window() -> i64 {
    600_000
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            min_rise_l: d_rise(),
            settle_ms: d_settle(),
            noise_l: d_noise(),
            window_ms: d_window(),
        }
    }
}

/// What a sample revealed.
#[derive(Debug, Clone, PartialEq)]
pub enum Detected {
    Started {
        start_ms: i64,
        start_volume: f64,
    },
    Ended {
        start_ms: i64,
        end_ms: i64,
        start_volume: f64,
        end_volume: f64,
    },
}

/// The detector's state; persisted (as JSON) while a delivery is under
/// way, so that a restart in the middle of one neither loses it nor
/// reports its start twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum State {
    Empty,
    Idle {
        base_ms: i64,
        base: f64,
    },
    Delivering {
        start_ms: i64,
        start: f64,
        peak_ms: i64,
        peak: f64,
    },
}

/// Detector of one tank.
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: DetectConfig,
    state: State,
}

impl Detector {
    pub fn new(cfg: DetectConfig) -> Self {
        Detector {
            cfg,
            state: State::Empty,
        }
    }

    pub fn delivering(&self) -> bool {
        matches!(self.state, State::Delivering { .. })
    }

    /// The state as JSON, for the agent's state store.
    pub fn snapshot(&self) -> String {
        serde_json::to_string(&self.state).unwrap_or_default()
    }

    /// A detector resumed from [`Detector::snapshot`]; an unreadable
    /// snapshot starts afresh (and says so).
    pub fn restore(cfg: DetectConfig, snapshot: &str) -> Self {
        let state = serde_json::from_str(snapshot).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unreadable delivery detector state; starting afresh");
            State::Empty
        });
        Detector { cfg, state }
    }

    /// Feeds one sample (samples must come in time order).
    pub fn sample(&mut self, ts: i64, v: f64) -> Option<Detected> {
        if !v.is_finite() {
            return None;
        }
        match self.state.clone() {
            State::Empty => {
                self.state = State::Idle {
                    base_ms: ts,
                    base: v,
                };
                None
            }
            State::Idle { base_ms, base } => {
                if v - base >= self.cfg.min_rise_l {
                    self.state = State::Delivering {
                        start_ms: base_ms,
                        start: base,
                        peak_ms: ts,
                        peak: v,
                    };
                    return Some(Detected::Started {
                        start_ms: base_ms,
                        start_volume: base,
                    });
                }
                if v <= base || ts - base_ms > self.cfg.window_ms {
                    self.state = State::Idle {
                        base_ms: ts,
                        base: v,
                    };
                }
                None
            }
            State::Delivering {
                start_ms,
                start,
                peak_ms,
                peak,
            } => {
                if v > peak + self.cfg.noise_l || (v > peak && ts - peak_ms < self.cfg.settle_ms) {
                    self.state = State::Delivering {
                        start_ms,
                        start,
                        peak_ms: ts,
                        peak: v,
                    };
                    return None;
                }
                if ts - peak_ms >= self.cfg.settle_ms {
                    self.state = State::Idle {
                        base_ms: ts,
                        base: v,
                    };
                    return Some(Detected::Ended {
                        start_ms,
                        end_ms: peak_ms,
                        start_volume: start,
                        end_volume: peak,
                    });
                }
                None
            }
        }
    }
}

/// How far apart a gauge's record and the detector's finding may lie and
/// still be the same delivery: the gauge's clock has minute resolution, its
/// start and end rules differ from the detector's, and clocks drift.
pub const OVERLAP_SLACK_MS: i64 = 30 * 60_000;
/// A delivery, whether the gauge recorded it or the detector found it, is
/// tied to an expected load only if the load's ETA lies within this of the
/// delivery's start (a record read days later must not complete
/// tomorrow's load; issue 27: a detected delivery was matched to a load
/// due 30 hours later).
pub const LOAD_MATCH_MS: i64 = 12 * 3_600_000;
/// On the first poll of a tank the gauge's older records are history, not
/// news: only those that ended within this are reported.
pub const FIRST_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// A delivery recently reported for a tank, by either source.
#[derive(Debug, Clone, PartialEq)]
pub struct Recent {
    pub start_ms: i64,
    pub end_ms: i64,
    pub load_ref: String,
    /// From the tank gauge's record (else the detector).
    pub gauge: bool,
}

/// The recent delivery of the given source that overlaps `[start, end]`
/// (within [`OVERLAP_SLACK_MS`]).
pub fn overlapping<'a>(
    recent: impl IntoIterator<Item = &'a Recent>,
    start_ms: i64,
    end_ms: i64,
    gauge: bool,
) -> Option<&'a Recent> {
    recent.into_iter().find(|r| {
        r.gauge == gauge
            && r.start_ms - OVERLAP_SLACK_MS <= end_ms
            && start_ms <= r.end_ms + OVERLAP_SLACK_MS
    })
}

/// Whether a gauge record is news: it ended after the newest one already
/// reported for its tank (`mark`), or, with none reported yet, within
/// [`FIRST_LOOKBACK_MS`] of `now`. A record that ends before it starts is
/// not a delivery.
pub fn is_new_report(mark: Option<i64>, now: i64, start_ms: i64, end_ms: i64) -> bool {
    end_ms >= start_ms
        && match mark {
            Some(m) => end_ms > m,
            None => end_ms >= now - FIRST_LOOKBACK_MS,
        }
}

/// The expected load for `tank` whose ETA is nearest `start_ms`, within
/// `window_ms` of it.
pub fn nearest_expected<'a>(
    loads: &'a [Delivery],
    tank: &str,
    start_ms: i64,
    window_ms: i64,
) -> Option<&'a Delivery> {
    loads
        .iter()
        .filter(|l| l.state == "expected" && l.tanks.iter().any(|t| t == tank))
        .filter(|l| (l.eta_ms - start_ms).abs() <= window_ms)
        .min_by_key(|l| (l.eta_ms - start_ms).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det() -> Detector {
        Detector::new(DetectConfig {
            min_rise_l: 300.0,
            settle_ms: 10_000,
            noise_l: 20.0,
            window_ms: 60_000,
        })
    }

    #[test]
    fn a_rise_then_a_plateau_is_one_delivery_with_the_delivered_volume() {
        let mut d = det();
        let mut events = vec![];
        // sales: 10000 -> 9990 over 10 s, then +5000 over 50 s, then flat with sales
        let mut t = 0;
        let mut v = 10_000.0;
        for _ in 0..10 {
            events.extend(d.sample(t, v));
            t += 1000;
            v -= 1.0;
        }
        for _ in 0..50 {
            v += 100.0;
            events.extend(d.sample(t, v));
            t += 1000;
        }
        for _ in 0..30 {
            v -= 1.0;
            events.extend(d.sample(t, v));
            t += 1000;
        }
        assert_eq!(events.len(), 2, "{events:?}");
        let Detected::Ended {
            start_volume,
            end_volume,
            start_ms,
            end_ms,
        } = events[1].clone()
        else {
            panic!("{events:?}")
        };
        // from the last sample before the rise (9991) to the peak (14990)
        assert!((end_volume - start_volume - 4999.0).abs() < 1e-6);
        assert_eq!((start_ms, end_ms), (9000, 59_000));
        assert!(matches!(
            events[0],
            Detected::Started { start_ms: 9000, .. }
        ));
    }

    #[test]
    fn sales_noise_and_slow_drift_are_not_deliveries() {
        let mut d = det();
        let mut t = 0;
        for i in 0..10_000 {
            // +-15 L waves and a slow thermal rise of 1 L per 10 s
            let v = 10_000.0 + 15.0 * ((i as f64) / 3.0).sin() + i as f64 / 10.0;
            assert_eq!(d.sample(t, v), None, "sample {i}");
            t += 1000;
        }
        assert!(!d.delivering());
    }

    #[test]
    fn a_rise_below_the_threshold_is_ignored() {
        let mut d = det();
        assert_eq!(d.sample(0, 1000.0), None);
        assert_eq!(d.sample(1000, 1299.0), None);
        assert!(d.sample(2000, 1300.0).is_some());
    }

    #[test]
    fn a_detector_restored_mid_delivery_reports_only_its_end() {
        let cfg = DetectConfig {
            min_rise_l: 300.0,
            settle_ms: 10_000,
            noise_l: 20.0,
            window_ms: 600_000,
        };
        let mut d = Detector::new(cfg.clone());
        assert_eq!(d.sample(0, 1000.0), None);
        assert!(matches!(
            d.sample(1000, 1500.0),
            Some(Detected::Started { .. })
        ));
        d.sample(2000, 3000.0);
        // the agent restarts here
        let mut resumed = Detector::restore(cfg.clone(), &d.snapshot());
        assert!(resumed.delivering());
        let mut seen = Vec::new();
        for t in 3..20 {
            seen.extend(resumed.sample(t * 1000, if t < 5 { 3500.0 } else { 3600.0 }));
        }
        assert_eq!(
            seen,
            vec![Detected::Ended {
                start_ms: 0,
                end_ms: 5000,
                start_volume: 1000.0,
                end_volume: 3600.0
            }],
            "one end, no second start"
        );
        // a fresh detector (the old behaviour) would start a second delivery
        let mut fresh = Detector::new(cfg.clone());
        fresh.sample(3000, 3500.0);
        assert!(!fresh.delivering());
        assert!(!Detector::restore(cfg, "garbage").delivering());
    }

    #[test]
    fn gauge_records_are_news_once_and_old_history_is_not() {
        let now = 100 * 3_600_000;
        assert!(is_new_report(None, now, now - 3_600_000, now - 60_000));
        assert!(
            !is_new_report(None, now, 0, now - FIRST_LOOKBACK_MS - 1),
            "history at the first poll"
        );
        assert!(is_new_report(Some(5), now, 1, 6));
        assert!(
            !is_new_report(Some(6), now, 1, 6),
            "repeated at the next poll"
        );
        assert!(
            !is_new_report(None, now, now, now - 1),
            "ends before it starts"
        );
    }

    #[test]
    fn a_gauge_record_and_a_detected_delivery_match_when_they_overlap_within_the_slack() {
        let r = [
            Recent {
                start_ms: 0,
                end_ms: 600_000,
                load_ref: "d".into(),
                gauge: false,
            },
            Recent {
                start_ms: 0,
                end_ms: 600_000,
                load_ref: "g".into(),
                gauge: true,
            },
        ];
        let m = |s, e, g| overlapping(&r, s, e, g).map(|x| x.load_ref.as_str());
        assert_eq!(m(300_000, 900_000, false), Some("d"));
        assert_eq!(m(300_000, 900_000, true), Some("g"));
        assert_eq!(m(600_000 + OVERLAP_SLACK_MS, 4_000_000, false), Some("d"));
        assert_eq!(m(600_001 + OVERLAP_SLACK_MS, 4_000_000, false), None);
        assert_eq!(m(-5_000_000, -OVERLAP_SLACK_MS - 1, false), None);
    }

    #[test]
    fn the_nearest_expected_load_of_the_tank_is_chosen_within_the_window() {
        let load = |r: &str, eta: i64, state: &str, tank: &str| Delivery {
            load_ref: r.into(),
            command_id: format!("c-{r}"),
            issued_seq: 1,
            state: state.into(),
            eta_ms: eta,
            tanks: vec![tank.into()],
            ..Default::default()
        };
        let loads = vec![
            load("far", 50 * 3_600_000, "expected", "t1"),
            load("near", 2 * 3_600_000, "expected", "t1"),
            load("done", 0, "delivered", "t1"),
            load("other", 0, "expected", "t2"),
        ];
        let pick = |w| nearest_expected(&loads, "t1", 0, w).map(|l| l.load_ref.as_str());
        assert_eq!(pick(LOAD_MATCH_MS), Some("near"));
        assert_eq!(pick(3_600_000), None);
        // a load due 30 hours later is not this delivery's
        let later = vec![load("tomorrow", 30 * 3_600_000, "expected", "t1")];
        assert_eq!(
            nearest_expected(&later, "t1", 0, LOAD_MATCH_MS).map(|l| l.load_ref.as_str()),
            None
        );
    }
}
