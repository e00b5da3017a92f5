//! The loads aggregate in SQL: planned deliveries, their ETA and their
//! timeline (`load_events`).

use std::collections::HashMap;

use sqlx::AnyConnection;

use crate::Error;
use crate::domain::{
    Actor, CommandId, DeliverySource, EtaSource, LoadEventKind, LoadId, LoadStatus, SiteId, Timing,
    UnixMs,
};
use crate::store::Db;

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct LoadRow {
    pub load_id: LoadId,
    pub reference: String,
    pub carrier: String,
    pub site_id: SiteId,
    /// JSON array of tank ids, as stored (read through [`LoadRow::tank_ids`]).
    pub tanks: String,
    /// The tank ids, parsed by the store's reads (a load whose `tanks`
    /// does not parse is not read at all: [`Error::Corrupt`]).
    #[sqlx(skip)]
    pub tank_list: Vec<String>,
    pub product: String,
    pub planned_volume_l: f64,
    pub eta_ms: UnixMs,
    pub eta_source: EtaSource,
    pub status: LoadStatus,
    pub delivered_volume_l: Option<f64>,
    pub delivery_start_ms: Option<UnixMs>,
    pub delivery_end_ms: Option<UnixMs>,
    /// Who reported the delivered volume (the gauge's record wins).
    pub delivery_source: Option<DeliverySource>,
    pub last_command_id: Option<CommandId>,
    /// Late or missing, as the inventory job last judged it.
    pub timing: Option<Timing>,
    pub created_ms: UnixMs,
    pub updated_ms: UnixMs,
}

impl LoadRow {
    pub fn tank_ids(&self) -> Vec<String> {
        self.tank_list.clone()
    }

    /// The row with its tanks parsed, or the corruption named.
    fn checked(mut self) -> Result<LoadRow, Error> {
        self.tank_list = super::json::parse("loads.tanks", &self.load_id, &self.tanks)?;
        Ok(self)
    }
}

const LOAD_COLUMNS: &str = "load_id, reference, carrier, site_id, tanks, product, planned_volume_l, eta_ms, eta_source, status, delivered_volume_l, delivery_start_ms, delivery_end_ms, delivery_source, last_command_id, timing, created_ms, updated_ms";

#[derive(sqlx::FromRow, Clone, Debug)]
struct LoadEventOfRow {
    load_id: String,
    id: i64,
    at_ms: UnixMs,
    kind: LoadEventKind,
    detail: String,
    actor: Actor,
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct LoadEventRow {
    pub id: i64,
    pub at_ms: UnixMs,
    pub kind: LoadEventKind,
    pub detail: String,
    pub actor: Actor,
}

/// A load change written with its ETA command.
pub enum LoadWrite<'a> {
    Insert {
        load: &'a LoadRow,
        actor: &'a Actor,
    },
    Update {
        load: &'a LoadRow,
        what: &'a str,
        actor: &'a Actor,
        /// An ETA given with this change (applied or not), for the history.
        eta: Option<EtaGiven>,
    },
}

/// An ETA an update brought: when, from which source, whether it became
/// the load's ETA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EtaGiven {
    pub eta_ms: UnixMs,
    pub source: EtaSource,
    pub applied: bool,
}

/// One entry of a load's ETA history.
#[derive(sqlx::FromRow, Clone, Debug, PartialEq)]
pub struct EtaRow {
    pub at_ms: UnixMs,
    pub eta_ms: UnixMs,
    pub source: EtaSource,
    pub actor: Actor,
    pub applied: i64,
}

async fn insert_eta(
    c: &mut AnyConnection,
    load: &str,
    at: i64,
    e: EtaGiven,
    actor: &Actor,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO load_etas (load_id, at_ms, eta_ms, source, actor, applied) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(load)
    .bind(at)
    .bind(e.eta_ms)
    .bind(e.source)
    .bind(actor)
    .bind(i64::from(e.applied))
    .execute(&mut *c)
    .await?;
    Ok(())
}

impl<'a> LoadWrite<'a> {
    pub fn row(&self) -> &'a LoadRow {
        match self {
            LoadWrite::Insert { load, .. } | LoadWrite::Update { load, .. } => load,
        }
    }

    pub fn actor(&self) -> &'a Actor {
        match self {
            LoadWrite::Insert { actor, .. } | LoadWrite::Update { actor, .. } => actor,
        }
    }
}

pub(crate) async fn write_load(c: &mut AnyConnection, w: &LoadWrite<'_>) -> Result<(), Error> {
    match w {
        LoadWrite::Insert { load: l, actor } => {
            sqlx::query(
                "INSERT INTO loads (load_id, reference, carrier, site_id, tanks, product, planned_volume_l, eta_ms, eta_source, status, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
            )
            .bind(&l.load_id)
            .bind(&l.reference)
            .bind(&l.carrier)
            .bind(&l.site_id)
            .bind(&l.tanks)
            .bind(&l.product)
            .bind(l.planned_volume_l)
            .bind(l.eta_ms)
            .bind(l.eta_source)
            .bind(l.status)
            .bind(l.created_ms)
            .execute(&mut *c)
            .await?;
            let given = EtaGiven {
                eta_ms: l.eta_ms,
                source: l.eta_source,
                applied: true,
            };
            insert_eta(c, &l.load_id, l.created_ms.ms(), given, actor).await?;
            let what = format!("ETA {} (source {})", l.eta_ms, l.eta_source);
            insert_load_event(
                c,
                &l.load_id,
                l.created_ms.ms(),
                LoadEventKind::Created,
                &what,
                actor,
            )
            .await
        }
        LoadWrite::Update {
            load: l,
            what,
            actor,
            eta,
        } => {
            if let Some(e) = eta {
                insert_eta(c, &l.load_id, l.updated_ms.ms(), *e, actor).await?;
            }
            sqlx::query(
                "UPDATE loads SET planned_volume_l = $1, eta_ms = $2, eta_source = $3, status = $4, updated_ms = $5 WHERE load_id = $6",
            )
            .bind(l.planned_volume_l)
            .bind(l.eta_ms)
            .bind(l.eta_source)
            .bind(l.status)
            .bind(l.updated_ms)
            .bind(&l.load_id)
            .execute(&mut *c)
            .await?;
            insert_load_event(
                c,
                &l.load_id,
                l.updated_ms.ms(),
                LoadEventKind::Updated,
                what,
                actor,
            )
            .await
        }
    }
}

pub(crate) async fn insert_load_event(
    c: &mut AnyConnection,
    load: &str,
    at: i64,
    kind: LoadEventKind,
    detail: &str,
    actor: &Actor,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO load_events (load_id, at_ms, kind, detail, actor) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(load)
    .bind(at)
    .bind(kind)
    .bind(detail)
    .bind(actor)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Records an ETA that does not replace the load's, with a timeline entry.
pub(crate) async fn note_eta_in(
    c: &mut AnyConnection,
    load: &LoadRow,
    e: EtaGiven,
    actor: &Actor,
    at: i64,
) -> Result<(), Error> {
    insert_eta(c, &load.load_id, at, e, actor).await?;
    let what = format!(
        "ETA {} from {} kept in the history; the {} ETA stands",
        e.eta_ms, e.source, load.eta_source
    );
    insert_load_event(c, &load.load_id, at, LoadEventKind::Updated, &what, actor).await
}

/// The loads aggregate: `db.loads()`.
/// Filters of a load list; every one optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadFilter<'a> {
    pub site: Option<&'a str>,
    pub status: Option<LoadStatus>,
    /// ETAs from and to these times (Unix ms), inclusive.
    pub eta_from: Option<UnixMs>,
    pub eta_to: Option<UnixMs>,
    /// Text the reference or the carrier holds (any case).
    pub text: Option<&'a str>,
}

/// `%text%` in lower case, its `%`, `_` and backslash taken literally
/// (escaped with a backslash, the query's `ESCAPE`).
fn like_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[derive(Clone, Copy)]
pub struct Loads<'a>(&'a Db);

impl Db {
    pub fn loads(&self) -> Loads<'_> {
        Loads(self)
    }
}

impl Loads<'_> {
    pub async fn get(&self, id: &str) -> Result<Option<LoadRow>, Error> {
        let sql = format!("SELECT {LOAD_COLUMNS} FROM loads WHERE load_id = $1");
        let row: Option<LoadRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.0.pool())
            .await?;
        row.map(LoadRow::checked).transpose()
    }

    /// By ETA then id, after the `after` key (the page cursor); `site`
    /// filters, and `sites` (a caller's scope) bounds.
    pub async fn list(
        &self,
        f: &LoadFilter<'_>,
        sites: Option<&[String]>,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<LoadRow>, Error> {
        let (eta, id) = after.unwrap_or((i64::MIN, ""));
        let sql = format!(
            "SELECT {LOAD_COLUMNS} FROM loads WHERE ($1 = '' OR site_id = $1)
               AND ($5 = '' OR status = $5) AND eta_ms >= $6 AND eta_ms <= $7
               AND (eta_ms > $3 OR (eta_ms = $3 AND load_id > $4))
               AND ($8 = '' OR lower(reference) LIKE $8 ESCAPE '\\' OR lower(carrier) LIKE $8 ESCAPE '\\')
               {} ORDER BY eta_ms, load_id LIMIT $2",
            super::site_in("site_id", sites, 9)
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(f.site.unwrap_or(""))
            .bind(limit)
            .bind(eta)
            .bind(id)
            .bind(f.status.map_or("", LoadStatus::as_str))
            .bind(f.eta_from.map_or(i64::MIN, UnixMs::ms))
            .bind(f.eta_to.map_or(i64::MAX, UnixMs::ms))
            .bind(f.text.map_or(String::new(), like_pattern));
        for s in sites.unwrap_or_default() {
            q = q.bind(s);
        }
        let rows: Vec<LoadRow> = q.fetch_all(self.0.pool()).await?;
        rows.into_iter().map(LoadRow::checked).collect()
    }

    /// The events of these loads, by load, in one query (not one per load).
    pub async fn events_of(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<LoadEventRow>>, Error> {
        let mut by_load: HashMap<String, Vec<LoadEventRow>> = HashMap::new();
        if ids.is_empty() {
            return Ok(by_load);
        }
        let ps: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT load_id, id, at_ms, kind, detail, actor FROM load_events WHERE load_id IN ({}) ORDER BY id",
            ps.join(", ")
        );
        let mut q = sqlx::query_as::<_, LoadEventOfRow>(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id);
        }
        for r in q.fetch_all(self.0.pool()).await? {
            by_load.entry(r.load_id).or_default().push(LoadEventRow {
                id: r.id,
                at_ms: r.at_ms,
                kind: r.kind,
                detail: r.detail,
                actor: r.actor,
            });
        }
        Ok(by_load)
    }

    pub async fn events(&self, id: &str) -> Result<Vec<LoadEventRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, at_ms, kind, detail, actor FROM load_events WHERE load_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Loads not yet delivered or cancelled (the inventory job's view).
    pub async fn pending(&self) -> Result<Vec<LoadRow>, Error> {
        let sql = format!(
            "SELECT {LOAD_COLUMNS} FROM loads WHERE status IN ('planned', 'delivering') OR timing IS NOT NULL"
        );
        let rows: Vec<LoadRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.0.pool())
            .await?;
        rows.into_iter().map(LoadRow::checked).collect()
    }

    /// Records a load's timing (late, missing or neither).
    pub async fn set_timing(&self, id: &str, timing: Option<Timing>) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query("UPDATE loads SET timing = $2 WHERE load_id = $1")
            .bind(id)
            .bind(timing)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A load's ETA history, oldest first.
    pub async fn etas(&self, id: &str) -> Result<Vec<EtaRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT at_ms, eta_ms, source, actor, applied FROM load_etas WHERE load_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Records an ETA that did not replace the load's (a lower-ranked
    /// source), with a timeline entry; no command is pushed.
    pub async fn note_eta(
        &self,
        load: &LoadRow,
        e: EtaGiven,
        actor: &Actor,
        at: i64,
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        note_eta_in(&mut tx, load, e, actor, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The load made by an import with this key (site + reference).
    pub async fn by_import_key(&self, key: &str) -> Result<Option<LoadRow>, Error> {
        let sql = format!("SELECT {LOAD_COLUMNS} FROM loads WHERE import_key = $1");
        let row: Option<LoadRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(self.0.pool())
            .await?;
        row.map(LoadRow::checked).transpose()
    }

    /// The ETA histories of these loads, by load, in one query.
    pub async fn etas_of(&self, ids: &[String]) -> Result<HashMap<String, Vec<EtaRow>>, Error> {
        let mut by_load: HashMap<String, Vec<EtaRow>> = HashMap::new();
        if ids.is_empty() {
            return Ok(by_load);
        }
        let ps: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT load_id, at_ms, eta_ms, source, actor, applied FROM load_etas WHERE load_id IN ({}) ORDER BY id",
            ps.join(", ")
        );
        let mut q = sqlx::query_as::<_, (String, i64, i64, EtaSource, Actor, i64)>(
            sqlx::AssertSqlSafe(sql),
        );
        for id in ids {
            q = q.bind(id);
        }
        for (load, at_ms, eta_ms, source, actor, applied) in q.fetch_all(self.0.pool()).await? {
            by_load.entry(load).or_default().push(EtaRow {
                at_ms: at_ms.into(),
                eta_ms: eta_ms.into(),
                source,
                actor,
                applied,
            });
        }
        Ok(by_load)
    }
}
