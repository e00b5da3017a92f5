//! The commands aggregate in SQL: rows, the timeline, and the stored
//! transitions. Which transition happens is decided by
//! [`crate::domain::lifecycle`]; this module stores it. Every transition
//! writes a `command_events` row (when, who/what, reason) in the same
//! transaction as the state change, and a split parent's state follows
//! its children's in that transaction too (so `?state=` filters see it).

use sqlx::AnyConnection;

use crate::Error;
use crate::domain::{
    Actor, CommandId, CommandKind, CommandState, LoadId, Reason, SiteId, UnixMs, lifecycle,
};
use crate::store::Db;
use crate::store::loads::{EtaGiven, LoadRow, LoadWrite, write_load};
use crate::wallclock::now_ms;

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct CommandRow {
    pub seq: i64,
    pub command_id: CommandId,
    pub idempotency_key: Option<String>,
    pub request: String,
    pub parent_id: Option<CommandId>,
    pub site_id: SiteId,
    pub asset_id: String,
    pub kind: CommandKind,
    pub field: String,
    pub value: Option<f64>,
    pub duration_ms: i64,
    pub expires_at_ms: UnixMs,
    pub payload: crate::store::json::Document,
    pub load_id: Option<LoadId>,
    pub state: CommandState,
    pub reason: Reason,
    pub detail: String,
    pub readback: Option<f64>,
    pub policy_version: String,
    pub warnings: crate::store::json::JsonText<Vec<String>>,
    pub created_by: Actor,
    pub created_ms: UnixMs,
    pub updated_ms: UnixMs,
    pub cancel_requested_ms: Option<UnixMs>,
}

const COLUMNS: &str = "seq, command_id, idempotency_key, request, parent_id, site_id, asset_id, kind, field, value, duration_ms, expires_at_ms, payload, load_id, state, reason, detail, readback, policy_version, warnings, created_by, created_ms, updated_ms, cancel_requested_ms";

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct EventRow {
    pub id: i64,
    pub command_id: String,
    pub at_ms: UnixMs,
    pub state: CommandState,
    pub reason: Reason,
    pub detail: String,
    pub actor: Actor,
}

/// A command to insert (state submitted).
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub command_id: CommandId,
    pub idempotency_key: Option<String>,
    pub request: String,
    pub parent_id: Option<CommandId>,
    pub site_id: SiteId,
    pub asset_id: String,
    pub kind: CommandKind,
    pub field: String,
    pub value: Option<f64>,
    pub duration_ms: i64,
    pub expires_at_ms: UnixMs,
    pub payload: String,
    pub load_id: Option<LoadId>,
    pub policy_version: String,
    pub warnings: String,
    pub created_by: Actor,
}

/// What a submit did.
pub enum Submitted {
    Created(CommandRow),
    /// The idempotency key was used before: the earlier command.
    Existing(CommandRow),
}

/// The ETA as stored in a command's payload (JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EtaPayload {
    pub tanks: Vec<String>,
    pub product: String,
    pub planned_volume_l: f64,
    pub eta_ms: crate::domain::UnixMs,
    pub eta_source: crate::domain::EtaSource,
    pub cancelled: bool,
}

/// An optional number bound as text and cast in SQL: sqlx's `Any` driver
/// binds a NULL `f64` with a type PostgreSQL refuses for a float column,
/// which would fail the whole batch transaction (and block the agent's
/// telemetry behind it); a NULL text casts cleanly on both backends.
pub(crate) fn opt_f64(v: Option<f64>) -> Option<String> {
    v.filter(|x| x.is_finite()).map(|x| x.to_string())
}

/// `'a','b'` for an `IN (...)` list of states (constants, never input).
/// A `sent` command the site has not answered this long after its expiry
/// is expired by the headend (ms; the agent remembers a command id as long).
pub const UNANSWERED_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

fn state_list(states: impl IntoIterator<Item = CommandState>) -> String {
    states
        .into_iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Appends a timeline event.
pub(crate) async fn insert_event(
    c: &mut AnyConnection,
    id: &str,
    at: i64,
    state: CommandState,
    reason: Reason,
    detail: &str,
    actor: &Actor,
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

/// One stored transition.
struct Move<'a> {
    from: &'a [CommandState],
    to: CommandState,
    reason: Reason,
    detail: &'a str,
    actor: &'a Actor,
}

/// Moves a command to `m.to` (if it is in one of `m.from`), with its
/// event and its split parent's state. Returns whether it moved.
async fn transition(c: &mut AnyConnection, id: &str, m: Move<'_>, now: i64) -> Result<bool, Error> {
    let sql = format!(
        "UPDATE commands SET state = $1, reason = $2, detail = $3, updated_ms = $4 WHERE command_id = $5 AND state IN ({})",
        state_list(m.from.iter().copied())
    );
    let n = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(m.to)
        .bind(m.reason)
        .bind(m.detail)
        .bind(now)
        .bind(id)
        .execute(&mut *c)
        .await?
        .rows_affected();
    if n == 1 {
        insert_event(c, id, now, m.to, m.reason, m.detail, m.actor).await?;
        refresh_parent_of(c, id, now).await?;
    }
    Ok(n == 1)
}

/// Sets a split parent's stored state from its children's, if `child`
/// has a parent ([`lifecycle::parent_state`]).
pub(crate) async fn refresh_parent_of(
    c: &mut AnyConnection,
    child: &str,
    now: i64,
) -> Result<(), Error> {
    let parent: Option<Option<String>> =
        sqlx::query_scalar("SELECT parent_id FROM commands WHERE command_id = $1")
            .bind(child)
            .fetch_optional(&mut *c)
            .await?;
    let Some(parent) = parent.flatten() else {
        return Ok(());
    };
    let states: Vec<CommandState> =
        sqlx::query_scalar("SELECT state FROM commands WHERE parent_id = $1")
            .bind(&parent)
            .fetch_all(&mut *c)
            .await?;
    sqlx::query(
        "UPDATE commands SET state = $1, updated_ms = $2 WHERE command_id = $3 AND state <> $1",
    )
    .bind(lifecycle::parent_state(&states))
    .bind(now)
    .bind(&parent)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Moves a command forward after an agent's ack (guarded by rank: a
/// concurrent headend transition, e.g. the dispatcher marking it sent,
/// can only be overtaken, never undone).
pub(crate) async fn advance(
    c: &mut AnyConnection,
    id: &str,
    next: CommandState,
    reason: Reason,
    detail: &str,
    readback: Option<f64>,
    now: i64,
) -> Result<(), Error> {
    let sql = format!(
        "UPDATE commands SET state = $1, reason = $2, detail = $3,
           readback = COALESCE(CAST($4 AS DOUBLE PRECISION), readback), updated_ms = $5
         WHERE command_id = $6 AND state IN ({})",
        state_list(next.below())
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(next)
        .bind(reason)
        .bind(detail)
        .bind(opt_f64(readback))
        .bind(now)
        .bind(id)
        .execute(&mut *c)
        .await?;
    refresh_parent_of(c, id, now).await
}

/// The commands aggregate: `db.commands()`.
#[derive(Clone, Copy)]
pub struct Commands<'a>(pub(crate) &'a Db);

impl Db {
    pub fn commands(&self) -> Commands<'_> {
        Commands(self)
    }
}

impl Commands<'_> {
    /// Several load changes, each with its ETA command, and ETAs kept only
    /// in the history, in one transaction (a CSV import: all or nothing).
    /// `key` is set on a new load as its import key.
    pub async fn submit_loads(
        &self,
        changes: &[(NewCommand, LoadWrite<'_>, Option<String>)],
        history: &[(LoadRow, EtaGiven, Actor)],
    ) -> Result<(), Error> {
        let now = now_ms();
        let (_w, mut tx) = self.0.begin_write().await?;
        for (cmd, change, key) in changes {
            write_load(&mut tx, change).await?;
            if let Err(e) = insert_command(&mut tx, cmd, now).await? {
                return Err(e.into());
            }
            sqlx::query("UPDATE loads SET last_command_id = $1, import_key = COALESCE($3, import_key) WHERE load_id = $2")
                .bind(&cmd.command_id)
                .bind(&change.row().load_id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        for (load, eta, actor) in history {
            crate::store::loads::note_eta_in(&mut tx, load, *eta, actor, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Inserts commands (a command, or a split parent and its children) in
    /// one transaction, unless the first one's idempotency key was used
    /// before. An older command for the same point (or load) that was not
    /// sent yet is superseded at once: it will never be sent. A load
    /// change (and the load's last command) is written in the same
    /// transaction: one commit for `POST /loads`.
    pub async fn submit(
        &self,
        cmds: &[NewCommand],
        load: Option<LoadWrite<'_>>,
    ) -> Result<Submitted, Error> {
        let Some(first) = cmds.first() else {
            return Err(Error::Config("no command to submit".into()));
        };
        if let Some(key) = &first.idempotency_key
            && let Some(existing) = self.by_key(key).await?
        {
            return Ok(Submitted::Existing(existing));
        }
        let now = now_ms();
        let (_w, mut tx) = self.0.begin_write().await?;
        if let Some(l) = &load {
            write_load(&mut tx, l).await?;
        }
        for c in cmds {
            if let Err(e) = insert_command(&mut tx, c, now).await? {
                // two POSTs with one key at the same moment: the other won
                if let Some(key) = &first.idempotency_key {
                    drop(tx);
                    if let Some(existing) = self.by_key(key).await? {
                        return Ok(Submitted::Existing(existing));
                    }
                }
                return Err(e.into());
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
            .get(&first.command_id)
            .await?
            .ok_or_else(|| Error::Db("a command vanished after its insert".into()))?;
        Ok(Submitted::Created(row))
    }

    async fn by_key(&self, key: &str) -> Result<Option<CommandRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE idempotency_key = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(self.0.pool())
            .await?)
    }

    pub async fn get(&self, id: &str) -> Result<Option<CommandRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE command_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.0.pool())
            .await?)
    }

    pub async fn children(&self, parent: &str) -> Result<Vec<CommandRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE parent_id = $1 ORDER BY seq");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(parent)
            .fetch_all(self.0.pool())
            .await?)
    }

    pub async fn events(&self, id: &str) -> Result<Vec<EventRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, command_id, at_ms, state, reason, detail, actor FROM command_events WHERE command_id = $1 ORDER BY at_ms, id",
        )
        .bind(id)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Newest first; `site` and `state` filter when given.
    /// Newest first, before `before_seq` (the page cursor); `site`
    /// filters, and `sites` (a caller's scope) bounds.
    pub async fn list(
        &self,
        site: Option<&str>,
        sites: Option<&[String]>,
        state: Option<CommandState>,
        limit: i64,
        before_seq: Option<i64>,
    ) -> Result<Vec<CommandRow>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commands WHERE ($1 = '' OR site_id = $1) AND ($2 = '' OR state = $2) AND seq < $4 {} ORDER BY seq DESC LIMIT $3",
            super::site_in("site_id", sites, 5)
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(site.unwrap_or(""))
            .bind(state.map_or("", CommandState::as_str))
            .bind(limit)
            .bind(before_seq.unwrap_or(i64::MAX));
        for s in sites.unwrap_or_default() {
            q = q.bind(s);
        }
        Ok(q.fetch_all(self.0.pool()).await?)
    }

    /// How many commands (split parents left out) reached `state` at or
    /// after `since_ms` (their last change), in these sites (`None`: all).
    pub async fn count_since(
        &self,
        state: CommandState,
        since_ms: i64,
        sites: Option<&[String]>,
    ) -> Result<i64, Error> {
        let sql = format!(
            "SELECT COUNT(*) FROM commands WHERE state = $1 AND updated_ms >= $2 AND kind <> 'split' {}",
            super::site_in("site_id", sites, 3)
        );
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(state.as_str())
            .bind(since_ms);
        for s in sites.unwrap_or_default() {
            q = q.bind(s);
        }
        Ok(q.fetch_one(self.0.pool()).await?)
    }

    /// Commands to (re)send to a site's agent, oldest first: not yet
    /// acknowledged, or with a cancel to deliver.
    pub async fn dispatchable(&self, site: &SiteId, limit: i64) -> Result<Vec<CommandRow>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commands WHERE site_id = $1 AND kind <> 'split'
               AND (state IN ('submitted', 'sent') OR (cancel_requested_ms IS NOT NULL AND state IN ('acked', 'active')))
             ORDER BY seq LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .bind(limit)
            .fetch_all(self.0.pool())
            .await?)
    }

    /// The sites that have something to dispatch (what
    /// [`Self::dispatchable`] would find), at most `limit`: the dispatch
    /// safety net's one query per replica (the `commands_pending` index).
    pub async fn sites_with_dispatchable(&self, limit: i64) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT site_id FROM commands WHERE kind <> 'split'
               AND state IN ('submitted', 'sent', 'acked', 'active')
               AND (state IN ('submitted', 'sent') OR cancel_requested_ms IS NOT NULL)
             LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// The site's setpoints in force (`active`), with when each became
    /// active (its `applied` event), oldest first: what an agent that lost
    /// its command state is sent again.
    pub async fn active_setpoints(&self, site: &SiteId) -> Result<Vec<(CommandRow, i64)>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commands WHERE site_id = $1 AND kind = 'setpoint' AND state = 'active' ORDER BY seq LIMIT 1000"
        );
        let rows: Vec<CommandRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .fetch_all(self.0.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(at_ms) FROM command_events WHERE command_id = $1 AND state = 'active'",
            )
            .bind(&r.command_id)
            .fetch_one(self.0.pool())
            .await?;
            let at = at.unwrap_or(r.updated_ms.ms());
            out.push((r, at));
        }
        Ok(out)
    }

    /// Records a delivery **before** it is sent (write-ahead, issue 28):
    /// `submitted` moves to `sent`; a redelivery or a cancel is an event.
    /// Returns whether to send it: `false` when the command left the
    /// dispatchable states meanwhile (the sweeper expired it, an operator
    /// cancelled it before it went out), so that nothing is sent that the
    /// record says never was.
    pub async fn mark_sent(&self, id: &str, actor: &Actor, what: Reason) -> Result<bool, Error> {
        let now = now_ms();
        let (_w, mut c) = self.0.begin_write().await?;
        let m = Move {
            from: &[CommandState::Submitted],
            to: CommandState::Sent,
            reason: what,
            detail: "",
            actor,
        };
        let send = if transition(&mut c, id, m, now).await? {
            true
        } else {
            let state: Option<CommandState> =
                sqlx::query_scalar("SELECT state FROM commands WHERE command_id = $1")
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await?;
            let send = match what {
                // a cancel goes to whatever the command reached
                Reason::CancelSent => state.is_some(),
                _ => state == Some(CommandState::Sent),
            };
            if send && let Some(state) = state {
                insert_event(&mut c, id, now, state, what, "", actor).await?;
            }
            send
        };
        c.commit().await?;
        Ok(send)
    }

    /// Commands never sent whose expiry passed: expired by the headend.
    /// Sent (or received) ones wait for the agent's verdict (an agent
    /// answers every command it stored, after a crash too), but not for
    /// ever: one the site has not answered [`UNANSWERED_AFTER_MS`] after
    /// its expiry (a site gone for good, a state file lost before the
    /// outcome) is expired too, saying so. Returns their ids.
    pub async fn expire_unsent(&self, now: i64) -> Result<Vec<String>, Error> {
        let unsent: Vec<String> = sqlx::query_scalar(
            "SELECT command_id FROM commands WHERE state = 'submitted' AND kind <> 'split' AND expires_at_ms < $1 LIMIT 1000",
        )
        .bind(now)
        .fetch_all(self.0.pool())
        .await?;
        let unanswered: Vec<String> = sqlx::query_scalar(
            "SELECT command_id FROM commands WHERE state IN ('sent', 'acked') AND kind <> 'split' AND expires_at_ms < $1 LIMIT 1000",
        )
        .bind(now.saturating_sub(UNANSWERED_AFTER_MS))
        .fetch_all(self.0.pool())
        .await?;
        let headend = Actor::headend();
        let mut done = Vec::new();
        let cases = [
            (
                unsent,
                &[CommandState::Submitted][..],
                "its expiry passed before it could be sent (agent offline); never applied",
            ),
            (
                unanswered,
                &[CommandState::Sent, CommandState::Acked][..],
                "the site never answered, 7 days after its expiry (the agent refuses a command that arrives expired; a late answer is kept in the timeline)",
            ),
        ];
        for (ids, from, detail) in cases {
            for id in ids {
                let (_w, mut tx) = self.0.begin_write().await?;
                let m = Move {
                    from,
                    to: CommandState::Expired,
                    reason: Reason::Expired,
                    detail,
                    actor: &headend,
                };
                if transition(&mut tx, &id, m, now).await? {
                    done.push(id);
                }
                tx.commit().await?;
            }
        }
        Ok(done)
    }

    /// Cancels a command: an unsent one is cancelled at once; a sent, acked
    /// or active one gets a cancel delivered to its agent. Returns false
    /// when it had already ended.
    pub async fn request_cancel(&self, id: &str, actor: &Actor) -> Result<bool, Error> {
        let now = now_ms();
        let (_w, mut tx) = self.0.begin_write().await?;
        let m = Move {
            from: &[CommandState::Submitted],
            to: CommandState::Cancelled,
            reason: Reason::Cancelled,
            detail: "cancelled before it was sent",
            actor,
        };
        let ok = if transition(&mut tx, id, m, now).await? {
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
                let state: CommandState =
                    sqlx::query_scalar("SELECT state FROM commands WHERE command_id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                insert_event(&mut tx, id, now, state, Reason::CancelRequested, "", actor).await?;
            }
            n == 1
        };
        tx.commit().await?;
        Ok(ok)
    }
}

/// Inserts one command with its first event, superseding older unsent
/// ones of the same point or load. The inner error is the INSERT's own
/// (an idempotency key taken meanwhile); the outer one anything after.
async fn insert_command(
    tx: &mut AnyConnection,
    c: &NewCommand,
    now: i64,
) -> Result<Result<(), sqlx::Error>, Error> {
    let headend = Actor::headend();
    let r = sqlx::query(
            "INSERT INTO commands (command_id, idempotency_key, request, parent_id, site_id, asset_id, kind, field, value, duration_ms,
               expires_at_ms, payload, load_id, state, reason, detail, readback, policy_version, warnings, created_by, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CAST($9 AS DOUBLE PRECISION), $10, $11, $12, $13, $14, $15, '', NULL, $16, $17, $18, $19, $19)",
        )
        .bind(&c.command_id)
        .bind(&c.idempotency_key)
        .bind(&c.request)
        .bind(&c.parent_id)
        .bind(&c.site_id)
        .bind(&c.asset_id)
        .bind(c.kind)
        .bind(&c.field)
        .bind(opt_f64(c.value))
        .bind(c.duration_ms)
        .bind(c.expires_at_ms)
        .bind(&c.payload)
        .bind(&c.load_id)
        .bind(CommandState::Submitted)
        .bind(Reason::Submitted)
        .bind(&c.policy_version)
        .bind(&c.warnings)
        .bind(&c.created_by)
        .bind(now)
        .execute(&mut *tx)
        .await;
    if let Err(e) = r {
        return Ok(Err(e));
    }
    insert_event(
        &mut *tx,
        &c.command_id,
        now,
        CommandState::Submitted,
        Reason::Submitted,
        "",
        &c.created_by,
    )
    .await?;
    if c.kind == CommandKind::Split {
        return Ok(Ok(()));
    }
    let older: Vec<String> = sqlx::query_scalar(
            "SELECT command_id FROM commands WHERE site_id = $1 AND kind = $2 AND state = 'submitted' AND command_id <> $3
               AND ((kind = 'setpoint' AND asset_id = $4 AND field = $5) OR (kind = 'eta' AND load_id = $6))",
        )
        .bind(&c.site_id)
        .bind(c.kind)
        .bind(&c.command_id)
        .bind(&c.asset_id)
        .bind(&c.field)
        .bind(&c.load_id)
        .fetch_all(&mut *tx)
        .await?;
    for o in older {
        let detail = format!("superseded by {} before it was sent", c.command_id);
        let m = Move {
            from: &[CommandState::Submitted],
            to: CommandState::Rejected,
            reason: Reason::Superseded,
            detail: &detail,
            actor: &headend,
        };
        transition(tx, &o, m, now).await?;
    }
    Ok(Ok(()))
}
