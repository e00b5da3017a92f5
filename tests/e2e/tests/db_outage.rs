//! The database goes away under the headend: it stops acknowledging,
//! pushes back on the agent instead of buffering, stays up, and recovers by
//! itself when the database returns; nothing is lost or stored twice.
use std::time::Duration;

use anyhow::{Context, Result};
use atg_sim::{SimConfig, Simulator};
use e2e::*;

/// After the database returns: everything logged by now is acknowledged
/// within a minute and the headend is ready again; returns that seq.
async fn recovered(agent: &edge_agent::Agent, http: std::net::SocketAddr) -> Result<u64> {
    let target = agent.log.stats().next_seq - 1;
    eventually(
        "the backlog is acknowledged after the outage",
        Duration::from_secs(60),
        || async { Ok((agent.log.stats().acked_through >= target).then_some(())) },
    )
    .await?;
    let ready = reqwest::get(format!("http://{http}/ready")).await?.status();
    anyhow::ensure!(ready == 200, "/ready {ready} after the outage");
    Ok(target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_stops_acks_applies_backpressure_and_recovers_by_itself() -> Result<()> {
    let pg = pg::fresh_database().await?;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse()?).await?;
    let url = pg.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let pki = TestPki::new(&["site-p"])?;
    let work = tempfile::tempdir()?;
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimConfig::default()).await?;
    let he = e2e::start_headend(headend_config(&pki, &url, 0)).await?;
    let cfg = agent_config(
        work.path(),
        &agent_yaml(
            &pki,
            "site-p",
            he.grpc_addr,
            &work.path().join("log"),
            &sim,
            50,
        ),
    )?;
    let agent = edge_agent::start(cfg)?;
    eventually("readings acknowledged", Duration::from_secs(20), || async {
        Ok((agent.log.stats().acked_through > 100).then_some(()))
    })
    .await?;

    // Prometheus scrapes (with its key) before the outage
    get_text(he.http_addr, "/metrics").await?;
    let unseen = api_key(&he.db, "viewer", None).await?;

    // the database disappears
    proxy.set_up(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_at_cut = agent.log.stats().acked_through;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let st = agent.log.stats();
    assert_eq!(
        st.acked_through, acked_at_cut,
        "nothing is acknowledged without a database"
    );
    assert!(
        st.next_seq - 1 > st.acked_through + 500,
        "the agent keeps logging: {st:?}"
    );
    // the headend is alive, says it is not ready, and holds nothing unbounded
    assert_eq!(
        reqwest::get(format!("http://{}/health", he.http_addr))
            .await?
            .status(),
        200
    );
    // ...at once: a load balancer's 2-5 s check must see a 503, not a hang
    let t = std::time::Instant::now();
    assert_eq!(
        reqwest::get(format!("http://{}/ready", he.http_addr))
            .await?
            .status(),
        503
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "/ready took {:?} during the outage",
        t.elapsed()
    );
    // a REST read says the database is unavailable (503), not that the
    // request was bad or the headend broke, within a few seconds
    let t = std::time::Instant::now();
    let r = get(he.http_addr, "/api/v1/sites").await?;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "a data route took {:?} during the outage",
        t.elapsed()
    );
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("database_unavailable")),
        "{body}"
    );
    // metrics still answer: the scraper's key was verified minutes ago
    // (stale-if-error); a key never verified cannot get in without the database
    let page = get_text(he.http_addr, "/metrics").await?;
    let r = reqwest::Client::new()
        .get(format!("http://{}/metrics", he.http_addr))
        .header("authorization", format!("Bearer {unseen}"))
        .send()
        .await?;
    assert_eq!(r.status(), 503, "an unverified key during the outage");
    let queued = metric(&page, "tankwatch_headend_queued_batches").unwrap_or(f64::NAN);
    assert!(
        queued <= headend::ingest::PIPELINE_DEPTH as f64,
        "queued batches {queued}"
    );
    assert!(
        metric(&page, "tankwatch_headend_commit_failures_total").is_some_and(|v| v >= 1.0),
        "{page}"
    );

    // the database returns: the headend recovers on its own and the backlog drains
    proxy.set_up(true);
    let target = recovered(&agent, he.http_addr).await?;
    agent.stop().await?;
    let seqs = stored_seqs(&he.db, "site-p").await?;
    let max = *seqs.last().unwrap_or(&0);
    assert!(max as u64 >= target);
    assert_eq!(
        seqs,
        (1..=max).collect::<Vec<i64>>(),
        "every seq exactly once"
    );
    he.stop().await;
    pg.drop().await?;
    Ok(())
}

/// Issue 35: a failover in progress leaves the headend on a database that
/// answers but takes no writes. The headend says so on `/ready` (a load
/// balancer takes it out), answers writes with `503 database_read_only`,
/// acknowledges nothing (the agent keeps its readings), and resumes by
/// itself when the database takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_turns_ready_false_refuses_writes_with_503_and_loses_nothing()
-> Result<()> {
    let pg = pg::fresh_database().await?;
    let name = pg.url.rsplit('/').next().unwrap_or_default().to_string();
    let pki = TestPki::new(&["site-o"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let he = e2e::start_headend(headend_config(&pki, &pg.url, 0)).await?;
    let yaml = agent_yaml(
        &pki,
        "site-o",
        he.grpc_addr,
        &work.path().join("log"),
        &sim,
        50,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    eventually("readings acknowledged", Duration::from_secs(20), || async {
        Ok((agent.log.stats().acked_through > 50).then_some(()))
    })
    .await?;
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    // the database turns read-only under the headend (as a demoted
    // primary or a standby does): its sessions are cut and come back read-only
    let flip = |on: bool| {
        let (admin, name) = (admin.clone(), name.clone());
        async move {
            let set = if on { "on" } else { "off" };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {name} SET default_transaction_read_only = {set}"
            )))
            .execute(&admin)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )))
            .execute(&admin)
            .await?;
            anyhow::Ok(())
        }
    };
    flip(true).await?;
    let ready =
        eventually("/ready says read-only", Duration::from_secs(10), || async {
            let r = reqwest::get(format!("http://{}/ready", he.http_addr)).await?;
            let (status, body) = (r.status().as_u16(), r.text().await?);
            Ok((status == 503
                && body.contains("read-only")
                && body.contains("\"database_read_only\""))
            .then_some(body))
        })
        .await?;
    eprintln!("/ready during the failover: {ready}");
    let acked = agent.log.stats().acked_through;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        agent.log.stats().acked_through,
        acked,
        "nothing is acknowledged while the database takes no writes"
    );
    let eta = headend::wallclock::now_ms() + 3_600_000;
    let load = serde_json::json!({"site": "site-o", "reference": "PO-RO", "tanks": ["tank-1"],
        "product": "diesel", "planned_volume_l": 5000, "eta": eta, "eta_source": "manual"});
    let (status, body) = post_json(he.http_addr, "/api/v1/loads", &load).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("database_read_only")),
        "{body}"
    );
    // reads still answer from a read-only database
    assert!(get_json(he.http_addr, "/api/v1/sites").await.is_ok());
    let page = get_text(he.http_addr, "/metrics").await?;
    eventually("the watch sees it", Duration::from_secs(10), || async {
        let page = get_text(he.http_addr, "/metrics").await?;
        Ok((metric(&page, "tankwatch_headend_database_ready") == Some(0.0)).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {page}"))?;
    // the failover ends: writes are taken again, the backlog drains
    flip(false).await?;
    recovered(&agent, he.http_addr).await?;
    let (status, body) = post_json(he.http_addr, "/api/v1/loads", &load).await?;
    assert_eq!(status, 201, "{body}");
    sim.set_silent(true);
    eventually("the log drains", Duration::from_secs(30), || async {
        let s = agent.log.stats();
        Ok((s.acked_through + 1 == s.next_seq).then_some(()))
    })
    .await?;
    let st = stop_drained(agent).await?;
    let seqs = stored_seqs(&he.db, "site-o").await?;
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(unique.len(), seqs.len(), "no reading stored twice");
    assert_every_seq_accounted_for(&he.db, "site-o", &st).await?;
    he.stop().await;
    admin.close().await;
    pg.drop().await
}

/// Issue 35: PostgreSQL itself restarted (stopped 30 s, started) under
/// ingest and commands, the headend a real process: nothing lost or
/// stored twice, no crash, its memory flat through the outage, `/ready`
/// false then true, and acks flowing again within 10 s of the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_for_30_s_under_ingest_loses_nothing_and_ingest_resumes_within_10_s()
-> Result<()> {
    let pg = PrivatePg::start()?;
    let pki = TestPki::new(&["site-r"])?;
    let work = tempfile::tempdir()?;
    let db = headend::store::Db::connect(&pg.url(), 4).await?;
    let key = api_key(&db, "admin", None).await?;
    let mut he = HeadendProcess::spawn(&pg.url(), pki.path(), &work.path().join("headend.log"))?;
    he.ready(Duration::from_secs(30)).await?;
    register_token(he.http, key);
    let sim = fast_sim().await?;
    sim.set_frozen(true);
    let base = agent_yaml(&pki, "site-r", he.grpc, &work.path().join("log"), &sim, 50);
    let setpoints = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n";
    let yaml = with_controllers(&base, &[("ctl-1", 100.0, &sim)], setpoints, "");
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    eventually("readings acknowledged", Duration::from_secs(20), || async {
        Ok((agent.log.stats().acked_through > 100).then_some(()))
    })
    .await?;
    let command = |v: i64| {
        serde_json::json!({"kind": "setpoint", "asset": "site-r/ctl-1",
        "field": "power_limit", "value": v, "duration_s": 600})
    };
    let (code, c) = post_json(he.http, "/api/v1/commands", &command(30)).await?;
    assert_eq!(code, 201, "{c}");
    wait_state(
        he.http,
        c["command_id"].as_str().unwrap_or_default(),
        "active",
        Duration::from_secs(20),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = he.rss_kib().unwrap_or(0);

    pg.down()?;
    let down_at = std::time::Instant::now();
    let mut rss_max = rss_before;
    let mut saw_not_ready = false;
    let mut refused_write = None;
    while down_at.elapsed() < Duration::from_secs(30) {
        rss_max = rss_max.max(he.rss_kib().context("the headend died")?);
        let r = reqwest::get(format!("http://{}/ready", he.http)).await?;
        if r.status() == 503 {
            saw_not_ready = true;
        }
        if refused_write.is_none() {
            let (code, body) = post_json(he.http, "/api/v1/commands", &command(35)).await?;
            refused_write = Some((
                code,
                body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let acked_during = agent.log.stats().acked_through;
    pg.up()?;
    let up_at = std::time::Instant::now();
    eventually("acks flow again", Duration::from_secs(30), || async {
        Ok((agent.log.stats().acked_through > acked_during).then_some(()))
    })
    .await?;
    let resumed = up_at.elapsed();
    he.ready(Duration::from_secs(10)).await?;
    eprintln!(
        "PostgreSQL down 30 s: RSS {rss_before} -> max {rss_max} KiB; acks again {resumed:?} after it returned; a write during it: {refused_write:?}"
    );
    // the replica listens to the others' notes again (push dispatch)
    eventually("listening again", Duration::from_secs(20), || async {
        let page = get_text(he.http, "/metrics").await?;
        Ok((metric(&page, "tankwatch_headend_listening") == Some(1.0)).then_some(()))
    })
    .await?;
    assert!(saw_not_ready, "/ready said 503 during the outage");
    assert_eq!(
        refused_write,
        Some((503, "database_unavailable".to_string()))
    );
    assert!(
        resumed < Duration::from_secs(10),
        "acks resumed {resumed:?} after the database returned"
    );
    assert!(
        (rss_max as f64) <= rss_before as f64 * 1.2,
        "RSS {rss_before} -> {rss_max} KiB during the outage"
    );
    // commands work again, and everything logged is stored once
    let (code, c) = post_json(he.http, "/api/v1/commands", &command(40)).await?;
    assert_eq!(code, 201, "{c}");
    wait_state(
        he.http,
        c["command_id"].as_str().unwrap_or_default(),
        "active",
        Duration::from_secs(20),
    )
    .await?;
    assert_eq!(sim.power_limit(), 40.0);
    sim.set_silent(true);
    eventually("the log drains", Duration::from_secs(60), || async {
        let s = agent.log.stats();
        Ok((s.acked_through + 1 == s.next_seq).then_some(()))
    })
    .await?;
    let st = stop_drained(agent).await?;
    let seqs = stored_seqs(&db, "site-r").await?;
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(unique.len(), seqs.len(), "no reading stored twice");
    assert_every_seq_accounted_for(&db, "site-r", &st).await?;
    he.sigkill()?;
    db.pool().close().await;
    Ok(())
}
