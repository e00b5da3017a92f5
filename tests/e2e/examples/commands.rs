//! Command-plane benchmark (docs/BENCHMARKS.md):
//!
//! 1. Latency: one agent with a simulated controller; `N` setpoints one
//!    after another: REST submit -> headend -> mTLS gRPC -> limits -> Modbus
//!    write + read-back -> ack through the agent's log -> `active` visible on
//!    REST (polled every 2 ms). Prints p50/p99/max.
//! 2. Throughput: `AGENTS` agents connected at once (each with its own
//!    simulated controller): one setpoint to every agent, then `PER_AGENT`
//!    ETA pushes (distinct loads) to every agent, submitted through REST by
//!    16 concurrent clients; time until every one is `active`.
//!
//! `cargo run --release -p e2e --example commands` (env: N=200 AGENTS=100
//! PER_AGENT=10 DB=sqlite|postgres).
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use e2e::*;
use serde_json::json;

const SETPOINTS: &str = "  - { asset: ctl-1, field: power_limit, min: 0, max: 100 }\n";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn sim() -> Result<atg_sim::Simulator> {
    Ok(atg_sim::Simulator::start(
        "127.0.0.1:0".parse()?,
        atg_sim::SimConfig {
            tanks: 1,
            ..Default::default()
        },
    )
    .await?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = env("N", 200);
    let agents_n = env("AGENTS", 100);
    let per_agent = env("PER_AGENT", 10);
    let sites: Vec<String> = (0..agents_n.max(1)).map(|i| format!("bench-{i}")).collect();
    let refs: Vec<&str> = sites.iter().map(String::as_str).collect();
    let pki = TestPki::new(&refs)?;
    let work = tempfile::tempdir()?;
    let pg = if std::env::var("DB").as_deref() == Ok("postgres") {
        Some(pg::fresh_database().await?)
    } else {
        None
    };
    let url = pg
        .as_ref()
        .map(|d| d.url.clone())
        .unwrap_or_else(|| sqlite_url(work.path()));
    let he = e2e::start_headend(headend_config(&pki, &url, 0)).await?;
    let http = he.http_addr;
    println!(
        "backend: {}",
        if pg.is_some() { "postgres" } else { "sqlite" }
    );

    // ---- agents
    let mut agents = Vec::new();
    let mut sims = Vec::new();
    for site in &sites {
        let s = sim().await?;
        let dir = work.path().join(site);
        std::fs::create_dir_all(&dir)?;
        let base = agent_yaml(&pki, site, he.grpc_addr, &dir.join("log"), &s, 1000);
        let yaml = with_controllers(&base, &[("ctl-1", 100.0, &s)], SETPOINTS, "");
        agents.push(edge_agent::start(agent_config(&dir, &yaml)?)?);
        sims.push(s);
    }
    eventually(
        "every agent connected",
        Duration::from_secs(120),
        || async {
            let s = get_json(http, "/api/v1/sites").await?;
            let up = s
                .as_array()
                .map(|v| v.iter().filter(|x| x["connected"] == true).count())
                .unwrap_or(0);
            Ok((up == sites.len()).then_some(()))
        },
    )
    .await?;

    // ---- 1. latency, one command at a time
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let value = (i % 90) as f64 + 1.0;
        let t = Instant::now();
        let (code, c) = post_json(
            http,
            "/api/v1/commands",
            &json!({"kind": "setpoint", "asset": "bench-0/ctl-1", "field": "power_limit", "value": value}),
        )
        .await?;
        if code != 201 {
            bail!("{code}: {c}");
        }
        let id = c["command_id"].as_str().unwrap_or_default().to_string();
        loop {
            let c = get_json(http, &format!("/api/v1/commands/{id}")).await?;
            match c["state"].as_str() {
                Some("active" | "completed") => break,
                Some("rejected" | "failed" | "expired") => bail!("{c}"),
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if sims[0].power_limit() != value as f32 {
            bail!("device holds {} after {value}", sims[0].power_limit());
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "latency submit -> active on REST, {n} setpoints: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );

    // ---- 2. throughput to all agents: one setpoint each (a device write
    // and read-back at every site), then PER_AGENT ETA pushes each (distinct
    // loads, stored durably by every agent), 16 REST clients
    let mut jobs: Vec<serde_json::Value> = sites
        .iter()
        .map(|s| json!({"kind": "setpoint", "asset": format!("{s}/ctl-1"), "field": "power_limit", "value": 42}))
        .collect();
    let eta = adapter_api::now_ms() + 3_600_000;
    for k in 0..per_agent {
        for s in &sites {
            jobs.push(
                json!({"site": s, "reference": format!("PO-{k}"), "tanks": ["tank-1"],
                "planned_volume_l": 5000, "eta": eta, "eta_source": "carrier_api"}),
            );
        }
    }
    for (phase, jobs) in [
        ("setpoints", jobs[..sites.len()].to_vec()),
        ("ETA pushes", jobs[sites.len()..].to_vec()),
    ] {
        let total = jobs.len();
        let t0 = adapter_api::now_ms();
        let t = Instant::now();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(jobs));
        let mut clients = Vec::new();
        for _ in 0..16 {
            let q = queue.clone();
            clients.push(tokio::spawn(async move {
                loop {
                    let job = q.lock().map(|mut v| v.pop()).unwrap_or(None);
                    let Some(body) = job else {
                        return Ok::<(), anyhow::Error>(());
                    };
                    let path = if body.get("kind").is_some() {
                        "/api/v1/commands"
                    } else {
                        "/api/v1/loads"
                    };
                    let (code, c) = post_json(http, path, &body).await?;
                    if code != 201 {
                        bail!("{code}: {c}");
                    }
                }
            }));
        }
        for c in clients {
            c.await??;
        }
        let submitted = t.elapsed();
        let db = he.db.clone();
        eventually("every command answered", Duration::from_secs(600), || async {
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM commands WHERE created_ms >= $1 AND state IN ('submitted', 'sent', 'acked')",
            )
            .bind(t0)
            .fetch_one(db.pool())
            .await?;
            Ok((open == 0).then_some(()))
        })
        .await?;
        let all = t.elapsed();
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM commands WHERE created_ms >= $1 AND state = 'active'",
        )
        .bind(t0)
        .fetch_one(db.pool())
        .await?;
        println!(
            "throughput, {phase}: {total} to {} agents: submitted in {:.2} s, all active in {:.2} s = {:.0} commands/s ({active} active)",
            sites.len(),
            submitted.as_secs_f64(),
            all.as_secs_f64(),
            total as f64 / all.as_secs_f64()
        );
        if active as usize != total {
            bail!("{phase}: only {active} of {total} active");
        }
    }
    for a in agents {
        a.stop().await?;
    }
    he.stop().await;
    if let Some(d) = pg {
        d.drop().await?;
    }
    Ok(())
}
