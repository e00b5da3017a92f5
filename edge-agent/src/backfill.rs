//! `edge-agent backfill --config FILE HISTORY.csv`: readings a site
//! already has (a gauge's or a previous system's export) put into the
//! agent's log with their own times, so that the headend has days of
//! history from the first hour: consumption rates and runout need three
//! hours of it. They travel like any reading (the log, the uplink, at
//! least once, stored once) and carry the source `backfill:FILE`.
//!
//! The CSV: a header `asset,field,time,value,unit`, then one reading a
//! row. `asset` must be declared in the configuration; `time` is RFC 3339
//! with its offset or Unix ms, not in the future and at most
//! [`MAX_AGE_DAYS`] old; `unit` one the agent knows (converted to the
//! canonical one, as polled values are). Every bad row is named with its
//! line and column, and nothing is written unless every row is good.
//! The agent must be stopped (the log is locked while it runs). A file is
//! taken once: a marker in the log folder remembers it (`--again` to
//! take it anyway).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use adapter_api::{DropClass, Quality, Reading};
use sha2::{Digest, Sha256};

use crate::config::AgentConfig;

/// The oldest reading taken, days.
pub const MAX_AGE_DAYS: i64 = 400;
/// Rows in one file, at most.
pub const MAX_ROWS: usize = 2_000_000;
/// A reading up to this far ahead of this PC's clock is taken (clock skew), ms.
const FUTURE_SLACK_MS: i64 = 5 * 60_000;
/// The header, in this order.
pub const HEADER: [&str; 5] = ["asset", "field", "time", "value", "unit"];

/// Why a backfill was refused.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{file}: {0}", file = .1.display())]
    Read(std::io::Error, PathBuf),
    #[error("{file}:{line}: column {column}: {problem}", file = .file.display())]
    Row {
        file: PathBuf,
        line: u64,
        column: &'static str,
        problem: String,
    },
    #[error("{file}: {problem}", file = .file.display())]
    File { file: PathBuf, problem: String },
    #[error(transparent)]
    Log(#[from] sflog::Error),
}

/// What a backfill did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub readings: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    pub first_seq: u64,
    pub last_seq: u64,
}

fn row_err(
    file: &Path,
    line: u64,
    column: &'static str,
    problem: impl Into<String>,
) -> BackfillError {
    BackfillError::Row {
        file: file.to_path_buf(),
        line,
        column,
        problem: problem.into(),
    }
}

/// Reads the CSV `text` into readings for `cfg`'s site, as of `now_ms`.
pub fn parse(
    file: &Path,
    text: &str,
    cfg: &AgentConfig,
    now_ms: i64,
) -> Result<Vec<Reading>, BackfillError> {
    let assets: HashSet<&str> = cfg.assets.iter().map(|a| a.id.as_str()).collect();
    let source = format!(
        "backfill:{}",
        file.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| BackfillError::File {
            file: file.to_path_buf(),
            problem: format!("header: {e}"),
        })?
        .iter()
        .map(str::to_string)
        .collect();
    if header != HEADER {
        return Err(BackfillError::File {
            file: file.to_path_buf(),
            problem: format!("the header is {header:?}; it must be {}", HEADER.join(",")),
        });
    }
    let oldest = now_ms - MAX_AGE_DAYS * 86_400_000;
    let mut out = Vec::new();
    for rec in rd.records() {
        let rec = rec.map_err(|e| BackfillError::File {
            file: file.to_path_buf(),
            problem: e.to_string(),
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        if out.len() >= MAX_ROWS {
            return Err(row_err(
                file,
                line,
                "asset",
                format!("more than {MAX_ROWS} rows: split the file"),
            ));
        }
        let col = |i: usize| rec.get(i).unwrap_or("");
        let asset = col(0);
        if !assets.contains(asset) {
            return Err(row_err(
                file,
                line,
                "asset",
                format!("{asset:?} is not an asset of the configuration"),
            ));
        }
        let field = col(1);
        adapter_api::validate::ident(field).map_err(|e| row_err(file, line, "field", e))?;
        let t = col(2);
        let ts_ms = match t.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => t
                .parse::<jiff::Timestamp>()
                .map(|ts| ts.as_millisecond())
                .map_err(|_| {
                    row_err(
                        file,
                        line,
                        "time",
                        format!("{t:?}: use RFC 3339 with its offset (2026-12-05T08:00:00+01:00) or Unix ms"),
                    )
                })?,
        };
        if ts_ms > now_ms + FUTURE_SLACK_MS {
            return Err(row_err(file, line, "time", format!("{t}: in the future")));
        }
        if ts_ms < oldest {
            return Err(row_err(
                file,
                line,
                "time",
                format!("{t}: older than {MAX_AGE_DAYS} days"),
            ));
        }
        let value: f64 = col(3)
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| row_err(file, line, "value", format!("{:?} is not a number", col(3))))?;
        let unit = col(4);
        let (canonical, factor, offset) =
            adapter_api::units::conversion(unit).ok_or_else(|| {
                row_err(
                    file,
                    line,
                    "unit",
                    format!(
                        "{unit:?} is not a unit this agent knows; use one of {}",
                        adapter_api::units::KNOWN.join(", ")
                    ),
                )
            })?;
        out.push(Reading {
            asset_id: asset.to_string(),
            field: field.to_string(),
            value: value * factor + offset,
            unit: canonical.to_string(),
            quality: Quality::Good,
            source_ts_ms: ts_ms,
            received_ts_ms: now_ms,
            source: source.clone(),
            error: String::new(),
            class: DropClass::Telemetry,
        });
    }
    if out.is_empty() {
        return Err(BackfillError::File {
            file: file.to_path_buf(),
            problem: "no readings after the header".into(),
        });
    }
    Ok(out)
}

/// The marker of a file taken into the log (by its content's hash).
fn marker(log_dir: &Path, text: &str) -> PathBuf {
    let h = Sha256::digest(text.as_bytes());
    let hex: String = h.iter().take(12).map(|b| format!("{b:02x}")).collect();
    log_dir.join(format!("backfill-{hex}.done"))
}

/// Backfills `file` into the log of `cfg` (the agent stopped).
pub fn run(cfg: &AgentConfig, file: &Path, again: bool) -> Result<Summary, BackfillError> {
    let text = std::fs::read_to_string(file).map_err(|e| BackfillError::Read(e, file.into()))?;
    let done = marker(&cfg.log.dir, &text);
    if done.exists() && !again {
        return Err(BackfillError::File {
            file: file.to_path_buf(),
            problem: format!(
                "already backfilled (marker {}); the headend would store it twice. Give --again to take it anyway",
                done.display()
            ),
        });
    }
    let readings = parse(file, &text, cfg, adapter_api::now_ms())?;
    let log = sflog::Log::open(&cfg.log.dir, &cfg.log.options())?;
    crate::logwriter::record_damage(&log)?;
    let first_seq = log.stats().next_seq;
    for chunk in readings.chunks(1000) {
        let items: Vec<_> = chunk
            .iter()
            .map(|r| {
                (
                    sflog::Class::Telemetry,
                    r.received_ts_ms,
                    crate::logwriter::reading_record(r),
                )
            })
            .collect();
        log.append(&items)?;
    }
    log.flush()?;
    let last_seq = log.stats().next_seq.saturating_sub(1);
    drop(log);
    std::fs::write(&done, format!("{}\n", file.display()))
        .map_err(|e| BackfillError::Read(e, done.clone()))?;
    Ok(Summary {
        readings: readings.len(),
        first_ms: readings.iter().map(|r| r.source_ts_ms).min().unwrap_or(0),
        last_ms: readings.iter().map(|r| r.source_ts_ms).max().unwrap_or(0),
        first_seq,
        last_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn cfg() -> AgentConfig {
        let yaml = "site_id: s1\nheadend: { address: 127.0.0.1:7443 }\ntls: { cert: a.pem, key: a.key, ca: ca.pem }\nassets:\n  - { id: tank-1, kind: tank, capacity: 20000 }\ndevices:\n  - modbus:\n      name: atg\n      address: 127.0.0.1:502\n      points:\n        - { asset: tank-1, field: volume, register: 0, type: f32, unit: L }\n";
        crate::config::parse("site.yaml", yaml).unwrap()
    }

    fn parse_text(text: &str) -> Result<Vec<Reading>, BackfillError> {
        parse(Path::new("h.csv"), text, &cfg(), NOW)
    }

    #[test]
    fn good_rows_become_readings_in_canonical_units_with_their_own_times() {
        let r = parse_text(
            "asset,field,time,value,unit\ntank-1,volume,2027-01-15T08:00:00+01:00,20,m3\ntank-1,temperature,1799999000000,59,degF\n",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].value, r[0].unit.as_str()), (20_000.0, "L"));
        // 08:00 at +01:00 is 07:00 UTC, an hour before NOW (08:00 UTC)
        assert_eq!(r[0].source_ts_ms, NOW - 3_600_000);
        assert!((r[1].value - 15.0).abs() < 1e-9 && r[1].unit == "degC");
        assert_eq!(r[1].source_ts_ms, 1_799_999_000_000);
        assert_eq!(
            (r[0].received_ts_ms, r[0].source.as_str()),
            (NOW, "backfill:h.csv")
        );
    }

    #[test]
    fn each_bad_row_is_named_with_its_line_and_column() {
        let head = "asset,field,time,value,unit\n";
        for (row, column) in [
            ("tank-9,volume,1799999000000,1,L", "asset"),
            ("tank-1,vol ume,1799999000000,1,L", "field"),
            ("tank-1,volume,2027-01-15T08:00:00,1,L", "time"),
            ("tank-1,volume,1800000900000,1,L", "time"),
            ("tank-1,volume,1000,1,L", "time"),
            ("tank-1,volume,1799999000000,NaN,L", "value"),
            ("tank-1,volume,1799999000000,1,barrels", "unit"),
        ] {
            match parse_text(&format!("{head}tank-1,volume,1799999000000,1,L\n{row}\n")) {
                Err(BackfillError::Row {
                    line, column: c, ..
                }) => {
                    assert_eq!((line, c), (3, column), "{row}")
                }
                other => panic!("{row}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_text("time,asset,field,value,unit\n"),
            Err(BackfillError::File { .. })
        ));
        assert!(matches!(parse_text(head), Err(BackfillError::File { .. })));
    }
}
