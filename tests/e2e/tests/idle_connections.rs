//! Issue 8, item 3: connections that finish TLS and then say nothing used
//! to be held for ever; ~1,000 of them took every file descriptor of the
//! headend. Now: a session deadline, a cap per certificate identity (the
//! oldest connection is evicted), a total cap that refuses at once, and
//! the real agent and the REST API keep working throughout.
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Completes TLS with `cfg` and then sends nothing.
async fn idle_tls(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    Ok(tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?)
}

/// True when the headend closed the connection within `within`.
async fn closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // HTTP/2 settings, GOAWAY...
            Err(_) => return false,
        }
    }
}

fn refused(page: &str, reason: &str) -> f64 {
    metric(
        page,
        &format!("tankwatch_headend_agent_connections_refused_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_capped_per_identity_and_in_total_and_real_agents_still_get_in()
-> Result<()> {
    let pki = TestPki::new(&["site-a"])?;
    let dir = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(dir.path()), 0);
    cfg.max_conns_per_site = 4;
    cfg.max_conns = 60;
    cfg.handshake_timeout = Duration::from_secs(1);
    cfg.session_deadline = Duration::from_secs(1);
    let he = e2e::start_headend(cfg).await?;
    let tls = Arc::new(tankwatch_tls::client_config(&pki.agent_files("site-a"))?);

    // ten idle connections with one valid certificate
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(idle_tls(he.grpc_addr, tls.clone()).await?);
    }
    // the real agent still gets in (its connection evicts the oldest idle one)
    attempt(he.grpc_addr, (*tls).clone(), "site-a")
        .await
        .map_err(anyhow::Error::msg)
        .context("the real agent beside ten idle connections")?;
    // a live session is not evicted by new idle connections: a real agent
    // in a session, then more idle ones than the cap
    let agent_work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let yaml = agent_yaml(
        &pki,
        "site-a",
        he.grpc_addr,
        &agent_work.path().join("log"),
        &sim,
        100,
    );
    let agent = edge_agent::start(agent_config(agent_work.path(), &yaml)?)?;
    let mut up = agent.uplink.clone();
    tokio::time::timeout(Duration::from_secs(10), up.wait_for(|s| s.connected)).await??;
    let sessions = agent.uplink.borrow().sessions;
    for _ in 0..6 {
        idle.push(idle_tls(he.grpc_addr, tls.clone()).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = agent.uplink.borrow().clone();
    ensure!(
        st.connected && st.sessions == sessions,
        "the live session was evicted: {st:?}"
    );
    agent.stop().await?;
    let page = get_text(he.http_addr, "/metrics").await?;
    ensure!(refused(&page, "per_identity") >= 6.0, "{page}");
    // every idle one is closed: evicted, or at the session deadline
    for (i, s) in idle.iter_mut().enumerate() {
        ensure!(
            closed(s, Duration::from_secs(5)).await,
            "idle connection {i} still open"
        );
    }
    let page = get_text(he.http_addr, "/metrics").await?;
    ensure!(refused(&page, "idle") >= 1.0, "{page}");

    // a flood of plain TCP connections (no TLS at all), past the total cap
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(TcpStream::connect(he.grpc_addr).await?);
    }
    get_json(he.http_addr, "/api/v1/sites")
        .await
        .context("the REST API answers during the flood")?;
    let page = get_text(he.http_addr, "/metrics").await?;
    ensure!(refused(&page, "total") >= 80.0, "{page}");
    let open = metric(&page, "tankwatch_headend_agent_connections").unwrap_or(-1.0);
    ensure!(open <= 60.0, "{open} connections open, cap 60");
    // the flood is closed at the handshake deadline; the agent then gets in
    eventually(
        "the real agent after the flood",
        Duration::from_secs(20),
        || async { Ok(attempt(he.grpc_addr, (*tls).clone(), "site-a").await.ok()) },
    )
    .await?;
    let mut open_flood = 0;
    for s in &mut flood {
        if !closed(s, Duration::from_millis(100)).await {
            open_flood += 1;
        }
    }
    ensure!(open_flood == 0, "{open_flood} flood connections still open");
    he.stop().await;
    Ok(())
}
