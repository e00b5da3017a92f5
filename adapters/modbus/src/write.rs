//! Writes with read-back (split from `lib.rs`): holding registers
//! (functions 6 and 16, a bit of a register by read-modify-write) and coils
//! (function 5), each read back and compared.

use std::time::Duration;

use adapter_api::{Linear, WriteOutcome, WriteRequest};
use tokio_modbus::client::{Context, Reader, Writer};

use crate::config::{self, Table};
use crate::{Poller, codec, transport_error};

/// Why one request of a write did not answer.
enum Failed {
    /// The link is unusable (timeout, I/O): the writer is told
    /// `Unreachable` and the session ends.
    Link(String),
    /// The device answered with an exception: the writer is told `Failed`.
    Exception(String),
}

impl Failed {
    /// Tells the writer; `Err` when the session must end.
    fn answer(self, reply: tokio::sync::oneshot::Sender<WriteOutcome>) -> Result<(), String> {
        match self {
            Failed::Link(e) => {
                let _ = reply.send(WriteOutcome::Unreachable(e.clone()));
                Err(e)
            }
            Failed::Exception(e) => {
                let _ = reply.send(WriteOutcome::Failed(e));
                Ok(())
            }
        }
    }
}

/// One request of a write (`what`: "write", "read-back", ...) within the
/// device's timeout.
async fn step<T>(
    timeout_ms: u64,
    what: &str,
    request: impl std::future::Future<Output = tokio_modbus::Result<T>>,
) -> Result<T, Failed> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), request).await {
        Err(_) => Err(Failed::Link(format!(
            "{what} timed out after {timeout_ms} ms"
        ))),
        Ok(Err(e)) => Err(Failed::Link(transport_error(&e))),
        Ok(Ok(Err(x))) => Err(Failed::Exception(format!(
            "{what}: modbus exception {x:?} (0x{:02x})",
            u8::from(x)
        ))),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

/// Answers a write by its read-back: applied when the device holds what
/// was written, else the mismatch with the value read.
fn read_back(req: WriteRequest, same: bool, read: f64) {
    let _ = req.reply.send(if same {
        WriteOutcome::Applied { readback: read }
    } else {
        WriteOutcome::ReadbackMismatch {
            wrote: req.value,
            read,
        }
    });
}

impl Poller {
    /// A coil write (function 5) with a read-back (function 1): the value
    /// must be 0 or 1.
    async fn write_coil(
        &mut self,
        ctx: &mut Context,
        p: &config::Point,
        conv: Linear,
        req: WriteRequest,
    ) -> Result<(), String> {
        let raw = conv.to_raw(req.value);
        let on = match raw {
            1.0 => true,
            0.0 => false,
            v => {
                let _ = req.reply.send(WriteOutcome::NotRepresentable(format!(
                    "{} ({v} raw) is not 0 or 1: a coil is off or on",
                    req.value
                )));
                return Ok(());
            }
        };
        let ms = self.dev.timeout_ms;
        if let Err(f) = step(ms, "write", ctx.write_single_coil(p.register, on)).await {
            return f.answer(req.reply);
        }
        let back = match step(ms, "read-back", ctx.read_coils(p.register, 1)).await {
            Ok(r) => r.first().copied(),
            Err(f) => return f.answer(req.reply),
        };
        let read = conv.to_canonical(f64::from(u8::from(back == Some(true))));
        read_back(req, back == Some(on), read);
        Ok(())
    }

    /// Serves one write request: encode, write, read back, compare. Returns
    /// `Err` (after answering the request) when the link is unusable.
    pub(crate) async fn write(
        &mut self,
        ctx: &mut Context,
        req: WriteRequest,
    ) -> Result<(), String> {
        let ms = self.dev.timeout_ms;
        let Some(i) = self
            .dev
            .points
            .iter()
            .position(|p| p.writable && p.asset == req.asset_id && p.field == req.field)
        else {
            let _ = req.reply.send(WriteOutcome::UnknownPoint);
            return Ok(());
        };
        let p = self.dev.points[i].clone();
        let conv = self.convs[i];
        let n = p.data_type.registers();
        if p.table == Table::Coil {
            return self.write_coil(ctx, &p, conv, req).await;
        }
        let words: Vec<u16> = match p.bit {
            Some(bit) => {
                let cur = match step(
                    ms,
                    "read before write",
                    ctx.read_holding_registers(p.register, 1),
                )
                .await
                {
                    Ok(r) => r.first().copied().unwrap_or(0),
                    Err(f) => return f.answer(req.reply),
                };
                let mask = 1u16 << bit;
                vec![if req.value != 0.0 {
                    cur | mask
                } else {
                    cur & !mask
                }]
            }
            None => {
                let raw = conv.to_raw(req.value);
                let is_int = !matches!(p.data_type, config::DataType::F32 | config::DataType::F64);
                let raw = if is_int && (raw - raw.round()).abs() < 1e-6 {
                    raw.round()
                } else {
                    raw
                };
                match codec::encode(raw, p.data_type, p.word_order, p.byte_order) {
                    Some(w) => w,
                    None => {
                        let _ = req.reply.send(WriteOutcome::NotRepresentable(format!(
                            "{} ({} raw) does not fit the point's type {:?}",
                            req.value, raw, p.data_type
                        )));
                        return Ok(());
                    }
                }
            }
        };
        let written = async {
            if words.len() == 1 {
                ctx.write_single_register(p.register, words[0]).await
            } else {
                ctx.write_multiple_registers(p.register, &words).await
            }
        };
        if let Err(f) = step(ms, "write", written).await {
            return f.answer(req.reply);
        }
        let back = match step(ms, "read-back", ctx.read_holding_registers(p.register, n)).await {
            Ok(r) => r,
            Err(f) => return f.answer(req.reply),
        };
        let canonical = |regs: &[u16]| -> f64 {
            match p.bit {
                Some(bit) => f64::from((regs.first().copied().unwrap_or(0) >> bit) & 1),
                None => codec::decode(regs, p.data_type, p.word_order, p.byte_order)
                    .map(|raw| conv.to_canonical(raw))
                    .unwrap_or(f64::NAN),
            }
        };
        let read = canonical(&back);
        let same = match p.bit {
            Some(bit) => (back.first().copied().unwrap_or(0) >> bit) & 1 == (words[0] >> bit) & 1,
            None => back == words,
        };
        read_back(req, same, read);
        Ok(())
    }
}
