//! A site behind a slow link (issue 30): the demo site (the real
//! `atg-sim` and `edge-agent` binaries, `configs/site-demo.yaml`) in its own
//! network namespace, reaching an in-process headend over a veth pair whose
//! two ends are limited by `tc tbf`. Bytes are read off the veth (what the
//! link carried: Ethernet, IP, TCP, TLS, HTTP/2, gRPC and the messages).
//! Used by the `slow_link` tests and the `link_bench` program.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{TestPki, bin, eventually, get_json, post_json};

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn tc(args: &[&str]) -> Result<()> {
    run("tc", args)
}

/// A network namespace joined to this one by a veth pair: `host_ip` here,
/// `ns_ip` inside. Removed on drop.
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub host_ip: String,
    pub ns_ip: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Netns> {
        let n = std::process::id() % 200 + u32::from(fastrand::u8(0..50));
        let name = format!("tw-{tag}-{}", std::process::id());
        let host_if = format!("twh{n}");
        let ns_if = format!("tws{n}");
        let (host_ip, ns_ip) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &host_if]);
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            host_if,
            host_ip,
            ns_ip,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        let inside = |a: &[&str]| {
            let mut v = vec!["netns", "exec", &ns.name, "ip"];
            v.extend_from_slice(a);
            ip(&v)
        };
        inside(&["addr", "add", &format!("{}/24", ns.ns_ip), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        // the peer's end is named for `shape`
        inside(&["link", "set", &ns_if, "name", "uplink0"])?;
        inside(&["link", "set", "uplink0", "up"])?;
        Ok(ns)
    }

    /// Limits both directions to `kbit` kbit/s with a token bucket (a
    /// 4G router's queue: up to 2 s of data waits, the rest is dropped).
    pub fn shape(&self, kbit: u32) -> Result<()> {
        let rate = format!("{kbit}kbit");
        for (exec, dev) in [(false, self.host_if.as_str()), (true, "uplink0")] {
            let mut a: Vec<&str> = Vec::new();
            if exec {
                a.extend_from_slice(&["-n", &self.name]);
            }
            a.extend_from_slice(&[
                "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "4kb",
                "latency", "2s",
            ]);
            tc(&a)?;
        }
        Ok(())
    }

    /// Takes the link down (packets stop; sockets stay open) or up.
    pub fn set_link(&self, up: bool) -> Result<()> {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }])
    }

    /// Bytes the link carried: (from the site, to the site), as the host's
    /// end of the veth counted them.
    pub fn bytes(&self) -> Result<(u64, u64)> {
        let read = |what: &str| -> Result<u64> {
            let p = format!("/sys/class/net/{}/statistics/{what}", self.host_if);
            Ok(std::fs::read_to_string(&p)
                .with_context(|| p.clone())?
                .trim()
                .parse()?)
        };
        Ok((read("rx_bytes")?, read("tx_bytes")?))
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo site in a namespace, streaming to a headend here.
pub struct Site {
    pub ns: Netns,
    pub he: headend::Running,
    pub work: tempfile::TempDir,
    _pki: TestPki,
    sim: Option<Killed>,
    agent: Option<Killed>,
    status_port: u16,
}

pub const SITE: &str = "demo-site";

impl Site {
    /// The namespace, the simulator in it, and a headend listening on the
    /// veth (no agent yet).
    pub async fn start(tag: &str) -> Result<Site> {
        let ns = Netns::new(tag)?;
        let pki = TestPki::new(&[SITE])?;
        let work = tempfile::tempdir()?;
        let mut cfg = crate::headend_config(&pki, &crate::sqlite_url(work.path()), 0);
        cfg.grpc_listen = SocketAddr::new(ns.host_ip.parse()?, 0);
        let he = crate::start_headend(cfg).await?;
        let mut site = Site {
            ns,
            he,
            work,
            _pki: pki,
            sim: None,
            agent: None,
            status_port: 9470,
        };
        site.run_sim(1)?;
        Ok(site)
    }

    /// (Re)starts the simulator in the namespace, `speedup` times as fast
    /// as real time in steps `speedup` times as short: a poller `speedup`
    /// times as fast sees what 1-s polls see (a backlog of realistic
    /// readings in a fraction of the time).
    pub fn run_sim(&mut self, speedup: u64) -> Result<()> {
        self.sim = None;
        let speedup = speedup.max(1);
        let sim = self
            .ns
            .command(&bin("atg-sim"))
            .args([
                "--listen",
                "127.0.0.1:5020",
                "--veeder-root",
                "127.0.0.1:10001",
                "--tanks",
                "4",
                "--speed",
                &speedup.to_string(),
                "--tick-ms",
                &(200 / speedup).max(1).to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.sim = Some(Killed(sim));
        Ok(())
    }

    /// The demo's agent configuration pointed at this headend, its devices
    /// polled `speedup` times as often (to build a backlog fast).
    pub fn yaml(&self, speedup: u64, uplink: &Value) -> Result<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut y: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
            root.join("configs/site-demo.yaml"),
        )?)?;
        let files = self._pki.agent_files(SITE);
        let set = |y: &mut serde_yaml::Value, k: &str, v: serde_yaml::Value| {
            y[k] = v;
        };
        set(
            &mut y,
            "headend",
            serde_yaml::to_value(json!({
                "address": self.he.grpc_addr.to_string(), "server_name": "localhost"
            }))?,
        );
        set(
            &mut y,
            "tls",
            serde_yaml::to_value(json!({
                "cert": files.cert, "key": files.key, "ca": files.ca
            }))?,
        );
        y["log"]["dir"] = serde_yaml::to_value(self.work.path().join("log"))?;
        y["status"]["listen"] = format!("127.0.0.1:{}", self.status_port).into();
        let mut up =
            serde_yaml::to_value(json!({"backoff_initial_ms": 500, "backoff_max_ms": 5000}))?;
        if let (Some(m), Some(extra)) = (up.as_mapping_mut(), uplink.as_object()) {
            for (k, v) in extra {
                m.insert(k.as_str().into(), serde_yaml::to_value(v)?);
            }
        }
        y["uplink"] = up;
        if let Some(devs) = y["devices"].as_sequence_mut() {
            for d in devs {
                if let Some(m) = d.as_mapping_mut() {
                    // Modbus polls as fast as asked; a Veeder-Root console no faster than 1 s
                    for (_, dev) in m.iter_mut().filter(|(k, _)| k.as_str() == Some("modbus")) {
                        if let Some(p) = dev["poll_interval_ms"].as_u64() {
                            dev["poll_interval_ms"] = (p / speedup.max(1)).max(20).into();
                        }
                    }
                }
            }
        }
        Ok(serde_yaml::to_string(&y)?)
    }

    /// Starts (or restarts) the agent in the namespace with `yaml`.
    pub fn run_agent(&mut self, yaml: &str) -> Result<()> {
        self.agent = None;
        let p = self.work.path().join("site.yaml");
        std::fs::write(&p, yaml)?;
        let log = std::fs::File::create(self.work.path().join("agent.log"))?;
        let child = self
            .ns
            .command(&bin("edge-agent"))
            .args(["run", "--config"])
            .arg(&p)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.agent = Some(Killed(child));
        Ok(())
    }

    pub fn stop_agent(&mut self) {
        self.agent = None;
    }

    /// The agent's `/status`, read inside the namespace (it does not cross the link).
    pub fn status(&self) -> Result<Value> {
        let out = self
            .ns
            .command(Path::new("curl"))
            .args([
                "-sf",
                &format!("http://127.0.0.1:{}/status", self.status_port),
            ])
            .output()?;
        ensure!(out.status.success(), "the agent's /status does not answer");
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub async fn wait_status(&self, timeout: Duration) -> Result<Value> {
        eventually("the agent's /status", timeout, || async {
            Ok(self.status().ok())
        })
        .await
    }

    /// Readings the headend stored for the site.
    pub async fn stored(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM readings_wide WHERE site_id = $1")
                .bind(SITE)
                .fetch_one(self.he.db.pool())
                .await?,
        )
    }

    /// Sessions the agent opened so far (from its `/status`).
    pub fn sessions(&self) -> Result<u64> {
        Ok(self.status()?["uplink"]["sessions"].as_u64().unwrap_or(0))
    }

    /// Issues a power-limit setpoint and waits for it to show `active` with
    /// its read-back; returns how long that took.
    pub async fn command_active(&self, value: f64, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        let (code, c) = post_json(
            self.he.http_addr,
            "/api/v1/commands",
            &json!({"kind": "setpoint", "asset": format!("{SITE}/ctl-1"), "field": "power_limit", "value": value, "duration_s": 3600}),
        )
        .await?;
        ensure!(code == 201, "{code}: {c}");
        let id = c["command_id"].as_str().unwrap_or_default().to_string();
        let active = crate::wait_state(self.he.http_addr, &id, "active", timeout)
            .await
            .with_context(|| format!("command {id} within {timeout:?}"))?;
        ensure!(active["readback"] == json!(value), "read back: {active}");
        Ok(t.elapsed())
    }

    /// Whether every stored seq is stored once (sequence numbers).
    pub async fn duplicates(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) - COUNT(DISTINCT seq) FROM readings_wide WHERE site_id = $1",
        )
        .bind(SITE)
        .fetch_one(self.he.db.pool())
        .await?)
    }

    /// Waits for the headend to know the site (the agent's hello arrived).
    pub async fn connected(&self, timeout: Duration) -> Result<()> {
        eventually("the agent's hello", timeout, || async {
            let a = get_json(self.he.http_addr, &format!("/api/v1/sites/{SITE}/assets")).await;
            Ok(a.ok()
                .filter(|a| a.as_array().is_some_and(|v| !v.is_empty()))
                .map(|_| ()))
        })
        .await
    }
}

/// Fails unless `ip netns` and `tc` work here (root, iproute2).
pub fn available() -> Result<()> {
    let probe = Netns::new("probe")?;
    probe.shape(64)?;
    drop(probe);
    if !Path::new("/usr/bin/curl").exists() && !Path::new("/bin/curl").exists() {
        bail!("curl is missing (reads the agent's /status inside the namespace)");
    }
    Ok(())
}
