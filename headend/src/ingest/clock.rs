//! Correcting a session's times by the site's clock skew (the verdict is
//! `domain::clock`): every agent time in a batch moves by the same amount.
use tankwatch_proto::v1;

/// Adds `by_ms` to every agent time of `b` (readings, gaps, events and
/// their deliveries, command acks). A 0 time ("none", e.g. the end of a
/// delivery still under way) stays 0.
pub fn shift(b: &mut v1::TelemetryBatch, by_ms: i64) {
    if by_ms == 0 {
        return;
    }
    let mv = |t: &mut i64| {
        if *t != 0 {
            *t = t.saturating_add(by_ms);
        }
    };
    for r in &mut b.readings {
        mv(&mut r.source_ts_ms);
        mv(&mut r.received_ts_ms);
    }
    for g in &mut b.gaps {
        mv(&mut g.from_ts_ms);
        mv(&mut g.to_ts_ms);
    }
    for a in &mut b.command_acks {
        mv(&mut a.ts_ms);
    }
    for e in &mut b.events {
        mv(&mut e.ts_ms);
        match &mut e.kind {
            Some(v1::event::Kind::Delivery(d)) => {
                mv(&mut d.start_ms);
                mv(&mut d.end_ms);
            }
            Some(v1::event::Kind::Gap(g)) => {
                mv(&mut g.from_ts_ms);
                mv(&mut g.to_ts_ms);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_time_of_a_batch_moves_by_the_skew_and_none_stays_none() {
        let mut b = v1::TelemetryBatch {
            readings: vec![v1::Reading {
                source_ts_ms: 10_000,
                received_ts_ms: 10_001,
                ..Default::default()
            }],
            gaps: vec![v1::Gap {
                from_ts_ms: 9_000,
                to_ts_ms: 9_500,
                ..Default::default()
            }],
            command_acks: vec![v1::CommandAck {
                ts_ms: 10_002,
                ..Default::default()
            }],
            events: vec![v1::Event {
                ts_ms: 10_003,
                kind: Some(v1::event::Kind::Delivery(v1::DeliveryEvent {
                    start_ms: 8_000,
                    end_ms: 0,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        };
        shift(&mut b, -7_000);
        assert_eq!(
            (b.readings[0].source_ts_ms, b.readings[0].received_ts_ms),
            (3_000, 3_001)
        );
        assert_eq!((b.gaps[0].from_ts_ms, b.gaps[0].to_ts_ms), (2_000, 2_500));
        assert_eq!(b.command_acks[0].ts_ms, 3_002);
        assert_eq!(b.events[0].ts_ms, 3_003);
        let Some(v1::event::Kind::Delivery(d)) = &b.events[0].kind else {
            panic!()
        };
        assert_eq!((d.start_ms, d.end_ms), (1_000, 0), "an open end stays open");
    }
}
