//! Benchmark: how fast a long outage's backlog drains, end to end over
//! mTLS into SQLite (or PostgreSQL), and how soon live values show; then,
//! in the same run, the database's own limit: the same rows inserted
//! straight into the same schema (SQLite: one prepared statement, 2,000
//! rows per transaction, the headend's durability settings; PostgreSQL:
//! `COPY` in 20,000-row transactions), and the ratio of the two.
//!
//! `cargo run --release -p e2e --example drain -- [READINGS] [DATABASE_URL]`
//! (default 500000 readings, a SQLite file in a temporary directory;
//! `WINDOW=N` sets `uplink.window`, default 4)
use std::time::{Duration, Instant};

use atg_sim::{SimConfig, Simulator};
use e2e::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(500_000);
    let pki = TestPki::new(&["bench"])?;
    let work = tempfile::tempdir()?;
    let db_url = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| sqlite_url(work.path()));
    let log_dir = work.path().join("log");
    let t = Instant::now();
    fill_backlog(&log_dir, n)?;
    println!("log filled with {n} readings in {:.2?}", t.elapsed());
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimConfig::default()).await?;
    let he = e2e::start_headend(headend_config(&pki, &db_url, 0)).await?;
    // WINDOW=N: batches in flight (uplink.window), default 4
    let window = std::env::var("WINDOW").unwrap_or_else(|_| "4".into());
    let yaml = agent_yaml(&pki, "bench", he.grpc_addr, &log_dir, &sim, 1000)
        .replace("uplink:\n", &format!("uplink:\n  window: {window}\n"));
    let cfg = agent_config(work.path(), &yaml)?;
    let t = Instant::now();
    let agent = edge_agent::start(cfg)?;
    let mut live = None;
    loop {
        if live.is_none() {
            let a = get_json(he.http_addr, "/api/v1/sites/bench/assets")
                .await
                .unwrap_or_default();
            if a.to_string().contains("modbus://127.0.0.1") {
                live = Some(t.elapsed());
            }
        }
        if agent.log.stats().acked_through >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = t.elapsed();
    println!(
        "backlog of {n} drained in {d:.2?}: {:.0} readings/s; first live value after {live:?}",
        n as f64 / d.as_secs_f64()
    );
    // where the time went: commit latency (headend) and ack latency (agent)
    let he_page = get_text(he.http_addr, "/metrics").await?;
    let ag_page = match agent.status_addr {
        Some(a) => get_text(a, "/metrics").await?,
        None => String::new(),
    };
    for (page, name) in [
        (&he_page, "tankwatch_headend_db_write_seconds"),
        (&he_page, "tankwatch_headend_commits_total"),
        (&ag_page, "tankwatch_agent_uplink_ack_latency_seconds"),
        (&ag_page, "tankwatch_agent_uplink_sent_batches_total"),
    ] {
        let sum = metric(page, &format!("{name}_sum"));
        let count = metric(page, &format!("{name}_count")).or_else(|| metric(page, name));
        match (sum, count) {
            (Some(s), Some(c)) if c > 0.0 => {
                println!("{name}: {c} observations, mean {:.1} ms", s / c * 1000.0)
            }
            (_, Some(c)) => println!("{name}: {c}"),
            _ => {}
        }
    }
    agent.stop().await?;
    he.stop().await;
    let drain_rate = n as f64 / d.as_secs_f64();
    let raw_rate = if db_url.starts_with("sqlite:") {
        raw_sqlite(&work.path().join("raw.db"), n)?
    } else {
        raw_postgres(&db_url, n).await?
    };
    println!(
        "raw insert of the same {n} rows: {raw_rate:.0} rows/s; end-to-end drain / raw = {:.0} %",
        drain_rate / raw_rate * 100.0
    );
    Ok(())
}

/// The drained rows as the store keeps them: (point, source ms, seq, value).
fn rows(n: u64) -> impl Iterator<Item = (i64, i64, i64, f64)> {
    let base = adapter_api::now_ms() - 3_600_000;
    (0..n as i64).map(move |k| (k % 4 + 1, base + k, k + 1, 10_000.0 + k as f64))
}

/// SQLite's limit for these rows on this disk: one cached prepared
/// statement, 2,000 rows per transaction, WAL and `synchronous=FULL`.
fn raw_sqlite(path: &std::path::Path, n: u64) -> anyhow::Result<f64> {
    let mut c = rusqlite::Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.execute_batch(
        "CREATE TABLE readings (point_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, seq INTEGER NOT NULL,
           value REAL, quality INTEGER NOT NULL, error_id INTEGER, PRIMARY KEY (point_id, ts_ms, seq)) WITHOUT ROWID",
    )?;
    let all: Vec<_> = rows(n).collect();
    let t = Instant::now();
    for chunk in all.chunks(2000) {
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO readings (point_id, ts_ms, seq, value, quality) VALUES (?1, ?2, ?3, ?4, 1) ON CONFLICT DO NOTHING",
            )?;
            for (p, ts, seq, v) in chunk {
                st.execute(rusqlite::params![p, ts, seq, v])?;
            }
        }
        tx.commit()?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// PostgreSQL's limit for these rows: `COPY` into the same table shape
/// (a scratch table in the benchmark's database), 20,000 rows per commit.
async fn raw_postgres(url: &str, n: u64) -> anyhow::Result<f64> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await?;
    sqlx::query(
        "CREATE TABLE raw_readings (ts_ms BIGINT NOT NULL, seq BIGINT NOT NULL, value DOUBLE PRECISION,
           point_id INTEGER NOT NULL, error_id INTEGER, quality SMALLINT NOT NULL, PRIMARY KEY (point_id, ts_ms, seq))",
    )
    .execute(&mut c)
    .await?;
    let all: Vec<_> = rows(n).collect();
    let t = Instant::now();
    for chunk in all.chunks(20_000) {
        let mut text = String::with_capacity(chunk.len() * 48);
        for (p, ts, seq, v) in chunk {
            text.push_str(&format!("{ts}\t{seq}\t{v}\t{p}\t\\N\t1\n"));
        }
        let mut tx = c.begin().await?;
        let mut copy = tx
            .copy_in_raw(
                "COPY raw_readings (ts_ms, seq, value, point_id, error_id, quality) FROM STDIN",
            )
            .await?;
        copy.send(text.into_bytes()).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE raw_readings")
        .execute(&mut c)
        .await?;
    Ok(rate)
}
