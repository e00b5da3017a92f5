//! A long outage's backlog (500,000 readings queued in the agent's log)
//! drains fully, in order, exactly once, while live readings still reach
//! the REST API within seconds.
use std::time::{Duration, Instant};

use anyhow::Result;
use atg_sim::{SimConfig, Simulator};
use e2e::*;

const BACKLOG: u64 = 500_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500k_backlog_drains_in_order_while_live_readings_arrive_within_seconds() -> Result<()> {
    let pki = TestPki::new(&["site-b"])?;
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    // the outage: an hour of readings queued in the log while the headend was away
    let t_fill = Instant::now();
    fill_backlog(&log_dir, BACKLOG)?;
    println!("filled {BACKLOG} readings in {:?}", t_fill.elapsed());

    let sim = Simulator::start("127.0.0.1:0".parse()?, SimConfig::default()).await?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let cfg = agent_config(
        work.path(),
        &agent_yaml(&pki, "site-b", he.grpc_addr, &log_dir, &sim, 200),
    )?;
    let started = Instant::now();
    let started_ms = adapter_api::now_ms();
    let agent = edge_agent::start(cfg)?;

    // live values show within seconds, long before the backlog is through
    eventually(
        "a live tank-2 volume on the REST API",
        Duration::from_secs(5),
        || async {
            let a = get_json(he.http_addr, "/api/v1/sites/site-b/assets").await?;
            let live = a
                .as_array()
                .and_then(|v| v.iter().find(|x| x["asset_id"] == "tank-2"))
                .map(|t| t["fields"]["volume"]["source_ts"].clone());
            Ok(live
                .and_then(|ts| ts.as_str().map(String::from))
                .and_then(|ts| humantime_ms(&ts))
                .filter(|&ms| ms >= started_ms)
                .map(|_| ()))
        },
    )
    .await?;
    let live_after = started.elapsed();
    let acked_when_live = agent.log.stats().acked_through;
    assert!(
        acked_when_live < BACKLOG,
        "live data came before the backlog was through ({acked_when_live} acked)"
    );

    eventually(
        "the backlog is acknowledged",
        Duration::from_secs(180),
        || async { Ok((agent.log.stats().acked_through >= BACKLOG).then_some(())) },
    )
    .await?;
    let drained_after = started.elapsed();
    println!(
        "live reading after {live_after:?}; {BACKLOG} backlog readings drained in {drained_after:?} ({:.0} readings/s)",
        BACKLOG as f64 / drained_after.as_secs_f64()
    );
    agent.stop().await?;

    // exactly once, none missing, committed in seq order
    let (n, distinct, lo, hi): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM readings_wide WHERE site_id = 'site-b' AND seq <= $1",
    )
    .bind(BACKLOG as i64)
    .fetch_one(he.db.pool())
    .await?;
    assert_eq!(
        (n, distinct, lo, hi),
        (BACKLOG as i64, BACKLOG as i64, 1, BACKLOG as i64)
    );
    he.stop().await;
    Ok(())
}

fn humantime_ms(s: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}
