//! The webhook outbox's typed values: what a notification is about and
//! where it stands.

use super::text_enum;

text_enum!(
    /// What a queued notification is about (its id is the escalation's or
    /// the alarm episode's).
    Subject, "notification subject" {
        Escalation => "escalation",
        Alarm => "alarm",
    }
);

text_enum!(
    /// Where a queued notification stands.
    OutboxState, "notification state" {
        /// Waiting for its first or next attempt.
        Pending => "pending",
        Delivered => "delivered",
        /// Given up after its last attempt (a dead letter).
        Dead => "dead",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_form_round_trips() {
        crate::round_trips(Subject::ALL);
        crate::round_trips(OutboxState::ALL);
    }
}
