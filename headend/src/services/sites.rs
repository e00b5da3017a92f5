//! The site list as an operator sees it: each site the caller may see,
//! with its agent's session on this replica or another (connected or
//! not) and the trouble its data is in. The REST list and the console
//! read this.

use crate::domain::{SiteId, UnixMs};
use std::collections::HashMap;

use super::sessions::{IngestError, SessionInfo};
use super::{Context, Result, Sessions};
use crate::store::sites::SiteRow;

/// One site and what is known of it now.
#[derive(Clone, Debug)]
pub struct SiteView {
    pub row: SiteRow,
    /// Its agent's session, while connected to this replica.
    pub session: Option<SessionInfo>,
    /// Its agent's session on another replica (PostgreSQL; believed while
    /// that replica's heartbeat is fresh).
    pub elsewhere: Option<crate::store::presence::RemoteSession>,
    /// Its data failing to commit (resent; nothing acknowledged).
    pub ingest_error: Option<IngestError>,
}

/// The sites in the caller's scope, by id, whose id starts with `q` or
/// whose name holds it (any case; all with none).
pub async fn list(ctx: &Context, sessions: &Sessions, q: Option<&str>) -> Result<Vec<SiteView>> {
    let mut rows = ctx.reads.sites().await?;
    rows.retain(|r| ctx.scope.covers(&r.site_id));
    if let Some(q) = q.map(str::to_lowercase) {
        rows.retain(|r| {
            r.site_id.to_lowercase().starts_with(&q) || r.name.to_lowercase().contains(&q)
        });
    }
    rows.sort_by(|a, b| a.site_id.cmp(&b.site_id));
    ctx.metrics
        .sites_failing
        .set(sessions.failing_sites() as i64);
    let mut elsewhere = elsewhere(ctx, sessions).await?;
    Ok(rows
        .into_iter()
        .map(|row| SiteView {
            elsewhere: elsewhere.remove(&row.site_id),
            session: sessions.get(&row.site_id),
            ingest_error: sessions.ingest_error(&row.site_id),
            row,
        })
        .collect())
}

/// One site's page: its assets with their latest values, its devices,
/// deliveries, gaps and certificates, each as the REST routes show them.
pub struct SiteDetail {
    pub view: SiteView,
    pub assets: Vec<crate::store::sites::AssetRow>,
    pub devices: Vec<crate::store::devices::DeviceRow>,
    pub deliveries: Vec<crate::store::reads::DeliveryEventRow>,
    pub gaps: Vec<crate::store::reads::GapRow>,
    pub certs: Vec<crate::store::certs::CertRow>,
    /// The serial the site's agent last reported using.
    pub cert_in_use: Option<String>,
}

/// How many of a site's gaps and certificates its page lists.
pub const DETAIL_ROWS: i64 = 50;
/// How many of its deliveries are read (marked on its charts; the
/// newest [`DETAIL_ROWS`] listed).
pub const MARKS: i64 = 1000;

/// How fresh another replica's heartbeat must be for its sessions to be
/// believed, ms (three beats).
pub const PRESENCE_FRESH_MS: i64 = 30_000;

/// The sessions other replicas hold, by site.
async fn elsewhere(
    ctx: &Context,
    sessions: &Sessions,
) -> Result<HashMap<String, crate::store::presence::RemoteSession>> {
    let fresh = crate::wallclock::now_ms() - PRESENCE_FRESH_MS;
    Ok(ctx
        .db
        .presence()
        .elsewhere(sessions.replica(), fresh)
        .await?
        .into_iter()
        .map(|s| (s.site_id.clone(), s))
        .collect())
}

impl SiteView {
    /// Whether its agent has a session on any replica.
    pub fn connected(&self) -> bool {
        self.session.is_some() || self.elsewhere.is_some()
    }
}

/// `site` as its page shows it; not found outside the caller's scope.
pub async fn detail(ctx: &Context, sessions: &Sessions, site: &SiteId) -> Result<SiteDetail> {
    let missing = || format!("no site {site:?}");
    ctx.visible(site, "site", missing)?;
    let Some(row) = ctx
        .db
        .sites()
        .await?
        .into_iter()
        .find(|r| r.site_id == site.as_str())
    else {
        return Err(super::refused(super::Refused::NotFound, "site", missing()));
    };
    let mut assets = ctx.db.assets(site).await?;
    assets.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    let certs = ctx
        .db
        .certs()
        .of_site(site, UnixMs::from_ms(i64::MAX), DETAIL_ROWS)
        .await?;
    Ok(SiteDetail {
        view: SiteView {
            elsewhere: elsewhere(ctx, sessions).await?.remove(site.as_str()),
            session: sessions.get(site),
            ingest_error: sessions.ingest_error(site),
            row,
        },
        assets,
        devices: ctx.db.devices(site).await?,
        deliveries: ctx.db.delivery_events(site, MARKS).await?,
        gaps: ctx.db.gaps(site, DETAIL_ROWS).await?,
        cert_in_use: ctx.db.certs().status(site).await?.map(|s| s.serial),
        certs,
    })
}

/// A chart's data: one field's raw readings (newest [`SERIES_LIMIT`]),
/// or its hourly rollups merged into buckets of `bucket_ms` (an hour, or
/// more when the window holds more hours than a chart has columns).
pub enum Series {
    Raw(Vec<crate::store::ReadingRow>),
    Rollups {
        rows: Vec<crate::store::RollupRow>,
        bucket_ms: i64,
    },
}

/// The most points a chart asks for.
pub const SERIES_LIMIT: i64 = 10_000;
/// About as many columns as a chart draws: a longer window's hourly
/// rollups are merged in SQL into this many buckets at most.
pub const CHART_COLUMNS: i64 = 720;
const HOUR_MS: i64 = 3_600_000;

/// The bucket of a rollup chart of `window_ms`: whole hours, at most
/// [`CHART_COLUMNS`] of them in the window.
pub fn bucket_of(window_ms: i64) -> i64 {
    let hours = window_ms.max(0) / HOUR_MS;
    ((hours + CHART_COLUMNS - 1) / CHART_COLUMNS).max(1) * HOUR_MS
}

/// One field's history for a chart; not found outside the scope.
pub async fn series(
    ctx: &Context,
    site: &SiteId,
    asset: &str,
    field: &str,
    (from_ms, to_ms): (UnixMs, UnixMs),
    raw: bool,
) -> Result<Series> {
    ctx.visible(site, "site", || format!("no site {site:?}"))?;
    if raw {
        let mut rows = ctx
            .reads
            .readings(&crate::store::ReadingQuery {
                site,
                asset,
                field: Some(field),
                from_ms,
                to_ms,
                limit: SERIES_LIMIT,
                newest_first: true,
            })
            .await?;
        rows.reverse();
        return Ok(Series::Raw(rows));
    }
    let q = crate::store::RollupQuery {
        site,
        asset,
        field: Some(field),
        from_ms,
        to_ms,
        limit: SERIES_LIMIT,
    };
    let bucket_ms = bucket_of(to_ms.since(from_ms));
    let rows = if bucket_ms == HOUR_MS {
        ctx.reads.rollups(&q).await?
    } else {
        ctx.reads.rollup_buckets(&q, bucket_ms).await?
    };
    Ok(Series::Rollups { rows, bucket_ms })
}

/// A site's deliveries (newest [`MARKS`]), to mark on a chart.
pub async fn deliveries(
    ctx: &Context,
    site: &SiteId,
) -> Result<Vec<crate::store::reads::DeliveryEventRow>> {
    ctx.visible(site, "site", || format!("no site {site:?}"))?;
    Ok(ctx.reads.delivery_events(site, MARKS).await?)
}

/// Each site's device health and certificate, for the site list.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    pub devices_up: i64,
    pub devices: i64,
    /// When the certificate its agent last reported expires.
    pub cert_not_after_ms: Option<UnixMs>,
}

/// The health of the caller's sites, by site (two queries for the fleet).
pub async fn health(ctx: &Context) -> Result<std::collections::HashMap<String, Health>> {
    let sites = ctx.scope.sites();
    let mut out: std::collections::HashMap<String, Health> = std::collections::HashMap::new();
    for (site, up, all) in ctx.db.device_counts(sites.as_deref()).await? {
        let h = out.entry(site).or_default();
        h.devices_up = up;
        h.devices = all;
    }
    for c in ctx
        .db
        .certs()
        .expiring(UnixMs::from_ms(i64::MAX), sites.as_deref(), 100_000)
        .await?
    {
        out.entry(c.site_id).or_default().cert_not_after_ms = Some(c.not_after_ms);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_reads_hourly_rollups_up_to_a_month_and_whole_hour_buckets_beyond() {
        const DAY: i64 = 24 * HOUR_MS;
        assert_eq!(bucket_of(7 * DAY), HOUR_MS);
        assert_eq!(bucket_of(30 * DAY), HOUR_MS);
        assert_eq!(bucket_of(31 * DAY), 2 * HOUR_MS);
        // a year: 8,760 hours in 674 buckets of 13 hours (<= 720)
        assert_eq!(bucket_of(365 * DAY), 13 * HOUR_MS);
        assert!(365 * DAY / bucket_of(365 * DAY) <= CHART_COLUMNS);
        assert_eq!(bucket_of(0), HOUR_MS);
        assert_eq!(bucket_of(-5), HOUR_MS);
    }
}
