//! The inventory aggregate in SQL: site settings, tanks, observations that
//! do not come from the gauge, and the maintained state of each tank (what
//! the tank list and the risk list read: never raw readings).

use crate::Error;
use crate::domain::SiteId;
use crate::domain::UnixMs;
use crate::domain::calendar::Holiday;
use crate::domain::forecast::{Basis, Risk};
use crate::domain::inventory::{FreshnessKind, ObsSource};
use crate::store::commands::opt_f64;
use crate::store::{Db, json};

/// A site's operator settings.
#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct SiteSettings {
    pub site_id: String,
    pub name: String,
    pub time_zone: String,
    pub stale_after_ms: i64,
    /// Days that sell like a Sunday (a JSON array of local dates).
    pub holidays: json::JsonText<Vec<Holiday>>,
    /// 0 while no agent has said hello.
    pub first_seen_ms: UnixMs,
    pub last_seen_ms: UnixMs,
}

/// What the lists and the inventory job read of every site: its zone, its
/// freshness window and its holidays as stored text, parsed only where
/// they are used (a corrupt list is that site's problem, not every
/// list's).
#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct SiteCalendarRow {
    pub site_id: String,
    pub time_zone: String,
    pub stale_after_ms: i64,
    pub holidays: String,
}

const SITE_COLUMNS: &str =
    "site_id, name, time_zone, stale_after_ms, holidays, first_seen_ms, last_seen_ms";

/// A tank as the operator configured it.
#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct TankRow {
    pub site_id: SiteId,
    pub tank_id: String,
    pub name: String,
    pub product: String,
    pub capacity_l: f64,
    pub low_l: f64,
    pub critical_l: f64,
    pub floor_l: f64,
    pub water_limit_mm: Option<f64>,
    pub created_ms: UnixMs,
    pub updated_ms: UnixMs,
}

/// What the inventory job last concluded of a tank.
#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct StateRow {
    pub site_id: String,
    pub tank_id: String,
    /// What the tank holds now: the observation's volume, or its
    /// projection while the source is silent (`source` = projected).
    pub volume_l: Option<f64>,
    /// The observation's own volume.
    pub reading_l: Option<f64>,
    /// Since when the gauge has shown `reading_l` (to the last bit).
    pub flat_since_ms: Option<UnixMs>,
    pub water_mm: Option<f64>,
    pub observed_ms: Option<UnixMs>,
    pub source: Option<ObsSource>,
    pub confidence: Option<f64>,
    pub freshness: FreshnessKind,
    /// Comma-separated plausibility flags.
    pub flags: String,
    pub rate_lph: Option<f64>,
    pub rate_basis: Option<Basis>,
    pub rate_confidence: Option<f64>,
    pub hours_to_runout: Option<f64>,
    pub runout_ms: Option<UnixMs>,
    /// The runout's p10 and p90 (it comes before p10 one time in ten).
    pub runout_p10_ms: Option<UnixMs>,
    pub runout_p90_ms: Option<UnixMs>,
    pub risk: Risk,
    pub next_load_id: Option<String>,
    pub next_eta_ms: Option<UnixMs>,
    pub margin_h: Option<f64>,
    pub evaluated_ms: UnixMs,
}

const TANK_COLUMNS: &str = "site_id, tank_id, name, product, capacity_l, low_l, critical_l, floor_l, water_limit_mm, created_ms, updated_ms";
const STATE_COLUMNS: &str = "site_id, tank_id, volume_l, reading_l, flat_since_ms, water_mm, observed_ms, source, confidence, freshness, flags, rate_lph, rate_basis, rate_confidence, hours_to_runout, runout_ms, runout_p10_ms, runout_p90_ms, risk, next_load_id, next_eta_ms, margin_h, evaluated_ms";

/// One observation to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewObservation {
    pub site_id: String,
    pub tank_id: String,
    pub source: ObsSource,
    pub at_ms: UnixMs,
    pub volume_l: f64,
    pub water_mm: Option<f64>,
    pub confidence: f64,
    pub note: String,
}

/// What became of one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Added,
    /// The same observation was already stored (a repeated push or import).
    Unchanged,
    /// Another value is stored for the same tank, source and time.
    Conflict,
}

/// An observation row as stored (its source parsed apart).
#[derive(sqlx::FromRow)]
struct StoredObservation {
    site_id: String,
    tank_id: String,
    source: String,
    at_ms: i64,
    volume_l: f64,
    water_mm: Option<f64>,
    confidence: f64,
}

#[derive(sqlx::FromRow)]
struct StoredNote {
    source: String,
    at_ms: i64,
    volume_l: f64,
    water_mm: Option<f64>,
    note: String,
    actor: String,
}

/// One observation pushed, imported or dipped at a tank.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservationRow {
    pub source: ObsSource,
    pub at_ms: UnixMs,
    pub volume_l: f64,
    pub water_mm: Option<f64>,
    pub note: String,
    pub actor: String,
}

/// The newest observation of one source at one tank.
#[derive(Clone, Debug, PartialEq)]
pub struct LatestObservation {
    pub site_id: String,
    pub tank_id: String,
    pub source: ObsSource,
    pub at_ms: UnixMs,
    pub volume_l: f64,
    pub water_mm: Option<f64>,
    pub confidence: f64,
}

/// Filters of the tank list.
#[derive(Clone, Debug, Default)]
pub struct TankFilter<'a> {
    pub site: Option<&'a str>,
    /// A prefix of the site id or a part of its name.
    pub q: Option<&'a str>,
    pub product: Option<&'a str>,
    pub risk: Option<Risk>,
    pub freshness: Option<FreshnessKind>,
    /// A caller's scope.
    pub sites: Option<&'a [String]>,
    /// Page cursor: after this (site, tank).
    pub after: Option<(&'a str, &'a str)>,
    pub limit: i64,
}

/// The inventory aggregate: `db.inventory()`.
#[derive(Clone, Copy)]
pub struct Inventory<'a>(&'a Db);

impl Db {
    pub fn inventory(&self) -> Inventory<'_> {
        Inventory(self)
    }
}

impl Inventory<'_> {
    pub async fn site(&self, site: &SiteId) -> Result<Option<SiteSettings>, Error> {
        let sql = format!("SELECT {SITE_COLUMNS} FROM sites WHERE site_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .fetch_optional(self.0.pool())
            .await?)
    }

    /// A site's settings without its holidays (`[]`): how a corrupt stored
    /// list is replaced through the API.
    pub async fn site_without_holidays(
        &self,
        site: &SiteId,
    ) -> Result<Option<SiteSettings>, Error> {
        Ok(sqlx::query_as(
            "SELECT site_id, name, time_zone, stale_after_ms, CAST('[]' AS TEXT) AS holidays, first_seen_ms, last_seen_ms
             FROM sites WHERE site_id = $1",
        )
        .bind(site)
        .fetch_optional(self.0.pool())
        .await?)
    }

    /// Every site's zone, freshness window and holidays (as text).
    pub async fn calendars(&self) -> Result<Vec<SiteCalendarRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT site_id, time_zone, stale_after_ms, holidays FROM sites ORDER BY site_id",
        )
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Creates a site before its agent's first hello; false if it exists.
    pub async fn create_site(&self, s: &SiteSettings) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "INSERT INTO sites (site_id, first_seen_ms, last_seen_ms, agent_version, name, time_zone, stale_after_ms, holidays)
             VALUES ($1, 0, 0, '', $2, $3, $4, $5) ON CONFLICT (site_id) DO NOTHING",
        )
        .bind(&s.site_id)
        .bind(&s.name)
        .bind(&s.time_zone)
        .bind(s.stale_after_ms)
        .bind(&s.holidays)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn update_site(&self, s: &SiteSettings) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "UPDATE sites SET name = $2, time_zone = $3, stale_after_ms = $4, holidays = $5 WHERE site_id = $1",
        )
        .bind(&s.site_id)
        .bind(&s.name)
        .bind(&s.time_zone)
        .bind(s.stale_after_ms)
        .bind(&s.holidays)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn tank(&self, site: &SiteId, tank: &str) -> Result<Option<TankRow>, Error> {
        let sql = format!("SELECT {TANK_COLUMNS} FROM tanks WHERE site_id = $1 AND tank_id = $2");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .bind(tank)
            .fetch_optional(self.0.pool())
            .await?)
    }

    /// Every tank (the inventory job's list).
    pub async fn all_tanks(&self) -> Result<Vec<TankRow>, Error> {
        let sql = format!("SELECT {TANK_COLUMNS} FROM tanks ORDER BY site_id, tank_id");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.0.pool())
            .await?)
    }

    /// Inserts or replaces a tank's settings; true if it was new.
    pub async fn put_tank(&self, t: &TankRow) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let existed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM tanks WHERE site_id = $1 AND tank_id = $2")
                .bind(&t.site_id)
                .bind(&t.tank_id)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO tanks (site_id, tank_id, name, product, capacity_l, low_l, critical_l, floor_l, water_limit_mm, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CAST($9 AS DOUBLE PRECISION), $10, $11)
             ON CONFLICT (site_id, tank_id) DO UPDATE SET name = excluded.name, product = excluded.product,
               capacity_l = excluded.capacity_l, low_l = excluded.low_l, critical_l = excluded.critical_l,
               floor_l = excluded.floor_l, water_limit_mm = excluded.water_limit_mm, updated_ms = excluded.updated_ms",
        )
        .bind(&t.site_id)
        .bind(&t.tank_id)
        .bind(&t.name)
        .bind(&t.product)
        .bind(t.capacity_l)
        .bind(t.low_l)
        .bind(t.critical_l)
        .bind(t.floor_l)
        .bind(opt_f64(t.water_limit_mm))
        .bind(t.created_ms)
        .bind(t.updated_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(existed == 0)
    }

    /// Removes a tank, its state and its observations; false if none.
    pub async fn delete_tank(&self, site: &SiteId, tank: &str) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query("DELETE FROM tanks WHERE site_id = $1 AND tank_id = $2")
            .bind(site)
            .bind(tank)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for table in ["tank_state", "observations"] {
            let sql = format!("DELETE FROM {table} WHERE site_id = $1 AND tank_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(site)
                .bind(tank)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Tanks with their state, filtered, by (site, tank), one page.
    pub async fn list(
        &self,
        f: &TankFilter<'_>,
    ) -> Result<Vec<(TankRow, Option<StateRow>)>, Error> {
        let (after_site, after_tank) = f.after.unwrap_or(("", ""));
        let sql = format!(
            "SELECT t.site_id, t.tank_id FROM tanks t
               JOIN sites s ON s.site_id = t.site_id
               LEFT JOIN tank_state st ON st.site_id = t.site_id AND st.tank_id = t.tank_id
             WHERE ($1 = '' OR t.site_id = $1)
               AND ($2 = '' OR t.site_id LIKE $2 || '%' OR LOWER(s.name) LIKE '%' || LOWER($2) || '%')
               AND ($3 = '' OR t.product = $3)
               AND ($4 = '' OR st.risk = $4)
               AND ($5 = '' OR st.freshness = $5)
               AND (t.site_id > $6 OR (t.site_id = $6 AND t.tank_id > $7)) {}
             ORDER BY t.site_id, t.tank_id LIMIT $8",
            super::site_in("t.site_id", f.sites, 9)
        );
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql))
            .bind(f.site.unwrap_or(""))
            .bind(f.q.unwrap_or(""))
            .bind(f.product.unwrap_or(""))
            .bind(f.risk.map(|r| r.as_str()).unwrap_or(""))
            .bind(f.freshness.map(|r| r.as_str()).unwrap_or(""))
            .bind(after_site)
            .bind(after_tank)
            .bind(f.limit);
        for s in f.sites.unwrap_or_default() {
            q = q.bind(s);
        }
        let keys = q.fetch_all(self.0.pool()).await?;
        self.with_state(&keys).await
    }

    /// Tanks by soonest runout (tanks without a runout last), one page of
    /// `limit` after `offset` rows.
    pub async fn by_runout(
        &self,
        sites: Option<&[String]>,
        site: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<(TankRow, Option<StateRow>)>, Error> {
        let sql = format!(
            "SELECT st.site_id, st.tank_id FROM tank_state st
               JOIN tanks t ON t.site_id = st.site_id AND t.tank_id = st.tank_id
             WHERE ($1 = '' OR st.site_id = $1) {}
             ORDER BY CASE WHEN st.runout_ms IS NULL THEN 1 ELSE 0 END, st.runout_ms, st.site_id, st.tank_id
             LIMIT $2 OFFSET $3",
            super::site_in("st.site_id", sites, 4)
        );
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql))
            .bind(site.unwrap_or(""))
            .bind(limit)
            .bind(offset);
        for s in sites.unwrap_or_default() {
            q = q.bind(s);
        }
        let keys = q.fetch_all(self.0.pool()).await?;
        self.with_state(&keys).await
    }

    /// The tanks and states of these keys, in their order (two queries).
    async fn with_state(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<(TankRow, Option<StateRow>)>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cond: Vec<String> = (0..keys.len())
            .map(|i| format!("(site_id = ${} AND tank_id = ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        let cond = cond.join(" OR ");
        let tanks_sql = format!("SELECT {TANK_COLUMNS} FROM tanks WHERE {cond}");
        let state_sql = format!("SELECT {STATE_COLUMNS} FROM tank_state WHERE {cond}");
        let mut tq = sqlx::query_as::<_, TankRow>(sqlx::AssertSqlSafe(tanks_sql));
        let mut sq = sqlx::query_as::<_, StateRow>(sqlx::AssertSqlSafe(state_sql));
        for (s, t) in keys {
            tq = tq.bind(s).bind(t);
            sq = sq.bind(s).bind(t);
        }
        let tanks = tq.fetch_all(self.0.pool()).await?;
        let mut states = sq.fetch_all(self.0.pool()).await?;
        Ok(keys
            .iter()
            .filter_map(|(s, t)| {
                let tank = tanks
                    .iter()
                    .find(|r| r.site_id.as_str() == s.as_str() && &r.tank_id == t)?
                    .clone();
                let state = states
                    .iter()
                    .position(|r| &r.site_id == s && &r.tank_id == t)
                    .map(|i| states.swap_remove(i));
                Some((tank, state))
            })
            .collect())
    }

    /// Stores observations in one transaction: each is added, already
    /// there (unchanged) or in conflict with another stored value (not
    /// written).
    pub async fn add_observations(
        &self,
        obs: &[NewObservation],
        actor: &str,
        now: i64,
    ) -> Result<Vec<Stored>, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let mut out = Vec::with_capacity(obs.len());
        for o in obs {
            let n = sqlx::query(
                "INSERT INTO observations (site_id, tank_id, source, at_ms, volume_l, water_mm, confidence, note, actor, recorded_ms)
                 VALUES ($1, $2, $3, $4, $5, CAST($6 AS DOUBLE PRECISION), $7, $8, $9, $10) ON CONFLICT (site_id, tank_id, source, at_ms) DO NOTHING",
            )
            .bind(&o.site_id)
            .bind(&o.tank_id)
            .bind(o.source)
            .bind(o.at_ms)
            .bind(o.volume_l)
            .bind(opt_f64(o.water_mm))
            .bind(o.confidence)
            .bind(&o.note)
            .bind(actor)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                out.push(Stored::Added);
                continue;
            }
            let (v, w): (f64, Option<f64>) = sqlx::query_as(
                "SELECT volume_l, water_mm FROM observations WHERE site_id = $1 AND tank_id = $2 AND source = $3 AND at_ms = $4",
            )
            .bind(&o.site_id)
            .bind(&o.tank_id)
            .bind(o.source)
            .bind(o.at_ms)
            .fetch_one(&mut *tx)
            .await?;
            out.push(if v == o.volume_l && w == o.water_mm {
                Stored::Unchanged
            } else {
                Stored::Conflict
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// A tank's observations, newest first: at most `limit`; a row whose
    /// source this build does not know is an error of its own.
    pub async fn observations_of(
        &self,
        site: &SiteId,
        tank: &str,
        limit: i64,
    ) -> Result<Vec<Result<ObservationRow, Error>>, Error> {
        let rows: Vec<StoredNote> = sqlx::query_as(
            "SELECT source, at_ms, volume_l, water_mm, note, actor FROM observations
             WHERE site_id = $1 AND tank_id = $2 ORDER BY at_ms DESC LIMIT $3",
        )
        .bind(site)
        .bind(tank)
        .bind(limit)
        .fetch_all(self.0.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let source = r.source.parse::<ObsSource>().map_err(|e| {
                    let key = format!("{site}/{tank} at {}", r.at_ms);
                    json::corrupt("observations.source", &key, e.to_string())
                })?;
                Ok(ObservationRow {
                    source,
                    at_ms: UnixMs::from_ms(r.at_ms),
                    volume_l: r.volume_l,
                    water_mm: r.water_mm,
                    note: r.note,
                    actor: r.actor,
                })
            })
            .collect())
    }

    /// The newest observation of each source at each tank; a row whose
    /// source this build does not know is an error of its own (logged
    /// with the column and the row, code `stored_value_invalid`), so one
    /// corrupt row cannot stop the evaluation of every other tank.
    pub async fn latest_observations(
        &self,
    ) -> Result<Vec<Result<LatestObservation, Error>>, Error> {
        let rows: Vec<StoredObservation> = sqlx::query_as(
            "SELECT o.site_id, o.tank_id, o.source, o.at_ms, o.volume_l, o.water_mm, o.confidence FROM observations o
             WHERE o.at_ms = (SELECT MAX(o2.at_ms) FROM observations o2
                              WHERE o2.site_id = o.site_id AND o2.tank_id = o.tank_id AND o2.source = o.source)",
        )
        .fetch_all(self.0.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let source = r.source.parse::<ObsSource>().map_err(|e| {
                    let key = format!("{}/{} at {}", r.site_id, r.tank_id, r.at_ms);
                    json::corrupt("observations.source", &key, e.to_string())
                })?;
                Ok(LatestObservation {
                    site_id: r.site_id,
                    tank_id: r.tank_id,
                    source,
                    at_ms: UnixMs::from_ms(r.at_ms),
                    volume_l: r.volume_l,
                    water_mm: r.water_mm,
                    confidence: r.confidence,
                })
            })
            .collect())
    }

    pub async fn put_state(&self, rows: &[StateRow]) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        for s in rows {
            sqlx::query(
                "INSERT INTO tank_state (site_id, tank_id, volume_l, water_mm, observed_ms, source, confidence, freshness, flags,
                   rate_lph, rate_basis, rate_confidence, hours_to_runout, runout_ms, risk, next_load_id, next_eta_ms, margin_h, evaluated_ms,
                   reading_l, flat_since_ms, runout_p10_ms, runout_p90_ms)
                 VALUES ($1, $2, CAST($3 AS DOUBLE PRECISION), CAST($4 AS DOUBLE PRECISION), $5, $6, CAST($7 AS DOUBLE PRECISION),
                   $8, $9, CAST($10 AS DOUBLE PRECISION), $11, CAST($12 AS DOUBLE PRECISION), CAST($13 AS DOUBLE PRECISION), $14, $15,
                   $16, $17, CAST($18 AS DOUBLE PRECISION), $19, CAST($20 AS DOUBLE PRECISION), $21, $22, $23)
                 ON CONFLICT (site_id, tank_id) DO UPDATE SET volume_l = excluded.volume_l, water_mm = excluded.water_mm,
                   reading_l = excluded.reading_l, flat_since_ms = excluded.flat_since_ms,
                   observed_ms = excluded.observed_ms, source = excluded.source, confidence = excluded.confidence,
                   freshness = excluded.freshness, flags = excluded.flags, rate_lph = excluded.rate_lph,
                   rate_basis = excluded.rate_basis, rate_confidence = excluded.rate_confidence,
                   hours_to_runout = excluded.hours_to_runout, runout_ms = excluded.runout_ms,
                   runout_p10_ms = excluded.runout_p10_ms, runout_p90_ms = excluded.runout_p90_ms, risk = excluded.risk,
                   next_load_id = excluded.next_load_id, next_eta_ms = excluded.next_eta_ms, margin_h = excluded.margin_h,
                   evaluated_ms = excluded.evaluated_ms",
            )
            .bind(&s.site_id)
            .bind(&s.tank_id)
            .bind(opt_f64(s.volume_l))
            .bind(opt_f64(s.water_mm))
            .bind(s.observed_ms)
            .bind(s.source)
            .bind(opt_f64(s.confidence))
            .bind(s.freshness)
            .bind(&s.flags)
            .bind(opt_f64(s.rate_lph))
            .bind(s.rate_basis)
            .bind(opt_f64(s.rate_confidence))
            .bind(opt_f64(s.hours_to_runout))
            .bind(s.runout_ms)
            .bind(s.risk)
            .bind(&s.next_load_id)
            .bind(s.next_eta_ms)
            .bind(opt_f64(s.margin_h))
            .bind(s.evaluated_ms)
            .bind(opt_f64(s.reading_l))
            .bind(s.flat_since_ms)
            .bind(s.runout_p10_ms)
            .bind(s.runout_p90_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
