//! The agent's OPC UA server under abuse (issue 29, items 1, 2 and 4): a
//! flood of idle secure channels under the systemd default limit of 1,024
//! files, sessions created and never activated, and a burst of logins. In
//! each, a legitimate client still gets in, the process stays small, and
//! device polling goes on (measured against a reference poller in the same
//! run).
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::ScadaClient as Client;
use e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Poll interval of the tank gauge (ms).
const POLL_MS: u64 = 200;

/// An OPC UA `Hello` for `url` (OPC 10000-6, 7.1.2.3).
fn hello(url: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"HELF");
    b.extend_from_slice(&0u32.to_le_bytes()); // size, set below
    for v in [0u32, 65_536, 65_536, 0, 0] {
        // protocol version, receive and send buffer, max message, max chunks
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(url.len() as i32).to_le_bytes());
    b.extend_from_slice(url.as_bytes());
    let n = b.len() as u32;
    b[4..8].copy_from_slice(&n.to_le_bytes());
    b
}

/// An `OpenSecureChannel` request with security policy None.
fn open_none() -> Vec<u8> {
    let policy = b"http://opcfoundation.org/UA/SecurityPolicy#None";
    let mut b = Vec::new();
    b.extend_from_slice(b"OPNF");
    b.extend_from_slice(&0u32.to_le_bytes()); // size
    b.extend_from_slice(&0u32.to_le_bytes()); // secure channel id
    b.extend_from_slice(&(policy.len() as i32).to_le_bytes());
    b.extend_from_slice(policy);
    b.extend_from_slice(&(-1i32).to_le_bytes()); // sender certificate: null
    b.extend_from_slice(&(-1i32).to_le_bytes()); // receiver thumbprint: null
    b.extend_from_slice(&1u32.to_le_bytes()); // sequence number
    b.extend_from_slice(&1u32.to_le_bytes()); // request id
    // OpenSecureChannelRequest_Encoding_DefaultBinary (446), four-byte node id
    b.extend_from_slice(&[0x01, 0x00]);
    b.extend_from_slice(&446u16.to_le_bytes());
    // request header
    b.extend_from_slice(&[0x00, 0x00]); // authentication token: null node id
    b.extend_from_slice(&0i64.to_le_bytes()); // timestamp
    b.extend_from_slice(&1u32.to_le_bytes()); // request handle
    b.extend_from_slice(&0u32.to_le_bytes()); // return diagnostics
    b.extend_from_slice(&(-1i32).to_le_bytes()); // audit entry id: null
    b.extend_from_slice(&10_000u32.to_le_bytes()); // timeout hint
    b.extend_from_slice(&[0x00, 0x00, 0x00]); // additional header: none
    b.extend_from_slice(&0u32.to_le_bytes()); // client protocol version
    b.extend_from_slice(&0u32.to_le_bytes()); // request type: issue
    b.extend_from_slice(&1u32.to_le_bytes()); // security mode: None
    b.extend_from_slice(&0i32.to_le_bytes()); // client nonce: empty
    b.extend_from_slice(&3_600_000u32.to_le_bytes()); // requested lifetime: 1 h
    let n = b.len() as u32;
    b[4..8].copy_from_slice(&n.to_le_bytes());
    b
}

/// Opens a connection, says Hello, opens a None channel and returns the
/// socket (held open, idle) and whether the server answered the channel.
async fn idle_channel(addr: std::net::SocketAddr, url: &str) -> Result<(TcpStream, bool)> {
    let mut s = TcpStream::connect(addr).await?;
    // the server may end the connection (a newer one evicted it): that is
    // an answer, not a failure of the test
    if s.write_all(&hello(url)).await.is_err() || s.write_all(&open_none()).await.is_err() {
        return Ok((s, false));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let opened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(3).any(|w| w == b"OPN") {
                return Ok(true);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))
    .unwrap_or(false);
    Ok((s, opened))
}

/// The agent's YAML: the simulator's tanks polled every [`POLL_MS`], no
/// headend (polling does not need one), the OPC UA server on `port`.
fn yaml(pki: &TestPki, work: &Path, sim: &atg_sim::Simulator, port: u16) -> Result<String> {
    let head = agent_head(
        pki,
        "site-x",
        "127.0.0.1:9".parse()?,
        &work.join("log"),
        "127.0.0.1:0",
    );
    let alice = agent_opcua_server::auth::hash("alice-password").map_err(anyhow::Error::msg)?;
    Ok(format!(
        "{head}{}opcua_server:\n  listen: \"127.0.0.1:{port}\"\n  host_name: 127.0.0.1\n  security: [basic256sha256_sign_and_encrypt, none]\n  pki_dir: {}\n  users:\n    - {{ name: alice, password_hash: '{alice}', role: read_write }}\n",
        atg_sim::agent_yaml_fragment(sim.addr, &sim.tanks(), POLL_MS),
        work.join("opcua-pki").display()
    ))
}

/// The agent binary under the systemd default open-files limit (soft and
/// hard 1,024: it cannot raise it), its log (default level) in `work/agent.log`.
fn spawn_agent(work: &Path, yaml: &str) -> Result<Child> {
    let config = work.join("site.yaml");
    std::fs::write(&config, yaml)?;
    let log = std::fs::File::create(work.join("agent.log"))?;
    Ok(Command::new("prlimit")
        .arg("--nofile=1024:1024")
        .arg(bin("edge-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

fn kill(mut c: Child) -> Result<()> {
    c.kill()?;
    c.wait()?;
    Ok(())
}

/// `VmRSS` and `VmHWM` (peak) of a process, MiB.
fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<f64> {
        let line = s
            .lines()
            .find(|l| l.starts_with(key))
            .context("no such line")?;
        let v: f64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?;
        Ok(v / 1024.0)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// CPU seconds a process has used (user + system).
fn cpu_s(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // after the command name in parentheses: state is field 3, utime 14, stime 15
    let rest = s.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// The RSS the agent must stay under: 80 MiB for the release build (the
/// issue's bound; BENCHMARKS); the debug build starts at ~75 MiB, so for it
/// the same headroom over where it started (one argon2 block is 19 MiB).
fn rss_bound(base: f64) -> f64 {
    if cfg!(debug_assertions) {
        base + 40.0
    } else {
        80.0
    }
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The longest pause between two requests the simulator saw after `from`.
fn longest_pause(times: &[Instant], from: Instant) -> Duration {
    let t: Vec<Instant> = times.iter().copied().filter(|t| *t >= from).collect();
    t.windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

/// A reference poller in the test process: reads the simulator every
/// [`POLL_MS`] and notes when each read was sent.
fn reference_poller(
    addr: std::net::SocketAddr,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
) {
    use tokio_modbus::prelude::*;
    let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let t = times.clone();
    let task = tokio::spawn(async move {
        let Ok(mut ctx) = tcp::connect(addr).await else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(POLL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            t.lock().unwrap().push(Instant::now());
            if ctx.read_holding_registers(0, 10).await.is_err() {
                return;
            }
        }
    });
    (task, times)
}

async fn wait_listening(port: u16) -> Result<()> {
    eventually(
        "the OPC UA server listening",
        Duration::from_secs(30),
        || async move {
            Ok(TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ()))
        },
    )
    .await
}

/// Issue 29, item 1 and the acceptance: 3,000 connections that open a
/// secure channel and then idle (2,000 and more held at once) under a hard
/// limit of 1,024 files. Before the fix the accept loop spun on EMFILE (1 GB
/// of log in 25 s, a core busy), a SCADA client timed out and device
/// reconnects failed with "Too many open files".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_idle_channels_neither_exhaust_the_agents_files_nor_keep_a_scada_client_out()
-> Result<()> {
    let pki = TestPki::new(&["site-x"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let reference_sim = fast_sim().await?;
    let port = free_port();
    let agent = spawn_agent(work.path(), &yaml(&pki, work.path(), &sim, port)?)?;
    let pid = agent.id();
    wait_listening(port).await?;
    let mut client = Client::start(&work.path().join("client-pki"))?;
    let url = format!("opc.tcp://127.0.0.1:{port}/");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    // the agent is polling before the flood starts
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (poller, reference) = reference_poller(reference_sim.addr);

    let (base, _) = rss_mib(pid)?;
    let start = Instant::now();
    let cpu_before = cpu_s(pid)?;
    let mut held = Vec::new();
    let mut opened = 0;
    for batch in 0..30 {
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move { idle_channel(addr, &url).await }));
        }
        for t in tasks {
            match t.await? {
                Ok((s, ok)) => {
                    opened += usize::from(ok);
                    held.push(s);
                }
                Err(e) => bail!("connection in batch {batch}: {e}"),
            }
        }
    }
    let flood = start.elapsed();
    ensure!(held.len() == 3_000);
    ensure!(
        opened >= 64,
        "the server answered {opened} channels: the frames are not what a server opens"
    );
    let flood_cpu = cpu_s(pid)? - cpu_before;
    // held idle: an accept loop spinning on EMFILE would burn a core here
    let idle_from = cpu_s(pid)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu = cpu_s(pid)? - idle_from;
    let fds = open_fds(pid)?;
    // a legitimate client, with 3,000 idle connections held
    let t = Instant::now();
    client.ok(&format!("connect {url} none - -"))?;
    let connect = t.elapsed();
    client.ok("disconnect")?;
    let (rss, peak) = rss_mib(pid)?;
    poller.abort();
    let agent_pause = longest_pause(&sim.request_times(), start);
    let reference_pause = longest_pause(&reference.lock().unwrap(), start);
    let log_bytes = std::fs::metadata(work.path().join("agent.log"))?.len();
    println!(
        "3,000 idle channels in {flood:.1?} ({opened} answered): agent CPU {flood_cpu:.2} s; then held idle 3 s: agent CPU {idle_cpu:.2} s, fds {fds}, RSS {rss:.1} MiB (peak {peak:.1}), log {log_bytes} bytes; a client connected in {connect:.0?}; longest polling pause {agent_pause:.0?} (reference poller {reference_pause:.0?})"
    );
    ensure!(
        connect < Duration::from_secs(1),
        "the client took {connect:?}"
    );
    ensure!(fds < 300, "the agent holds {fds} files");
    ensure!(
        peak < rss_bound(base),
        "the agent's RSS peaked at {peak:.1} MiB (it started at {base:.1})"
    );
    ensure!(
        log_bytes < 4 * 1024 * 1024,
        "the agent logged {log_bytes} bytes"
    );
    ensure!(
        idle_cpu < 0.3,
        "the agent used {idle_cpu:.2} s of CPU in 3 s with the connections idle: spinning"
    );
    let bound =
        Duration::from_millis(2 * POLL_MS).max(reference_pause + Duration::from_millis(POLL_MS));
    ensure!(
        agent_pause <= bound,
        "device polling paused {agent_pause:?} (reference poller {reference_pause:?})"
    );
    drop(held);
    kill(agent)?;
    Ok(())
}

/// Issue 29, item 2: sessions created and never activated took every
/// slot: a real client got `BadTooManySessions` for about a minute. Now the
/// oldest never-activated session makes room; activated ones still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_never_activated_do_not_lock_a_client_out() -> Result<()> {
    let pki = TestPki::new(&["site-x"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let port = free_port();
    let agent = edge_agent::start(agent_config(
        work.path(),
        &yaml(&pki, work.path(), &sim, port)?,
    )?)?;
    let url = format!("opc.tcp://127.0.0.1:{port}/");
    let mut squatter = Client::start(&work.path().join("squatter-pki"))?;
    // max_sessions is 10 (the default): take them all, twice over
    ensure!(squatter.ok(&format!("create_sessions {url} 20"))? == "20");
    let mut client = Client::start(&work.path().join("client-pki"))?;
    let t = Instant::now();
    client.ok(&format!("connect {url} none - -"))?;
    println!(
        "a client logged in past 20 never-activated sessions in {:?}",
        t.elapsed()
    );
    // activated sessions keep their slots: 9 more fill the server
    let mut activated = Client::start(&work.path().join("activated-pki"))?;
    ensure!(activated.ok(&format!("create_sessions {url} 9 activate"))? == "9");
    let refused = squatter.ask(&format!("create_sessions {url} 1 activate"))?;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("BadTooManySessions")),
        "an 11th activated session: {refused:?}"
    );
    client.ok("disconnect")?;
    squatter.ok("hold_close")?;
    activated.ok("hold_close")?;
    agent.stop().await?;
    Ok(())
}

/// Issue 29, item 4 and the acceptance: 300 logins (10 at once). Before
/// the fix each argon2 verification left 19 MiB resident (38 → 669 MiB)
/// and ten at once paused device polling for 1.8–3.7 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_logins_keep_the_agent_small_and_its_polling_on_time() -> Result<()> {
    let pki = TestPki::new(&["site-x"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let reference_sim = fast_sim().await?;
    let port = free_port();
    let agent = spawn_agent(work.path(), &yaml(&pki, work.path(), &sim, port)?)?;
    let pid = agent.id();
    wait_listening(port).await?;
    let url = format!("opc.tcp://127.0.0.1:{port}/");
    let mut client = Client::start(&work.path().join("client-pki"))?;
    // trust the client's certificate
    let trusted = work.path().join("opcua-pki/trusted");
    std::fs::create_dir_all(&trusted)?;
    std::fs::copy(
        work.path().join("client-pki/client_cert.der"),
        trusted.join("scada.der"),
    )?;
    client.ok(&format!(
        "connect {url} sign_and_encrypt alice alice-password"
    ))?;
    client.ok("disconnect")?;
    let (base, _) = rss_mib(pid)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (poller, reference) = reference_poller(reference_sim.addr);
    let start = Instant::now();
    let out = client.ok(&format!(
        "logins {url} 300 10 sign_and_encrypt alice alice-password"
    ))?;
    let took = start.elapsed();
    poller.abort();
    let r: serde_json::Value = serde_json::from_str(&out)?;
    let (rss, peak) = rss_mib(pid)?;
    let agent_pause = longest_pause(&sim.request_times(), start);
    let reference_pause = longest_pause(&reference.lock().unwrap(), start);
    println!(
        "300 logins (10 at once) in {took:.1?}: {} ok; agent RSS {base:.1} -> {rss:.1} MiB (peak {peak:.1}); longest polling pause {agent_pause:.0?} (reference poller {reference_pause:.0?})",
        r["ok"]
    );
    ensure!(r["ok"] == 300, "logins failed: {}", r["failed"]);
    ensure!(
        peak < rss_bound(base),
        "the agent's RSS peaked at {peak:.1} MiB (it started at {base:.1})"
    );
    let bound =
        Duration::from_millis(2 * POLL_MS).max(reference_pause + Duration::from_millis(POLL_MS));
    ensure!(
        agent_pause <= bound,
        "device polling paused {agent_pause:?} (reference poller {reference_pause:?})"
    );
    kill(agent)?;
    Ok(())
}
