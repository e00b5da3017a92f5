//! Adapter benchmark (docs/BENCHMARKS.md): the release agent binary as its
//! own process, streaming to an in-process headend, fed by
//!
//! 1. MQTT: `MQTT_RATE` messages/s (default 10,000) from a rumqttc
//!    publisher through the machine's Mosquitto, spread over 100 topics,
//!    each a point of the agent; beside it a bare rumqttc subscriber on the
//!    same topics measures what the broker delivers (the limit);
//! 2. OPC UA: an asyncua server with `OPCUA_ITEMS` variables (default 1,000),
//!    each changing once a second, all monitored by the agent (the server's
//!    update rate is the limit);
//! 3. all three protocols at once (Modbus on the ATG simulator too), for the
//!    resident memory.
//!
//! For each run: readings the agent logged per second (its log's next seq
//! from `/metrics`), agent CPU per 1,000 readings (utime + stime from
//! /proc), and VmRSS / VmHWM.
//!
//! `cargo build --release -p edge-agent && cargo run --release -p e2e --example adapters_bench`
//! (env: MQTT_RATE=10000 OPCUA_ITEMS=1000 SECONDS=20)
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use e2e::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (utime + stime in ticks, VmRSS KiB, VmHWM KiB) of `pid`.
fn proc_stats(pid: u32) -> Result<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((ticks, kib("VmRSS:"), kib("VmHWM:")))
}

/// The agent's log next seq (readings and records logged so far).
async fn logged(status: SocketAddr) -> Result<f64> {
    let page = get_text(status, "/metrics").await?;
    metric(&page, "tankwatch_agent_log_next_seq").context("no log_next_seq metric")
}

struct Agent {
    child: Child,
    status: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(dir: &Path, yaml: &str, status_port: u16) -> Result<Agent> {
    Ok(Agent {
        child: spawn_release_agent(dir, yaml)?,
        status: SocketAddr::from(([127, 0, 0, 1], status_port)),
    })
}

/// Measures `secs` seconds of the agent: (readings/s, CPU ms per 1,000 readings, RSS MiB, HWM MiB).
async fn measure(a: &Agent, secs: u64) -> Result<(f64, f64, f64, f64)> {
    let pid = a.child.id();
    let (t0, _, _) = proc_stats(pid)?;
    let n0 = logged(a.status).await?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (t1, rss, hwm) = proc_stats(pid)?;
    let n1 = logged(a.status).await?;
    let el = start.elapsed().as_secs_f64();
    let n = (n1 - n0).max(1.0);
    let cpu_ms = (t1 - t0) as f64 * 10.0; // 100 ticks/s
    Ok((
        n / el,
        cpu_ms / (n / 1000.0),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    ))
}

/// Production defaults (flush interval, uplink), unlike the tests' `agent_head`.
fn head(pki: &TestPki, site: &str, headend: SocketAddr, dir: &Path, status_port: u16) -> String {
    let f = pki.agent_files(site);
    format!(
        "site_id: {site}\nheadend: {{ address: \"{headend}\", server_name: localhost }}\ntls: {{ cert: {}, key: {}, ca: {} }}\nlog: {{ dir: {} }}\nstatus: {{ listen: \"127.0.0.1:{status_port}\" }}\n",
        f.cert.display(),
        f.key.display(),
        f.ca.display(),
        dir.join("log").display()
    )
}

fn mqtt_device(topics: u64) -> (String, String) {
    let mut assets = String::new();
    let mut dev = "  - mqtt:\n      name: broker\n      url: mqtt://127.0.0.1:1883\n      client_id: bench-agent\n      qos: 0\n      points:\n".to_string();
    for i in 0..topics {
        assets += &format!("  - {{ id: m{i}, kind: meter }}\n");
        dev += &format!("        - {{ topic: bench/t{i}, asset: m{i}, field: flow }}\n");
    }
    (assets, dev)
}

fn opcua_device(port: u16, items: u64) -> (String, String) {
    let mut assets = String::new();
    let mut dev = format!(
        "  - opcua:\n      name: plc\n      endpoint: opc.tcp://127.0.0.1:{port}/tw/\n      security: none\n      sampling_interval_ms: 500\n      publishing_interval_ms: 500\n      points:\n"
    );
    for i in 0..items {
        if i % 100 == 0 {
            assets += &format!("  - {{ id: s{}, kind: sensor }}\n", i / 100);
        }
        dev += &format!(
            "        - {{ node: \"nsu=urn:tankwatch:test:site;s=Bench.{i}\", asset: s{}, field: v{} }}\n",
            i / 100,
            i % 100
        );
    }
    (assets, dev)
}

/// Publishes `rate` messages/s over `topics` topics until `stop`; returns the count.
fn publisher(rate: u64, topics: u64, stop: Arc<AtomicU64>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut o = rumqttc::MqttOptions::new("bench-pub", "127.0.0.1", 1883);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 10_000);
        tokio::spawn(async move { while el.poll().await.is_ok() {} });
        let per_tick = (rate / 100).max(1); // every 10 ms
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut sent = 0u64;
        while stop.load(Ordering::Relaxed) == 0 {
            tick.tick().await;
            for k in 0..per_tick {
                let t = (sent + k) % topics;
                let _ = client
                    .publish(
                        format!("bench/t{t}"),
                        rumqttc::QoS::AtMostOnce,
                        false,
                        format!("{}.5", sent % 1000),
                    )
                    .await;
            }
            sent += per_tick;
        }
        sent
    })
}

/// A bare subscriber on `bench/#`: what the broker delivers (the limit).
fn raw_subscriber(count: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut o = rumqttc::MqttOptions::new("bench-raw", "127.0.0.1", 1883);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
        let _ = client.subscribe("bench/#", rumqttc::QoS::AtMostOnce).await;
        while let Ok(e) = el.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = e {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

fn opc_server(port: u16, dir: &Path, items: u64) -> Result<LinePeer> {
    LinePeer::start(
        "opcua_server.py",
        &[
            port.to_string(),
            dir.display().to_string(),
            "none".into(),
            "--items".into(),
            items.to_string(),
        ],
        &[],
    )
}

/// Bench values the OPC UA server has written so far.
fn written(s: &mut LinePeer) -> Result<f64> {
    Ok(s.query("count")?.1.parse()?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let rate = env("MQTT_RATE", 10_000);
    let items = env("OPCUA_ITEMS", 1000);
    let secs = env("SECONDS", 20);
    let topics = 100;
    let pki = TestPki::new(&["bench"])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let sim = fast_sim().await?;
    let opc_port = free_port();
    let mut opc = opc_server(opc_port, &work.path().join("opc"), items)?;
    println!("| run | offered | logged/s | ratio | agent CPU per 1,000 readings | VmRSS / VmHWM |");
    println!("|---|---|---|---|---|---|");

    // 1. MQTT only
    let d1 = work.path().join("mqtt");
    std::fs::create_dir_all(&d1)?;
    let port = free_port();
    let (assets, dev) = mqtt_device(topics);
    let a = start_agent(
        &d1,
        &format!(
            "{}assets:\n{assets}devices:\n{dev}",
            head(&pki, "bench", he.grpc_addr, &d1, port)
        ),
        port,
    )?;
    eventually("the MQTT agent up", Duration::from_secs(30), || async {
        Ok(logged(a.status).await.ok())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let raw = Arc::new(AtomicU64::new(0));
    let rawt = raw_subscriber(raw.clone());
    let stop = Arc::new(AtomicU64::new(0));
    let pubt = publisher(rate, topics, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r0 = raw.load(Ordering::Relaxed);
    let t = Instant::now();
    let (per_s, cpu, rss, hwm) = measure(&a, secs).await?;
    let raw_rate = (raw.load(Ordering::Relaxed) - r0) as f64 / t.elapsed().as_secs_f64();
    stop.store(1, Ordering::Relaxed);
    let _ = pubt.await;
    rawt.abort();
    println!(
        "| MQTT, {topics} topics, QoS 0 | {rate} msg/s (broker delivered {raw_rate:.0}/s to a bare subscriber) | {per_s:.0} | {:.3} of the broker's | {cpu:.1} ms | {rss:.1} / {hwm:.1} MiB |",
        per_s / raw_rate.max(1.0)
    );
    drop(a);

    // 2. OPC UA only
    let d2 = work.path().join("opcua");
    std::fs::create_dir_all(&d2)?;
    let port = free_port();
    let (assets, dev) = opcua_device(opc_port, items);
    let a = start_agent(
        &d2,
        &format!(
            "{}assets:\n{assets}devices:\n{dev}",
            head(&pki, "bench", he.grpc_addr, &d2, port)
        ),
        port,
    )?;
    eventually("the OPC UA agent up", Duration::from_secs(30), || async {
        Ok(logged(a.status).await.ok())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (w0, t) = (written(&mut opc)?, Instant::now());
    let (per_s, cpu, rss, hwm) = measure(&a, secs).await?;
    let server_rate = (written(&mut opc)? - w0) / t.elapsed().as_secs_f64();
    println!(
        "| OPC UA, {items} monitored items, each changing once a second | the server wrote {server_rate:.0} values/s | {per_s:.0} | {:.3} of the server's | {cpu:.1} ms | {rss:.1} / {hwm:.1} MiB |",
        per_s / server_rate.max(1.0)
    );
    drop(a);

    // 3. Modbus + OPC UA + MQTT at once
    let d3 = work.path().join("all");
    std::fs::create_dir_all(&d3)?;
    let port = free_port();
    let frag = atg_sim::agent_yaml_fragment(sim.addr, &sim.tanks(), 1000);
    let (ma, md) = mqtt_device(topics);
    let (oa, od) = opcua_device(opc_port, items);
    let (assets, devices) = frag.split_once("devices:\n").context("fragment")?;
    let yaml = format!(
        "{}{assets}{ma}{oa}devices:\n{devices}{md}{od}",
        head(&pki, "bench", he.grpc_addr, &d3, port)
    );
    let a = start_agent(&d3, &yaml, port)?;
    eventually("the full agent up", Duration::from_secs(30), || async {
        Ok(logged(a.status).await.ok())
    })
    .await?;
    let stop = Arc::new(AtomicU64::new(0));
    let pubt = publisher(rate, topics, stop.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (per_s, cpu, rss, hwm) = measure(&a, secs).await?;
    stop.store(1, Ordering::Relaxed);
    let _ = pubt.await;
    println!(
        "| Modbus (4 tanks, 1 s) + OPC UA ({items} items) + MQTT ({rate} msg/s) | {} /s | {per_s:.0} | — | {cpu:.1} ms | {rss:.1} / {hwm:.1} MiB |",
        rate + items + 40
    );
    drop(a);
    he.stop().await;
    Ok(())
}
