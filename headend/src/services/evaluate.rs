//! The inventory job's orchestration: gather each tank's facts (settings,
//! hourly rollups, the newest observation of each source, deliveries,
//! the next load), run the pure assessment, store the tank's state, judge
//! loads late or missing, look for failed commands, and open, update or
//! clear escalations. Runs under a lease (one replica at a time).

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::domain::assess::{self, Inputs, TankConfig};
use crate::domain::calendar::{Calendar, Holiday};
use crate::domain::deliveries::DeliveryPhase;
use crate::domain::deliveries::{self, Verdict};
use crate::domain::escalation::{self, Cause, EscEventKind};
use crate::domain::inventory::{self, Candidate, ObsSource, Observation};
use crate::domain::load::{self, Timing};
use crate::domain::{CommandState, UnixMs};
use crate::store::Db;
use crate::store::RollupQuery;
use crate::store::escalations::{Applied, Finding};
use crate::store::evaluation::{CommandFailure, DeliveryFact};
use crate::store::inventory::{StateRow, TankRow};
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
    /// Cases a person resolved while their cause persisted, open again.
    pub reopened: usize,
    pub updated: usize,
    pub cleared: usize,
    /// Stored observations refused as corrupt (each logged).
    pub refused: usize,
}

/// The zone of a site's `time_zone` (UTC when it does not resolve, which
/// the API never lets in).
pub fn zone(name: &str) -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// A delivery the agent says is under way explains rises for this long.
const OPEN_DELIVERY_MS: i64 = 3 * 3_600_000;

/// A tank's newest good volume (value, time) and water level from its gauge.
type GaugeNow = (Option<(f64, i64)>, Option<f64>);

const COMMAND_CURSOR: &str = "escalations.commands";

/// Everything the job reads before it judges the tanks.
struct Facts {
    /// Each site's calendar and freshness window.
    sites: HashMap<String, (Calendar, i64)>,
    tanks: Vec<TankRow>,
    gauge: HashMap<(String, String), GaugeNow>,
    others: HashMap<(String, String), Vec<Candidate>>,
    deliveries: Vec<DeliveryFact>,
    loads: Vec<LoadRow>,
    /// Each tank's last reading and since when it was shown.
    flat: HashMap<(String, String), (f64, i64)>,
    /// Stored observations refused as corrupt.
    refused: usize,
}

impl Facts {
    async fn gather(db: &Db, now: i64) -> Result<Facts, crate::Error> {
        let inv = db.inventory();
        let mut sites = HashMap::new();
        for st in inv.calendars().await? {
            // corrupt holidays are that site's alone: logged where they
            // are read (stable code `stored_value_invalid`), and its
            // forecast walks without them until they are put right
            let holidays: Vec<Holiday> =
                crate::store::json::parse("sites.holidays", &st.site_id, &st.holidays)
                    .unwrap_or_default();
            let cal =
                Calendar::new(zone(&st.time_zone)).with_holidays(holidays.iter().map(|h| h.0));
            sites.insert(st.site_id, (cal, st.stale_after_ms));
        }
        let mut fields = vec![VOLUME_FIELD];
        fields.extend(WATER_FIELDS);
        let mut gauge: HashMap<(String, String), GaugeNow> = HashMap::new();
        for l in db.evaluation().gauge_latest(&fields).await? {
            let e = gauge
                .entry((l.site_id.into_string(), l.asset_id))
                .or_default();
            if l.field == VOLUME_FIELD {
                e.0 = Some((l.value, l.good_ts_ms.ms()));
            } else {
                e.1 = Some(l.value);
            }
        }
        let mut others: HashMap<(String, String), Vec<Candidate>> = HashMap::new();
        let mut refused = 0;
        for o in inv.latest_observations().await? {
            // a corrupt row is logged where it is read and counted; its
            // tank is assessed on the other sources
            let Ok(o) = o else {
                refused += 1;
                continue;
            };
            others
                .entry((o.site_id, o.tank_id))
                .or_default()
                .push(Candidate {
                    source: o.source,
                    obs: Observation {
                        at_ms: o.at_ms.ms(),
                        volume_l: o.volume_l,
                        water_mm: o.water_mm,
                    },
                    confidence: o.confidence,
                });
        }
        let mut deliveries = db.evaluation().deliveries_since(now - HISTORY_MS).await?;
        judge(db, &mut deliveries).await?;
        let flat = db
            .evaluation()
            .flat()
            .await?
            .into_iter()
            .filter_map(|(site, tank, v, since)| Some(((site, tank), (v?, since?))))
            .collect();
        Ok(Facts {
            flat,
            refused,
            sites,
            tanks: inv.all_tanks().await?,
            gauge,
            others,
            deliveries,
            loads: db.loads().pending().await?,
        })
    }

    /// The next load of each tank (the earliest ETA of the loads not final).
    fn next_loads(&self) -> HashMap<(String, String), &LoadRow> {
        let mut next: HashMap<(String, String), &LoadRow> = HashMap::new();
        for l in self.loads.iter().filter(|l| !l.status.is_final()) {
            for t in l.tank_ids() {
                let e = next.entry((l.site_id.to_string(), t)).or_insert(l);
                if l.eta_ms < e.eta_ms {
                    *e = l;
                }
            }
        }
        next
    }

    /// A tank's delivery windows: confirmed deliveries with their litres;
    /// one under way (started, not yet ended) explains any rise for a while.
    fn windows(&self, t: &TankRow, now: i64) -> Vec<(i64, i64, Option<f64>)> {
        let mine: Vec<&DeliveryFact> = self
            .deliveries
            .iter()
            .filter(|d| d.site_id == t.site_id && d.tank == t.tank_id)
            .collect();
        mine.iter()
            .filter_map(|d| match (d.phase, d.verdict) {
                (DeliveryPhase::Ended, Some(Verdict::Confirmed)) => Some((
                    d.start_ms.ms(),
                    d.end_ms.max(d.start_ms).ms(),
                    Some(d.delivered_volume_l),
                )),
                (DeliveryPhase::Started, _)
                    if UnixMs::from_ms(now).since(d.start_ms) < OPEN_DELIVERY_MS
                        && !mine.iter().any(|e| {
                            e.phase == DeliveryPhase::Ended && e.start_ms == d.start_ms
                        }) =>
                {
                    Some((d.start_ms.ms(), now, None))
                }
                _ => None,
            })
            .collect()
    }
}

/// One evaluation of every tank at `now`.
pub async fn run(db: &Db, now: i64, s: Settings) -> Result<Report, crate::Error> {
    run_which(db, now, s, Which::Periodic).await
}

/// The quick evaluation of the tanks whose gauge readings were just
/// committed (`(site, tank)`; `None`: every tank): their state and their
/// own escalations (runout, stale, implausible). Loads' timing and failed
/// commands stay with the periodic [`run`].
pub async fn run_tanks(
    db: &Db,
    now: i64,
    s: Settings,
    tanks: Option<&HashSet<(String, String)>>,
) -> Result<Report, crate::Error> {
    let which = match tanks {
        Some(t) => Which::Tanks(t),
        None => Which::AllTanks,
    };
    run_which(db, now, s, which).await
}

/// What a run judges.
#[derive(Clone, Copy)]
enum Which<'a> {
    /// Every tank, loads' timing, failed commands (the periodic job).
    Periodic,
    /// These tanks' state and tank causes only.
    Tanks(&'a HashSet<(String, String)>),
    /// Every tank's state and tank causes only.
    AllTanks,
}

impl Which<'_> {
    /// Whether the run judged this escalation (and may clear it).
    fn judges(&self, cause: Cause, site: &str, tank: &str) -> bool {
        match self {
            Which::Periodic => true,
            Which::AllTanks => TANK_CAUSES.contains(&cause),
            Which::Tanks(only) => {
                TANK_CAUSES.contains(&cause) && only.contains(&(site.to_string(), tank.to_string()))
            }
        }
    }
}

/// The causes a tank's own facts call for (what a quick run may clear).
const TANK_CAUSES: &[Cause] = &[Cause::RunoutBeforeEta, Cause::Stale, Cause::Implausible];

async fn run_which(
    db: &Db,
    now: i64,
    s: Settings,
    which: Which<'_>,
) -> Result<Report, crate::Error> {
    let mut facts = Facts::gather(db, now).await?;
    if let Which::Tanks(only) = which {
        facts
            .tanks
            .retain(|t| only.contains(&(t.site_id.to_string(), t.tank_id.clone())));
    }
    let mut findings: Vec<Finding> = Vec::new();
    let mut states = Vec::with_capacity(facts.tanks.len());
    {
        let mut others = std::mem::take(&mut facts.others);
        let next = facts.next_loads();
        let utc = (Calendar::utc(), crate::domain::inventory::DEFAULT_STALE_MS);
        for t in &facts.tanks {
            let (cal, stale_after_ms) = facts.sites.get(t.site_id.as_str()).unwrap_or(&utc);
            let hourly: Vec<(i64, f64)> = db
                .rollups(&RollupQuery {
                    site: &t.site_id,
                    asset: &t.tank_id,
                    field: Some(VOLUME_FIELD),
                    from_ms: UnixMs::from_ms(now - HISTORY_MS),
                    to_ms: UnixMs::from_ms(now + 1),
                    limit: 24 * 22,
                })
                .await?
                .into_iter()
                .map(|r| (r.hour_ms.ms(), r.last))
                .collect();
            let key = (t.site_id.to_string(), t.tank_id.clone());
            let mut cands = others.remove(&key).unwrap_or_default();
            if let Some((Some((v, at)), water)) = facts.gauge.get(&key) {
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
            let seen = TankSeen {
                tank: t,
                cal,
                stale_after_ms: *stale_after_ms,
                hourly: &hourly,
                candidates: &cands,
                windows: &facts.windows(t, now),
                next_load: next.get(&key).copied(),
                flat: facts.flat.get(&key).copied(),
            };
            let (state, mut found) = judge_tank(&seen, now, s.margin_h);
            findings.append(&mut found);
            states.push(state);
        }
    }
    db.inventory().put_state(&states).await?;
    if !matches!(which, Which::Periodic) {
        let mut report = apply(db, &findings, now, s, which).await?;
        report.tanks = facts.tanks.len();
        report.refused = facts.refused;
        return Ok(report);
    }
    for l in &facts.loads {
        let timing = load::timing(l.status, l.eta_ms.ms(), now);
        if timing != l.timing {
            db.loads().set_timing(&l.load_id, timing).await?;
        }
        findings.extend(load_findings(l, timing, now));
    }
    let failures = db.evaluation().command_failures(COMMAND_CURSOR).await?;
    findings.extend(failures.iter().map(failure_finding));
    let mut report = apply(db, &findings, now, s, which).await?;
    report.tanks = facts.tanks.len();
    report.refused = facts.refused;
    if let Some(last) = failures.last() {
        db.evaluation()
            .advance_cursor(COMMAND_CURSOR, last.id)
            .await?;
    }
    Ok(report)
}

/// What the job saw of one tank.
struct TankSeen<'a> {
    tank: &'a TankRow,
    cal: &'a Calendar,
    stale_after_ms: i64,
    hourly: &'a [(i64, f64)],
    candidates: &'a [Candidate],
    windows: &'a [(i64, i64, Option<f64>)],
    next_load: Option<&'a LoadRow>,
    /// The last evaluation's reading and since when it was shown.
    flat: Option<(f64, i64)>,
}

/// One tank's state and the escalations its facts call for (pure).
fn judge_tank(seen: &TankSeen<'_>, now: i64, margin_h: f64) -> (StateRow, Vec<Finding>) {
    let t = seen.tank;
    let next_load = seen.next_load;
    // since when the gauge has shown its newest value (a stuck gauge)
    let gauge_now = inventory::winner(seen.candidates, now, seen.stale_after_ms)
        .filter(|c| c.source == ObsSource::Atg);
    let flat_since_ms = gauge_now.map(|c| inventory::flat_since(seen.flat, &c.obs));
    let a = assess::assess(&Inputs {
        tank: TankConfig {
            capacity_l: t.capacity_l,
            low_l: t.low_l,
            critical_l: t.critical_l,
            floor_l: t.floor_l,
            water_limit_mm: t.water_limit_mm,
        },
        stale_after_ms: seen.stale_after_ms,
        cal: seen.cal,
        hourly: seen.hourly,
        candidates: seen.candidates,
        deliveries: seen.windows,
        next_eta_ms: next_load.map(|l| l.eta_ms.ms()),
        flat_since_ms,
        now_ms: now,
    });
    let flags: Vec<&str> = a.flags.iter().map(|f| f.as_str()).collect();
    let state = StateRow {
        site_id: t.site_id.to_string(),
        tank_id: t.tank_id.clone(),
        volume_l: a
            .projected
            .map(|p| p.volume_l)
            .or(a.current.map(|c| c.obs.volume_l)),
        reading_l: a.current.map(|c| c.obs.volume_l),
        flat_since_ms: flat_since_ms.map(UnixMs::from_ms),
        water_mm: a.current.and_then(|c| c.obs.water_mm),
        observed_ms: a.current.map(|c| UnixMs::from_ms(c.obs.at_ms)),
        source: match a.projected {
            Some(_) => Some(ObsSource::Projected),
            None => a.current.map(|c| c.source),
        },
        confidence: a.current.map(|c| c.confidence),
        freshness: a.freshness.kind(),
        flags: flags.join(","),
        rate_lph: a.rate_lph,
        rate_basis: a.basis,
        rate_confidence: a.rate_confidence,
        hours_to_runout: a.hours_to_runout,
        runout_ms: a.runout_ms.map(UnixMs::from_ms),
        runout_p10_ms: a.runout_p10_ms.map(UnixMs::from_ms),
        runout_p90_ms: a.runout_p90_ms.map(UnixMs::from_ms),
        risk: a.risk,
        next_load_id: next_load.map(|l| l.load_id.to_string()),
        next_eta_ms: next_load.map(|l| l.eta_ms),
        margin_h: a.margin_h,
        evaluated_ms: UnixMs::from_ms(now),
    };
    // the decision context: what the job saw at this moment
    let context = json!({
        "at_ms": now,
        "volume_l": state.volume_l, "reading_l": state.reading_l, "observed_ms": state.observed_ms, "source": state.source,
        "freshness": state.freshness, "age_ms": a.freshness.age_ms(), "flags": flags,
        "rate_lph": state.rate_lph, "rate_basis": state.rate_basis,
        "hours_to_runout": state.hours_to_runout, "runout_ms": state.runout_ms,
        "runout_p10_ms": state.runout_p10_ms, "runout_p90_ms": state.runout_p90_ms, "risk": state.risk,
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
    let findings = escalation::tank_causes(&facts, margin_h)
        .into_iter()
        .map(|cause| {
            let detail = match cause {
                Cause::Stale => match a.freshness.age_ms() {
                    Some(age) => format!(
                        "no data for {:.1} h (threshold {:.1} h)",
                        age as f64 / 3.6e6,
                        seen.stale_after_ms as f64 / 3.6e6
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
            Finding {
                site_id: t.site_id.to_string(),
                tank_id: t.tank_id.clone(),
                cause,
                subject: next_load.map(|l| l.load_id.to_string()).unwrap_or_default(),
                detail,
                context: context.clone(),
            }
        })
        .collect();
    (state, findings)
}

/// A load late or missing, once per tank it serves (pure).
fn load_findings(l: &LoadRow, timing: Option<Timing>, now: i64) -> Vec<Finding> {
    let Some(tm) = timing else {
        return Vec::new();
    };
    let cause = match tm {
        Timing::Late => Cause::LateDelivery,
        Timing::Missing => Cause::MissingDelivery,
    };
    l.tank_ids()
        .into_iter()
        .map(|tank| Finding {
            site_id: l.site_id.to_string(),
            tank_id: tank,
            cause,
            subject: l.load_id.to_string(),
            detail: format!(
                "load {} ({}) was due {:.1} h ago and has not started",
                l.load_id,
                l.reference,
                (now - l.eta_ms.ms()) as f64 / 3.6e6
            ),
            context: json!({
                "at_ms": now, "load_id": l.load_id, "reference": l.reference, "carrier": l.carrier,
                "eta_ms": l.eta_ms, "eta_source": l.eta_source, "planned_volume_l": l.planned_volume_l,
            })
            .to_string(),
        })
        .collect()
}

/// A failed command (or a failed revert) as a finding (pure).
fn failure_finding(f: &CommandFailure) -> Finding {
    Finding {
        site_id: f.site_id.to_string(),
        tank_id: f.asset_id.clone(),
        cause: Cause::CommandFailed,
        subject: f.command_id.clone(),
        detail: if f.state == CommandState::Failed {
            format!("command {} failed: {} {}", f.command_id, f.reason, f.detail)
        } else {
            format!("revert of command {} failed: {} {}", f.command_id, f.reason, f.detail)
        },
        context: json!({ "command_id": f.command_id, "state": f.state, "reason": f.reason, "detail": f.detail })
            .to_string(),
    }
}

/// Opens or updates an escalation per finding, and clears the open ones
/// whose cause cleared, among those the run judges.
async fn apply(
    db: &Db,
    findings: &[Finding],
    now: i64,
    s: Settings,
    which: Which<'_>,
) -> Result<Report, crate::Error> {
    let mut report = Report::default();
    let mut wanted: HashSet<(String, String, Cause)> = HashSet::new();
    for f in findings {
        wanted.insert((f.site_id.clone(), f.tank_id.clone(), f.cause));
        match db
            .escalations()
            .apply(f, &super::new_id("esc"), now, s.notify)
            .await?
        {
            Applied::Opened => report.opened += 1,
            Applied::Reopened => report.reopened += 1,
            Applied::Updated => report.updated += 1,
            Applied::Same => {}
        }
    }
    for o in db.escalations().open().await? {
        if which.judges(o.cause, &o.site_id, &o.tank_id)
            && o.cause.clears_itself()
            && !wanted.contains(&(o.site_id.to_string(), o.tank_id.clone(), o.cause))
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

/// Judges the ended deliveries not judged yet, from the readings between
/// their start and end, and stores each verdict.
async fn judge(db: &Db, ds: &mut [DeliveryFact]) -> Result<(), crate::Error> {
    for d in ds
        .iter_mut()
        .filter(|d| d.phase == DeliveryPhase::Ended && d.verdict.is_none())
    {
        let rows = db
            .readings(&crate::store::ReadingQuery {
                site: &d.site_id,
                asset: &d.tank,
                field: Some(VOLUME_FIELD),
                from_ms: d.start_ms,
                to_ms: d.end_ms.plus_ms(1),
                limit: 5_000,
                newest_first: false,
            })
            .await?;
        let samples: Vec<(i64, f64)> = rows
            .iter()
            .filter_map(|r| r.value.map(|v| (r.source_ts_ms.ms(), v)))
            .collect();
        let v = deliveries::verdict(&samples, d.end_volume_l - d.start_volume_l);
        if v == Verdict::SensorJump {
            tracing::info!(site = %d.site_id, tank = %d.tank, start_ms = d.start_ms.ms(), "a detected delivery was a sensor jump (one step faster than fuel flows)");
        }
        db.evaluation().set_verdict(d, v).await?;
        d.verdict = Some(v);
    }
    Ok(())
}
