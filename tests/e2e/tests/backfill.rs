//! Issue 27, item 9: a newcomer saw no runout and no risk (they need
//! three hours of gauge history). `edge-agent backfill` puts a site's
//! existing history into the agent's log with its own times; through the
//! real CLI, log, uplink, ingest and inventory job, every tank then shows
//! a runout and a risk level within seconds of the agent's start.
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::*;

fn backfill(cfg: &std::path::Path, csv: &std::path::Path, again: bool) -> Result<(i32, String)> {
    let mut c = Command::new(bin("edge-agent"));
    c.args(["backfill", "--config"]).arg(cfg).arg(csv);
    if again {
        c.arg("--again");
    }
    let o = c.output()?;
    Ok((
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilled_history_gives_every_tank_a_runout_and_a_risk_within_seconds_of_the_agents_start()
-> Result<()> {
    let pki = TestPki::new(&["site-h"])?;
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.inventory_every = Duration::from_secs(2);
    let he = start_headend(cfg).await?;
    // the simulator at real speed, and the history its tanks had before
    let sim_cfg = atg_sim::SimConfig {
        speed: 1.0,
        ..atg_sim::SimConfig::default()
    };
    let now = headend::wallclock::now_ms();
    let mut csv = String::from("asset,field,time,value,unit\n");
    for p in atg_sim::history::before_start(&sim_cfg, now, 72, 300_000) {
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            p.asset, p.field, p.ts_ms, p.value, p.unit
        ));
    }
    let sim = atg_sim::Simulator::start("127.0.0.1:0".parse()?, sim_cfg.clone()).await?;
    let dir = work.path().join("site");
    std::fs::create_dir_all(&dir)?;
    let yaml = agent_yaml(&pki, "site-h", he.grpc_addr, &dir.join("log"), &sim, 1000);
    let cfg_path = dir.join("site.yaml");
    std::fs::write(&cfg_path, &yaml)?;
    let csv_path = dir.join("history.csv");
    std::fs::write(&csv_path, &csv)?;

    let (code, out) = backfill(&cfg_path, &csv_path, false)?;
    ensure!(
        code == 0 && out.contains("backfilled 17280 readings"),
        "{code}: {out}"
    );
    // twice would store it twice: refused unless asked
    let (code, out) = backfill(&cfg_path, &csv_path, false)?;
    ensure!(
        code == 2 && out.contains("already backfilled"),
        "{code}: {out}"
    );
    // a bad row: named, nothing written
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "asset,field,time,value,unit\ntank-1,volume,2026-12-05T08:00:00,1,L\n",
    )?;
    let (code, out) = backfill(&cfg_path, &bad, false)?;
    ensure!(
        code == 2 && out.contains("bad.csv:2: column time"),
        "{code}: {out}"
    );

    let t0 = Instant::now();
    let agent = edge_agent::start(agent_config(&dir, &yaml)?)?;
    // while the agent runs its log is its own
    let (code, out) = backfill(&cfg_path, &csv_path, true)?;
    ensure!(code == 1 && out.contains("in use"), "{code}: {out}");
    let tanks = eventually(
        "every tank with a runout and a risk",
        Duration::from_secs(60),
        || async {
            let v = get_json(he.http_addr, "/api/v1/tanks?site=site-h").await?;
            let all = v.as_array().cloned().unwrap_or_default();
            let ready = all.len() == 4
                && all
                    .iter()
                    .all(|t| t["runout_at"].is_string() && t["risk"] != "unknown");
            Ok(ready.then_some(v))
        },
    )
    .await?;
    let took = t0.elapsed();
    eprintln!(
        "runout and risk on every tank {:.1} s after the agent started: {tanks}",
        took.as_secs_f64()
    );
    ensure!(took < Duration::from_secs(30), "took {took:?}");
    // the rate is the simulator's sales rate (within 10 %)
    for t in atg_sim::initial_tanks(&sim_cfg) {
        let row = tanks
            .as_array()
            .and_then(|a| a.iter().find(|r| r["tank"] == t.id.as_str()))
            .context("tank row")?;
        let rate = row["rate_lph"].as_f64().unwrap_or(-1.0);
        ensure!(
            (rate - t.sales_rate).abs() <= 0.1 * t.sales_rate,
            "{}: rate {rate} vs sales {}: {row}",
            t.id,
            t.sales_rate
        );
    }
    agent.stop().await?;
    he.stop().await;
    Ok(())
}
