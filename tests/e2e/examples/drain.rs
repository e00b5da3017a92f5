//! Benchmark: how fast a long outage's backlog drains, end to end over
//! mTLS into SQLite (or PostgreSQL), and how soon live values show.
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
    let he = headend::start(headend_config(&pki, &db_url, 0)).await?;
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
    Ok(())
}
