//! Sites and their assets as the agents' Hellos declared them, with the
//! latest value of each point: what `/api/v1/sites` and `/assets` read,
//! and what commands resolve their targets against. (Split from `db.rs`,
//! which keeps the pool, hellos and ingest.)

use crate::domain::UnixMs;
use sqlx::Row;

use crate::Error;
use crate::domain::SiteId;
use crate::store::Db;

impl Db {
    /// Writable points of the assets of a site: (asset, capacity, writable JSON).
    /// Each asset's capacity and writable points, as its agent's hello said.
    pub async fn writable_points(
        &self,
        site: &SiteId,
    ) -> Result<Vec<(String, f64, Vec<Writable>)>, Error> {
        let rows = sqlx::query(
            "SELECT asset_id, capacity, writable FROM assets WHERE site_id = $1 ORDER BY asset_id",
        )
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let asset: String = r.try_get(0)?;
                let text: String = r.try_get(2)?;
                let w = super::json::parse("assets.writable", &format!("{site}/{asset}"), &text)?;
                Ok((asset, r.try_get(1)?, w))
            })
            .collect()
    }

    /// Sites that have an asset `asset`.
    pub async fn sites_with_asset(&self, asset: &str) -> Result<Vec<crate::domain::SiteId>, Error> {
        Ok(
            sqlx::query_scalar("SELECT site_id FROM assets WHERE asset_id = $1 ORDER BY site_id")
                .bind(asset)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Newest good reading time of any field of an asset (Unix ms), if any.
    pub async fn asset_last_good_ms(
        &self,
        site: &SiteId,
        asset: &str,
    ) -> Result<Option<i64>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(good_ts_ms) FROM latest_values WHERE site_id = $1 AND asset_id = $2 AND quality = 'good'",
        )
        .bind(site)
        .bind(asset)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn sites(&self) -> Result<Vec<SiteRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT s.site_id, s.first_seen_ms, s.last_seen_ms, s.agent_version, s.name, s.time_zone,
                    s.clock_skew_ms, s.clock_checked_ms,
                    (SELECT COUNT(*) FROM assets a WHERE a.site_id = s.site_id) AS assets
             FROM sites s ORDER BY s.site_id",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Records the skew measured at a session's Hello (see `domain::clock`).
    pub async fn record_clock(&self, site: &SiteId, skew_ms: i64, at_ms: i64) -> Result<(), Error> {
        let (_w, mut tx) = self.begin_write().await?;
        sqlx::query(
            "UPDATE sites SET clock_skew_ms = $2, clock_checked_ms = $3 WHERE site_id = $1",
        )
        .bind(site)
        .bind(skew_ms)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn site_exists(&self, site: &SiteId) -> Result<bool, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sites WHERE site_id = $1")
            .bind(site)
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }

    pub async fn assets(&self, site: &SiteId) -> Result<Vec<AssetRow>, Error> {
        let mut assets: Vec<AssetRow> = sqlx::query_as(
            "SELECT asset_id, kind, name, product, capacity, capacity_unit, details FROM assets WHERE site_id = $1 ORDER BY asset_id",
        )
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        let latest: Vec<LatestRow> = sqlx::query_as(
            "SELECT asset_id, field, value, unit, quality, error, source_ts_ms, received_ts_ms, good_ts_ms, source
             FROM latest_values WHERE site_id = $1 ORDER BY asset_id, field",
        )
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        for v in latest {
            match assets.iter_mut().find(|a| a.asset_id == v.asset_id) {
                Some(a) => a.fields.push(v),
                // readings for an asset the config did not declare: show
                // it anyway (the agent's own conditions as the agent)
                None => assets.push(AssetRow {
                    asset_id: v.asset_id.clone(),
                    kind: (v.asset_id == tankwatch_proto::AGENT_ASSET)
                        .then_some(crate::domain::AssetKind::Agent),
                    name: if v.asset_id == tankwatch_proto::AGENT_ASSET {
                        "Site agent".into()
                    } else {
                        String::new()
                    },
                    product: String::new(),
                    capacity: 0.0,
                    capacity_unit: String::new(),
                    details: super::json::JsonText(super::json::Doc(serde_json::json!({}))),
                    fields: vec![v],
                }),
            }
        }
        Ok(assets)
    }
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct SiteRow {
    pub site_id: String,
    pub first_seen_ms: UnixMs,
    pub last_seen_ms: UnixMs,
    pub agent_version: String,
    /// As set by `PATCH /api/v1/sites/{site}` (empty until then).
    pub name: String,
    pub time_zone: String,
    /// The site's clock against the headend's at its last session (ms;
    /// positive: ahead), and when it was measured.
    pub clock_skew_ms: Option<i64>,
    pub clock_checked_ms: Option<UnixMs>,
    pub assets: i64,
}

#[derive(sqlx::FromRow)]
pub struct AssetRow {
    pub asset_id: String,
    /// As the agent's hello declared it; None for an asset with readings
    /// that no hello declared (shown as `unknown`).
    pub kind: Option<crate::domain::AssetKind>,
    pub name: String,
    pub product: String,
    pub capacity: f64,
    pub capacity_unit: String,
    pub details: crate::store::json::Document,
    #[sqlx(skip)]
    pub fields: Vec<LatestRow>,
}

#[derive(sqlx::FromRow)]
pub struct LatestRow {
    pub asset_id: String,
    pub field: String,
    pub value: f64,
    pub unit: String,
    pub quality: crate::domain::Quality,
    pub error: String,
    pub source_ts_ms: UnixMs,
    pub received_ts_ms: UnixMs,
    pub good_ts_ms: UnixMs,
    pub source: String,
}

/// A writable point as an agent's hello reported it (`assets.writable`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Writable {
    pub field: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}
