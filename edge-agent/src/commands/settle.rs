//! Settling at start what a crash left half-done (issue 28, item 3).
//!
//! 1. The outbox is handed to the log again: answers whose state change
//!    was committed but which the log may not have had on disk.
//! 2. Every command left `received` (stored, nothing done yet) is acted on
//!    now from its stored body, with every check (expiry included).
//! 3. Every setpoint left `writing` (the device write may or may not have
//!    happened) is settled by the device itself: the executor waits for a
//!    reading of the point taken after the start; if the device holds the
//!    command's value, the command is recorded applied ("settled after a
//!    restart"); if not, it is acted on again like 2. If no reading comes
//!    within [`SETTLE_READ_WAIT`], it is recorded failed (device
//!    unreachable): the device was not seen to hold it.
//!
//! So a redelivered id is never silently ignored while its outcome is
//! unknown: by the time the uplink delivers anything, every stored command
//! has an answer in the log.

use std::time::Duration;

use adapter_api::now_ms;
use prost::Message;
use tankwatch_proto::v1::{self, AckReason};

use super::{ExecError, Running, point_key};

/// Longest wait for a fresh reading of a point whose write a crash interrupted.
pub const SETTLE_READ_WAIT: Duration = Duration::from_secs(15);

impl Running {
    pub(super) async fn settle(&mut self) -> Result<(), ExecError> {
        let started = now_ms();
        let pending = self.e.store.outbox()?;
        if !pending.is_empty() {
            tracing::info!(
                count = pending.len(),
                "handing over answers a stop left unconfirmed"
            );
        }
        self.emit(pending).await?;
        for (id, state, body) in self.e.store.unsettled()? {
            let c = match v1::Command::decode(body.as_slice()) {
                Ok(c) => c,
                Err(e) => {
                    self.finish(
                        &id,
                        AckReason::RejectedInvalid,
                        format!("its stored copy does not decode after a restart: {e}"),
                    )
                    .await?;
                    continue;
                }
            };
            tracing::warn!(command = %id, state = %state, "settling a command a stop left half-done");
            match (state.as_str(), &c.action) {
                ("writing", Some(v1::command::Action::Setpoint(s))) => {
                    self.settle_write(&c, s.clone(), started).await?
                }
                _ => self.process(c).await?,
            }
        }
        Ok(())
    }

    async fn settle_write(
        &mut self,
        c: &v1::Command,
        s: v1::Setpoint,
        started: i64,
    ) -> Result<(), ExecError> {
        let deadline = tokio::time::Instant::now() + SETTLE_READ_WAIT;
        let seen = loop {
            if let Some((v, ts)) = self.e.latest.good(&s.asset_id, &s.field)
                && ts >= started
            {
                break Some(v);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let key = point_key(&s.asset_id, &s.field);
        match seen {
            Some(v) if (v - s.value).abs() <= 1e-6 * s.value.abs().max(1.0) => {
                let current = self.e.store.point(&key)?;
                self.record_applied(
                    &c.command_id,
                    c.issued_seq,
                    &s,
                    v,
                    current,
                    "; settled after a restart: the device holds it",
                )
                .await
                .map(|_| ())
            }
            // the write did not land: act on the command as if new
            Some(_) => self.process(c.clone()).await,
            None => {
                self.finish(
                    &c.command_id,
                    AckReason::DeviceUnreachable,
                    format!(
                        "{key}: the agent restarted during the write and the device gave no reading within {} s; its value is unknown",
                        SETTLE_READ_WAIT.as_secs()
                    ),
                )
                .await
            }
        }
    }
}
