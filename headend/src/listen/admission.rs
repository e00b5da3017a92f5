//! Which connections a listener keeps, pure (the clock is an argument).
//!
//! A listener holds at most `max_total` connections, at most
//! `max_per_key` from one client network. A connection is *busy* while a
//! request is being served (or, before authentication, never); otherwise
//! it is *idle*, since some time. When a new connection would exceed a
//! bound, the **oldest idle connection that has been idle at least
//! `min_idle_ms`** (of the same network, for the per-network bound; of
//! anyone, for the total) is evicted to make room. If there is none, the
//! new connection is refused: for the per-network bound at once (that
//! network has enough), for the total the listener stops accepting until
//! a place frees (the kernel backlog holds the rest).
//!
//! So someone holding thousands of idle or trickling connections keeps
//! only the newest of them, and a client that connects and talks at once
//! always finds a place; a storm of real clients that all talk is never
//! evicted (they are busy or younger than `min_idle_ms`), only slowed by
//! the backlog.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_total: usize,
    /// `usize::MAX`: no bound per network.
    pub max_per_key: usize,
    /// An idle connection younger than this is never evicted, ms.
    pub min_idle_ms: i64,
}

/// The answer to a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Keep it under this id, after closing these.
    Yes { id: u64, evict: Vec<u64> },
    /// Its network has `max_per_key` connections, none evictable: close it.
    PerKeyFull,
    /// The listener has `max_total`, none evictable: wait, then ask again.
    TotalFull,
}

#[derive(Debug, Clone)]
struct Entry<K> {
    key: K,
    busy: u32,
    idle_since_ms: i64,
}

/// The connections of one listener.
#[derive(Debug)]
pub struct Table<K> {
    bounds: Bounds,
    next: u64,
    conns: BTreeMap<u64, Entry<K>>,
    per_key: HashMap<K, usize>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    pub fn new(bounds: Bounds) -> Self {
        Table {
            bounds: Bounds {
                max_total: bounds.max_total.max(1),
                max_per_key: bounds.max_per_key.max(1),
                ..bounds
            },
            next: 0,
            conns: BTreeMap::new(),
            per_key: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections from `key` now.
    pub fn of(&self, key: &K) -> usize {
        self.per_key.get(key).copied().unwrap_or(0)
    }

    /// The oldest evictable connection (of `key`, if given).
    fn victim(&self, key: Option<&K>, now_ms: i64, skip: &[u64]) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(id, e)| {
                e.busy == 0
                    && e.idle_since_ms <= now_ms - self.bounds.min_idle_ms
                    && key.is_none_or(|k| &e.key == k)
                    && !skip.contains(id)
            })
            .min_by_key(|(id, e)| (e.idle_since_ms, **id))
            .map(|(id, _)| *id)
    }

    /// A new connection from `key`.
    pub fn admit(&mut self, key: &K, now_ms: i64) -> Admit {
        let mut evict = Vec::new();
        if self.of(key) >= self.bounds.max_per_key {
            match self.victim(Some(key), now_ms, &evict) {
                Some(v) => evict.push(v),
                None => return Admit::PerKeyFull,
            }
        }
        if self.conns.len() - evict.len() >= self.bounds.max_total {
            match self.victim(None, now_ms, &evict) {
                Some(v) => evict.push(v),
                None => return Admit::TotalFull,
            }
        }
        for v in &evict {
            self.remove(*v);
        }
        self.next += 1;
        let id = self.next;
        self.conns.insert(
            id,
            Entry {
                key: key.clone(),
                busy: 0,
                idle_since_ms: now_ms,
            },
        );
        *self.per_key.entry(key.clone()).or_default() += 1;
        Admit::Yes { id, evict }
    }

    /// A request started on `id`.
    pub fn busy(&mut self, id: u64) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.busy = e.busy.saturating_add(1);
        }
    }

    /// A request ended on `id`.
    pub fn done(&mut self, id: u64, now_ms: i64) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.busy = e.busy.saturating_sub(1);
            if e.busy == 0 {
                e.idle_since_ms = now_ms;
            }
        }
    }

    /// `id` closed (or was evicted); unknown ids are ignored.
    pub fn remove(&mut self, id: u64) {
        if let Some(e) = self.conns.remove(&id)
            && let Some(n) = self.per_key.get_mut(&e.key)
        {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&e.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(total: usize, per_key: usize) -> Table<&'static str> {
        Table::new(Bounds {
            max_total: total,
            max_per_key: per_key,
            min_idle_ms: 1_000,
        })
    }

    fn id(a: Admit) -> u64 {
        match a {
            Admit::Yes { id, .. } => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_listener_evicts_its_oldest_idle_connection_for_a_new_one() {
        let mut t = table(3, 100);
        let a = id(t.admit(&"x", 0));
        let _b = id(t.admit(&"x", 10));
        let _c = id(t.admit(&"y", 20));
        // all idle for more than a second: the oldest goes
        match t.admit(&"z", 2_000) {
            Admit::Yes { evict, .. } => assert_eq!(evict, vec![a]),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.of(&"x"), 1);
    }

    #[test]
    fn busy_and_young_connections_are_never_evicted_so_a_storm_of_real_clients_waits() {
        let mut t = table(2, 100);
        let a = id(t.admit(&"x", 0));
        let b = id(t.admit(&"y", 0));
        t.busy(a);
        // b is idle but younger than min_idle: nothing to evict
        assert_eq!(t.admit(&"z", 500), Admit::TotalFull);
        // once b has been idle a second, it goes; a (busy) stays
        match t.admit(&"z", 1_000) {
            Admit::Yes { evict, .. } => assert_eq!(evict, vec![b]),
            other => panic!("{other:?}"),
        }
        // a request that ended restarts the idle clock: a is spared, the
        // connection idle since 1 s goes
        t.done(a, 5_000);
        match t.admit(&"w", 5_500) {
            Admit::Yes { evict, .. } => assert_eq!(evict, vec![3]),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.admit(&"v", 5_600), Admit::TotalFull);
    }

    #[test]
    fn one_network_past_its_bound_loses_its_own_oldest_idle_connection_or_is_refused() {
        let mut t = table(100, 2);
        let a = id(t.admit(&"x", 0));
        let b = id(t.admit(&"x", 0));
        let other = id(t.admit(&"y", 0));
        match t.admit(&"x", 5_000) {
            Admit::Yes { evict, .. } => assert_eq!(evict, vec![a]),
            o => panic!("{o:?}"),
        }
        t.busy(b);
        let c = t.conns.keys().copied().max().unwrap();
        t.busy(c);
        assert_eq!(t.admit(&"x", 9_000), Admit::PerKeyFull);
        assert_eq!(
            t.of(&"y"),
            1,
            "another network's connection {other} is untouched"
        );
    }

    #[test]
    fn removing_frees_the_place_and_unknown_ids_are_ignored() {
        let mut t = table(1, 1);
        let a = id(t.admit(&"x", 0));
        t.busy(a);
        assert_eq!(t.admit(&"y", 10), Admit::TotalFull);
        t.remove(a);
        t.remove(a);
        t.remove(999);
        t.busy(999);
        t.done(999, 0);
        assert!(t.is_empty() && t.of(&"x") == 0);
        id(t.admit(&"y", 10));
    }
}
