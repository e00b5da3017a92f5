//! The database goes away under the headend: it stops acknowledging,
//! pushes back on the agent instead of buffering, stays up, and recovers by
//! itself when the database returns; nothing is lost or stored twice.
use std::time::Duration;

use anyhow::Result;
use atg_sim::{SimConfig, Simulator};
use e2e::*;

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
    let target = agent.log.stats().next_seq - 1;
    eventually(
        "the backlog is acknowledged after the outage",
        Duration::from_secs(60),
        || async { Ok((agent.log.stats().acked_through >= target).then_some(())) },
    )
    .await?;
    assert_eq!(
        reqwest::get(format!("http://{}/ready", he.http_addr))
            .await?
            .status(),
        200
    );
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
