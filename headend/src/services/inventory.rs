//! Sites' and tanks' settings and the reads of the maintained state: the
//! tank list and the risk list. Observations pushed and imported are
//! [`super::observations`]'s.

use std::collections::HashMap;

use serde::Deserialize;

use super::{Context, Refused, Result, ServiceError, invalid, refused};
use crate::domain::calendar::{Calendar, Holiday};
use crate::domain::{SiteId, UnixMs};
use crate::store::inventory::{SiteCalendarRow, SiteSettings, StateRow, TankFilter, TankRow};
use crate::store::json::JsonText;
use crate::wallclock::now_ms;

/// Largest tank, litres.
pub const MAX_CAPACITY_L: f64 = 1_000_000.0;

/// `POST /api/v1/sites`, `PATCH /api/v1/sites/{site}`.
#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SiteRequest {
    /// Only when creating: the site id its agent's certificate will carry.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// IANA zone, e.g. `Europe/Berlin` (weekday and hour patterns are local).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Data older than this is stale, hours (0.25 to 168; default 6).
    #[serde(default)]
    pub stale_after_h: Option<f64>,
    /// The site's public holidays, local dates (`YYYY-MM-DD`, at most
    /// 200): they sell like a Sunday, in the history the forecast learns
    /// from and in the days it walks ahead. Replaces the list.
    #[serde(default)]
    pub holidays: Option<Vec<String>>,
}

/// `PUT /api/v1/sites/{site}/tanks/{tank}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TankRequest {
    #[serde(default)]
    pub name: String,
    pub product: String,
    pub capacity_l: f64,
    /// Alert levels, litres (default 25 % and 10 % of capacity).
    #[serde(default)]
    pub low_l: Option<f64>,
    #[serde(default)]
    pub critical_l: Option<f64>,
    /// The unusable bottom, litres: runout is reaching it (default 0).
    #[serde(default)]
    pub floor_l: Option<f64>,
    #[serde(default)]
    pub water_limit_mm: Option<f64>,
}

fn site_id(v: &str, field: &str) -> Result<String> {
    tankwatch_tls::validate_site_id(v)
        .map(|_| v.to_string())
        .map_err(|e| invalid(field, e.to_string()))
}

pub(super) fn text(field: &str, v: &str, max: usize) -> Result<String> {
    if v.chars().count() > max {
        return Err(invalid(field, format!("at most {max} characters")));
    }
    Ok(v.trim().to_string())
}

fn time_zone(v: &str) -> Result<String> {
    jiff::tz::TimeZone::get(v)
        .map(|_| v.to_string())
        .map_err(|_| {
            invalid(
                "time_zone",
                format!("{v:?} is not an IANA time zone (e.g. Europe/Berlin, UTC)"),
            )
        })
}

fn holidays(v: &[String]) -> Result<JsonText<Vec<Holiday>>> {
    Calendar::parse_holidays(v)
        .map(JsonText)
        .map_err(|e| invalid("holidays", e.to_string()))
}

fn stale_after(h: f64) -> Result<i64> {
    if h.is_finite() && (0.25..=168.0).contains(&h) {
        Ok((h * 3_600_000.0).round() as i64)
    } else {
        Err(invalid("stale_after_h", "must be from 0.25 to 168 hours"))
    }
}

pub async fn create_site(ctx: &Context, r: SiteRequest) -> Result<SiteSettings> {
    if !ctx.scope.is_all() {
        return Err(refused(
            Refused::Invalid,
            "site",
            "creating a site needs a credential for all sites",
        ));
    }
    let id = site_id(
        r.site
            .as_deref()
            .ok_or_else(|| invalid("site", "required"))?,
        "site",
    )?;
    let s = SiteSettings {
        site_id: id.clone(),
        name: text("name", r.name.as_deref().unwrap_or(""), 200)?,
        time_zone: time_zone(r.time_zone.as_deref().unwrap_or("UTC"))?,
        stale_after_ms: stale_after(r.stale_after_h.unwrap_or(6.0))?,
        holidays: holidays(r.holidays.as_deref().unwrap_or_default())?,
        first_seen_ms: UnixMs::from_ms(0),
        last_seen_ms: UnixMs::from_ms(0),
    };
    if !ctx.db.inventory().create_site(&s).await? {
        return Err(refused(
            Refused::Conflict,
            "site",
            format!("site {id} exists"),
        ));
    }
    Ok(s)
}

pub async fn site(ctx: &Context, site: &SiteId) -> Result<SiteSettings> {
    ctx.visible(site, "", || format!("no site {site:?}"))?;
    ctx.db
        .inventory()
        .site(site)
        .await?
        .ok_or_else(|| refused(Refused::NotFound, "", format!("no site {site:?}")))
}

pub async fn update_site(
    ctx: &Context,
    site_: &SiteId,
    r: SiteRequest,
) -> Result<(SiteSettings, SiteSettings)> {
    let before = match site(ctx, site_).await {
        // a stored holiday list that does not parse is replaced, not a
        // dead end (the before of the audit shows none)
        Err(ServiceError::Store(e)) if r.holidays.is_some() && e.is_corrupt("holidays") => ctx
            .db
            .inventory()
            .site_without_holidays(site_)
            .await?
            .ok_or_else(|| refused(Refused::NotFound, "", format!("no site {site_:?}")))?,
        other => other?,
    };
    if r.site.is_some() {
        return Err(invalid("site", "a site id cannot change"));
    }
    let mut s = before.clone();
    if let Some(n) = &r.name {
        s.name = text("name", n, 200)?;
    }
    if let Some(z) = &r.time_zone {
        s.time_zone = time_zone(z)?;
    }
    if let Some(h) = r.stale_after_h {
        s.stale_after_ms = stale_after(h)?;
    }
    if let Some(h) = &r.holidays {
        s.holidays = holidays(h)?;
    }
    ctx.db.inventory().update_site(&s).await?;
    Ok((before, s))
}

fn litres(field: &str, v: f64, max: f64) -> Result<f64> {
    if v.is_finite() && (0.0..=max).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            field,
            format!("must be a number from 0 to {max} (litres)"),
        ))
    }
}

/// Creates or replaces a tank's settings; true if it was new.
pub async fn put_tank(
    ctx: &Context,
    site_: &SiteId,
    tank: &str,
    r: TankRequest,
) -> Result<(TankRow, bool)> {
    site(ctx, site_).await?;
    tankwatch_tls::validate_site_id(tank)
        .map_err(|_| invalid("tank", "a tank id is 1-64 of [A-Za-z0-9._-]"))?;
    let cap = litres("capacity_l", r.capacity_l, MAX_CAPACITY_L)?;
    if cap <= 0.0 {
        return Err(invalid("capacity_l", "must be more than 0"));
    }
    let low = litres("low_l", r.low_l.unwrap_or(cap * 0.25), cap)?;
    let critical = litres("critical_l", r.critical_l.unwrap_or(cap * 0.10), cap)?;
    let floor = litres("floor_l", r.floor_l.unwrap_or(0.0), cap)?;
    if !(floor <= critical && critical <= low) {
        return Err(invalid(
            "critical_l",
            "levels must be ordered: floor_l <= critical_l <= low_l <= capacity_l",
        ));
    }
    if let Some(w) = r.water_limit_mm
        && !(w.is_finite() && (0.0..=5_000.0).contains(&w))
    {
        return Err(invalid("water_limit_mm", "must be from 0 to 5000 mm"));
    }
    let product = text("product", &r.product, 64)?;
    if product.is_empty() {
        return Err(invalid("product", "must not be empty"));
    }
    let now = now_ms();
    let old = ctx.db.inventory().tank(site_, tank).await?;
    let row = TankRow {
        site_id: site_.clone(),
        tank_id: tank.into(),
        name: text("name", &r.name, 200)?,
        product,
        capacity_l: cap,
        low_l: low,
        critical_l: critical,
        floor_l: floor,
        water_limit_mm: r.water_limit_mm,
        created_ms: old.as_ref().map_or(UnixMs::from_ms(now), |t| t.created_ms),
        updated_ms: UnixMs::from_ms(now),
    };
    let new = ctx.db.inventory().put_tank(&row).await?;
    Ok((row, new))
}

/// The tanks the caller may see that match `f` (its `sites` is the
/// caller's scope, whatever it was given), with their states; a `site`
/// outside the scope is not found.
pub async fn tanks(ctx: &Context, f: TankFilter<'_>) -> Result<Vec<(TankRow, Option<StateRow>)>> {
    if let Some(site) = f.site {
        ctx.visible(site, "site", || format!("no site {site:?}"))?;
    }
    let sites = ctx.scope.sites();
    Ok(ctx
        .reads
        .inventory()
        .list(&TankFilter {
            sites: sites.as_deref(),
            ..f
        })
        .await?)
}

/// The zone and freshness window of each site the caller may see (its
/// holidays unparsed: one site's corrupt list does not fail every list).
pub async fn site_settings(ctx: &Context) -> Result<HashMap<String, SiteCalendarRow>> {
    Ok(ctx
        .db
        .inventory()
        .calendars()
        .await?
        .into_iter()
        .filter(|st| ctx.scope.covers(&st.site_id))
        .map(|st| (st.site_id.clone(), st))
        .collect())
}

/// Each site's staleness threshold, ms (of the sites the caller may see).
pub async fn stale_thresholds(ctx: &Context) -> Result<HashMap<String, i64>> {
    Ok(site_settings(ctx)
        .await?
        .into_iter()
        .map(|(site, st)| (site, st.stale_after_ms))
        .collect())
}

pub async fn tank(
    ctx: &Context,
    site_: &SiteId,
    tank: &str,
) -> Result<(TankRow, Option<StateRow>)> {
    site(ctx, site_).await?;
    let keys = [(site_.to_string(), tank.to_string())];
    let t = ctx.db.inventory().tank(site_, tank).await?;
    if t.is_none() {
        return Err(refused(
            Refused::NotFound,
            "",
            format!("no tank {tank:?} at site {site_}"),
        ));
    }
    let _ = keys;
    let mut v = ctx
        .db
        .inventory()
        .list(&crate::store::inventory::TankFilter {
            site: Some(site_),
            after: None,
            limit: 10_000,
            ..Default::default()
        })
        .await?;
    v.retain(|(t, _)| t.tank_id == tank);
    v.pop().ok_or_else(|| {
        refused(
            Refused::NotFound,
            "",
            format!("no tank {tank:?} at site {site_}"),
        )
    })
}

/// Removes a tank (its state and observations too); false if there was none.
pub async fn delete_tank(ctx: &Context, site_: &SiteId, tank: &str) -> Result<bool> {
    site(ctx, site_).await?;
    Ok(ctx.db.inventory().delete_tank(site_, tank).await?)
}
