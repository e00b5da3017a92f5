//! The agent as a real process, killed with SIGKILL and restarted: no
//! acknowledged reading is stored twice and no logged reading is lost.
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use atg_sim::{SimConfig, Simulator};
use e2e::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn spawn_agent(config: &std::path::Path) -> Result<Child> {
    Ok(Command::new(bin("edge-agent"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_neither_duplicates_nor_loses_logged_readings() -> Result<()> {
    let pki = TestPki::new(&["site-k"])?;
    let work = tempfile::tempdir()?;
    let sim = Simulator::start(
        "127.0.0.1:0".parse()?,
        SimConfig {
            speed: 600.0,
            ..SimConfig::default()
        },
    )
    .await?;
    let he = headend::start(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let log_dir = work.path().join("log");
    let yaml = agent_yaml(&pki, "site-k", he.grpc_addr, &log_dir, &sim, 50);
    let config = work.path().join("site.yaml");
    std::fs::write(&config, yaml)?;

    let mut stored_before = 0;
    for round in 0..4 {
        let mut child = spawn_agent(&config)?;
        let db = he.db.clone();
        eventually(
            "the agent's readings are stored",
            Duration::from_secs(20),
            || async {
                Ok((stored_seqs(&db, "site-k").await?.len() > stored_before).then_some(()))
            },
        )
        .await?;
        // kill at a different moment each round
        tokio::time::sleep(Duration::from_millis(300 + 250 * round)).await;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
        child.wait()?;
        stored_before = stored_seqs(&he.db, "site-k").await?.len();
    }
    // a last run that drains, then a graceful stop (flushes the log)
    let mut child = spawn_agent(&config)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    let status = child.wait()?;
    assert!(status.success(), "graceful stop: {status}");

    let log = sflog::Log::open(&log_dir, &sflog::Options::default())?;
    let next = log.stats().next_seq;
    let in_log: BTreeSet<u64> = log
        .read_from(1, usize::MAX, usize::MAX)?
        .iter()
        .map(|e| e.seq)
        .collect();
    let seqs = stored_seqs(&he.db, "site-k").await?;
    let logs: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT log_id) FROM readings")
        .fetch_one(he.db.pool())
        .await?;
    assert_eq!(logs, 1, "the log kept its identity across kills");
    let unique: BTreeSet<u64> = seqs.iter().map(|&s| s as u64).collect();
    assert_eq!(unique.len(), seqs.len(), "a reading was stored twice");
    assert!(
        unique.iter().all(|&s| s < next),
        "SQL holds a seq the log never assigned"
    );
    let missing: Vec<u64> = (1..next)
        .filter(|s| !unique.contains(s) && !in_log.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "logged readings lost: {} of {}, first {:?}",
        missing.len(),
        next - 1,
        &missing[..missing.len().min(10)]
    );
    assert!(
        unique.len() > 500,
        "enough traffic to mean something: {}",
        unique.len()
    );
    he.stop().await;
    Ok(())
}
