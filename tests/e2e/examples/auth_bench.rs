//! Operator access under load, with wrk (Debian's `wrk`) against a
//! headend on SQLite:
//!
//! 1. Login throughput: POST /api/v1/auth/login with a right password
//!    (argon2id m=19 MiB t=2 p=1, at most two hashes at once), against
//!    the limit: two cores doing one argon2id verification each, timed
//!    in this process.
//! 2. What authentication adds to a read: GET /health (no credential,
//!    no SQL) against GET /api/v1/auth/me with an access token and with
//!    an API key (the credential's lookup is all that route does), p50
//!    and p99 from wrk's latency distribution; and `authenticate()`
//!    alone, timed in this process.
//!
//!   cargo run --release -p e2e --example auth_bench
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::*;

fn wrk(args: &[&str]) -> Result<String> {
    let o = Command::new("wrk")
        .args(args)
        .output()
        .context("wrk (apt-get install wrk)")?;
    if !o.status.success() {
        bail!("wrk: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).to_string())
}

/// (requests/s, p50 ms, p99 ms) from wrk's --latency output.
fn parse(out: &str) -> (f64, f64, f64) {
    let num = |line: &str| -> f64 {
        let v = line.split_whitespace().last().unwrap_or("0");
        let (n, unit) = v
            .trim_end_matches(|c: char| c.is_alphabetic())
            .parse::<f64>()
            .map_or((0.0, ""), |n| {
                (
                    n,
                    &v[v.trim_end_matches(|c: char| c.is_alphabetic()).len()..],
                )
            });
        match unit {
            "us" => n / 1000.0,
            "s" => n * 1000.0,
            _ => n,
        }
    };
    let mut rps = 0.0;
    let (mut p50, mut p99) = (0.0, 0.0);
    for l in out.lines() {
        let t = l.trim();
        if t.starts_with("Requests/sec:") {
            rps = t
                .split_whitespace()
                .last()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        } else if t.starts_with("50%") {
            p50 = num(t);
        } else if t.starts_with("99%") {
            p99 = num(t);
        }
    }
    (rps, p50, p99)
}

#[tokio::main]
async fn main() -> Result<()> {
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.logins_per_minute = 100_000; // one client address here: measure argon2, not the throttle
    let he = start_headend(cfg).await?;
    let http = he.http_addr;
    let guard = headend::services::access::Guard::default();
    let password = "correct horse battery staple";
    headend::services::admin::add_user(
        &he.db,
        &guard,
        &headend::domain::Grant::root(),
        headend::services::admin::NewUser {
            user: "bench".into(),
            role: "viewer".into(),
            password: password.into(),
            sites: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // the limit: one argon2id verification per core
    let phc = headend::domain::secret::hash_password(password).map_err(anyhow::Error::msg)?;
    let n = 20;
    let t = Instant::now();
    for _ in 0..n {
        anyhow::ensure!(headend::domain::secret::verify_password(password, &phc));
    }
    let per_hash_ms = t.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let limit = cores.min(headend::services::access::HASHING_AT_ONCE as f64) * 1000.0 / per_hash_ms;

    let lua = work.path().join("login.lua");
    std::fs::write(
        &lua,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{{\"user\": \"bench\", \"password\": \"{password}\"}}'\n"
        ),
    )?;
    let url = |p: &str| format!("http://{http}{p}");
    let out = wrk(&[
        "-t2",
        "-c4",
        "-d10s",
        "--latency",
        "-s",
        &lua.to_string_lossy(),
        &url("/api/v1/auth/login"),
    ])?;
    let (login_rps, login_p50, login_p99) = parse(&out);
    anyhow::ensure!(!out.contains("Non-2xx"), "logins failed: {out}");

    // a token for the reads
    let (_, t) = post_json(
        http,
        "/api/v1/auth/login",
        &serde_json::json!({"user": "bench", "password": password}),
    )
    .await?;
    let access = t["access_token"].as_str().unwrap_or_default().to_string();
    let key = token_of(http);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let read = |path: &str, token: Option<&str>| -> Result<(f64, f64, f64)> {
        let h = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["-t2", "-c8", "-d10s", "--latency"];
        if let Some(h) = &h {
            args.extend(["-H", h.as_str()]);
        }
        let u = url(path);
        args.push(&u);
        let out = wrk(&args)?;
        anyhow::ensure!(!out.contains("Non-2xx"), "{path}: {out}");
        Ok(parse(&out))
    };
    let open = read("/health", None)?;
    let with_token = read("/api/v1/auth/me", Some(&access))?;
    let with_key = read("/api/v1/auth/me", Some(&key))?;

    // authenticate() alone
    let mut lat = Vec::new();
    for i in 0..2000 {
        let tok = if i % 2 == 0 { &access } else { &key };
        let t = Instant::now();
        headend::services::access::authenticate(&he.db, &guard, tok, "127.0.0.1".parse()?)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];

    println!(
        "argon2id verification: {per_hash_ms:.1} ms per hash; limit {limit:.1} logins/s ({cores} cores, {} at once)",
        headend::services::access::HASHING_AT_ONCE
    );
    println!(
        "login (wrk -t2 -c4 10 s): {login_rps:.1}/s = {:.2} of the argon2 limit; p50 {login_p50:.1} ms, p99 {login_p99:.1} ms",
        login_rps / limit
    );
    println!(
        "GET /health (no credential):        {:.0}/s p50 {:.3} ms p99 {:.3} ms",
        open.0, open.1, open.2
    );
    println!(
        "GET /api/v1/auth/me (access token): {:.0}/s p50 {:.3} ms p99 {:.3} ms",
        with_token.0, with_token.1, with_token.2
    );
    println!(
        "GET /api/v1/auth/me (API key):      {:.0}/s p50 {:.3} ms p99 {:.3} ms",
        with_key.0, with_key.1, with_key.2
    );
    println!(
        "authentication adds at p99: token {:+.3} ms, key {:+.3} ms (goal < 1 ms)",
        with_token.2 - open.2,
        with_key.2 - open.2
    );
    println!(
        "authenticate() alone (2,000 calls, token and key alternating): p50 {:.3} ms p99 {:.3} ms",
        q(0.5),
        q(0.99)
    );
    he.stop().await;
    Ok(())
}
