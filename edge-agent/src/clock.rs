//! The headend's clock as the agent knows it (issue 28, item 4). Each
//! HelloAck carries the headend's time; the agent keeps the offset to its
//! own clock and judges command expiry (a headend time) by its clock plus
//! that offset, so that a site PC two hours ahead does not call every
//! command "expired 2 h before it arrived". The headend corrects the times
//! of the agent's entries on its side (`headend::domain::clock`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Shared by the uplink (which measures) and the executor (which uses it).
#[derive(Clone, Default)]
pub struct HeadendClock(Arc<Inner>);

#[derive(Default)]
struct Inner {
    offset_ms: AtomicI64,
    /// When it was last measured (agent clock, Unix ms); 0: never.
    measured_ms: AtomicI64,
}

/// The headend's clock minus ours, from a Hello stamped at `sent_ms` and
/// its HelloAck, stamped `headend_ms` by the headend, received at
/// `received_ms`: the headend answered about half-way through the round trip.
pub fn offset(sent_ms: i64, received_ms: i64, headend_ms: i64) -> i64 {
    headend_ms - (sent_ms + (received_ms - sent_ms).max(0) / 2)
}

impl HeadendClock {
    /// Records a measurement (an older headend sends 0: nothing learnt).
    pub fn record(&self, sent_ms: i64, received_ms: i64, headend_ms: i64) -> Option<i64> {
        if headend_ms == 0 {
            return None;
        }
        let o = offset(sent_ms, received_ms, headend_ms);
        self.0.offset_ms.store(o, Ordering::Relaxed);
        self.0.measured_ms.store(received_ms, Ordering::Relaxed);
        Some(o)
    }

    /// The offset (ms; positive: the headend is ahead of us) and when it was measured.
    pub fn offset_ms(&self) -> Option<(i64, i64)> {
        match self.0.measured_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some((self.0.offset_ms.load(Ordering::Relaxed), at)),
        }
    }

    /// The headend's time now, as well as we know it (our clock until measured).
    pub fn headend_now_ms(&self) -> i64 {
        adapter_api::now_ms() + self.offset_ms().map(|(o, _)| o).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_taken_half_way_through_the_round_trip() {
        // (sent, received, headend) -> offset
        let cases = [
            (1_000, 1_100, 1_050, 0),                  // in sync
            (1_000, 1_100, 7_201_050, 7_200_000),      // headend 2 h ahead (we are behind)
            (7_201_000, 7_201_100, 1_050, -7_200_000), // we are 2 h ahead
            (1_000, 900, 1_000, 0),                    // our clock stepped back mid-way
        ];
        for (s, r, h, want) in cases {
            assert_eq!(offset(s, r, h), want, "{s} {r} {h}");
        }
        let c = HeadendClock::default();
        assert_eq!(c.offset_ms(), None);
        assert_eq!(c.record(1, 2, 0), None, "an older headend says nothing");
        assert_eq!(c.record(1_000, 1_100, 7_201_050), Some(7_200_000));
        assert_eq!(c.offset_ms(), Some((7_200_000, 1_100)));
        let now = adapter_api::now_ms();
        assert!((c.headend_now_ms() - (now + 7_200_000)).abs() < 1_000);
    }
}
