//! Alarm latency for docs/BENCHMARKS.md: a leak raised at the simulated
//! gauge (Modbus, polled every 100 ms) to the signed webhook (checked by
//! an independent Python receiver) and to the e-mail at a real SMTP server
//! (aiosmtpd), one alarm after the other, N alarms (default 200): p50, p99
//! and max, beside the floor set by the poll and the notification rounds.
//! Needs the test peers (scripts/peers.sh).
//!
//! `cargo run --release -p e2e --example alarm_latency [N]`
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::{Value, json};

const SITE: &str = "site-bench";
const POLL_MS: u64 = 100;

fn pct(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

fn raised(got: &[Value]) -> Vec<i64> {
    got.iter()
        .filter(|n| {
            n["body"]["event"] == "alarm.raised" && n["body"]["alarm"]["field"] == "alarm.leak"
        })
        .filter_map(|n| n["at_ms"].as_i64())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let hook = WebhookReceiver::start()?;
    let smtp = SmtpSink::start()?;
    let pki = TestPki::new(&[SITE])?;
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.webhook_url = Some(hook.url.clone());
    cfg.webhook_secret_file = Some(hook.secret_file.clone());
    cfg.smtp_url = Some(format!("smtp://127.0.0.1:{}", smtp.port));
    cfg.mail_from = Some("Tankwatch <alarms@tankwatch.test>".into());
    cfg.alarm_rules = headend::domain::notify::Rules {
        critical_repeat_ms: 3_600_000,
        major_after_ms: 3_600_000,
        per_recipient: 1_000_000,
        window_ms: 60_000,
    };
    let he = start_headend(cfg).await?;
    let http = he.http_addr;
    let sim =
        atg_sim::Simulator::start("127.0.0.1:0".parse()?, atg_sim::SimConfig::default()).await?;
    sim.set_frozen(true);
    let y = agent_yaml(
        &pki,
        SITE,
        he.grpc_addr,
        &work.path().join("log"),
        &sim,
        POLL_MS,
    );
    let agent = edge_agent::start(agent_config(work.path(), &y)?)?;
    let tank = sim.tanks()[1].id.clone();
    wait_value(http, SITE, &tank, "alarm.leak", 0.0, 0.0).await?;
    let (st, v) = send_json(
        http,
        reqwest::Method::PUT,
        &format!("/api/v1/sites/{SITE}/alarm-recipients"),
        &json!({"recipients": [{"address": "ops@fuel.test", "min_severity": "critical"}]}),
    )
    .await?;
    ensure!(st == 200, "{v}");
    let (mut to_hook, mut to_mail) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t0 = headend::wallclock::now_ms();
        sim.set_leak(1, true);
        let (h, m) = eventually(
            "the webhook and the mail",
            Duration::from_secs(30),
            || async {
                let h = raised(&hook.got()?);
                let m = smtp.to("ops@fuel.test")?;
                Ok((h.len() > i && m.len() > i)
                    .then(|| (h[i], m[i]["at_ms"].as_i64().unwrap_or(0))))
            },
        )
        .await
        .with_context(|| format!("alarm {i}"))?;
        to_hook.push(h - t0);
        to_mail.push(m - t0);
        sim.set_leak(1, false);
        wait_value(http, SITE, &tank, "alarm.leak", 0.0, 0.0).await?;
    }
    ensure!(
        hook.got()?.iter().all(|g| g["verified"] == true),
        "every signature verifies"
    );
    let floor_hook = POLL_MS as f64 / 2.0 + 500.0;
    let floor_mail = floor_hook;
    println!(
        "| path | alarms | p50 | p99 | max | floor (mean: half a poll + half a 1 s round) | p50 / floor |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, v, floor) in [
        ("gauge → signed webhook", &mut to_hook, floor_hook),
        ("gauge → e-mail (SMTP)", &mut to_mail, floor_mail),
    ] {
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        let max = v.iter().copied().max().unwrap_or(0);
        println!(
            "| {name} | {n} | {p50} ms | {p99} ms | {max} ms | {floor:.0} ms | {:.2} |",
            p50 as f64 / floor
        );
    }
    agent.stop().await?;
    he.stop().await;
    Ok(())
}
