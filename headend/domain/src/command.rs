//! A command's state, kind and reasons.

use tankwatch_proto::v1::AckReason;

use super::text_enum;

text_enum!(
    /// Where a command is in its lifecycle ([`super::lifecycle`]).
    CommandState, "command state" {
        Submitted => "submitted",
        Sent => "sent",
        Acked => "acked",
        Active => "active",
        Completed => "completed",
        Expired => "expired",
        Failed => "failed",
        Rejected => "rejected",
        /// Ended by an operator's cancel (issue 27: it used to end as
        /// `completed`, or `rejected` before it was sent).
        Cancelled => "cancelled",
    }
);

impl CommandState {
    /// Rank: submitted 0, sent 1, acked 2, active 3, terminal 4. States
    /// only move to a higher rank.
    pub fn rank(self) -> u8 {
        match self {
            CommandState::Submitted => 0,
            CommandState::Sent => 1,
            CommandState::Acked => 2,
            CommandState::Active => 3,
            _ => 4,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 4
    }

    /// States below `self` (a guard for a forward-only update).
    pub fn below(self) -> impl Iterator<Item = CommandState> {
        CommandState::ALL
            .iter()
            .copied()
            .filter(move |s| s.rank() < self.rank())
    }
}

text_enum!(
    /// What a command does. A `split` is a site-level parent: never sent,
    /// its children (setpoints) are.
    CommandKind, "command kind" {
        Setpoint => "setpoint",
        Eta => "eta",
        Split => "split",
    }
);

text_enum!(
    /// Why a command's state moved (a timeline entry's reason): a step of
    /// the headend's own, or an agent's ack reason (same text as
    /// [`AckReason`]).
    Reason, "command reason" {
        Submitted => "submitted",
        Sent => "sent",
        Redelivered => "redelivered",
        CancelSent => "cancel_sent",
        CancelRequested => "cancel_requested",
        Received => "received",
        Applied => "applied",
        Completed => "completed",
        Superseded => "superseded",
        Cancelled => "cancelled",
        Expired => "expired",
        RejectedOutOfRange => "rejected_out_of_range",
        RejectedInterlock => "rejected_interlock",
        RejectedInvalid => "rejected_invalid",
        DeviceUnreachable => "device_unreachable",
        WriteFailed => "write_failed",
        ReadbackMismatch => "readback_mismatch",
    }
);

impl Reason {
    /// The timeline reason of an agent's ack; `None` for `Unspecified`,
    /// which is no reason (`CommandAck::reason_code` refuses it).
    pub fn of_ack(a: AckReason) -> Option<Reason> {
        Some(match a {
            AckReason::Received => Reason::Received,
            AckReason::Applied => Reason::Applied,
            AckReason::Completed => Reason::Completed,
            AckReason::Superseded => Reason::Superseded,
            AckReason::Cancelled => Reason::Cancelled,
            AckReason::Expired => Reason::Expired,
            AckReason::RejectedOutOfRange => Reason::RejectedOutOfRange,
            AckReason::RejectedInterlock => Reason::RejectedInterlock,
            AckReason::RejectedInvalid => Reason::RejectedInvalid,
            AckReason::DeviceUnreachable => Reason::DeviceUnreachable,
            AckReason::WriteFailed => Reason::WriteFailed,
            AckReason::ReadbackMismatch => Reason::ReadbackMismatch,
            AckReason::Unspecified => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_kinds_and_reasons_round_trip_their_text_and_refuse_unknown_ones() {
        crate::round_trips(CommandState::ALL);
        crate::round_trips(CommandKind::ALL);
        crate::round_trips(Reason::ALL);
    }

    #[test]
    fn every_ack_reason_has_the_same_text_as_its_timeline_reason() {
        for n in 1..=12 {
            let a = AckReason::try_from(n).unwrap();
            assert_eq!(Reason::of_ack(a).map(Reason::as_str), Some(a.as_text()));
        }
        assert_eq!(Reason::of_ack(AckReason::Unspecified), None);
    }

    #[test]
    fn only_the_last_five_states_are_terminal_and_below_is_strictly_lower() {
        let terminal: Vec<_> = CommandState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            terminal,
            ["completed", "expired", "failed", "rejected", "cancelled"]
        );
        let below: Vec<_> = CommandState::Active.below().collect();
        assert_eq!(
            below,
            [
                CommandState::Submitted,
                CommandState::Sent,
                CommandState::Acked
            ]
        );
    }
}
