//! Issue 8, item 7: with 100 agents and 12 headend restarts one agent once
//! made no connection attempt for over 9 minutes. The uplink now has one
//! deadline from dialling to HelloAck, resets its backoff after every
//! session that got that far, and a watchdog counts any stall. This soak
//! restarts the headend many times under many agents in one process and
//! asserts that every agent is back, within its backoff cap, every time.
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e::*;

const AGENTS: usize = 40;
const RESTARTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_reconnects_after_every_one_of_many_headend_restarts() -> Result<()> {
    let names: Vec<String> = (0..AGENTS).map(|i| format!("soak-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pki = TestPki::new(&refs)?;
    let work = tempfile::tempdir()?;
    let db_url = sqlite_url(work.path());
    let port = free_port();
    let mut he = Some(headend::start(headend_config(&pki, &db_url, port)).await?);
    let sim =
        atg_sim::Simulator::start("127.0.0.1:0".parse()?, atg_sim::SimConfig::default()).await?;
    let mut agents = Vec::new();
    for name in &names {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir)?;
        // backoff 100 ms .. 1 s (the harness default)
        let yaml = agent_yaml(
            &pki,
            name,
            format!("127.0.0.1:{port}").parse()?,
            &dir.join("log"),
            &sim,
            1000,
        );
        agents.push(edge_agent::start(agent_config(&dir, &yaml)?)?);
    }
    let all_back = |since: &[u64]| {
        agents
            .iter()
            .zip(since)
            .filter(|(a, s)| {
                let st = a.uplink.borrow();
                !(st.connected && st.sessions > **s)
            })
            .count()
    };
    let zero = vec![0; AGENTS];
    let t = Instant::now();
    while all_back(&zero) > 0 {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "{} agents never connected",
            all_back(&zero)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut worst = Duration::ZERO;
    for round in 0..RESTARTS {
        let before: Vec<u64> = agents.iter().map(|a| a.uplink.borrow().sessions).collect();
        if let Some(h) = he.take() {
            h.stop().await;
        }
        // down for a while: from a blip to longer than the backoff cap
        tokio::time::sleep(Duration::from_millis([50, 300, 1500, 700][round % 4])).await;
        he = Some(headend::start(headend_config(&pki, &db_url, port)).await?);
        let up = Instant::now();
        // each agent tries at least once per backoff_max (1 s): all are back
        // well within 10 s, whatever state the restart caught them in
        loop {
            let missing = all_back(&before);
            if missing == 0 {
                break;
            }
            ensure!(
                up.elapsed() < Duration::from_secs(10),
                "restart {round}: {missing} of {AGENTS} agents not back after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst = worst.max(up.elapsed());
        eprintln!(
            "restart {round}: all {AGENTS} agents back in {:?}",
            up.elapsed()
        );
    }
    eprintln!("worst: {worst:?}");
    for a in &agents {
        let page = get_text(a.status_addr.expect("status"), "/metrics").await?;
        ensure!(
            metric(&page, "tankwatch_agent_uplink_stalls_total") == Some(0.0),
            "a watchdog saw a stall"
        );
    }
    for a in agents {
        a.stop().await?;
    }
    if let Some(h) = he {
        h.stop().await;
    }
    Ok(())
}
