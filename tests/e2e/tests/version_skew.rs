//! Issue 36, version skew: the previous release (tests/previous-release,
//! built from the git history by scripts/previous-release.sh) and this
//! one work together within one minor version, either way round:
//!
//! - the previous release's agent (a process) streams to this headend and
//!   applies a setpoint it sends;
//! - this agent streams to the previous release's headend (a process)
//!   and applies a setpoint it sends;
//! - a rolling upgrade: two replicas of the previous release on one
//!   PostgreSQL behind HAProxy are replaced one at a time by this
//!   release (SIGTERM, then the new binary on the same ports) while an
//!   agent streams and commands are issued; every reading the agent logged
//!   is stored or accounted for as a gap, and every command ends.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const SETPOINTS: &str = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n";

/// The previous release's version and the folder of its binaries.
fn previous() -> Result<(String, PathBuf)> {
    let text = std::fs::read_to_string(repo().join("tests/previous-release"))?;
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .context("tests/previous-release: no release line")?;
    let version = line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let dir = repo().join("target/previous").join(&version);
    for b in ["headend", "edge-agent"] {
        ensure!(
            dir.join(b).is_file(),
            "{} is missing: scripts/previous-release.sh builds it (scripts/test.sh runs it)",
            dir.join(b).display()
        );
    }
    Ok((version, dir))
}

/// A process killed with the test.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_process(
    exe: &std::path::Path,
    config: &std::path::Path,
    log: &std::path::Path,
) -> Result<Proc> {
    let f = std::fs::File::create(log)?;
    Ok(Proc(
        Command::new(exe)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(f.try_clone()?))
            .stderr(Stdio::from(f))
            .spawn()?,
    ))
}

/// A setpoint on the site's controller, applied at the device.
async fn setpoint_applied(
    http: std::net::SocketAddr,
    site: &str,
    key: &str,
    value: f64,
    sim: &atg_sim::Simulator,
) -> Result<()> {
    let body = json!({"kind": "setpoint", "asset": format!("{site}/ctl-1"), "field": "power_limit", "value": value, "duration_s": 600});
    let id = submit_until_taken(http, key, &body, T).await?;
    wait_state(http, &id, "active", T).await?;
    ensure!(
        (f64::from(sim.power_limit()) - value).abs() < 1e-6,
        "the device holds {} after command {id}",
        sim.power_limit()
    );
    Ok(())
}

/// This agent, with the simulator's tanks and a controller, dialling
/// `headend`; connected.
async fn controller_agent(
    pki: &TestPki,
    site: &str,
    headend: std::net::SocketAddr,
    dir: &std::path::Path,
    sim: &atg_sim::Simulator,
) -> Result<edge_agent::Agent> {
    let yaml = with_controllers(
        &agent_yaml(pki, site, headend, &dir.join("log"), sim, 100),
        &[("ctl-1", 100.0, sim)],
        SETPOINTS,
        "",
    );
    let agent = edge_agent::start(agent_config(dir, &yaml)?)?;
    let mut up = agent.uplink.clone();
    tokio::time::timeout(T, up.wait_for(|s| s.connected)).await??;
    Ok(agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_agent_streams_to_this_headend_and_applies_its_setpoint() -> Result<()>
{
    let (version, dir) = previous()?;
    let b = Bench::start("site-skew-1", |_| {}).await?;
    b.sim.set_frozen(false);
    let yaml = with_controllers(
        &b.agent_yaml(b.he.grpc_addr, 100),
        &[("ctl-1", 100.0, &b.sim)],
        SETPOINTS,
        "",
    );
    let config = b.work.path().join("site.yaml");
    std::fs::write(&config, yaml)?;
    let log = b.work.path().join("agent.log");
    let _agent = agent_process(&dir.join("edge-agent"), &config, &log)?;
    let http = b.he.http_addr;
    eventually("the previous agent's session", T, || async {
        let v = get_json(http, "/api/v1/sites").await?;
        Ok(v.as_array()
            .and_then(|a| a.first().cloned())
            .filter(|s| s["connected"] == true && s["session"]["agent_version"] == version.as_str())
            .map(|_| ()))
    })
    .await
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    wait_value(http, "site-skew-1", "ctl-1", "power_limit", 0.0, 100.0).await?;
    setpoint_applied(http, "site-skew-1", "skew-1", 61.0, &b.sim).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_agent_streams_to_the_previous_releases_headend_and_applies_its_setpoint() -> Result<()>
{
    let (_, dir) = previous()?;
    let site = "site-skew-2";
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    let url = sqlite_url(work.path());
    // the first admin, made by the previous release's own command
    let mut add = Command::new(dir.join("headend"))
        .args([
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--database-url",
            &url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    use std::io::Write;
    add.stdin
        .take()
        .context("stdin")?
        .write_all(b"a long enough password 2\n")?;
    ensure!(add.wait()?.success(), "the previous headend's user add");
    let he = HeadendProcess::spawn_exe(
        &dir.join("headend"),
        (free_port(), free_port()),
        &url,
        pki.path(),
        &work.path().join("headend.log"),
        &[],
    )?;
    he.ready(T).await?;
    register_token(
        he.http,
        login_token(he.http, "admin", "a long enough password 2").await?,
    );
    let sim = fast_sim().await?;
    let agent = controller_agent(&pki, site, he.grpc, work.path(), &sim).await?;
    ensure!(
        agent.uplink.borrow().headend_version.is_empty(),
        "the previous headend sends no version"
    );
    wait_value(he.http, site, "ctl-1", "power_limit", 0.0, 100.0).await?;
    setpoint_applied(he.http, site, "skew-2", 62.0, &sim).await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_of_two_replicas_under_load_loses_nothing() -> Result<()> {
    let (_, dir) = previous()?;
    let work = tempfile::tempdir()?;
    let pg = pg::fresh_database().await?;
    let site = "site-roll";
    let pki = TestPki::new(&[site])?;
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let log = |n: usize| work.path().join(format!("headend-{n}.log"));
    // the previous release, migrating the database first
    let mut replicas = Vec::new();
    for (n, p) in ports.iter().enumerate() {
        let r =
            HeadendProcess::spawn_exe(&dir.join("headend"), *p, &pg.url, pki.path(), &log(n), &[])?;
        r.ready(T).await?;
        replicas.push(r);
    }
    let db = headend::store::Db::connect(&pg.url, 2).await?;
    let key = api_key(&db, "admin", None).await?;
    let lb = Haproxy::start(&replicas, &work.path().join("haproxy.log"))?;
    register_token(lb.rest, key);
    let rest = lb.rest;
    let sim = fast_sim().await?;
    let agent = controller_agent(&pki, site, lb.agents, work.path(), &sim).await?;
    wait_value(rest, site, "ctl-1", "power_limit", 0.0, 100.0).await?;
    // commands all through the upgrade
    let commander = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..12 {
            let body = json!({"kind": "setpoint", "asset": format!("{site}/ctl-1"), "field": "power_limit", "value": 20 + i, "duration_s": 1});
            ids.push(submit_until_taken(rest, &format!("roll-{i}"), &body, T).await?);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::Ok(ids)
    });
    // one replica at a time: stopped as systemd would, the new release on its ports
    for (n, p) in ports.iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        replicas[n].sigterm()?;
        let r = HeadendProcess::spawn_exe(&bin("headend"), *p, &pg.url, pki.path(), &log(n), &[])?;
        r.ready(T).await?;
        replicas[n] = r;
    }
    let ids = commander.await??;
    for id in &ids {
        eventually(&format!("command {id} ended"), T, || async {
            let c = get_json(rest, &format!("/api/v1/commands/{id}")).await?;
            let s = c["state"].as_str().unwrap_or_default().to_string();
            Ok(["completed", "failed", "rejected", "expired", "cancelled"]
                .contains(&s.as_str())
                .then_some(s))
        })
        .await?;
    }
    // every reading: stored once, or a counted gap
    eventually("the agent drained", T, || async {
        let st = agent.log.stats();
        Ok((st.acked_through + 1 >= st.next_seq).then_some(()))
    })
    .await?;
    let st = stop_drained(agent).await?;
    let seqs = stored_seqs(&db, site).await?;
    let mut unique = seqs.clone();
    unique.dedup();
    ensure!(unique.len() == seqs.len(), "a reading stored twice");
    assert_every_seq_accounted_for(&db, site, &st).await?;
    let v = get_json(rest, "/api/v1/sites").await?;
    ensure!(v.as_array().is_some_and(|a| a.len() == 1), "{v}");
    drop(lb);
    drop(replicas);
    db.pool().close().await;
    pg.drop().await
}
