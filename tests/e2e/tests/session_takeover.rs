//! One session per site (issue 9's defect list): a new session of a site
//! replaces the open one, which is closed and told why; the old session's
//! end no longer removes the new one from the session map (the site used
//! to show `connected: false` while it streamed).
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::*;
use tankwatch_proto::v1;

/// Opens a session for `site`, sends a Hello and one batch, waits for the
/// batch's ack; returns the open inbound stream (the session lives while it does).
async fn open(
    addr: std::net::SocketAddr,
    tls: rustls::ClientConfig,
    site: &str,
) -> Result<tonic::Streaming<v1::HeadendMessage>> {
    let ch = edge_agent::uplink::channel(&addr.to_string(), "localhost", tls, None).await?;
    let mut client = v1::agent_link_client::AgentLinkClient::new(ch);
    let out = tokio_stream::StreamExt::chain(
        tokio_stream::iter(vec![hello(site), batch()]),
        tokio_stream::pending(),
    );
    let mut inbound = client.session(out).await?.into_inner();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), inbound.message())
            .await
            .context("an answer")??
            .context("stream open")?;
        if matches!(m.msg, Some(v1::headend_message::Msg::Ack(_))) {
            return Ok(inbound);
        }
    }
}

async fn connected(http: std::net::SocketAddr) -> Result<bool> {
    let s = get_json(http, "/api/v1/sites").await?;
    Ok(s[0]["connected"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_replaces_the_old_one_which_is_told_why_and_the_site_stays_connected()
-> Result<()> {
    let pki = TestPki::new(&["site-t"])?;
    let dir = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(dir.path()), 0)).await?;
    let tls = tankwatch_tls::client_config(&pki.agent_files("site-t"))?;
    let mut a = open(he.grpc_addr, tls.clone(), "site-t").await?;
    ensure!(connected(he.http_addr).await?, "the first session shows");
    let b = open(he.grpc_addr, tls, "site-t").await?;
    // the older session is closed, and told why
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .context("the old session ends")?;
    let status = end.expect_err("an error status, not a clean end");
    ensure!(
        status.code() == tonic::Code::Aborted && status.message().contains("replaced"),
        "{status:?}"
    );
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // the old session's end did not take the new one out of the map
    ensure!(
        connected(he.http_addr).await?,
        "the site shows disconnected while B streams"
    );
    let page = get_text(he.http_addr, "/metrics").await?;
    ensure!(
        metric(&page, "tankwatch_headend_session_takeovers_total") == Some(1.0),
        "{page}"
    );
    drop(b);
    he.stop().await;
    Ok(())
}
