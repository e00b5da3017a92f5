//! The command lifecycle: pure transition functions (no I/O).
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

use super::{AckReason, CommandState};

use CommandState::*;

/// The state an agent's ack moves a command in `current` to, or `None`
/// when it does not move it (the event is still recorded).
pub fn on_agent_ack(current: CommandState, reason: AckReason) -> Option<CommandState> {
    if current.is_terminal() {
        return None;
    }
    let next = match reason {
        AckReason::Received => Acked,
        AckReason::Applied => Active,
        AckReason::Completed => Completed,
        // a newer command or a cancel ended it: completed if it was in force
        AckReason::Superseded | AckReason::Cancelled if current == Active => Completed,
        AckReason::Superseded | AckReason::Cancelled => Rejected,
        AckReason::Expired if current == Active => return None,
        AckReason::Expired => Expired,
        AckReason::RejectedOutOfRange
        | AckReason::RejectedInterlock
        | AckReason::RejectedInvalid => Rejected,
        AckReason::DeviceUnreachable | AckReason::WriteFailed | AckReason::ReadbackMismatch => {
            Failed
        }
        AckReason::Unspecified => return None,
    };
    (next.rank() > current.rank()).then_some(next)
}

/// A split parent's state, from its children's: the least advanced child
/// still under way; once all have ended, `completed` when all completed,
/// else the first child's other end state. No children: `submitted`.
pub fn parent_state(children: &[CommandState]) -> CommandState {
    if children.is_empty() {
        return Submitted;
    }
    if let Some(c) = children
        .iter()
        .filter(|c| !c.is_terminal())
        .min_by_key(|c| c.rank())
    {
        return *c;
    }
    children
        .iter()
        .copied()
        .find(|s| *s != Completed)
        .unwrap_or(Completed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AckReason as A;

    #[test]
    fn agent_acks_move_commands_forward_only() {
        // (current, reason) -> new state
        let cases: &[(CommandState, AckReason, Option<CommandState>)] = &[
            (Sent, A::Received, Some(Acked)),
            (Submitted, A::Received, Some(Acked)), // ack raced the "sent" mark
            (Acked, A::Applied, Some(Active)),
            (Sent, A::Applied, Some(Active)),
            (Active, A::Completed, Some(Completed)),
            (Active, A::Superseded, Some(Completed)),
            (Acked, A::Superseded, Some(Rejected)),
            (Active, A::Cancelled, Some(Completed)),
            (Sent, A::Cancelled, Some(Rejected)),
            (Acked, A::Expired, Some(Expired)),
            (Active, A::Expired, None),
            (Acked, A::RejectedOutOfRange, Some(Rejected)),
            (Acked, A::RejectedInterlock, Some(Rejected)),
            (Acked, A::RejectedInvalid, Some(Rejected)),
            (Acked, A::DeviceUnreachable, Some(Failed)),
            (Acked, A::WriteFailed, Some(Failed)),
            (Acked, A::ReadbackMismatch, Some(Failed)),
            // late or repeated events never move a state back
            (Active, A::Received, None),
            (Active, A::Applied, None),
            (Completed, A::Applied, None),
            (Rejected, A::Completed, None),
            (Acked, A::Unspecified, None),
        ];
        for &(cur, reason, want) in cases {
            assert_eq!(on_agent_ack(cur, reason), want, "{cur} + {reason:?}");
        }
    }

    #[test]
    fn a_split_parent_follows_its_slowest_child_and_completes_only_when_all_did() {
        let cases: &[(&[CommandState], CommandState)] = &[
            (&[], Submitted),
            (&[Active, Sent], Sent),
            (&[Active, Active], Active),
            (&[Completed, Active], Active),
            (&[Completed, Completed], Completed),
            (&[Completed, Rejected], Rejected),
            (&[Failed, Completed], Failed),
            (&[Rejected, Acked], Acked),
        ];
        for &(children, want) in cases {
            assert_eq!(parent_state(children), want, "{children:?}");
        }
    }
}
