//! Inventory observations: pushed one by one or in batches, or imported
//! as CSV with a per-row report (each bad row named with its column); and
//! a tank's recent observations.

use serde::Deserialize;
use serde_json::Value;

use super::inventory::{site, text};
use super::{Context, Result, invalid, time_value};
use crate::domain::inventory::ObsSource;
use crate::domain::{SiteId, UnixMs};
use crate::store::inventory::{NewObservation, Stored};
use crate::wallclock::now_ms;

/// Most observations one push or import carries.
pub const MAX_OBSERVATIONS: usize = 10_000;
/// An observation may be this old (a late CSV export)...
pub const OBS_PAST_MS: i64 = 400 * 24 * 3_600_000;
/// ... and this far ahead of the headend's clock.
pub const OBS_FUTURE_MS: i64 = 5 * 60_000;

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
    for (row, rec) in sheet.records(MAX_OBSERVATIONS, &mut report)? {
        let bad = |column: &str, problem: String| RowProblem {
            row,
            column: column.into(),
            problem,
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
