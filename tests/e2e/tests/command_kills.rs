//! Issue 28, item 3, acceptance: 200 setpoint commands while the headend
//! and the agent, both real processes, are SIGKILLed at random moments (at
//! least 50 kills). The simulated controller records every value it held
//! (the reference). At the end every command has an outcome (nothing stays
//! submitted, sent or acked) and every recorded outcome agrees with the
//! device: a command recorded `active` or `completed` had its value held,
//! one recorded rejected, expired, failed or cancelled never did, and
//! every value the device held belongs to an applied command.
//!
//! Before the fix: a command shown "never sent" had been applied (the
//! headend sent before recording), a command stayed `sent` for ever (the
//! agent died between storing the id and answering, then ignored the
//! redelivery), a write was recorded nowhere (the previous command stayed
//! `active`).
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

const COMMANDS: usize = 200;
const MIN_KILLS: usize = 50;
const SETPOINTS: &str = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n";

struct Procs {
    headend: Option<Child>,
    agent: Option<Child>,
    headend_args: Vec<String>,
    agent_config: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl Procs {
    fn spawn_headend(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("headend.log"))?;
        self.headend = Some(
            Command::new(bin("headend"))
                .args(&self.headend_args)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()?,
        );
        Ok(())
    }
    fn spawn_agent(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("agent.log"))?;
        self.agent = Some(
            Command::new(bin("edge-agent"))
                .args(["run", "--config"])
                .arg(&self.agent_config)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()?,
        );
        Ok(())
    }
    fn sigkill(child: &mut Option<Child>) -> Result<()> {
        if let Some(mut c) = child.take() {
            kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL)?;
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        let _ = Procs::sigkill(&mut self.headend);
        let _ = Procs::sigkill(&mut self.agent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_fifty_kills_of_headend_and_agent_end_as_the_device_saw_them() -> Result<()>
{
    let pki = TestPki::new(&["site-k"])?;
    let work = tempfile::tempdir()?;
    let db_url = sqlite_url(work.path());
    // the API key, made before the headend runs (it migrates the database)
    let key = {
        let db = headend::store::Db::connect(&db_url, 2).await?;
        let k = api_key(&db, "admin", None).await?;
        db.pool().close().await;
        k
    };
    let (grpc, http, enroll) = (free_port(), free_port(), free_port());
    let http_addr: SocketAddr = format!("127.0.0.1:{http}").parse()?;
    let sim = fast_sim().await?;
    sim.set_frozen(true);
    let base = agent_yaml(
        &pki,
        "site-k",
        format!("127.0.0.1:{grpc}").parse()?,
        &work.path().join("log"),
        &sim,
        100,
    );
    let yaml = with_controllers(&base, &[("ctl-1", 100.0, &sim)], SETPOINTS, "");
    let agent_config = work.path().join("site.yaml");
    std::fs::write(&agent_config, yaml)?;
    let mut p = Procs {
        headend: None,
        agent: None,
        headend_args: vec![
            format!("--grpc-listen=127.0.0.1:{grpc}"),
            format!("--http-listen=127.0.0.1:{http}"),
            format!("--enroll-listen=127.0.0.1:{enroll}"),
            format!("--database-url={db_url}"),
            format!("--pki-dir={}", pki.path().display()),
        ],
        agent_config,
        out: work.path().to_path_buf(),
    };
    p.spawn_headend()?;
    p.spawn_agent()?;
    e2e::register_token(http_addr, key);
    eventually("the agent's hello", Duration::from_secs(30), || async {
        let a = get_json(http_addr, "/api/v1/sites/site-k/assets").await;
        Ok(a.ok()
            .filter(|a| {
                a.as_array()
                    .is_some_and(|v| v.iter().any(|x| x["asset_id"] == "ctl-1"))
            })
            .map(|_| ()))
    })
    .await?;

    // 200 commands, each with its own value (0.25 kW steps), some with a
    // short expiry and some with a duration, so that every path is taken.
    // After every fourth one, one of the two processes is killed 0-150 ms
    // later (while the command is on its way through) and comes back
    // 0-400 ms after that.
    let mut values: BTreeMap<String, f32> = BTreeMap::new();
    let mut by: HashMap<&str, usize> = HashMap::new();
    for i in 0..COMMANDS {
        let v = 10.0 + 0.25 * i as f32;
        let mut body = json!({"kind": "setpoint", "asset": "site-k/ctl-1", "field": "power_limit", "value": v});
        match i % 5 {
            3 => body["expires_in_s"] = json!(2),
            4 => body["duration_s"] = json!(1),
            _ => {}
        }
        let id = submit_until_taken(
            http_addr,
            &format!("kill-{i}"),
            &body,
            Duration::from_secs(60),
        )
        .await?;
        values.insert(id, v);
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
            let which = if fastrand::bool() { "headend" } else { "agent" };
            if which == "headend" {
                Procs::sigkill(&mut p.headend)?;
            } else {
                Procs::sigkill(&mut p.agent)?;
            }
            *by.entry(which).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..400))).await;
            if which == "headend" {
                p.spawn_headend()?;
            } else {
                p.spawn_agent()?;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(50..250))).await;
        }
    }
    let kills: usize = by.values().sum();
    eprintln!("{kills} kills: {by:?}");
    ensure!(kills >= MIN_KILLS, "only {kills} kills");

    // every command reaches an outcome
    let settled = [
        "active",
        "completed",
        "rejected",
        "expired",
        "failed",
        "cancelled",
    ];
    let states: HashMap<String, (String, String)> = eventually(
        "every command has an outcome",
        Duration::from_secs(90),
        || async {
            let mut out = HashMap::new();
            for id in values.keys() {
                let Ok(c) = get_json(http_addr, &format!("/api/v1/commands/{id}")).await else {
                    return Ok(None);
                };
                let st = c["state"].as_str().unwrap_or("").to_string();
                if !settled.contains(&st.as_str()) {
                    return Ok(None);
                }
                out.insert(
                    id.clone(),
                    (st, c["reason"].as_str().unwrap_or("").to_string()),
                );
            }
            Ok(Some(out))
        },
    )
    .await
    .map_err(|e| {
        let log = std::fs::read_to_string(work.path().join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        anyhow::anyhow!("{e}; the agent's log ends:\n{}", tail.join("\n"))
    })?;

    // and agrees with what the device held
    let held = sim.power_limit_history();
    let held_set: Vec<f32> = held.clone();
    let mut wrong = Vec::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (id, v) in &values {
        let (st, reason) = &states[id];
        *tally.entry(format!("{st}/{reason}")).or_default() += 1;
        let device_held = held_set.contains(v);
        let applied = matches!(st.as_str(), "active" | "completed");
        // a cancelled command may have been applied before its cancel
        if st != "cancelled" && applied != device_held {
            wrong.push(format!(
                "{id} (value {v}): recorded {st}/{reason}, the device {} it",
                if device_held { "held" } else { "never held" }
            ));
        }
    }
    for v in &held {
        let ok = *v == 50.0 // the default a duration reverts to
            || *v == 0.0 // the controller before any write
            || values.iter().any(|(id, x)| {
                x == v && matches!(states[id].0.as_str(), "active" | "completed" | "cancelled")
            });
        if !ok {
            wrong.push(format!(
                "the device held {v}, which no applied command asked for"
            ));
        }
    }
    eprintln!("outcomes: {tally:?}; the device held {} values", held.len());
    for (id, (st, _)) in &states {
        let v = values[id];
        if (st != "cancelled" && matches!(st.as_str(), "active" | "completed") != held.contains(&v))
            || st == "active"
        {
            let c = get_json(http_addr, &format!("/api/v1/commands/{id}")).await?;
            let line: Vec<String> = c["timeline"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{} {} {} {}",
                        e["at_ms"], e["state"], e["reason"], e["detail"]
                    )
                })
                .collect();
            eprintln!("{id} value {v}:\n  {}", line.join("\n  "));
        }
    }
    ensure!(
        wrong.is_empty(),
        "records disagree with the device:\n{}",
        wrong.join("\n")
    );
    let active: Vec<&String> = states
        .iter()
        .filter(|(_, (st, _))| st == "active")
        .map(|(id, _)| id)
        .collect();
    ensure!(
        active.len() <= 1,
        "at most one command in force: {active:?}"
    );
    drop(p);
    Ok(())
}
