//! Planned deliveries (loads): create, change, read. Every change pushes
//! the load's current ETA to its site in the same transaction.

use serde::Deserialize;
use serde_json::Value;

use super::commands::{CommandView, push_eta};
use super::{Context, Refused, Result, invalid, refused, time_value};
use crate::domain::{Actor, EtaSource, LoadStatus};
use crate::store::loads::{EtaGiven, EtaRow, LoadEventRow, LoadRow, LoadWrite};
use crate::wallclock::now_ms;

/// A load as it is asked for (a REST request, a CSV row).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadLine {
    pub reference: String,
    pub tanks: Vec<String>,
    pub planned_volume_l: f64,
    pub eta_ms: crate::domain::UnixMs,
    pub eta_source: EtaSource,
    pub carrier: String,
    pub product: String,
}

impl LoadLine {
    /// The new load it plans at `site`: planned, nothing delivered, its
    /// ETA not sent yet.
    pub fn planned(self, site: &crate::domain::SiteId, now: i64) -> LoadRow {
        LoadRow {
            load_id: new_load_id(),
            reference: self.reference,
            carrier: self.carrier,
            site_id: site.clone(),
            tanks: serde_json::Value::from(self.tanks.clone()).to_string(),
            tank_list: self.tanks,
            product: self.product,
            planned_volume_l: self.planned_volume_l,
            eta_ms: self.eta_ms,
            eta_source: self.eta_source,
            status: LoadStatus::Planned,
            delivered_volume_l: None,
            delivery_start_ms: None,
            delivery_end_ms: None,
            delivery_source: None,
            last_command_id: None,
            timing: None,
            created_ms: now.into(),
            updated_ms: now.into(),
        }
    }
}

/// Largest planned delivery, litres (a road tanker carries up to ~45,000).
pub const MAX_PLANNED_VOLUME_L: f64 = 1_000_000.0;
/// An ETA may lie this far in the past (a late delivery being updated), ms.
pub const ETA_PAST_MS: i64 = 30 * 24 * 3600 * 1000;
/// ... and this far in the future, ms.
pub const ETA_FUTURE_MS: i64 = 366 * 24 * 3600 * 1000;
/// Most loads one list returns.
pub const MAX_LIST: i64 = 1000;

/// `POST /api/v1/loads`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    #[schema(value_type = String)]
    pub site: crate::domain::SiteId,
    /// PO / load reference.
    pub reference: String,
    #[serde(default)]
    pub carrier: String,
    pub tanks: Vec<String>,
    #[serde(default)]
    pub product: String,
    pub planned_volume_l: f64,
    /// RFC 3339 or Unix ms.
    /// RFC 3339 or Unix ms.
    #[schema(value_type = String)]
    pub eta: Value,
    pub eta_source: String,
}

/// `PATCH /api/v1/loads/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadPatch {
    #[serde(default)]
    /// RFC 3339 or Unix ms.
    #[schema(value_type = Option<String>)]
    pub eta: Option<Value>,
    #[serde(default)]
    pub eta_source: Option<String>,
    #[serde(default)]
    pub planned_volume_l: Option<f64>,
    /// Only `cancelled`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A load with its timeline and its ETA history.
pub struct LoadView {
    pub load: LoadRow,
    pub events: Vec<LoadEventRow>,
    pub etas: Vec<EtaRow>,
}

/// A load change and the ETA command it pushed (none when the change was
/// only an ETA from a lower-ranked source, kept in the history).
pub struct Pushed {
    pub load: LoadView,
    pub command: Option<CommandView>,
    /// Whether the ETA given became the load's (None: none was given).
    pub eta_applied: Option<bool>,
}

/// An ETA: a time from 30 days before `now` to 366 days after.
pub fn eta_value(v: &Value, now: i64) -> Result<i64> {
    let t = time_value("eta", v)?;
    if !(now - ETA_PAST_MS..=now + ETA_FUTURE_MS).contains(&t) {
        return Err(invalid(
            "eta",
            "must be from 30 days ago to 366 days ahead (RFC 3339 or Unix ms)",
        ));
    }
    Ok(t)
}

/// A planned volume: litres, > 0 and at most [`MAX_PLANNED_VOLUME_L`].
pub fn volume_value(v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 && v <= MAX_PLANNED_VOLUME_L {
        Ok(v)
    } else {
        Err(invalid(
            "planned_volume_l",
            format!("must be a number > 0 and at most {MAX_PLANNED_VOLUME_L} (litres)"),
        ))
    }
}

pub fn eta_source(src: &str) -> Result<EtaSource> {
    src.parse().map_err(|_| {
        invalid(
            "eta_source",
            format!("{src:?}: use one of {}", EtaSource::choices()),
        )
    })
}

/// A new load's id.
pub(crate) fn new_load_id() -> crate::domain::LoadId {
    crate::domain::LoadId::generated(fastrand::u64(..))
}

pub async fn create(ctx: &Context, req: LoadRequest, actor: Actor) -> Result<Pushed> {
    ctx.visible(&req.site, "site", || format!("no site {:?}", req.site))?;
    if !ctx.db.site_exists(&req.site).await? {
        return Err(refused(
            Refused::NotFound,
            "site",
            format!("no site {:?}", req.site),
        ));
    }
    if req.reference.trim().is_empty() {
        return Err(invalid("reference", "must not be empty"));
    }
    if req.tanks.is_empty() {
        return Err(invalid("tanks", "give at least one tank"));
    }
    // the operator's tanks (an agent's tanks are added at its hello)
    let mut tanks: Vec<String> = ctx
        .db
        .inventory()
        .list(&crate::store::inventory::TankFilter {
            site: Some(&req.site),
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|(t, _)| t.tank_id)
        .collect();
    for a in ctx.db.assets(&req.site).await? {
        if a.kind == Some(crate::domain::AssetKind::Tank) && !tanks.contains(&a.asset_id) {
            tanks.push(a.asset_id);
        }
    }
    if let Some(t) = req.tanks.iter().find(|t| !tanks.contains(t)) {
        return Err(refused(
            Refused::Unprocessable,
            "tanks",
            format!(
                "{t:?} is not a tank of site {} (tanks: {})",
                req.site,
                tanks.join(", ")
            ),
        ));
    }
    volume_value(req.planned_volume_l)?;
    let source = eta_source(&req.eta_source)?;
    let now = now_ms();
    let eta_ms = eta_value(&req.eta, now)?;
    let load = LoadLine {
        reference: req.reference,
        tanks: req.tanks,
        planned_volume_l: req.planned_volume_l,
        eta_ms: eta_ms.into(),
        eta_source: source,
        carrier: req.carrier,
        product: req.product,
    }
    .planned(&req.site, now);
    let change = LoadWrite::Insert {
        load: &load,
        actor: &actor,
    };
    pushed(ctx, change, Some(true)).await
}

async fn pushed(ctx: &Context, change: LoadWrite<'_>, eta_applied: Option<bool>) -> Result<Pushed> {
    let id = change.row().load_id.clone();
    let fallback = change.row().clone();
    let command = push_eta(ctx, change).await?;
    Ok(Pushed {
        load: view(ctx, &id, fallback).await?,
        command: Some(command),
        eta_applied,
    })
}

async fn view(ctx: &Context, id: &str, fallback: LoadRow) -> Result<LoadView> {
    let load = ctx.db.loads().get(id).await?.unwrap_or(fallback);
    let events = ctx.db.loads().events(id).await?;
    let etas = ctx.db.loads().etas(id).await?;
    Ok(LoadView { load, events, etas })
}

fn not_found(id: &str) -> super::ServiceError {
    refused(Refused::NotFound, "", format!("no load {id:?}"))
}

pub async fn patch(
    ctx: &Context,
    id: &crate::domain::LoadId,
    p: LoadPatch,
    actor: Actor,
) -> Result<Pushed> {
    let mut load = ctx.db.loads().get(id).await?.ok_or_else(|| not_found(id))?;
    ctx.visible(&load.site_id, "", || format!("no load {id:?}"))?;
    if load.status.is_final() {
        return Err(refused(
            Refused::Conflict,
            "status",
            format!("load {id} is {}; it cannot change", load.status),
        ));
    }
    let now = now_ms();
    let mut what = Vec::new();
    let mut given = None;
    if let Some(eta) = &p.eta {
        let src = p.eta_source.as_deref().ok_or_else(|| {
            invalid(
                "eta_source",
                format!("required with a new eta ({})", EtaSource::choices()),
            )
        })?;
        let source = eta_source(src)?;
        let eta_ms = eta_value(eta, now)?;
        // manual > carrier API > email > CSV: a lower rank is history only
        let applied = source.replaces(load.eta_source);
        given = Some(EtaGiven {
            eta_ms: crate::domain::UnixMs::from_ms(eta_ms),
            source,
            applied,
        });
        if applied {
            load.eta_source = source;
            load.eta_ms = eta_ms.into();
            what.push(format!("ETA {} (source {src})", load.eta_ms));
        }
    } else if p.eta_source.is_some() {
        return Err(invalid("eta_source", "given without a new eta"));
    }
    if let Some(v) = p.planned_volume_l {
        load.planned_volume_l = volume_value(v)?;
        what.push(format!("planned volume {v} L"));
    }
    if let Some(st) = &p.status {
        if st.parse::<LoadStatus>() != Ok(LoadStatus::Cancelled) {
            return Err(invalid(
                "status",
                format!("{st:?}: only \"cancelled\" can be set"),
            ));
        }
        load.status = LoadStatus::Cancelled;
        what.push("cancelled".into());
    }
    if what.is_empty() {
        if let Some(g) = given {
            // only an ETA that does not beat the standing one: history
            ctx.db.loads().note_eta(&load, g, &actor, now).await?;
            return Ok(Pushed {
                load: view(ctx, id, load.clone()).await?,
                command: None,
                eta_applied: Some(false),
            });
        }
        return Err(invalid(
            "",
            "nothing to change: give eta (+ eta_source), planned_volume_l or status",
        ));
    }
    load.updated_ms = now.into();
    let what = what.join(", ");
    let change = LoadWrite::Update {
        load: &load,
        what: &what,
        actor: &actor,
        eta: given,
    };
    pushed(ctx, change, given.map(|g| g.applied)).await
}

pub async fn get(ctx: &Context, id: &crate::domain::LoadId) -> Result<LoadView> {
    let loads = ctx.db.loads();
    let load = loads.get(id).await?.ok_or_else(|| not_found(id))?;
    ctx.visible(&load.site_id, "", || format!("no load {id:?}"))?;
    let events = loads.events(id).await?;
    let etas = loads.etas(id).await?;
    Ok(LoadView { load, events, etas })
}

/// By ETA then id, after `after` (the page cursor); two queries.
pub async fn list(
    ctx: &Context,
    f: &crate::store::loads::LoadFilter<'_>,
    after: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<LoadView>> {
    if let Some(site) = f.site {
        ctx.visible(site, "site", || format!("no site {site:?}"))?;
    }
    let loads = ctx.db.loads();
    let sites = ctx.scope.sites();
    let rows = loads.list(f, sites.as_deref(), after, limit).await?;
    let ids: Vec<String> = rows.iter().map(|l| l.load_id.to_string()).collect();
    let mut events = loads.events_of(&ids).await?;
    let mut etas = loads.etas_of(&ids).await?;
    Ok(rows
        .into_iter()
        .map(|l| {
            let events = events.remove(l.load_id.as_str()).unwrap_or_default();
            let etas = etas.remove(l.load_id.as_str()).unwrap_or_default();
            LoadView {
                load: l,
                events,
                etas,
            }
        })
        .collect())
}
