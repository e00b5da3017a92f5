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
        crate::domain::round_trips(LoadStatus::ALL);
        crate::domain::round_trips(EtaSource::ALL);
        crate::domain::round_trips(LoadEventKind::ALL);
        crate::domain::round_trips(DeliverySource::ALL);
        assert!("Manual".parse::<EtaSource>().is_err());
    }
}
