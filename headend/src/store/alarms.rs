//! The alarms aggregate in SQL: alarm points (the last reading applied
//! per site, asset and field), episodes and their timeline.
//!
//! Readings become episodes in the transaction that applies a batch's
//! records ([`apply`]), by the one rule `domain::alarm::step`; a
//! redelivered batch applies nothing twice. People's moves (acknowledge,
//! shelve, unshelve, notes) are conditional updates, so two people racing
//! cannot both succeed.

use sqlx::AnyConnection;
use tankwatch_proto::v1;

use crate::Error;
use crate::domain::alarm::{
    AlarmEventKind, AlarmReading, AlarmState, AlarmType, Facts, Point, Severity, Step, advance,
    step,
};
use crate::domain::outbox::Subject;
use crate::domain::{SiteId, UnixMs};
use crate::store::Db;

#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct EpisodeRow {
    pub episode_id: String,
    pub site_id: SiteId,
    pub asset_id: String,
    pub field: String,
    pub alarm_type: AlarmType,
    pub severity: Severity,
    pub raised_ms: UnixMs,
    pub cleared_ms: Option<UnixMs>,
    pub raised_value: f64,
    pub source: String,
    pub acked_ms: Option<UnixMs>,
    pub acked_by: Option<String>,
    pub ack_note: Option<String>,
    pub shelved_until_ms: Option<UnixMs>,
    pub shelve_reason: Option<String>,
    pub updated_ms: UnixMs,
}

impl EpisodeRow {
    pub fn facts(&self) -> Facts {
        Facts {
            cleared_ms: self.cleared_ms.map(UnixMs::ms),
            acked_ms: self.acked_ms.map(UnixMs::ms),
            shelved_until_ms: self.shelved_until_ms.map(UnixMs::ms),
        }
    }
    pub fn state(&self, now_ms: i64) -> AlarmState {
        AlarmState::of(&self.facts(), now_ms)
    }
}

const COLUMNS: &str = "episode_id, site_id, asset_id, field, alarm_type, severity, raised_ms, cleared_ms, raised_value, source, acked_ms, acked_by, ack_note, shelved_until_ms, shelve_reason, updated_ms";

#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct AlarmEventRow {
    pub id: i64,
    pub at_ms: UnixMs,
    pub kind: AlarmEventKind,
    pub actor: String,
    pub note: String,
}

/// What applying a batch did to one episode (for metrics and, later,
/// notifications).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub episode_id: String,
    pub kind: AlarmEventKind,
}

/// Filters of the alarm list.
#[derive(Clone, Debug, Default)]
pub struct AlarmFilter<'a> {
    pub site: Option<&'a str>,
    pub asset: Option<&'a str>,
    pub state: Option<AlarmState>,
    pub severity: Option<Severity>,
    pub sites: Option<&'a [String]>,
    /// Page cursor: before this (raised, id), newest first.
    pub before: Option<(i64, &'a str)>,
    pub limit: i64,
    pub now_ms: UnixMs,
}

/// The SQL condition of a derived state; the same order of rules as
/// [`AlarmState::of`] (the store test holds them together). `$n` is now.
fn state_sql(s: AlarmState, now: usize) -> String {
    match s {
        AlarmState::Cleared => "cleared_ms IS NOT NULL".into(),
        AlarmState::Shelved => {
            format!(
                "cleared_ms IS NULL AND shelved_until_ms IS NOT NULL AND shelved_until_ms > ${now}"
            )
        }
        AlarmState::Acknowledged => format!(
            "cleared_ms IS NULL AND (shelved_until_ms IS NULL OR shelved_until_ms <= ${now}) AND acked_ms IS NOT NULL"
        ),
        AlarmState::Active => format!(
            "cleared_ms IS NULL AND (shelved_until_ms IS NULL OR shelved_until_ms <= ${now}) AND acked_ms IS NULL"
        ),
    }
}

#[derive(Clone, Copy)]
pub struct Alarms<'a>(&'a Db);

impl Db {
    pub fn alarms(&self) -> Alarms<'_> {
        Alarms(self)
    }
}

/// Whether a batch carries an alarm point (the records transaction runs).
pub fn carries_alarms(batch: &v1::TelemetryBatch) -> bool {
    batch
        .readings
        .iter()
        .any(|r| AlarmType::of_field(&r.field).is_some())
}

#[derive(sqlx::FromRow)]
struct PointRow {
    active: i64,
    last_ts_ms: i64,
    last_log_id: i64,
    last_seq: i64,
    last_cleared_ms: Option<i64>,
    open_episode: Option<String>,
    open_raised_ms: Option<i64>,
}

/// Where a batch's alarm readings are applied.
struct At<'a> {
    site: &'a SiteId,
    log_id: i64,
    now: i64,
    notify: bool,
}

/// Applies a batch's alarm readings (good quality only: a point that
/// cannot be read says nothing about the condition) to their points, in
/// log order. Returns what changed.
pub async fn apply(
    c: &mut AnyConnection,
    site: &SiteId,
    log_id: i64,
    now: i64,
    notify: bool,
    batch: &v1::TelemetryBatch,
) -> Result<Vec<Change>, Error> {
    let at = At {
        site,
        log_id,
        now,
        notify,
    };
    let mut changes = Vec::new();
    for r in &batch.readings {
        let Some(kind) = AlarmType::of_field(&r.field) else {
            continue;
        };
        if r.quality() != v1::Quality::Good || !r.value.is_finite() {
            continue;
        }
        let reading = AlarmReading {
            active: r.value != 0.0,
            ts_ms: r.source_ts_ms,
            log_id,
            seq: r.seq as i64,
        };
        let row: Option<PointRow> = sqlx::query_as(
            "SELECT active, last_ts_ms, last_log_id, last_seq, last_cleared_ms, open_episode, open_raised_ms
             FROM alarm_points WHERE site_id = $1 AND asset_id = $2 AND field = $3",
        )
        .bind(site)
        .bind(&r.asset_id)
        .bind(&r.field)
        .fetch_optional(&mut *c)
        .await?;
        let point = row.as_ref().map(|p| Point {
            active: p.active != 0,
            last_ts_ms: p.last_ts_ms,
            last_log: (p.last_log_id, p.last_seq),
            last_cleared_ms: p.last_cleared_ms,
            open_raised_ms: p.open_raised_ms,
        });
        let s = step(point.as_ref(), &reading);
        let mut open = row.and_then(|p| p.open_episode);
        match s {
            Step::Duplicate => continue,
            Step::Late => {
                late(c, &at, r).await?;
                continue;
            }
            Step::Raise => {
                let id = raise(c, &at, r, kind).await?;
                changes.push(Change {
                    episode_id: id.clone(),
                    kind: AlarmEventKind::Raised,
                });
                open = Some(id);
            }
            Step::Clear | Step::Earlier => {
                let Some(id) = open.clone() else {
                    return Err(Error::Corrupt {
                        column: "alarm_points.open_episode",
                        key: format!("{site}/{}/{}", r.asset_id, r.field),
                        detail: "a raise time but no open episode".into(),
                    });
                };
                changes.push(end_or_earlier(c, &at, r, &id, s == Step::Clear).await?);
                if s == Step::Clear {
                    open = None;
                }
            }
            Step::Same => {}
        }
        if let Some(p) = advance(point.as_ref(), &reading, s) {
            save_point(c, &at, r, &p, open).await?;
        }
    }
    Ok(changes)
}

/// A late reading: counted on its point, logged.
async fn late(c: &mut AnyConnection, at: &At<'_>, r: &v1::Reading) -> Result<(), Error> {
    tracing::info!(site = %at.site, asset = %r.asset_id, field = %r.field, ts_ms = r.source_ts_ms,
        "an alarm reading older than the point's last one changes nothing");
    sqlx::query(
        "UPDATE alarm_points SET late = late + 1 WHERE site_id = $1 AND asset_id = $2 AND field = $3",
    )
    .bind(at.site)
    .bind(&r.asset_id)
    .bind(&r.field)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// A new episode raised by `r`: its timeline, the tank's escalation when
/// it is critical, the webhook. Returns its id.
async fn raise(
    c: &mut AnyConnection,
    at: &At<'_>,
    r: &v1::Reading,
    kind: AlarmType,
) -> Result<String, Error> {
    let id = format!("alm-{:016x}", fastrand::u64(..));
    let severity = crate::store::alarm_rules::severity_in(c, at.site, kind).await?;
    sqlx::query(
        "INSERT INTO alarm_episodes (episode_id, site_id, asset_id, field, alarm_type, severity, raised_ms, raised_value, source, raised_log_id, raised_seq, updated_ms, stored_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
    )
    .bind(&id)
    .bind(at.site)
    .bind(&r.asset_id)
    .bind(&r.field)
    .bind(kind)
    .bind(severity)
    .bind(r.source_ts_ms)
    .bind(r.value)
    .bind(&r.source)
    .bind(at.log_id)
    .bind(r.seq as i64)
    .bind(at.now)
    .execute(&mut *c)
    .await?;
    let who = agent(at.site);
    event(c, &id, r.source_ts_ms, AlarmEventKind::Raised, &who, "").await?;
    if severity == Severity::Critical {
        escalate(c, &id, at.now, at.notify).await?;
    }
    if at.notify {
        announce(c, &id, AlarmEventKind::Raised, at.now).await?;
    }
    Ok(id)
}

/// The open episode `id` cleared by `r`, or raised earlier than known.
async fn end_or_earlier(
    c: &mut AnyConnection,
    at: &At<'_>,
    r: &v1::Reading,
    id: &str,
    clear: bool,
) -> Result<Change, Error> {
    let (sql, kind) = if clear {
        (
            "UPDATE alarm_episodes SET cleared_ms = $1, updated_ms = $2 WHERE episode_id = $3",
            AlarmEventKind::Cleared,
        )
    } else {
        (
            "UPDATE alarm_episodes SET raised_ms = $1, updated_ms = $2 WHERE episode_id = $3",
            AlarmEventKind::Earlier,
        )
    };
    sqlx::query(sql)
        .bind(r.source_ts_ms)
        .bind(at.now)
        .bind(id)
        .execute(&mut *c)
        .await?;
    event(c, id, r.source_ts_ms, kind, &agent(at.site), "").await?;
    if at.notify {
        announce(c, id, kind, at.now).await?;
    }
    Ok(Change {
        episode_id: id.to_string(),
        kind,
    })
}

/// The point after a reading, with its open episode.
async fn save_point(
    c: &mut AnyConnection,
    at: &At<'_>,
    r: &v1::Reading,
    p: &Point,
    open: Option<String>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO alarm_points (site_id, asset_id, field, active, last_ts_ms, last_log_id, last_seq, last_cleared_ms, open_episode, open_raised_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (site_id, asset_id, field) DO UPDATE SET active = excluded.active,
           last_ts_ms = excluded.last_ts_ms, last_log_id = excluded.last_log_id, last_seq = excluded.last_seq,
           last_cleared_ms = excluded.last_cleared_ms, open_episode = excluded.open_episode,
           open_raised_ms = excluded.open_raised_ms",
    )
    .bind(at.site)
    .bind(&r.asset_id)
    .bind(&r.field)
    .bind(i64::from(p.active))
    .bind(p.last_ts_ms)
    .bind(p.last_log.0)
    .bind(p.last_log.1)
    .bind(p.last_cleared_ms)
    .bind(open)
    .bind(p.open_raised_ms)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Opens (or updates) the tank's critical-alarm escalation for a raise.
async fn escalate(c: &mut AnyConnection, id: &str, now: i64, notify: bool) -> Result<(), Error> {
    let e = row(c, id).await?;
    let at = e
        .raised_ms
        .rfc3339()
        .unwrap_or_else(|| e.raised_ms.to_string());
    let finding = crate::store::escalations::Finding {
        site_id: e.site_id.to_string(),
        tank_id: e.asset_id.clone(),
        cause: crate::domain::escalation::Cause::CriticalAlarm,
        subject: format!("{} alarm on {}", e.alarm_type, e.asset_id),
        detail: format!(
            "{} alarm ({}) raised at {at} by {}",
            e.alarm_type, e.field, e.source
        ),
        context: serde_json::json!({"alarm": e.episode_id, "type": e.alarm_type, "field": e.field,
                                    "raised_ms": e.raised_ms, "value": e.raised_value, "source": e.source})
        .to_string(),
    };
    let esc = format!("esc-{:016x}", fastrand::u64(..));
    crate::store::escalations::apply_in(c, &finding, &esc, now, notify, "headend: alarms").await?;
    Ok(())
}

async fn row(c: &mut AnyConnection, id: &str) -> Result<EpisodeRow, Error> {
    let sql = format!("SELECT {COLUMNS} FROM alarm_episodes WHERE episode_id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_one(&mut *c)
        .await?)
}

/// Queues a webhook notification of an episode's change, in order with the
/// other changes of its point (`alarm.raised`, `alarm.cleared`, ...).
async fn announce(
    c: &mut AnyConnection,
    id: &str,
    what: AlarmEventKind,
    now: i64,
) -> Result<(), Error> {
    let e = row(c, id).await?;
    let event = format!("alarm.{what}");
    let payload = serde_json::json!({
        "event": event,
        "alarm": {
            "id": e.episode_id, "site": e.site_id, "asset": e.asset_id, "field": e.field,
            "type": e.alarm_type, "severity": e.severity, "state": e.state(now),
            "raised_ms": e.raised_ms, "cleared_ms": e.cleared_ms, "value": e.raised_value,
            "source": e.source, "acknowledged_by": e.acked_by, "acknowledged_ms": e.acked_ms,
            "shelved_until_ms": e.shelved_until_ms, "updated_ms": e.updated_ms,
        },
    })
    .to_string();
    let key = format!("{}\u{1f}{}\u{1f}{}", e.site_id, e.asset_id, e.field);
    crate::store::outbox::queue(c, Subject::Alarm, id, &key, &event, &payload, now).await
}

fn agent(site: &str) -> String {
    crate::domain::Actor::agent(site).to_string()
}

async fn event(
    c: &mut AnyConnection,
    id: &str,
    at: i64,
    kind: AlarmEventKind,
    actor: &str,
    note: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO alarm_events (episode_id, at_ms, kind, actor, note) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(at)
    .bind(kind)
    .bind(actor)
    .bind(note)
    .execute(&mut *c)
    .await?;
    Ok(())
}

impl Alarms<'_> {
    pub async fn list(&self, f: &AlarmFilter<'_>) -> Result<Vec<EpisodeRow>, Error> {
        // $1 now, $2 limit, then the optional filters in order
        let mut sql = format!("SELECT {COLUMNS} FROM alarm_episodes WHERE 1 = 1");
        let mut n = 3;
        let mut next = || {
            n += 1;
            n - 1
        };
        if f.site.is_some() {
            sql += &format!(" AND site_id = ${}", next());
        }
        if f.asset.is_some() {
            sql += &format!(" AND asset_id = ${}", next());
        }
        if let Some(s) = f.state {
            sql += &format!(" AND {}", state_sql(s, 1));
        }
        if f.severity.is_some() {
            sql += &format!(" AND severity = ${}", next());
        }
        if f.before.is_some() {
            let (a, b) = (next(), next());
            sql += &format!(" AND (raised_ms < ${a} OR (raised_ms = ${a} AND episode_id < ${b}))");
        }
        sql += &crate::store::site_in("site_id", f.sites, next());
        sql += " ORDER BY raised_ms DESC, episode_id DESC LIMIT $2";
        let mut q = sqlx::query_as::<_, EpisodeRow>(sqlx::AssertSqlSafe(sql))
            .bind(f.now_ms)
            .bind(f.limit);
        if let Some(s) = f.site {
            q = q.bind(s);
        }
        if let Some(a) = f.asset {
            q = q.bind(a);
        }
        if let Some(s) = f.severity {
            q = q.bind(s);
        }
        if let Some((ms, id)) = f.before {
            q = q.bind(ms).bind(id);
        }
        for s in f.sites.unwrap_or_default() {
            q = q.bind(s);
        }
        Ok(q.fetch_all(&self.0.pool).await?)
    }

    pub async fn get(&self, id: &str) -> Result<Option<EpisodeRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM alarm_episodes WHERE episode_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.0.pool)
            .await?)
    }

    pub async fn events(&self, id: &str) -> Result<Vec<AlarmEventRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, at_ms, kind, actor, note FROM alarm_events WHERE episode_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.0.pool)
        .await?)
    }

    /// Acknowledges an episode nobody has acknowledged; false when someone
    /// did meanwhile.
    pub async fn acknowledge(
        &self,
        id: &str,
        actor: &str,
        note: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE alarm_episodes SET acked_ms = $1, acked_by = $2, ack_note = $3, updated_ms = $1 WHERE episode_id = $4 AND acked_ms IS NULL",
        )
        .bind(now)
        .bind(actor)
        .bind(note)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            self.record(&mut tx, id, AlarmEventKind::Acknowledged, actor, note, now)
                .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Shelves an open episode until `until`; false when it cleared meanwhile.
    pub async fn shelve(
        &self,
        id: &str,
        actor: &str,
        until: i64,
        reason: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE alarm_episodes SET shelved_until_ms = $1, shelve_reason = $2, updated_ms = $3 WHERE episode_id = $4 AND cleared_ms IS NULL",
        )
        .bind(until)
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            let note = format!(
                "until {}: {reason}",
                UnixMs::from(until)
                    .rfc3339()
                    .unwrap_or_else(|| until.to_string())
            );
            self.record(&mut tx, id, AlarmEventKind::Shelved, actor, &note, now)
                .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Ends a shelf still running; false when it ran out or ended meanwhile.
    pub async fn unshelve(&self, id: &str, actor: &str, now: i64) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE alarm_episodes SET shelved_until_ms = NULL, updated_ms = $1 WHERE episode_id = $2 AND shelved_until_ms > $1 AND cleared_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            self.record(&mut tx, id, AlarmEventKind::Unshelved, actor, "", now)
                .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// A person's move on the timeline, and to the webhook when one is set.
    async fn record(
        &self,
        c: &mut AnyConnection,
        id: &str,
        kind: AlarmEventKind,
        actor: &str,
        note: &str,
        now: i64,
    ) -> Result<(), Error> {
        event(c, id, now, kind, actor, note).await?;
        if self.0.notify {
            announce(c, id, kind, now).await?;
        }
        Ok(())
    }

    /// Adds a note to an episode's timeline.
    pub async fn note(&self, id: &str, actor: &str, note: &str, now: i64) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        event(&mut tx, id, now, AlarmEventKind::Note, actor, note).await?;
        sqlx::query("UPDATE alarm_episodes SET updated_ms = $1 WHERE episode_id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
