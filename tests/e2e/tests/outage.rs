//! Headend down for a while: the agent keeps polling and logging; after the
//! headend returns, every reading of the outage is in SQL exactly once, in order.
use std::time::Duration;

use anyhow::Result;
use e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_taken_during_a_headend_outage_arrive_exactly_once_in_order() -> Result<()> {
    let pki = TestPki::new(&["site-o"])?;
    let work = tempfile::tempdir()?;
    let db_url = sqlite_url(work.path());
    let port = free_port();
    let sim = fast_sim().await?;
    let he = e2e::start_headend(headend_config(&pki, &db_url, port)).await?;
    let cfg = agent_config(
        work.path(),
        &agent_yaml(
            &pki,
            "site-o",
            he.grpc_addr,
            &work.path().join("log"),
            &sim,
            100,
        ),
    )?;
    let agent = edge_agent::start(cfg)?;

    let db = he.db.clone();
    eventually("first readings stored", Duration::from_secs(20), || async {
        Ok((stored_seqs(&db, "site-o").await?.len() > 50).then_some(()))
    })
    .await?;
    he.stop().await;
    let at_outage = agent.log.stats().next_seq;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_return = agent.log.stats().next_seq;
    assert!(
        at_return - at_outage > 300,
        "the agent kept polling and logging during the outage ({at_outage} -> {at_return})"
    );
    assert!(
        agent.log.stats().entries >= at_return - at_outage,
        "the outage's readings wait in the log"
    );

    let he = e2e::start_headend(headend_config(&pki, &db_url, port)).await?;
    let db = he.db.clone();
    eventually(
        "the backlog is acknowledged",
        Duration::from_secs(30),
        || async { Ok((agent.log.stats().acked_through >= at_return).then_some(())) },
    )
    .await?;
    agent.stop().await?;

    let seqs = stored_seqs(&db, "site-o").await?;
    let max = *seqs.last().unwrap_or(&0);
    assert!(max as u64 >= at_return);
    let expected: Vec<i64> = (1..=max).collect();
    assert_eq!(seqs, expected, "every seq exactly once, none missing");
    // in order: per point, device time never goes backwards as seq increases
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT asset_id, field, ts_ms FROM readings_wide WHERE site_id = 'site-o' ORDER BY seq",
    )
    .fetch_all(db.pool())
    .await?;
    let mut last = std::collections::HashMap::new();
    for (a, f, ts) in rows {
        let prev = last.insert((a.clone(), f.clone()), ts).unwrap_or(0);
        assert!(ts >= prev, "{a}.{f} went back in time");
    }
    he.stop().await;
    Ok(())
}
