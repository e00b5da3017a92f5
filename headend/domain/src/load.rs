//! A delivery load's status, its ETA's source and its timeline kinds.

use super::text_enum;

text_enum!(
    /// Where a load is: planned until the agent sees the delivery start.
    LoadStatus, "load status" {
        Planned => "planned",
        Delivering => "delivering",
        Delivered => "delivered",
        Cancelled => "cancelled",
    }
);

impl LoadStatus {
    /// A delivered or cancelled load no longer changes.
    pub fn is_final(self) -> bool {
        matches!(self, LoadStatus::Delivered | LoadStatus::Cancelled)
    }
}

text_enum!(
    /// Where an ETA came from.
    EtaSource, "ETA source" {
        CarrierApi => "carrier_api",
        Email => "email",
        Csv => "csv",
        Manual => "manual",
    }
);

impl EtaSource {
    /// A higher rank's ETA stands against a lower one's:
    /// manual > carrier API > email > CSV.
    pub fn rank(self) -> u8 {
        match self {
            EtaSource::Csv => 1,
            EtaSource::Email => 2,
            EtaSource::CarrierApi => 3,
            EtaSource::Manual => 4,
        }
    }

    /// Whether an ETA from `self` replaces the one from `current` (the
    /// same or a higher rank does; every ETA is kept in the history).
    pub fn replaces(self, current: EtaSource) -> bool {
        self.rank() >= current.rank()
    }
}

text_enum!(
    /// A planned load that has not started when it should have.
    Timing, "load timing" {
        /// Past its ETA by more than [`LATE_AFTER_MS`].
        Late => "late",
        /// Past its ETA by more than [`MISSING_AFTER_MS`] with no delivery seen.
        Missing => "missing",
    }
);

/// A planned load this long past its ETA is late.
pub const LATE_AFTER_MS: i64 = 30 * 60_000;
/// ... and this long past it, missing.
pub const MISSING_AFTER_MS: i64 = 4 * 3_600_000;

/// Whether a load is late or missing at `now`: only a planned one can be
/// (a delivering, delivered or cancelled load is neither).
pub fn timing(status: LoadStatus, eta_ms: i64, now_ms: i64) -> Option<Timing> {
    if status != LoadStatus::Planned {
        return None;
    }
    let past = now_ms - eta_ms;
    if past > MISSING_AFTER_MS {
        Some(Timing::Missing)
    } else if past > LATE_AFTER_MS {
        Some(Timing::Late)
    } else {
        None
    }
}

/// Delivered minus planned litres, and whether the difference is worth a
/// look: more than 2 % of the planned volume or 100 L, whichever is more.
pub fn discrepancy(planned_l: f64, delivered_l: f64) -> (f64, bool) {
    let d = delivered_l - planned_l;
    (d, d.abs() > (planned_l * 0.02).max(100.0))
}

text_enum!(
    /// Who saw a delivery. The tank gauge's own record beats the agent's
    /// volume-rise detector for a load's delivered volume.
    DeliverySource, "delivery source" {
        Detector => "detector",
        Gauge => "gauge",
    }
);

text_enum!(
    /// What a load timeline entry records.
    LoadEventKind, "load event kind" {
        Created => "created",
        Updated => "updated",
        Delivering => "delivering",
        Delivered => "delivered",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_statuses_sources_and_event_kinds_round_trip_and_refuse_unknown_ones() {
        crate::round_trips(LoadStatus::ALL);
        crate::round_trips(EtaSource::ALL);
        crate::round_trips(LoadEventKind::ALL);
        crate::round_trips(DeliverySource::ALL);
        assert!("Manual".parse::<EtaSource>().is_err());
        crate::round_trips(Timing::ALL);
    }

    #[test]
    fn a_manual_eta_beats_the_carrier_which_beats_email_which_beats_csv() {
        use EtaSource::*;
        let order = [Csv, Email, CarrierApi, Manual];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(a.replaces(*b), i >= j, "{a} over {b}");
            }
        }
    }

    #[test]
    fn a_planned_load_is_late_after_30_min_and_missing_after_4_h() {
        const M: i64 = 60_000;
        let eta = 1_000 * M;
        let cases = [
            (LoadStatus::Planned, eta + 30 * M, None),
            (LoadStatus::Planned, eta + 30 * M + 1, Some(Timing::Late)),
            (LoadStatus::Planned, eta + 240 * M, Some(Timing::Late)),
            (
                LoadStatus::Planned,
                eta + 240 * M + 1,
                Some(Timing::Missing),
            ),
            (LoadStatus::Delivering, eta + 300 * M, None),
            (LoadStatus::Delivered, eta + 300 * M, None),
            (LoadStatus::Cancelled, eta + 300 * M, None),
        ];
        for (st, now, want) in cases {
            assert_eq!(
                timing(st, eta, now),
                want,
                "{st} at +{} min",
                (now - eta) / M
            );
        }
    }

    #[test]
    fn a_delivery_short_by_more_than_2_percent_or_100_l_is_flagged() {
        assert_eq!(discrepancy(30_000.0, 29_500.0), (-500.0, false));
        assert_eq!(discrepancy(30_000.0, 29_399.0), (-601.0, true));
        assert_eq!(discrepancy(3_000.0, 3_099.0), (99.0, false));
        assert_eq!(discrepancy(3_000.0, 3_101.0), (101.0, true));
    }
}
