//! Issue 35: the reference deployment, started from `deploy/haproxy.cfg`
//! as it ships: three headend processes on one PostgreSQL behind HAProxy
//! (TCP for the agents' gRPC, HTTP for the REST API, both health-checked
//! on `/ready`), and three real agents dialling the balancer. One replica
//! is SIGKILLed under them while commands are being issued and the REST
//! API is being read through the balancer.
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const SETPOINTS: &str = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n";
const FINAL: [&str; 5] = ["completed", "failed", "rejected", "expired", "cancelled"];

async fn sessions_on(r: &HeadendProcess) -> f64 {
    match get_text(r.http, "/metrics").await {
        Ok(p) => metric(&p, "tankwatch_headend_agent_sessions").unwrap_or(0.0),
        Err(_) => 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sigkilled_behind_haproxy_loses_no_agent_reading_command_or_rest_answer()
-> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let work = tempfile::tempdir()?;
    let r = replica_killed(work.path()).await;
    if r.is_err() || std::env::var_os("TANKWATCH_SHOW_LOGS").is_some() {
        // the processes' own words
        for e in std::fs::read_dir(work.path())?.flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {}:", e.path().display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
    r
}

async fn replica_killed(work: &std::path::Path) -> Result<()> {
    let pg = pg::fresh_database().await?;
    let sites = ["site-1", "site-2", "site-3"];
    let pki = TestPki::new(&sites)?;
    // the API key, made before the replicas run (this migrates the database)
    let db = headend::store::Db::connect(&pg.url, 4).await?;
    let key = api_key(&db, "admin", None).await?;
    let mut replicas = Vec::new();
    for n in 1..=3 {
        let r = HeadendProcess::spawn(&pg.url, pki.path(), &work.join(format!("headend-{n}.log")))?;
        register_token(r.http, key.clone());
        replicas.push(r);
    }
    for r in &replicas {
        r.ready(T).await?;
    }
    let lb = Haproxy::start(&replicas, &work.join("haproxy.log"))?;
    let (agents_at, rest) = (lb.agents, lb.rest);
    register_token(rest, key.clone());
    eventually("the balancer's REST side", T, || async {
        Ok(get_json(rest, "/api/v1/sites").await.ok().map(|_| ()))
    })
    .await?;
    // three agents dial the balancer; site-1 has a controller
    let sim = fast_sim().await?;
    let mut agents = Vec::new();
    for s in sites {
        let dir = work.join(s);
        std::fs::create_dir_all(&dir)?;
        let mut yaml = agent_yaml(&pki, s, agents_at, &dir.join("log"), &sim, 100);
        if s == "site-1" {
            yaml = with_controllers(&yaml, &[("ctl-1", 100.0, &sim)], SETPOINTS, "");
        }
        agents.push(edge_agent::start(agent_config(&dir, &yaml)?)?);
    }
    for a in &agents {
        let mut up = a.uplink.clone();
        tokio::time::timeout(T, up.wait_for(|s| s.connected)).await??;
    }
    eventually("site-1's controller known", T, || async {
        let a = get_json(rest, "/api/v1/sites/site-1/assets").await;
        Ok(a.ok()
            .filter(|a| {
                a.as_array()
                    .is_some_and(|v| v.iter().any(|x| x["asset_id"] == "ctl-1"))
            })
            .map(|_| ()))
    })
    .await?;
    // every replica shows every site connected, whichever holds its session,
    // and reports the same fleet
    for r in &replicas {
        eventually("every site connected on every replica", T, || async {
            let v = get_json(r.http, "/api/v1/sites").await?;
            let up = v
                .as_array()
                .map(|a| a.iter().filter(|s| s["connected"] == true).count());
            Ok((up == Some(3)).then_some(()))
        })
        .await?;
        let page = get_text(r.http, "/metrics").await?;
        let fig = |f: &str| metric(&page, &format!("tankwatch_headend_fleet{{figure=\"{f}\"}}"));
        ensure!(
            (fig("sites"), fig("connected"), fig("silent")) == (Some(3.0), Some(3.0), Some(0.0)),
            "the fleet on {}: {page}",
            r.http
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // the victim: the replica holding the most sessions
    let mut counts = Vec::new();
    for r in &replicas {
        counts.push(sessions_on(r).await);
    }
    let victim = (0..3)
        .max_by(|a, b| counts[*a].total_cmp(&counts[*b]))
        .unwrap_or(0);
    let on_victim = counts[victim] as usize;
    eprintln!(
        "sessions per replica {counts:?}; killing replica {}",
        victim + 1
    );
    ensure!(on_victim >= 1, "{counts:?}");
    let before: Vec<u64> = agents.iter().map(|a| a.uplink.borrow().sessions).collect();

    // the REST API is read through the balancer every 100 ms throughout
    let reading = Arc::new(AtomicBool::new(true));
    let (reads, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let poller = {
        let (reading, reads, failed) = (reading.clone(), reads.clone(), failed.clone());
        tokio::spawn(async move {
            while reading.load(Ordering::Relaxed) {
                match get(rest, "/api/v1/sites").await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => {
                        eprintln!("REST through the balancer: {}", r.status());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("REST through the balancer: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // commands issued before, during and after the kill
    let commander = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..10 {
            let body = json!({"kind": "setpoint", "asset": "site-1/ctl-1", "field": "power_limit", "value": 20 + i, "duration_s": 1});
            ids.push(submit_until_taken(rest, &format!("during-kill-{i}"), &body, T).await?);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        anyhow::Ok(ids)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t0 = Instant::now();
    replicas[victim].sigkill()?;
    // every agent that lost its session streams again through the balancer
    let mut back: Vec<Option<Duration>> = vec![None; agents.len()];
    while t0.elapsed() < Duration::from_secs(15) {
        for (i, (a, n)) in agents.iter().zip(&before).enumerate() {
            let st = a.uplink.borrow().clone();
            if back[i].is_none() && st.connected && st.sessions > *n {
                back[i] = Some(t0.elapsed());
            }
        }
        let all_up = agents.iter().all(|a| a.uplink.borrow().connected);
        if all_up && back.iter().flatten().count() >= on_victim {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let moved: Vec<Duration> = back.iter().flatten().copied().collect();
    eprintln!("agents on the killed replica streaming again through the balancer after {moved:?}");
    ensure!(
        moved.len() >= on_victim && agents.iter().all(|a| a.uplink.borrow().connected),
        "within 15 s of the kill: {} of the {on_victim} agents on it reconnected",
        moved.len()
    );
    // the survivors show every site connected again (the moved sessions' rows
    // now name them)
    for (i, r) in replicas.iter().enumerate().filter(|(i, _)| *i != victim) {
        eventually(&format!("replica {} sees every site", i + 1), T, || async {
            let v = get_json(r.http, "/api/v1/sites").await?;
            let up = v
                .as_array()
                .map(|a| a.iter().filter(|s| s["connected"] == true).count());
            Ok((up == Some(3)).then_some(()))
        })
        .await?;
    }
    // every command reaches a final state, as the REST API (through the balancer) says
    let ids = commander.await??;
    let mut finals = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let c = eventually(
            &format!("command {id} final"),
            Duration::from_secs(60),
            || async {
                let c = get_json(rest, &format!("/api/v1/commands/{id}")).await?;
                Ok(FINAL
                    .contains(&c["state"].as_str().unwrap_or_default())
                    .then_some(c))
            },
        )
        .await?;
        *finals
            .entry(format!(
                "{}/{}",
                c["state"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default()
            ))
            .or_default() += 1;
    }
    eprintln!("commands issued around the kill ended: {finals:?}");
    reading.store(false, Ordering::Relaxed);
    poller.await?;
    let (reads, failed) = (
        reads.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    eprintln!("REST through the balancer: {reads} reads, {failed} failed");
    ensure!(
        failed == 0 && reads > 20,
        "{failed} of {reads} REST reads failed"
    );
    // every reading of every site is stored once
    sim.set_silent(true);
    for (a, s) in agents.iter().zip(sites) {
        eventually(&format!("{s}'s log drains"), T, || async {
            let st = a.log.stats();
            Ok((st.acked_through + 1 == st.next_seq).then_some(()))
        })
        .await?;
    }
    for (a, s) in agents.into_iter().zip(sites) {
        let st = stop_drained(a).await?;
        let seqs = stored_seqs(&db, s).await?;
        let mut unique = seqs.clone();
        unique.dedup();
        ensure!(unique.len() == seqs.len(), "{s}: a reading stored twice");
        assert_every_seq_accounted_for(&db, s, &st).await?;
    }
    drop(lb);
    db.pool().close().await;
    pg.drop().await
}

/// The shipped file is valid as the guide says to use it: replicas on
/// loopback (plain HTTP, what the test above runs) and on other hosts
/// (HTTPS to each replica, verified against its CA).
#[test]
fn the_shipped_haproxy_configuration_is_valid_with_plain_and_https_replicas() -> Result<()> {
    let pki = TestPki::new(&["site-1"])?;
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/haproxy.cfg");
    for ca in [None, Some(pki.path().join("ca.pem"))] {
        let mut c = Command::new("haproxy");
        c.args(["-c", "-f"]).arg(&cfg);
        for (k, v) in [
            ("TW_AGENTS_BIND", ":7443"),
            ("TW_REST_BIND", ":8080"),
            ("TW_API_HOST", "tankwatch.example.com"),
        ] {
            c.env(k, v);
        }
        // two replicas (TW_HE3 is optional) and three
        for n in 1..=if ca.is_some() { 2 } else { 3 } {
            c.env(format!("TW_HE{n}"), format!("10.0.0.1{n}"))
                .env(format!("TW_HE{n}_GRPC"), "7443")
                .env(format!("TW_HE{n}_REST"), "8080");
        }
        if let Some(ca) = &ca {
            c.env("TW_REST_CA", ca);
        }
        let out = c
            .output()
            .context("haproxy (scripts/peers.sh installs it)")?;
        ensure!(
            out.status.success(),
            "haproxy -c with TW_REST_CA {ca:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Replicas on other hosts serve REST over HTTPS; HAProxy's checks of both
/// backends then go over TLS, verified against the CA: agents get through
/// (the agents' backend checks the REST port too) and so does REST. Two
/// replicas: the third is optional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serving_https_are_checked_over_tls_and_take_agents_and_rest() -> Result<()> {
    let work = tempfile::tempdir()?;
    let pg = pg::fresh_database().await?;
    let pki = TestPki::new(&["site-1"])?;
    let db = headend::store::Db::connect(&pg.url, 2).await?;
    let key = api_key(&db, "admin", None).await?;
    let tls = [
        format!(
            "--http-tls-cert={}",
            pki.path().join("headend.pem").display()
        ),
        format!(
            "--http-tls-key={}",
            pki.path().join("headend.key").display()
        ),
    ];
    let mut replicas = Vec::new();
    for n in 1..=2 {
        replicas.push(HeadendProcess::spawn_with(
            &pg.url,
            pki.path(),
            &work.path().join(format!("headend-{n}.log")),
            &tls,
        )?);
    }
    // both listening before the balancer starts checking them (a replica
    // still starting when HAProxy's first checks ran was marked DOWN,
    // which this test counts as a failed check)
    for r in &replicas {
        eventually("the replica's HTTPS port", T, || async {
            Ok(tokio::net::TcpStream::connect(r.http)
                .await
                .ok()
                .map(|_| ()))
        })
        .await?;
    }
    let log = work.path().join("haproxy.log");
    let lb = Haproxy::start_with(&replicas, &log, Some(&pki.path().join("ca.pem")))?;
    register_token(lb.rest, key);
    let rest = lb.rest;
    eventually("REST through the balancer", T, || async {
        Ok(get_json(rest, "/api/v1/sites").await.ok().map(|_| ()))
    })
    .await
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    // servers start UP: let the checks run (fall 2 at 1 s) before judging
    tokio::time::sleep(Duration::from_secs(3)).await;
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        !said.contains(" is DOWN"),
        "a replica failed its checks:\n{said}"
    );
    let sim = fast_sim().await?;
    let yaml = agent_yaml(
        &pki,
        "site-1",
        lb.agents,
        &work.path().join("log"),
        &sim,
        100,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let mut up = agent.uplink.clone();
    tokio::time::timeout(T, up.wait_for(|s| s.connected))
        .await
        .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())??;
    eventually("the site's readings through the balancer", T, || async {
        let v = get_json(rest, "/api/v1/sites").await?;
        Ok(v.as_array()
            .and_then(|a| a.first().cloned())
            .filter(|s| s["connected"] == true)
            .map(|_| ()))
    })
    .await?;
    agent.stop().await?;
    drop(lb);
    drop(replicas);
    db.pool().close().await;
    pg.drop().await
}
