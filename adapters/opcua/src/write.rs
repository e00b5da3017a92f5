//! Node writes with read-back, typed like the variable (the shell's
//! write path, split from `session.rs`).

use adapter_api::runner::{self, Io};
use adapter_api::{WriteOutcome, WriteRequest};
use opcua::client::Session;
use opcua::types::{
    AttributeId, DataValue, NodeId, ReadValueId, StatusCode, TimestampsToReturn, Variant,
    WriteValue,
};

use crate::items;
use crate::session::{Server, number};

impl Server {
    /// A node write with read-back. `Err` when the link is unusable.
    pub(crate) async fn write(
        &self,
        session: &Session,
        namespaces: &[String],
        io: &Io,
        req: WriteRequest,
    ) -> Result<(), String> {
        let Some(i) = io.points.writable(&req.asset_id, &req.field) else {
            let _ = req.reply.send(WriteOutcome::UnknownPoint);
            return Ok(());
        };
        let node = match items::parse_node(&self.dev.points[i].node)
            .and_then(|n| n.resolve(namespaces))
            .and_then(|s| {
                s.parse::<NodeId>()
                    .map_err(|_| format!("node id {s} does not parse"))
            }) {
            Ok(n) => n,
            Err(e) => {
                let _ = req.reply.send(WriteOutcome::Failed(e));
                return Ok(());
            }
        };
        let conv = io.points.specs()[i].conv;
        let raw = conv.to_raw(req.value);
        let read = ReadValueId {
            node_id: node.clone(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        };
        let link = |e: String, reply: tokio::sync::oneshot::Sender<WriteOutcome>| {
            let _ = reply.send(WriteOutcome::Unreachable(e.clone()));
            Err(e)
        };
        // the variable's current type decides the written type (a Double
        // written to a Float variable is BadTypeMismatch on most servers)
        let current = match runner::within(
            self.dev.timeout_ms,
            "read before write",
            session.read(
                std::slice::from_ref(&read),
                TimestampsToReturn::Neither,
                0.0,
            ),
        )
        .await
        {
            Err(e) => return link(e, req.reply),
            Ok(Err(e)) => return link(format!("read before write: {e}"), req.reply),
            Ok(Ok(v)) => v.into_iter().next().and_then(|d| d.value),
        };
        let value = match typed(current.as_ref(), raw) {
            Ok(v) => v,
            Err(e) => {
                let _ = req.reply.send(WriteOutcome::NotRepresentable(e));
                return Ok(());
            }
        };
        let w = WriteValue {
            node_id: node,
            attribute_id: AttributeId::Value as u32,
            value: DataValue {
                value: Some(value),
                ..Default::default()
            },
            ..Default::default()
        };
        match runner::within(self.dev.timeout_ms, "write", session.write(&[w])).await {
            Err(e) => return link(e, req.reply),
            Ok(Err(e)) => return link(format!("write: {e}"), req.reply),
            Ok(Ok(codes)) => {
                let code = codes
                    .first()
                    .copied()
                    .unwrap_or(StatusCode::BadUnexpectedError);
                if !code.is_good() {
                    let _ = req.reply.send(WriteOutcome::Failed(format!(
                        "the server refused the write: {code}"
                    )));
                    return Ok(());
                }
            }
        }
        let back = match runner::within(
            self.dev.timeout_ms,
            "read-back",
            session.read(&[read], TimestampsToReturn::Neither, 0.0),
        )
        .await
        {
            Err(e) => return link(e, req.reply),
            Ok(Err(e)) => return link(format!("read-back: {e}"), req.reply),
            Ok(Ok(v)) => v
                .into_iter()
                .next()
                .and_then(|d| d.value)
                .as_ref()
                .and_then(number),
        };
        let read_value = back.map(|r| conv.to_canonical(r)).unwrap_or(f64::NAN);
        let same = (read_value - req.value).abs() <= 1e-6 * req.value.abs().max(1.0)
            // a Float variable holds the nearest f32
            || (read_value - req.value).abs() <= f64::from(f32::EPSILON) * req.value.abs().max(1.0) * 4.0;
        let _ = req.reply.send(if same {
            WriteOutcome::Applied {
                readback: read_value,
            }
        } else {
            WriteOutcome::ReadbackMismatch {
                wrote: req.value,
                read: read_value,
            }
        });
        Ok(())
    }
}

/// `raw` as a variant of the same type as `current` (Double when unknown).
pub(crate) fn typed(current: Option<&Variant>, raw: f64) -> Result<Variant, String> {
    let int = |lo: f64, hi: f64| {
        if raw.fract() == 0.0 && (lo..=hi).contains(&raw) {
            Ok(raw)
        } else {
            Err(format!(
                "{raw} does not fit the node's integer type (range {lo} to {hi})"
            ))
        }
    };
    Ok(match current {
        Some(Variant::Boolean(_)) if raw == 0.0 || raw == 1.0 => Variant::Boolean(raw == 1.0),
        Some(Variant::Boolean(_)) => return Err(format!("{raw} is not a boolean (0 or 1)")),
        Some(Variant::SByte(_)) => Variant::SByte(int(-128.0, 127.0)? as i8),
        Some(Variant::Byte(_)) => Variant::Byte(int(0.0, 255.0)? as u8),
        Some(Variant::Int16(_)) => Variant::Int16(int(-32768.0, 32767.0)? as i16),
        Some(Variant::UInt16(_)) => Variant::UInt16(int(0.0, 65535.0)? as u16),
        Some(Variant::Int32(_)) => Variant::Int32(int(-2_147_483_648.0, 2_147_483_647.0)? as i32),
        Some(Variant::UInt32(_)) => Variant::UInt32(int(0.0, 4_294_967_295.0)? as u32),
        Some(Variant::Int64(_)) => Variant::Int64(int(-9.0e18, 9.0e18)? as i64),
        Some(Variant::UInt64(_)) => Variant::UInt64(int(0.0, 1.8e19)? as u64),
        Some(Variant::Float(_)) if raw.is_finite() && raw.abs() <= f64::from(f32::MAX) => {
            Variant::Float(raw as f32)
        }
        Some(Variant::Float(_)) => return Err(format!("{raw} does not fit a Float")),
        _ if raw.is_finite() => Variant::Double(raw),
        _ => return Err(format!("{raw} is not a finite number")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_take_the_type_of_the_variable() {
        assert_eq!(
            typed(Some(&Variant::Float(1.0)), 2.5),
            Ok(Variant::Float(2.5))
        );
        assert_eq!(typed(Some(&Variant::Int16(1)), 7.0), Ok(Variant::Int16(7)));
        assert!(typed(Some(&Variant::Int16(1)), 7.5).is_err());
        assert!(typed(Some(&Variant::Byte(1)), 300.0).is_err());
        assert_eq!(
            typed(Some(&Variant::Boolean(false)), 1.0),
            Ok(Variant::Boolean(true))
        );
        assert_eq!(typed(None, 3.0), Ok(Variant::Double(3.0)));
        assert!(typed(None, f64::NAN).is_err());
    }
}
