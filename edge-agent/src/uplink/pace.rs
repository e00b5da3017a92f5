//! Batch sizes that fit the link (issue 30). Pure: the uplink tells it
//! when batches were sent and acknowledged; it answers how many entries
//! the next batch carries and how many may be on the wire at once.
//!
//! The link's rate is measured, not configured: each acknowledged batch
//! gives a delivery sample, its entries over the time it was at the head
//! of the queue (from its sending, or from the previous acknowledgement
//! if that came later), and the rate is the highest of the recent samples
//! (a small batch on an idle link under-reads it; the maximum does not).
//! A batch then takes about [`BATCH_TIME`] on the wire and at most
//! [`QUEUE_TIME`] of entries are unacknowledged, so that a keepalive ping,
//! a preview or a command's answer never waits behind minutes of backlog
//! (at 64 kbit/s four 1,000-reading batches were 50 s: the HTTP/2
//! keepalive timed out behind them every ~25 s).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Wire time of one batch, at the measured rate.
pub const BATCH_TIME: Duration = Duration::from_secs(1);
/// Most wire time of unacknowledged entries.
pub const QUEUE_TIME: Duration = Duration::from_secs(3);
/// Entries per batch before anything is measured.
pub const START_ENTRIES: usize = 100;
/// Fewest entries per batch, whatever the rate.
pub const MIN_ENTRIES: usize = 10;
/// Delivery samples the rate is the maximum of.
const SAMPLES: usize = 8;
/// A sample over less time than this is not taken (clock granularity).
const MIN_SAMPLE: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct Pace {
    /// Recent delivery samples, entries per second.
    samples: VecDeque<f64>,
    last_ack: Option<Instant>,
    max_entries: usize,
}

impl Pace {
    /// `max_entries`: the configured (and the headend's) batch limit.
    pub fn new(max_entries: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(SAMPLES),
            last_ack: None,
            max_entries: max_entries.max(1),
        }
    }

    /// The measured rate, entries per second (None before a sample).
    pub fn rate(&self) -> Option<f64> {
        self.samples.iter().copied().reduce(f64::max)
    }

    /// Entries the next batch carries at most.
    pub fn batch_entries(&self) -> usize {
        let n = match self.rate() {
            None => START_ENTRIES,
            Some(r) => (r * BATCH_TIME.as_secs_f64()) as usize,
        };
        n.clamp(MIN_ENTRIES.min(self.max_entries), self.max_entries)
    }

    /// Whether another batch may go out with `in_flight` entries
    /// unacknowledged in `batches` batches (`window`: the configured most).
    pub fn may_send(&self, in_flight: usize, batches: usize, window: usize) -> bool {
        if batches == 0 {
            return true;
        }
        if batches >= window {
            return false;
        }
        let queue = match self.rate() {
            None => START_ENTRIES * 2,
            Some(r) => (r * QUEUE_TIME.as_secs_f64()) as usize,
        };
        in_flight + self.batch_entries() <= queue.max(self.batch_entries())
    }

    /// A batch of `entries` sent at `sent` was acknowledged at `now`.
    pub fn acked(&mut self, entries: usize, sent: Instant, now: Instant) {
        let from = self.last_ack.map_or(sent, |a| a.max(sent));
        self.last_ack = Some(now);
        let took = now.saturating_duration_since(from);
        if took < MIN_SAMPLE || entries == 0 {
            return;
        }
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(entries as f64 / took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn batches_start_small_and_follow_the_measured_rate() {
        let t0 = Instant::now();
        let mut p = Pace::new(1000);
        assert_eq!(p.batch_entries(), START_ENTRIES);
        // two batches of 100 in flight on a link carrying 80 entries/s:
        // the first is acked after 1.25 s, the second 1.25 s later
        p.acked(100, t0, t0 + ms(1250));
        p.acked(100, t0, t0 + ms(2500));
        assert_eq!(p.rate(), Some(80.0));
        assert_eq!(p.batch_entries(), 80, "a batch is 1 s of link");
        // a fast link grows it up to the limit
        let t1 = t0 + ms(3000);
        p.acked(80, t1, t1 + ms(10));
        assert_eq!(p.batch_entries(), 1000);
    }

    #[test]
    fn a_small_batch_on_an_idle_link_does_not_lower_the_rate() {
        let t0 = Instant::now();
        let mut p = Pace::new(1000);
        p.acked(400, t0, t0 + ms(1000));
        // live: 20 entries acked 100 ms after sending (round trip, not rate)
        let t1 = t0 + ms(5000);
        p.acked(20, t1, t1 + ms(100));
        assert_eq!(p.rate(), Some(400.0));
        // ... until eight newer samples have replaced it
        for i in 0..8 {
            let t = t1 + ms(1000 * (i + 1));
            p.acked(20, t, t + ms(100));
        }
        assert_eq!(p.rate(), Some(200.0));
    }

    #[test]
    fn unacknowledged_entries_stay_within_a_few_seconds_of_link() {
        let t0 = Instant::now();
        let mut p = Pace::new(1000);
        assert!(p.may_send(0, 0, 4), "an empty pipe always takes a batch");
        assert!(p.may_send(100, 1, 4), "before a sample: two start batches");
        assert!(!p.may_send(200, 2, 4));
        p.acked(50, t0, t0 + ms(1000)); // 50 entries/s: 3 s is 150
        assert_eq!(p.batch_entries(), 50);
        assert!(p.may_send(100, 2, 4));
        assert!(!p.may_send(101, 2, 4));
        assert!(!p.may_send(0, 4, 4), "never more than the window");
        // a tiny sample interval is no measurement
        let mut q = Pace::new(1000);
        q.acked(10, t0, t0 + ms(1));
        assert_eq!(q.rate(), None);
    }

    #[test]
    fn the_configured_limit_caps_every_batch() {
        let t0 = Instant::now();
        let mut p = Pace::new(5);
        assert_eq!(p.batch_entries(), 5);
        p.acked(5, t0, t0 + ms(1000));
        assert_eq!(p.batch_entries(), 5);
    }
}
