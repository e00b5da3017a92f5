//! The MQTT adapter against what real brokers and nodes do (issue 29,
//! items 11 and 13), on the machine's Mosquitto: a message over
//! `max_payload_bytes` (retained, so it comes at every connect), a
//! retained value of unknown age, a QoS 1 burst, a Sparkplug seq gap from
//! a second, non-Python Sparkplug node (the Eclipse Tahu JavaScript
//! client) and the agent's own primary host STATE.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::asset_field as field;
use e2e::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const BROKER: &str = "127.0.0.1:1883";

fn prefix(name: &str) -> String {
    format!("tw{}-{name}", std::process::id())
}

/// A Mosquitto of the test's own on a free port (killed when dropped),
/// holding up to 100,000 queued messages per client.
fn own_broker() -> Result<(Killed, u16)> {
    let port = free_port();
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
        ),
    )?;
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting mosquitto")?;
    let killed = Killed(child, dir);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            std::time::Instant::now() < until,
            "mosquitto did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((killed, port))
}

/// The broker's process, and its config folder (kept until it is killed).
struct Killed(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test-side MQTT client (rumqttc) with its event loop running.
async fn client(id: &str) -> Result<AsyncClient> {
    client_on(id, 1883).await
}

/// The same, on the broker at `port`.
async fn client_on(id: &str, port: u16) -> Result<AsyncClient> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut el) = AsyncClient::new(o, 100_000);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    Ok(c)
}

fn head(pki: &TestPki, site: &str, he: SocketAddr, work: &std::path::Path) -> String {
    agent_head(pki, site, he, &work.join("log"), "127.0.0.1:0")
}

/// Items 11 and 13: an oversized retained message is skipped and counted
/// with the connection kept (before: the connection dropped at every
/// connect, the device down for good); a retained value without a time of
/// its own is uncertain until a live one comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_retained_message_is_skipped_and_a_retained_value_is_uncertain() -> Result<()>
{
    let site = "site-mq";
    let p = prefix("big");
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    let pubc = client(&format!("{p}-pub")).await?;
    pubc.publish(
        format!("{p}/big"),
        QoS::AtLeastOnce,
        true,
        vec![b'7'; 5_000],
    )
    .await?;
    pubc.publish(format!("{p}/level"), QoS::AtLeastOnce, true, "42")
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let http = he.http_addr;
    let yaml = format!(
        r#"{head}assets:
  - {{ id: tank-1, kind: tank, capacity: 20000 }}
devices:
  - mqtt:
      name: broker
      url: mqtt://{BROKER}
      client_id: agent-{p}
      max_payload_bytes: 1024
      timeout_ms: 3000
      max_backoff_ms: 1000
      points:
        - {{ topic: "{p}/big", asset: tank-1, field: big }}
        - {{ topic: "{p}/level", asset: tank-1, field: volume, unit: L }}
"#,
        head = head(&pki, site, he.grpc_addr, work.path()),
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let retained = eventually("the retained level", T, || async {
        Ok(field(http, site, "tank-1", "volume")
            .await?
            .filter(|f| f["value"] == 42.0))
    })
    .await?;
    ensure!(retained["quality"] == "uncertain", "{retained}");
    pubc.publish(format!("{p}/level"), QoS::AtLeastOnce, false, "43")
        .await?;
    eventually("a live level, good", T, || async {
        Ok(field(http, site, "tank-1", "volume")
            .await?
            .filter(|f| f["value"] == 43.0 && f["quality"] == "good"))
    })
    .await?;
    // the oversized message: counted, the connection kept
    let d = eventually("the oversized message counted", T, || async {
        Ok(Some(site_device(http, site, "broker").await?)
            .filter(|d| d["malformed"].as_u64() >= Some(1) && d["connected"] == true))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d2 = site_device(http, site, "broker").await?;
    ensure!(
        d2["reconnects"] == d["reconnects"] && d2["connected"] == true,
        "the connection was kept: {d} then {d2}"
    );
    // clean the broker's retained messages
    for t in ["big", "level"] {
        pubc.publish(format!("{p}/{t}"), QoS::AtLeastOnce, true, Vec::<u8>::new())
            .await?;
    }
    agent.stop().await?;
    he.stop().await;
    Ok(())
}

/// Item 11: a QoS 1 burst the agent cannot take yet waits at the broker
/// (acknowledgements held back while the adapter's inbox is full) instead
/// of being shed. The adapter runs as the agent runs it, behind a consumer
/// slower than the burst (2,000 readings a second): 10,000 messages at full
/// speed overflow the inbox (4,096); before, the rest was shed. The broker
/// is a Mosquitto of the test's own, configured as the install guide says
/// for bursty sites (`max_queued_messages` raised): with the default 1,000
/// the broker itself drops what it cannot queue, whatever the agent does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_burst_the_agent_cannot_take_yet_waits_at_the_broker_instead_of_being_shed()
-> Result<()> {
    let p = prefix("burst");
    let (_broker, port) = own_broker()?;
    let dev: adapter_mqtt::MqttDevice = serde_yaml::from_str(&format!(
        "name: broker\nurl: mqtt://127.0.0.1:{port}\nclient_id: agent-{p}\nqos: 1\nclean_session: false\ntimeout_ms: 3000\npoints:\n  - {{ topic: {p}/level, asset: tank-1, field: volume }}\n"
    ))?;
    let health = adapter_api::Health::default();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx = run_adapter(
        Box::new(adapter_mqtt::MqttAdapter::new(dev)?),
        health.clone(),
        tokio::sync::mpsc::channel(1).1,
        stop_rx,
    );
    eventually("the adapter connected", T, || async {
        Ok(health.get().connected.then_some(()))
    })
    .await?;
    let pubc = client_on(&format!("{p}-pub"), port).await?;
    const N: u64 = 10_000;
    let started = std::time::Instant::now();
    for i in 1..=N {
        pubc.publish(format!("{p}/level"), QoS::AtLeastOnce, false, i.to_string())
            .await?;
    }
    // the slow consumer: 2,000 a second, until the last message
    let mut seen = 0u64;
    let mut last = 0.0;
    while last < N as f64 {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(r)) => {
                seen += 1;
                last = r.value;
            }
            _ => break,
        }
        if seen.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let took = started.elapsed();
    println!(
        "{N} QoS 1 messages at full speed, read by a consumer of 2,000/s: {seen} readings in {took:.1?}, the last {last}"
    );
    ensure!(
        seen == N && last == N as f64,
        "{seen} of {N} QoS 1 messages reached the agent (the last: {last})"
    );
    Ok(())
}

/// Item 11: a Sparkplug node in another language (the Tahu JavaScript
/// client) is read, and a seq gap is recorded with the count of messages
/// it lost (before: 0); the agent as primary host publishes its STATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tahu_javascript_node_is_read_its_seq_gap_counted_and_the_host_state_published()
-> Result<()> {
    let site = "site-sp";
    let p = prefix("sp");
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let http = he.http_addr;
    // a watcher of the host's STATE
    let mut o = MqttOptions::new(format!("{p}-watch"), "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(5));
    let (watch, mut wel) = AsyncClient::new(o, 100);
    watch
        .subscribe(format!("spBv1.0/STATE/{p}-host"), QoS::AtLeastOnce)
        .await?;
    let (state_tx, mut states) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = wel.poll().await {
            if let Event::Incoming(Packet::Publish(m)) = ev {
                let _ = state_tx.send(String::from_utf8_lossy(&m.payload).to_string());
            }
        }
    });
    let yaml = format!(
        r#"{head}assets:
  - {{ id: atg-1, kind: tank, capacity: 30000 }}
devices:
  - mqtt:
      name: broker
      url: mqtt://{BROKER}
      client_id: agent-{p}
      timeout_ms: 3000
      max_backoff_ms: 1000
      sparkplug: {{ group_id: {p}, edge_node_id: N1, device_id: atg, host_id: {p}-host }}
      points:
        - {{ metric: Volume, asset: atg-1, field: volume, unit: L }}
"#,
        head = head(&pki, site, he.grpc_addr, work.path()),
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let online = tokio::time::timeout(T, states.recv())
        .await?
        .context("no STATE")?;
    let state: Value = serde_json::from_str(&online)?;
    ensure!(
        state["online"] == true && state["timestamp"].as_i64() > Some(0),
        "{online}"
    );
    let mut node = LinePeer::start(
        "sparkplug_node.js",
        &[
            "127.0.0.1".into(),
            "1883".into(),
            p.clone(),
            "N1".into(),
            "atg".into(),
        ],
        &[],
    )?;
    wait_value(http, site, "atg-1", "volume", 5000.0, 1e-6).await?;
    tokio::task::block_in_place(|| node.cmd("ddata Volume 5100"))?;
    wait_value(http, site, "atg-1", "volume", 5100.0, 1e-6).await?;
    tokio::task::block_in_place(|| node.cmd("skip 3"))?;
    tokio::task::block_in_place(|| node.cmd("ddata Volume 5200"))?;
    wait_value(http, site, "atg-1", "volume", 5200.0, 1e-6).await?;
    let gap = eventually("the seq gap at the headend", T, || async {
        let g = get_json(http, &format!("/api/v1/sites/{site}/gaps")).await?;
        Ok(g.as_array()
            .and_then(|a| a.iter().find(|x| x["reason"] == "source_sequence").cloned()))
    })
    .await?;
    ensure!(gap["count"] == 3, "three messages lost: {gap}");
    // a clean stop says offline
    agent.stop().await?;
    let offline = tokio::time::timeout(T, states.recv())
        .await?
        .context("no offline STATE")?;
    let off: Value = serde_json::from_str(&offline)?;
    ensure!(
        off["online"] == false && off["timestamp"] == state["timestamp"],
        "{offline} after {online}"
    );
    // clean the retained STATE
    watch
        .publish(
            format!("spBv1.0/STATE/{p}-host"),
            QoS::AtLeastOnce,
            true,
            Vec::<u8>::new(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    he.stop().await;
    Ok(())
}
