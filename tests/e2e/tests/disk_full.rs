//! Issue 8, item 1: the agent's log on a small real filesystem (a 3 MiB
//! tmpfs) with the default 1 GiB bound, during a headend outage. Before the
//! fix SQLite's "database or disk is full" killed the log writer and left a
//! half-alive agent. Now the full disk is a drop-policy event: the oldest
//! telemetry goes, alarms stay, every drop is a gap record, the agent stays
//! whole and streams everything else once the headend is back, where the
//! agent's own `log_dropping` and `storage_nearly_full` are episodes.
use std::time::Duration;

use anyhow::Result;
use atg_sim::{SimConfig, Simulator};
use e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_under_the_log_drops_telemetry_keeps_alarms_and_streaming_resumes()
-> Result<()> {
    let pki = TestPki::new(&["site-f"])?;
    let work = tempfile::tempdir()?;
    let fs = Tmpfs::new("3m")?;
    let db_url = sqlite_url(work.path());
    let port = free_port(); // the headend is down
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimConfig::default()).await?;
    sim.set_frozen(true);
    let log_dir = fs.path().join("log");
    // the default max_bytes (1 GiB) is far more than the filesystem holds
    let yaml = agent_yaml(
        &pki,
        "site-f",
        format!("127.0.0.1:{port}").parse()?,
        &log_dir,
        &sim,
        10,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;

    // the outage: ~2,400 readings/s onto 3 MiB
    let until = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < until {
        tokio::select! {
            why = agent.failed() => anyhow::bail!("the agent died on a full disk: {why}"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let st = agent.log.stats();
    assert!(st.dropped[0] > 1000, "the disk filled: {st:?}");
    assert_eq!(st.dropped[1], 0, "no alarm was dropped: {st:?}");
    assert!(
        st.effective_max_bytes < 3 * 1024 * 1024,
        "the bound follows the filesystem: {st:?}"
    );
    let page = get_text(agent.status_addr.expect("status endpoint"), "/metrics").await?;
    assert!(
        metric(&page, "tankwatch_agent_log_fs_free_bytes").is_some(),
        "{page}"
    );
    let status = get_json(agent.status_addr.expect("status"), "/status").await?;
    assert!(status["log"]["fs_free_bytes"].is_u64(), "{status}");

    // the headend returns: everything left streams, the device goes quiet, the log drains
    let he = e2e::start_headend(headend_config(&pki, &db_url, port)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_silent(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    eventually(
        "the log drains completely",
        Duration::from_secs(60),
        || async {
            let s = agent.log.stats();
            Ok((s.acked_through + 1 == s.next_seq).then_some(()))
        },
    )
    .await?;
    let st = agent.log.stats();
    agent.stop().await?;
    let gaps = assert_every_seq_accounted_for(&he.db, "site-f", &st).await?;
    assert!(
        gaps.iter()
            .all(|g| g.4 == "telemetry" && g.5 == "disk_full")
    );
    let alarms: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM readings_wide WHERE site_id = 'site-f' AND field LIKE 'alarm.%'",
    )
    .fetch_one(he.db.pool())
    .await?;
    assert!(alarms >= 12, "4 tanks x 3 alarms, got {alarms}");
    // the agent's own conditions came through the same log as episodes of
    // its reserved asset: the log dropped data, its storage was nearly full
    let episodes = get_json(he.http_addr, "/api/v1/alarms?site=site-f&asset=agent").await?;
    let types: Vec<&str> = episodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["type"].as_str())
        .collect();
    assert!(
        types.contains(&"log_dropping") && types.contains(&"storage_nearly_full"),
        "{episodes}"
    );
    he.stop().await;
    drop(fs);
    Ok(())
}
