//! Command dispatch: from the `commands` table to connected agents.
//!
//! Each agent session runs a dispatcher next to its telemetry pump. It
//! sends, oldest first, every command of its site that the agent has not
//! acknowledged yet (`submitted` or `sent`) and every cancel not yet
//! carried out, then waits to be woken ([`crate::services::dispatch`]: a
//! change on this replica, another replica's note, or the replica's
//! safety net). It reads again after [`RETRY_AFTER`] when a read failed or
//! a full round may have left commands behind, at once when a full round
//! sent something.
//!
//! At-least-once: a new session resends everything still `sent` (the agent
//! may have received it before the old session died); the agent applies a
//! command id at most once. Write-ahead: a delivery is recorded (`sent`)
//! before the message goes out, in a transition that fails if the sweeper
//! expired or an operator cancelled the command meanwhile (then it is not
//! sent). A `sent` command the site never answers is expired by the
//! sweeper [`crate::store::commands::UNANSWERED_AFTER_MS`] after its expiry. Within one session a command is sent once.
//! Commands never sent whose expiry passes are expired here, by the
//! [`crate::jobs::sweep`] task, and never sent; sent ones get the agent's verdict.

use std::collections::HashSet;

use std::time::Duration;

use tankwatch_proto::v1::{self, HeadendMessage, headend_message::Msg as Out};
use tokio::sync::mpsc;
use tonic::Status;

use crate::domain::{Actor, CommandKind, CommandState, Reason};
use crate::services::Dispatcher;
use crate::store::Db;
use crate::store::commands::{CommandRow, EtaPayload};
use crate::wallclock::now_ms;

/// When a session reads again after a failed read, or after a full round
/// that sent nothing new (commands beyond it wait for acks).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most commands read per round (the rest follow in the next round).
const ROUND: i64 = 100;

impl Dispatcher {
    /// Runs a session's dispatcher until the outbound stream closes.
    pub async fn run(
        &self,
        db: Db,
        site: crate::domain::SiteId,
        peer: String,
        tx: mpsc::Sender<Result<HeadendMessage, Status>>,
        sent_total: prometheus_client::metrics::counter::Counter,
        state_lost: bool,
    ) {
        let notify = self.notify_of(&site);
        let actor = Actor::Headend {
            task: Some(format!("session from {peer}")),
        };
        if state_lost && !resume_active(&db, &site, &tx).await {
            return;
        }
        // what this session has sent (pruned to what is still pending)
        let mut sent: HashSet<String> = HashSet::new();
        loop {
            self.counted_query();
            // read again soon (not only when woken)?
            let mut again = None;
            match db.commands().dispatchable(&site, ROUND).await {
                Ok(rows) => {
                    let full = rows.len() as i64 >= ROUND;
                    let mut sent_new = false;
                    let pending: HashSet<String> = rows
                        .iter()
                        .flat_map(|r| [r.command_id.to_string(), cancel_id(&r.command_id)])
                        .collect();
                    sent.retain(|id| pending.contains(id));
                    let now = now_ms();
                    for r in rows {
                        let msg = if r.cancel_requested_ms.is_some() {
                            let id = cancel_id(&r.command_id);
                            if !sent.insert(id) {
                                continue;
                            }
                            cancel(&r)
                        } else {
                            if r.state == CommandState::Submitted && r.expires_at_ms.ms() < now {
                                continue; // the sweeper expires it; never sent
                            }
                            if !sent.insert(r.command_id.to_string()) {
                                continue;
                            }
                            match command(&r) {
                                Ok(m) => m,
                                // logged with its code where found; never
                                // sent (it expires unsent), not retried in
                                // this session
                                Err(e) => {
                                    tracing::error!(command = %r.command_id, error = %e, "a stored command does not parse; not sent");
                                    continue;
                                }
                            }
                        };
                        let what = if r.cancel_requested_ms.is_some() {
                            Reason::CancelSent
                        } else if r.state == CommandState::Sent {
                            Reason::Redelivered
                        } else {
                            Reason::Sent
                        };
                        // recorded before it goes out: a crash after this
                        // is a redelivery at the next session, never a
                        // command applied that the record says was not sent
                        match db.commands().mark_sent(&r.command_id, &actor, what).await {
                            Ok(true) => {}
                            Ok(false) => continue, // expired or cancelled meanwhile
                            Err(e) => {
                                tracing::warn!(command = %r.command_id, error = %e, "recording a delivery failed; not sent (retried)");
                                sent.remove(&cancel_id(&r.command_id));
                                sent.remove(r.command_id.as_str());
                                again = Some(RETRY_AFTER);
                                break;
                            }
                        }
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                        sent_total.inc();
                        sent_new = true;
                    }
                    if full && again.is_none() {
                        again = Some(if sent_new {
                            Duration::ZERO
                        } else {
                            RETRY_AFTER
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(%site, error = %e, "reading commands to dispatch failed; retried");
                    again = Some(RETRY_AFTER);
                }
            }
            match again {
                Some(d) => tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(d) => {}
                    _ = tx.closed() => return,
                },
                None => tokio::select! {
                    _ = notify.notified() => {}
                    _ = tx.closed() => return,
                },
            }
        }
    }
}

/// Sends the site's active setpoints again as `resume` commands (the agent
/// lost its command state); false when the stream closed.
async fn resume_active(
    db: &Db,
    site: &crate::domain::SiteId,
    tx: &mpsc::Sender<Result<HeadendMessage, Status>>,
) -> bool {
    let active = match db.commands().active_setpoints(site).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%site, error = %e, "reading the active setpoints to resume failed");
            return true;
        }
    };
    tracing::warn!(%site, count = active.len(), "the agent lost its command state; sending its active setpoints again");
    for (r, active_ms) in active {
        let mut msg = match command(&r) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(command = %r.command_id, error = %e, "a stored setpoint does not parse; not resumed");
                continue;
            }
        };
        if let Some(Out::Command(c)) = msg.msg.as_mut() {
            c.resume = true;
            c.resume_ends_ms = if r.duration_ms > 0 {
                active_ms + r.duration_ms
            } else {
                0
            };
        }
        if tx.send(Ok(msg)).await.is_err() {
            return false;
        }
    }
    true
}

fn cancel_id(id: &str) -> String {
    format!("cancel:{id}")
}

fn cancel(r: &CommandRow) -> HeadendMessage {
    HeadendMessage {
        msg: Some(Out::Command(v1::Command {
            command_id: cancel_id(&r.command_id),
            expires_at_ms: 0,
            issued_seq: r.seq,
            action: Some(v1::command::Action::Cancel(v1::Cancel {
                command_id: r.command_id.to_string(),
            })),
            ..Default::default()
        })),
    }
}

/// The wire form of a stored command; a payload that does not parse, or
/// a setpoint without its value, is an error (never sent as a default).
pub fn command(r: &CommandRow) -> Result<HeadendMessage, crate::Error> {
    let action = match r.kind {
        CommandKind::Eta => {
            let p: EtaPayload =
                crate::store::json::from_document("commands.payload", &r.command_id, &r.payload)?;
            v1::command::Action::Eta(v1::EtaAction {
                load_ref: r
                    .load_id
                    .as_ref()
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
                tanks: p.tanks,
                product: p.product,
                planned_volume_l: p.planned_volume_l,
                eta_ms: p.eta_ms.ms(),
                eta_source: p.eta_source.to_string(),
                cancelled: p.cancelled,
            })
        }
        CommandKind::Setpoint | CommandKind::Split => v1::command::Action::Setpoint(v1::Setpoint {
            asset_id: r.asset_id.clone(),
            field: r.field.clone(),
            value: r.value.ok_or_else(|| {
                crate::store::json::corrupt(
                    "commands.value",
                    &r.command_id,
                    "a setpoint without a value".into(),
                )
            })?,
            duration_ms: r.duration_ms,
        }),
    };
    Ok(HeadendMessage {
        msg: Some(Out::Command(v1::Command {
            command_id: r.command_id.to_string(),
            expires_at_ms: r.expires_at_ms.ms(),
            issued_seq: r.seq,
            action: Some(action),
            resume: false,
            resume_ends_ms: 0,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::json::{Doc, JsonText};
    use serde_json::json;

    fn row(kind: CommandKind, value: Option<f64>, payload: serde_json::Value) -> CommandRow {
        CommandRow {
            seq: 7,
            command_id: "cmd-1".parse().unwrap(),
            idempotency_key: None,
            request: "{}".into(),
            parent_id: None,
            site_id: "site-a".parse().unwrap(),
            asset_id: "tank-1".into(),
            kind,
            field: "pump_limit".into(),
            value,
            duration_ms: 0,
            expires_at_ms: 1.into(),
            payload: JsonText(Doc(payload)),
            load_id: Some("load-1".parse().unwrap()),
            state: CommandState::Submitted,
            reason: Reason::Submitted,
            detail: String::new(),
            readback: None,
            policy_version: String::new(),
            warnings: JsonText(Vec::new()),
            created_by: crate::domain::Actor::Headend { task: None },
            created_ms: 0.into(),
            updated_ms: 0.into(),
            cancel_requested_ms: None,
        }
    }

    #[test]
    fn a_setpoint_without_its_value_is_an_error_not_a_nan_on_the_wire() {
        let ok = command(&row(CommandKind::Setpoint, Some(42.0), json!({}))).unwrap();
        let Some(Out::Command(c)) = ok.msg else {
            panic!("not a command")
        };
        assert!(matches!(c.action, Some(v1::command::Action::Setpoint(s)) if s.value == 42.0));
        let e = command(&row(CommandKind::Setpoint, None, json!({}))).unwrap_err();
        assert!(
            matches!(&e, crate::Error::Corrupt { column: "commands.value", key, .. } if key == "cmd-1"),
            "{e}"
        );
    }

    #[test]
    fn an_eta_payload_that_is_not_one_is_an_error_not_eta_zero_with_no_tanks() {
        let good = json!({"tanks": ["tank-1"], "product": "diesel", "planned_volume_l": 5000.0,
            "eta_ms": 1_700_000_000_000_i64, "eta_source": "manual", "cancelled": false});
        let ok = command(&row(CommandKind::Eta, None, good)).unwrap();
        let Some(Out::Command(c)) = ok.msg else {
            panic!("not a command")
        };
        assert!(
            matches!(c.action, Some(v1::command::Action::Eta(e)) if e.eta_ms == 1_700_000_000_000 && e.tanks == ["tank-1"])
        );
        for bad in [
            json!({"eta_ms": "soon"}),
            json!([]),
            json!({"tanks": "tank-1"}),
        ] {
            let e = command(&row(CommandKind::Eta, None, bad.clone())).unwrap_err();
            assert!(
                matches!(
                    &e,
                    crate::Error::Corrupt {
                        column: "commands.payload",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
    }
}
