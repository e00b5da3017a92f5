//! Safety limits for setpoints: the checks every write goes through before
//! it reaches a device, whether it came from the headend or (later) from the
//! OPC UA surface. Pure: no I/O, the caller supplies the current facts.

use serde::Deserialize;
use tankwatch_proto::v1::AckReason;

/// Limits of one writable point, from the agent's YAML (`setpoints:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetpointLimits {
    /// The writable point: asset id and field (a `writable: true` point of a device).
    pub asset: String,
    pub field: String,
    /// Lowest and highest value accepted (canonical unit), inclusive.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// If set, only these values are accepted (e.g. `[0, 1]` for an enable).
    #[serde(default)]
    pub allowed: Option<Vec<f64>>,
    /// Ramp limit: a new value may differ from the last applied one by at most
    /// this much per minute since that one was applied (one minute's worth is
    /// always allowed).
    #[serde(default)]
    pub max_change_per_min: Option<f64>,
    /// Value the agent writes back when a setpoint with a duration ends.
    #[serde(default)]
    pub default: Option<f64>,
    /// Conditions under which the point must not be written.
    #[serde(default)]
    pub interlocks: Vec<Interlock>,
}

/// "Do not write while `asset.field` equals `equals`" (e.g. no pump enable
/// while a delivery is in progress).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interlock {
    pub asset: String,
    pub field: String,
    pub equals: f64,
    /// Said in the rejection, e.g. "delivery in progress".
    pub reason: String,
    /// When the interlock's input is unknown (no reading yet or bad quality),
    /// block the write (true, default: fail safe) or allow it.
    #[serde(default = "yes")]
    pub block_when_unknown: bool,
}

fn yes() -> bool {
    true
}

/// Why a setpoint was refused; `code` is the ack's reason code.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: AckReason,
    pub detail: String,
}

/// What the check needs to know besides the request.
pub struct Facts<'a> {
    /// The last value applied to this point and when (Unix ms), if any.
    pub last_applied: Option<(f64, i64)>,
    pub now_ms: i64,
    /// Latest good value of another point, for interlocks.
    pub value_of: &'a dyn Fn(&str, &str) -> Option<f64>,
}

impl SetpointLimits {
    /// Checks a requested value; `Ok` means it may be written.
    pub fn check(&self, value: f64, facts: &Facts<'_>) -> Result<(), Rejection> {
        let range = |detail: String| Rejection {
            code: AckReason::RejectedOutOfRange,
            detail,
        };
        if !value.is_finite() {
            return Err(range(format!("{value} is not a number")));
        }
        if let Some(min) = self.min.filter(|&m| value < m) {
            return Err(range(format!("{value} is below the minimum {min}")));
        }
        if let Some(max) = self.max.filter(|&m| value > m) {
            return Err(range(format!("{value} is above the maximum {max}")));
        }
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|a| (a - value).abs() < 1e-9)
        {
            return Err(range(format!(
                "{value} is not one of the allowed values {allowed:?}"
            )));
        }
        if let (Some(rate), Some((last, at))) = (self.max_change_per_min, facts.last_applied) {
            let minutes = ((facts.now_ms - at) as f64 / 60_000.0).max(1.0);
            let allowed = rate * minutes;
            if (value - last).abs() > allowed + 1e-9 {
                return Err(range(format!(
                    "a change from {last} to {value} exceeds the ramp limit of {rate}/min ({allowed} allowed now)"
                )));
            }
        }
        for i in &self.interlocks {
            let blocked = match (facts.value_of)(&i.asset, &i.field) {
                Some(v) => (v - i.equals).abs() < 1e-9,
                None => i.block_when_unknown,
            };
            if blocked {
                return Err(Rejection {
                    code: AckReason::RejectedInterlock,
                    detail: format!("{} ({}.{} = {})", i.reason, i.asset, i.field, i.equals),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SetpointLimits {
        serde_yaml::from_str(
            "asset: ctl\nfield: power_limit\nmin: 0\nmax: 100\nmax_change_per_min: 10\ndefault: 50\ninterlocks:\n  - { asset: tank-1, field: delivering, equals: 1, reason: delivery in progress }\n",
        )
        .unwrap()
    }

    fn check(
        l: &SetpointLimits,
        value: f64,
        last: Option<(f64, i64)>,
        delivering: Option<f64>,
    ) -> Result<(), Rejection> {
        let value_of = move |_: &str, _: &str| delivering;
        l.check(
            value,
            &Facts {
                last_applied: last,
                now_ms: 600_000,
                value_of: &value_of,
            },
        )
    }

    #[test]
    fn setpoint_checks_give_the_right_reason_for_each_case() {
        let l = limits();
        let ok = Ok(());
        let out = |v: f64, last, d| check(&l, v, last, d).map_err(|r| r.code);
        // (value, last applied (value, at ms), interlock input) -> expected
        type Case = (f64, Option<(f64, i64)>, Option<f64>, Result<(), AckReason>);
        let cases: Vec<Case> = vec![
            (50.0, None, Some(0.0), ok),
            (0.0, None, Some(0.0), ok),
            (100.0, None, Some(0.0), ok),
            (-0.1, None, Some(0.0), Err(AckReason::RejectedOutOfRange)),
            (100.1, None, Some(0.0), Err(AckReason::RejectedOutOfRange)),
            (
                f64::NAN,
                None,
                Some(0.0),
                Err(AckReason::RejectedOutOfRange),
            ),
            // ramp: 10/min; last change 30 s ago counts as one minute
            (60.0, Some((50.0, 570_000)), Some(0.0), ok),
            (
                61.0,
                Some((50.0, 570_000)),
                Some(0.0),
                Err(AckReason::RejectedOutOfRange),
            ),
            // 5 minutes later, 50 is allowed
            (100.0, Some((50.0, 300_000)), Some(0.0), ok),
            // interlock: delivering, or unknown (fail safe)
            (50.0, None, Some(1.0), Err(AckReason::RejectedInterlock)),
            (50.0, None, None, Err(AckReason::RejectedInterlock)),
        ];
        for (v, last, d, want) in cases {
            assert_eq!(
                out(v, last, d),
                want,
                "value {v}, last {last:?}, delivering {d:?}"
            );
        }
    }

    #[test]
    fn allowed_values_restrict_an_enable_to_zero_or_one() {
        let l: SetpointLimits =
            serde_yaml::from_str("asset: ctl\nfield: pump_enable\nallowed: [0, 1]\n").unwrap();
        assert!(check(&l, 1.0, None, None).is_ok());
        let r = check(&l, 2.0, None, None).unwrap_err();
        assert_eq!(r.code, AckReason::RejectedOutOfRange);
        assert!(r.detail.contains("allowed"), "{}", r.detail);
    }

    #[test]
    fn a_rejection_names_the_interlock_reason() {
        let r = check(&limits(), 50.0, None, Some(1.0)).unwrap_err();
        assert!(
            r.detail.contains("delivery in progress") && r.detail.contains("tank-1.delivering"),
            "{}",
            r.detail
        );
    }
}
