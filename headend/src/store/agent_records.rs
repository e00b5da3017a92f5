//! What an agent's batch carries besides readings: command acks (moving
//! the commands aggregate) and delivery events (moving loads), stored in
//! one transaction. Each entry is applied once, keyed by its log position,
//! and an agent can only touch commands and loads of its own site.

use sqlx::AnyConnection;
use tankwatch_proto::v1;

use crate::Error;
use crate::domain::SiteId;
use crate::domain::deliveries::DeliveryPhase;
use crate::domain::{
    Actor, CommandKind, CommandState, DeliverySource, LoadEventKind, LoadStatus, Reason, lifecycle,
};
use crate::store::commands::{advance, insert_event};
use crate::store::loads::insert_load_event;

/// Applies a batch's acks and delivery events. An ack with a reason this
/// headend does not know is refused (logged with its text, never read as
/// some default) and the rest of the batch goes on.
pub async fn apply(
    c: &mut AnyConnection,
    site: &SiteId,
    log_id: i64,
    now: i64,
    batch: &v1::TelemetryBatch,
) -> Result<(), Error> {
    let agent = Actor::agent(site);
    // a local command's record comes before its acks (same or earlier batch)
    for e in &batch.events {
        if let Some(v1::event::Kind::LocalCommand(l)) = &e.kind {
            local_command(c, site, now, e, l).await?;
        }
    }
    for a in &batch.command_acks {
        let (reason, timeline) = match a.reason_code().map(|r| (r, Reason::of_ack(r))) {
            Ok((r, Some(t))) => (r, t),
            Ok((_, None)) => continue, // unreachable: reason_code refuses Unspecified
            Err(e) => {
                tracing::warn!(%site, command = %a.command_id, error = %e, detail = %a.detail,
                    "ack refused: its reason is unknown to this headend; the command does not move");
                continue;
            }
        };
        let cur: Option<(CommandState, Option<i64>)> = sqlx::query_as(
            "SELECT state, cancel_requested_ms FROM commands WHERE command_id = $1 AND site_id = $2",
        )
        .bind(&a.command_id)
        .bind(site)
        .fetch_optional(&mut *c)
        .await?;
        let Some((cur, cancel_requested)) = cur else {
            tracing::warn!(%site, command = %a.command_id, reason = reason.as_text(), "ack for a command this site does not have; ignored");
            continue;
        };
        let next = lifecycle::on_agent_ack(cur, reason, cancel_requested.is_some());
        let n = sqlx::query(
            "INSERT INTO command_events (command_id, at_ms, state, reason, detail, actor, site_id, log_id, log_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (site_id, log_id, log_seq) DO NOTHING",
        )
        .bind(&a.command_id)
        .bind(a.ts_ms)
        .bind(next.unwrap_or(cur))
        .bind(timeline)
        .bind(&a.detail)
        .bind(&agent)
        .bind(site)
        .bind(log_id)
        .bind(a.seq as i64)
        .execute(&mut *c)
        .await?
        .rows_affected();
        if n == 1
            && let Some(next) = next
        {
            advance(c, &a.command_id, next, timeline, &a.detail, a.readback, now).await?;
        }
    }
    for e in &batch.events {
        let Some(v1::event::Kind::Delivery(d)) = &e.kind else {
            continue;
        };
        delivery(c, site, log_id, now, e, d, &agent).await?;
    }
    Ok(())
}

/// Longest text of a local command the headend stores (ids, user, client).
const LOCAL_TEXT_MAX: usize = 200;

/// Records a setpoint written at the site (an OPC UA client) as a command
/// of that site with its own lifecycle: it starts `acked` (the agent had it
/// before anyone else) and its acks move it like any command. Written once
/// (the command id is unique); a record this headend cannot read is
/// refused with a warning, never stored half-understood.
async fn local_command(
    c: &mut AnyConnection,
    site: &SiteId,
    now: i64,
    e: &v1::Event,
    l: &v1::LocalCommand,
) -> Result<(), Error> {
    let refuse = |why: &str| {
        tracing::warn!(%site, command = %l.command_id, origin = %l.origin, why,
            "local command record refused; its acks will be ignored");
        Ok(())
    };
    if l.origin != "opcua" {
        return refuse("origin unknown to this headend (known: opcua)");
    }
    let Some(s) = &l.setpoint else {
        return refuse("no setpoint");
    };
    let long = [&l.command_id, &l.user, &l.client, &s.asset_id, &s.field]
        .iter()
        .any(|t| t.chars().count() > LOCAL_TEXT_MAX);
    if l.command_id.is_empty() || l.user.is_empty() || long {
        return refuse("empty or over-long command id, user, client, asset or field");
    }
    if !s.value.is_finite() {
        return refuse("value is not a finite number");
    }
    let actor = Actor::OpcUaUser {
        user: l.user.clone(),
        site: site.to_string(),
    };
    let request = serde_json::json!({
        "origin": l.origin, "user": l.user, "client": l.client,
        "asset_id": s.asset_id, "field": s.field, "value": s.value,
        "issued_seq": l.issued_seq,
    })
    .to_string();
    let detail = format!(
        "written at the site by OPC UA user {} ({})",
        l.user,
        if l.client.is_empty() {
            "client unknown"
        } else {
            &l.client
        }
    );
    let n = sqlx::query(
        "INSERT INTO commands (command_id, idempotency_key, request, parent_id, site_id, asset_id, kind, field, value, duration_ms,
           expires_at_ms, payload, load_id, state, reason, detail, readback, policy_version, warnings, created_by, created_ms, updated_ms)
         VALUES ($1, NULL, $2, NULL, $3, $4, $5, $6, CAST($7 AS DOUBLE PRECISION), 0, 0, '{}', NULL, $8, $9, $10, NULL, '', '[]', $11, $12, $13)
         ON CONFLICT (command_id) DO NOTHING",
    )
    .bind(&l.command_id)
    .bind(&request)
    .bind(site)
    .bind(&s.asset_id)
    .bind(CommandKind::Setpoint)
    .bind(&s.field)
    .bind(s.value)
    .bind(CommandState::Acked)
    .bind(Reason::Received)
    .bind(&detail)
    .bind(&actor)
    .bind(e.ts_ms)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if n == 1 {
        insert_event(
            c,
            &l.command_id,
            e.ts_ms,
            CommandState::Acked,
            Reason::Received,
            &detail,
            &actor,
        )
        .await?;
        // the site's write joins the audit trail with its site actor, once
        crate::store::audit::append(
            c,
            &crate::store::audit::NewEntry {
                at_ms: crate::domain::UnixMs::from_ms(now),
                actor: actor.to_string(),
                role: None,
                action: "commands.local_setpoint".into(),
                target: l.command_id.clone(),
                outcome: crate::domain::AuditOutcome::Ok,
                status: 0,
                summary: request.clone(),
                client: l.client.clone(),
                request_id: format!("site {site}"),
                site: Some(site.to_string()),
            },
        )
        .await?;
    }
    Ok(())
}

async fn delivery(
    c: &mut AnyConnection,
    site: &SiteId,
    log_id: i64,
    now: i64,
    e: &v1::Event,
    d: &v1::DeliveryEvent,
    agent: &Actor,
) -> Result<(), Error> {
    let ended = d.phase == v1::delivery_event::Phase::Ended as i32;
    use v1::delivery_event::Source;
    let source = match Source::try_from(d.source) {
        // agents before the gauge source had only the detector
        Ok(Source::Unspecified | Source::Detector) => DeliverySource::Detector,
        Ok(Source::Gauge) => DeliverySource::Gauge,
        Err(_) => {
            tracing::warn!(
                %site,
                source = d.source,
                "delivery event with a source this headend does not know; not stored"
            );
            return Ok(());
        }
    };
    let n = sqlx::query(
        "INSERT INTO delivery_events (site_id, log_id, seq, phase, load_id, tank, start_ms, end_ms, start_volume_l, end_volume_l, delivered_volume_l, ingested_ms, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (site_id, log_id, seq) DO NOTHING",
    )
    .bind(site)
    .bind(log_id)
    .bind(e.seq as i64)
    .bind(if ended {
        DeliveryPhase::Ended
    } else {
        DeliveryPhase::Started
    })
    .bind(&d.load_ref)
    .bind(&d.tank)
    .bind(d.start_ms)
    .bind(d.end_ms)
    .bind(d.start_volume_l)
    .bind(d.end_volume_l)
    .bind(d.delivered_volume_l)
    .bind(now)
    .bind(source)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if n == 0 || d.load_ref.is_empty() {
        return Ok(());
    }
    let (status, kind, detail) = if ended {
        (
            LoadStatus::Delivered,
            LoadEventKind::Delivered,
            format!(
                "{:.0} L delivered into {} ({:.0} L -> {:.0} L; {})",
                d.delivered_volume_l,
                d.tank,
                d.start_volume_l,
                d.end_volume_l,
                match source {
                    DeliverySource::Gauge => "the tank gauge's record",
                    DeliverySource::Detector => "the agent's volume-rise detector",
                }
            ),
        )
    } else {
        (
            LoadStatus::Delivering,
            LoadEventKind::Delivering,
            format!(
                "delivery started into {} at {:.0} L",
                d.tank, d.start_volume_l
            ),
        )
    };
    let moved = sqlx::query(
        "UPDATE loads SET status = $1, delivery_start_ms = $2,
           delivery_end_ms = CASE WHEN $3 > 0 THEN $3 ELSE delivery_end_ms END,
           delivered_volume_l = CASE WHEN $3 > 0 THEN $4 ELSE delivered_volume_l END, updated_ms = $5,
           delivery_source = CASE WHEN $3 > 0 THEN $8 ELSE delivery_source END
         WHERE load_id = $6 AND site_id = $7 AND status <> 'cancelled'
           AND (COALESCE(delivery_source, '') <> 'gauge' OR $8 = 'gauge')",
    )
    .bind(status)
    .bind(d.start_ms)
    .bind(d.end_ms)
    .bind(d.delivered_volume_l)
    .bind(now)
    .bind(&d.load_ref)
    .bind(site)
    .bind(source)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if moved == 1 {
        insert_load_event(c, &d.load_ref, e.ts_ms, kind, &detail, agent).await?;
    }
    Ok(())
}
