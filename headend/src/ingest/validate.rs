//! What an agent's batch must be before anything of it is stored: its
//! ranges and seqs consistent, values finite, gap records well formed;
//! and the fuzzing entry that runs an agent's message through the
//! session's decoding, validation and cleaning.

use tankwatch_proto::v1::{self, AgentMessage, agent_message::Msg as In};
use tonic::Status;

use super::{MAX_BATCH_READINGS, sanitize};

/// Checks a batch's internal consistency against the hello.
pub fn validate_batch(b: &v1::TelemetryBatch, log_id: u64) -> Result<(), Status> {
    if b.log_id != log_id {
        return Err(Status::invalid_argument(format!(
            "batch log_id {} differs from the hello's {log_id}",
            b.log_id
        )));
    }
    if b.first_seq == 0 || b.first_seq > b.last_seq {
        return Err(Status::invalid_argument(format!(
            "batch range [{}, {}] is empty or starts at 0",
            b.first_seq, b.last_seq
        )));
    }
    if b.readings.len() > MAX_BATCH_READINGS as usize {
        return Err(Status::invalid_argument(format!(
            "batch has {} readings; the limit is {MAX_BATCH_READINGS}",
            b.readings.len()
        )));
    }
    let mut seqs: Vec<u64> = b
        .readings
        .iter()
        .map(|r| r.seq)
        .chain(b.gaps.iter().map(|g| g.seq))
        .chain(b.command_acks.iter().map(|a| a.seq))
        .chain(b.events.iter().map(|e| e.seq))
        .collect();
    seqs.sort_unstable();
    if seqs.first().is_some_and(|&s| s < b.first_seq)
        || seqs.last().is_some_and(|&s| s > b.last_seq)
    {
        return Err(Status::invalid_argument(format!(
            "an entry's seq lies outside the batch range [{}, {}]",
            b.first_seq, b.last_seq
        )));
    }
    if seqs.windows(2).any(|w| w[0] == w[1]) {
        return Err(Status::invalid_argument(
            "two entries of one batch share a seq",
        ));
    }
    if let Some(r) = b.readings.iter().find(|r| !r.value.is_finite()) {
        return Err(Status::invalid_argument(format!(
            "reading seq {} has a non-finite value",
            r.seq
        )));
    }
    // a log gap covers a range of seqs; an adapter gap (its device named)
    // covers none, and its count may be unknown (0)
    if let Some(g) = b.gaps.iter().find(|g| {
        if g.device.is_empty() {
            g.first_seq > g.last_seq || g.count == 0
        } else {
            g.first_seq != 0 || g.last_seq != 0
        }
    }) {
        return Err(Status::invalid_argument(format!(
            "gap record seq {} has an empty range (or a device gap claims log seqs)",
            g.seq
        )));
    }
    Ok(())
}

/// Fuzzing entry (`fuzz/`): an agent's message as it arrives off the
/// wire, decoded, validated and cleaned the way a session does before SQL;
/// also an agent log record. Must never panic.
#[doc(hidden)]
pub fn fuzz_agent_message(data: &[u8]) {
    use prost::Message;
    if let Ok(m) = AgentMessage::decode(data) {
        match m.msg {
            Some(In::Hello(mut h)) => {
                sanitize::hello(&mut h);
            }
            Some(In::Batch(mut b)) if validate_batch(&b, b.log_id).is_ok() => {
                sanitize::batch(&mut b);
            }
            Some(In::Compact(c)) => {
                let mut d = tankwatch_proto::compact::Decoder::new();
                if let Ok(mut b) = d.decode(c, 1) {
                    // what decodes, encodes back to the very same batch
                    let mut e = tankwatch_proto::compact::Encoder::new();
                    if let Some(again) = e.encode(&b) {
                        let back = tankwatch_proto::compact::Decoder::new().decode(again, 1);
                        assert!(
                            back.as_ref().is_ok_and(|x| same_batch(x, &b)),
                            "compact round trip: {back:?} != {b:?}"
                        );
                    }
                    if validate_batch(&b, 1).is_ok() {
                        sanitize::batch(&mut b);
                    }
                }
            }
            _ => {}
        }
    }
    let _ = v1::LogRecord::decode(data);
}

/// Equal, with values compared bit for bit (NaN included).
fn same_batch(a: &v1::TelemetryBatch, b: &v1::TelemetryBatch) -> bool {
    let strip = |x: &v1::TelemetryBatch| {
        let mut x = x.clone();
        for r in &mut x.readings {
            r.value = 0.0;
        }
        x
    };
    strip(a) == strip(b)
        && a.readings.len() == b.readings.len()
        && a.readings
            .iter()
            .zip(&b.readings)
            .all(|(x, y)| x.value.to_bits() == y.value.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, last: u64, seqs: &[u64]) -> v1::TelemetryBatch {
        v1::TelemetryBatch {
            log_id: 9,
            first_seq: first,
            last_seq: last,
            readings: seqs
                .iter()
                .map(|&seq| v1::Reading {
                    seq,
                    value: 1.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn batches_with_bad_ranges_or_foreign_logs_are_refused() {
        assert!(validate_batch(&batch(1, 3, &[1, 2, 3]), 9).is_ok());
        assert!(
            validate_batch(&batch(1, 3, &[1, 3]), 9).is_ok(),
            "holes are gaps, allowed"
        );
        assert!(
            validate_batch(&batch(1, 3, &[1, 2, 3]), 8).is_err(),
            "other log"
        );
        assert!(
            validate_batch(&batch(2, 3, &[1, 2]), 9).is_err(),
            "seq outside range"
        );
        assert!(
            validate_batch(&batch(1, 3, &[2, 2]), 9).is_err(),
            "a seq used twice"
        );
        assert!(validate_batch(&batch(3, 1, &[]), 9).is_err(), "empty range");
        // a device's gap (a Sparkplug seq break) names no log seqs and may not know its count
        let mut b = batch(1, 3, &[1, 2]);
        b.gaps.push(v1::Gap {
            seq: 3,
            device: "broker".into(),
            reason: "source_sequence".into(),
            ..Default::default()
        });
        assert!(validate_batch(&b, 9).is_ok(), "a device gap is valid");
        b.gaps[0].first_seq = 1;
        b.gaps[0].last_seq = 1;
        assert!(
            validate_batch(&b, 9).is_err(),
            "a device gap claims no seqs"
        );
        let mut b = batch(1, 3, &[1, 2]);
        b.gaps.push(v1::Gap {
            seq: 2,
            first_seq: 1,
            last_seq: 1,
            count: 1,
            ..Default::default()
        });
        assert!(
            validate_batch(&b, 9).is_err(),
            "a gap record and a reading share a seq"
        );
        b.gaps[0].seq = 3;
        assert!(validate_batch(&b, 9).is_ok());
    }
}
