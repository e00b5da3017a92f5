//! A site's hello: the site, its agent version and assets, and where its
//! log's acknowledgement stands.

use tankwatch_proto::v1;

use crate::Error;
use crate::store::Db;
use crate::wallclock::now_ms;

/// What a hello tells us about a site.
pub struct HelloInfo<'a> {
    pub site: &'a str,
    pub hello: &'a v1::Hello,
}

fn log_id_sql(log_id: u64) -> i64 {
    log_id as i64
}

/// What a hello says about its site (agent version and assets), as a
/// digest: FNV-1a 64 over a canonical text (map keys sorted), so equal
/// hellos give equal digests on every build and machine.
pub fn hello_digest(h: &v1::Hello) -> String {
    let assets: Vec<serde_json::Value> = h
        .assets
        .iter()
        .map(|a| {
            let details: std::collections::BTreeMap<&String, &String> = a.details.iter().collect();
            serde_json::json!([
                a.asset_id,
                a.kind,
                a.name,
                a.product,
                a.capacity,
                a.capacity_unit,
                details,
                a.writable
                    .iter()
                    .map(|w| serde_json::json!([w.field, w.min, w.max, w.default]))
                    .collect::<Vec<_>>(),
            ])
        })
        .collect();
    let text = serde_json::json!([h.agent_version, assets]).to_string();
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        x ^= u64::from(b);
        x = x.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{x:016x}")
}

impl Db {
    /// Records a hello: the site, its agent version and its assets. Returns
    /// the log's committed high-water mark.
    ///
    /// A hello that says what the stored one said (its digest matches: the
    /// usual reconnect) is answered by a read alone. A reconnect storm of
    /// thousands of agents then costs no writer transaction (on SQLite, no
    /// fsync) per session; `last_seen` moves with the site's batches.
    pub async fn record_hello(&self, h: HelloInfo<'_>) -> Result<u64, Error> {
        let digest = hello_digest(h.hello);
        let known: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT s.hello_digest, l.acked_through FROM sites s
               LEFT JOIN agent_logs l ON l.site_id = s.site_id AND l.log_id = $2
             WHERE s.site_id = $1",
        )
        .bind(h.site)
        .bind(log_id_sql(h.hello.log_id))
        .fetch_optional(&self.pool)
        .await?;
        if let Some((d, acked)) = known
            && d == digest
        {
            return Ok(acked.unwrap_or(0).max(0) as u64);
        }
        let now = now_ms();
        let (_w, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sites (site_id, first_seen_ms, last_seen_ms, agent_version, hello_digest) VALUES ($1, $2, $2, $3, $4)
             ON CONFLICT (site_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms, agent_version = excluded.agent_version,
               hello_digest = excluded.hello_digest,
               first_seen_ms = CASE WHEN sites.first_seen_ms = 0 THEN excluded.first_seen_ms ELSE sites.first_seen_ms END",
        )
        .bind(h.site)
        .bind(now)
        .bind(&h.hello.agent_version)
        .bind(&digest)
        .execute(&mut *tx)
        .await?;
        for a in &h.hello.assets {
            // checked at the Hello (ingest refuses an unknown kind)
            let kind = crate::domain::AssetKind::from_proto(a.kind)
                .map_err(|e| Error::Db(format!("asset {}: {e}", a.asset_id)))?;
            let details = serde_json::to_string(&a.details).unwrap_or_else(|_| "{}".into());
            let writable = serde_json::Value::Array(
                a.writable
                    .iter()
                    .map(|w| {
                        serde_json::json!({ "field": w.field, "min": w.min, "max": w.max, "default": w.default })
                    })
                    .collect(),
            )
            .to_string();
            sqlx::query(
                "INSERT INTO assets (site_id, asset_id, kind, name, product, capacity, capacity_unit, details, updated_ms, writable)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (site_id, asset_id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                   product = excluded.product, capacity = excluded.capacity, capacity_unit = excluded.capacity_unit,
                   details = excluded.details, updated_ms = excluded.updated_ms, writable = excluded.writable",
            )
            .bind(h.site)
            .bind(&a.asset_id)
            .bind(kind)
            .bind(&a.name)
            .bind(&a.product)
            .bind(a.capacity)
            .bind(&a.capacity_unit)
            .bind(details)
            .bind(now)
            .bind(writable)
            .execute(&mut *tx)
            .await?;
            // a tank the operator has not configured yet: the agent's
            // capacity and product, default levels; never overwritten here
            let litres = match crate::domain::asset::capacity_litres(a.capacity, &a.capacity_unit) {
                Ok(l) => Some(l),
                Err(e) if kind == crate::domain::AssetKind::Tank => {
                    tracing::warn!(site = %h.site, tank = %a.asset_id, error = %e,
                        "a tank's capacity is in a unit this headend cannot read; set the tank up with PUT /api/v1/sites/SITE/tanks/TANK or fix the agent's capacity_unit");
                    None
                }
                Err(_) => None,
            };
            if let Some(cap) = litres.filter(|c| c.is_finite() && *c > 0.0)
                && kind == crate::domain::AssetKind::Tank
            {
                sqlx::query(
                    "INSERT INTO tanks (site_id, tank_id, name, product, capacity_l, low_l, critical_l, floor_l, water_limit_mm, created_ms, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, NULL, $8, $8) ON CONFLICT (site_id, tank_id) DO NOTHING",
                )
                .bind(h.site)
                .bind(&a.asset_id)
                .bind(&a.name)
                .bind(&a.product)
                .bind(cap)
                .bind(cap * 0.25)
                .bind(cap * 0.10)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        let acked: Option<i64> = sqlx::query_scalar(
            "SELECT acked_through FROM agent_logs WHERE site_id = $1 AND log_id = $2",
        )
        .bind(h.site)
        .bind(log_id_sql(h.hello.log_id))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(acked.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_digest_depends_on_what_the_hello_says_not_on_map_order() {
        let asset = |pairs: &[(&str, &str)], cap: f64| v1::Asset {
            asset_id: "tank-1".into(),
            capacity: cap,
            details: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let hello = |a: v1::Asset| v1::Hello {
            agent_version: "1".into(),
            assets: vec![a],
            ..Default::default()
        };
        let many: Vec<(String, String)> = (0..50)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut rev = pairs.clone();
        rev.reverse();
        let d = hello_digest(&hello(asset(&pairs, 1.0)));
        assert_eq!(d, hello_digest(&hello(asset(&rev, 1.0))));
        assert_ne!(d, hello_digest(&hello(asset(&pairs, 2.0))));
        assert_ne!(d, hello_digest(&hello(asset(&pairs[1..], 1.0))));
        assert_eq!(d.len(), 16);
    }
}
