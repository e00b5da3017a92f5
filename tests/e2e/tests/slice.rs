//! simulator -> agent -> headend -> SQL -> REST, over real sockets and mTLS.
use std::time::Duration;

use anyhow::Result;
use e2e::*;

async fn slice_shows_every_tank_within_a_tenth_of_a_percent(db_url: String) -> Result<()> {
    let pki = TestPki::new(&["site-a"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let he = e2e::start_headend(headend_config(&pki, &db_url, 0)).await?;
    let cfg = agent_config(
        work.path(),
        &agent_yaml(
            &pki,
            "site-a",
            he.grpc_addr,
            &work.path().join("log"),
            &sim,
            200,
        ),
    )?;
    let agent = edge_agent::start(cfg)?;

    // telemetry flows while the simulator runs
    eventually(
        "first volume on the REST API",
        Duration::from_secs(20),
        || async {
            // (the list also holds the agent's own conditions, asset `agent`)
            latest_value(he.http_addr, "site-a", "tank-1", "volume").await
        },
    )
    .await?;
    // freeze the simulator; the API must converge on its exact current values
    sim.set_frozen(true);
    let tanks = sim.tanks();
    eventually(
        "every tank within 0.1% of the simulator",
        Duration::from_secs(20),
        || {
            let tanks = tanks.clone();
            async move {
                let assets = get_json(he.http_addr, "/api/v1/sites/site-a/assets").await?;
                for t in &tanks {
                    let a = assets
                        .as_array()
                        .and_then(|v| v.iter().find(|a| a["asset_id"] == t.id.as_str()))
                        .ok_or_else(|| anyhow::anyhow!("{} missing", t.id))?;
                    let vol = &a["fields"]["volume"];
                    let v = vol["value"].as_f64().unwrap_or(f64::NAN);
                    if (v - t.volume).abs() > t.volume * 0.001 {
                        return Ok(None);
                    }
                    assert_eq!(vol["unit"], "L");
                    assert_eq!(vol["quality"], "good");
                    assert!(
                        vol["source_ts"].as_str().is_some_and(|s| s.ends_with('Z')),
                        "{vol}"
                    );
                    assert!(vol["received_ts"].is_string());
                    assert_eq!(a["fields"]["temperature"]["unit"], "degC");
                    assert_eq!(a["fields"]["height"]["unit"], "mm");
                    assert_eq!(a["product"], t.product.as_str());
                }
                Ok(Some(()))
            }
        },
    )
    .await?;

    let sites = get_json(he.http_addr, "/api/v1/sites").await?;
    assert_eq!(sites[0]["site_id"], "site-a");
    assert_eq!(sites[0]["connected"], true);
    assert_eq!(sites[0]["assets"], 4, "the declared assets");
    // the agent's own conditions are listed as the asset `agent`
    let assets = get_json(he.http_addr, "/api/v1/sites/site-a/assets").await?;
    let own = assets
        .as_array()
        .and_then(|v| v.iter().find(|a| a["asset_id"] == "agent"))
        .ok_or_else(|| anyhow::anyhow!("no agent asset in {assets}"))?;
    assert_eq!(own["kind"], "agent");
    assert_eq!(own["fields"]["alarm.device_offline.atg"]["value"], 0.0);
    let hist = get_json(
        he.http_addr,
        "/api/v1/sites/site-a/assets/tank-1/readings?field=volume&limit=5",
    )
    .await?;
    let hist = hist.as_array().expect("array");
    assert!(!hist.is_empty() && hist.len() <= 5);
    assert!(hist.iter().all(|r| r["field"] == "volume"));
    let ts: Vec<i64> = hist
        .iter()
        .map(|r| r["source_ts_ms"].as_i64().unwrap_or(0))
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "history is oldest first: {ts:?}"
    );
    // the hourly rollups of the same readings, over REST
    let hours = get_json(
        he.http_addr,
        "/api/v1/sites/site-a/assets/tank-1/rollups?field=volume",
    )
    .await?;
    let hours = hours.as_array().expect("array");
    assert!(!hours.is_empty(), "rollups exist for stored readings");
    assert!(hours.iter().all(|h| h["field"] == "volume"
        && h["count"].as_i64() >= Some(1)
        && h["min"].as_f64() <= h["max"].as_f64()));
    let r = get(
        he.http_addr,
        "/api/v1/sites/site-a/assets/tank-1/rollups?order=desc",
    )
    .await?;
    assert_eq!(r.status(), 400);
    // a bad time range is a clear 400, not a 500
    let r = get(
        he.http_addr,
        "/api/v1/sites/site-a/assets/tank-1/readings?from=yesterday",
    )
    .await?;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("RFC 3339"));
    let r = get(he.http_addr, "/api/v1/sites/nope/assets").await?;
    assert_eq!(r.status(), 404);
    assert_eq!(
        reqwest::get(format!("http://{}/ready", he.http_addr))
            .await?
            .status(),
        200
    );

    // both ends expose Prometheus metrics
    let page = get_text(he.http_addr, "/metrics").await?;
    assert!(
        metric(&page, "tankwatch_headend_readings_total").is_some_and(|v| v > 0.0),
        "{page}"
    );
    assert!(
        metric(&page, "tankwatch_headend_commits_total").is_some_and(|v| v > 0.0),
        "{page}"
    );
    assert!(
        page.contains("tankwatch_headend_db_write_seconds_bucket"),
        "{page}"
    );
    assert_eq!(metric(&page, "tankwatch_headend_agent_sessions"), Some(1.0));
    let status = agent.status_addr.expect("status endpoint");
    let page = get_text(status, "/metrics").await?;
    assert!(
        metric(&page, "tankwatch_agent_uplink_sent_readings_total").is_some_and(|v| v > 0.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "tankwatch_agent_uplink_connected"),
        Some(1.0),
        "{page}"
    );
    assert!(metric(&page, "tankwatch_agent_log_max_bytes").is_some_and(|v| v > 0.0));
    assert!(page.contains("tankwatch_agent_uplink_ack_latency_seconds_count"));
    let st = get_json(status, "/status").await?;
    assert_eq!(st["site_id"], "site-a");
    assert_eq!(st["uplink"]["connected"], true);

    agent.stop().await?;
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_tanks_reach_the_rest_api_through_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    slice_shows_every_tank_within_a_tenth_of_a_percent(sqlite_url(dir.path())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_tanks_reach_the_rest_api_through_postgresql() -> Result<()> {
    let db = e2e::pg::fresh_database().await?;
    let r = slice_shows_every_tank_within_a_tenth_of_a_percent(db.url.clone()).await;
    db.drop().await?;
    r
}
