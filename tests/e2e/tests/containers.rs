//! Issue 36: the container images, the Compose pilot and the Kubernetes
//! manifests, checked by independent tools (there is no container engine
//! on the machines this suite runs on, so the images are not built here):
//!
//! - both Dockerfiles pass hadolint, and every package and binary they
//!   build is one of this workspace's;
//! - `deploy/compose/compose.yaml` is valid against the Compose
//!   specification's schema (check-jsonschema's copy), every file it
//!   mounts exists, the pilot has what the guide promises, HAProxy takes
//!   the shipped configuration with the pilot's environment, Prometheus
//!   takes its configuration with the pilot's targets, and the pilot's
//!   site passes `edge-agent check-config`;
//! - the manifests in `deploy/k8s/` are valid, strictly, against
//!   Kubernetes 1.37's schemas, with readiness on `/ready`, a
//!   PodDisruptionBudget and the migration Job.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::Value;

/// A tool of the test venv (tests/peers/requirements.txt).
fn venv_tool(name: &str) -> PathBuf {
    python().with_file_name(name)
}

fn run(c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("{c:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "{c:?}:\n{text}");
    Ok(text)
}

fn yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_yaml::from_str(&text).with_context(|| path.display().to_string())
}

#[test]
fn the_dockerfiles_pass_hadolint_and_build_this_workspaces_binaries() -> Result<()> {
    let dir = repo().join("deploy/docker");
    for f in ["headend.Dockerfile", "agent.Dockerfile"] {
        let path = dir.join(f);
        run(Command::new(venv_tool("hadolint")).arg(&path))?;
        let text = std::fs::read_to_string(&path)?;
        ensure!(
            text.contains("USER 10001"),
            "{f}: not run as the non-root user"
        );
        ensure!(text.contains("HEALTHCHECK"), "{f}: no health check");
        ensure!(text.matches("FROM ").count() >= 2, "{f}: not multi-stage");
        for bin in text.lines().filter_map(|l| {
            l.trim()
                .strip_prefix("&& install -D -m 0755 target/release/")
        }) {
            let name = bin.split_whitespace().next().unwrap_or_default();
            // built by this suite too: the name is one of the workspace's binaries
            e2e::bin(name);
        }
    }
    Ok(())
}

#[test]
fn the_compose_pilot_is_valid_and_its_parts_take_their_configuration() -> Result<()> {
    let dir = repo().join("deploy/compose");
    let file = dir.join("compose.yaml");
    run(Command::new(venv_tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&file))?;
    let c = yaml(&file)?;
    let services = c["services"].as_object().context("services")?;
    for s in [
        "postgres",
        "pki",
        "migrate",
        "headend-1",
        "headend-2",
        "haproxy",
        "prometheus",
        "atg-sim",
        "agent",
    ] {
        ensure!(services.contains_key(s), "compose.yaml has no {s}");
    }
    for s in ["agent", "atg-sim"] {
        ensure!(
            services[s]["profiles"] == serde_json::json!(["site"]),
            "{s} is not in the `site` profile"
        );
    }
    // every file it mounts from the repository exists
    for (name, s) in services {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let src = v
                .as_str()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default();
            if src.starts_with('.') {
                ensure!(
                    dir.join(src).exists(),
                    "{name} mounts {src}, which is not there"
                );
            }
        }
    }
    // HAProxy takes the shipped file with the pilot's environment
    let mut h = Command::new("haproxy");
    h.args(["-c", "-f"]).arg(repo().join("deploy/haproxy.cfg"));
    let work = tempfile::tempdir()?;
    let pki = TestPki::new(&["pilot-1"])?;
    for (k, v) in services["haproxy"]["environment"]
        .as_object()
        .context("haproxy's environment")?
    {
        let v = v.as_str().unwrap_or_default();
        h.env(
            k,
            if k == "TW_REST_CA" {
                pki.path().join("ca.pem").display().to_string()
            } else {
                v.to_string()
            },
        );
    }
    run(&mut h)?;
    // Prometheus takes its configuration with the pilot's targets
    let prom = work.path().join("prometheus");
    std::fs::create_dir_all(prom.join("pki"))?;
    for f in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(repo().join("deploy/prometheus").join(f), prom.join(f))?;
    }
    copy_dir(&dir.join("prometheus-targets"), &prom.join("targets"))?;
    std::fs::write(prom.join("tankwatch-metrics.key"), "twk_example")?;
    std::fs::copy(pki.path().join("ca.pem"), prom.join("pki/ca.pem"))?;
    run(Command::new("promtool")
        .args(["check", "config"])
        .arg(prom.join("prometheus.yml")))?;
    // the pilot's site: valid, once its files are where the pilot puts them
    let site = std::fs::read_to_string(dir.join("site.yaml"))?;
    let tls = work.path().join("pki");
    std::fs::create_dir_all(&tls)?;
    let f = pki.agent_files("pilot-1");
    std::fs::copy(&f.cert, tls.join("agent-pilot-1.pem"))?;
    std::fs::copy(&f.key, tls.join("agent-pilot-1.key"))?;
    std::fs::copy(&f.ca, tls.join("ca.pem"))?;
    let local = site
        .replace("/etc/tankwatch/pki/", &format!("{}/", tls.display()))
        .replace(
            "/var/lib/tankwatch/",
            &format!("{}/", work.path().display()),
        );
    std::fs::write(work.path().join("site.yaml"), local)?;
    run(Command::new(bin("edge-agent"))
        .arg("check-config")
        .arg(work.path().join("site.yaml")))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

#[test]
fn the_kubernetes_manifests_are_valid_for_kubernetes_1_37_with_readiness_a_budget_and_the_migration()
-> Result<()> {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    ensure!(files.len() >= 5, "{files:?}");
    let out = run(Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "-k", "1.37.0"])
        .args(&files))?;
    ensure!(!out.contains("ERROR") && !out.contains("WARN"), "{out}");
    let kinds: Vec<(String, Value)> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.split("\n---\n")
                .filter_map(|d| serde_yaml::from_str::<Value>(d).ok())
                .map(|v| (v["kind"].as_str().unwrap_or_default().to_string(), v))
                .collect::<Vec<_>>()
        })
        .collect();
    let of = |k: &str| kinds.iter().find(|(kind, _)| kind == k).map(|(_, v)| v);
    let d = of("Deployment").context("no Deployment")?;
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    ensure!(
        c["readinessProbe"]["httpGet"]["path"] == "/ready",
        "readiness is not /ready"
    );
    ensure!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0,
        "a rollout may take every replica down"
    );
    ensure!(
        c["securityContext"]["readOnlyRootFilesystem"] == true
            && d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] == true,
        "the pod runs as root or writes its image"
    );
    ensure!(
        of("PodDisruptionBudget").is_some(),
        "no PodDisruptionBudget"
    );
    let job = of("Job").context("no migration Job")?;
    ensure!(
        job["spec"]["template"]["spec"]["containers"][0]["args"] == serde_json::json!(["migrate"]),
        "the Job does not run `headend migrate`"
    );
    ensure!(
        kinds.iter().filter(|(k, _)| k == "Service").count() == 2,
        "the agents' and the API's Services"
    );
    Ok(())
}
