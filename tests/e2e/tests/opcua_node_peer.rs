//! The agent's OPC UA adapter against a second independent stack,
//! node-opcua (tests/peers/node_opcua_server.js), with the server's default
//! certificate (the application URI last among its subject alternative
//! names; issue 29, item 9), two devices on the default shared `pki_dir`
//! (item 10), SignAndEncrypt, a hung server (SIGSTOP: item 8) and values
//! that did not change across the reconnect (item 7).
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::asset_field as field;
use e2e::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(40);

async fn devices(http: SocketAddr, site: &str) -> Result<Vec<Value>> {
    let d = get_json(http, &format!("/api/v1/sites/{site}/devices")).await?;
    Ok(d.as_array().cloned().unwrap_or_default())
}

/// This machine's host name: what node-opcua puts in its certificate, so
/// what a client must dial (the agent checks the host it dials against
/// the server certificate's names).
fn host() -> Result<String> {
    let out = std::process::Command::new("hostname").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn yaml(pki: &TestPki, site: &str, headend: SocketAddr, work: &Path, port: u16) -> Result<String> {
    let host = host()?;
    // no pki_dir: both devices use the default one, as an installer would
    Ok(format!(
        r#"{head}assets:
  - {{ id: tank-1, kind: tank, capacity: 30000 }}
devices:
  - opcua:
      name: plc
      endpoint: opc.tcp://{host}:{port}/tw
      security: sign_and_encrypt
      sampling_interval_ms: 100
      publishing_interval_ms: 200
      timeout_ms: 2000
      max_backoff_ms: 1000
      points:
        - {{ node: "nsu=urn:tankwatch:test:site;s=Tank1.Temperature", asset: tank-1, field: temperature, unit: degC }}
        - {{ node: "nsu=urn:tankwatch:test:site;s=Tank1.Volume", asset: tank-1, field: volume, unit: L }}
  - opcua:
      name: plc-2
      endpoint: opc.tcp://{host}:{port}/tw
      security: sign_and_encrypt
      mode: poll
      poll_interval_ms: 200
      timeout_ms: 2000
      max_backoff_ms: 1000
      points:
        - {{ node: "nsu=urn:tankwatch:test:site;s=Tank1.Volume", asset: tank-1, field: volume_2, unit: L }}
"#,
        head = agent_head(pki, site, headend, &work.join("log"), "127.0.0.1:0"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_opcua_server_with_its_default_certificate_serves_two_devices_over_sign_and_encrypt()
-> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let site = "site-n";
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    // (a free port can still be taken by another test's listener before
    // node binds it: try again)
    let mut started = None;
    for _ in 0..3 {
        let port = free_port();
        match LinePeer::start(
            "node_opcua_server.js",
            &[
                port.to_string(),
                work.path().join("server-pki").display().to_string(),
            ],
            &[],
        ) {
            Ok(s) => {
                started = Some((port, s));
                break;
            }
            Err(e) => eprintln!("node-opcua server on {port}: {e}"),
        }
    }
    let (port, server) = started.context("the node-opcua server did not start")?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let http = he.http_addr;
    let agent = edge_agent::start(agent_config(
        work.path(),
        &yaml(&pki, site, he.grpc_addr, work.path(), port)?,
    )?)?;
    // the first attempt: the server's certificate lands in rejected/ and
    // the device says to move it
    let ours = work.path().join("opcua-pki");
    let hint = eventually("the untrusted server named", T, || async {
        Ok(devices(http, site).await?.into_iter().find_map(|d| {
            d["last_error"]
                .as_str()
                .filter(|e| e.contains("move it from"))
                .map(str::to_string)
        }))
    })
    .await?;
    println!("first attempt: {hint}");
    let rejected: Vec<_> = std::fs::read_dir(ours.join("rejected"))?
        .collect::<std::result::Result<_, _>>()
        .context("rejected/")?;
    ensure!(rejected.len() == 1, "{rejected:?}");
    let file = rejected[0].path();
    std::fs::rename(
        &file,
        ours.join("trusted").join(file.file_name().context("name")?),
    )?;
    // both devices, one key pair, SignAndEncrypt
    let good = || async {
        Ok(field(http, site, "tank-1", "temperature")
            .await?
            .filter(|f| f["value"] == json!(15.5) && f["quality"] == "good"))
    };
    eventually("Tank1.Temperature over SignAndEncrypt", T, good).await?;
    eventually("the second device's reading", T, || async {
        Ok(field(http, site, "tank-1", "volume_2")
            .await?
            .filter(|f| f["quality"] == "good"))
    })
    .await?;
    // (the health report is state sent on change: it may land after the readings)
    eventually("both devices connected", T, || async {
        let ds = devices(http, site).await?;
        Ok((ds.len() == 2 && ds.iter().all(|d| d["connected"] == true)).then_some(()))
    })
    .await?;

    // the server hangs (SIGSTOP): found, then good again after it goes on
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
    let stopped = Instant::now();
    eventually("the hung server found", T, || async {
        Ok(field(http, site, "tank-1", "temperature")
            .await?
            .filter(|f| f["quality"] == "bad"))
    })
    .await?;
    let found = stopped.elapsed();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
    let back = eventually("Tank1.Temperature good after the hang", T, good).await?;
    println!("a hung node-opcua server found after {found:?}; then {back}");
    ensure!(found < Duration::from_secs(12), "found after {found:?}");
    drop(server);
    agent.stop().await?;
    he.stop().await;
    Ok(())
}
