//! The command lifecycle: a pure transition function (no I/O).
//!
//! ```text
//! submitted -> sent -> acked -> active -> completed
//!     |          |        |        \----> failed (a revert that cannot be done is retried, not failed)
//!     |          |        +-------------> rejected | expired | failed
//!     +----------+----------------------> expired (never sent before its expiry) | rejected (cancelled)
//! ```
//!
//! States only move forward (by rank); a late or repeated event is kept in
//! the timeline but does not move the state back. Terminal states never change.

/// Every state, in lifecycle order.
pub const STATES: &[&str] = &[
    "submitted",
    "sent",
    "acked",
    "active",
    "completed",
    "expired",
    "failed",
    "rejected",
];

/// Rank of a state: submitted 0, sent 1, acked 2, active 3, terminal 4.
pub fn rank(state: &str) -> u8 {
    match state {
        "submitted" => 0,
        "sent" => 1,
        "acked" => 2,
        "active" => 3,
        _ => 4,
    }
}

pub fn is_terminal(state: &str) -> bool {
    rank(state) == 4
}

/// The state an agent's ack reason moves a command in `current` to, or
/// `None` when it does not move it (the event is still recorded).
pub fn on_agent_ack(current: &str, reason: &str) -> Option<&'static str> {
    if is_terminal(current) {
        return None;
    }
    let next = match reason {
        "received" => "acked",
        "applied" => "active",
        "completed" => "completed",
        // a newer command or a cancel ended it: completed if it was in force
        "superseded" | "cancelled" if current == "active" => "completed",
        "superseded" | "cancelled" => "rejected",
        "expired" if current == "active" => return None,
        "expired" => "expired",
        r if r.starts_with("rejected_") => "rejected",
        "device_unreachable" | "write_failed" | "readback_mismatch" => "failed",
        _ => return None,
    };
    (rank(next) > rank(current)).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_acks_move_commands_forward_only() {
        // (current, reason) -> new state
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("sent", "received", Some("acked")),
            ("submitted", "received", Some("acked")), // ack raced the "sent" mark
            ("acked", "applied", Some("active")),
            ("sent", "applied", Some("active")),
            ("active", "completed", Some("completed")),
            ("active", "superseded", Some("completed")),
            ("acked", "superseded", Some("rejected")),
            ("active", "cancelled", Some("completed")),
            ("sent", "cancelled", Some("rejected")),
            ("acked", "expired", Some("expired")),
            ("active", "expired", None),
            ("acked", "rejected_out_of_range", Some("rejected")),
            ("acked", "rejected_interlock", Some("rejected")),
            ("acked", "device_unreachable", Some("failed")),
            ("acked", "write_failed", Some("failed")),
            ("acked", "readback_mismatch", Some("failed")),
            // late or repeated events never move a state back
            ("active", "received", None),
            ("active", "applied", None),
            ("completed", "applied", None),
            ("rejected", "completed", None),
            ("acked", "some_future_reason", None),
        ];
        for &(cur, reason, want) in cases {
            assert_eq!(on_agent_ack(cur, reason), want, "{cur} + {reason}");
        }
    }

    #[test]
    fn every_state_has_a_rank_and_only_the_last_four_are_terminal() {
        let terminal: Vec<&str> = STATES.iter().copied().filter(|s| is_terminal(s)).collect();
        assert_eq!(terminal, ["completed", "expired", "failed", "rejected"]);
    }
}
