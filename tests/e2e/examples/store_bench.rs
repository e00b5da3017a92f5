//! Benchmark: the telemetry store at fleet scale. Stores N readings (10
//! sites x 4 tanks x 6 fields at one-minute polling, time-major as agents
//! send them, plus one point with a year of hourly readings) through the
//! headend's store, then measures:
//! * bytes per reading (the readings table plus its indexes);
//! * p50/p99 of 30 days of one-minute readings of one point;
//! * p50/p99 of one year of hourly rollups of one point.
//!
//! `cargo run --release -p e2e --example store_bench -- [READINGS] [DATABASE_URL]`
//! (default 10,000,000 readings into a SQLite file in a temporary directory)
use std::time::Instant;

use headend::domain::UnixMs;
use headend::store::{Db, ReadingQuery, Retention, RollupQuery};
use tankwatch_proto::v1;

use e2e::fleet_fill::{FIELDS, Fleet, MINUTE, SITES, TANKS, site};

const HOUR: i64 = 3_600_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let work = tempfile::tempdir()?;
    let url = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| e2e::sqlite_url(work.path()));
    let db = Db::connect_with(&url, 8, Retention::default()).await?;
    let points = (SITES * TANKS * FIELDS.len()) as u64;
    let minutes = n / points;
    let now = headend::wallclock::now_ms() / MINUTE * MINUTE;
    let mut fleet = Fleet::new(&db, minutes).await?;
    println!(
        "{points} points x {minutes} minutes ({:.1} days) = {} readings",
        minutes as f64 / 1440.0,
        points * minutes
    );
    let t = Instant::now();
    // time-major, as agents send: every point's reading of minute m, then m + 1
    let mut m = 0;
    while m < minutes {
        let span = Fleet::per_commit().min(minutes - m);
        fleet.write(&db, m, span).await?;
        m += span;
    }
    let stored = points * minutes;
    let d = t.elapsed();
    println!(
        "stored {stored} readings in {d:.1?}: {:.0} readings/s through the store (no gRPC)",
        stored as f64 / d.as_secs_f64()
    );
    // one point with a year of hourly readings, for the rollup query
    let year: Vec<v1::Reading> = (0..8_760)
        .map(|h| v1::Reading {
            seq: 1 + h as u64,
            asset_id: "meter-1".into(),
            field: "volume".into(),
            value: h as f64,
            unit: "L".into(),
            quality: v1::Quality::Good as i32,
            source_ts_ms: now - (8_760 - h) * HOUR,
            received_ts_ms: now,
            source: "modbus://meter".into(),
            error: String::new(),
        })
        .collect();
    let mut yseq = 10_000_000_000u64;
    for chunk in year.chunks(2_000) {
        let readings: Vec<v1::Reading> = chunk
            .iter()
            .cloned()
            .map(|mut r| {
                yseq += 1;
                r.seq = yseq;
                r
            })
            .collect();
        db.ingest_many(
            &e2e::sid("site-00"),
            &[v1::TelemetryBatch {
                log_id: 8,
                first_seq: readings[0].seq,
                last_seq: yseq,
                readings,
                ..Default::default()
            }],
        )
        .await?;
    }
    let (bytes, rows) = db.telemetry.footprint().await?;
    println!(
        "footprint as written: {rows} readings in {:.1} MiB (table + indexes): {:.1} bytes per reading",
        bytes as f64 / 1_048_576.0,
        bytes as f64 / rows as f64
    );
    query(&db, now).await?;
    // what the hourly job does to finished days (PostgreSQL: packs each
    // day that ended more than an hour ago; today stays as written)
    let t = Instant::now();
    let n = db.telemetry.compact(now).await?;
    if n > 0 {
        println!("packed {n} finished days in {:.1?}", t.elapsed());
        let (bytes, rows) = db.telemetry.footprint().await?;
        println!(
            "footprint packed: {rows} readings in {:.1} MiB (table + indexes): {:.1} bytes per reading",
            bytes as f64 / 1_048_576.0,
            bytes as f64 / rows as f64
        );
        query(&db, now).await?;
    }
    Ok(())
}

async fn query(db: &Db, now: i64) -> anyhow::Result<()> {
    // 30 days (or what is stored) of one point's one-minute readings
    let mut lat = Vec::new();
    let mut got = 0;
    for i in 0..100 {
        let s = site(i % SITES);
        let asset = format!("tank-{}", i % TANKS + 1);
        let t = Instant::now();
        let r = db
            .readings(&ReadingQuery {
                site: &e2e::sid(&s),
                asset: &asset,
                field: Some("volume"),
                from_ms: UnixMs::from_ms(now - 30 * 1440 * MINUTE),
                to_ms: UnixMs::from_ms(now),
                limit: 100_000,
                newest_first: false,
            })
            .await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        got = r.len();
    }
    report("30 days of one-minute readings of one point", got, &mut lat);
    let mut lat = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let r = db
            .rollups(&RollupQuery {
                site: &e2e::sid("site-00"),
                asset: "meter-1",
                field: Some("volume"),
                from_ms: UnixMs::from_ms(now - 366 * 24 * HOUR),
                to_ms: UnixMs::from_ms(now),
                limit: 10_000,
            })
            .await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        got = r.len();
    }
    report("one year of hourly rollups of one point", got, &mut lat);
    Ok(())
}

fn report(what: &str, rows: usize, lat: &mut [f64]) {
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what}: {rows} rows, p50 {:.1} ms, p99 {:.1} ms (100 queries)",
        p(0.5),
        p(0.99)
    );
}
