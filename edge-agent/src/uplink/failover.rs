//! Which headend address the uplink dials (issue 35). Pure: the uplink
//! tells it how each attempt went and asks where to go next and how long
//! to wait.
//!
//! * The first address is picked at random, so that a fleet given one
//!   list spreads over its replicas.
//! * A working address is kept: after a session that reached its HelloAck
//!   ends, the same address is dialled again first (a restart in place, a
//!   renewal, a takeover).
//! * An attempt that fails before its HelloAck moves on to the next
//!   address after the short (initial) delay; only when every address in
//!   turn has failed does the uplink back off (doubling to its maximum).
//!
//! A name is resolved again at each dial (and each of its addresses is
//! tried in turn by the TCP connect): DNS changes are followed without a
//! restart.

/// How long to wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The initial delay (next address, or the same after it worked).
    Short,
    /// The growing backoff: every address failed in turn.
    Backoff,
}

#[derive(Debug, Clone)]
pub struct Failover {
    addrs: Vec<String>,
    at: usize,
    /// Attempts failed in a row since one worked.
    failed: usize,
    /// Times the uplink moved to another address.
    moves: u64,
}

impl Failover {
    /// `start` picks the first address (taken modulo the list's length).
    pub fn new(addrs: Vec<String>, start: usize) -> Failover {
        let at = if addrs.is_empty() {
            0
        } else {
            start % addrs.len()
        };
        Failover {
            addrs,
            at,
            failed: 0,
            moves: 0,
        }
    }

    /// Starting at an address picked at random.
    pub fn random(addrs: &[String]) -> Failover {
        Failover::new(addrs.to_vec(), fastrand::usize(..))
    }

    /// The address to dial now.
    pub fn current(&self) -> &str {
        self.addrs.get(self.at).map(String::as_str).unwrap_or("")
    }

    pub fn addresses(&self) -> &[String] {
        &self.addrs
    }

    /// Times the uplink moved to another address.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// A session on the current address reached its HelloAck and has now
    /// ended: dial it again first.
    pub fn worked_then_ended(&mut self) -> Wait {
        self.failed = 0;
        Wait::Short
    }

    /// An attempt on the current address failed before its HelloAck: move
    /// on; back off when every address failed in turn.
    pub fn failed(&mut self) -> Wait {
        self.failed = self.failed.saturating_add(1);
        if self.addrs.len() > 1 {
            self.at = (self.at + 1) % self.addrs.len();
            self.moves += 1;
        }
        if self.failed.is_multiple_of(self.addrs.len().max(1)) {
            Wait::Backoff
        } else {
            Wait::Short
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Failover {
        Failover::new(vec!["a:1".into(), "b:1".into(), "c:1".into()], 4)
    }

    #[test]
    fn the_start_is_picked_modulo_the_list() {
        assert_eq!(three().current(), "b:1");
        assert_eq!(Failover::new(vec!["only:1".into()], 99).current(), "only:1");
        assert_eq!(Failover::new(vec![], 3).current(), "");
    }

    #[test]
    fn a_failed_attempt_moves_on_at_once_and_a_full_round_of_failures_backs_off() {
        let mut f = three();
        assert_eq!(f.failed(), Wait::Short);
        assert_eq!(f.current(), "c:1");
        assert_eq!(f.failed(), Wait::Short);
        assert_eq!(f.current(), "a:1");
        assert_eq!(f.failed(), Wait::Backoff, "b, c and a all failed");
        assert_eq!(f.current(), "b:1");
        assert_eq!(f.failed(), Wait::Short);
        assert_eq!(f.moves(), 4);
    }

    #[test]
    fn a_working_address_is_dialled_again_first_and_its_failure_starts_a_new_round() {
        let mut f = three();
        f.failed(); // b down: on to c
        assert_eq!(f.worked_then_ended(), Wait::Short);
        assert_eq!(f.current(), "c:1", "c worked: kept");
        assert_eq!(f.failed(), Wait::Short, "c gone: on to a, no backoff yet");
        assert_eq!(f.current(), "a:1");
    }

    #[test]
    fn one_address_backs_off_at_each_failure_as_before() {
        let mut f = Failover::new(vec!["h:7443".into()], 0);
        assert_eq!(f.failed(), Wait::Backoff);
        assert_eq!(f.failed(), Wait::Backoff);
        assert_eq!(f.current(), "h:7443");
        assert_eq!(f.moves(), 0);
    }
}
