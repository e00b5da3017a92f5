//! Issue 8, item 7: with 100 agents and 12 headend restarts one agent once
//! made no connection attempt for over 9 minutes. The uplink now has one
//! deadline from dialling to HelloAck, resets its backoff after every
//! session that got that far, and a watchdog counts any stall. This soak
//! restarts the headend many times under many agents in one process and
//! asserts, every time, that every agent tried again within its backoff cap
//! (+1 s) of the headend coming up (no missed reconnect), and that every
//! one is back within the cap + 8 s (issue 27: on a loaded machine 1 of 40
//! agents was not back after 12 s; a session's setup then, 40 at once on
//! two busy cores, can outlast the 2 s of slack the old bound left, so the
//! two are now told apart, and a failure names each late agent's state).
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
    let mut he = Some(e2e::start_headend(headend_config(&pki, &db_url, port)).await?);
    let sim =
        atg_sim::Simulator::start("127.0.0.1:0".parse()?, atg_sim::SimConfig::default()).await?;
    let mut agents = Vec::new();
    for name in &names {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir)?;
        // backoff 200 ms .. 10 s: restarts come seconds apart, so an agent
        // whose backoff only reset after a 30 s session (before the fix)
        // climbs toward 10 s and misses the deadline below
        let yaml = agent_yaml(
            &pki,
            name,
            format!("127.0.0.1:{port}").parse()?,
            &dir.join("log"),
            &sim,
            1000,
        );
        let yaml = yaml.replace(
            "backoff_initial_ms: 100\n  backoff_max_ms: 1000",
            "backoff_initial_ms: 200\n  backoff_max_ms: 10000",
        );
        assert!(yaml.contains("backoff_max_ms: 10000"));
        agents.push(edge_agent::start(agent_config(&dir, &yaml)?)?);
    }
    let not_back = |since: &[u64]| {
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
    while not_back(&zero) > 0 {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "{} agents never connected",
            not_back(&zero)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut worst = Duration::ZERO;
    let mut medians = Vec::new();
    for round in 0..RESTARTS {
        let before: Vec<u64> = agents.iter().map(|a| a.uplink.borrow().sessions).collect();
        if let Some(h) = he.take() {
            h.stop().await;
        }
        // down for a while: from a blip to longer than the backoff cap
        tokio::time::sleep(Duration::from_millis([50, 300, 1500, 700][round % 4])).await;
        he = Some(e2e::start_headend(headend_config(&pki, &db_url, port)).await?);
        let up = Instant::now();
        // every agent is back within its backoff cap (+ slack), whatever
        // state the restart caught it in; and because the backoff restarts
        // at 200 ms after every session, most are back within a few
        // hundred ms of the headend (before the fix, restarts seconds apart
        // left the backoff near its 10 s cap: a median of 5 s or more)
        let mut back: Vec<Option<Duration>> = vec![None; AGENTS];
        loop {
            for (i, a) in agents.iter().enumerate() {
                let st = a.uplink.borrow();
                if back[i].is_none() && st.connected && st.sessions > before[i] {
                    back[i] = Some(up.elapsed());
                }
            }
            if back.iter().all(Option::is_some) {
                break;
            }
            let late = |i: usize, a: &edge_agent::Agent| {
                let st = a.uplink.borrow();
                format!(
                    "agent {i}: connected {} sessions {} (before {}), last attempt {:?} ago, last error {:?}",
                    st.connected,
                    st.sessions,
                    before[i],
                    st.last_attempt.map(|t| t.elapsed()),
                    st.last_error
                )
            };
            if up.elapsed() >= Duration::from_secs(11) {
                // no missed reconnect: whoever is not back tried since the headend came up
                let missed: Vec<String> = agents
                    .iter()
                    .enumerate()
                    .filter(|(i, a)| {
                        back[*i].is_none()
                            && a.uplink
                                .borrow()
                                .last_attempt
                                .is_none_or(|t| t.elapsed() > up.elapsed())
                    })
                    .map(|(i, a)| late(i, a))
                    .collect();
                ensure!(
                    missed.is_empty(),
                    "restart {round}: {} agents made no attempt within 11 s of the headend (backoff cap 10 s):\n{}",
                    missed.len(),
                    missed.join("\n")
                );
            }
            if up.elapsed() >= Duration::from_secs(18) {
                let missing: Vec<String> = agents
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| back[*i].is_none())
                    .map(|(i, a)| late(i, a))
                    .collect();
                anyhow::bail!(
                    "restart {round}: {} of {AGENTS} agents not back after 18 s (backoff cap 10 s):\n{}",
                    missing.len(),
                    missing.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut times: Vec<Duration> = back.into_iter().flatten().collect();
        times.sort();
        let (median, max) = (times[AGENTS / 2], times[AGENTS - 1]);
        worst = worst.max(max);
        medians.push(median);
        eprintln!("restart {round}: agents back: median {median:?}, last {max:?}");
    }
    medians.sort();
    let median = medians[medians.len() / 2];
    ensure!(
        median < Duration::from_secs(3),
        "median reconnect {median:?} over the restarts: the backoff did not restart"
    );
    eprintln!("median of medians {median:?}");
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
