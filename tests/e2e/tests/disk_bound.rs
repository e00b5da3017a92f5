//! The log's byte bound is hit during an outage: the log stays under it,
//! alarms survive, the dropped counts match exactly what is missing in SQL,
//! and the headend shows the gap.
use std::time::Duration;

use anyhow::Result;
use atg_sim::{SimConfig, Simulator};
use e2e::*;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                // the reserve file is room kept for a full disk, not log data
                .filter(|e| e.file_name() != "reserve")
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_drops_oldest_telemetry_keeps_alarms_and_the_headend_shows_the_gap() -> Result<()>
{
    const MAX: u64 = 1024 * 1024;
    let pki = TestPki::new(&["site-d"])?;
    let work = tempfile::tempdir()?;
    let db_url = sqlite_url(work.path());
    let port = free_port(); // the headend is down: nothing listens here yet
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimConfig::default()).await?;
    sim.set_frozen(true);
    let log_dir = work.path().join("log");
    let yaml = agent_yaml(
        &pki,
        "site-d",
        format!("127.0.0.1:{port}").parse()?,
        &log_dir,
        &sim,
        20,
    )
    .replace(
        "  flush_interval_ms: 50\n",
        &format!("  flush_interval_ms: 50\n  max_bytes: {MAX}\n"),
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;

    // the outage: ~1,200 readings/s into a 1 MiB log, sampled on disk
    let mut peak = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        peak = peak.max(dir_bytes(&log_dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = agent.log.stats();
    assert!(st.dropped[0] > 1000, "the bound was hit: {st:?}");
    assert_eq!(st.dropped[1], 0, "no alarm was dropped");
    assert!(st.bytes <= MAX, "live pages {} over the bound", st.bytes);
    assert!(
        peak <= MAX + sflog::WAL_BYTES + 64 * 1024,
        "on disk {peak} bytes over the bound"
    );

    // the headend returns; let the log drain, then silence the device so the log stops growing
    let he = e2e::start_headend(headend_config(&pki, &db_url, port)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_silent(true);
    tokio::time::sleep(Duration::from_secs(2)).await; // the bad readings are logged
    eventually(
        "the log drains completely",
        Duration::from_secs(30),
        || async {
            let s = agent.log.stats();
            Ok((s.acked_through + 1 == s.next_seq).then_some(()))
        },
    )
    .await?;
    let st = agent.log.stats();
    // the agent's metrics say the same
    let page = get_text(agent.status_addr.expect("status endpoint"), "/metrics").await?;
    assert_eq!(
        metric(
            &page,
            "tankwatch_agent_log_dropped_total{class=\"telemetry\"}"
        ),
        Some(st.dropped[0] as f64),
        "{page}"
    );
    assert_eq!(
        metric(&page, "tankwatch_agent_log_dropped_total{class=\"alarm\"}"),
        Some(0.0)
    );
    agent.stop().await?;

    let gaps = assert_every_seq_accounted_for(&he.db, "site-d", &st).await?;
    // the alarms of the outage's first poll (the oldest entries) survived
    let alarms: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM readings_wide WHERE site_id = 'site-d' AND field LIKE 'alarm.%'",
    )
    .fetch_one(he.db.pool())
    .await?;
    assert!(alarms >= 12, "4 tanks x 3 alarms, got {alarms}");

    // the operator sees "data lost at site-d between T1 and T2"
    let g = get_json(he.http_addr, "/api/v1/sites/site-d/gaps").await?;
    let g = g.as_array().expect("array");
    assert_eq!(g.len(), gaps.len());
    assert!(
        g.iter()
            .all(|x| x["reason"] == "disk_full" && x["from"].is_string() && x["to"].is_string())
    );
    he.stop().await;
    Ok(())
}
