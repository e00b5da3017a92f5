//! The headend refuses every agent that is not who it claims to be, and
//! stores nothing from it.
use std::time::Duration;

use anyhow::Result;
use e2e::*;
use tankwatch_proto::v1::{
    self, AgentMessage, agent_link_client::AgentLinkClient, agent_message::Msg,
};
use tokio_stream::StreamExt;

fn hello(site: &str) -> AgentMessage {
    AgentMessage {
        msg: Some(Msg::Hello(v1::Hello {
            agent_version: "test".into(),
            site_id: site.into(),
            log_id: 42,
            assets: vec![v1::Asset {
                asset_id: "tank-1".into(),
                kind: v1::AssetKind::Tank as i32,
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

fn batch() -> AgentMessage {
    AgentMessage {
        msg: Some(Msg::Batch(v1::TelemetryBatch {
            log_id: 42,
            first_seq: 1,
            last_seq: 1,
            readings: vec![v1::Reading {
                seq: 1,
                asset_id: "tank-1".into(),
                field: "volume".into(),
                value: 1000.0,
                unit: "L".into(),
                quality: v1::Quality::Good as i32,
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

/// Opens a session with `tls`, claims `site`, sends a batch; returns the
/// gRPC outcome (Ok = the headend acknowledged the batch).
async fn attempt(
    addr: std::net::SocketAddr,
    tls: rustls::ClientConfig,
    site: &str,
) -> Result<(), String> {
    let ch = edge_agent::uplink::channel(&addr.to_string(), "localhost", tls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = AgentLinkClient::new(ch);
    let out = tokio_stream::iter(vec![hello(site), batch()]).chain(tokio_stream::pending());
    let mut inbound = client
        .session(out)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
            Ok(Ok(Some(m))) if matches!(m.msg, Some(v1::headend_message::Msg::Ack(_))) => {
                return Ok(());
            }
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Err("stream closed".into()),
            Ok(Err(s)) => return Err(format!("{:?}: {}", s.code(), s.message())),
            Err(_) => return Err("no answer".into()),
        }
    }
}

async fn nothing_stored(db: &headend::db::Db) -> Result<()> {
    let sites: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sites")
        .fetch_one(db.pool())
        .await?;
    let readings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(
        (sites, readings),
        (0, 0),
        "something from a refused client was stored"
    );
    Ok(())
}

#[tokio::test]
async fn agents_without_a_valid_certificate_or_claiming_another_site_are_refused_and_nothing_is_stored()
-> Result<()> {
    let pki = TestPki::new(&["site-a"])?;
    let other = TestPki::new(&["site-a"])?; // same site name, different CA
    let dir = tempfile::tempdir()?;
    let he = headend::start(headend_config(&pki, &sqlite_url(dir.path()), 0)).await?;

    // 1. no client certificate at all
    let anon = tankwatch_pki::anonymous_client_config(&pki.path().join("ca.pem"))?;
    let r = attempt(he.grpc_addr, anon, "site-a").await;
    assert!(r.is_err(), "a client without a certificate was served");

    // 2. a certificate from another CA (trusting our server's CA so only client auth can fail)
    let mut files = other.agent_files("site-a");
    files.ca = pki.path().join("ca.pem");
    let r = attempt(
        he.grpc_addr,
        tankwatch_pki::client_config(&files)?,
        "site-a",
    )
    .await;
    assert!(r.is_err(), "a certificate from a foreign CA was accepted");

    // 3. a valid certificate for site-a whose hello claims site-b
    let good = tankwatch_pki::client_config(&pki.agent_files("site-a"))?;
    let r = attempt(he.grpc_addr, good.clone(), "site-b").await;
    let e = r.expect_err("a claim for another site was accepted");
    assert!(e.starts_with("PermissionDenied"), "{e}");
    nothing_stored(&he.db).await?;

    // control: the same certificate claiming its own site is served and stored
    attempt(he.grpc_addr, good, "site-a")
        .await
        .expect("the legitimate agent is served");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings WHERE site_id = 'site-a'")
        .fetch_one(he.db.pool())
        .await?;
    assert_eq!(n, 1);
    he.stop().await;
    Ok(())
}
