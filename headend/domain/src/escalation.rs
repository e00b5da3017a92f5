//! Escalations, pure: what causes one, its states and the moves between
//! them, and which causes a tank's facts call for now.

use super::text_enum;

text_enum!(
    /// Why an escalation exists. One is open at most per (site, tank, cause).
    Cause, "escalation cause" {
        /// The forecast runout comes before the next delivery's ETA plus
        /// the margin, or within the horizon with no delivery planned.
        RunoutBeforeEta => "runout_before_eta",
        /// The tank's data is older than the site's threshold (or absent).
        Stale => "stale",
        /// The newest observation is implausible.
        Implausible => "implausible",
        /// A command failed or a revert kept failing.
        CommandFailed => "command_failed",
        /// A load is past its ETA and has not started.
        LateDelivery => "late_delivery",
        /// A load is long past its ETA with no delivery seen.
        MissingDelivery => "missing_delivery",
        /// A gauge raised a critical alarm (leak, sudden loss, overfill,
        /// high product) on the tank.
        CriticalAlarm => "critical_alarm",
    }
);

impl Cause {
    /// Causes the inventory job clears by itself when the facts no longer
    /// call for them; a failed command and a critical alarm (an incident,
    /// even once the gauge clears) stay until a person resolves them.
    pub fn clears_itself(self) -> bool {
        !matches!(self, Cause::CommandFailed | Cause::CriticalAlarm)
    }
}

text_enum!(
    /// Where an escalation is: created → assigned → investigating → resolved.
    EscState, "escalation state" {
        Created => "created",
        Assigned => "assigned",
        Investigating => "investigating",
        Resolved => "resolved",
    }
);

text_enum!(
    /// What an escalation timeline entry records.
    EscEventKind, "escalation event" {
        Opened => "opened",
        /// The job saw the cause again with new facts.
        Updated => "updated",
        Moved => "moved",
        Note => "note",
        /// The job saw the cause clear.
        Cleared => "cleared",
        /// A person resolved it while its cause persisted; the job saw the
        /// cause again, and the same case opened again with its history.
        Reopened => "reopened",
        /// A person said they have seen it (once per case).
        Acknowledged => "acknowledged",
        /// A person snoozed it until a time (its updates are held back).
        Snoozed => "snoozed",
    }
);

/// The facts of an escalation that decide what a person may do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscFacts {
    pub state: EscState,
    pub acked_ms: Option<i64>,
    pub snoozed_until_ms: Option<i64>,
}

/// The longest a person may snooze an escalation.
pub const MAX_SNOOZE_MS: i64 = 7 * 24 * 3_600_000;

/// Why a person's acknowledge or snooze is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscRefused {
    #[error("the escalation is resolved")]
    Resolved,
    #[error("the escalation is already acknowledged")]
    AlreadyAcknowledged,
    #[error("the snooze must end in the future and within 7 days")]
    SnoozeOutOfRange,
}

impl EscFacts {
    /// Snoozed now: a snooze that has not run out (no job ends it).
    pub fn snoozed(&self, now_ms: i64) -> bool {
        self.state != EscState::Resolved && self.snoozed_until_ms.is_some_and(|u| u > now_ms)
    }

    /// Acknowledging: once per case, while it is not resolved.
    pub fn may_acknowledge(&self) -> Result<(), EscRefused> {
        if self.state == EscState::Resolved {
            Err(EscRefused::Resolved)
        } else if self.acked_ms.is_some() {
            Err(EscRefused::AlreadyAcknowledged)
        } else {
            Ok(())
        }
    }

    /// Snoozing: while not resolved, until a time after now and at most
    /// [`MAX_SNOOZE_MS`] ahead (snoozing again moves the end; `until` =
    /// now or before is refused, not read as "wake up").
    pub fn may_snooze(&self, until_ms: i64, now_ms: i64) -> Result<(), EscRefused> {
        if self.state == EscState::Resolved {
            return Err(EscRefused::Resolved);
        }
        if until_ms <= now_ms || until_ms - now_ms > MAX_SNOOZE_MS {
            return Err(EscRefused::SnoozeOutOfRange);
        }
        Ok(())
    }
}

/// Whether a person may move an escalation from `from` to `to`: forward
/// only (assigning again is allowed, to hand it over), never out of
/// `resolved`.
pub fn may_move(from: EscState, to: EscState) -> bool {
    use EscState::*;
    match (from, to) {
        (Resolved, _) => false,
        (Created, Assigned | Investigating | Resolved) => true,
        (Assigned, Assigned | Investigating | Resolved) => true,
        (Investigating, Assigned | Resolved) => true,
        _ => false,
    }
}

/// Margin by default between a forecast runout and the next ETA, hours.
pub const DEFAULT_MARGIN_H: f64 = 4.0;
/// Without a planned delivery, a runout within this many hours escalates.
pub const UNPLANNED_HORIZON_H: f64 = 48.0;

/// The facts of one tank the job decides on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TankFacts {
    pub stale: bool,
    pub implausible: bool,
    pub hours_to_runout: Option<f64>,
    /// Runout minus the next ETA, hours (negative: runs out first).
    pub eta_margin_h: Option<f64>,
}

/// The inventory causes this tank calls for now.
pub fn tank_causes(f: &TankFacts, margin_h: f64) -> Vec<Cause> {
    let mut out = Vec::new();
    if f.stale {
        out.push(Cause::Stale);
    }
    if f.implausible {
        out.push(Cause::Implausible);
    }
    let runout = match (f.eta_margin_h, f.hours_to_runout) {
        (Some(m), _) => m < margin_h,
        (None, Some(h)) => h < UNPLANNED_HORIZON_H,
        (None, None) => false,
    };
    // a stale tank's forecast is old news: the stale escalation says so
    if runout && !f.stale {
        out.push(Cause::RunoutBeforeEta);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escalation_is_acknowledged_once_and_snoozed_within_a_week_while_not_resolved() {
        let f = |state, acked_ms, snoozed_until_ms| EscFacts {
            state,
            acked_ms,
            snoozed_until_ms,
        };
        let open = f(EscState::Assigned, None, None);
        assert_eq!(open.may_acknowledge(), Ok(()));
        assert_eq!(
            f(EscState::Created, Some(5), None).may_acknowledge(),
            Err(EscRefused::AlreadyAcknowledged)
        );
        assert_eq!(
            f(EscState::Resolved, None, None).may_acknowledge(),
            Err(EscRefused::Resolved)
        );
        let now = 1_000;
        let table = [
            (now + 1, Ok(())),
            (now + MAX_SNOOZE_MS, Ok(())),
            (now + MAX_SNOOZE_MS + 1, Err(EscRefused::SnoozeOutOfRange)),
            (now, Err(EscRefused::SnoozeOutOfRange)),
            (now - 5, Err(EscRefused::SnoozeOutOfRange)),
        ];
        for (until, want) in table {
            assert_eq!(open.may_snooze(until, now), want, "until {until}");
        }
        assert_eq!(
            f(EscState::Resolved, None, None).may_snooze(now + 10, now),
            Err(EscRefused::Resolved)
        );
        let snoozed = f(EscState::Investigating, None, Some(now + 10));
        assert!(snoozed.snoozed(now));
        assert!(!snoozed.snoozed(now + 10), "a snooze runs out by itself");
        assert!(!f(EscState::Resolved, None, Some(now + 10)).snoozed(now));
    }

    #[test]
    fn causes_states_and_event_kinds_round_trip() {
        crate::round_trips(Cause::ALL);
        crate::round_trips(EscState::ALL);
        crate::round_trips(EscEventKind::ALL);
    }

    #[test]
    fn escalations_move_forward_and_never_leave_resolved() {
        use EscState::*;
        let allowed = [
            (Created, Assigned),
            (Created, Investigating),
            (Created, Resolved),
            (Assigned, Assigned),
            (Assigned, Investigating),
            (Assigned, Resolved),
            (Investigating, Assigned),
            (Investigating, Resolved),
        ];
        for from in EscState::ALL {
            for to in EscState::ALL {
                assert_eq!(
                    may_move(*from, *to),
                    allowed.contains(&(*from, *to)),
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn a_runout_before_the_eta_with_its_margin_escalates_and_an_eta_in_time_clears_it() {
        let f = |eta_margin_h, hours| TankFacts {
            stale: false,
            implausible: false,
            hours_to_runout: hours,
            eta_margin_h,
        };
        let m = DEFAULT_MARGIN_H;
        // runs out 2 h before the truck: escalate
        assert_eq!(
            tank_causes(&f(Some(-2.0), Some(30.0)), m),
            vec![Cause::RunoutBeforeEta]
        );
        // truck arrives 3 h before runout: inside the 4 h margin
        assert_eq!(
            tank_causes(&f(Some(3.0), Some(30.0)), m),
            vec![Cause::RunoutBeforeEta]
        );
        // the new ETA leaves 6 h: clear
        assert_eq!(tank_causes(&f(Some(6.0), Some(30.0)), m), vec![]);
        // no delivery planned: only a runout within 48 h escalates
        assert_eq!(
            tank_causes(&f(None, Some(47.0)), m),
            vec![Cause::RunoutBeforeEta]
        );
        assert_eq!(tank_causes(&f(None, Some(49.0)), m), vec![]);
        assert_eq!(tank_causes(&f(None, None), m), vec![]);
        let stale = TankFacts {
            stale: true,
            implausible: true,
            ..f(Some(-5.0), Some(3.0))
        };
        assert_eq!(
            tank_causes(&stale, m),
            vec![Cause::Stale, Cause::Implausible],
            "a stale forecast does not add a runout escalation"
        );
        assert!(!Cause::CommandFailed.clears_itself());
        assert!(!Cause::CriticalAlarm.clears_itself());
        assert!(Cause::LateDelivery.clears_itself());
    }
}
