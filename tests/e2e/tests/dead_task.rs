//! Issue 8, item 1 (second half): a task of the agent that dies must take
//! the agent down (the binary then exits non-zero and systemd restarts
//! it); never a half-alive agent that polls devices but can neither log
//! nor send. Here every write to the log starts failing (as on a disk that
//! turned read-only, or an I/O error: not a full disk, which is a
//! drop-policy event), which kills the log writer.
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_log_writer_dies_reports_it_and_stops_instead_of_running_half_alive()
-> Result<()> {
    let pki = TestPki::new(&["site-z"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let port = free_port(); // no headend: the log is what matters
    let yaml = agent_yaml(
        &pki,
        "site-z",
        format!("127.0.0.1:{port}").parse()?,
        &work.path().join("log"),
        &sim,
        20,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.log.fail_writes_for_test()?;
    let why = tokio::time::timeout(Duration::from_secs(10), agent.failed())
        .await
        .map_err(|_| anyhow::anyhow!("the agent runs on half alive"))?;
    ensure!(why.starts_with("log writer"), "{why}");
    // what the binary does with it: stop, and return the error (exit 1)
    let stopped = agent.stop().await;
    ensure!(stopped.is_err(), "the writer's error comes back from stop");
    Ok(())
}
