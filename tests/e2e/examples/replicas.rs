//! Dispatch across replicas (issue 35, docs/BENCHMARKS.md).
//!
//! 1. Latency: three headends on one PostgreSQL (A, B, C, in this
//!    process); one agent with a simulated controller, its session on C.
//!    `N` setpoints one after another, each posted to A: submit → C's
//!    session woken by A's note → mTLS gRPC → limits → Modbus write and
//!    read-back → ack → `active` on A's REST (polled every 2 ms). The same
//!    for `N / 5` setpoints posted to C itself, as the one-replica baseline.
//! 2. Load: `SESSIONS` simulated idle agents (real mTLS, one certificate
//!    each) spread over three headend processes on one PostgreSQL; over
//!    60 s, the commands-table reads dispatch makes (the replicas'
//!    `dispatch_queries` metric) and every transaction the database
//!    commits (`pg_stat_database`), per second.
//! 3. A replica dies: `KILL_AGENTS` simulated agents through HAProxy
//!    (`deploy/haproxy.cfg` as shipped) in front of three headend
//!    processes; the replica holding the most sessions is SIGKILLed; each
//!    agent that lost its session measures the time until its next one
//!    (it waits 250-750 ms before each dial, as the agent's default
//!    backoff does); REST is read through the balancer every 100 ms.
//!
//! ```text
//! cargo build --release -p headend --bin headend
//! cargo run --release -p e2e --example replicas   (env: N=1000 SESSIONS=10000 KILL_AGENTS=1000)
//! ```
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

/// Setpoints posted to `to`, each followed to `active` there: (submit →
/// active ms, submit → sent ms), sorted.
async fn setpoints(
    to: SocketAddr,
    n: usize,
    sim: &atg_sim::Simulator,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut active, mut sent) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let value = (i % 90) as f64 + 1.0;
        let t = Instant::now();
        let (code, c) = post_json(
            to,
            "/api/v1/commands",
            &json!({"kind": "setpoint", "asset": "bench-0/ctl-1", "field": "power_limit", "value": value}),
        )
        .await?;
        if code != 201 {
            bail!("{code}: {c}");
        }
        let id = c["command_id"].as_str().unwrap_or_default().to_string();
        let c = loop {
            let c = get_json(to, &format!("/api/v1/commands/{id}")).await?;
            match c["state"].as_str() {
                Some("active" | "completed") => break c,
                Some("rejected" | "failed" | "expired") => bail!("{c}"),
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };
        active.push(t.elapsed().as_secs_f64() * 1000.0);
        let at = |s: &str| {
            c["timeline"]
                .as_array()
                .and_then(|t| t.iter().find(|e| e["state"] == s))
                .and_then(|e| e["at_ms"].as_i64())
        };
        if let (Some(a), Some(b)) = (at("submitted"), at("sent")) {
            sent.push((b - a) as f64);
        }
        if sim.power_limit() != value as f32 {
            bail!("device holds {} after {value}", sim.power_limit());
        }
    }
    active.sort_by(f64::total_cmp);
    sent.sort_by(f64::total_cmp);
    Ok((active, sent))
}

fn line(what: &str, v: &[f64]) {
    println!(
        "  {what:<44} p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  (n = {})",
        pct(v, 0.5),
        pct(v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    );
}

async fn latency(n: usize) -> Result<()> {
    let pki = TestPki::new(&["bench-0"])?;
    let work = tempfile::tempdir()?;
    let pg = pg::fresh_database().await?;
    let a = start_headend(headend_config(&pki, &pg.url, 0)).await?;
    let b = start_headend(headend_config(&pki, &pg.url, 0)).await?;
    let c = start_headend(headend_config(&pki, &pg.url, 0)).await?;
    let sim = atg_sim::Simulator::start(
        "127.0.0.1:0".parse()?,
        atg_sim::SimConfig {
            tanks: 1,
            ..Default::default()
        },
    )
    .await?;
    let base = agent_yaml(
        &pki,
        "bench-0",
        c.grpc_addr,
        &work.path().join("log"),
        &sim,
        1000,
    );
    let yaml = with_controllers(&base, &[("ctl-1", 100.0, &sim)], SETPOINTS, "");
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let mut up = agent.uplink.clone();
    tokio::time::timeout(Duration::from_secs(60), up.wait_for(|s| s.connected)).await??;
    eventually("the controller known", Duration::from_secs(60), || async {
        let v = get_json(a.http_addr, "/api/v1/sites/bench-0/assets").await?;
        Ok(v.as_array()
            .is_some_and(|v| v.iter().any(|x| x["asset_id"] == "ctl-1"))
            .then_some(()))
    })
    .await?;
    let (across, across_sent) = setpoints(a.http_addr, n, &sim).await?;
    let (local, local_sent) = setpoints(c.http_addr, (n / 5).max(1), &sim).await?;
    let page = get_text(c.http_addr, "/metrics").await?;
    println!("dispatch across replicas (3 headends, one PostgreSQL; the session on C)");
    line("posted to A: submit -> active on REST", &across);
    line(
        "posted to A: submitted -> sent (C's timeline)",
        &across_sent,
    );
    line("posted to C: submit -> active on REST", &local);
    line("posted to C: submitted -> sent", &local_sent);
    println!(
        "  C's wakes: peer {:?}, local {:?}, poll {:?}; p99 across / 150 ms goal = {:.2}",
        metric(
            &page,
            "tankwatch_headend_dispatch_wakes_total{cause=\"peer\"}"
        ),
        metric(
            &page,
            "tankwatch_headend_dispatch_wakes_total{cause=\"local\"}"
        ),
        metric(
            &page,
            "tankwatch_headend_dispatch_wakes_total{cause=\"poll\"}"
        ),
        pct(&across, 0.99) / 150.0
    );
    agent.stop().await?;
    for h in [a, b, c] {
        h.stop().await;
    }
    pg.drop().await
}

/// Idle simulated agents: a session, its hello, nothing more (reconnect
/// after 1-2 s when it ends).
async fn idle_agent(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    site: String,
    up: Arc<AtomicUsize>,
) {
    loop {
        if let Ok((_tx, mut inbound)) = open_session(addr, tls.clone(), &site).await {
            let mut counted = false;
            while let Ok(Some(_)) = inbound.message().await {
                if !counted {
                    counted = true;
                    up.fetch_add(1, Ordering::SeqCst);
                }
            }
            if counted {
                up.fetch_sub(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(1000 + fastrand::u64(0..1000))).await;
    }
}

async fn xact_commit(admin: &sqlx::PgPool, db: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(db)
            .fetch_one(admin)
            .await?,
    )
}

async fn dispatch_queries(replicas: &[HeadendProcess]) -> Result<f64> {
    let mut sum = 0.0;
    for r in replicas {
        let p = get_text(r.http, "/metrics").await?;
        sum += metric(&p, "tankwatch_headend_dispatch_queries_total").unwrap_or(0.0);
    }
    Ok(sum)
}

/// A fleet's setup: `n` sites' certificates, a fresh database with an
/// admin key, three headend processes on it (ready, their REST keyed).
struct Fleet {
    work: tempfile::TempDir,
    sites: Vec<String>,
    pg: pg::TempDb,
    db: headend::store::Db,
    key: String,
    replicas: Vec<HeadendProcess>,
}

async fn fleet(prefix: &str, n: usize) -> Result<Fleet> {
    tankwatch_logging::raise_fd_limit();
    let work = tempfile::tempdir()?;
    let sites: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    let refs: Vec<&str> = sites.iter().map(String::as_str).collect();
    tankwatch_pki::bootstrap(work.path(), &refs, 30)?;
    let pg = pg::fresh_database().await?;
    let db = headend::store::Db::connect(&pg.url, 2).await?;
    let key = api_key(&db, "admin", None).await?;
    let mut replicas = Vec::new();
    for i in 0..3 {
        let r = HeadendProcess::spawn_with(
            &pg.url,
            work.path(),
            &work.path().join(format!("headend-{i}.log")),
            &[format!("--max-conns={}", n + 100)],
        )?;
        r.ready(Duration::from_secs(60)).await?;
        register_token(r.http, key.clone());
        replicas.push(r);
    }
    Ok(Fleet {
        work,
        sites,
        pg,
        db,
        key,
        replicas,
    })
}

/// Waits until `up` reaches `n` (at most `limit`).
async fn all_up(up: &AtomicUsize, n: usize, limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    while up.load(Ordering::SeqCst) < n {
        if t.elapsed() > limit {
            bail!(
                "only {} of {n} sessions up after {limit:?}",
                up.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(t.elapsed())
}

async fn load(sessions: usize) -> Result<()> {
    let Fleet {
        work,
        sites,
        pg,
        db,
        replicas,
        ..
    } = fleet("idle", sessions).await?;
    let name = pg.url.rsplit('/').next().unwrap_or_default().to_string();
    let up = Arc::new(AtomicUsize::new(0));
    for (i, s) in sites.iter().enumerate() {
        let tls = tankwatch_tls::client_config(&TestPki::files_in(work.path(), s))?;
        tokio::spawn(idle_agent(replicas[i % 3].grpc, tls, s.clone(), up.clone()));
    }
    let took = all_up(&up, sessions, Duration::from_secs(600)).await?;
    eprintln!("{sessions} idle sessions up in {:.1} s", took.as_secs_f64());
    // settle: the hellos' writes and the first dispatch reads are done
    tokio::time::sleep(Duration::from_secs(10)).await;
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    let (q0, x0, t0) = (
        dispatch_queries(&replicas).await?,
        xact_commit(&admin, &name).await?,
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (q1, x1, dt) = (
        dispatch_queries(&replicas).await?,
        xact_commit(&admin, &name).await?,
        t0.elapsed().as_secs_f64(),
    );
    let dispatch = (q1 - q0) / dt;
    let all = (x1 - x0) as f64 / dt;
    println!("{sessions} idle sessions over 3 replicas (one PostgreSQL), 60 s:");
    println!(
        "  dispatch reads of the commands table   {dispatch:>8.2} /s   (goal < 50: {:.3} of it; a 1 s poll per session was {sessions}/s)",
        dispatch / 50.0
    );
    println!("  every transaction the database commits {all:>8.2} /s");
    println!(
        "  sessions still up at the end           {:>8}",
        up.load(Ordering::SeqCst)
    );
    drop(replicas);
    admin.close().await;
    db.pool().close().await;
    pg.drop().await
}

/// Reconnection times of the agents that lost their session.
type Gaps = Arc<std::sync::Mutex<Vec<Duration>>>;

/// A simulated agent through the balancer: its session, and when it
/// ends, 250-750 ms before the next dial; records how long it was without.
async fn balanced_agent(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    site: String,
    up: Arc<AtomicUsize>,
    gaps: Gaps,
) {
    let mut lost: Option<Instant> = None;
    loop {
        if let Ok((_tx, mut inbound)) = open_session(addr, tls.clone(), &site).await {
            let mut counted = false;
            while let Ok(Some(_)) = inbound.message().await {
                if !counted {
                    counted = true;
                    up.fetch_add(1, Ordering::SeqCst);
                    if let (Some(t), Ok(mut g)) = (lost.take(), gaps.lock()) {
                        g.push(t.elapsed());
                    }
                }
            }
            if counted {
                up.fetch_sub(1, Ordering::SeqCst);
                lost = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(250 + fastrand::u64(0..500))).await;
    }
}

async fn kill(agents: usize) -> Result<()> {
    let Fleet {
        work,
        sites,
        pg,
        db,
        key,
        mut replicas,
    } = fleet("lb", agents).await?;
    let lb = Haproxy::start(&replicas, &work.path().join("haproxy.log"))?;
    register_token(lb.rest, key.clone());
    let (up, gaps): (Arc<AtomicUsize>, Gaps) = Default::default();
    for s in &sites {
        let tls = tankwatch_tls::client_config(&TestPki::files_in(work.path(), s))?;
        tokio::spawn(balanced_agent(
            lb.agents,
            tls,
            s.clone(),
            up.clone(),
            gaps.clone(),
        ));
    }
    all_up(&up, agents, Duration::from_secs(300)).await?;
    let mut per = Vec::new();
    for r in &replicas {
        let p = get_text(r.http, "/metrics").await?;
        per.push(metric(&p, "tankwatch_headend_agent_sessions").unwrap_or(0.0));
    }
    let victim = (0..3)
        .max_by(|a, b| per[*a].total_cmp(&per[*b]))
        .unwrap_or(0);
    // REST through the balancer every 100 ms, from a runtime of its own
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (stop, rest, (k, v)) = (stop.clone(), lb.rest, auth(lb.rest));
        std::thread::spawn(move || -> Result<(usize, usize)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let c = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()?;
                let (mut ok, mut failed) = (0, 0);
                while !stop.load(Ordering::SeqCst) {
                    match c
                        .get(format!("http://{rest}/api/v1/sites?limit=10"))
                        .header(k, &v)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => ok += 1,
                        _ => failed += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok((ok, failed))
            })
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    replicas[victim].sigkill()?;
    while up.load(Ordering::SeqCst) < agents
        || gaps.lock().map(|g| g.len()).unwrap_or(0) < per[victim] as usize
    {
        if t0.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {agents} back after 120 s",
                up.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_back = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the probe panicked"))??;
    let mut g: Vec<f64> = gaps
        .lock()
        .map(|g| g.iter().map(|d| d.as_secs_f64()).collect())
        .unwrap_or_default();
    g.sort_by(f64::total_cmp);
    println!(
        "a replica SIGKILLed under {agents} simulated agents behind HAProxy (3 headend processes, one PostgreSQL):"
    );
    println!(
        "  sessions per replica before {per:?}; replica {} killed",
        victim + 1
    );
    println!(
        "  agents that lost their session {:>5}; back after p50 {:.2} s, p99 {:.2} s, max {:.2} s (goal p99 < 15 s: {:.3} of it)",
        g.len(),
        pct(&g, 0.5),
        pct(&g, 0.99),
        g.last().copied().unwrap_or(f64::NAN),
        pct(&g, 0.99) / 15.0
    );
    println!(
        "  all {agents} streaming again {:.2} s after the kill",
        all_back.as_secs_f64()
    );
    println!("  REST through the balancer meanwhile: {ok} answers, {failed} failed");
    drop(lb);
    drop(replicas);
    db.pool().close().await;
    pg.drop().await
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = env("N", 1000);
    let sessions = env("SESSIONS", 10_000);
    let kill_agents = env("KILL_AGENTS", 1000);
    if n > 0 {
        latency(n).await?;
    }
    if sessions > 0 {
        load(sessions).await?;
    }
    if kill_agents > 0 {
        kill(kill_agents).await?;
    }
    Ok(())
}
