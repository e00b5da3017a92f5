//! Issue 36, runbook drills: each fault the runbooks start from is made
//! for real, a real Prometheus on the shipped configuration scrapes the
//! headend and the agent, the alert's expression (as loaded from
//! `deploy/prometheus/alerts.yml`) fires, and the runbook's first
//! diagnostic command (its REST call or `/status` read) shows the cause.
//! The runbooks are checked to still name the command each drill runs.
//!
//! - a device down, then a setpoint sent to it: `no-data-from-a-site.md`
//!   and `dispatch-not-applied.md`;
//! - the site's certificate revoked: `certificate-expiring-or-revoked.md`;
//! - the site silent for 15 minutes (its last data moved back in the
//!   database): `no-data-from-a-site.md`;
//! - the agent's disk full: `disk-full-at-a-site.md`;
//! - the database down: `database-down-or-failing-over.md`;
//! - a cloned site PC (two agents, one identity): `agent-flapping.md`;
//! - the replica holding an agent's session killed:
//!   `headend-replica-down.md`.
//!
//! Two more drills live beside the helpers they need: a mail given up
//! (`alarm_mail`, `notifications-dead.md`) and renewals that keep
//! failing on a short-lived certificate (`enrollment`,
//! `certificate-expiring-or-revoked.md`); docs/runbooks/README.md lists
//! them all.
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::prometheus::{Prometheus, runbook_says};
use e2e::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const SETPOINTS: &str = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n";

async fn agent_status(status: std::net::SocketAddr) -> Result<Value> {
    Ok(reqwest::get(format!("http://{status}/status"))
        .await?
        .json()
        .await?)
}

/// Prometheus on the headend of `b` and these agents' status addresses.
async fn prometheus(
    b: &Bench,
    dir: &std::path::Path,
    agents: &[std::net::SocketAddr],
) -> Result<Prometheus> {
    let key = api_key(&b.he.db, "viewer", None).await?;
    let agents: Vec<String> = agents.iter().map(|a| a.to_string()).collect();
    let prom = Prometheus::start(
        dir,
        &[b.he.http_addr.to_string()],
        &agents,
        &key,
        &b.pki.path().join("ca.pem"),
    )?;
    let want = 1 + agents.len();
    eventually("every target scraped", T, || async {
        let up = prom.query("up == 1").await.unwrap_or_default();
        Ok((up.len() == want).then_some(()))
    })
    .await
    .with_context(|| prom.log())?;
    Ok(prom)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_down_a_failed_setpoint_a_revoked_certificate_and_a_silent_site_fire_their_alerts()
-> Result<()> {
    let b = Bench::start("site-drill", |_| {}).await?;
    b.sim.set_frozen(false);
    let (http, site) = (b.he.http_addr, b.site.clone());
    let yaml = with_controllers(
        &b.agent_yaml(b.he.grpc_addr, 100),
        &[("ctl-1", 100.0, &b.sim)],
        SETPOINTS,
        "",
    );
    let agent = b.agent(&yaml)?;
    let status = agent.status_addr.context("status")?;
    wait_value(http, &site, "ctl-1", "power_limit", 0.0, 100.0).await?;
    let dir = tempfile::tempdir()?;
    let prom = prometheus(&b, dir.path(), &[status]).await?;

    // a device down: both device alerts; the devices list names it
    b.sim.set_silent(true);
    prom.fires("TankwatchAgentDeviceDown", T).await?;
    prom.fires("TankwatchDeviceDown", T).await?;
    runbook_says("no-data-from-a-site.md", "/api/v1/sites/SITE/devices")?;
    // a silent gauge keeps its TCP connection between timeouts, so
    // `connected` flips with the agent's reconnects: the cause is the
    // error newer than the last good read
    let d = site_device(http, &site, "atg").await?;
    let (err, err_at, good) = (
        d["last_error"].as_str().unwrap_or(""),
        d["last_error_at"].as_str().unwrap_or(""),
        d["last_good"].as_str().unwrap_or(""),
    );
    ensure!(!err.is_empty() && err_at > good, "the devices list: {d}");

    // a setpoint to the unreachable controller: it fails, the alert fires,
    // the failed commands of the site name why
    let body = json!({"kind": "setpoint", "asset": format!("{site}/ctl-1"), "field": "power_limit", "value": 40, "duration_s": 600});
    let id = submit_until_taken(http, "drill-1", &body, T).await?;
    wait_state(http, &id, "failed", T).await?;
    prom.fires("TankwatchCommandsFailing", T).await?;
    runbook_says(
        "dispatch-not-applied.md",
        "/api/v1/commands?site=SITE&state=failed",
    )?;
    let failed = get_json(http, &format!("/api/v1/commands?site={site}&state=failed")).await?;
    ensure!(
        failed.as_array().is_some_and(|a| a
            .iter()
            .any(|c| c["command_id"] == id.as_str() && c["reason"] == "device_unreachable")),
        "the failed commands: {failed}"
    );
    b.sim.set_silent(false);

    // the site's certificates revoked: the agent is refused; its /status says why
    let (st, v) = post_json(
        http,
        &format!("/api/v1/sites/{site}/revoke"),
        &json!({"reason": "drill: a stolen site PC"}),
    )
    .await?;
    ensure!(st == 200, "{st} {v}");
    prom.fires("TankwatchAgentDisconnected", T).await?;
    runbook_says("certificate-expiring-or-revoked.md", "/status")?;
    let s = eventually("the agent says it is revoked", T, || async {
        let s = agent_status(status).await?;
        let e = s["uplink"]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_lowercase();
        Ok(e.contains("revoked").then_some(s))
    })
    .await?;
    ensure!(s["uplink"]["connected"] == false, "{s}");

    // silent for 15 minutes: the agent gone, its last data moved back
    agent.stop().await?;
    sqlx::query("UPDATE sites SET last_seen_ms = $1 WHERE site_id = $2")
        .bind(headend::wallclock::now_ms() - 16 * 60_000)
        .bind(&site)
        .execute(b.he.db.pool())
        .await?;
    prom.fires("TankwatchSiteSilent", T).await?;
    runbook_says("no-data-from-a-site.md", "/api/v1/sites")?;
    let sites = get_json(http, "/api/v1/sites").await?;
    let s = sites
        .as_array()
        .and_then(|a| a.iter().find(|s| s["site_id"] == site.as_str()).cloned())
        .context("the site")?;
    ensure!(s["connected"] == false && s["session"].is_null(), "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_the_site_fires_its_alert_and_status_shows_the_log_squeezed() -> Result<()> {
    let b = Bench::start("site-disk", |_| {}).await?;
    b.sim.set_frozen(false);
    let disk = Tmpfs::new("4m")?;
    let yaml = agent_yaml(
        &b.pki,
        &b.site,
        b.he.grpc_addr,
        &disk.path().join("log"),
        &b.sim,
        100,
    );
    let agent = b.agent(&yaml)?;
    let status = agent.status_addr.context("status")?;
    let dir = tempfile::tempdir()?;
    let prom = prometheus(&b, dir.path(), &[status]).await?;
    // something else fills the site's disk
    let filler = disk.path().join("other-program.dat");
    let _ = std::fs::write(&filler, vec![0u8; 3 * 1024 * 1024]);
    prom.fires("TankwatchAgentDiskFull", T).await?;
    runbook_says("disk-full-at-a-site.md", "effective_max_bytes")?;
    let s = agent_status(status).await?;
    let log = &s["log"];
    ensure!(
        log["effective_max_bytes"].as_u64() < log["max_bytes"].as_u64()
            && log["fs_free_bytes"]
                .as_u64()
                .is_some_and(|f| f < 2 * 1024 * 1024),
        "/status .log: {log}"
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_down_fires_its_alert_and_ready_says_why() -> Result<()> {
    let pg = pg::fresh_database().await?;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse()?).await?;
    let url = pg.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let b = Bench::start("site-db", |c| c.database_url = url.clone()).await?;
    let dir = tempfile::tempdir()?;
    let prom = prometheus(&b, dir.path(), &[]).await?;
    proxy.set_up(false);
    prom.fires("TankwatchDatabaseUnavailable", T).await?;
    runbook_says("database-down-or-failing-over.md", "/ready")?;
    let r = reqwest::get(format!("http://{}/ready", b.he.http_addr)).await?;
    let code = r.status();
    let v: Value = r.json().await?;
    ensure!(
        code == 503
            && v["error"]["code"] == "database_unavailable"
            && v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("database: ") && !m.contains("database: database")),
        "/ready: {code} {v}"
    );
    proxy.set_up(true);
    drop(prom);
    drop(b);
    pg.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_sharing_one_identity_fire_the_flapping_alert_and_status_names_the_takeover()
-> Result<()> {
    let b = Bench::start("site-flap", |_| {}).await?;
    b.sim.set_frozen(false);
    let yaml = b.agent_yaml(b.he.grpc_addr, 500);
    let first = b.agent(&yaml)?;
    // a cloned site PC: the same certificate, its own disk
    let clone_dir = tempfile::tempdir()?;
    let clone_yaml = yaml.replace(
        &b.work.path().join("log").display().to_string(),
        &clone_dir.path().join("log").display().to_string(),
    );
    ensure!(clone_yaml != yaml, "the clone has a log of its own");
    let clone = edge_agent::start(agent_config(clone_dir.path(), &clone_yaml)?)?;
    let status = first.status_addr.context("status")?;
    let dir = tempfile::tempdir()?;
    let prom = prometheus(&b, dir.path(), &[status]).await?;
    prom.fires("TankwatchAgentFlapping", T).await?;
    runbook_says("agent-flapping.md", "/status")?;
    runbook_says(
        "agent-flapping.md",
        "replaced by a newer session of site SITE from ADDRESS",
    )?;
    let want = format!(
        "replaced by a newer session of site {} from 127.0.0.1:",
        b.site
    );
    let s = eventually("the agent says its session was taken over", T, || async {
        let s = agent_status(status).await?;
        let e = s["uplink"]["last_error"].as_str().unwrap_or("").to_string();
        Ok(e.contains(&want).then_some(e))
    })
    .await?;
    eprintln!("the flapping agent's last_error: {s}");
    // the headend's side of the same: its takeovers counted
    runbook_says(
        "agent-flapping.md",
        "tankwatch_headend_session_takeovers_total",
    )?;
    let page = get_text(b.he.http_addr, "/metrics").await?;
    ensure!(
        metric(&page, "tankwatch_headend_session_takeovers_total").is_some_and(|n| n >= 4.0),
        "takeovers: {page}"
    );
    drop(clone);
    first.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_fires_its_alert_alone_and_its_agent_moves_to_the_survivor() -> Result<()>
{
    let work = tempfile::tempdir()?;
    let pg = pg::fresh_database().await?;
    let pki = TestPki::new(&["site-r"])?;
    let db = headend::store::Db::connect(&pg.url, 2).await?;
    let key = api_key(&db, "viewer", None).await?;
    let mut replicas = Vec::new();
    for n in 1..=2 {
        let log = work.path().join(format!("headend-{n}.log"));
        let r = HeadendProcess::spawn(&pg.url, pki.path(), &log)?;
        register_token(r.http, key.clone());
        replicas.push(r);
    }
    for r in &replicas {
        r.ready(T).await?;
    }
    let sim = fast_sim().await?;
    let one = agent_yaml(
        &pki,
        "site-r",
        replicas[0].grpc,
        &work.path().join("log"),
        &sim,
        100,
    );
    let list = format!(
        "address: [\"{}\", \"{}\"]",
        replicas[0].grpc, replicas[1].grpc
    );
    let yaml = one.replace(&format!("address: \"{}\"", replicas[0].grpc), &list);
    ensure!(yaml.contains(&list), "{yaml}");
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let mut up = agent.uplink.clone();
    tokio::time::timeout(T, up.wait_for(|s| s.connected)).await??;
    let on = agent.uplink.borrow().address.clone();
    let victim = usize::from(on != replicas[0].grpc.to_string());
    let survivor = 1 - victim;
    let status = agent.status_addr.context("status")?;
    let heads: Vec<String> = replicas.iter().map(|r| r.http.to_string()).collect();
    let dir = tempfile::tempdir()?;
    let prom = Prometheus::start(
        dir.path(),
        &heads,
        &[status.to_string()],
        &key,
        &pki.path().join("ca.pem"),
    )?;
    eventually("every target scraped", T, || async {
        let up = prom.query("up == 1").await.unwrap_or_default();
        Ok((up.len() == 3).then_some(()))
    })
    .await
    .with_context(|| prom.log())?;

    // the replica holding the agent's session dies (as the OOM killer would)
    let sessions = agent.uplink.borrow().sessions;
    replicas[victim].sigkill()?;
    let down = prom.fires("TankwatchHeadendDown", T).await?;
    ensure!(
        down.len() == 1 && down[0]["metric"]["instance"] == heads[victim].as_str(),
        "the alert names the dead replica alone: {down:?}"
    );
    let none = prom
        .query("absent(up{job=\"tankwatch-headend\"} == 1)")
        .await?;
    ensure!(
        none.is_empty(),
        "TankwatchNoHeadend with a survivor: {none:?}"
    );
    // the runbook's command: the dead one does not answer, the survivor is ready
    runbook_says("headend-replica-down.md", "/ready")?;
    ensure!(
        reqwest::get(format!("http://{}/ready", replicas[victim].http))
            .await
            .is_err(),
        "the killed replica still answers"
    );
    let r = reqwest::get(format!("http://{}/ready", replicas[survivor].http)).await?;
    ensure!(r.status() == 200, "the survivor's /ready: {}", r.status());
    // what happens by itself: the agent streams through the survivor,
    // which shows the site connected
    tokio::time::timeout(T, up.wait_for(|s| s.connected && s.sessions > sessions)).await??;
    let s = agent_status(status).await?;
    ensure!(
        s["uplink"]["address"] == replicas[survivor].grpc.to_string().as_str(),
        "the agent's address: {s}"
    );
    eventually("the survivor shows the site connected", T, || async {
        let v = get_json(replicas[survivor].http, "/api/v1/sites").await?;
        Ok(v.as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|s| s["site_id"] == "site-r" && s["connected"] == true)
            })
            .then_some(()))
    })
    .await?;
    agent.stop().await?;
    drop(prom);
    drop(replicas);
    drop(db);
    pg.drop().await
}
