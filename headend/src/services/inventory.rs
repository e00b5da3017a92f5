//! Sites' and tanks' settings, inventory observations (pushed one by one,
//! in batches, or imported as CSV with a per-row report), and the reads
//! of the maintained state: the tank list and the risk list.

use crate::domain::{SiteId, UnixMs};
use serde::Deserialize;
use serde_json::Value;

use super::{Context, Refused, Result, ServiceError, invalid, refused, time_value};
use crate::domain::calendar::{Calendar, Holiday};
use crate::domain::inventory::ObsSource;
use crate::store::json::JsonText;
use std::collections::HashMap;

use crate::store::inventory::{
    NewObservation, SiteCalendarRow, SiteSettings, StateRow, Stored, TankFilter, TankRow,
};
use crate::wallclock::now_ms;

/// Most observations one push or import carries.
pub const MAX_OBSERVATIONS: usize = 10_000;
/// Largest tank, litres.
pub const MAX_CAPACITY_L: f64 = 1_000_000.0;
/// An observation may be this old (a late CSV export)...
pub const OBS_PAST_MS: i64 = 400 * 24 * 3_600_000;
/// ... and this far ahead of the headend's clock.
pub const OBS_FUTURE_MS: i64 = 5 * 60_000;

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

/// One observation in `POST /api/v1/inventory/observations`.
#[derive(Deserialize, utoipa::ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct ObservationRequest {
    pub site: String,
    pub tank: String,
    /// RFC 3339 or Unix ms.
    #[schema(value_type = String)]
    pub at: Value,
    pub volume_l: f64,
    #[serde(default)]
    pub water_mm: Option<f64>,
    /// `api` (default) or `manual` (an override that beats the gauge
    /// within the site's freshness window).
    #[serde(default)]
    pub source: Option<String>,
    /// 0..1 (default 1).
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub note: String,
}

/// One observation or a batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ObservationsRequest {
    Batch {
        observations: Vec<ObservationRequest>,
    },
    One(ObservationRequest),
}

fn site_id(v: &str, field: &str) -> Result<String> {
    tankwatch_tls::validate_site_id(v)
        .map(|_| v.to_string())
        .map_err(|e| invalid(field, e.to_string()))
}

fn text(field: &str, v: &str, max: usize) -> Result<String> {
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
        site_id: site_.to_string(),
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

/// A problem with one observation: its index (or CSV row), the field, what.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RowProblem {
    pub row: usize,
    pub column: String,
    pub problem: String,
}

/// What a push or an import did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ImportReport {
    pub rows: usize,
    pub added: usize,
    /// Loads an import changed (observations are never changed).
    pub updated: usize,
    pub unchanged: usize,
    pub rejected: usize,
    pub problems: Vec<RowProblem>,
}

/// Checks one observation against its tank; the problem's column on failure.
fn check_observation(
    o: &NewObservation,
    capacity: Option<f64>,
    now: i64,
) -> std::result::Result<(), (&'static str, String)> {
    let Some(cap) = capacity else {
        return Err((
            "tank",
            format!("no tank {:?} at site {}", o.tank_id, o.site_id),
        ));
    };
    if !(now - OBS_PAST_MS..=now + OBS_FUTURE_MS).contains(&o.at_ms.ms()) {
        return Err(("at", "must be from 400 days ago to 5 minutes ahead".into()));
    }
    if !o.volume_l.is_finite() || o.volume_l.abs() > cap * 10.0 {
        return Err((
            "volume_l",
            format!("must be a number within ±10 × the capacity ({cap} L)"),
        ));
    }
    if let Some(w) = o.water_mm
        && !(w.is_finite() && (0.0..=5_000.0).contains(&w))
    {
        return Err(("water_mm", "must be from 0 to 5000 mm".into()));
    }
    if !(o.confidence.is_finite() && (0.0..=1.0).contains(&o.confidence)) {
        return Err(("confidence", "must be from 0 to 1".into()));
    }
    Ok(())
}

/// Stores the valid observations (one transaction) and reports the rest.
/// `rows[i].0` is the row number the report names.
async fn store(
    ctx: &Context,
    rows: Vec<(usize, NewObservation)>,
    mut report: ImportReport,
    actor: &str,
) -> Result<ImportReport> {
    let now = now_ms();
    let mut caps: std::collections::HashMap<(String, String), Option<f64>> = Default::default();
    let mut good = Vec::new();
    for (row, o) in rows {
        let key = (o.site_id.clone(), o.tank_id.clone());
        if !caps.contains_key(&key) {
            // a site that is no site id has no tanks
            let c = match SiteId::parse(&o.site_id) {
                Ok(site) => ctx
                    .db
                    .inventory()
                    .tank(&site, &o.tank_id)
                    .await?
                    .map(|t| t.capacity_l),
                Err(_) => None,
            };
            caps.insert(key.clone(), c);
        }
        match check_observation(&o, caps[&key], now) {
            Ok(()) => good.push((row, o)),
            Err((column, problem)) => report.problems.push(RowProblem {
                row,
                column: column.into(),
                problem,
            }),
        }
    }
    let obs: Vec<NewObservation> = good.iter().map(|(_, o)| o.clone()).collect();
    let stored = ctx
        .db
        .inventory()
        .add_observations(&obs, actor, now)
        .await?;
    for ((row, o), s) in good.iter().zip(stored) {
        match s {
            Stored::Added => {
                report.added += 1;
                ctx.touched.mark(&o.site_id, [o.tank_id.as_str()]);
            }
            Stored::Unchanged => report.unchanged += 1,
            Stored::Conflict => report.problems.push(RowProblem {
                row: *row,
                column: "volume_l".into(),
                problem: "another value is stored for this tank, source and time".into(),
            }),
        }
    }
    report.problems.sort_by_key(|p| p.row);
    report.rejected = report.problems.len();
    Ok(report)
}

pub async fn push(ctx: &Context, req: ObservationsRequest, actor: &str) -> Result<ImportReport> {
    let list = match req {
        ObservationsRequest::Batch { observations } => observations,
        ObservationsRequest::One(o) => vec![o],
    };
    if list.is_empty() || list.len() > MAX_OBSERVATIONS {
        return Err(invalid(
            "observations",
            format!("give 1 to {MAX_OBSERVATIONS}"),
        ));
    }
    let mut report = ImportReport {
        rows: list.len(),
        ..Default::default()
    };
    let mut rows = Vec::new();
    for (i, o) in list.into_iter().enumerate() {
        ctx.visible(&o.site, "site", || format!("no site {:?}", o.site))?;
        let source = match o.source.as_deref().unwrap_or("api") {
            "api" => ObsSource::Api,
            "manual" => ObsSource::Manual,
            other => {
                report.problems.push(RowProblem {
                    row: i,
                    column: "source".into(),
                    problem: format!("{other:?}: use api or manual"),
                });
                continue;
            }
        };
        let at = match time_value("at", &o.at) {
            Ok(t) => t,
            Err(e) => {
                report.problems.push(RowProblem {
                    row: i,
                    column: "at".into(),
                    problem: e.to_string(),
                });
                continue;
            }
        };
        rows.push((
            i,
            NewObservation {
                site_id: o.site,
                tank_id: o.tank,
                source,
                at_ms: UnixMs::from_ms(at),
                volume_l: o.volume_l,
                water_mm: o.water_mm,
                confidence: o.confidence.unwrap_or(1.0),
                note: text("note", &o.note, 500)?,
            },
        ));
    }
    store(ctx, rows, report, actor).await
}

/// Imports a CSV of observations for one site (see [`csv_rows`]).
pub async fn import(
    ctx: &Context,
    site_: &SiteId,
    text: &str,
    actor: &str,
) -> Result<ImportReport> {
    site(ctx, site_).await?;
    let (rows, report) = csv_rows(site_, text)?;
    store(ctx, rows, report, actor).await
}

/// The columns of an observations CSV.
pub const CSV_COLUMNS: &str = "tank,at,volume_l[,water_mm][,confidence][,note][,site]";

/// Parses an observations CSV (pure): a header naming the columns (any
/// order; `tank`, `at` and `volume_l` required; `site`, when present,
/// must be the import's site), then one row per observation. Rows are
/// numbered as a spreadsheet shows them (the header is row 1). Returns
/// the parsed rows and a report holding each bad row's problem.
pub fn csv_rows(site: &str, text: &str) -> Result<(Vec<(usize, NewObservation)>, ImportReport)> {
    let known = [
        "tank",
        "at",
        "volume_l",
        "water_mm",
        "confidence",
        "note",
        "site",
    ];
    let (mut sheet, idx) =
        super::sheet::Sheet::open(text, &known, &["tank", "at", "volume_l"], CSV_COLUMNS)?;
    let (ct, ca, cv) = (idx[0], idx[1], idx[2]);
    let (cw, cc, cn, cs) = (
        sheet.col("water_mm"),
        sheet.col("confidence"),
        sheet.col("note"),
        sheet.col("site"),
    );
    let mut rows = Vec::new();
    let mut report = ImportReport::default();
    for (row, rec) in sheet.rows() {
        report.rows += 1;
        if report.rows > MAX_OBSERVATIONS {
            return Err(invalid(
                "csv",
                format!("more than {MAX_OBSERVATIONS} rows; split the file"),
            ));
        }
        let bad = |column: &str, problem: String| RowProblem {
            row,
            column: column.into(),
            problem,
        };
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(bad("", e.to_string()));
                continue;
            }
        };
        let get = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("");
        let parsed = (|| -> std::result::Result<NewObservation, RowProblem> {
            if cs.is_some() && get(cs) != site {
                return Err(bad(
                    "site",
                    format!("{:?} is not this import's site {site}", get(cs)),
                ));
            }
            let tank = get(Some(ct));
            if tank.is_empty() {
                return Err(bad("tank", "empty".into()));
            }
            let at_s = get(Some(ca));
            let at = crate::domain::time::parse(at_s)
                .or_else(|| at_s.parse::<i64>().ok())
                .ok_or_else(|| bad("at", format!("{at_s:?}: {}", crate::domain::time::HOW)))?;
            let num =
                |c: Option<usize>, name: &str| -> std::result::Result<Option<f64>, RowProblem> {
                    let s = get(c);
                    if s.is_empty() {
                        return Ok(None);
                    }
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .map(Some)
                        .ok_or_else(|| bad(name, format!("{s:?} is not a number")))
                };
            let volume =
                num(Some(cv), "volume_l")?.ok_or_else(|| bad("volume_l", "empty".into()))?;
            let note = get(cn);
            if note.chars().count() > 500 {
                return Err(bad("note", "at most 500 characters".into()));
            }
            Ok(NewObservation {
                site_id: site.into(),
                tank_id: tank.into(),
                source: ObsSource::Csv,
                at_ms: UnixMs::from_ms(at),
                volume_l: volume,
                water_mm: num(cw, "water_mm")?,
                confidence: num(cc, "confidence")?.unwrap_or(1.0),
                note: note.into(),
            })
        })();
        match parsed {
            Ok(o) => rows.push((row, o)),
            Err(p) => report.problems.push(p),
        }
    }
    Ok((rows, report))
}

/// Observations on a tank's page.
pub const TANK_OBSERVATIONS: i64 = 50;

/// A tank's latest observations, newest first (a corrupt row is shown as
/// the error it is); not found outside the scope.
pub async fn observations(
    ctx: &Context,
    site_: &SiteId,
    tank: &str,
) -> Result<Vec<std::result::Result<crate::store::inventory::ObservationRow, crate::Error>>> {
    ctx.visible(site_, "site", || format!("no site {site_:?}"))?;
    Ok(ctx
        .db
        .inventory()
        .observations_of(site_, tank, TANK_OBSERVATIONS)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_with_good_and_bad_rows_names_each_bad_row_and_column() {
        let text = "tank,at,volume_l,water_mm\n\
                    tank-1,2026-11-20T08:00:00Z,12000,5\n\
                    tank-1,yesterday,12000,\n\
                    tank-2,2026-11-20T08:00:00Z,lots,\n\
                    ,2026-11-20T08:00:00Z,100,\n\
                    tank-2,1795392000000,9000,abc\n\
                    tank-3,2026-11-20T09:00:00Z,7000\n";
        let (rows, report) = csv_rows("north", text).expect("parses");
        let got: Vec<(usize, &str)> = report
            .problems
            .iter()
            .map(|p| (p.row, p.column.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(3, "at"), (4, "volume_l"), (5, "tank"), (6, "water_mm")]
        );
        assert_eq!(rows.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![2, 7]);
        assert_eq!(rows[0].1.water_mm, Some(5.0));
        assert_eq!(rows[1].1.water_mm, None, "a short row leaves water empty");
        assert_eq!(report.rows, 6);
    }

    #[test]
    fn a_csv_header_must_name_the_required_columns_and_no_unknown_ones() {
        assert!(csv_rows("north", "tank,volume_l\nt,1\n").is_err());
        assert!(csv_rows("north", "tank,at,volume_l,colour\n").is_err());
        let (rows, report) =
            csv_rows("north", "site,tank,at,volume_l\nsouth,t,1,1\nnorth,t,1,1\n").expect("parses");
        assert_eq!(rows.len(), 1);
        assert_eq!(report.problems[0].column, "site");
    }
}
