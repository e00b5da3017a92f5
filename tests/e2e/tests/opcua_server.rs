//! The agent's OPC UA server against an independent SCADA client (asyncua,
//! tests/peers/scada_client.py): certificate trust through the folders,
//! Basic256Sha256 SignAndEncrypt with a user, browse, read (value, status,
//! SourceTimestamp), subscribe, writes through the agent's limits to the
//! simulated controller and their record at the headend, refusals, and a
//! device taken offline.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::ScadaClient as Client;
use e2e::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// Poll interval of the tank gauge (ms).
const POLL_MS: u64 = 200;
const SETPOINTS: &str = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n";

fn users(pki: &Path, security: &str) -> Result<String> {
    let alice = agent_opcua_server::auth::hash("alice-password").map_err(anyhow::Error::msg)?;
    let bob = agent_opcua_server::auth::hash("bob-password").map_err(anyhow::Error::msg)?;
    Ok(format!(
        "opcua_server:\n  listen: \"127.0.0.1:0\"\n  host_name: 127.0.0.1\n  security: {security}\n  pki_dir: {}\n  users:\n    - {{ name: alice, password_hash: '{alice}', role: read_write }}\n    - {{ name: bob, password_hash: '{bob}', role: read_only }}\n",
        pki.display()
    ))
}

/// The agent's YAML for `site`: the simulator's tanks read at `gauge`
/// (the simulator or a proxy in front of it), its controller `ctl-1`
/// with limits, and the OPC UA server offering `security`.
fn site_yaml(
    pki: &TestPki,
    work: &Path,
    site: &str,
    headend: std::net::SocketAddr,
    sim: &atg_sim::Simulator,
    gauge: std::net::SocketAddr,
    security: &str,
) -> Result<String> {
    let head = agent_head(pki, site, headend, &work.join("log"), "127.0.0.1:0");
    let base = format!(
        "{head}{}",
        atg_sim::agent_yaml_fragment(gauge, &sim.tanks(), POLL_MS)
    );
    Ok(with_controllers(
        &base,
        &[("ctl-1", 100.0, sim)],
        SETPOINTS,
        &users(&work.join("opcua-pki"), security)?,
    ))
}

/// Asks `f` until it answers `Some`, for at most `T`.
async fn until<R>(
    c: &mut Client,
    what: &str,
    mut f: impl FnMut(&mut Client) -> Result<Option<R>>,
) -> Result<R> {
    let end = Instant::now() + T;
    loop {
        if let Some(v) = f(c)? {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_ms() -> i64 {
    adapter_api::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scada_client_over_sign_and_encrypt_browses_reads_subscribes_and_writes_through_the_agents_limits()
-> Result<()> {
    let pki = TestPki::new(&["site-u"])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let sim = fast_sim().await?;
    sim.set_frozen(true);
    // the tank gauge is reached through a proxy the test can cut
    let proxy = TcpProxy::start(sim.addr).await?;
    let opcua_pki = work.path().join("opcua-pki");
    let yaml = site_yaml(
        &pki,
        work.path(),
        "site-u",
        he.grpc_addr,
        &sim,
        proxy.addr,
        "[basic256sha256_sign_and_encrypt, basic256sha256_sign]",
    )?;
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let url = format!(
        "opc.tcp://127.0.0.1:{}/",
        agent.opcua_addr.context("server")?.port()
    );
    assert!(
        opcua_pki.join("own/cert.der").exists() && opcua_pki.join("private/private.pem").exists(),
        "the server's certificate is made on first start"
    );
    let mut c = Client::start(&work.path().join("client-pki"))?;

    // an untrusted client certificate is refused, and lands in rejected/
    let refused = c.ask(&format!(
        "connect {url} sign_and_encrypt alice alice-password"
    ))?;
    ensure!(refused.is_err(), "an untrusted certificate was admitted");
    let rejected: Vec<_> =
        std::fs::read_dir(opcua_pki.join("rejected"))?.collect::<Result<_, _>>()?;
    ensure!(
        rejected.len() == 1,
        "the refused certificate is in rejected/: {rejected:?}"
    );
    // security None is not offered unless configured
    let none = c.ask(&format!("connect {url} none - -"))?;
    ensure!(none.is_err(), "security None was accepted: {none:?}");
    // the installer moves it to trusted/: admitted
    let cert = rejected[0].path();
    std::fs::rename(
        &cert,
        opcua_pki
            .join("trusted")
            .join(cert.file_name().context("name")?),
    )?;
    // a wrong password is refused
    ensure!(
        c.ask(&format!("connect {url} sign_and_encrypt alice wrong"))?
            .is_err()
    );
    c.ok(&format!(
        "connect {url} sign_and_encrypt alice alice-password"
    ))?;
    let ns = c.ok("nsidx urn:tankwatch:agent:site-u")?;
    let node = |path: &str| format!("ns={ns};s=Site/site-u/{path}");

    // the tree mirrors the site
    let tree = c.json("browse")?;
    for want in [
        "Site/site-u/Tanks/tank-1/Volume",
        "Site/site-u/Tanks/tank-1/WaterHeight",
        "Site/site-u/Tanks/tank-1/Product",
        "Site/site-u/Tanks/tank-1/Capacity",
        "Site/site-u/Tanks/tank-1/Alarms/HighLevel",
        "Site/site-u/Tanks/tank-1/Delivery/InProgress",
        "Site/site-u/Controllers/ctl-1/PowerLimit",
        "Site/site-u/Agent/HeadendConnected",
        "Site/site-u/Agent/LogEntries",
        "Site/site-u/Agent/LastAck",
        "Site/site-u/Agent/Devices/atg/Status",
    ] {
        ensure!(
            tree.as_array().is_some_and(|a| a.iter().any(|v| v == want)),
            "{want} missing from {tree}"
        );
    }
    let props = c.json(&format!("props {}", node("Tanks/tank-1/Volume")))?;
    let capacity = sim.tanks()[0].capacity;
    ensure!(
        props["eu"] == "L" && props["range"] == serde_json::json!([0.0, capacity]),
        "{props}"
    );

    // a tank volume equal to the simulator's register, Good, within one poll
    let want = f64::from(sim.tanks()[0].volume as f32);
    let read = until(&mut c, "the volume, good", |c| {
        let r = c.json(&format!("read {}", node("Tanks/tank-1/Volume")))?;
        Ok((r["status"] == "Good").then_some(r))
    })
    .await?;
    let got = read["value"].as_f64().context("value")?;
    ensure!(
        (got - want).abs() < 0.01,
        "read {got}, the register holds {want}"
    );
    let age = now_ms() - read["source_ms"].as_i64().context("source ts")?;
    ensure!(
        (0..=POLL_MS as i64 + 100).contains(&age),
        "SourceTimestamp {age} ms old (poll {POLL_MS} ms)"
    );
    let product = c.json(&format!("read {}", node("Tanks/tank-1/Product")))?;
    ensure!(
        product["value"] == sim.tanks()[0].product.as_str(),
        "{product}"
    );

    // subscriptions see changes
    c.ok(&format!("subscribe {}", node("Tanks/tank-1/Volume")))?;
    sim.set_volume(0, 12_345.0);
    until(&mut c, "a notification of the new volume", |c| {
        let n = c.json("notes")?;
        Ok(n.as_array()
            .is_some_and(|a| a.iter().any(|x| x["value"].as_f64() == Some(12_345.0)))
            .then_some(()))
    })
    .await?;

    // a write reaches the controller and is read back
    let sp = node("Controllers/ctl-1/PowerLimit");
    ensure!(c.ok(&format!("write {sp} 42"))? == "Good");
    ensure!(
        sim.power_limit() == 42.0,
        "the controller holds {}",
        sim.power_limit()
    );
    until(&mut c, "the setpoint read back over OPC UA", |c| {
        let r = c.json(&format!("read {sp}"))?;
        Ok((r["value"].as_f64() == Some(42.0)).then_some(()))
    })
    .await?;
    // out of range: refused, never reaches the device
    ensure!(c.ok(&format!("write {sp} 95"))? == "BadOutOfRange");
    ensure!(sim.power_limit() == 42.0);
    // a read-only variable is not writable
    ensure!(c.ok(&format!("write {} 1", node("Tanks/tank-1/Volume")))? == "BadNotWritable");

    // the headend shows the writes as local commands with their outcome and
    // actor; the refused one too (issue 29, item 5)
    let cmds = eventually("the local commands at the headend", T, || async {
        let l = get_json(he.http_addr, "/api/v1/commands?site=site-u").await?;
        let local: Vec<Value> = l["commands"]
            .as_array()
            .or(l.as_array())
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["origin"] == "site_opcua")
            .collect();
        let done = local.len() == 3
            && local.iter().any(|c| c["state"] == "active")
            && local.iter().filter(|c| c["state"] == "rejected").count() == 2;
        Ok(done.then_some(local))
    })
    .await?;
    for cmd in &cmds {
        ensure!(cmd["created_by"] == "opcua_user alice at site-u", "{cmd}");
    }
    let not_writable = cmds
        .iter()
        .find(|c| c["field"] == "volume")
        .context("the refused write to the volume")?;
    ensure!(
        not_writable["asset"] == "tank-1"
            && not_writable["reason"] == "rejected_invalid"
            && not_writable.to_string().contains("BadNotWritable"),
        "{not_writable}"
    );
    let cmds: Vec<Value> = cmds
        .into_iter()
        .filter(|c| c["field"] != "volume")
        .collect();
    for cmd in &cmds {
        ensure!(
            cmd["asset"] == "ctl-1" && cmd["field"] == "power_limit",
            "{cmd}"
        );
    }
    let rejected = cmds
        .iter()
        .find(|c| c["state"] == "rejected")
        .context("rejected")?;
    ensure!(
        rejected["reason"] == "rejected_out_of_range" && rejected["value"] == 95.0,
        "{rejected}"
    );
    let active = cmds
        .iter()
        .find(|c| c["state"] == "active")
        .context("active")?;
    ensure!(active["readback"] == 42.0, "{active}");

    // an expected delivery announced by the headend shows under Deliveries/
    let (code, l) = post_json(
        he.http_addr,
        "/api/v1/loads",
        &serde_json::json!({
            "site": "site-u", "reference": "PO-1", "tanks": ["tank-1"], "product": "diesel",
            "planned_volume_l": 5000, "eta": now_ms() + 3_600_000, "eta_source": "manual"}),
    )
    .await?;
    ensure!(code == 201, "{code}: {l}");
    let load = l["load"]["load_id"]
        .as_str()
        .context("load id")?
        .to_string();
    let planned = until(&mut c, "the load under Deliveries", |c| {
        let r = c.json(&format!(
            "read {}",
            node(&format!("Deliveries/{load}/PlannedVolume"))
        ))?;
        Ok((r["status"] == "Good").then_some(r))
    })
    .await?;
    ensure!(planned["value"] == 5000.0, "{planned}");
    let status = c.json(&format!(
        "read {}",
        node(&format!("Deliveries/{load}/Status"))
    ))?;
    ensure!(status["value"] == "expected", "{status}");
    c.ok("disconnect")?;

    // a read-only user's write is refused, never reaches the device, and
    // is on record at the headend as bob's
    c.ok(&format!("connect {url} sign bob bob-password"))?;
    ensure!(c.ok(&format!("write {sp} 10"))? == "BadUserAccessDenied");
    ensure!(sim.power_limit() == 42.0);
    let r = c.json(&format!("read {sp}"))?;
    ensure!(r["status"] == "Good", "bob reads: {r}");
    let bobs = eventually("bob's refused write at the headend", T, || async {
        let l = get_json(he.http_addr, "/api/v1/commands?site=site-u").await?;
        Ok(l["commands"]
            .as_array()
            .or(l.as_array())
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|c| c["created_by"] == "opcua_user bob at site-u" && c["state"] != "acked"))
    })
    .await?;
    ensure!(
        bobs["state"] == "rejected"
            && bobs["value"] == 10.0
            && bobs.to_string().contains("BadUserAccessDenied"),
        "{bobs}"
    );

    // the writes and the refused logins are counted on /metrics
    let page = get_text(agent.status_addr.context("status")?, "/metrics").await?;
    for (name, want) in [
        ("tankwatch_agent_opcua_writes_total{status=\"Good\"}", 1.0),
        (
            "tankwatch_agent_opcua_writes_total{status=\"BadOutOfRange\"}",
            1.0,
        ),
        ("tankwatch_agent_opcua_logins_refused_total", 1.0),
        (
            "tankwatch_agent_opcua_writes_total{status=\"BadNotWritable\"}",
            1.0,
        ),
        (
            "tankwatch_agent_opcua_writes_total{status=\"BadUserAccessDenied\"}",
            1.0,
        ),
    ] {
        ensure!(
            metric(&page, name) == Some(want),
            "{name}: {:?}",
            metric(&page, name)
        );
    }

    // a device taken offline: Bad within two polls, with the last value; Good when back
    c.ok(&format!("subscribe {}", node("Tanks/tank-1/Volume")))?;
    until(&mut c, "the new item's first value", |c| {
        Ok(c.json("notes")?
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(()))
    })
    .await?;
    let cut = Instant::now();
    proxy.set_up(false);
    until(&mut c, "the volume Bad", |c| {
        let r = c.json(&format!("read {}", node("Tanks/tank-1/Volume")))?;
        Ok((r["status"] != "Good").then_some(r))
    })
    .await?;
    let took = cut.elapsed();
    let r = c.json(&format!("read {}", node("Tanks/tank-1/Volume")))?;
    ensure!(
        r["value"].as_f64() == Some(12_345.0),
        "the last known value stays: {r}"
    );
    ensure!(
        took <= Duration::from_millis(2 * POLL_MS + 300),
        "Bad after {took:?} (two polls = {} ms)",
        2 * POLL_MS
    );
    let status = c.json(&format!("read {}", node("Agent/Devices/atg/Status")))?;
    until(&mut c, "the device shown disconnected", |c| {
        let s = c.json(&format!("read {}", node("Agent/Devices/atg/Status")))?;
        Ok((s["value"] == "disconnected").then_some(()))
    })
    .await
    .with_context(|| format!("{status}"))?;
    proxy.set_up(true);
    until(&mut c, "the volume Good again", |c| {
        let r = c.json(&format!("read {}", node("Tanks/tank-1/Volume")))?;
        Ok((r["status"] == "Good").then_some(()))
    })
    .await?;
    // the subscriber saw it go Bad (with the last value) and come back Good
    let mut seen: Vec<Value> = Vec::new();
    until(&mut c, "Bad then Good notifications", |c| {
        seen.extend(c.json("notes")?.as_array().cloned().unwrap_or_default());
        let bad = seen.iter().position(|n| n["status"] != "Good");
        Ok(bad
            .filter(|&b| seen[b..].iter().any(|n| n["status"] == "Good"))
            .map(|_| ()))
    })
    .await?;
    ensure!(
        seen.iter()
            .any(|n| n["status"] == "Bad" && n["value"].as_f64() == Some(12_345.0)),
        "a Bad notification carries the last known value: {seen:?}"
    );
    // issue 29, item 5: never an empty value (a null of good quality in a
    // historian), neither going Bad nor coming back Good
    ensure!(
        seen.iter().all(|n| n["value"].is_number()),
        "a notification without a value: {seen:?}"
    );
    until(&mut c, "the headend connection shown", |c| {
        let s = c.json(&format!("read {}", node("Agent/HeadendConnected")))?;
        Ok((s["value"] == true).then_some(()))
    })
    .await?;
    c.ok("disconnect")?;
    agent.stop().await?;
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_none_when_configured_is_anonymous_and_read_only() -> Result<()> {
    let pki = TestPki::new(&["site-n"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    sim.set_frozen(true);
    // no headend: the server serves what the site reads regardless
    let yaml = site_yaml(
        &pki,
        work.path(),
        "site-n",
        "127.0.0.1:9".parse()?,
        &sim,
        sim.addr,
        "[basic256sha256_sign_and_encrypt, none]",
    )?;
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let url = format!(
        "opc.tcp://127.0.0.1:{}/",
        agent.opcua_addr.context("server")?.port()
    );
    let mut c = Client::start(&work.path().join("client-pki"))?;
    c.ok(&format!("connect {url} none - -"))?;
    let ns = c.ok("nsidx urn:tankwatch:agent:site-n")?;
    let sp = format!("ns={ns};s=Site/site-n/Controllers/ctl-1/PowerLimit");
    until(&mut c, "the setpoint readable", |c| {
        let r = c.json(&format!("read {sp}"))?;
        Ok((r["status"] == "Good").then_some(()))
    })
    .await?;
    let before = sim.power_limit();
    let w = c.ok(&format!("write {sp} 10"))?;
    ensure!(
        w == "BadUserAccessDenied",
        "an anonymous write on None answered {w}"
    );
    ensure!(sim.power_limit() == before);
    c.ok("disconnect")?;
    // a user name is never sent over None
    if c.ask(&format!("connect {url} none alice alice-password"))?
        .is_ok()
    {
        bail!("a user logged in over security None");
    }
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_certificate_is_kept_across_restarts_and_a_taken_port_stops_the_start()
-> Result<()> {
    let pki = TestPki::new(&["site-k"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let yaml = site_yaml(
        &pki,
        work.path(),
        "site-k",
        "127.0.0.1:9".parse()?,
        &sim,
        sim.addr,
        "[basic256sha256_sign_and_encrypt]",
    )?;
    let cert = work.path().join("opcua-pki/own/cert.der");
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let first = std::fs::read(&cert)?;
    agent.stop().await?;
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    ensure!(
        std::fs::read(&cert)? == first,
        "a restart made a new server certificate: clients that trusted it would be refused"
    );
    agent.stop().await?;
    // the port is taken: the agent does not start, and says which address
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let yaml = yaml.replace(
        "opcua_server:\n  listen: \"127.0.0.1:0\"",
        &format!("opcua_server:\n  listen: \"{addr}\""),
    );
    let e = match edge_agent::start(agent_config(work.path(), &yaml)?) {
        Ok(a) => {
            a.stop().await?;
            bail!("the agent started with its OPC UA port taken");
        }
        Err(e) => e.to_string(),
    };
    ensure!(
        e.contains("opcua_server.listen") && e.contains(&addr.to_string()),
        "{e}"
    );
    Ok(())
}
