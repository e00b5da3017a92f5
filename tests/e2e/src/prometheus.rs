//! A real Prometheus (Debian's package) on the shipped configuration
//! (`deploy/prometheus/`), for the monitoring test and the runbook drills.
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// Debian's Prometheus, stopped with the test.
pub struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
    pub addr: std::net::SocketAddr,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Copies the shipped configuration and rules into `dir` (intervals
    /// 1 s), writes the targets and the key, and starts Prometheus on it.
    pub fn start(
        dir: &Path,
        headends: &[String],
        agents: &[String],
        key: &str,
        ca: &Path,
    ) -> Result<Prometheus> {
        let shipped = crate::repo().join("deploy/prometheus");
        let cfg = std::fs::read_to_string(shipped.join("prometheus.yml"))?;
        ensure!(
            cfg.contains("scrape_interval: 15s") && cfg.contains("evaluation_interval: 15s"),
            "prometheus.yml: the intervals the test shortens are not there"
        );
        let cfg = cfg
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        std::fs::write(dir.join("prometheus.yml"), cfg)?;
        std::fs::copy(shipped.join("alerts.yml"), dir.join("alerts.yml"))?;
        std::fs::write(dir.join("tankwatch-metrics.key"), key)?;
        std::fs::create_dir_all(dir.join("pki"))?;
        std::fs::copy(ca, dir.join("pki/ca.pem"))?;
        std::fs::create_dir_all(dir.join("targets"))?;
        let targets = |t: &[String]| format!("- targets: {}\n", serde_json::json!(t));
        std::fs::write(dir.join("targets/headends.yml"), targets(headends))?;
        std::fs::write(dir.join("targets/agents.yml"), targets(agents))?;
        let port = crate::free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
            .spawn()
            .context("prometheus (Debian's package; scripts/peers.sh installs it)")?;
        Ok(Prometheus {
            child,
            dir: dir.to_path_buf(),
            addr: ([127, 0, 0, 1], port).into(),
            http: reqwest::Client::new(),
        })
    }

    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let v: Value = self
            .http
            .get(format!("http://{}/api/v1/{path}", self.addr))
            .query(query)
            .send()
            .await?
            .json()
            .await?;
        ensure!(v["status"] == "success", "{path}: {v}");
        Ok(v["data"].clone())
    }

    /// The result vector of an instant query.
    pub async fn query(&self, q: &str) -> Result<Vec<Value>> {
        let d = self.api("query", &[("query", q)]).await?;
        Ok(d["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Prometheus {
    /// Replaces the agents it scrapes (file discovery: it rereads the file).
    pub fn set_agents(&self, agents: &[String]) -> Result<()> {
        let tmp = self.dir.join("targets/agents.yml.new");
        std::fs::write(&tmp, format!("- targets: {}\n", serde_json::json!(agents)))?;
        std::fs::rename(tmp, self.dir.join("targets/agents.yml"))?;
        Ok(())
    }

    /// Its own log (for a failure's context).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The loaded rules, by alert name, once each has been evaluated.
    pub async fn rules(&self) -> Result<Vec<Value>> {
        let groups = self.api("rules", &[]).await?;
        Ok(groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// Waits until the expression of `alert` (as loaded from alerts.yml,
    /// without its `for`) returns a series; returns them.
    pub async fn fires(&self, alert: &str, within: std::time::Duration) -> Result<Vec<Value>> {
        let expr = self
            .rules()
            .await?
            .iter()
            .find(|r| r["name"] == alert)
            .and_then(|r| r["query"].as_str().map(String::from))
            .with_context(|| format!("{alert} is not loaded"))?;
        crate::eventually(&format!("{alert}'s expression fires"), within, || async {
            let v = self.query(&expr).await?;
            Ok((!v.is_empty()).then_some(v))
        })
        .await
        .with_context(|| format!("{expr}\n{}", self.log()))
    }
}

/// The runbook `docs/runbooks/{file}` still gives the command (or quotes
/// the message) a runbook drill relies on.
pub fn runbook_says(file: &str, command: &str) -> Result<()> {
    let text = std::fs::read_to_string(crate::repo().join("docs/runbooks").join(file))?;
    anyhow::ensure!(
        text.contains(command),
        "docs/runbooks/{file} no longer says `{command}`"
    );
    Ok(())
}
