//! Login abuse limits, pure (the clock is an argument):
//!
//! * The login lock per user name *and client network* ([`LoginKey`],
//!   [`lock_after_failures`]; kept in SQL by `store::login_locks`, so every
//!   replica sees it): after [`LOCK_AFTER`] failures in a row the name is
//!   locked *for that network* for 30 s, doubling with each further
//!   failure up to 15 min; a success clears it. A locked name is refused
//!   before its password is checked, so a guesser learns nothing while it
//!   lasts, and a guesser elsewhere cannot lock the real user out (a lock
//!   per name alone was a denial of service anyone could hold).
//! * [`RateLimit`] per client address: a token bucket (login attempts per
//!   minute with a burst), so one address cannot spray many names.
//!
//! The rate limit tracks at most `cap` keys: when full, the least recently
//! seen key is forgotten. Lock rows are forgotten [`FORGET_AFTER_MS`] after
//! their last failure.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// The network a client address counts as: the address for IPv4, its
/// /64 for IPv6 (one host usually holds a whole /64, so counting single
/// v6 addresses would let it rotate past every limit).
pub fn client_net(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// What a login lockout counts failures of: a user name from a network.
pub type LoginKey = (String, IpAddr);

/// The lock that the `count`th failure in a row starts, ms (none before
/// [`LOCK_AFTER`]): 30 s, doubling to 15 min.
pub fn lock_after_failures(count: u32) -> Option<i64> {
    if count < LOCK_AFTER {
        return None;
    }
    let doublings = (count - LOCK_AFTER).min(16);
    Some(
        FIRST_LOCK_MS
            .saturating_mul(1 << doublings)
            .min(MAX_LOCK_MS),
    )
}

/// Failures older than this are forgotten (a name's count starts over).
pub const FORGET_AFTER_MS: i64 = 24 * 3_600_000;

/// Failures in a row before a name locks.
pub const LOCK_AFTER: u32 = 5;
/// First lock, ms.
pub const FIRST_LOCK_MS: i64 = 30_000;
/// Longest lock, ms.
pub const MAX_LOCK_MS: i64 = 15 * 60_000;
/// Keys tracked by default.
pub const DEFAULT_CAP: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// A token bucket per key: `per_minute` attempts a minute, `burst` at once.
#[derive(Debug)]
pub struct RateLimit<K> {
    keys: HashMap<K, Bucket>,
    per_minute: f64,
    burst: f64,
    cap: usize,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    pub fn new(per_minute: u32, burst: u32, cap: usize) -> Self {
        RateLimit {
            keys: HashMap::new(),
            per_minute: f64::from(per_minute.max(1)),
            burst: f64::from(burst.max(1)),
            cap: cap.max(1),
        }
    }

    /// Takes one token: Ok, or the wait until one is free, ms.
    pub fn take(&mut self, key: &K, now_ms: i64) -> Result<(), i64> {
        if !self.keys.contains_key(key) && self.keys.len() >= self.cap {
            evict_oldest(&mut self.keys, |b| b.at_ms);
        }
        let burst = self.burst;
        let b = self.keys.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at_ms: now_ms,
        });
        let per_ms = self.per_minute / 60_000.0;
        let elapsed = (now_ms - b.at_ms).max(0) as f64;
        b.tokens = (b.tokens + elapsed * per_ms).min(burst);
        b.at_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_ms).ceil() as i64)
        }
    }
}

fn evict_oldest<K: Hash + Eq + Clone, V>(m: &mut HashMap<K, V>, at: impl Fn(&V) -> i64) {
    if let Some(k) = m.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| k.clone()) {
        m.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_a_row_lock_for_30_s_doubling_to_15_min() {
        let locks: Vec<Option<i64>> = (1..=12).map(lock_after_failures).collect();
        assert_eq!(&locks[..4], &[None, None, None, None]);
        assert_eq!(locks[4], Some(30_000));
        assert_eq!(locks[5], Some(60_000));
        assert_eq!(locks[6], Some(120_000));
        assert_eq!(locks[9], Some(MAX_LOCK_MS), "capped at 15 min");
        assert_eq!(lock_after_failures(u32::MAX), Some(MAX_LOCK_MS));
    }

    #[test]
    fn a_v6_client_counts_as_its_64_and_a_mapped_v4_as_the_v4_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_net(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_net(ip("2001:db8:1:2:ffff:1:2:3")),
            client_net(ip("2001:db8:1:2::9"))
        );
        assert_ne!(client_net(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_net(ip("::ffff:10.0.0.7")), ip("10.0.0.7"));
        assert_eq!(client_net(ip("10.0.0.7")), ip("10.0.0.7"));
    }

    /// Issue 27: a lock per name alone let anyone keep the admin out.

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_interval() {
        let mut r = RateLimit::new(6, 3, 10); // one per 10 s
        for _ in 0..3 {
            assert_eq!(r.take(&"ip", 0), Ok(()));
        }
        assert_eq!(r.take(&"ip", 0), Err(10_000));
        assert_eq!(r.take(&"ip", 5_000), Err(5_000));
        assert_eq!(r.take(&"ip", 10_000), Ok(()));
        assert_eq!(r.take(&"other", 10_000), Ok(()), "per key");
    }
}
