//! The one path by which a setpoint reaches a device, whoever asked for
//! it: a headend command ([`Running::handle`]) or a local write from an
//! OPC UA client of the agent's own server ([`Running::local_write`]).
//! Both run in the executor's task, one at a time, on the same per-point
//! state in `state.sqlite`: the same limits, interlocks and ramp (from the
//! last applied value, whoever applied it), the same supersession by
//! `issued_seq`, the same write and read-back, the same durable record
//! (every answer is a log entry), and the same revert when a duration
//! ends. A write that bypassed this would silently break ramp limits and
//! supersession.

use std::time::Duration;

use adapter_api::{WriteOutcome, WriteRequest, now_ms};
use tankwatch_proto::v1::{self, AckReason};
use tokio::sync::oneshot;

use super::{ExecError, REVERT_RETRY, Running, WRITE_TIMEOUT, ack, point_key};
use crate::limits::{Facts, SetpointLimits};
use crate::store::{Note, PointState};

impl Running {
    fn limits(&self, asset: &str, field: &str) -> Option<&SetpointLimits> {
        self.e
            .cfg
            .setpoints
            .iter()
            .find(|l| l.asset == asset && l.field == field)
    }

    /// Writes through the device's adapter and waits for its read-back.
    async fn write(&self, asset: &str, field: &str, value: f64) -> WriteOutcome {
        let Some(tx) = self
            .e
            .cfg
            .device_of_writable(asset, field)
            .and_then(|d| self.e.writes.get(d))
        else {
            return WriteOutcome::UnknownPoint;
        };
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest {
            asset_id: asset.to_string(),
            field: field.to_string(),
            value,
            reply,
        };
        self.e.metrics.device_writes.inc();
        match tokio::time::timeout(WRITE_TIMEOUT, async {
            tx.send(req).await.ok()?;
            rx.await.ok()
        })
        .await
        {
            Ok(Some(o)) => o,
            Ok(None) => WriteOutcome::Unreachable("the device adapter has stopped".into()),
            Err(_) => {
                WriteOutcome::Unreachable(format!("no answer within {} s", WRITE_TIMEOUT.as_secs()))
            }
        }
    }

    /// Ends a setpoint command with a refusal (state done) and says so.
    async fn refuse(
        &self,
        id: &str,
        reason: AckReason,
        detail: String,
    ) -> Result<Outcome, ExecError> {
        self.finish(id, reason, detail.clone()).await?;
        Ok(Outcome {
            reason,
            detail,
            readback: None,
        })
    }

    /// Applies a setpoint (already recorded as seen): known point, default
    /// for a duration, supersession, limits, then the write and read-back.
    pub(super) async fn setpoint(
        &mut self,
        id: &str,
        seq: i64,
        s: v1::Setpoint,
    ) -> Result<Outcome, ExecError> {
        let key = point_key(&s.asset_id, &s.field);
        let Some(limits) = self.limits(&s.asset_id, &s.field).cloned() else {
            return self
                .refuse(
                    id,
                    AckReason::RejectedInvalid,
                    format!("{key} has no `setpoints:` entry in this agent's configuration, so it cannot be written"),
                )
                .await;
        };
        if s.duration_ms < 0 {
            return self
                .refuse(
                    id,
                    AckReason::RejectedInvalid,
                    "duration_ms is negative".into(),
                )
                .await;
        }
        if s.duration_ms > 0 && limits.default.is_none() {
            return self
                .refuse(
                    id,
                    AckReason::RejectedInvalid,
                    format!(
                        "{key} has no configured `default` to revert to when the duration ends"
                    ),
                )
                .await;
        }
        let current = self.e.store.point(&key)?;
        if let Some(cur) = current.as_ref().filter(|c| c.issued_seq > seq) {
            return self
                .refuse(
                    id,
                    AckReason::Superseded,
                    format!(
                        "a newer command ({}) was already applied to {key}",
                        cur.command_id.as_deref().unwrap_or("since reverted")
                    ),
                )
                .await;
        }
        let checked = {
            let latest = self.e.latest.clone();
            let value_of = move |a: &str, f: &str| latest.good(a, f).map(|(v, _)| v);
            limits.check(
                s.value,
                &Facts {
                    last_applied: current.as_ref().map(|c| (c.value, c.applied_ms)),
                    now_ms: now_ms(),
                    value_of: &value_of,
                },
            )
        };
        if let Err(r) = checked {
            return self.refuse(id, r.code, r.detail).await;
        }
        // write-ahead: a crash from here on is settled at the next start
        // by reading the device (see settle.rs)
        self.e.store.set_command_state(id, "writing", now_ms())?;
        match self.write(&s.asset_id, &s.field, s.value).await {
            WriteOutcome::Applied { readback } => {
                self.record_applied(id, seq, &s, readback, current, "")
                    .await
            }
            other => {
                let (reason, detail) = outcome_reason(&other);
                self.refuse(id, reason, format!("{key}: {detail}")).await
            }
        }
    }

    /// Records a setpoint the device holds (read back `readback`): in
    /// force on its point, its `applied` ack, and the end of the command it
    /// replaced there, in one transaction. `how` is added to the detail
    /// (settling after a restart says so).
    pub(super) async fn record_applied(
        &mut self,
        id: &str,
        seq: i64,
        s: &v1::Setpoint,
        readback: f64,
        current: Option<PointState>,
        how: &str,
    ) -> Result<Outcome, ExecError> {
        let key = point_key(&s.asset_id, &s.field);
        let applied = now_ms();
        let ends = (s.duration_ms > 0).then(|| applied + s.duration_ms);
        let detail = match ends {
            Some(_) => format!(
                "{key} = {} (read back {readback}) for {} ms{how}",
                s.value, s.duration_ms
            ),
            None => format!("{key} = {} (read back {readback}){how}", s.value),
        };
        // active since the read-back confirmed it (the revert is timed from here)
        let mut a = ack(id, AckReason::Applied, detail.clone(), Some(readback));
        a.ts_ms = applied;
        let mut notes = vec![Note::Ack(a)];
        // the command it replaced on this point is over
        let prev = current.and_then(|c| c.command_id).filter(|p| p != id);
        if let Some(prev) = &prev {
            notes.push(Note::Ack(ack(
                prev,
                AckReason::Superseded,
                format!("by {id}"),
                None,
            )));
        }
        // a new setpoint is in force: a failing revert of the old one is moot
        if self.retry_at.remove(&key).is_some() {
            self.e
                .metrics
                .reverts_pending
                .set(self.retry_at.len() as i64);
        }
        let out = self.e.store.set_point(
            &PointState {
                point: key,
                command_id: Some(id.to_string()),
                issued_seq: seq,
                value: s.value,
                applied_ms: applied,
                ends_ms: ends,
            },
            applied,
            prev.as_deref(),
            &notes,
        )?;
        self.e.metrics.applied.inc();
        self.emit(out).await?;
        Ok(Outcome {
            reason: AckReason::Applied,
            detail,
            readback: Some(readback),
        })
    }

    /// A setpoint written at the site (an OPC UA client): recorded as a
    /// command of its own (a `LocalCommand` event in the log, then its
    /// acks), with the newest `issued_seq` seen here, and applied through
    /// [`Running::setpoint`] like any headend command.
    pub(super) async fn local_write(&mut self, w: LocalWrite) -> Result<(), ExecError> {
        let now = now_ms();
        let id = format!("local-{}-{now}-{:08x}", w.origin, fastrand::u32(..));
        let seq = self.e.store.newest_issued_seq()?;
        let setpoint = v1::Setpoint {
            asset_id: w.asset.clone(),
            field: w.field.clone(),
            value: w.value,
            duration_ms: 0,
        };
        tracing::info!(command = %id, origin = %w.origin, user = %w.user, client = %w.client,
            point = %point_key(&w.asset, &w.field), value = w.value, "local write");
        // stored as a command of its own (settled like one after a crash),
        // with its LocalCommand event in the outbox, in one transaction
        let body = prost::Message::encode_to_vec(&v1::Command {
            command_id: id.clone(),
            expires_at_ms: 0,
            issued_seq: seq,
            action: Some(v1::command::Action::Setpoint(setpoint.clone())),
            ..Default::default()
        });
        let event = v1::Event {
            ts_ms: now,
            seq: 0,
            kind: Some(v1::event::Kind::LocalCommand(v1::LocalCommand {
                command_id: id.clone(),
                origin: w.origin.clone(),
                user: w.user.clone(),
                client: w.client.clone(),
                issued_seq: seq,
                setpoint: Some(setpoint.clone()),
            })),
        };
        let out = self.e.store.insert_new(
            &id,
            seq,
            "setpoint",
            "received",
            0,
            now,
            Some(&body),
            &[Note::Event(event)],
        )?;
        self.e.metrics.received.inc();
        self.emit(out.unwrap_or_default()).await?;
        if let Some(why) = w.refused {
            // refused by the OPC UA server itself (role, channel, type, not
            // a setpoint): on record at the headend, never near a device
            let detail = format!("refused by the agent's OPC UA server: {why}");
            self.finish(&id, AckReason::RejectedInvalid, detail.clone())
                .await?;
            let _ = w.reply.send(Outcome {
                reason: AckReason::RejectedInvalid,
                detail,
                readback: None,
            });
            return Ok(());
        }
        let outcome = self.setpoint(&id, seq, setpoint).await?;
        // the writer may have given up waiting: the outcome is in the log anyway
        let _ = w.reply.send(outcome);
        Ok(())
    }

    /// Writes the point's default back (duration over, or cancelled).
    pub(super) async fn revert(&mut self, p: PointState, why: Revert) -> Result<(), ExecError> {
        let Some(id) = p.command_id.clone() else {
            return Ok(());
        };
        let Some((asset, field)) = p.point.split_once('.') else {
            return Ok(());
        };
        let (asset, field) = (asset.to_string(), field.to_string());
        let Some(default) = self.limits(&asset, &field).and_then(|l| l.default) else {
            // nothing to go back to: the value stays, the command is over
            let out = self.e.store.set_point(
                &PointState {
                    command_id: None,
                    ends_ms: None,
                    ..p.clone()
                },
                now_ms(),
                Some(&id),
                &[Note::Ack(ack(
                    &id,
                    AckReason::Completed,
                    format!(
                        "{}; {} has no default, value stays {}",
                        why.as_str(),
                        p.point,
                        p.value
                    ),
                    None,
                ))],
            )?;
            return self.emit(out).await;
        };
        match self.write(&asset, &field, default).await {
            WriteOutcome::Applied { readback } => {
                self.retry_at.remove(&p.point);
                self.e
                    .metrics
                    .reverts_pending
                    .set(self.retry_at.len() as i64);
                let now = now_ms();
                let what = why.as_str();
                let out = self.e.store.set_point(
                    &PointState {
                        command_id: None,
                        value: default,
                        applied_ms: now,
                        ends_ms: None,
                        ..p.clone()
                    },
                    now,
                    Some(&id),
                    &[Note::Ack(ack(
                        &id,
                        AckReason::Completed,
                        format!(
                            "{what}: {} reverted to default {default} (read back {readback})",
                            p.point
                        ),
                        Some(readback),
                    ))],
                )?;
                self.emit(out).await
            }
            other => {
                let (reason, detail) = outcome_reason(&other);
                tracing::warn!(command = %id, point = %p.point, reason = reason.as_text(), detail, "revert failed; retrying");
                self.retry_at
                    .insert(p.point.clone(), tokio::time::Instant::now() + REVERT_RETRY);
                self.e.metrics.revert_failures.inc();
                self.e
                    .metrics
                    .reverts_pending
                    .set(self.retry_at.len() as i64);
                if why == Revert::Cancelled {
                    // make the timer path retry it
                    self.e.store.set_point(
                        &PointState {
                            ends_ms: Some(now_ms()),
                            ..p
                        },
                        now_ms(),
                        None,
                        &[],
                    )?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn next_due(&self) -> Duration {
        let now = now_ms();
        let Ok(points) = self.e.store.timed_points() else {
            return Duration::from_secs(1);
        };
        points
            .iter()
            .filter_map(|p| {
                let end = p.ends_ms?;
                let mut d = Duration::from_millis((end - now).max(0) as u64);
                if let Some(at) = self.retry_at.get(&p.point) {
                    d = d.max(at.saturating_duration_since(tokio::time::Instant::now()));
                }
                Some(d)
            })
            .min()
            .unwrap_or(Duration::MAX)
    }

    pub(super) async fn revert_due(&mut self) -> Result<(), ExecError> {
        let now = now_ms();
        let t = tokio::time::Instant::now();
        for p in self.e.store.timed_points()? {
            if p.ends_ms.is_some_and(|e| e <= now)
                && self.retry_at.get(&p.point).is_none_or(|at| *at <= t)
            {
                self.revert(p, Revert::DurationEnded).await?;
            }
        }
        Ok(())
    }
}

/// A write asked for at the site, and where its outcome goes.
#[derive(Debug)]
pub struct LocalWrite {
    pub asset: String,
    pub field: String,
    pub value: f64,
    /// How it came ("opcua").
    pub origin: String,
    /// Who wrote it (the OPC UA user name).
    pub user: String,
    /// The client (its application URI), for the record.
    pub client: String,
    /// Refused by the OPC UA server before the executor (the status and
    /// why): recorded as a local command rejected with this detail.
    pub refused: Option<String>,
    pub reply: oneshot::Sender<Outcome>,
}

/// How a setpoint ended at the site: the reason of its last ack.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub reason: AckReason,
    pub detail: String,
    pub readback: Option<f64>,
}

/// Why a setpoint's default is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Revert {
    Cancelled,
    DurationEnded,
}

impl Revert {
    fn as_str(self) -> &'static str {
        match self {
            Revert::Cancelled => "cancelled",
            Revert::DurationEnded => "duration ended",
        }
    }
}

/// The ack reason of a failed write.
fn outcome_reason(o: &WriteOutcome) -> (AckReason, String) {
    match o {
        WriteOutcome::Applied { readback } => (AckReason::Applied, format!("read back {readback}")),
        WriteOutcome::UnknownPoint => (
            AckReason::RejectedInvalid,
            "no device has this writable point".into(),
        ),
        WriteOutcome::NotRepresentable(d) => (AckReason::RejectedOutOfRange, d.clone()),
        WriteOutcome::Unreachable(d) => (AckReason::DeviceUnreachable, d.clone()),
        WriteOutcome::Failed(d) => (AckReason::WriteFailed, d.clone()),
        WriteOutcome::ReadbackMismatch { wrote, read } => (
            AckReason::ReadbackMismatch,
            format!("wrote {wrote}, read back {read}"),
        ),
    }
}
