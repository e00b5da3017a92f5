//! Command and load storage (SQL): the lifecycle's rows and timeline.
//! Transitions are decided by [`crate::lifecycle`]; this module stores
//! them. Every transition writes a `command_events` row (when, who/what,
//! reason) in the same transaction as the state change.

use sqlx::{AnyConnection, Row};
use tankwatch_proto::v1;

use crate::Error;
use crate::db::{Db, now_ms};
use crate::lifecycle;

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct CommandRow {
    pub seq: i64,
    pub command_id: String,
    pub idempotency_key: Option<String>,
    pub request: String,
    pub parent_id: Option<String>,
    pub site_id: String,
    pub asset_id: String,
    pub kind: String,
    pub field: String,
    pub value: Option<f64>,
    pub duration_ms: i64,
    pub expires_at_ms: i64,
    pub payload: String,
    pub load_id: Option<String>,
    pub state: String,
    pub reason: String,
    pub detail: String,
    pub readback: Option<f64>,
    pub policy_version: String,
    pub warnings: String,
    pub created_by: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub cancel_requested_ms: Option<i64>,
}

const COLUMNS: &str = "seq, command_id, idempotency_key, request, parent_id, site_id, asset_id, kind, field, value, duration_ms, expires_at_ms, payload, load_id, state, reason, detail, readback, policy_version, warnings, created_by, created_ms, updated_ms, cancel_requested_ms";

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct EventRow {
    pub id: i64,
    pub command_id: String,
    pub at_ms: i64,
    pub state: String,
    pub reason: String,
    pub detail: String,
    pub actor: String,
}

/// A command to insert (state submitted).
#[derive(Debug, Clone, Default)]
pub struct NewCommand {
    pub command_id: String,
    pub idempotency_key: Option<String>,
    pub request: String,
    pub parent_id: Option<String>,
    pub site_id: String,
    pub asset_id: String,
    pub kind: String,
    pub field: String,
    pub value: Option<f64>,
    pub duration_ms: i64,
    pub expires_at_ms: i64,
    pub payload: String,
    pub load_id: Option<String>,
    pub policy_version: String,
    pub warnings: String,
    pub created_by: String,
}

/// What a submit did.
pub enum Submitted {
    Created(CommandRow),
    /// The idempotency key was used before: the earlier command.
    Existing(CommandRow),
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct LoadRow {
    pub load_id: String,
    pub reference: String,
    pub carrier: String,
    pub site_id: String,
    pub tanks: String,
    pub product: String,
    pub planned_volume_l: f64,
    pub eta_ms: i64,
    pub eta_source: String,
    pub status: String,
    pub delivered_volume_l: Option<f64>,
    pub delivery_start_ms: Option<i64>,
    pub delivery_end_ms: Option<i64>,
    pub last_command_id: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

const LOAD_COLUMNS: &str = "load_id, reference, carrier, site_id, tanks, product, planned_volume_l, eta_ms, eta_source, status, delivered_volume_l, delivery_start_ms, delivery_end_ms, last_command_id, created_ms, updated_ms";

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct LoadEventOfRow {
    pub load_id: String,
    pub id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
    pub actor: String,
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct LoadEventRow {
    pub id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
    pub actor: String,
}

/// The ETA as stored in a command's payload (JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct EtaPayload {
    pub tanks: Vec<String>,
    pub product: String,
    pub planned_volume_l: f64,
    pub eta_ms: i64,
    pub eta_source: String,
    pub cancelled: bool,
}

/// An optional number bound as text and cast in SQL: sqlx's `Any` driver
/// binds a NULL `f64` with a type PostgreSQL refuses for a float column,
/// which would fail the whole batch transaction (and block the agent's
/// telemetry behind it); a NULL text casts cleanly on both backends.
fn opt_f64(v: Option<f64>) -> Option<String> {
    v.filter(|x| x.is_finite()).map(|x| x.to_string())
}

/// Appends a timeline event.
#[allow(clippy::too_many_arguments)]
pub async fn insert_event(
    c: &mut AnyConnection,
    id: &str,
    at: i64,
    state: &str,
    reason: &str,
    detail: &str,
    actor: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO command_events (command_id, at_ms, state, reason, detail, actor) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(at)
    .bind(state)
    .bind(reason)
    .bind(detail)
    .bind(actor)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Moves a command to `state` (if it is in one of `from`), with its event.
/// Returns whether it moved.
#[allow(clippy::too_many_arguments)]
async fn transition(
    c: &mut AnyConnection,
    id: &str,
    from: &[&str],
    state: &str,
    reason: &str,
    detail: &str,
    actor: &str,
    now: i64,
) -> Result<bool, Error> {
    let list = from
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",");
    // `from` are lifecycle constants, never user input
    let sql = format!(
        "UPDATE commands SET state = $1, reason = $2, detail = $3, updated_ms = $4 WHERE command_id = $5 AND state IN ({list})"
    );
    let n = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(state)
        .bind(reason)
        .bind(detail)
        .bind(now)
        .bind(id)
        .execute(&mut *c)
        .await?
        .rows_affected();
    if n == 1 {
        insert_event(c, id, now, state, reason, detail, actor).await?;
    }
    Ok(n == 1)
}

/// Stores what an agent's batch carries besides readings: command acks
/// (moving the lifecycle) and delivery events (moving loads). Runs in the
/// batch's transaction; each entry is applied once, keyed by its log
/// position. An agent can only touch commands and loads of its own site.
pub async fn apply_agent_records(
    c: &mut AnyConnection,
    site: &str,
    log_id: i64,
    now: i64,
    batch: &v1::TelemetryBatch,
) -> Result<(), Error> {
    for a in &batch.command_acks {
        let cur: Option<String> =
            sqlx::query_scalar("SELECT state FROM commands WHERE command_id = $1 AND site_id = $2")
                .bind(&a.command_id)
                .bind(site)
                .fetch_optional(&mut *c)
                .await?;
        let Some(cur) = cur else {
            tracing::warn!(%site, command = %a.command_id, reason = %a.reason, "ack for a command this site does not have; ignored");
            continue;
        };
        let next = lifecycle::on_agent_ack(&cur, &a.reason);
        let state = next.unwrap_or(cur.as_str());
        let n = sqlx::query(
            "INSERT INTO command_events (command_id, at_ms, state, reason, detail, actor, site_id, log_id, log_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (site_id, log_id, log_seq) DO NOTHING",
        )
        .bind(&a.command_id)
        .bind(a.ts_ms)
        .bind(state)
        .bind(&a.reason)
        .bind(&a.detail)
        .bind(format!("agent {site}"))
        .bind(site)
        .bind(log_id)
        .bind(a.seq as i64)
        .execute(&mut *c)
        .await?
        .rows_affected();
        if n == 1
            && let Some(next) = next
        {
            // guarded by rank: a concurrent headend transition (e.g. the
            // dispatcher marking it sent) can only be overtaken, never undone
            let below = lifecycle::STATES
                .iter()
                .filter(|st| lifecycle::rank(st) < lifecycle::rank(next))
                .map(|st| format!("'{st}'"))
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "UPDATE commands SET state = $1, reason = $2, detail = $3,
                   readback = COALESCE(CAST($4 AS DOUBLE PRECISION), readback), updated_ms = $5
                 WHERE command_id = $6 AND state IN ({below})"
            );
            // `below` holds lifecycle constants only
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(next)
                .bind(&a.reason)
                .bind(&a.detail)
                .bind(opt_f64(a.readback))
                .bind(now)
                .bind(&a.command_id)
                .execute(&mut *c)
                .await?;
        }
    }
    for e in &batch.events {
        let Some(v1::event::Kind::Delivery(d)) = &e.kind else {
            continue;
        };
        let ended = d.phase == v1::delivery_event::Phase::Ended as i32;
        let n = sqlx::query(
            "INSERT INTO delivery_events (site_id, log_id, seq, phase, load_id, tank, start_ms, end_ms, start_volume_l, end_volume_l, delivered_volume_l, ingested_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (site_id, log_id, seq) DO NOTHING",
        )
        .bind(site)
        .bind(log_id)
        .bind(e.seq as i64)
        .bind(if ended { "ended" } else { "started" })
        .bind(&d.load_ref)
        .bind(&d.tank)
        .bind(d.start_ms)
        .bind(d.end_ms)
        .bind(d.start_volume_l)
        .bind(d.end_volume_l)
        .bind(d.delivered_volume_l)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected();
        if n == 0 || d.load_ref.is_empty() {
            continue;
        }
        let (status, detail) = if ended {
            (
                "delivered",
                format!(
                    "{:.0} L delivered into {} ({:.0} L -> {:.0} L)",
                    d.delivered_volume_l, d.tank, d.start_volume_l, d.end_volume_l
                ),
            )
        } else {
            (
                "delivering",
                format!(
                    "delivery started into {} at {:.0} L",
                    d.tank, d.start_volume_l
                ),
            )
        };
        let moved = sqlx::query(
            "UPDATE loads SET status = $1, delivery_start_ms = $2,
               delivery_end_ms = CASE WHEN $3 > 0 THEN $3 ELSE delivery_end_ms END,
               delivered_volume_l = CASE WHEN $3 > 0 THEN $4 ELSE delivered_volume_l END, updated_ms = $5
             WHERE load_id = $6 AND site_id = $7 AND status <> 'cancelled'",
        )
        .bind(status)
        .bind(d.start_ms)
        .bind(d.end_ms)
        .bind(d.delivered_volume_l)
        .bind(now)
        .bind(&d.load_ref)
        .bind(site)
        .execute(&mut *c)
        .await?
        .rows_affected();
        if moved == 1 {
            insert_load_event(
                c,
                &d.load_ref,
                e.ts_ms,
                status,
                &detail,
                &format!("agent {site}"),
            )
            .await?;
        }
    }
    Ok(())
}

/// A load change written with its ETA command.
pub enum LoadWrite<'a> {
    Insert {
        load: &'a LoadRow,
        actor: &'a str,
    },
    Update {
        load: &'a LoadRow,
        what: &'a str,
        actor: &'a str,
    },
}

impl LoadWrite<'_> {
    fn row(&self) -> &LoadRow {
        match self {
            LoadWrite::Insert { load, .. } | LoadWrite::Update { load, .. } => load,
        }
    }
}

async fn write_load(c: &mut AnyConnection, w: &LoadWrite<'_>) -> Result<(), Error> {
    match w {
        LoadWrite::Insert { load: l, actor } => {
            sqlx::query(
                "INSERT INTO loads (load_id, reference, carrier, site_id, tanks, product, planned_volume_l, eta_ms, eta_source, status, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
            )
            .bind(&l.load_id)
            .bind(&l.reference)
            .bind(&l.carrier)
            .bind(&l.site_id)
            .bind(&l.tanks)
            .bind(&l.product)
            .bind(l.planned_volume_l)
            .bind(l.eta_ms)
            .bind(&l.eta_source)
            .bind(&l.status)
            .bind(l.created_ms)
            .execute(&mut *c)
            .await?;
            let what = format!("ETA {} (source {})", l.eta_ms, l.eta_source);
            insert_load_event(c, &l.load_id, l.created_ms, "created", &what, actor).await
        }
        LoadWrite::Update {
            load: l,
            what,
            actor,
        } => {
            sqlx::query(
                "UPDATE loads SET planned_volume_l = $1, eta_ms = $2, eta_source = $3, status = $4, updated_ms = $5 WHERE load_id = $6",
            )
            .bind(l.planned_volume_l)
            .bind(l.eta_ms)
            .bind(&l.eta_source)
            .bind(&l.status)
            .bind(l.updated_ms)
            .bind(&l.load_id)
            .execute(&mut *c)
            .await?;
            insert_load_event(c, &l.load_id, l.updated_ms, "updated", what, actor).await
        }
    }
}

async fn insert_load_event(
    c: &mut AnyConnection,
    load: &str,
    at: i64,
    kind: &str,
    detail: &str,
    actor: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO load_events (load_id, at_ms, kind, detail, actor) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(load)
    .bind(at)
    .bind(kind)
    .bind(detail)
    .bind(actor)
    .execute(&mut *c)
    .await?;
    Ok(())
}

impl Db {
    /// Inserts commands (a command, or a split parent and its children) in
    /// one transaction, unless the first one's idempotency key was used
    /// before. An older command for the same point (or load) that was not
    /// sent yet is superseded at once: it will never be sent.
    pub async fn submit_commands(&self, cmds: &[NewCommand]) -> Result<Submitted, Error> {
        self.submit_commands_with(cmds, None).await
    }

    /// [`Db::submit_commands`], writing a load change (and the load's last
    /// command) in the same transaction: one commit for `POST /loads`.
    pub async fn submit_commands_with(
        &self,
        cmds: &[NewCommand],
        load: Option<LoadWrite<'_>>,
    ) -> Result<Submitted, Error> {
        let Some(first) = cmds.first() else {
            return Err(Error::Config("no command to submit".into()));
        };
        if let Some(key) = &first.idempotency_key
            && let Some(existing) = self.command_by_key(key).await?
        {
            return Ok(Submitted::Existing(existing));
        }
        let now = now_ms();
        let (_w, mut tx) = self.begin_write().await?;
        if let Some(l) = &load {
            write_load(&mut tx, l).await?;
        }
        for c in cmds {
            let r = sqlx::query(
                "INSERT INTO commands (command_id, idempotency_key, request, parent_id, site_id, asset_id, kind, field, value, duration_ms,
                   expires_at_ms, payload, load_id, state, reason, detail, readback, policy_version, warnings, created_by, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CAST($9 AS DOUBLE PRECISION), $10, $11, $12, $13, 'submitted', '', '', NULL, $14, $15, $16, $17, $17)",
            )
            .bind(&c.command_id)
            .bind(&c.idempotency_key)
            .bind(&c.request)
            .bind(&c.parent_id)
            .bind(&c.site_id)
            .bind(&c.asset_id)
            .bind(&c.kind)
            .bind(&c.field)
            .bind(opt_f64(c.value))
            .bind(c.duration_ms)
            .bind(c.expires_at_ms)
            .bind(&c.payload)
            .bind(&c.load_id)
            .bind(&c.policy_version)
            .bind(&c.warnings)
            .bind(&c.created_by)
            .bind(now)
            .execute(&mut *tx)
            .await;
            if let Err(e) = r {
                // two POSTs with one key at the same moment: the other won
                if let Some(key) = &first.idempotency_key {
                    drop(tx);
                    if let Some(existing) = self.command_by_key(key).await? {
                        return Ok(Submitted::Existing(existing));
                    }
                }
                return Err(e.into());
            }
            insert_event(
                &mut tx,
                &c.command_id,
                now,
                "submitted",
                "submitted",
                "",
                &c.created_by,
            )
            .await?;
            if c.kind == "split" {
                continue;
            }
            let older: Vec<String> = sqlx::query_scalar(
                "SELECT command_id FROM commands WHERE site_id = $1 AND kind = $2 AND state = 'submitted' AND command_id <> $3
                   AND ((kind = 'setpoint' AND asset_id = $4 AND field = $5) OR (kind = 'eta' AND load_id = $6))",
            )
            .bind(&c.site_id)
            .bind(&c.kind)
            .bind(&c.command_id)
            .bind(&c.asset_id)
            .bind(&c.field)
            .bind(&c.load_id)
            .fetch_all(&mut *tx)
            .await?;
            for o in older {
                transition(
                    &mut tx,
                    &o,
                    &["submitted"],
                    "rejected",
                    "superseded",
                    &format!("superseded by {} before it was sent", c.command_id),
                    "headend",
                    now,
                )
                .await?;
            }
        }
        if let Some(l) = &load {
            sqlx::query("UPDATE loads SET last_command_id = $1 WHERE load_id = $2")
                .bind(&first.command_id)
                .bind(&l.row().load_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let row = self
            .command(&first.command_id)
            .await?
            .ok_or_else(|| Error::Db("a command vanished after its insert".into()))?;
        Ok(Submitted::Created(row))
    }

    async fn command_by_key(&self, key: &str) -> Result<Option<CommandRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE idempotency_key = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn command(&self, id: &str) -> Result<Option<CommandRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE command_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn children(&self, parent: &str) -> Result<Vec<CommandRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE parent_id = $1 ORDER BY seq");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(parent)
            .fetch_all(self.pool())
            .await?)
    }

    pub async fn command_events(&self, id: &str) -> Result<Vec<EventRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, command_id, at_ms, state, reason, detail, actor FROM command_events WHERE command_id = $1 ORDER BY at_ms, id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Newest first; `site` and `state` filter when given.
    pub async fn list_commands(
        &self,
        site: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CommandRow>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commands WHERE ($1 = '' OR site_id = $1) AND ($2 = '' OR state = $2) ORDER BY seq DESC LIMIT $3"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(site.unwrap_or(""))
            .bind(state.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// Commands to (re)send to a site's agent, oldest first: not yet
    /// acknowledged, or with a cancel to deliver.
    pub async fn dispatchable(&self, site: &str, limit: i64) -> Result<Vec<CommandRow>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commands WHERE site_id = $1 AND kind <> 'split'
               AND (state IN ('submitted', 'sent') OR (cancel_requested_ms IS NOT NULL AND state IN ('acked', 'active')))
             ORDER BY seq LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// Records a delivery attempt: submitted -> sent, or a redelivery event.
    pub async fn mark_sent(&self, id: &str, actor: &str, what: &str) -> Result<(), Error> {
        let now = now_ms();
        let (_w, mut c) = self.begin_write().await?;
        if !transition(&mut c, id, &["submitted"], "sent", what, "", actor, now).await? {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM commands WHERE command_id = $1")
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await?;
            insert_event(
                &mut c,
                id,
                now,
                state.as_deref().unwrap_or("sent"),
                what,
                "",
                actor,
            )
            .await?;
        }
        c.commit().await?;
        Ok(())
    }

    /// Commands never sent whose expiry passed: expired by the headend
    /// (sent ones wait for the agent's verdict). Returns their ids.
    pub async fn expire_unsent(&self, now: i64) -> Result<Vec<String>, Error> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT command_id FROM commands WHERE state = 'submitted' AND kind <> 'split' AND expires_at_ms < $1 LIMIT 1000",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        let mut done = Vec::new();
        for id in ids {
            let (_w, mut tx) = self.begin_write().await?;
            if transition(
                &mut tx,
                &id,
                &["submitted"],
                "expired",
                "expired",
                "its expiry passed before it could be sent (agent offline); never applied",
                "headend",
                now,
            )
            .await?
            {
                done.push(id);
            }
            tx.commit().await?;
        }
        Ok(done)
    }

    /// Cancels a command: an unsent one is rejected at once; a sent, acked
    /// or active one gets a cancel delivered to its agent. Returns false
    /// when it had already ended.
    pub async fn request_cancel(&self, id: &str, actor: &str) -> Result<bool, Error> {
        let now = now_ms();
        let (_w, mut tx) = self.begin_write().await?;
        let ok = if transition(
            &mut tx,
            id,
            &["submitted"],
            "rejected",
            "cancelled",
            "cancelled before it was sent",
            actor,
            now,
        )
        .await?
        {
            true
        } else {
            let n = sqlx::query(
                "UPDATE commands SET cancel_requested_ms = $1, updated_ms = $1 WHERE command_id = $2
                   AND state IN ('sent', 'acked', 'active') AND cancel_requested_ms IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                let state: String =
                    sqlx::query_scalar("SELECT state FROM commands WHERE command_id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                insert_event(&mut tx, id, now, &state, "cancel_requested", "", actor).await?;
            }
            n == 1
        };
        tx.commit().await?;
        Ok(ok)
    }

    /// Writable points of the assets of a site: (asset, capacity, writable JSON).
    pub async fn writable_points(&self, site: &str) -> Result<Vec<(String, f64, String)>, Error> {
        let rows = sqlx::query(
            "SELECT asset_id, capacity, writable FROM assets WHERE site_id = $1 ORDER BY asset_id",
        )
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// Sites that have an asset `asset`.
    pub async fn sites_with_asset(&self, asset: &str) -> Result<Vec<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT site_id FROM assets WHERE asset_id = $1 ORDER BY site_id")
                .bind(asset)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Newest good reading time of any field of an asset (Unix ms), if any.
    pub async fn asset_last_good_ms(&self, site: &str, asset: &str) -> Result<Option<i64>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(good_ts_ms) FROM latest_values WHERE site_id = $1 AND asset_id = $2 AND quality = 'good'",
        )
        .bind(site)
        .bind(asset)
        .fetch_one(self.pool())
        .await?)
    }

    // ------------------------------------------------------------ loads

    pub async fn load(&self, id: &str) -> Result<Option<LoadRow>, Error> {
        let sql = format!("SELECT {LOAD_COLUMNS} FROM loads WHERE load_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn loads(&self, site: Option<&str>, limit: i64) -> Result<Vec<LoadRow>, Error> {
        let sql = format!(
            "SELECT {LOAD_COLUMNS} FROM loads WHERE ($1 = '' OR site_id = $1) ORDER BY eta_ms LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(site.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// The events of every load `loads(site, limit)` returns, by load, in
    /// one query (not one per load).
    pub async fn events_of_loads(
        &self,
        site: Option<&str>,
        limit: i64,
    ) -> Result<std::collections::HashMap<String, Vec<LoadEventRow>>, Error> {
        let rows: Vec<LoadEventOfRow> = sqlx::query_as(
            "SELECT load_id, id, at_ms, kind, detail, actor FROM load_events
             WHERE load_id IN (SELECT load_id FROM loads WHERE ($1 = '' OR site_id = $1) ORDER BY eta_ms LIMIT $2)
             ORDER BY id",
        )
        .bind(site.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut by_load: std::collections::HashMap<String, Vec<LoadEventRow>> =
            std::collections::HashMap::new();
        for r in rows {
            by_load.entry(r.load_id).or_default().push(LoadEventRow {
                id: r.id,
                at_ms: r.at_ms,
                kind: r.kind,
                detail: r.detail,
                actor: r.actor,
            });
        }
        Ok(by_load)
    }

    pub async fn load_events(&self, id: &str) -> Result<Vec<LoadEventRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, at_ms, kind, detail, actor FROM load_events WHERE load_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?)
    }
}
