//! Issue 35: the REST API's lists and charts read from a PostgreSQL read
//! replica (`--read-database-url`, a streaming standby of the test's own
//! primary). They lag the primary by the standby's replay delay (measured
//! here), stand still while replay is paused (while writes go on), and
//! answer `503 database_unavailable` while the standby is down, with the
//! headend ready and taking writes all along.
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const NEWEST: &str = "/api/v1/sites/site-q/assets/tank-1/readings?order=desc&limit=1";

/// The newest reading's seq through the replica-backed route.
async fn newest(http: std::net::SocketAddr) -> Result<i64> {
    let v = get_json(http, NEWEST).await?;
    Ok(v[0]["seq"].as_i64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_charts_read_from_a_replica_lag_it_by_its_replay_and_fail_alone_when_it_is_down()
-> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let primary = PrivatePg::start()?;
    // migrated before the standby is copied (it replays everything after)
    headend::store::Db::connect(&primary.url(), 2)
        .await?
        .pool()
        .close()
        .await;
    let standby = PrivatePg::standby_of(&primary)?;
    let pki = TestPki::new(&["site-q"])?;
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &primary.url(), 0);
    cfg.read_database_url = Some(standby.url());
    let he = start_headend(cfg).await?;
    let sim = fast_sim().await?;
    let yaml = agent_yaml(
        &pki,
        "site-q",
        he.grpc_addr,
        &work.path().join("log"),
        &sim,
        50,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    eventually("readings through the replica", T, || async {
        Ok((newest(he.http_addr).await.unwrap_or(0) > 0).then_some(()))
    })
    .await?;

    // the lag: from the agent's ack (committed on the primary) to the
    // reading's visibility through the replica-backed route
    let mut lags = Vec::new();
    for _ in 0..20 {
        let acked = agent.log.stats().acked_through as i64;
        let t = Instant::now();
        while newest(he.http_addr).await? < acked {
            ensure!(
                t.elapsed() < T,
                "seq {acked} never showed through the replica"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lags.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lags.sort_by(f64::total_cmp);
    eprintln!(
        "acked on the primary -> visible through the replica: p50 {:.1} ms, max {:.1} ms",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );

    // replay paused: the lists stand still while ingest and writes go on
    standby.exec("SELECT pg_wal_replay_pause()").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen = newest(he.http_addr).await?;
    let acked_before = agent.log.stats().acked_through;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        agent.log.stats().acked_through > acked_before,
        "ingest goes on (the primary)"
    );
    ensure!(
        newest(he.http_addr).await? == frozen,
        "the replica-backed route shows what the replica has replayed"
    );
    let eta = headend::wallclock::now_ms() + 3_600_000;
    let load = json!({"site": "site-q", "reference": "PO-REPLICA", "tanks": ["tank-1"],
        "product": "diesel", "planned_volume_l": 5000, "eta": eta, "eta_source": "manual"});
    let (code, body) = post_json(he.http_addr, "/api/v1/loads", &load).await?;
    ensure!(code == 201, "writes go to the primary: {code} {body}");
    standby.exec("SELECT pg_wal_replay_resume()").await?;
    let target = agent.log.stats().acked_through as i64;
    eventually("the replica catches up", T, || async {
        Ok((newest(he.http_addr).await? >= target).then_some(()))
    })
    .await?;

    // the replica down: its routes answer 503, the rest of the API and
    // ingest go on, and it is used again when it returns
    standby.down()?;
    let r = get(he.http_addr, "/api/v1/tanks").await?;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await?;
    ensure!(
        status == 503 && body["error"]["code"] == "database_unavailable",
        "{status} {body}"
    );
    ensure!(
        reqwest::get(format!("http://{}/ready", he.http_addr))
            .await?
            .status()
            == 200,
        "the primary is fine: ready"
    );
    let acked = agent.log.stats().acked_through;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(agent.log.stats().acked_through > acked, "ingest goes on");
    standby.up()?;
    eventually("lists again", T, || async {
        Ok(get(he.http_addr, "/api/v1/tanks")
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ()))
    })
    .await?;
    agent.stop().await?;
    he.stop().await;
    Ok(())
}
