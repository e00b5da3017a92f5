//! The agent's OPC UA server's certificates (issue 29, item 6), against an
//! independent client (asyncua): trust by the content of `trusted/` under
//! any file name, a copy left in `rejected/` no longer refusing, removal
//! from `trusted/` ending the session, the client's ApplicationUri checked
//! against its certificate, the server's own certificate and key, and what
//! the server says about itself (DiscoveryUrl, BuildInfo).
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::ScadaClient as Client;
use e2e::*;

fn files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_trusts_certificates_by_content_and_ends_a_session_whose_certificate_is_removed()
-> Result<()> {
    let pki = TestPki::new(&["site-t"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let alice = agent_opcua_server::auth::hash("alice-password").map_err(anyhow::Error::msg)?;
    let opcua_pki = work.path().join("opcua-pki");
    let yaml = format!(
        "{}{}opcua_server:\n  listen: \"127.0.0.1:0\"\n  host_name: 127.0.0.1\n  pki_dir: {}\n  users:\n    - {{ name: alice, password_hash: '{alice}', role: read_write }}\n",
        agent_head(
            &pki,
            "site-t",
            "127.0.0.1:9".parse()?,
            &work.path().join("log"),
            "127.0.0.1:0"
        ),
        atg_sim::agent_yaml_fragment(sim.addr, &sim.tanks(), 200),
        opcua_pki.display()
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let port = agent.opcua_addr.context("server")?.port();
    let url = format!("opc.tcp://127.0.0.1:{port}/");

    // the server's own certificate: its own subject, its key private
    let key_mode = std::fs::metadata(opcua_pki.join("private/private.pem"))?
        .permissions()
        .mode()
        & 0o777;
    ensure!(key_mode == 0o600, "the private key is {key_mode:o}");
    let own = std::fs::read(opcua_pki.join("own/cert.der"))?;
    let own_text = String::from_utf8_lossy(&own);
    ensure!(own_text.contains("tankwatch agent site-t"));
    ensure!(!own_text.contains("Dublin"), "a sample subject");

    let mut c = Client::start(&work.path().join("client-pki"))?;
    let discovery = c.ok(&format!("discovery {url}"))?;
    ensure!(
        discovery == format!("[\"{url}\"]"),
        "DiscoveryUrls: {discovery}"
    );
    let login = format!("connect {url} sign_and_encrypt alice alice-password");
    // refused, and kept in rejected/
    let refused = c.ask(&login)?;
    let rejected = files(&opcua_pki.join("rejected"))?;
    ensure!(
        refused.is_err() && rejected.len() == 1,
        "{refused:?}, rejected/: {rejected:?}"
    );
    // copied (not moved) to trusted/ under a name of the installer's
    let trusted = opcua_pki.join("trusted/scada-hmi.der");
    std::fs::copy(&rejected[0], &trusted)?;
    c.ok(&login)?;
    ensure!(
        files(&opcua_pki.join("rejected"))?.is_empty(),
        "the rejected copy of a trusted certificate is removed"
    );
    // what the server says about itself
    let product = c.ok("read i=2261")?;
    ensure!(
        product.contains("tankwatch edge-agent"),
        "BuildInfo: {product}"
    );
    let version = c.ok("read i=2264")?;
    ensure!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "BuildInfo: {version}"
    );
    // the real limits: max_sessions (default 10)
    let max_sessions = c.ok("read i=24095")?;
    ensure!(
        max_sessions.contains("\"value\": 10"),
        "ServerCapabilities/MaxSessions: {max_sessions}"
    );
    // the certificate taken out of trusted/: the session ends
    std::fs::remove_file(&trusted)?;
    let t = Instant::now();
    loop {
        if c.ask("read i=2258")?.is_err() {
            break;
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("the session went on 10 s after its certificate left trusted/");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "the session ended {:?} after its certificate left trusted/",
        t.elapsed()
    );
    let _ = c.ask("disconnect")?;
    ensure!(c.ask(&login)?.is_err(), "admitted again after removal");

    // the ApplicationUri the client claims must be in its certificate
    let again = files(&opcua_pki.join("rejected"))?;
    std::fs::rename(&again[0], opcua_pki.join("trusted/scada-hmi.pem.der"))?;
    c.ok(&login)?;
    c.ok("disconnect")?;
    c.ok("app_uri urn:somebody:else")?;
    let claimed = c.ask(&login)?;
    ensure!(
        claimed
            .as_ref()
            .is_err_and(|e| e.contains("BadCertificateUriInvalid")),
        "a client claiming another application's URI: {claimed:?}"
    );
    agent.stop().await?;
    Ok(())
}
