//! Login abuse limits, pure (the clock is an argument):
//!
//! * [`Lockout`] per user name *and client network* ([`LoginKey`]): after
//!   [`LOCK_AFTER`] failures in a row the name is locked *for that
//!   network* for 30 s, doubling with each further failure up to 15 min;
//!   a success clears it. A locked name is refused before its password is
//!   checked, so a guesser learns nothing while it lasts, and a guesser
//!   elsewhere cannot lock the real user out (a lock per name alone
//!   was a denial of service anyone could hold).
//! * [`RateLimit`] per client address: a token bucket (login attempts per
//!   minute with a burst), so one address cannot spray many names.
//!
//! Both track at most `cap` keys: when full, the least recently seen key
//! is forgotten; for the lockout an unlocked one first, so churning
//! names does not unlock a name under attack.

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

/// Failures in a row before a name locks.
pub const LOCK_AFTER: u32 = 5;
/// First lock, ms.
pub const FIRST_LOCK_MS: i64 = 30_000;
/// Longest lock, ms.
pub const MAX_LOCK_MS: i64 = 15 * 60_000;
/// Keys tracked by default.
pub const DEFAULT_CAP: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until_ms: i64,
    seen_ms: i64,
}

/// Lockout with backoff, per key.
#[derive(Debug)]
pub struct Lockout<K> {
    keys: HashMap<K, Failures>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Lockout<K> {
    pub fn new(cap: usize) -> Self {
        Lockout {
            keys: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// How long `key` stays locked, ms (None: not locked).
    pub fn locked_for(&self, key: &K, now_ms: i64) -> Option<i64> {
        self.keys
            .get(key)
            .map(|f| f.locked_until_ms - now_ms)
            .filter(|left| *left > 0)
    }

    /// Records a failure; returns the lock it starts, ms, if any.
    pub fn failed(&mut self, key: &K, now_ms: i64) -> Option<i64> {
        if !self.keys.contains_key(key) && self.keys.len() >= self.cap {
            // unlocked names go first (oldest first), then the lock ending soonest
            evict_oldest(&mut self.keys, |f| {
                if f.locked_until_ms > now_ms {
                    i64::MAX / 2 + f.locked_until_ms / 2
                } else {
                    f.seen_ms / 2
                }
            });
        }
        let f = self.keys.entry(key.clone()).or_insert(Failures {
            count: 0,
            locked_until_ms: 0,
            seen_ms: now_ms,
        });
        f.count = f.count.saturating_add(1);
        f.seen_ms = now_ms;
        if f.count < LOCK_AFTER {
            return None;
        }
        let doublings = (f.count - LOCK_AFTER).min(16);
        let lock = FIRST_LOCK_MS
            .saturating_mul(1 << doublings)
            .min(MAX_LOCK_MS);
        f.locked_until_ms = now_ms + lock;
        Some(lock)
    }

    pub fn succeeded(&mut self, key: &K) {
        self.keys.remove(key);
    }

    /// Forgets every key `which` picks (an admin's unlock); how many.
    pub fn clear(&mut self, which: impl Fn(&K) -> bool) -> usize {
        let before = self.keys.len();
        self.keys.retain(|k, _| !which(k));
        before - self.keys.len()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

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
    fn a_name_locks_after_five_failures_for_30_s_doubling_to_15_min_and_a_success_clears_it() {
        let mut l = Lockout::new(10);
        let k = "ann".to_string();
        for i in 0..4 {
            assert_eq!(l.failed(&k, i), None);
        }
        assert_eq!(l.failed(&k, 10), Some(30_000));
        assert_eq!(l.locked_for(&k, 10), Some(30_000));
        assert_eq!(l.locked_for(&k, 30_010), None);
        assert_eq!(l.failed(&k, 30_010), Some(60_000));
        assert_eq!(l.failed(&k, 100_000), Some(120_000));
        for t in 0..10 {
            l.failed(&k, 200_000 + t);
        }
        assert_eq!(l.failed(&k, 300_000), Some(MAX_LOCK_MS));
        l.succeeded(&k);
        assert_eq!(l.locked_for(&k, 300_001), None);
        assert_eq!(l.failed(&k, 300_002), None, "counting starts again");
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
    fn failures_from_one_network_lock_the_name_there_only_and_an_unlock_lifts_every_lock() {
        let mut l: Lockout<LoginKey> = Lockout::new(100);
        let attacker = ("admin".to_string(), "203.0.113.9".parse().unwrap());
        let office = ("admin".to_string(), "198.51.100.4".parse().unwrap());
        for t in 0..LOCK_AFTER {
            l.failed(&attacker, i64::from(t));
        }
        assert!(l.locked_for(&attacker, 10).is_some());
        assert_eq!(
            l.locked_for(&office, 10),
            None,
            "the real user is not locked out"
        );
        l.failed(&office, 11);
        let other = ("ann".to_string(), "203.0.113.9".parse().unwrap());
        l.failed(&other, 12);
        assert_eq!(l.clear(|(name, _)| name == "admin"), 2);
        assert_eq!(l.locked_for(&attacker, 13), None);
        assert_eq!(l.len(), 1, "ann's failure stays");
    }

    #[test]
    fn the_lockout_forgets_unlocked_names_before_locked_ones_when_full() {
        let mut l = Lockout::new(2);
        for t in 0..5 {
            l.failed(&"locked", 100 + t);
        }
        l.failed(&"a", 200);
        l.failed(&"b", 300);
        assert_eq!(l.len(), 2);
        assert!(
            l.locked_for(&"locked", 400).is_some(),
            "a went, the lock stays"
        );
        l.failed(&"c", 40_000);
        assert!(
            l.locked_for(&"locked", 40_000).is_none(),
            "once over, it goes first"
        );
        assert_eq!(l.len(), 2);
    }

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
