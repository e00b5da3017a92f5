//! The MQTT adapter end to end against independent implementations: the
//! machine's Mosquitto broker and a paho-mqtt site publishing plain, JSON
//! and Sparkplug B (Tahu schema, compiled by pysparkplug) payloads; from
//! there through the agent, mTLS gRPC and the headend to its REST API.
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const BROKER: &str = "127.0.0.1:1883";

/// The paho-mqtt site (tests/peers/mqtt_site.py); `cmd` returns how many
/// rebirth requests it answered meanwhile.
struct Peer;

impl Peer {
    fn start(broker: &str, prefix: &str) -> Result<LinePeer> {
        let (host, port) = broker.rsplit_once(':').context("host:port")?;
        // a rebirth request may come before READY (the agent is already up)
        LinePeer::start(
            "mqtt_site.py",
            &[host.into(), port.into(), prefix.into()],
            &["REBIRTH"],
        )
    }
}

/// Waits until the headend shows the agent's MQTT device `connected`.
async fn connected(http: SocketAddr, site: &str, want: bool) -> Result<()> {
    eventually(&format!("device broker connected = {want}"), T, || async {
        Ok(device(http, site, "broker")
            .await
            .ok()
            .filter(|d| d["connected"] == want)
            .map(|_| ()))
    })
    .await
}

/// Agent YAML: a tank, a controller and a temperature probe, all fed by one
/// MQTT device on `broker`, topics under `prefix`.
fn mqtt_yaml(
    pki: &TestPki,
    site: &str,
    headend: SocketAddr,
    log: &Path,
    broker: &str,
    prefix: &str,
) -> String {
    format!(
        r#"{head}assets:
  - {{ id: tank-1, kind: tank, capacity: 20000 }}
  - {{ id: ctl, kind: controller }}
  - {{ id: probe-1, kind: sensor }}
  - {{ id: atg-1, kind: tank, capacity: 30000 }}
devices:
  - mqtt:
      name: broker
      url: mqtt://{broker}
      client_id: agent-{prefix}
      timeout_ms: 3000
      max_backoff_ms: 1000
      sparkplug: {{ group_id: G1, edge_node_id: N1, device_id: atg }}
      points:
        - {{ topic: "{prefix}/tank1/state", json_path: level.volume, ts_path: ts, asset: tank-1, field: volume, unit: gal }}
        - {{ topic: "{prefix}/+/temp", asset: probe-1, field: temperature, unit: degF }}
        - {{ topic: "{prefix}/ctl/setpoint", command_topic: "{prefix}/ctl/setpoint/set", writable: true, asset: ctl, field: power_limit, unit: kW }}
        - {{ metric: Volume, asset: atg-1, field: volume, unit: L }}
        - {{ metric: Setpoint, asset: atg-1, field: fill_limit, unit: L, writable: true }}
setpoints:
  - {{ asset: ctl, field: power_limit, min: 0, max: 80 }}
  - {{ asset: atg-1, field: fill_limit, min: 0, max: 30000 }}
"#,
        head = agent_head(pki, site, headend, log, "127.0.0.1:0"),
    )
}

/// `asset.field` reaches `want` (to a millionth) on the REST API.
async fn wait_value(
    http: SocketAddr,
    site: &str,
    asset: &str,
    field: &str,
    want: f64,
) -> Result<()> {
    e2e::wait_value(http, site, asset, field, want, 1e-6 * want.abs().max(1.0)).await
}

async fn device(http: SocketAddr, site: &str, name: &str) -> Result<Value> {
    site_device(http, site, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_plain_and_sparkplug_payloads_from_independent_peers_reach_the_rest_api_and_garbage_is_counted()
-> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let site = "site-m";
    let prefix = format!("tw{}", std::process::id());
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let http = he.http_addr;
    let yaml = mqtt_yaml(
        &pki,
        site,
        he.grpc_addr,
        &work.path().join("log"),
        BROKER,
        &prefix,
    );
    let mut peer = Peer::start(BROKER, &prefix)?;
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    connected(http, site, true).await?;

    // JSON with a path and a timestamp, in US gallons -> litres
    peer.cmd("json 100")?;
    wait_value(http, site, "tank-1", "volume", 378.541_178_4).await?;
    // a plain number on a wildcard topic, in °F -> °C; the probe is a sensor
    peer.cmd("plain 212")?;
    wait_value(http, site, "probe-1", "temperature", 100.0).await?;
    let assets = get_json(http, &format!("/api/v1/sites/{site}/assets")).await?;
    let probe = assets
        .as_array()
        .and_then(|a| a.iter().find(|x| x["asset_id"] == "probe-1"))
        .cloned()
        .context("probe")?;
    assert_eq!(probe["kind"], "sensor");
    assert!(
        probe["fields"].get("delivery.in_progress").is_none(),
        "a sensor is not a tank: {probe}"
    );

    // Sparkplug B: the adapter asked for a rebirth when it connected; the
    // peer's births come either way, then aliased DDATA
    peer.cmd("birth")?;
    wait_value(http, site, "atg-1", "volume", 1000.0).await?;
    peer.cmd("ddata 1234.5")?;
    wait_value(http, site, "atg-1", "volume", 1234.5).await?;

    // garbage: malformed JSON, a non-number, an unknown alias, a non-protobuf payload
    peer.cmd("raw tank1/state {\"level\": {\"volume\": 1")?;
    peer.cmd("raw x/temp warm")?;
    peer.cmd("alias 99 5")?;
    peer.cmd("garbage")?;
    let d = eventually("malformed payloads counted", T, || async {
        Ok(device(http, site, "broker")
            .await
            .ok()
            .filter(|d| d["malformed"].as_u64() >= Some(4)))
    })
    .await?;
    assert_eq!(d["kind"], "mqtt");
    // the same health on the agent's own /status and /metrics
    let status_addr = agent.status_addr.context("status endpoint")?;
    let st = get_json(status_addr, "/status").await?;
    assert!(
        st["devices"]["broker"]["malformed"].as_u64() >= Some(4),
        "{st}"
    );
    assert_eq!(st["devices"]["broker"]["kind"], "mqtt");
    let page = get_text(status_addr, "/metrics").await?;
    assert!(
        page.contains(r#"tankwatch_agent_device_connected{device="broker",kind="mqtt"} 1"#),
        "{page}"
    );
    assert!(
        metric(
            &page,
            r#"tankwatch_agent_device_malformed_payloads_total{device="broker",kind="mqtt"}"#
        )
        .is_some_and(|v| v >= 4.0),
        "{page}"
    );
    // the agent kept running and keeps reading
    peer.cmd("json 200")?;
    wait_value(http, site, "tank-1", "volume", 757.082_356_8).await?;

    // a Sparkplug seq gap: a gap record for the device, and a rebirth
    // request. The adapter asks at most once per REBIRTH_EVERY_MS and the
    // unknown alias above asked already: let that one age out first (the
    // steps in between can take less, and then no request is due).
    tokio::time::sleep(Duration::from_millis(
        adapter_mqtt::sparkplug::REBIRTH_EVERY_MS as u64 + 200,
    ))
    .await;
    let mut rebirths = 0;
    peer.cmd("skip 5")?;
    rebirths += peer.cmd("ddata 1300")?;
    wait_value(http, site, "atg-1", "volume", 1300.0).await?;
    let gaps = eventually("the seq gap at the headend", T, || async {
        let g = get_json(http, &format!("/api/v1/sites/{site}/gaps")).await?;
        Ok(g.as_array()
            .filter(|a| {
                a.iter()
                    .any(|x| x["reason"] == "source_sequence" && x["device"] == "broker")
            })
            .cloned())
    })
    .await?;
    assert!(!gaps.is_empty());
    // the REBIRTH notice may arrive after the OK of the next command
    for _ in 0..20 {
        if rebirths > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rebirths += peer.cmd("ddata 1300")?;
    }
    ensure!(
        rebirths > 0,
        "the seq gap did not trigger a rebirth request"
    );
    eventually("the source gap counted on the device", T, || async {
        Ok(device(http, site, "broker")
            .await
            .ok()
            .filter(|d| d["source_gaps"].as_u64() >= Some(1)))
    })
    .await?;

    // writes: a command topic and a Sparkplug DCMD, each read back, ending active
    for (asset, field, v) in [
        ("ctl", "power_limit", 40.0),
        ("atg-1", "fill_limit", 25_000.0),
    ] {
        let (code, c) = post_json(
            http,
            "/api/v1/commands",
            &json!({"kind": "setpoint", "asset": format!("{site}/{asset}"), "field": field, "value": v}),
        )
        .await?;
        ensure!(code == 201, "{code}: {c}");
        let id = c["command_id"].as_str().unwrap_or_default().to_string();
        let active = wait_state(http, &id, "active", T).await?;
        assert_eq!(active["readback"], json!(v), "{active}");
        wait_value(http, site, asset, field, v).await?;
    }
    drop(peer);
    agent.stop().await?;
    he.stop().await;
    Ok(())
}

/// Our own Mosquitto on a free port, so that a test can restart it.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(port: u16) -> Result<Broker> {
        Broker::spawn(
            Command::new("mosquitto").args(["-p", &port.to_string()]),
            port,
        )
    }

    /// Mosquitto with `conf` written to `dir/mosquitto.conf`; `port` is the
    /// one to wait for.
    fn with_config(dir: &Path, conf: &str, port: u16) -> Result<Broker> {
        let p = dir.join("mosquitto.conf");
        std::fs::write(&p, conf)?;
        Broker::spawn(Command::new("mosquitto").arg("-c").arg(&p), port)
    }

    fn spawn(cmd: &mut Command, port: u16) -> Result<Broker> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Broker { child, port });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("mosquitto did not listen on {port}")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_resume_by_themselves_after_the_broker_restarts() -> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let site = "site-r";
    let prefix = "restart";
    let port = free_port();
    let broker = Broker::start(port)?;
    let addr = format!("127.0.0.1:{port}");
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let http = he.http_addr;
    let yaml = mqtt_yaml(
        &pki,
        site,
        he.grpc_addr,
        &work.path().join("log"),
        &addr,
        prefix,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let mut peer = Peer::start(&addr, prefix)?;
    connected(http, site, true).await?;
    peer.cmd("json 10")?;
    wait_value(http, site, "tank-1", "volume", 37.854_117_84).await?;

    drop(peer);
    drop(broker);
    // the outage is visible: the device is disconnected, its points bad
    connected(http, site, false).await?;
    let b2 = Broker::start(port)?;
    assert_eq!(b2.port, port);
    let mut peer = Peer::start(&addr, prefix)?;
    connected(http, site, true).await?;
    peer.cmd("json 20")?;
    wait_value(http, site, "tank-1", "volume", 75.708_235_68).await?;
    let d = device(http, site, "broker").await?;
    assert!(d["reconnects"].as_u64() >= Some(1), "{d}");
    drop(peer);
    agent.stop().await?;
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_requires_a_client_certificate_is_read_over_mqtts() -> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let site = "site-t";
    let prefix = "tls";
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    // a TLS listener that demands a client certificate from our CA, and a
    // plain one on loopback for the paho peer
    let (tls_port, plain_port) = (free_port(), free_port());
    let p = pki.path();
    let _broker = Broker::with_config(
        work.path(),
        &format!(
            // `user root`: the key files are 0600 (mosquitto would drop to its own user)
            "user root\nper_listener_settings false\nallow_anonymous true\nlistener {plain_port} 127.0.0.1\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            p.join("ca.pem").display(),
            p.join("headend.pem").display(),
            p.join("headend.key").display()
        ),
        tls_port,
    )?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let http = he.http_addr;
    let f = pki.agent_files(site);
    let yaml = mqtt_yaml(
        &pki,
        site,
        he.grpc_addr,
        &work.path().join("log"),
        &format!("127.0.0.1:{tls_port}"),
        prefix,
    )
    .replace("url: mqtt://", "url: mqtts://")
    .replace(
        "      client_id:",
        &format!(
            "      tls: {{ ca: {}, cert: {}, key: {} }}\n      client_id:",
            f.ca.display(),
            f.cert.display(),
            f.key.display()
        ),
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    connected(http, site, true).await?;
    let mut peer = Peer::start(&format!("127.0.0.1:{plain_port}"), prefix)?;
    peer.cmd("json 1")?;
    wait_value(http, site, "tank-1", "volume", 3.785_411_784).await?;
    drop(peer);
    agent.stop().await?;
    he.stop().await;
    Ok(())
}

/// Regression (found by the adapters benchmark): each topic was one
/// SUBSCRIBE request into rumqttc's 64-deep request queue, so a device with
/// more than 64 topics never connected. 250 topics now subscribe in
/// SUBSCRIBE packets of 100 filters, and the last one delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_hundreds_of_topics_subscribes_to_them_all() -> Result<()> {
    let prefix = format!("many{}", std::process::id());
    let points: String = (0..250)
        .map(|i| format!("  - {{ topic: {prefix}/p{i}, asset: m{i}, field: flow }}\n"))
        .collect();
    let dev: adapter_mqtt::MqttDevice = serde_yaml::from_str(&format!(
        "name: broker\nurl: mqtt://{BROKER}\nclient_id: many-{prefix}\ntimeout_ms: 3000\npoints:\n{points}"
    ))?;
    let health = adapter_api::Health::default();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx = run_adapter(
        Box::new(adapter_mqtt::MqttAdapter::new(dev)?),
        health.clone(),
        tokio::sync::mpsc::channel(1).1,
        stop_rx,
    );
    eventually("the adapter connected and subscribed", T, || async {
        Ok(health.get().connected.then_some(()))
    })
    .await?;
    let mut peer = Peer::start(BROKER, &prefix)?;
    peer.cmd("raw p249 7.5")?;
    let r = tokio::time::timeout(T, async {
        loop {
            match rx.recv().await {
                Some(r) if r.asset_id == "m249" => return Ok(r),
                Some(_) => {}
                None => bail!("adapter ended"),
            }
        }
    })
    .await??;
    assert_eq!((r.value, r.quality), (7.5, adapter_api::Quality::Good));
    Ok(())
}
