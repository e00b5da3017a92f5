//! The tank list and the risk list at fleet size: 50 sites × 6 tanks with
//! 90 days of 1-minute volume readings (38.9 million rows, ingested
//! through the headend's own store), on SQLite and PostgreSQL. Measures
//! the inventory job's evaluation of all 300 tanks, then p50/p99 of
//! `GET /api/v1/risk` and `GET /api/v1/tanks` over HTTP (sequential, with
//! an API key), beside `GET /health` (no SQL: the floor of a request).
//! Goal: p99 < 100 ms, from maintained state, never a scan of readings.
//! Then the operator console's pages on the same fleet, logged in with a
//! session cookie: p50/p99 server time and the bytes each transfers
//! gzip-compressed (issue 34: p99 < 50 ms, a first load under 300 KB, a
//! later page under 60 KB); and, with a site holding a year of readings,
//! how long its 1-year rollup chart takes to render in Chromium (< 200
//! ms; `tests/peers/console_timing.py`, needs `scripts/peers.sh` run).
//!
//!   cargo run --release -p e2e --example risk_bench [sqlite|postgres] [DAYS]

use std::time::{Duration, Instant};

use anyhow::Result;
use e2e::*;
use tankwatch_proto::v1;

const SITES: usize = 50;
const TANKS: usize = 6;
const MIN: i64 = 60_000;

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

async fn timed(http: std::net::SocketAddr, path: &str, n: usize) -> Result<(f64, f64)> {
    let client = reqwest::Client::new();
    let (k, v) = auth(http);
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .get(format!("http://{http}{path}"))
            .header(k, &v)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
        let _ = r.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((percentile(&mut ms, 0.5), percentile(&mut ms, 0.99)))
}

/// A console session's cookies for a new admin user.
async fn console_cookies(http: std::net::SocketAddr) -> Result<String> {
    let pw = "a long enough password";
    let (st, v) = as_bearer(
        http,
        &token_of(http),
        "POST",
        "/api/v1/users",
        Some(&serde_json::json!({"user": "bench", "role": "admin", "password": pw})),
    )
    .await?;
    anyhow::ensure!(st == 201, "user: {st} {v}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = client
        .post(format!("http://{http}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", format!("http://{http}"))
        .body(format!(
            "user=bench&password={}&next=%2F",
            pw.replace(' ', "+")
        ))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 303, "login: {}", r.status());
    Ok(r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok()?.split(';').next().map(str::to_string))
        .collect::<Vec<_>>()
        .join("; "))
}

/// p50 and p99 (ms) of `n` sequential console page loads, and its bytes.
async fn timed_page(
    http: std::net::SocketAddr,
    cookies: &str,
    path: &str,
    n: usize,
) -> Result<(f64, f64, usize)> {
    let client = reqwest::Client::new();
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .get(format!("http://{http}{path}"))
            .header("cookie", cookies)
            .header("accept-encoding", "gzip")
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
        // as transferred: this client does not decompress
        bytes = r.bytes().await?.len();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((percentile(&mut ms, 0.5), percentile(&mut ms, 0.99), bytes))
}

/// `site-year`: one tank with a reading every 10 minutes for 365 days
/// (its hourly rollups made at ingest, as a real site's are).
async fn year_site(db: &headend::store::Db, now: i64) -> Result<()> {
    let site = "site-year";
    let h = v1::Hello {
        site_id: site.into(),
        log_id: 9,
        agent_version: "bench".into(),
        assets: vec![v1::Asset {
            asset_id: "tank-0".into(),
            kind: v1::AssetKind::Tank as i32,
            name: "Tank 0".into(),
            product: "diesel".into(),
            capacity: 30_000.0,
            capacity_unit: "L".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    db.record_hello(headend::store::HelloInfo { site, hello: &h })
        .await?;
    let step = 10 * MIN;
    let n = 365 * 24 * 6;
    let from = now - n * step;
    let mut batch = Vec::with_capacity(6_000);
    for i in 0..n {
        let at = from + i * step;
        batch.push(v1::Reading {
            seq: i as u64 + 1,
            asset_id: "tank-0".into(),
            field: "volume".into(),
            value: 28_000.0 - (150.0 * (i as f64 / 6.0)) % 23_000.0,
            unit: "L".into(),
            quality: v1::Quality::Good as i32,
            source_ts_ms: at,
            received_ts_ms: at,
            source: "modbus://bench/hr0".into(),
            error: String::new(),
        });
        if batch.len() >= 6_000 || i + 1 == n {
            let b = v1::TelemetryBatch {
                log_id: 9,
                first_seq: batch[0].seq,
                last_seq: batch[batch.len() - 1].seq,
                readings: std::mem::take(&mut batch),
                ..Default::default()
            };
            db.ingest(&e2e::sid(site), &b).await?;
        }
    }
    Ok(())
}

async fn run(backend: &str, days: i64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pg = if backend == "postgres" {
        Some(pg::fresh_database().await?)
    } else {
        None
    };
    let url = match &pg {
        Some(p) => p.url.clone(),
        None => sqlite_url(dir.path()),
    };
    let pki = TestPki::new(&[])?;
    let mut cfg = headend_config(&pki, &url, 0);
    cfg.inventory_every = Duration::from_secs(3600);
    let he = start_headend(cfg).await?;
    let http = he.http_addr;
    let now = headend::wallclock::now_ms();
    let start = now - days * 24 * 3_600_000;
    let t = Instant::now();
    let mut rows = 0u64;
    for s in 0..SITES {
        let site = format!("site-{s:02}");
        let h = v1::Hello {
            site_id: site.clone(),
            log_id: 7,
            agent_version: "bench".into(),
            assets: (0..TANKS)
                .map(|k| v1::Asset {
                    asset_id: format!("tank-{k}"),
                    kind: v1::AssetKind::Tank as i32,
                    name: format!("Tank {k}"),
                    product: "diesel".into(),
                    capacity: 30_000.0,
                    capacity_unit: "L".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        he.db
            .record_hello(headend::store::HelloInfo {
                site: &site,
                hello: &h,
            })
            .await?;
        // each tank drains 150 L/h and is refilled at 5,000 L
        let mut seq = 0u64;
        let n = (days * 24 * 60) as usize;
        let mut batch = Vec::with_capacity(6_000);
        for i in 0..n {
            let at = start + i as i64 * MIN;
            for k in 0..TANKS {
                let used = (150.0 + 10.0 * k as f64) * (i as f64 / 60.0);
                let v = 28_000.0 - used % 23_000.0;
                seq += 1;
                batch.push(v1::Reading {
                    seq,
                    asset_id: format!("tank-{k}"),
                    field: "volume".into(),
                    value: v,
                    unit: "L".into(),
                    quality: v1::Quality::Good as i32,
                    source_ts_ms: at,
                    received_ts_ms: at,
                    source: "modbus://bench/hr0".into(),
                    error: String::new(),
                });
            }
            if batch.len() >= 6_000 || i + 1 == n {
                let b = v1::TelemetryBatch {
                    log_id: 7,
                    first_seq: batch[0].seq,
                    last_seq: batch[batch.len() - 1].seq,
                    readings: std::mem::take(&mut batch),
                    ..Default::default()
                };
                rows += b.readings.len() as u64;
                he.db.ingest(&e2e::sid(&site), &b).await?;
            }
        }
        if s % 10 == 9 {
            eprintln!(
                "{backend}: {} sites, {rows} readings, {:.0} s",
                s + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let load_s = t.elapsed().as_secs_f64();
    year_site(&he.db, now).await?;
    let t = Instant::now();
    let report =
        headend::services::evaluate::run(&he.db, headend::wallclock::now_ms(), Default::default())
            .await?;
    let eval_ms = t.elapsed().as_secs_f64() * 1000.0;
    let n = 500;
    let (h50, h99) = timed(http, "/health", n).await?;
    let (r50, r99) = timed(http, "/api/v1/risk?limit=50", n).await?;
    let (t50, t99) = timed(http, "/api/v1/tanks?limit=100", n).await?;
    let (s50, s99) = timed(http, "/api/v1/tanks?site=site-07", n).await?;
    println!(
        "| {backend} | {rows} readings ({days} d) loaded in {load_s:.0} s | inventory job: {} tanks in {eval_ms:.0} ms | \
         /health p50 {h50:.2} p99 {h99:.2} ms | /risk?limit=50 p50 {r50:.2} p99 {r99:.2} ms ({:.2} of the 100 ms goal) | \
         /tanks?limit=100 p50 {t50:.2} p99 {t99:.2} ms ({:.2}) | /tanks?site= p50 {s50:.2} p99 {s99:.2} ms |",
        report.tanks,
        r99 / 100.0,
        t99 / 100.0
    );
    let cookies = console_cookies(http).await?;
    let login = reqwest::Client::new()
        .get(format!("http://{http}/login"))
        .send()
        .await?
        .text()
        .await?;
    let asset = |ext: &str| {
        login
            .split('"')
            .find(|s| s.starts_with("/assets/console.") && s.ends_with(ext))
            .unwrap_or_default()
            .to_string()
    };
    let (css, js) = (asset(".css"), asset(".js"));
    // the stylesheet and the script, as transferred (gzip)
    let mut css_bytes = 0;
    for f in [&css, &js] {
        css_bytes += reqwest::Client::new()
            .get(format!("http://{http}{f}"))
            .header("accept-encoding", "gzip")
            .send()
            .await?
            .bytes()
            .await?
            .len();
    }
    for path in [
        "/",
        "/tanks",
        "/tanks?risk=low",
        "/sites",
        "/sites/site-07/tanks/tank-3",
        "/escalations",
        "/audit",
        "/sites/site-07",
        "/sites/site-07?range=24h",
        "/sites/site-07?point=tank-3/volume&range=30d",
        "/sites/site-year?point=tank-0/volume&range=1y",
        "/sites/site-07/tanks/tank-3?range=30d",
        "/commands",
        "/loads",
        "/admin",
    ] {
        let (p50, p99, bytes) = timed_page(http, &cookies, path, n).await?;
        println!(
            "| {backend} | console `{path}` | p50 {p50:.2} ms | p99 {p99:.2} ms ({:.2} of the 50 ms goal) | {bytes} B gzip ({:.3} of 60 KB); a first load with the stylesheet and script {} B ({:.3} of 300 KB) |",
            p99 / 50.0,
            bytes as f64 / 60_000.0,
            bytes + css_bytes,
            (bytes + css_bytes) as f64 / 300_000.0
        );
    }
    let out = tokio::process::Command::new(python())
        .arg(peer_script("console_timing.py"))
        .args(["--url", &format!("http://{http}"), "--user", "bench"])
        .args(["--password", "a long enough password", "--runs", "20"])
        .args(["--path", "/sites/site-year?point=tank-0/volume&range=1y"])
        .args(["--path", "/sites/site-07?range=24h"])
        .args(["--path", "/tanks"])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "console_timing.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("| {backend} | Chromium | {} |", line.replace('\t', " | "));
    }
    he.stop().await;
    if let Some(p) = pg {
        p.drop().await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let days: i64 = args.get(1).and_then(|d| d.parse().ok()).unwrap_or(90);
    let backends: Vec<&str> = match args.first().map(String::as_str) {
        Some("sqlite") => vec!["sqlite"],
        Some("postgres") => vec!["postgres"],
        _ => vec!["sqlite", "postgres"],
    };
    for b in backends {
        run(b, days).await?;
    }
    Ok(())
}
