//! CSV import of loads for one site: each row a load by its reference;
//! a new reference is planned (its ETA pushed to the site), a known one
//! updated (its ETA under the source ranking), an unchanged one left
//! alone. All good rows in one transaction; bad rows reported by row and
//! column; a repeated import changes nothing.

use super::commands::{eta_command, eta_expiry_s};
use super::loads::{LoadLine, eta_value, volume_value};
use super::observations::{ImportReport, MAX_OBSERVATIONS, RowProblem};
use super::{Context, Result};
use crate::domain::{Actor, EtaSource};
use crate::store::loads::{EtaGiven, LoadRow, LoadWrite};
use crate::wallclock::now_ms;

/// The columns of a loads CSV.
pub const CSV_COLUMNS: &str =
    "reference,tanks,planned_volume_l,eta[,eta_source][,carrier][,product][,site]";

/// Parses a loads CSV (pure): a header naming its columns (any order),
/// tanks separated by `;`, the ETA as RFC 3339 or Unix ms, the ETA source
/// `csv` unless the row says otherwise. Rows are numbered as a
/// spreadsheet shows them (the header is row 1).
pub fn csv_rows(
    site: &str,
    text: &str,
    now: i64,
) -> Result<(Vec<(usize, LoadLine)>, ImportReport)> {
    let known = [
        "reference",
        "tanks",
        "planned_volume_l",
        "eta",
        "eta_source",
        "carrier",
        "product",
        "site",
    ];
    let (mut sheet, idx) = super::sheet::Sheet::open(
        text,
        &known,
        &["reference", "tanks", "planned_volume_l", "eta"],
        CSV_COLUMNS,
    )?;
    let (cr, ct, cv, ce) = (idx[0], idx[1], idx[2], idx[3]);
    let (cs, cc, cp, csite) = (
        sheet.col("eta_source"),
        sheet.col("carrier"),
        sheet.col("product"),
        sheet.col("site"),
    );
    let mut rows: Vec<(usize, LoadLine)> = Vec::new();
    let mut report = ImportReport::default();
    for (row, rec) in sheet.records(MAX_OBSERVATIONS, &mut report)? {
        let bad = |column: &str, problem: String| RowProblem {
            row,
            column: column.into(),
            problem,
        };
        let get = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("");
        let parsed = (|| -> std::result::Result<LoadLine, RowProblem> {
            if csite.is_some() && get(csite) != site {
                return Err(bad(
                    "site",
                    format!("{:?} is not this import's site {site}", get(csite)),
                ));
            }
            let reference = get(Some(cr));
            if reference.is_empty() || reference.chars().count() > 100 {
                return Err(bad("reference", "1 to 100 characters".into()));
            }
            if let Some((r0, _)) = rows.iter().find(|(_, l)| l.reference == reference) {
                return Err(bad("reference", format!("repeats row {r0}")));
            }
            let tanks: Vec<String> = get(Some(ct))
                .split(';')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            if tanks.is_empty() {
                return Err(bad(
                    "tanks",
                    "give at least one tank (several separated by ;)".into(),
                ));
            }
            let v = get(Some(cv));
            let volume = v
                .parse::<f64>()
                .ok()
                .and_then(|x| volume_value(x).ok())
                .ok_or_else(|| {
                    bad(
                        "planned_volume_l",
                        format!("{v:?}: a number of litres > 0 and at most 1,000,000"),
                    )
                })?;
            let e = get(Some(ce));
            let eta_json = match e.parse::<i64>() {
                Ok(ms) => serde_json::Value::from(ms),
                Err(_) => serde_json::Value::from(e),
            };
            let eta_ms = eta_value(&eta_json, now).map_err(|err| bad("eta", err.to_string()))?;
            let src = get(cs);
            let eta_source = if src.is_empty() {
                EtaSource::Csv
            } else {
                src.parse().map_err(|_| {
                    bad(
                        "eta_source",
                        format!("{src:?}: use one of {}", EtaSource::choices()),
                    )
                })?
            };
            Ok(LoadLine {
                reference: reference.into(),
                tanks,
                planned_volume_l: volume,
                eta_ms: crate::domain::UnixMs::from_ms(eta_ms),
                eta_source,
                carrier: get(cc).chars().take(200).collect(),
                product: get(cp).chars().take(64).collect(),
            })
        })();
        match parsed {
            Ok(l) => rows.push((row, l)),
            Err(p) => report.problems.push(p),
        }
    }
    Ok((rows, report))
}

/// The import key of a site's load reference.
pub fn import_key(site: &str, reference: &str) -> String {
    format!("{site}\u{1f}{reference}")
}

/// What a good row does to the load its reference names, decided before
/// anything is written.
#[derive(Debug)]
enum Plan {
    /// A new load (its ETA pushed to the site).
    New(LoadRow),
    /// The load updated: what changed, and the ETA the row brought.
    Update(LoadRow, String, Option<EtaGiven>),
    /// Only an ETA a higher-ranked source overrides: kept as history.
    History(LoadRow, EtaGiven),
}

/// The plan of the row `l` against the stored load `old` (pure): a new
/// reference is a new load; a known one is updated where its ETA (under
/// the source ranking) or its volume changed; `None` when nothing changed
/// or the load is final (delivered, cancelled).
fn plan(site: &crate::domain::SiteId, l: LoadLine, old: Option<LoadRow>, now: i64) -> Option<Plan> {
    let Some(old) = old else {
        return Some(Plan::New(l.planned(site, now)));
    };
    let eta_new = old.eta_ms != l.eta_ms;
    let volume_new = old.planned_volume_l != l.planned_volume_l;
    if old.status.is_final() || (!eta_new && !volume_new) {
        return None;
    }
    let mut load = old.clone();
    let mut what = Vec::new();
    let given = eta_new.then(|| EtaGiven {
        eta_ms: l.eta_ms,
        source: l.eta_source,
        applied: l.eta_source.replaces(old.eta_source),
    });
    if let Some(g) = given.filter(|g| g.applied) {
        load.eta_ms = g.eta_ms;
        load.eta_source = g.source;
        what.push(format!("ETA {} (source {})", g.eta_ms, g.source));
    }
    if volume_new {
        load.planned_volume_l = l.planned_volume_l;
        what.push(format!("planned volume {} L", l.planned_volume_l));
    }
    load.updated_ms = now.into();
    Some(match (what.is_empty(), given) {
        (true, Some(g)) => Plan::History(old, g),
        _ => Plan::Update(load, what.join(", "), given),
    })
}

pub async fn import(
    ctx: &Context,
    site: &crate::domain::SiteId,
    text: &str,
    actor: Actor,
) -> Result<ImportReport> {
    super::inventory::site(ctx, site).await?;
    let now = now_ms();
    let (lines, mut report) = csv_rows(site, text, now)?;
    let tanks: Vec<String> = ctx
        .db
        .inventory()
        .list(&crate::store::inventory::TankFilter {
            site: Some(site),
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|(t, _)| t.tank_id)
        .collect();
    // what each good row does, decided before anything is written
    let mut plans = Vec::new();
    for (row, l) in lines {
        if let Some(t) = l.tanks.iter().find(|t| !tanks.contains(t)) {
            report.problems.push(RowProblem {
                row,
                column: "tanks".into(),
                problem: format!(
                    "{t:?} is not a tank of site {site} (tanks: {})",
                    tanks.join(", ")
                ),
            });
            continue;
        }
        let key = import_key(site, &l.reference);
        let old = ctx.db.loads().by_import_key(&key).await?;
        match plan(site, l, old, now) {
            Some(p) => plans.push((key, p)),
            None => report.unchanged += 1,
        }
    }
    let mut changes = Vec::new();
    let mut history = Vec::new();
    for (key, p) in &plans {
        match p {
            Plan::New(l) => {
                let cmd = eta_command(
                    l,
                    None,
                    String::new(),
                    crate::domain::UnixMs::from_ms(now).plus_ms(eta_expiry_s(l, now) * 1000),
                    &actor,
                );
                changes.push((
                    cmd,
                    LoadWrite::Insert {
                        load: l,
                        actor: &actor,
                    },
                    Some(key.clone()),
                ));
                report.added += 1;
            }
            Plan::Update(l, what, eta) => {
                let cmd = eta_command(
                    l,
                    None,
                    String::new(),
                    crate::domain::UnixMs::from_ms(now).plus_ms(eta_expiry_s(l, now) * 1000),
                    &actor,
                );
                changes.push((
                    cmd,
                    LoadWrite::Update {
                        load: l,
                        what,
                        actor: &actor,
                        eta: *eta,
                    },
                    None,
                ));
                report.updated += 1;
            }
            Plan::History(l, g) => {
                history.push((l.clone(), *g, actor.clone()));
                report.unchanged += 1;
            }
        }
    }
    ctx.db.commands().submit_loads(&changes, &history).await?;
    for _ in &changes {
        ctx.metrics.commands_submitted.inc();
    }
    if !changes.is_empty() {
        ctx.dispatcher.nudge(site);
    }
    report.problems.sort_by_key(|p| p.row);
    report.rejected = report.problems.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LoadStatus;

    const NOW: i64 = 1_795_392_000_000;

    #[test]
    fn a_loads_csv_names_each_bad_row_and_takes_tanks_separated_by_semicolons() {
        let text = "reference,tanks,planned_volume_l,eta,eta_source\n\
                    PO-1,tank-1;tank-2,30000,2026-11-24T06:00:00Z,\n\
                    PO-2,tank-1,0,2026-11-24T06:00:00Z,\n\
                    PO-3,tank-1,1000,soon,\n\
                    PO-1,tank-1,1000,2026-11-24T06:00:00Z,\n\
                    PO-4,,1000,2026-11-24T06:00:00Z,\n\
                    PO-5,tank-1,1000,1795400000000,fax\n\
                    PO-6,tank-1,1000,1795400000000,email\n";
        let (rows, report) = csv_rows("north", text, NOW).expect("parses");
        let got: Vec<(usize, &str)> = report
            .problems
            .iter()
            .map(|p| (p.row, p.column.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "planned_volume_l"),
                (4, "eta"),
                (5, "reference"),
                (6, "tanks"),
                (7, "eta_source")
            ]
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.tanks, vec!["tank-1", "tank-2"]);
        assert_eq!(rows[0].1.eta_source, EtaSource::Csv);
        assert_eq!(rows[1].1.eta_source, EtaSource::Email);
        assert!(csv_rows("north", "reference,tanks\n", NOW).is_err());
    }

    fn line(eta_ms: i64, source: EtaSource, volume: f64) -> LoadLine {
        LoadLine {
            reference: "PO-1".into(),
            tanks: vec!["tank-1".into()],
            planned_volume_l: volume,
            eta_ms: eta_ms.into(),
            eta_source: source,
            carrier: "Haul".into(),
            product: "diesel".into(),
        }
    }

    #[test]
    fn an_imported_row_plans_a_new_load_an_update_history_or_nothing() {
        let site = crate::domain::SiteId::parse("north").expect("a site id");
        let eta = NOW + 86_400_000;
        // a new reference: a planned load with the row's ETA and tanks
        let Some(Plan::New(stored)) =
            plan(&site, line(eta, EtaSource::Manual, 30_000.0), None, NOW)
        else {
            panic!("a new load");
        };
        assert_eq!(stored.status, LoadStatus::Planned);
        assert_eq!(
            (stored.eta_ms.ms(), stored.eta_source),
            (eta, EtaSource::Manual)
        );
        assert_eq!(stored.tank_list, vec!["tank-1"]);
        assert_eq!(stored.site_id, site);
        let again = |l: LoadLine, old: &LoadRow| plan(&site, l, Some(old.clone()), NOW + 1);
        // the same row again: nothing
        assert!(again(line(eta, EtaSource::Manual, 30_000.0), &stored).is_none());
        // a CSV's ETA ranks below the manual one: history only
        let later = eta + 3_600_000;
        match again(line(later, EtaSource::Csv, 30_000.0), &stored) {
            Some(Plan::History(l, g)) => {
                assert_eq!(l.eta_ms.ms(), eta, "the load keeps its ETA");
                assert_eq!((g.eta_ms.ms(), g.applied), (later, false));
            }
            p => panic!("history, not {p:?}"),
        }
        // the volume changes as well: an update that keeps the manual ETA
        match again(line(later, EtaSource::Csv, 25_000.0), &stored) {
            Some(Plan::Update(l, what, Some(g))) => {
                assert_eq!((l.eta_ms.ms(), l.planned_volume_l), (eta, 25_000.0));
                assert_eq!(what, "planned volume 25000 L");
                assert!(!g.applied);
            }
            p => panic!("an update, not {p:?}"),
        }
        // the same or a higher rank moves the ETA
        match again(line(later, EtaSource::Manual, 30_000.0), &stored) {
            Some(Plan::Update(l, what, Some(g))) => {
                assert_eq!(l.eta_ms.ms(), later);
                assert!(what.starts_with("ETA "), "{what}");
                assert!(g.applied);
            }
            p => panic!("an update, not {p:?}"),
        }
        // a delivered or cancelled load is not changed by a row
        for status in [LoadStatus::Delivered, LoadStatus::Cancelled] {
            let done = LoadRow {
                status,
                ..stored.clone()
            };
            assert!(again(line(later, EtaSource::Manual, 1.0), &done).is_none());
        }
    }
}
