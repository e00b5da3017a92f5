//! Sessions at scale: N simulated agents in this process against a
//! headend process (real mTLS with one certificate per site, the real
//! proto, one batch every 10 s per agent), then a headend restart.
//!
//! ```text
//! cargo build --release -p headend --bin headend
//! cargo run --release -p e2e --example sessions -- 1000 [DATABASE_URL]
//! ```
//!
//! Measures, on the headend process (from /proc):
//! * the time until all N sessions have a batch acknowledged (cold start);
//! * its resident memory idle and with N sessions: memory per session;
//! * its CPU over 30 s of steady traffic, as a share of one core;
//! * after a SIGKILL and a restart on the same database, the time until all
//!   N are back (the reconnect storm), and how REST answered meanwhile
//!   (`GET /api/v1/sites/{site}/assets` every 100 ms: latencies and failures).
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tankwatch_proto::v1;

const BATCH_EVERY: Duration = Duration::from_secs(10);

struct Headend {
    child: std::process::Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

fn start_headend(
    pki: &Path,
    url: &str,
    grpc: SocketAddr,
    http: SocketAddr,
    n: usize,
) -> Result<Headend> {
    let child = std::process::Command::new(e2e::bin("headend"))
        .args(["--grpc-listen", &grpc.to_string()])
        .args(["--http-listen", &http.to_string()])
        .args(["--enroll-listen", "off"])
        .args(["--database-url", url])
        .arg("--pki-dir")
        .arg(pki)
        .args(["--max-conns", &(n + n / 10 + 100).to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the headend (cargo build --release -p headend --bin headend)")?;
    Ok(Headend { child, grpc, http })
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

/// CPU time of a process (user + system), seconds.
fn cpu_s(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = s.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 of stat; `after` starts at field 3
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn batch(seq: u64, t: i64) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Batch(v1::TelemetryBatch {
            log_id: 42,
            first_seq: seq,
            last_seq: seq,
            readings: vec![v1::Reading {
                seq,
                asset_id: "tank-1".into(),
                field: "volume".into(),
                value: 1000.0 + seq as f64,
                unit: "L".into(),
                quality: v1::Quality::Good as i32,
                source_ts_ms: t,
                received_ts_ms: t,
                source: "sim://load".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

/// Sessions with a batch acknowledged now.
#[derive(Default)]
struct Up {
    now: AtomicUsize,
}

/// One simulated agent: a session, a batch every 10 s (the first at once),
/// reconnecting with jittered backoff when the session ends.
async fn agent(addr: SocketAddr, tls: rustls::ClientConfig, site: String, up: Arc<Up>) {
    let mut seq = 0u64;
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut counted = false;
        let r = session(addr, tls.clone(), &site, &mut seq, &up, &mut counted).await;
        if counted {
            up.now.fetch_sub(1, Ordering::SeqCst);
            backoff = Duration::from_millis(500);
        }
        let _ = r;
        let jitter = backoff.mul_f64(0.5 + fastrand::f64());
        tokio::time::sleep(jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(8));
    }
}

async fn session(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    site: &str,
    seq: &mut u64,
    up: &Up,
    counted: &mut bool,
) -> Result<()> {
    let (tx, mut inbound) = e2e::open_session(addr, tls, site).await?;
    let mut tick = tokio::time::interval(BATCH_EVERY);
    loop {
        tokio::select! {
            m = inbound.message() => {
                let Some(m) = m? else { bail!("stream ended") };
                if matches!(m.msg, Some(v1::headend_message::Msg::Ack(_))) && !*counted {
                    *counted = true;
                    up.now.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ = tick.tick() => {
                *seq += 1;
                tx.send(batch(*seq, headend::wallclock::now_ms())).await?;
            }
        }
    }
}

/// Reads REST every 100 ms from its own OS thread and runtime (the load
/// generator's runtime is saturated by N agents; a probe on it would time
/// its own queueing, not the headend's answer) until `stop` is set.
/// Returns the latencies (ms) and the failures.
fn probe(
    http: SocketAddr,
    site: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Result<(Vec<f64>, usize)>> {
    let url = format!("http://{http}/api/v1/sites/{site}/assets");
    let (ak, av) = e2e::auth(http);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?;
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            while !stop.load(Ordering::SeqCst) {
                let q = Instant::now();
                match client.get(&url).header(ak, &av).send().await {
                    Ok(r) if r.status().is_success() => {
                        lat.push(q.elapsed().as_secs_f64() * 1000.0)
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok((lat, failed))
        })
    })
}

/// Waits until `up` reaches `n`; meanwhile REST is read every 100 ms
/// ([`probe`]). Returns (seconds, REST latencies ms, REST failures).
async fn all_up(
    up: &Up,
    n: usize,
    http: SocketAddr,
    site: &str,
    limit: Duration,
) -> Result<(f64, Vec<f64>, usize)> {
    let t0 = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rest = probe(http, site, stop.clone());
    let mut last_print = Instant::now();
    while up.now.load(Ordering::SeqCst) < n {
        if t0.elapsed() > limit {
            stop.store(true, Ordering::SeqCst);
            bail!(
                "only {} of {n} sessions up after {limit:?}",
                up.now.load(Ordering::SeqCst)
            );
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {:>5.1} s: {} sessions up",
                t0.elapsed().as_secs_f64(),
                up.now.load(Ordering::SeqCst)
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let (lat, failed) = rest
        .join()
        .map_err(|_| anyhow::anyhow!("the REST probe panicked"))??;
    Ok((took, lat, failed))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let url_arg = args.next();
    tankwatch_logging::raise_fd_limit();
    let work = tempfile::tempdir()?;
    let sites: Vec<String> = (0..n).map(|i| format!("load-{i:05}")).collect();
    let t = Instant::now();
    let refs: Vec<&str> = sites.iter().map(String::as_str).collect();
    tankwatch_pki::bootstrap(work.path(), &refs, 30)?;
    eprintln!("PKI for {n} sites: {:.1} s", t.elapsed().as_secs_f64());
    let url = url_arg.unwrap_or_else(|| e2e::sqlite_url(work.path()));
    let grpc: SocketAddr = format!("127.0.0.1:{}", e2e::free_port()).parse()?;
    let http: SocketAddr = format!("127.0.0.1:{}", e2e::free_port()).parse()?;
    let mut he = start_headend(work.path(), &url, grpc, http, n)?;
    e2e::eventually("the headend", Duration::from_secs(30), || async {
        Ok(e2e::get_text(http, "/ready").await.ok().map(|_| ()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = he.child.id();
    let idle = rss(pid)?;
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());

    let up = Arc::new(Up::default());
    let t = Instant::now();
    for s in &sites {
        let tls = tankwatch_tls::client_config(&e2e::TestPki::files_in(work.path(), s))?;
        tokio::spawn(agent(he.grpc, tls, s.clone(), up.clone()));
    }
    eprintln!("{n} agents spawned in {:.1} s", t.elapsed().as_secs_f64());
    let (cold, _, _) = all_up(&up, n, he.http, &sites[0], Duration::from_secs(600)).await?;
    eprintln!("cold start: all {n} sessions up in {cold:.1} s");
    // steady state: memory and CPU over 30 s (3 batches per agent)
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, w0) = (cpu_s(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let cpu = (cpu_s(pid)? - c0) / w0.elapsed().as_secs_f64();
    let full = rss(pid)?;
    let per = (full.saturating_sub(idle)) as f64 / n as f64;

    // restart: SIGKILL, start again on the same database and ports
    he.child.kill()?;
    he.child.wait()?;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    he = start_headend(work.path(), &url, grpc, http, n)?;
    e2e::eventually("the headend again", Duration::from_secs(30), || async {
        Ok(e2e::get_text(http, "/health").await.ok().map(|_| ()))
    })
    .await?;
    let (_, mut lat, failed) = all_up(&up, n, he.http, &sites[0], Duration::from_secs(600)).await?;
    let storm = killed.elapsed().as_secs_f64();
    let pid = he.child.id();
    let after = rss(pid)?;
    he.child.kill()?;
    he.child.wait()?;

    println!(
        "sessions at scale, N = {n} ({cpus} cores; database {})",
        if url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    println!("  cold start, all sessions up      {cold:>8.1} s");
    println!(
        "  headend RSS idle                 {:>8.1} MiB",
        idle as f64 / 1048576.0
    );
    println!(
        "  headend RSS with N sessions      {:>8.1} MiB",
        full as f64 / 1048576.0
    );
    println!(
        "  memory per session               {:>8.1} KiB   (goal: 10,000 in 2 GiB = 209.7 KiB)",
        per / 1024.0
    );
    println!(
        "  headend CPU, steady              {:>8.1} % of one core ({:.1} % of the machine), {:.0} batches/s",
        cpu * 100.0,
        cpu * 100.0 / cpus as f64,
        n as f64 / BATCH_EVERY.as_secs_f64()
    );
    println!("  restart storm, all back after    {storm:>8.1} s   (goal < 60 s; from the kill)");
    println!(
        "  headend RSS after the storm      {:>8.1} MiB",
        after as f64 / 1048576.0
    );
    println!(
        "  REST during the storm            {} answers, {failed} failed, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    Ok(())
}
