//! The inventory job's orchestration: gather each tank's facts (settings,
//! hourly rollups, the newest observation of each source, deliveries,
//! the next load), run the pure assessment, store the tank's state, judge
//! loads late or missing, look for failed commands, and open, update or
//! clear escalations. Runs under a lease (one replica at a time).

use std::collections::{HashMap, HashSet};

use jiff::tz::TimeZone;
use serde_json::json;

use crate::db::Db;
use crate::domain::assess::{self, Inputs, TankConfig};
use crate::domain::deliveries::{self, Verdict};
use crate::domain::escalation::{self, Cause, EscEventKind};
use crate::domain::inventory::{Candidate, ObsSource, Observation};
use crate::domain::load::{self, Timing};
use crate::store::RollupQuery;
use crate::store::escalations::{Applied, Finding};
use crate::store::inventory::StateRow;
use crate::store::loads::LoadRow;

/// History the rate and profile look at.
pub const HISTORY_MS: i64 = 21 * 24 * 3_600_000;
/// The volume and water fields of a tank (the agent's canonical names).
pub const VOLUME_FIELD: &str = "volume";
pub const WATER_FIELDS: &[&str] = &["water_height", "water"];

/// The job's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Runout must come this long after the next ETA (hours).
    pub margin_h: f64,
    /// Queue webhook notifications.
    pub notify: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            margin_h: escalation::DEFAULT_MARGIN_H,
            notify: false,
        }
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub tanks: usize,
    pub opened: usize,
    pub updated: usize,
    pub cleared: usize,
}

/// The zone of a site's `time_zone` (UTC when it does not resolve, which
/// the API never lets in).
pub fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

#[derive(sqlx::FromRow)]
struct Latest {
    site_id: String,
    asset_id: String,
    field: String,
    value: f64,
    good_ts_ms: i64,
}

#[derive(sqlx::FromRow)]
struct Delivery {
    site_id: String,
    log_id: i64,
    seq: i64,
    phase: String,
    tank: String,
    start_ms: i64,
    end_ms: i64,
    start_volume_l: f64,
    end_volume_l: f64,
    delivered_volume_l: f64,
    verdict: Option<Verdict>,
}

/// A delivery the agent says is under way explains rises for this long.
const OPEN_DELIVERY_MS: i64 = 3 * 3_600_000;

/// Judges the ended deliveries not judged yet, from the readings between
/// their start and end, and stores each verdict.
async fn judge(db: &Db, ds: &mut [Delivery]) -> Result<(), crate::Error> {
    for d in ds
        .iter_mut()
        .filter(|d| d.phase == "ended" && d.verdict.is_none())
    {
        let rows = db
            .readings(&crate::store::ReadingQuery {
                site: &d.site_id,
                asset: &d.tank,
                field: Some(VOLUME_FIELD),
                from_ms: d.start_ms,
                to_ms: d.end_ms + 1,
                limit: 5_000,
                newest_first: false,
            })
            .await?;
        let samples: Vec<(i64, f64)> = rows
            .iter()
            .filter_map(|r| r.value.map(|v| (r.source_ts_ms, v)))
            .collect();
        let v = deliveries::verdict(&samples, d.end_volume_l - d.start_volume_l);
        if v == Verdict::SensorJump {
            tracing::info!(site = %d.site_id, tank = %d.tank, start_ms = d.start_ms, "a detected delivery was a sensor jump (one step faster than fuel flows)");
        }
        let (_w, mut tx) = db.begin_write().await?;
        sqlx::query("UPDATE delivery_events SET verdict = $1 WHERE site_id = $2 AND log_id = $3 AND seq = $4")
            .bind(v)
            .bind(&d.site_id)
            .bind(d.log_id)
            .bind(d.seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        d.verdict = Some(v);
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Failure {
    id: i64,
    command_id: String,
    site_id: String,
    asset_id: String,
    state: String,
    reason: String,
    detail: String,
}

/// A tank's newest good volume (value, time) and water level from its gauge.
type GaugeNow = (Option<(f64, i64)>, Option<f64>);

const COMMAND_CURSOR: &str = "escalations.commands";

/// One evaluation of every tank at `now`.
pub async fn run(db: &Db, now: i64, s: Settings) -> Result<Report, crate::Error> {
    let inv = db.inventory();
    let sites: HashMap<String, (TimeZone, i64)> = inv
        .sites()
        .await?
        .into_iter()
        .map(|st| (st.site_id, (zone(&st.time_zone), st.stale_after_ms)))
        .collect();
    let tanks = inv.all_tanks().await?;
    let latest: Vec<Latest> = sqlx::query_as(
        "SELECT site_id, asset_id, field, value, good_ts_ms FROM latest_values
         WHERE field IN ('volume', 'water_height', 'water') AND good_ts_ms > 0",
    )
    .fetch_all(db.pool())
    .await?;
    let mut gauge: HashMap<(&str, &str), GaugeNow> = HashMap::new();
    for l in &latest {
        let e = gauge.entry((&l.site_id, &l.asset_id)).or_default();
        if l.field == VOLUME_FIELD {
            e.0 = Some((l.value, l.good_ts_ms));
        } else {
            e.1 = Some(l.value);
        }
    }
    let mut others: HashMap<(String, String), Vec<Candidate>> = HashMap::new();
    for o in inv.latest_observations().await? {
        others
            .entry((o.site_id, o.tank_id))
            .or_default()
            .push(Candidate {
                source: o.source,
                obs: Observation {
                    at_ms: o.at_ms,
                    volume_l: o.volume_l,
                    water_mm: o.water_mm,
                },
                confidence: o.confidence,
            });
    }
    let mut deliveries: Vec<Delivery> = sqlx::query_as(
        "SELECT site_id, log_id, seq, phase, tank, start_ms, end_ms, start_volume_l, end_volume_l, delivered_volume_l, verdict
         FROM delivery_events WHERE start_ms >= $1",
    )
    .bind(now - HISTORY_MS)
    .fetch_all(db.pool())
    .await?;
    judge(db, &mut deliveries).await?;
    let loads = db.loads().pending().await?;
    let mut next: HashMap<(String, String), &LoadRow> = HashMap::new();
    for l in loads.iter().filter(|l| !l.status.is_final()) {
        for t in l.tank_ids() {
            let e = next.entry((l.site_id.clone(), t)).or_insert(l);
            if l.eta_ms < e.eta_ms {
                *e = l;
            }
        }
    }

    let mut findings: Vec<Finding> = Vec::new();
    let mut states = Vec::with_capacity(tanks.len());
    let utc = (TimeZone::UTC, crate::domain::inventory::DEFAULT_STALE_MS);
    for t in &tanks {
        let (tz, stale_after_ms) = sites.get(&t.site_id).unwrap_or(&utc);
        let hourly: Vec<(i64, f64)> = db
            .rollups(&RollupQuery {
                site: &t.site_id,
                asset: &t.tank_id,
                field: Some(VOLUME_FIELD),
                from_ms: now - HISTORY_MS,
                to_ms: now + 1,
                limit: 24 * 22,
            })
            .await?
            .into_iter()
            .map(|r| (r.hour_ms, r.last))
            .collect();
        let key = (t.site_id.clone(), t.tank_id.clone());
        let mut cands = others.remove(&key).unwrap_or_default();
        if let Some((Some((v, at)), water)) = gauge.get(&(t.site_id.as_str(), t.tank_id.as_str())) {
            cands.push(Candidate {
                source: ObsSource::Atg,
                obs: Observation {
                    at_ms: *at,
                    volume_l: *v,
                    water_mm: *water,
                },
                confidence: 1.0,
            });
        }
        // confirmed deliveries with their litres; one under way (started,
        // not yet ended) explains any rise for a while
        let mine: Vec<&Delivery> = deliveries
            .iter()
            .filter(|d| d.site_id == t.site_id && d.tank == t.tank_id)
            .collect();
        let windows: Vec<(i64, i64, Option<f64>)> = mine
            .iter()
            .filter_map(|d| match (d.phase.as_str(), d.verdict) {
                ("ended", Some(Verdict::Confirmed)) => Some((
                    d.start_ms,
                    d.end_ms.max(d.start_ms),
                    Some(d.delivered_volume_l),
                )),
                ("started", _)
                    if now - d.start_ms < OPEN_DELIVERY_MS
                        && !mine
                            .iter()
                            .any(|e| e.phase == "ended" && e.start_ms == d.start_ms) =>
                {
                    Some((d.start_ms, now, None))
                }
                _ => None,
            })
            .collect();
        let next_load = next.get(&key).copied();
        let a = assess::assess(&Inputs {
            tank: TankConfig {
                capacity_l: t.capacity_l,
                low_l: t.low_l,
                critical_l: t.critical_l,
                floor_l: t.floor_l,
                water_limit_mm: t.water_limit_mm,
            },
            stale_after_ms: *stale_after_ms,
            tz,
            hourly: &hourly,
            candidates: &cands,
            deliveries: &windows,
            next_eta_ms: next_load.map(|l| l.eta_ms),
            now_ms: now,
        });
        let flags: Vec<&str> = a.flags.iter().map(|f| f.as_str()).collect();
        let state = StateRow {
            site_id: t.site_id.clone(),
            tank_id: t.tank_id.clone(),
            volume_l: a.current.map(|c| c.obs.volume_l),
            water_mm: a.current.and_then(|c| c.obs.water_mm),
            observed_ms: a.current.map(|c| c.obs.at_ms),
            source: a.current.map(|c| c.source),
            confidence: a.current.map(|c| c.confidence),
            freshness: a.freshness.kind(),
            flags: flags.join(","),
            rate_lph: a.rate_lph,
            rate_basis: a.basis,
            rate_confidence: a.rate_confidence,
            hours_to_runout: a.hours_to_runout,
            runout_ms: a.runout_ms,
            risk: a.risk,
            next_load_id: next_load.map(|l| l.load_id.clone()),
            next_eta_ms: next_load.map(|l| l.eta_ms),
            margin_h: a.margin_h,
            evaluated_ms: now,
        };
        // the decision context: what the job saw at this moment
        let context = json!({
            "at_ms": now,
            "volume_l": state.volume_l, "observed_ms": state.observed_ms, "source": state.source,
            "freshness": state.freshness, "age_ms": a.freshness.age_ms(), "flags": flags,
            "rate_lph": state.rate_lph, "rate_basis": state.rate_basis,
            "hours_to_runout": state.hours_to_runout, "runout_ms": state.runout_ms, "risk": state.risk,
            "next_load": next_load.map(|l| json!({
                "load_id": l.load_id, "eta_ms": l.eta_ms, "eta_source": l.eta_source,
                "planned_volume_l": l.planned_volume_l, "status": l.status,
            })),
            "margin_h": state.margin_h,
        })
        .to_string();
        let facts = escalation::TankFacts {
            stale: a.freshness.kind() != crate::domain::inventory::FreshnessKind::Fresh,
            implausible: !a.flags.is_empty(),
            hours_to_runout: a.hours_to_runout,
            eta_margin_h: a.margin_h,
        };
        for cause in escalation::tank_causes(&facts, s.margin_h) {
            let detail = match cause {
                Cause::Stale => match a.freshness.age_ms() {
                    Some(age) => format!(
                        "no data for {:.1} h (threshold {:.1} h)",
                        age as f64 / 3.6e6,
                        *stale_after_ms as f64 / 3.6e6
                    ),
                    None => "no data ever".into(),
                },
                Cause::Implausible => format!("newest observation flagged: {}", flags.join(", ")),
                _ => match (a.hours_to_runout, a.margin_h, next_load) {
                    (Some(h), Some(m), Some(l)) => format!(
                        "runout in {h:.0} h, {:.0} h {} the ETA of load {}",
                        m.abs(),
                        if m < 0.0 { "before" } else { "after" },
                        l.load_id
                    ),
                    (Some(h), _, _) => format!("runout in {h:.0} h and no delivery planned"),
                    _ => "runout expected".into(),
                },
            };
            findings.push(Finding {
                site_id: t.site_id.clone(),
                tank_id: t.tank_id.clone(),
                cause,
                subject: next_load.map(|l| l.load_id.clone()).unwrap_or_default(),
                detail,
                context: context.clone(),
            });
        }
        states.push(state);
    }
    inv.put_state(&states).await?;

    // loads: late and missing
    for l in &loads {
        let timing = load::timing(l.status, l.eta_ms, now);
        if timing != l.timing {
            db.loads().set_timing(&l.load_id, timing).await?;
        }
        if let Some(tm) = timing {
            let cause = match tm {
                Timing::Late => Cause::LateDelivery,
                Timing::Missing => Cause::MissingDelivery,
            };
            for tank in l.tank_ids() {
                findings.push(Finding {
                    site_id: l.site_id.clone(),
                    tank_id: tank,
                    cause,
                    subject: l.load_id.clone(),
                    detail: format!(
                        "load {} ({}) was due {:.1} h ago and has not started",
                        l.load_id,
                        l.reference,
                        (now - l.eta_ms) as f64 / 3.6e6
                    ),
                    context: json!({
                        "at_ms": now, "load_id": l.load_id, "reference": l.reference, "carrier": l.carrier,
                        "eta_ms": l.eta_ms, "eta_source": l.eta_source, "planned_volume_l": l.planned_volume_l,
                    })
                    .to_string(),
                });
            }
        }
    }

    // failed commands since the last look (a revert that fails is an
    // agent ack with a write failure on an active command)
    let cursor: Option<i64> = sqlx::query_scalar("SELECT value FROM job_cursors WHERE job = $1")
        .bind(COMMAND_CURSOR)
        .fetch_optional(db.pool())
        .await?;
    let failures: Vec<Failure> = sqlx::query_as(
        "SELECT e.id, e.command_id, c.site_id, c.asset_id, e.state, e.reason, e.detail
         FROM command_events e JOIN commands c ON c.command_id = e.command_id
         WHERE e.id > $1 AND c.kind <> 'split'
           AND (e.state = 'failed' OR (e.state = 'active' AND e.reason IN ('write_failed', 'device_unreachable', 'readback_mismatch')))
         ORDER BY e.id",
    )
    .bind(cursor.unwrap_or(0))
    .fetch_all(db.pool())
    .await?;
    let mut failed_commands = Vec::new();
    for f in &failures {
        failed_commands.push(Finding {
            site_id: f.site_id.clone(),
            tank_id: f.asset_id.clone(),
            cause: Cause::CommandFailed,
            subject: f.command_id.clone(),
            detail: if f.state == "failed" {
                format!("command {} failed: {} {}", f.command_id, f.reason, f.detail)
            } else {
                format!("revert of command {} failed: {} {}", f.command_id, f.reason, f.detail)
            },
            context: json!({ "command_id": f.command_id, "state": f.state, "reason": f.reason, "detail": f.detail })
                .to_string(),
        });
    }

    let mut report = Report {
        tanks: tanks.len(),
        ..Report::default()
    };
    let mut wanted: HashSet<(String, String, Cause)> = HashSet::new();
    for f in findings.iter().chain(&failed_commands) {
        wanted.insert((f.site_id.clone(), f.tank_id.clone(), f.cause));
        match db
            .escalations()
            .apply(f, &super::new_id("esc"), now, s.notify)
            .await?
        {
            Applied::Opened => report.opened += 1,
            Applied::Updated => report.updated += 1,
            Applied::Same => {}
        }
    }
    if let Some(last) = failures.last() {
        let (_w, mut tx) = db.begin_write().await?;
        sqlx::query(
            "INSERT INTO job_cursors (job, value) VALUES ($1, $2) ON CONFLICT (job) DO UPDATE SET value = excluded.value",
        )
        .bind(COMMAND_CURSOR)
        .bind(last.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    for o in db.escalations().open().await? {
        if o.cause.clears_itself()
            && !wanted.contains(&(o.site_id.clone(), o.tank_id.clone(), o.cause))
        {
            let done = db
                .escalations()
                .resolve(
                    &o.escalation_id,
                    EscEventKind::Cleared,
                    "headend: inventory",
                    "the cause cleared",
                    now,
                    s.notify,
                )
                .await?;
            if done.is_some() {
                report.cleared += 1;
            }
        }
    }
    Ok(report)
}
