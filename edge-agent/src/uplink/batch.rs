//! Log entries into batches, and batches onto the session's stream: as a
//! `CompactBatch` when the headend takes it (aliases, deltas: issue 30),
//! else as the v1 `TelemetryBatch`.

use prost::Message;
use sflog::Log;
use tankwatch_proto::compact::Encoder;
use tankwatch_proto::v1::{self, AgentMessage, agent_message::Msg as Out};
use tokio::sync::mpsc;

use super::SessionError;

/// Packs log entries into a batch (readings, gap records, acks, events).
pub(super) fn batch_of(
    log: &Log,
    entries: Vec<sflog::Entry>,
    preview: bool,
) -> Option<v1::TelemetryBatch> {
    let (first, last) = (entries.first()?.seq, entries.last()?.seq);
    let mut b = v1::TelemetryBatch {
        log_id: log.log_id(),
        first_seq: first,
        last_seq: last,
        preview,
        readings: Vec::with_capacity(entries.len()),
        ..Default::default()
    };
    for e in entries {
        match v1::LogRecord::decode(e.payload.as_slice()).map(|r| r.kind) {
            Ok(Some(v1::log_record::Kind::Reading(mut r))) => {
                r.seq = e.seq;
                b.readings.push(r);
            }
            Ok(Some(v1::log_record::Kind::Gap(mut g))) => {
                g.seq = e.seq;
                b.gaps.push(g);
            }
            Ok(Some(v1::log_record::Kind::CommandAck(mut a))) => {
                a.seq = e.seq;
                b.command_acks.push(a);
            }
            Ok(Some(v1::log_record::Kind::Event(mut ev))) => {
                ev.seq = e.seq;
                b.events.push(ev);
            }
            Ok(None) | Err(_) => {
                tracing::warn!(seq = e.seq, "log entry of an unknown kind; skipped")
            }
        }
    }
    Some(b)
}

/// The session's outbound side: the stream and, when the headend takes
/// compact batches, the session's encoder.
pub(super) struct Outbound {
    pub tx: mpsc::Sender<AgentMessage>,
    pub encoder: Option<Encoder>,
}

impl Outbound {
    pub async fn send(&self, msg: Out) -> Result<(), SessionError> {
        self.tx
            .send(AgentMessage { msg: Some(msg) })
            .await
            .map_err(|_| SessionError::Protocol("outbound stream closed".into()))
    }

    /// Sends a batch, compact when it can be. Returns the message's size.
    pub async fn batch(&mut self, b: v1::TelemetryBatch) -> Result<usize, SessionError> {
        let msg = match self.encoder.as_mut().and_then(|e| e.encode(&b)) {
            Some(c) => Out::Compact(c),
            None => Out::Batch(b),
        };
        let m = AgentMessage { msg: Some(msg) };
        let len = m.encoded_len();
        self.tx
            .send(m)
            .await
            .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
        Ok(len)
    }
}
