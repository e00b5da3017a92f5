//! A site's clock against the headend's (issue 28, item 4): the skew is
//! measured at each session from the Hello (the agent's clock when it sent
//! it) and the headend's clock when it arrived. Pure: both clocks are inputs.
//!
//! - within [`IN_SYNC_MS`]: in sync, times are taken as they are;
//! - up to [`MAX_SKEW_MS`]: the times of the session's entries (readings,
//!   gaps, events, acks) are corrected by the skew, so that a site PC two
//!   hours ahead does not store readings two hours in the future, nor one
//!   behind make two-hour-old readings look fresh;
//! - beyond: the session is refused with the skew and the fix (set the
//!   site PC's clock); such times cannot be trusted even corrected.
//!
//! The correction assumes the skew was the same when the entries were
//! logged (a clock that is simply wrong); a clock stepped during an outage
//! shifts that outage's backlog by the step. The skew is kept per site
//! (`/sites`) and counted in the metrics.

/// Skew below this (ms) is network delay and ordinary drift: not corrected.
pub const IN_SYNC_MS: i64 = 2_000;
/// Skew beyond this (ms) refuses the session.
pub const MAX_SKEW_MS: i64 = 24 * 3600 * 1000;

/// What the headend does with a site's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockVerdict {
    /// The agent did not say (an older agent): taken as in sync.
    Unknown,
    /// Within [`IN_SYNC_MS`] (the skew, ms; positive: the agent is ahead).
    InSync(i64),
    /// Corrected by subtracting the skew (ms) from the session's times.
    Corrected(i64),
    /// Beyond [`MAX_SKEW_MS`].
    Refused(i64),
}

impl ClockVerdict {
    /// The verdict for an agent clock reading `agent_ms` that arrived at
    /// `headend_ms` (`agent_ms` 0: not sent).
    pub fn assess(agent_ms: i64, headend_ms: i64) -> ClockVerdict {
        if agent_ms == 0 {
            return ClockVerdict::Unknown;
        }
        let skew = agent_ms.saturating_sub(headend_ms);
        match skew.unsigned_abs() {
            s if s <= IN_SYNC_MS as u64 => ClockVerdict::InSync(skew),
            s if s <= MAX_SKEW_MS as u64 => ClockVerdict::Corrected(skew),
            _ => ClockVerdict::Refused(skew),
        }
    }

    /// The skew measured, if any (ms; positive: the agent is ahead).
    pub fn skew_ms(self) -> Option<i64> {
        match self {
            ClockVerdict::Unknown => None,
            ClockVerdict::InSync(s) | ClockVerdict::Corrected(s) | ClockVerdict::Refused(s) => {
                Some(s)
            }
        }
    }

    /// What to add to the session's agent times (ms).
    pub fn correction_ms(self) -> i64 {
        match self {
            ClockVerdict::Corrected(s) => -s,
            _ => 0,
        }
    }
}

/// A skew for people: "2 h 0 min ahead of", "3 min 5 s behind" (the
/// headend's clock follows).
pub fn describe(skew_ms: i64) -> String {
    let s = skew_ms.unsigned_abs().div_ceil(1000);
    let dir = if skew_ms >= 0 { "ahead of" } else { "behind" };
    match s {
        s if s >= 3600 => format!("{} h {} min {dir}", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min {} s {dir}", s / 60, s % 60),
        s => format!("{s} s {dir}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_ignored_within_2_s_corrected_up_to_a_day_and_refused_beyond() {
        let h = 1_800_000_000_000;
        let cases: &[(i64, ClockVerdict, i64)] = &[
            (0, ClockVerdict::Unknown, 0),
            (h, ClockVerdict::InSync(0), 0),
            (h + 2_000, ClockVerdict::InSync(2_000), 0),
            (h - 2_000, ClockVerdict::InSync(-2_000), 0),
            (h + 2_001, ClockVerdict::Corrected(2_001), -2_001),
            (
                h + 7_200_000,
                ClockVerdict::Corrected(7_200_000),
                -7_200_000,
            ),
            (
                h - 7_200_000,
                ClockVerdict::Corrected(-7_200_000),
                7_200_000,
            ),
            (
                h + MAX_SKEW_MS,
                ClockVerdict::Corrected(MAX_SKEW_MS),
                -MAX_SKEW_MS,
            ),
            (
                h + MAX_SKEW_MS + 1,
                ClockVerdict::Refused(MAX_SKEW_MS + 1),
                0,
            ),
            (1, ClockVerdict::Refused(1 - h), 0), // a PC that thinks it is 1970
        ];
        for &(agent, want, corr) in cases {
            let v = ClockVerdict::assess(agent, h);
            assert_eq!(v, want, "agent clock {agent}");
            assert_eq!(v.correction_ms(), corr, "agent clock {agent}");
        }
        assert_eq!(describe(7_200_000), "2 h 0 min ahead of");
        assert_eq!(describe(-185_000), "3 min 5 s behind");
        assert_eq!(describe(4_000), "4 s ahead of");
    }
}
