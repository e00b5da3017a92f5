//! The tanks whose gauge readings were just committed, for the quick
//! evaluation (issue 33: a reading shows in the tank list within seconds,
//! not at the next minute's run). Ingest marks (site, asset) pairs after a
//! commit; the quick evaluator takes them, debounced.
//!
//! Bounded: at most [`MAX_TOUCHED`] pairs wait. Past that (an agent
//! sending volumes for ever new asset ids) the set is dropped and the next
//! round evaluates every tank instead: nothing is missed, the cost is one
//! full run.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Pairs that may wait for the quick evaluator.
pub const MAX_TOUCHED: usize = 10_000;

/// What the next quick round evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    Tanks(HashSet<(String, String)>),
    /// More pairs than [`MAX_TOUCHED`] waited: every tank.
    Everything,
}

#[derive(Default)]
struct Waiting {
    pairs: HashSet<(String, String)>,
    overflow: bool,
}

/// The pairs waiting, shared by ingest and the quick evaluator.
#[derive(Clone, Default)]
pub struct Touched {
    inner: Arc<(Mutex<Waiting>, Notify)>,
}

impl Touched {
    /// Marks the assets of `site` whose gauge readings were committed.
    pub fn mark<'a>(&self, site: &str, assets: impl IntoIterator<Item = &'a str>) {
        let mut any = false;
        {
            let mut w = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
            for a in assets {
                any = true;
                if w.overflow {
                    continue;
                }
                if w.pairs.len() >= MAX_TOUCHED {
                    w.pairs.clear();
                    w.overflow = true;
                    continue;
                }
                w.pairs.insert((site.to_string(), a.to_string()));
            }
        }
        if any {
            self.inner.1.notify_one();
        }
    }

    /// Waits for a mark, lets `debounce` pass (readings of other sessions
    /// committed meanwhile join the round), then takes what waits.
    pub async fn next(&self, debounce: Duration) -> Round {
        loop {
            self.inner.1.notified().await;
            tokio::time::sleep(debounce).await;
            let mut w = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
            if std::mem::take(&mut w.overflow) {
                w.pairs.clear();
                return Round::Everything;
            }
            if !w.pairs.is_empty() {
                return Round::Tanks(std::mem::take(&mut w.pairs));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_wait_debounced_and_too_many_become_one_full_round() {
        let t = Touched::default();
        t.mark("s1", ["tank-1", "tank-2"]);
        t.mark("s2", ["tank-1"]);
        t.mark("s1", ["tank-1"]);
        let r = t.next(Duration::from_millis(20)).await;
        let want: HashSet<(String, String)> =
            [("s1", "tank-1"), ("s1", "tank-2"), ("s2", "tank-1")]
                .iter()
                .map(|(s, a)| (s.to_string(), a.to_string()))
                .collect();
        assert_eq!(r, Round::Tanks(want));
        // nothing marked: the next round waits for a mark
        let waiting =
            tokio::time::timeout(Duration::from_millis(300), t.next(Duration::ZERO)).await;
        assert!(waiting.is_err(), "no round without a mark");
        let names: Vec<String> = (0..=MAX_TOUCHED).map(|i| format!("t{i}")).collect();
        t.mark("s1", names.iter().map(String::as_str));
        t.mark("s1", ["late"]);
        assert_eq!(t.next(Duration::ZERO).await, Round::Everything);
        t.mark("s1", ["tank-9"]);
        assert!(
            matches!(t.next(Duration::ZERO).await, Round::Tanks(p) if p.len() == 1),
            "after the full round, pairs again"
        );
    }
}
