//! The command lifecycle: pure transition functions (no I/O).
//!
//! ```text
//! submitted -> sent -> acked -> active -> completed | cancelled
//!     |          |        |        \----> failed (a revert that cannot be done is retried, not failed)
//!     |          |        +-------------> rejected | expired | failed | cancelled
//!     +----------+----------------------> expired (never sent before its expiry) | cancelled
//! ```
//!
//! States only move forward (by rank); a late or repeated event is kept in
//! the timeline but does not move the state back. Terminal states never change.

use super::{AckReason, CommandState};

use CommandState::*;

/// The state an agent's ack moves a command in `current` to, or `None`
/// when it does not move it (the event is still recorded). Once an
/// operator asked to cancel it, a command that ends without failing ends
/// `cancelled` (an agent reports the revert a cancel made as `completed`).
pub fn on_agent_ack(
    current: CommandState,
    reason: AckReason,
    cancel_requested: bool,
) -> Option<CommandState> {
    if current.is_terminal() {
        return None;
    }
    if cancel_requested
        && matches!(
            reason,
            AckReason::Completed | AckReason::Cancelled | AckReason::Superseded
        )
    {
        return Some(Cancelled);
    }
    let next = match reason {
        AckReason::Received => Acked,
        AckReason::Applied => Active,
        AckReason::Completed => Completed,
        // a newer command ended it: completed if it was in force
        AckReason::Superseded if current == Active => Completed,
        AckReason::Superseded => Rejected,
        // an operator's cancel: its own end, whatever it had reached
        AckReason::Cancelled => Cancelled,
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
            (Active, A::Cancelled, Some(Cancelled)),
            (Sent, A::Cancelled, Some(Cancelled)),
            (Cancelled, A::Completed, None),
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
            assert_eq!(on_agent_ack(cur, reason, false), want, "{cur} + {reason:?}");
        }
        // once a cancel was asked for, an end without failure is `cancelled`
        let asked: &[(CommandState, AckReason, Option<CommandState>)] = &[
            (Active, A::Completed, Some(Cancelled)),
            (Acked, A::Cancelled, Some(Cancelled)),
            (Active, A::Superseded, Some(Cancelled)),
            (Active, A::WriteFailed, Some(Failed)),
            (Acked, A::Applied, Some(Active)),
            (Cancelled, A::Completed, None),
        ];
        for &(cur, reason, want) in asked {
            assert_eq!(
                on_agent_ack(cur, reason, true),
                want,
                "{cur} + {reason:?} after a cancel"
            );
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
            (&[Cancelled, Cancelled], Cancelled),
        ];
        for &(children, want) in cases {
            assert_eq!(parent_state(children), want, "{children:?}");
        }
    }
}
