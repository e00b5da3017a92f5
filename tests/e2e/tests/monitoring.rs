//! Issue 36: the monitoring shipped in `deploy/prometheus/` runs in a real
//! Prometheus (Debian's package) scraping a running headend and agent,
//! with the shipped `prometheus.yml` (only its intervals shortened) and
//! `alerts.yml`: both targets are scraped with the key the file names,
//! every rule loads and evaluates against the real series without error,
//! every metric an alert names is one the binaries export, and a device
//! that stops answering fires the expressions of both device alerts (the
//! agent's own and the headend's fleet figure). Every query of the
//! Grafana dashboard (`deploy/grafana/tankwatch.json`) runs against the
//! same series. The rules' own timing is
//! unit-tested by `promtool test rules` in scripts/test.sh.
use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::prometheus::Prometheus;
use e2e::*;
use serde_json::Value;

/// The metric names an expression uses (`tankwatch_…`).
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tankwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The sample names of a metrics page, from its `# TYPE` lines (so a
/// family with no sample yet counts): counters as `name_total`, the
/// info metric as `name_info`, histograms with their series.
fn exported(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in page.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(name), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "info" => {
                out.insert(format!("{name}_info"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_alert_rules_evaluate_against_a_running_headend_and_agent() -> Result<()> {
    let b = Bench::start("site-mon", |_| {}).await?;
    b.sim.set_frozen(false);
    let agent = b.agent(&b.agent_yaml(b.he.grpc_addr, 200))?;
    let status = agent.status_addr.context("the agent's status address")?;
    let http = b.he.http_addr;
    eventually(
        "the agent's first readings",
        Duration::from_secs(20),
        || async {
            Ok(get_json(http, "/api/v1/sites")
                .await?
                .as_array()
                .and_then(|s| s.first().cloned())
                .filter(|s| s["connected"] == true))
        },
    )
    .await?;
    // the headend's release, from its HelloAck, in the agent's /status
    let st: Value = reqwest::get(format!("http://{status}/status"))
        .await?
        .json()
        .await?;
    ensure!(
        st["uplink"]["headend_version"] == env!("CARGO_PKG_VERSION"),
        "/status uplink: {}",
        st["uplink"]
    );
    let key = api_key(&b.he.db, "viewer", None).await?;
    let dir = tempfile::tempdir()?;
    let prom = Prometheus::start(
        dir.path(),
        &[http.to_string()],
        &[status.to_string()],
        &key,
        &b.pki.path().join("ca.pem"),
    )?;

    // both targets up: the headend with the viewer key from the file
    eventually("both targets scraped", Duration::from_secs(60), || async {
        let up = prom.query("up == 1").await.unwrap_or_default();
        Ok((up.len() == 2).then_some(()))
    })
    .await
    .with_context(|| {
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    })?;

    // every rule loaded and evaluated against the real series; on a
    // healthy site none is pending or firing (once the rules have seen
    // the first scrapes: before them `up` is absent)
    let rules = eventually(
        "every rule evaluated, none active",
        Duration::from_secs(30),
        || async {
            let groups = prom.api("rules", &[]).await?;
            let rules: Vec<Value> = groups["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
            let quiet = rules.iter().all(|r| r["state"] == "inactive");
            Ok((evaluated && quiet && !rules.is_empty()).then_some(rules))
        },
    )
    .await?;
    let shipped = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml"))?;
    ensure!(
        rules.len() == shipped.matches("- alert:").count(),
        "Prometheus loaded {} rules of alerts.yml's {}",
        rules.len(),
        shipped.matches("- alert:").count()
    );
    let mut pages = get_text(http, "/metrics").await?;
    pages += &reqwest::get(format!("http://{status}/metrics"))
        .await?
        .text()
        .await?;
    let exported = exported(&pages);
    for r in &rules {
        let name = r["name"].as_str().unwrap_or("?");
        ensure!(
            r["health"] == "ok" && r["lastError"].as_str().unwrap_or("").is_empty(),
            "{name}: {r}"
        );
        let query = r["query"].as_str().unwrap_or("");
        for m in names_in(query) {
            ensure!(
                exported.contains(&m),
                "{name} uses {m}, which neither binary exports"
            );
        }
        let runbook = r["annotations"]["runbook_url"].as_str().unwrap_or("");
        ensure!(
            runbook.starts_with("docs/runbooks/") && repo().join(runbook).is_file(),
            "{name}: runbook {runbook:?} is not a file of docs/runbooks"
        );
    }

    // the Grafana dashboard: every query runs against the same series
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(
        repo().join("deploy/grafana/tankwatch.json"),
    )?)?;
    let mut queries = 0;
    for p in dash["panels"].as_array().context("panels")? {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().context("a target without expr")?;
            let q = expr
                .replace("$__rate_interval", "1m")
                .replace("$site", &status.to_string());
            for m in names_in(&q) {
                ensure!(
                    exported.contains(&m),
                    "panel {}: {m} is not exported",
                    p["title"]
                );
            }
            prom.query(&q)
                .await
                .with_context(|| format!("panel {}: {q}", p["title"]))?;
            queries += 1;
        }
    }
    ensure!(queries >= 20, "only {queries} queries in the dashboard");
    let sites = prom
        .query("max(tankwatch_headend_fleet{figure=\"sites\"})")
        .await?;
    ensure!(
        sites.first().and_then(|v| v["value"][1].as_str()) == Some("1"),
        "the fleet panel: {sites:?}"
    );
    let site_var = prom.query("tankwatch_agent_build_info").await?;
    ensure!(
        site_var
            .first()
            .and_then(|v| v["metric"]["instance"].as_str())
            == Some(&status.to_string()),
        "the dashboard's site variable: {site_var:?}"
    );

    // the drill: the gauge stops answering; both device alerts' expressions fire
    b.sim.set_silent(true);
    for alert in ["TankwatchAgentDeviceDown", "TankwatchDeviceDown"] {
        let expr = rules
            .iter()
            .find(|r| r["name"] == alert)
            .and_then(|r| r["query"].as_str())
            .with_context(|| format!("{alert} is not loaded"))?
            .to_string();
        let fired = eventually(alert, Duration::from_secs(60), || async {
            let v = prom.query(&expr).await?;
            Ok((!v.is_empty()).then_some(v))
        })
        .await?;
        if alert == "TankwatchAgentDeviceDown" && fired[0]["metric"]["device"] != "atg" {
            bail!("{alert}: {fired:?}");
        }
    }
    drop(agent);
    Ok(())
}
