//! Test harness for the end-to-end tests: a throwaway PKI, an in-process
//! headend, agent configs for the ATG simulator, the built binaries, and
//! REST/SQL helpers. Every test uses loopback sockets, real TLS and a real
//! database file.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tankwatch_proto::v1;

/// A temporary directory with a CA, a headend certificate and agent certificates.
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new(sites: &[&str]) -> Result<TestPki> {
        let dir = tempfile::tempdir()?;
        tankwatch_pki::bootstrap(dir.path(), sites, 30)?;
        Ok(TestPki { dir })
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn agent_files(&self, site: &str) -> tankwatch_tls::TlsFiles {
        TestPki::files_in(self.path(), site)
    }
    /// A site's agent files in a PKI directory made by `bootstrap`.
    pub fn files_in(dir: &Path, site: &str) -> tankwatch_tls::TlsFiles {
        tankwatch_tls::TlsFiles {
            cert: dir.join(format!("agent-{site}.pem")),
            key: dir.join(format!("agent-{site}.key")),
            ca: dir.join("ca.pem"),
        }
    }
}

/// A free port for a test's listener (bound and released), chosen below
/// the kernel's ephemeral range: a port from that range (what binding
/// port 0 gives) can be taken by any outgoing connection between this
/// check and the listener's bind, and the idle-connection tests open
/// thousands beside the others (a node-opcua peer failed to listen three
/// times in a row that way). Free on 127.0.0.1 and on `[::]`, where some
/// peers listen. Falls back to port 0's choice when the range leaves no
/// room below it.
/// A site id the test knows is one.
pub fn sid(site: &str) -> headend::domain::SiteId {
    headend::domain::SiteId::parse(site).expect("a site id")
}

pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            r.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let free = |p: u16| {
        std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && match std::net::TcpListener::bind(("::", p)) {
                Ok(_) => true,
                Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
            }
    };
    if low > 12_000 {
        let span = u64::from(low - 11_000);
        for _ in 0..200 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            let p = 10_000 + (h.finish() % span) as u16;
            if free(p) {
                return p;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Headend config on loopback with the given ports (0 = any) and database.
pub fn headend_config(pki: &TestPki, db_url: &str, grpc_port: u16) -> headend::Config {
    let mut c = headend::Config::with_pki_dir(pki.path().to_path_buf(), db_url.to_string());
    c.grpc_listen = SocketAddr::from(([127, 0, 0, 1], grpc_port));
    c.http_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.enroll_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    c
}

/// A SQLite URL for a file inside `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("headend.db").display())
}

/// Agent YAML for `site` reading the simulator at `sim`, talking to `headend`.
pub fn agent_yaml(
    pki: &TestPki,
    site: &str,
    headend: SocketAddr,
    log_dir: &Path,
    sim: &atg_sim::Simulator,
    poll_ms: u64,
) -> String {
    let f = pki.agent_files(site);
    format!(
        "site_id: {site}\nheadend:\n  address: \"{headend}\"\n  server_name: localhost\ntls:\n  cert: {}\n  key: {}\n  ca: {}\nlog:\n  dir: {}\n  flush_interval_ms: 50\nuplink:\n  backoff_initial_ms: 100\n  backoff_max_ms: 1000\n  linger_ms: 0\nstatus:\n  listen: \"127.0.0.1:0\"\n{}",
        f.cert.display(),
        f.key.display(),
        f.ca.display(),
        log_dir.display(),
        atg_sim::agent_yaml_fragment(sim.addr, &sim.tanks(), poll_ms)
    )
}

/// The top of an agent YAML for `site` (headend, TLS files, a fast log and
/// uplink, `/status` on `status`), to which a test adds `assets:` and
/// `devices:`.
pub fn agent_head(
    pki: &TestPki,
    site: &str,
    headend: SocketAddr,
    log_dir: &Path,
    status: &str,
) -> String {
    let f = pki.agent_files(site);
    format!(
        "site_id: {site}\nheadend: {{ address: \"{headend}\", server_name: localhost }}\ntls: {{ cert: {}, key: {}, ca: {} }}\nlog: {{ dir: {}, flush_interval_ms: 50 }}\nuplink: {{ backoff_initial_ms: 100, backoff_max_ms: 1000, linger_ms: 0 }}\nstatus: {{ listen: \"{status}\" }}\n",
        f.cert.display(),
        f.key.display(),
        f.ca.display(),
        log_dir.display()
    )
}

/// Writes `yaml` to `dir/site.yaml` and loads it as the agent would.
pub fn agent_config(dir: &Path, yaml: &str) -> Result<edge_agent::AgentConfig> {
    let p = dir.join("site.yaml");
    std::fs::write(&p, yaml)?;
    Ok(edge_agent::config::load(&p)?)
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The latest value of `asset.field` of `site` on the REST API.
pub async fn latest_value(
    http: SocketAddr,
    site: &str,
    asset: &str,
    field: &str,
) -> Result<Option<f64>> {
    let assets = get_json(http, &format!("/api/v1/sites/{site}/assets")).await?;
    Ok(assets
        .as_array()
        .and_then(|a| a.iter().find(|x| x["asset_id"] == asset))
        .and_then(|a| a["fields"][field]["value"].as_f64()))
}

/// Waits (30 s at most) until `asset.field` of `site` is `want` ± `tol` on the REST API.
pub async fn wait_value(
    http: SocketAddr,
    site: &str,
    asset: &str,
    field: &str,
    want: f64,
    tol: f64,
) -> Result<()> {
    eventually(
        &format!("{asset}.{field} = {want} ± {tol}"),
        Duration::from_secs(30),
        || async {
            Ok(latest_value(http, site, asset, field)
                .await?
                .filter(|v| (v - want).abs() <= tol)
                .map(|_| ()))
        },
    )
    .await
}

/// The device `name` of `site` as the headend shows it (`/devices`).
pub async fn site_device(http: SocketAddr, site: &str, name: &str) -> Result<Value> {
    let d = get_json(http, &format!("/api/v1/sites/{site}/devices")).await?;
    d.as_array()
        .and_then(|a| a.iter().find(|x| x["device"] == name).cloned())
        .with_context(|| format!("no device {name} at site {site}: {d}"))
}

fn tokens() -> &'static std::sync::Mutex<std::collections::HashMap<SocketAddr, String>> {
    static T: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<SocketAddr, String>>> =
        std::sync::OnceLock::new();
    T.get_or_init(Default::default)
}

/// Starts a headend and makes an admin API key for the REST helpers
/// ([`get_json`], [`send_json`]; [`auth`] for raw requests).
pub async fn start_headend(cfg: headend::Config) -> Result<headend::Running> {
    let he = headend::start(cfg).await?;
    let key = api_key(&he.db, "admin", None).await?;
    tokens()
        .lock()
        .map_err(|_| anyhow::anyhow!("token registry poisoned"))?
        .insert(he.http_addr, key);
    Ok(he)
}

/// What many end-to-end tests start from: the PKI of one site, a work
/// directory, a simulator whose values stand still until the test moves
/// them, and a headend on SQLite (set up by `tweak`). The test starts the
/// agent with [`Bench::agent_yaml`], pointed where it wants.
pub struct Bench {
    pub site: String,
    pub pki: TestPki,
    pub work: tempfile::TempDir,
    pub sim: atg_sim::Simulator,
    pub he: headend::Running,
}

impl Bench {
    pub async fn start(site: &str, tweak: impl FnOnce(&mut headend::Config)) -> Result<Bench> {
        let pki = TestPki::new(&[site])?;
        let work = tempfile::tempdir()?;
        let sim = atg_sim::Simulator::start("127.0.0.1:0".parse()?, atg_sim::SimConfig::default())
            .await?;
        sim.set_frozen(true);
        let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
        tweak(&mut cfg);
        let he = start_headend(cfg).await?;
        Ok(Bench {
            site: site.into(),
            pki,
            work,
            sim,
            he,
        })
    }

    /// The agent's YAML for every simulated tank over Modbus (polled every
    /// `poll_ms`), its uplink to `headend`.
    pub fn agent_yaml(&self, headend: SocketAddr, poll_ms: u64) -> String {
        agent_yaml(
            &self.pki,
            &self.site,
            headend,
            &self.work.path().join("log"),
            &self.sim,
            poll_ms,
        )
    }

    /// Starts the agent with `yaml`.
    pub fn agent(&self, yaml: &str) -> Result<edge_agent::Agent> {
        Ok(edge_agent::start(agent_config(self.work.path(), yaml)?)?)
    }
}

/// A new API key with `role` (and a site scope), as an admin would make it.
pub async fn api_key(
    db: &headend::store::Db,
    role: &str,
    sites: Option<Vec<String>>,
) -> Result<String> {
    let (_, key) = headend::services::admin::add_key(
        db,
        &headend::domain::Grant::root(),
        headend::services::admin::NewKey {
            name: format!("e2e-{role}"),
            role: role.into(),
            sites,
            expires_in_days: None,
        },
        &headend::domain::Actor::Headend {
            task: Some("e2e".into()),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(key)
}

/// Registers `key` as the admin key of a headend at `http` (one a test
/// runs as a process), for [`auth`] and the request helpers.
pub fn register_token(http: SocketAddr, key: String) {
    if let Ok(mut t) = tokens().lock() {
        t.insert(http, key);
    }
}

/// The admin key of the headend at `http` (made by [`start_headend`]).
pub fn token_of(http: SocketAddr) -> String {
    tokens()
        .lock()
        .ok()
        .and_then(|t| t.get(&http).cloned())
        .unwrap_or_default()
}

/// `Authorization: Bearer` with the admin key of the headend at `http`.
pub fn auth(http: SocketAddr) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", token_of(http)))
}

/// Records a hello for `site` with one 20,000 L tank `tank-1` (a site to
/// read and command without running an agent).
pub async fn tank_site(db: &headend::store::Db, site: &str) -> Result<()> {
    tank_site_with(db, site, &[]).await
}

/// [`tank_site`] with writable points on the tank (`field`, min, max).
pub async fn tank_site_with(
    db: &headend::store::Db,
    site: &str,
    writable: &[(&str, f64, f64)],
) -> Result<()> {
    let h = tankwatch_proto::fixtures::tank_hello(site, writable);
    db.record_hello(headend::store::HelloInfo { site, hello: &h })
        .await?;
    Ok(())
}

/// GET with the admin key of the headend at `http` (any status).
pub async fn get(http: SocketAddr, path: &str) -> Result<reqwest::Response> {
    let (k, v) = auth(http);
    Ok(reqwest::Client::new()
        .get(format!("http://{http}{path}"))
        .header(k, v)
        .send()
        .await?)
}

/// GET a JSON document from the REST API.
pub async fn get_json(http: SocketAddr, path: &str) -> Result<Value> {
    let (k, v) = auth(http);
    let r = reqwest::Client::new()
        .get(format!("http://{http}{path}"))
        .header(k, v)
        .send()
        .await?;
    let status = r.status();
    let body = r.text().await?;
    if !status.is_success() {
        bail!("GET {path}: {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

/// The stored seqs of one site's readings, ascending, with duplicates kept.
pub async fn stored_seqs(db: &headend::store::Db, site: &str) -> Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT seq FROM readings_wide WHERE site_id = $1 ORDER BY seq")
            .bind(site)
            .fetch_all(db.pool())
            .await?,
    )
}

/// A unit's sandbox, emulated from its directives (run inside the
/// driver's mount namespace, after the install steps): the unit in
/// `$UNIT` (default: the agent's, as the guide installs it), its user and
/// group, `EnvironmentFile=`, `WorkingDirectory=`, every mount read-only
/// but its state and `ReadWritePaths=`, a private `/tmp`, an empty
/// `/home`, no new privileges, no capabilities, its umask and file limit
/// (systemd is not PID 1 here: `unshare` and `setpriv` stand in for it).
pub const UNIT_SANDBOX: &str = r#"
unit=${UNIT:-/etc/systemd/system/tankwatch-agent.service}
get() { sed -n "s/^$1=//p" "$unit" | tail -1; }
user=$(get User); group=$(get Group)
[ -n "$user" ] && [ -n "$group" ] || { echo "unit: no User= or Group="; exit 1; }
[ "$(get ProtectSystem)" = strict ] || { echo "unit: ProtectSystem is not strict"; exit 1; }
state=/var/lib/$(get StateDirectory)
pre=$(get ExecStartPre); start=$(get ExecStart)
systemd-analyze verify "$unit"
systemd-analyze security --offline=yes --threshold=30 "$unit" > /tmp/security.txt \
  || { tail -1 /tmp/security.txt; echo "unit: exposure above 3.0"; exit 1; }
tail -1 /tmp/security.txt
exec unshare --mount --propagation private bash -euo pipefail -c '
  unit=$1; state=$2; user=$3; group=$4; pre=$5; start=$6
  get() { sed -n "s/^$1=//p" "$unit" | tail -1; }
  # StateDirectory= and ReadWritePaths=: their own mounts, left writable
  writable="$state $(get ReadWritePaths)"
  for p in $writable; do mount --bind "$p" "$p"; done
  # ProtectSystem=strict: every other mount read-only (not /dev, /proc, /sys)
  awk "{print \$5}" /proc/self/mountinfo | sort -u | while read -r m; do
    case " $writable " in *" $m "*) continue;; esac
    case "$m" in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue;; esac
    mount -o remount,bind,ro "$m" 2>/dev/null || true
  done
  # PrivateTmp= and ProtectHome=
  if [ "$(get PrivateTmp)" = yes ]; then
    mount -t tmpfs -o mode=1777 tmpfs /tmp; mount -t tmpfs -o mode=1777 tmpfs /var/tmp
  fi
  if [ "$(get ProtectHome)" = yes ]; then
    for d in /home /root /run/user; do [ -d "$d" ] && mount -t tmpfs -o ro,mode=0755 tmpfs "$d"; done
  fi
  # LimitNOFILE= (capped at the hard limit of this machine: root may not raise it here)
  n=$(get LimitNOFILE); [ -n "$n" ] && { ulimit -n "$n" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }
  [ -n "$(get UMask)" ] && umask "$(get UMask)"
  caps=()
  [ "$(get NoNewPrivileges)" = yes ] && caps+=(--no-new-privs)
  [ -z "$(get CapabilityBoundingSet)" ] && caps+=(--bounding-set=-all --inh-caps=-all)
  [ -z "$(get AmbientCapabilities)" ] && caps+=(--ambient-caps=-all)
  as=(setpriv --reuid="$user" --regid="$group" --init-groups "${caps[@]}" --)
  envf=$(get EnvironmentFile)
  if [ -n "$envf" ]; then set -a; . "${envf#-}"; set +a; fi
  wd=$(get WorkingDirectory)
  cd "${wd:-/}"
  echo "sandbox: ready; writable: $writable"
  if [ -n "$pre" ]; then "${as[@]}" $pre; fi
  exec "${as[@]}" $start
' sandbox "$unit" "$state" "$user" "$group" "$pre" "$start"
"#;

/// The repository's root (for the files the project ships).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python of the independent peers (`target/pyenv`, made by
/// scripts/test.sh from tests/peers/requirements.txt; `TANKWATCH_PYTHON`
/// overrides it).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TANKWATCH_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh, which creates it with the pinned peers of tests/peers/requirements.txt",
        p.display()
    );
    p
}

/// The Node.js modules of the independent peers written in JavaScript
/// (`target/nodeenv/node_modules`, installed by scripts/test.sh from
/// tests/peers/package.json).
pub fn node_modules() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/nodeenv/node_modules");
    assert!(
        p.join("node-opcua").exists(),
        "{} is missing node-opcua: run scripts/test.sh, which installs the pinned peers of tests/peers/package.json",
        p.display()
    );
    p
}

/// A peer script of tests/peers/.
pub fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../peers")
        .join(name)
}

/// A Python (or, for `.js`, Node.js) peer of tests/peers/ driven line by line: it prints `READY`
/// once serving, then answers each command line with `OK`. Other lines it
/// prints are notices (e.g. `REBIRTH`): `cmd` counts those listed in
/// `notices`; anything else is an error. Killed when dropped.
pub struct LinePeer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::io::BufReader<std::process::ChildStdout>,
    notices: &'static [&'static str],
}

impl LinePeer {
    pub fn start(
        script: &str,
        args: &[String],
        notices: &'static [&'static str],
    ) -> Result<LinePeer> {
        use std::process::{Command, Stdio};
        let mut cmd = if script.ends_with(".js") {
            let mut c = Command::new("node");
            c.env("NODE_PATH", node_modules());
            c
        } else {
            Command::new(python())
        };
        // a JavaScript peer's stderr is kept: why it failed to start shows
        // in the test's output
        let stderr = if script.ends_with(".js") {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = cmd
            .arg(peer_script(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {script}"))?;
        let stdin = child.stdin.take().context("stdin")?;
        let out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        let mut p = LinePeer {
            child,
            stdin,
            out,
            notices,
        };
        p.until("READY", "start")?;
        Ok(p)
    }

    /// Reads lines until one that is `want` or starts with `want `;
    /// returns how many notices came before it and the rest of that line.
    fn until(&mut self, want: &str, what: &str) -> Result<(usize, String)> {
        use std::io::BufRead;
        let mut notices = 0;
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line)? == 0 {
                bail!("peer exited during {what:?}");
            }
            let l = line.trim();
            if l == want {
                return Ok((notices, String::new()));
            }
            if let Some(rest) = l.strip_prefix(want).and_then(|r| r.strip_prefix(' ')) {
                return Ok((notices, rest.to_string()));
            }
            if self.notices.contains(&l) {
                notices += 1;
            } else {
                bail!("peer said {l:?} to {what:?}");
            }
        }
    }

    /// Sends one command; waits for its OK; returns the notices seen meanwhile.
    pub fn cmd(&mut self, c: &str) -> Result<usize> {
        Ok(self.query(c)?.0)
    }

    /// Sends one command to a peer that answers `OK [rest]` or `ERR why`:
    /// `Ok(rest)` or `Err(why)` (other lines are an error).
    pub fn ask(&mut self, c: &str) -> Result<std::result::Result<String, String>> {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{c}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.out.read_line(&mut line)? == 0 {
            bail!("peer exited during {c:?}");
        }
        let l = line.trim_end();
        if l == "OK" {
            return Ok(Ok(String::new()));
        }
        if let Some(rest) = l.strip_prefix("OK ") {
            return Ok(Ok(rest.to_string()));
        }
        match l.strip_prefix("ERR ") {
            Some(why) => Ok(Err(why.to_string())),
            None => bail!("peer said {l:?} to {c:?}"),
        }
    }

    /// The peer's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command; returns the notices seen and what followed `OK`.
    pub fn query(&mut self, c: &str) -> Result<(usize, String)> {
        use std::io::Write;
        writeln!(self.stdin, "{c}")?;
        self.stdin.flush()?;
        self.until("OK", c)
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the release agent binary (benchmarks: `cargo build --release -p
/// edge-agent` first) on `dir/site.yaml`, written from `yaml`; warnings
/// and errors on stderr.
pub fn spawn_release_agent(dir: &Path, yaml: &str) -> Result<std::process::Child> {
    use std::process::{Command, Stdio};
    let cfg = dir.join("site.yaml");
    std::fs::write(&cfg, yaml)?;
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/edge-agent");
    if !exe.exists() {
        bail!(
            "{} is missing: cargo build --release -p edge-agent",
            exe.display()
        );
    }
    Ok(Command::new(exe)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// Path of a workspace binary built by `cargo build --bins` (the README's
/// test command builds them before running the tests).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which scripts/test.sh does)",
        p.display()
    );
    p
}

/// The independent SCADA client (asyncua, tests/peers/scada_client.py)
/// of the agent's OPC UA server, driven command by command.
pub struct ScadaClient(LinePeer);

impl ScadaClient {
    /// Starts the client; its certificate is made in `dir`.
    pub fn start(dir: &Path) -> Result<ScadaClient> {
        Ok(ScadaClient(LinePeer::start(
            "scada_client.py",
            &[dir.display().to_string()],
            &[],
        )?))
    }
    /// One command (the peer answers over a pipe: blocking, so off the runtime's workers).
    pub fn ask(&mut self, c: &str) -> Result<std::result::Result<String, String>> {
        tokio::task::block_in_place(|| self.0.ask(c))
    }
    /// One command that must succeed.
    pub fn ok(&mut self, c: &str) -> Result<String> {
        self.ask(c)?.map_err(|e| anyhow::anyhow!("{c}: {e}"))
    }
    /// One command answering JSON.
    pub fn json(&mut self, c: &str) -> Result<Value> {
        Ok(serde_json::from_str(&self.ok(c)?)?)
    }
}

/// The REST API's view of `asset.field` of `site` (value, quality, times),
/// if the site has it.
pub async fn asset_field(
    http: SocketAddr,
    site: &str,
    asset: &str,
    field: &str,
) -> Result<Option<Value>> {
    let assets = get_json(http, &format!("/api/v1/sites/{site}/assets")).await?;
    Ok(assets
        .as_array()
        .and_then(|a| a.iter().find(|x| x["asset_id"] == asset))
        .map(|a| a["fields"][field].clone())
        .filter(|f| !f.is_null()))
}

/// Throwaway PostgreSQL databases on the machine's server
/// (`PG_ADMIN_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
pub mod accuracy;

/// The seeds a benchmark program was given on its command line, or
/// `default` when none.
pub fn seeds_from_args(default: &[u64]) -> Vec<u64> {
    let given: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    if given.is_empty() {
        default.to_vec()
    } else {
        given
    }
}
pub mod fleet_fill;
pub mod forecast_eval;
pub mod notify_peers;
pub mod private_pg;
pub mod prometheus;
pub mod slowlink;
pub use notify_peers::{KeptMail, PostfixSink, SmtpSink, WebhookReceiver};
pub use private_pg::{Haproxy, HeadendProcess, Pgbouncer, PrivatePg};

pub mod pg {
    use anyhow::{Context, Result};
    use sqlx::Connection;

    pub struct TempDb {
        pub url: String,
        name: String,
        admin: String,
    }

    fn admin_url() -> String {
        std::env::var("PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// Creates an empty database with a random name.
    pub async fn fresh_database() -> Result<TempDb> {
        let admin = admin_url();
        let name = format!(
            "tw_e2e_{}",
            std::process::id() as u64 * 1_000_000 + u64::from(rand_u32() % 1_000_000)
        );
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .with_context(|| format!("PostgreSQL at {admin} (start it: see .ci/run)"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Ok(TempDb {
            url: format!("{base}/{name}"),
            name,
            admin,
        })
    }

    fn rand_u32() -> u32 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        t ^ (std::process::id() << 7)
    }

    impl TempDb {
        pub async fn drop(self) -> Result<()> {
            let mut c = sqlx::PgConnection::connect(&self.admin).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut c)
            .await?;
            Ok(())
        }
    }
}

/// GET a Prometheus text page (with the headend's admin key when `addr`
/// is a headend started by [`start_headend`]).
pub async fn get_text(addr: SocketAddr, path: &str) -> Result<String> {
    let r = get(addr, path).await?;
    let status = r.status();
    let body = r.text().await?;
    if !status.is_success() {
        bail!("GET {path}: {status}: {body}");
    }
    Ok(body)
}

/// The value of one sample (`name` including labels, e.g. `x_total{class="a"}`) in a metrics page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A TCP proxy the test can cut: while down it drops every connection,
/// open or new, as a database outage (or a network partition) would. It
/// can also freeze the connections open now: they stop forwarding in both
/// directions but stay open (a NAT that forgot them, a dead link without
/// a reset), while new connections pass.
pub struct TcpProxy {
    pub addr: SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections numbered below this are frozen.
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Result<TcpProxy> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> =
            Default::default();
        let frozen_below = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, conns2, hold2) = (up.clone(), conns.clone(), hold.clone());
        let (frozen2, accepted2) = (frozen_below.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection reset
                }
                let n = accepted2.fetch_add(1, Ordering::SeqCst);
                let hold = hold2.clone();
                let (frozen_up, frozen_down) = (frozen2.clone(), frozen2.clone());
                // a frozen connection never forwards again and never closes
                let frozen = move |f: &std::sync::atomic::AtomicU64| n < f.load(Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    // client -> server stops while held (bytes stay unread)
                    let up = async move {
                        let mut buf = vec![0u8; 16384];
                        loop {
                            while hold.load(Ordering::SeqCst) || frozen(&frozen_up) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    // read while not held, but held now: keep it back too
                                    while hold.load(Ordering::SeqCst) || frozen(&frozen_up) {
                                        tokio::time::sleep(Duration::from_millis(10)).await;
                                    }
                                    if sw.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 16384];
                        loop {
                            match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    while frozen(&frozen_down) {
                                        tokio::time::sleep(Duration::from_millis(10)).await;
                                    }
                                    if cw.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    tokio::join!(up, down);
                });
                conns2
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(task.abort_handle());
            }
        });
        Ok(TcpProxy {
            addr,
            up,
            hold,
            frozen_below,
            accepted,
            conns,
        })
    }

    /// Freezes every connection open now (both directions stop, nothing
    /// is closed); later connections pass.
    pub fn freeze_open(&self) {
        use std::sync::atomic::Ordering;
        self.frozen_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Holds (true) or releases the client -> server direction: what the
    /// client sends waits unread while server -> client keeps flowing.
    pub fn set_hold(&self, hold: bool) {
        self.hold.store(hold, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection open now (as a device that drops idle
    /// connections, or a gateway restart, does); new ones pass.
    pub fn drop_connections(&self) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }

    /// Refuses (false) or passes (true) new connections, leaving the open
    /// ones as they are (frozen ones stay frozen).
    pub fn set_accepting(&self, accepting: bool) {
        self.up
            .store(accepting, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cuts (false) or restores (true) the path.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for c in self
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                c.abort();
            }
        }
    }
}

/// Runs `adapter` as the agent would (its own when-full policy, `health`)
/// and hands its readings to the returned channel (64 deep; the adapter's
/// policy applies when it is full). Gaps are logged and skipped.
pub fn run_adapter(
    adapter: Box<dyn adapter_api::Adapter>,
    health: adapter_api::Health,
    writes: tokio::sync::mpsc::Receiver<adapter_api::WriteRequest>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::mpsc::Receiver<adapter_api::Reading> {
    let (etx, mut erx) = tokio::sync::mpsc::channel(64);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let sink = adapter_api::Sink::new(etx, adapter.when_full(), adapter.name(), health);
    tokio::spawn(adapter.run(sink, writes, stop));
    tokio::spawn(async move {
        while let Some(e) = erx.recv().await {
            match e {
                adapter_api::Event::Reading(r) => {
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
                adapter_api::Event::Gap(g) => eprintln!("adapter gap: {g:?}"),
                adapter_api::Event::Delivery(d) => eprintln!("gauge delivery: {d:?}"),
            }
        }
    });
    rx
}

/// Simulates a long outage: `n` readings (rotating over tank-1..4,
/// `volume`, 1 ms apart, starting an hour ago) appended to the agent log in
/// `log_dir` as the log writer would.
pub fn fill_backlog(log_dir: &Path, n: u64) -> Result<()> {
    let log = sflog::Log::open(log_dir, &sflog::Options::default())?;
    let base = adapter_api::now_ms() - 3_600_000;
    for chunk in 0..n.div_ceil(1000) {
        let items: Vec<_> = (0..1000.min(n - chunk * 1000))
            .map(|i| {
                let k = (chunk * 1000 + i) as i64;
                let r = adapter_api::Reading {
                    asset_id: format!("tank-{}", k % 4 + 1),
                    field: "volume".into(),
                    value: 10_000.0 + k as f64,
                    unit: "L".into(),
                    quality: adapter_api::Quality::Good,
                    source_ts_ms: base + k,
                    received_ts_ms: base + k,
                    source: "modbus://backlog".into(),
                    error: String::new(),
                    class: adapter_api::DropClass::Telemetry,
                };
                (
                    sflog::Class::Telemetry,
                    r.received_ts_ms,
                    edge_agent::logwriter::reading_record(&r),
                )
            })
            .collect();
        log.append(&items)?;
    }
    log.flush()?;
    Ok(())
}

/// The ATG simulator on an ephemeral port, running 600x real time.
pub async fn fast_sim() -> Result<atg_sim::Simulator> {
    let cfg = atg_sim::SimConfig {
        speed: 600.0,
        ..atg_sim::SimConfig::default()
    };
    Ok(atg_sim::Simulator::start("127.0.0.1:0".parse()?, cfg).await?)
}

/// Sends `body` as JSON with `method` to the REST API; returns the status and the JSON answer.
pub async fn send_json(
    http: SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let (k, v) = auth(http);
    let r = reqwest::Client::new()
        .request(method, format!("http://{http}{path}"))
        .header(k, v)
        .json(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    let v = serde_json::from_str(&text).with_context(|| format!("{path}: not JSON: {text}"))?;
    Ok((status, v))
}

/// A request with `token` as the bearer (any method; a JSON body on
/// writes): the status and the answer (JSON, or its text as a string).
pub async fn as_bearer(
    http: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let mut r = reqwest::Client::new()
        .request(method.parse()?, format!("http://{http}{path}"))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        r = r.json(b);
    } else if method != "GET" {
        r = r.json(&serde_json::json!({}));
    }
    let r = r.send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Logs `user` in through the REST API; their access token.
pub async fn login_token(http: SocketAddr, user: &str, password: &str) -> Result<String> {
    let (st, v) = as_bearer(
        http,
        "",
        "POST",
        "/api/v1/auth/login",
        Some(&serde_json::json!({"user": user, "password": password})),
    )
    .await?;
    anyhow::ensure!(st == 200, "login {user}: {st} {v}");
    Ok(v["access_token"].as_str().unwrap_or_default().to_string())
}

/// POSTs JSON; returns the status and the JSON answer.
pub async fn post_json(http: SocketAddr, path: &str, body: &Value) -> Result<(u16, Value)> {
    send_json(http, reqwest::Method::POST, path, body).await
}

/// Waits until command `id` is in `state` (failing early if it ends in another terminal state).
pub async fn wait_state(
    http: SocketAddr,
    id: &str,
    state: &str,
    timeout: Duration,
) -> Result<Value> {
    eventually(&format!("command {id} {state}"), timeout, || async {
        let c = get_json(http, &format!("/api/v1/commands/{id}")).await?;
        let s = c["state"].as_str().unwrap_or_default().to_string();
        if s == state {
            return Ok(Some(c));
        }
        if ["completed", "expired", "failed", "rejected"].contains(&s.as_str()) {
            bail!(
                "command {id} ended {s} ({}: {}), not {state}",
                c["reason"],
                c["detail"]
            );
        }
        Ok(None)
    })
    .await
}

/// Agent YAML with controllers added: each `(asset, capacity kW, simulator)`
/// becomes a controller asset and a Modbus device on the simulator's
/// controller block; `setpoints` is appended as the `setpoints:` section.
pub fn with_controllers(
    yaml: &str,
    controllers: &[(&str, f64, &atg_sim::Simulator)],
    setpoints: &str,
    extra: &str,
) -> String {
    let assets: String = controllers
        .iter()
        .map(|(a, cap, _)| {
            format!("  - {{ id: {a}, kind: controller, capacity: {cap}, capacity_unit: kW }}\n")
        })
        .collect();
    let devices: String = controllers
        .iter()
        .map(|(a, _, sim)| atg_sim::controller_yaml_device(&format!("dev-{a}"), sim.addr, a, 100))
        .collect();
    format!(
        "{}{devices}setpoints:\n{setpoints}{extra}",
        yaml.replacen("devices:\n", &format!("{assets}devices:\n"), 1)
    )
}

/// POSTs a command with an idempotency key until the API takes it (the
/// headend, or the replica behind a balancer, may be down meanwhile): its
/// id. A refusal (4xx) is an error at once; `within` bounds the retries.
pub async fn submit_until_taken(
    http: SocketAddr,
    key: &str,
    body: &Value,
    within: std::time::Duration,
) -> Result<String> {
    let mut body = body.clone();
    body["idempotency_key"] = serde_json::json!(key);
    let until = std::time::Instant::now() + within;
    loop {
        match post_json(http, "/api/v1/commands", &body).await {
            Ok((201 | 200, c)) => {
                return c["command_id"]
                    .as_str()
                    .map(String::from)
                    .context("no command_id");
            }
            Ok((code, c)) if code < 500 => bail!("refused {code}: {c}"),
            _ => {}
        }
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "the API never took {key}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Stops a drained agent and returns its log's figures as of its last
/// ack: a silent device goes on making entries (its errors) until the
/// stop, and what is past the last ack is still in the agent's log
/// (resent at its next session), not lost.
pub async fn stop_drained(agent: edge_agent::Agent) -> Result<sflog::Stats> {
    let log = agent.log.clone();
    agent.stop().await?;
    let mut st = log.stats();
    st.next_seq = st.acked_through + 1;
    Ok(st)
}

/// A gap row: (gap record seq, first_seq, last_seq, count, class, reason).
pub type GapRow = (i64, i64, i64, i64, String, String);

/// Every seq the agent's log ever used is a stored reading, command
/// answer or delivery event, a stored gap record, or counted by exactly one gap record; the counts equal what the
/// agent says it dropped. Returns the site's gap rows.
pub async fn assert_every_seq_accounted_for(
    db: &headend::store::Db,
    site: &str,
    st: &sflog::Stats,
) -> Result<Vec<GapRow>> {
    use std::collections::BTreeSet;
    let mut readings: BTreeSet<i64> = stored_seqs(db, site).await?.into_iter().collect();
    // command answers and delivery events are log entries too, stored in their own tables
    for sql in [
        "SELECT log_seq FROM command_events WHERE site_id = $1 AND log_seq > 0",
        "SELECT seq FROM delivery_events WHERE site_id = $1",
    ] {
        let seqs: Vec<i64> = sqlx::query_scalar(sql)
            .bind(site)
            .fetch_all(db.pool())
            .await?;
        readings.extend(seqs);
    }
    let gaps: Vec<GapRow> = sqlx::query_as(
        "SELECT seq, first_seq, last_seq, count, class, reason FROM gaps WHERE site_id = $1 AND device = '' ORDER BY seq",
    )
    .bind(site)
    .fetch_all(db.pool())
    .await?;
    let gap_records: BTreeSet<i64> = gaps.iter().map(|g| g.0).collect();
    let max = (st.next_seq - 1) as i64;
    let missing: Vec<i64> = (1..=max)
        .filter(|s| !readings.contains(s) && !gap_records.contains(s))
        .collect();
    let reported: i64 = gaps.iter().map(|g| g.3).sum();
    anyhow::ensure!(
        missing.len() as i64 == reported,
        "{site}: dropped counts ({reported}) match exactly what is missing in SQL ({}: {:?}…)",
        missing.len(),
        &missing[..missing.len().min(12)]
    );
    anyhow::ensure!(
        reported as u64 == st.dropped.iter().sum::<u64>(),
        "gap records ({reported}) equal what the agent counted ({:?})",
        st.dropped
    );
    for s in &missing {
        anyhow::ensure!(
            gaps.iter().any(|g| g.1 <= *s && *s <= g.2),
            "seq {s} is missing but in no gap range"
        );
    }
    Ok(gaps)
}

/// A small real filesystem (tmpfs) for one test, unmounted on drop. The
/// tests run as root (CI does too); a failed mount fails the test.
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    pub fn new(size: &str) -> Result<Tmpfs> {
        let dir = tempfile::tempdir()?;
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        anyhow::ensure!(st.success(), "mounting a {size} tmpfs (needs root)");
        Ok(Tmpfs(dir))
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// A simulated agent's session (real mTLS, the real proto): the sender of
/// its messages and the headend's stream, the [`hello`] sent.
pub async fn open_session(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    site: &str,
) -> Result<(
    tokio::sync::mpsc::Sender<v1::AgentMessage>,
    tonic::Streaming<v1::HeadendMessage>,
)> {
    let ch = edge_agent::uplink::channel(&addr.to_string(), "localhost", tls, None).await?;
    let mut client = v1::agent_link_client::AgentLinkClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello(site)).await?;
    let inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

/// A Hello for `site` with one tank (log id 42).
pub fn hello(site: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            agent_version: "test".into(),
            site_id: site.into(),
            log_id: 42,
            assets: vec![v1::Asset {
                asset_id: "tank-1".into(),
                kind: v1::AssetKind::Tank as i32,
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

/// One batch of one reading (seq 1 of log 42).
pub fn batch() -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Batch(v1::TelemetryBatch {
            log_id: 42,
            first_seq: 1,
            last_seq: 1,
            readings: vec![v1::Reading {
                seq: 1,
                asset_id: "tank-1".into(),
                field: "volume".into(),
                value: 1000.0,
                unit: "L".into(),
                quality: v1::Quality::Good as i32,
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

/// Opens a session with `tls`, claims `site`, sends a batch; returns the
/// gRPC outcome (Ok = the headend acknowledged the batch).
pub async fn attempt(
    addr: std::net::SocketAddr,
    tls: rustls::ClientConfig,
    site: &str,
) -> Result<(), String> {
    let ch = edge_agent::uplink::channel(&addr.to_string(), "localhost", tls, None)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = v1::agent_link_client::AgentLinkClient::new(ch);
    let out = tokio_stream::StreamExt::chain(
        tokio_stream::iter(vec![hello(site), batch()]),
        tokio_stream::pending(),
    );
    let mut inbound = client
        .session(out)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
            Ok(Ok(Some(m))) if matches!(m.msg, Some(v1::headend_message::Msg::Ack(_))) => {
                return Ok(());
            }
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Err("stream closed".into()),
            Ok(Err(s)) => return Err(format!("{:?}: {}", s.code(), s.message())),
            Err(_) => return Err("no answer".into()),
        }
    }
}

/// A batch raising a leak alarm on tank-1 (an alarm episode to act on).
pub fn leak_raised() -> tankwatch_proto::v1::TelemetryBatch {
    use tankwatch_proto::v1;
    let now = headend::wallclock::now_ms();
    v1::TelemetryBatch {
        log_id: 1,
        first_seq: 1,
        last_seq: 1,
        readings: vec![v1::Reading {
            seq: 1,
            asset_id: "tank-1".into(),
            field: "alarm.leak".into(),
            value: 1.0,
            unit: "bool".into(),
            quality: v1::Quality::Good as i32,
            source_ts_ms: now,
            received_ts_ms: now,
            source: "test://leak".into(),
            error: String::new(),
        }],
        ..Default::default()
    }
}
