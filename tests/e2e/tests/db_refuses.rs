//! Issue 8, item 5: a batch that the database refuses (not an outage: the
//! data itself) must never block a site silently. The site is flagged on
//! `GET /api/v1/sites` and in the metrics while its data fails, nothing is
//! acknowledged or lost, and the flag clears once the data goes in.
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_batches_the_database_refuses_is_flagged_and_recovers_without_loss_on_postgres()
-> Result<()> {
    let db = pg::fresh_database().await?;
    let pki = TestPki::new(&["site-n"])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &db.url, 0)).await?;
    let sim = fast_sim().await?;
    let yaml = agent_yaml(
        &pki,
        "site-n",
        he.grpc_addr,
        &work.path().join("log"),
        &sim,
        100,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let http = he.http_addr;
    eventually("readings arrive", Duration::from_secs(20), || async {
        Ok((!stored_seqs(&he.db, "site-n").await?.is_empty()).then_some(()))
    })
    .await?;
    // from now on the database refuses this site's volume readings
    sqlx::query(
        "ALTER TABLE latest_values ADD CONSTRAINT no_volume CHECK (field <> 'volume') NOT VALID",
    )
    .execute(he.db.pool())
    .await?;
    let flagged = eventually("the site is flagged", Duration::from_secs(20), || async {
        let s = get_json(http, "/api/v1/sites").await?;
        let site = s
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        Ok((!site["ingest_error"].is_null()).then_some(site))
    })
    .await?;
    let e = &flagged["ingest_error"];
    ensure!(
        e["failures"].as_u64() >= Some(1)
            && e["error"].as_str().unwrap_or("").contains("no_volume"),
        "{flagged}"
    );
    let page = get_text(http, "/metrics").await?;
    ensure!(
        metric(&page, "tankwatch_headend_sites_failing") == Some(1.0),
        "{page}"
    );
    let acked_while_failing = agent.log.stats().acked_through;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        agent.log.stats().acked_through == acked_while_failing,
        "nothing is acknowledged while the data is refused"
    );
    // the operator fixes the database: the backlog goes in, the flag clears
    sqlx::query("ALTER TABLE latest_values DROP CONSTRAINT no_volume")
        .execute(he.db.pool())
        .await?;
    eventually("the flag clears", Duration::from_secs(30), || async {
        let s = get_json(http, "/api/v1/sites").await?;
        Ok(s[0]["ingest_error"].is_null().then_some(()))
    })
    .await?;
    sim.set_silent(true);
    eventually("the log drains", Duration::from_secs(30), || async {
        let s = agent.log.stats();
        Ok((s.acked_through + 1 == s.next_seq).then_some(()))
    })
    .await?;
    let st = agent.log.stats();
    agent.stop().await?;
    assert_every_seq_accounted_for(&he.db, "site-n", &st).await?;
    let page = get_text(http, "/metrics").await?;
    ensure!(
        metric(&page, "tankwatch_headend_sites_failing") == Some(0.0),
        "{page}"
    );
    he.stop().await;
    db.drop().await
}
