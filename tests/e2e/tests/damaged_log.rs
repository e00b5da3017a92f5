//! Issue 28, item 2: a damaged log file (truncated, as a crash on a bad
//! disk leaves it) no longer stops the site. Before the fix every start
//! exited with "database disk image is malformed" and, under the unit's
//! `Restart=always`, the site stayed dark. Now the file is moved aside, a
//! new log starts, and the headend is told what the old one held unsent.
use std::time::Duration;

use anyhow::Result;
use e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_is_moved_aside_the_site_keeps_streaming_and_the_loss_is_a_gap()
-> Result<()> {
    let pki = TestPki::new(&["site-x"])?;
    let work = tempfile::tempdir()?;
    let port = free_port(); // the headend is down: the log holds everything
    let sim = fast_sim().await?;
    let log_dir = work.path().join("log");
    let yaml = agent_yaml(
        &pki,
        "site-x",
        format!("127.0.0.1:{port}").parse()?,
        &log_dir,
        &sim,
        20,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let old_id = agent.log.log_id();
    let held = agent.log.stats().next_seq - 1;
    assert!(held > 50, "the log holds readings: {held}");
    agent.stop().await?;

    let file = log_dir.join("log.sqlite");
    let len = std::fs::metadata(&file)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)?
        .set_len(len / 2)?;
    let _ = std::fs::remove_file(log_dir.join("log.sqlite-wal"));

    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), port)).await?;
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    assert_ne!(agent.log.log_id(), old_id, "a new log");
    assert!(log_dir.join("log.sqlite.damaged").exists(), "kept aside");
    let db = he.db.clone();
    let (count, log_id): (i64, i64) = eventually(
        "the headend records the damaged log as a gap",
        Duration::from_secs(20),
        || async {
            Ok(sqlx::query_as(
                "SELECT count, log_id FROM gaps WHERE site_id = 'site-x' AND reason = 'log_damaged' AND device = 'log'",
            )
            .fetch_optional(db.pool())
            .await?)
        },
    )
    .await?;
    assert_eq!(
        log_id as u64,
        agent.log.log_id(),
        "stored under the session's (new) log"
    );
    eprintln!("the damaged log held {held} entries; the gap says {count}");
    eventually("new readings arrive", Duration::from_secs(20), || async {
        Ok((stored_seqs(&db, "site-x").await?.len() > 20).then_some(()))
    })
    .await?;
    agent.stop().await?;
    he.stop().await;
    Ok(())
}
