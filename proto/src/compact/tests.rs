//! The compact codec's tests: the table of value forms, round trips of a
//! session, malformed batches, and a recorded agent message (`wire`).

use super::*;
use crate::v1;
use prost::Message;

fn reading(seq: u64, field: &str, value: f64, ts: i64) -> Reading {
    Reading {
        seq,
        asset_id: "tank-1".into(),
        field: field.into(),
        value,
        unit: "L".into(),
        quality: v1::Quality::Good as i32,
        source_ts_ms: ts,
        received_ts_ms: ts + 3,
        source: "modbus://10.0.0.5:502/unit1/hr100".into(),
        error: String::new(),
    }
}

fn batch(first: u64, readings: Vec<Reading>) -> TelemetryBatch {
    let last = readings.last().map_or(first, |r| r.seq);
    TelemetryBatch {
        log_id: 77,
        first_seq: first,
        last_seq: last,
        readings,
        ..Default::default()
    }
}

#[test]
fn values_travel_as_the_shortest_exact_form() {
    let cases: &[(f64, Value)] = &[
        (
            0.0,
            Value::Decimal {
                scale: 0,
                digits: 0,
            },
        ),
        (
            12_345.0,
            Value::Decimal {
                scale: 0,
                digits: 12_345,
            },
        ),
        (
            -7.5,
            Value::Decimal {
                scale: 1,
                digits: -75,
            },
        ),
        (
            0.1,
            Value::Decimal {
                scale: 1,
                digits: 1,
            },
        ),
        (
            12_345.678,
            Value::Decimal {
                scale: 3,
                digits: 12_345_678,
            },
        ),
        (
            1e-6,
            Value::Decimal {
                scale: 6,
                digits: 1,
            },
        ),
        (0.1f32 as f64, Value::F32(0.1)),
        (std::f64::consts::PI, Value::F64(std::f64::consts::PI)),
        // -0.0 is not the decimal 0 (its sign would be lost)
        (-0.0, Value::F32(-0.0)),
        (1e300, Value::F64(1e300)),
    ];
    for &(v, want) in cases {
        assert_eq!(classify(v), want, "{v:e}");
    }
    assert!(matches!(classify(f64::NAN), Value::F64(_)));
}

#[test]
fn a_session_of_batches_decodes_to_the_very_same_batches() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new();
    let mut r2 = reading(4, "temperature", std::f64::consts::E, 1_700_000_000_500);
    r2.quality = v1::Quality::Bad as i32;
    r2.error = "timeout".into();
    let batches = vec![
        batch(
            1,
            vec![
                reading(1, "volume", 12_345.678, 1_700_000_000_000),
                reading(2, "height", 1_234.5, 1_700_000_000_000),
                reading(3, "volume", 12_340.001, 1_700_000_001_000),
                r2,
            ],
        ),
        // a hole (a dropped seq), a value changing encoding, -0.0, a preview
        TelemetryBatch {
            preview: true,
            command_acks: vec![v1::CommandAck::new(
                "c1",
                v1::AckReason::Applied,
                "",
                5,
                Some(1.0),
            )],
            ..batch(
                5,
                vec![
                    reading(7, "volume", 0.1f32 as f64, 1_700_000_002_000),
                    reading(8, "volume", 12_000.5, 1_699_999_000_000),
                    reading(9, "height", -0.0, 1_700_000_002_000),
                    reading(10, "volume", 12_000.25, 1_700_000_003_000),
                    // repeats: the same value again, in every encoding
                    reading(11, "volume", 12_000.25, 1_700_000_003_000),
                    reading(12, "temperature", std::f64::consts::E, 1_700_000_003_000),
                    reading(13, "height", -0.0, 1_700_000_003_000),
                    reading(14, "height", 0.0, 1_700_000_003_000),
                    reading(15, "height", 0.1f32 as f64, 1_700_000_003_000),
                    reading(16, "height", 0.2f32 as f64, 1_700_000_003_000),
                ],
            )
        },
        batch(11, vec![]),
    ];
    for b in batches {
        let c = enc.encode(&b).expect("encodes");
        let bytes = c.encode_to_vec();
        let back = dec
            .decode(CompactBatch::decode(bytes.as_slice()).unwrap(), 77)
            .expect("decodes");
        assert_eq!(back, b);
        for (x, y) in back.readings.iter().zip(&b.readings) {
            assert_eq!(x.value.to_bits(), y.value.to_bits());
        }
    }
    assert_eq!(enc.points(), 3);
    assert_eq!(dec.points(), 3);
}

#[test]
fn a_reading_costs_a_few_bytes_once_its_point_is_defined() {
    let mut enc = Encoder::new();
    let points = ["volume", "ullage", "height", "water_height", "temperature"];
    let mut seq = 0;
    let mut sizes = Vec::new();
    for round in 0..3 {
        let readings: Vec<Reading> = (0..40)
            .map(|i| {
                seq += 1;
                let mut r = reading(
                    seq,
                    points[i % points.len()],
                    20_000.0 - f64::from(round) * 1.25 - (i / 5) as f64 * 0.001,
                    1_700_000_000_000 + i64::from(round) * 1000,
                );
                r.asset_id = format!("tank-{}", i / 5);
                r
            })
            .collect();
        let b = batch(seq - 39, readings);
        sizes.push(enc.encode(&b).unwrap().encoded_len());
        let plain = v1::TelemetryBatch { ..b }.encoded_len();
        assert!(plain > 40 * 60, "a v1 reading is long ({plain} bytes)");
    }
    // the first batch defines 40 points; later ones are columns only
    assert!(sizes[1] <= 40 * 8, "{sizes:?}");
    assert!(sizes[2] <= 40 * 8, "{sizes:?}");
}

#[test]
fn a_malformed_batch_is_an_error_naming_what_is_wrong() {
    let mut enc = Encoder::new();
    let b = batch(
        1,
        vec![
            reading(1, "volume", 1.5, 1_000),
            reading(2, "volume", 2.5, 1_000),
        ],
    );
    let good = enc.encode(&b).unwrap();
    let check = |c: CompactBatch, want: &str| {
        let e = Decoder::new().decode(c, 1).unwrap_err();
        assert!(e.0.contains(want), "{e} should say {want}");
    };
    let mut c = good.clone();
    c.form.pop();
    check(c, "columns differ");
    let mut c = good.clone();
    c.points.clear();
    check(c, "alias 0 is not defined");
    let mut c = good.clone();
    c.digits.push(1);
    check(c, "more values");
    let mut c = good.clone();
    c.digits.clear();
    check(c, "too few digits");
    let mut c = good.clone();
    c.form[0] = 10 << 2;
    check(c, "unknown value encoding 10");
    let mut c = good.clone();
    c.form[0] = 9 << 2;
    check(c, "repeats a value it never had");
    let mut c = good.clone();
    c.span = 0;
    check(c, "past the batch's last");
    let mut c = good.clone();
    c.first_seq = u64::MAX;
    check(c, "overflows");
    let mut c = good.clone();
    c.errors.push(ReadingError {
        index: 5,
        text: "x".into(),
    });
    check(c, "names no reading");
    let mut c = good.clone();
    c.points[0].source = "x".repeat(MAX_TEXT + 1);
    check(c, "longer than");
    let mut c = good;
    c.points = vec![PointDef::default(); MAX_POINTS + 1];
    check(c, "more than 20000 points");
}

#[test]
fn out_of_order_or_oversized_batches_are_left_to_the_plain_message() {
    let mut enc = Encoder::new();
    let b = batch(
        1,
        vec![reading(2, "volume", 1.0, 0), reading(1, "volume", 1.0, 0)],
    );
    assert!(enc.encode(&b).is_none());
    let mut r = reading(1, "volume", 1.0, 0);
    r.source = "x".repeat(MAX_TEXT + 1);
    assert!(enc.encode(&batch(1, vec![r])).is_none());
    assert_eq!(enc.points(), 0, "a refused batch defines nothing");
}

mod wire {
    use super::*;
    use crate::v1::{AgentMessage, agent_message::Msg};
    use prost::Message;

    /// A message an agent sent (from a real demo-site log, also a fuzz
    /// seed): agents in the field send this; it must keep decoding.
    #[test]
    fn a_recorded_agent_message_still_decodes_to_the_same_readings() {
        let bytes = include_bytes!("../../../fuzz/corpus/agent_message/compact-first-batch.bin");
        let Some(Msg::Compact(c)) = AgentMessage::decode(&bytes[..]).unwrap().msg else {
            panic!("not a compact batch");
        };
        let points = c.points.len();
        let b = Decoder::new().decode(c, 7).unwrap();
        assert_eq!(
            (b.first_seq, b.last_seq, b.readings.len()),
            (5442, 5487, 46)
        );
        assert!(points >= 20, "the demo site's points are defined: {points}");
        let r = &b.readings[0];
        assert_eq!(
            (r.asset_id.as_str(), r.field.as_str()),
            ("tank-1", "water_height")
        );
        assert!(
            b.readings
                .iter()
                .all(|r| r.value.is_finite() && r.source_ts_ms > 1_700_000_000_000)
        );
        // and encodes back to the very same bytes
        let again = Encoder::new().encode(&b).unwrap();
        let msg = AgentMessage {
            msg: Some(Msg::Compact(again)),
        };
        assert_eq!(msg.encode_to_vec(), bytes.to_vec());
    }
}
