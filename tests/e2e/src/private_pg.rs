//! A PostgreSQL cluster of the test's own (initdb in a temporary
//! directory, its own port), which the test may stop and start: the
//! machine's shared server is never restarted under the other tests.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
}

/// The server's programs (Debian's layout: /usr/lib/postgresql/N/bin).
fn pg_bin(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("/usr/lib/postgresql (Debian's postgresql package)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join(name).exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|d| d.join(name))
        .with_context(|| format!("no {name} under /usr/lib/postgresql"))
}

/// Runs a server program as the `postgres` user (it refuses root).
fn as_postgres(name: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin(name)?)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "{name} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl PrivatePg {
    /// A new cluster, started (trust authentication on 127.0.0.1, no fsync).
    pub fn start() -> Result<PrivatePg> {
        let (dir, port) = cluster_dir()?;
        let data = dir.path().join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        PrivatePg::started(dir, port)
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started:
    /// a read replica that replays the primary's WAL.
    pub fn standby_of(primary: &PrivatePg) -> Result<PrivatePg> {
        let (dir, port) = cluster_dir()?;
        let data = dir.path().join("data");
        let from = primary.port.to_string();
        as_postgres(
            "pg_basebackup",
            &[
                "-D",
                &data.display().to_string(),
                "-R",
                "-X",
                "stream",
                "-h",
                "127.0.0.1",
                "-p",
                &from,
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        PrivatePg::started(dir, port)
    }

    /// Runs one statement as the server's superuser.
    pub async fn exec(&self, sql: &str) -> Result<()> {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.url()).await?;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await?;
        Ok(())
    }

    fn started(dir: tempfile::TempDir, port: u16) -> Result<PrivatePg> {
        let pg = PrivatePg { dir, port };
        pg.up()?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it takes connections.
    pub fn up(&self) -> Result<()> {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        as_postgres(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &opts, "-w", "start"],
        )
    }

    /// Stops the server at once (`-m fast`: sessions are told and cut).
    pub fn down(&self) -> Result<()> {
        let data = self.dir.path().join("data").display().to_string();
        as_postgres("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// A directory the `postgres` user owns, and a port, for a cluster.
fn cluster_dir() -> Result<(tempfile::TempDir, u16)> {
    let dir = tempfile::tempdir()?;
    std::os::unix::fs::chown(dir.path(), Some(uid_of_postgres()?), None)?;
    Ok((dir, crate::free_port()))
}

fn uid_of_postgres() -> Result<u32> {
    let out = Command::new("id").args(["-u", "postgres"]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("the postgres user (Debian's postgresql package)")
}

/// A headend as a real process (the `headend` binary), killed with
/// SIGKILL when dropped.
pub struct HeadendProcess {
    child: Option<std::process::Child>,
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
}

impl HeadendProcess {
    /// Starts `headend` on free loopback ports with the PKI in `pki_dir`,
    /// its output in `log`.
    pub fn spawn(
        db_url: &str,
        pki_dir: &std::path::Path,
        log: &std::path::Path,
    ) -> Result<HeadendProcess> {
        HeadendProcess::spawn_with(db_url, pki_dir, log, &[])
    }

    /// [`Self::spawn`] with more arguments.
    pub fn spawn_with(
        db_url: &str,
        pki_dir: &std::path::Path,
        log: &std::path::Path,
        extra: &[String],
    ) -> Result<HeadendProcess> {
        let (grpc, http) = (crate::free_port(), crate::free_port());
        HeadendProcess::spawn_exe(
            &crate::bin("headend"),
            (grpc, http),
            db_url,
            pki_dir,
            log,
            extra,
        )
    }

    /// A headend of another build (`exe`: the previous release's, for the
    /// version-skew tests) on the given gRPC and REST ports (a replica
    /// replaced in place behind the balancer keeps its addresses).
    pub fn spawn_exe(
        exe: &std::path::Path,
        (grpc, http): (u16, u16),
        db_url: &str,
        pki_dir: &std::path::Path,
        log: &std::path::Path,
        extra: &[String],
    ) -> Result<HeadendProcess> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(exe)
            .args([
                format!("--grpc-listen=127.0.0.1:{grpc}"),
                format!("--http-listen=127.0.0.1:{http}"),
                format!("--enroll-listen=127.0.0.1:{}", crate::free_port()),
                format!("--database-url={db_url}"),
                format!("--pki-dir={}", pki_dir.display()),
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::from(f.try_clone()?))
            .stderr(std::process::Stdio::from(f))
            .spawn()?;
        Ok(HeadendProcess {
            child: Some(child),
            grpc: format!("127.0.0.1:{grpc}").parse()?,
            http: format!("127.0.0.1:{http}").parse()?,
        })
    }

    /// Waits until `/ready` answers 200.
    pub async fn ready(&self, within: std::time::Duration) -> Result<()> {
        crate::eventually("the headend ready", within, || async {
            Ok(reqwest::get(format!("http://{}/ready", self.http))
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ()))
        })
        .await
    }

    /// Its resident memory, KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// Stops it as its service manager would (SIGTERM: listeners close,
    /// sessions end, pending commits finish) and waits for its exit.
    pub fn sigterm(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            c.wait()?;
        }
        Ok(())
    }

    pub fn sigkill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )?;
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for HeadendProcess {
    fn drop(&mut self) {
        let _ = self.sigkill();
    }
}

/// PgBouncer (Debian's package) in front of one database of the machine's
/// PostgreSQL, in `mode` (`session` or `transaction`), on a port of its own;
/// stopped when dropped.
pub struct Pgbouncer {
    child: Option<std::process::Child>,
    _dir: tempfile::TempDir,
    pub port: u16,
    db: String,
}

impl Pgbouncer {
    pub async fn start(upstream_db: &str, mode: &str) -> Result<Pgbouncer> {
        let dir = tempfile::tempdir()?;
        std::os::unix::fs::chown(dir.path(), Some(uid_of_postgres()?), None)?;
        let port = crate::free_port();
        let ini = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("userlist.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n")?;
        std::fs::write(
            &ini,
            format!(
                "[databases]\n{upstream_db} = host=127.0.0.1 port=5432 dbname={upstream_db}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
                 pool_mode = {mode}\nmax_client_conn = 500\ndefault_pool_size = 60\n\
                 ignore_startup_parameters = extra_float_digits\n",
                users.display()
            ),
        )?;
        for f in [&ini, &users] {
            std::os::unix::fs::chown(f, Some(uid_of_postgres()?), None)?;
        }
        // started as root, it switches to the user itself (same process)
        let child = Command::new("pgbouncer")
            .args(["-u", "postgres"])
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("pgbouncer (Debian's package; scripts/peers.sh installs it)")?;
        let pg = Pgbouncer {
            child: Some(child),
            _dir: dir,
            port,
            db: upstream_db.to_string(),
        };
        crate::eventually("pgbouncer", std::time::Duration::from_secs(10), || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ()))
        })
        .await?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.db)
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// HAProxy with the shipped `deploy/haproxy.cfg`, the replicas' addresses
/// in its environment (as `/etc/default/haproxy` gives them on a host);
/// killed when dropped.
pub struct Haproxy {
    child: Option<std::process::Child>,
    /// Where agents connect (the gRPC frontend).
    pub agents: std::net::SocketAddr,
    /// The REST frontend.
    pub rest: std::net::SocketAddr,
}

impl Haproxy {
    pub fn start(replicas: &[HeadendProcess], log: &std::path::Path) -> Result<Haproxy> {
        Haproxy::start_with(replicas, log, None)
    }

    /// [`Self::start`] for replicas that serve REST over HTTPS, verified
    /// against `rest_ca` (`TW_REST_CA`).
    pub fn start_with(
        replicas: &[HeadendProcess],
        log: &std::path::Path,
        rest_ca: Option<&std::path::Path>,
    ) -> Result<Haproxy> {
        let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/haproxy.cfg");
        let agents: std::net::SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse()?;
        let rest: std::net::SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse()?;
        let f = std::fs::File::create(log)?;
        let mut c = Command::new("haproxy");
        c.args(["-db", "-f"])
            .arg(&cfg)
            .env("TW_AGENTS_BIND", agents.to_string())
            .env("TW_REST_BIND", rest.to_string())
            .env("TW_API_HOST", "localhost");
        if let Some(ca) = rest_ca {
            c.env("TW_REST_CA", ca);
        }
        for (i, r) in replicas.iter().enumerate() {
            let n = i + 1;
            c.env(format!("TW_HE{n}"), "127.0.0.1")
                .env(format!("TW_HE{n}_GRPC"), r.grpc.port().to_string())
                .env(format!("TW_HE{n}_REST"), r.http.port().to_string());
        }
        let child = c
            .stdout(std::process::Stdio::from(f.try_clone()?))
            .stderr(std::process::Stdio::from(f))
            .spawn()
            .context("haproxy (Debian's package; scripts/peers.sh installs it)")?;
        Ok(Haproxy {
            child: Some(child),
            agents,
            rest,
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
