//! OPC UA server benchmark (docs/BENCHMARKS.md): the release agent binary
//! polls `POINTS` holding registers (default 1,000) of an in-process Modbus
//! device every 100 ms and serves them on its OPC UA server
//! (Basic256Sha256 SignAndEncrypt); one asyncua client
//! (tests/peers/scada_client.py) subscribes to every variable (publishing
//! interval 100 ms). Every 50-150 ms (random, so that changes fall at every
//! phase of the poll) the bench changes `CHANGES` registers
//! (default 50) to new unique values and notes when; the client notes
//! when each notification arrives. Latency = arrival - change, over
//! `SECONDS` (default 30). The limit it is measured against: the poll
//! interval plus the publishing interval (a value changed just after a
//! poll waits a whole poll, then up to a publishing interval).
//!
//! Then the agent's resident memory with the server on (client connected)
//! and off (no `opcua_server:` section), same device and points.
//!
//! `cargo build --release -p edge-agent && cargo run --release -p e2e --example opcua_server_bench`
use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::*;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const POLL_MS: u64 = 100;
const PUBLISH_MS: u64 = 100;

#[derive(Clone)]
struct Regs(Arc<Mutex<Vec<u16>>>);

impl tokio_modbus::server::Service for Regs {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::future::ready(match req {
            Request::ReadHoldingRegisters(a, n) => {
                let (a, n) = (usize::from(a), usize::from(n));
                match r.get(a..a + n) {
                    Some(v) => Ok(Response::ReadHoldingRegisters(v.to_vec())),
                    None => Err(ExceptionCode::IllegalDataAddress),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

async fn modbus_device(regs: Regs) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let server = Server::new(listener);
        let new_service = move |_| Ok(Some(regs.clone()));
        let on_connected = |stream, addr| {
            let r = accept_tcp_connection(stream, addr, &new_service);
            async move { r }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    Ok(addr)
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path, yaml: &str) -> Result<Agent> {
    Ok(Agent(spawn_release_agent(dir, yaml)?))
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kib / 1024.0)
}

fn yaml(
    dir: &Path,
    pki: &TestPki,
    device: std::net::SocketAddr,
    points: u64,
    server: Option<(u16, &str)>,
) -> String {
    let f = pki.agent_files("site-b");
    let mut y = format!(
        "site_id: site-b\nheadend: {{ address: \"127.0.0.1:9\", server_name: localhost }}\ntls: {{ cert: {}, key: {}, ca: {} }}\nlog: {{ dir: {} }}\nstatus: {{ listen: null }}\nassets:\n",
        f.cert.display(),
        f.key.display(),
        f.ca.display(),
        dir.join("log").display()
    );
    let assets = points.div_ceil(100);
    for a in 0..assets {
        y += &format!("  - {{ id: ctl-{a}, kind: controller }}\n");
    }
    y += &format!(
        "devices:\n  - modbus:\n      name: plc\n      address: \"{device}\"\n      poll_interval_ms: {POLL_MS}\n      timeout_ms: 1000\n      points:\n"
    );
    for i in 0..points {
        y += &format!(
            "        - {{ asset: ctl-{}, field: p{:03}, register: {i}, type: u16 }}\n",
            i / 100,
            i % 100
        );
    }
    if let Some((port, hash)) = server {
        y += &format!(
            "opcua_server:\n  listen: \"127.0.0.1:{port}\"\n  host_name: 127.0.0.1\n  pki_dir: {}\n  users: [{{ name: scada, password_hash: '{hash}', role: read_only }}]\n",
            dir.join("opcua-pki").display()
        );
    }
    y
}

/// Matches the client's notifications since the last call with the changes.
fn drain(
    client: &mut LinePeer,
    changed: &mut HashMap<(usize, u16), i64>,
    lat: &mut Vec<f64>,
) -> Result<()> {
    let notes: serde_json::Value =
        serde_json::from_str(&client.ask("notes")?.map_err(anyhow::Error::msg)?)?;
    for n in notes.as_array().into_iter().flatten() {
        let node = n["node"].as_str().unwrap_or_default();
        let Some(tail) = node.rsplit_once("/P").map(|x| x.1) else {
            continue;
        };
        let asset: usize = node
            .split("ctl-")
            .nth(1)
            .and_then(|x| x.split('/').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        let i = asset * 100 + tail.parse::<usize>().unwrap_or(0);
        let v = n["value"].as_f64().unwrap_or(-1.0) as u16;
        if let (Some(at), Some(recv)) = (changed.remove(&(i, v)), n["recv_ms"].as_i64()) {
            lat.push((recv - at) as f64);
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let points = env("POINTS", 1000);
    let changes = env("CHANGES", 50);
    let secs = env("SECONDS", 30);
    let pki = TestPki::new(&["site-b"])?;
    let work = tempfile::tempdir()?;
    let regs = Regs(Arc::new(Mutex::new(vec![0u16; points as usize])));
    let device = modbus_device(regs.clone()).await?;
    let hash = agent_opcua_server::auth::hash("bench-password").map_err(anyhow::Error::msg)?;
    let port = free_port();

    // the server on
    let on_dir = work.path().join("on");
    std::fs::create_dir_all(&on_dir)?;
    let agent = start_agent(
        &on_dir,
        &yaml(&on_dir, &pki, device, points, Some((port, &hash))),
    )?;
    let url = format!("opc.tcp://127.0.0.1:{port}/");
    let mut client = LinePeer::start(
        "scada_client.py",
        &[work.path().join("client").display().to_string()],
        &[],
    )?;
    // first contact: the client's certificate lands in rejected/; trust it
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = client.ask(&format!(
            "connect {url} sign_and_encrypt scada bench-password"
        ))?;
        let rejected = on_dir.join("opcua-pki/rejected");
        if let Some(e) = std::fs::read_dir(&rejected).ok().and_then(|mut d| d.next()) {
            let p = e?.path();
            std::fs::rename(
                &p,
                on_dir
                    .join("opcua-pki/trusted")
                    .join(p.file_name().context("name")?),
            )?;
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent's OPC UA server did not come up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client
        .ask(&format!(
            "connect {url} sign_and_encrypt scada bench-password"
        ))?
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let ns = client
        .ask("nsidx urn:tankwatch:agent:site-b")?
        .map_err(anyhow::Error::msg)?;
    let ids: Vec<String> = (0..points)
        .map(|i| {
            format!(
                "ns={ns};s=Site/site-b/Controllers/ctl-{}/P{:03}",
                i / 100,
                i % 100
            )
        })
        .collect();
    for chunk in ids.chunks(250) {
        client
            .ask(&format!("subscribe_many {}", chunk.join(",")))?
            .map_err(|e| anyhow::anyhow!("subscribe: {e}"))?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.ask("notes")?.map_err(anyhow::Error::msg)?; // initial values
    // change CHANGES registers every 100 ms; remember when each (register, value) changed
    let mut changed: HashMap<(usize, u16), i64> = HashMap::new();
    let mut next = 1u16;
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        // 50-150 ms apart: changes fall at every phase of the agent's poll
        tokio::time::sleep(Duration::from_millis(50 + fastrand::u64(..100))).await;
        {
            let mut r = regs.0.lock().unwrap_or_else(|p| p.into_inner());
            let now = adapter_api::now_ms();
            for k in 0..changes {
                let i = ((round * changes + k) % points) as usize;
                next = next.wrapping_add(1).max(1);
                r[i] = next;
                changed.insert((i, next), now);
            }
        }
        round += 1;
        if round.is_multiple_of(10) {
            drain(&mut client, &mut changed, &mut lat)?;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    drain(&mut client, &mut changed, &mut lat)?;
    let rss_on = rss_mib(agent.0.id())?;
    let expected = round * changes;
    lat.sort_by(f64::total_cmp);
    let missing = changed.len();
    let (p50, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    drop(client);
    drop(agent);

    // the server off: same device and points
    let off_dir = work.path().join("off");
    std::fs::create_dir_all(&off_dir)?;
    let agent = start_agent(&off_dir, &yaml(&off_dir, &pki, device, points, None))?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss_off = rss_mib(agent.0.id())?;
    drop(agent);

    let limit = (POLL_MS + PUBLISH_MS) as f64;
    println!(
        "variables: {points}; changes: {changes} every 50-150 ms for {secs} s ({expected} changes; {} measured, {missing} never notified)",
        lat.len()
    );
    println!(
        "device change -> client notification: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms (goal p99 < 250 ms)"
    );
    println!(
        "limit (poll {POLL_MS} ms + publishing {PUBLISH_MS} ms) {limit:.0} ms: p99 = {:.2} x the limit",
        p99 / limit
    );
    println!(
        "agent RSS: server on {rss_on:.1} MiB (1 client, {points} monitored items), off {rss_off:.1} MiB: +{:.1} MiB",
        rss_on - rss_off
    );
    Ok(())
}
