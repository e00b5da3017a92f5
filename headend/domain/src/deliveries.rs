//! Whether a delivery an agent detected was one, pure: a road tanker
//! fills at most about 1,500 L a minute through its hoses, so a rise that
//! happens almost all in one step between readings a minute or two apart
//! is a sensor jump (a float freed, a dropout ending), not fuel. The
//! agent's detector cannot tell (it must also work on fast simulators and
//! sparse polling); the headend judges with the readings around it.

use super::text_enum;

/// Faster than any tanker's drop, litres per minute.
pub const MAX_FLOW_L_PER_MIN: f64 = 2_500.0;
/// A step that carries more than this share of the whole rise is "the rise".
pub const STEP_SHARE: f64 = 0.7;
/// Steps between readings further apart than this are not judged (a gap
/// or slow polling hides how the level rose), ms.
pub const JUDGED_STEP_MS: i64 = 2 * 60_000;

text_enum!(
    /// Where a delivery an agent reported stands: a rise under way, or
    /// one that ended (its litres known).
    DeliveryPhase, "delivery phase" {
        Started => "started",
        Ended => "ended",
    }
);

text_enum!(
    /// What the headend makes of a detected delivery.
    Verdict, "delivery verdict" {
        Confirmed => "confirmed",
        /// The rise came in one step faster than fuel flows.
        SensorJump => "sensor_jump",
    }
);

/// Judges a detected rise of `rise_l` from the readings `(time, volume)`
/// from its start to its end (time order).
pub fn verdict(samples: &[(i64, f64)], rise_l: f64) -> Verdict {
    if rise_l <= 0.0 {
        return Verdict::Confirmed;
    }
    let jump = samples.windows(2).any(|w| {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        let dt = t1 - t0;
        let step = v1 - v0;
        dt > 0
            && dt <= JUDGED_STEP_MS
            && step > STEP_SHARE * rise_l
            && step / (dt as f64 / 60_000.0) > MAX_FLOW_L_PER_MIN
    });
    if jump {
        Verdict::SensorJump
    } else {
        Verdict::Confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    #[test]
    fn a_tanker_filling_at_800_l_a_minute_is_a_delivery_and_a_one_step_jump_is_not() {
        let filling: Vec<(i64, f64)> = (0..15)
            .map(|i| (i * M, 5_000.0 + 800.0 * i as f64))
            .collect();
        assert_eq!(verdict(&filling, 11_200.0), Verdict::Confirmed);
        let jump = [
            (0, 5_000.0),
            (M, 5_010.0),
            (2 * M, 11_000.0),
            (3 * M, 11_005.0),
        ];
        assert_eq!(verdict(&jump, 6_005.0), Verdict::SensorJump);
        // a small top-up in three steps: each step under 70 % of the rise
        let top_up = [
            (0, 5_000.0),
            (M, 5_800.0),
            (2 * M, 6_600.0),
            (3 * M, 7_000.0),
        ];
        assert_eq!(verdict(&top_up, 2_000.0), Verdict::Confirmed);
        // one step, but across a 40-minute gap: not judged
        let gap = [(0, 5_000.0), (40 * M, 15_000.0)];
        assert_eq!(verdict(&gap, 10_000.0), Verdict::Confirmed);
        // one fast step that is most of a small rise but slower than 2,500 L/min
        let slow = [(0, 5_000.0), (M, 6_000.0)];
        assert_eq!(verdict(&slow, 1_000.0), Verdict::Confirmed);
        crate::round_trips(Verdict::ALL);
    }
}
