//! `headend`: the cloud side. See `headend --help`.
#![deny(clippy::too_many_lines)]
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

#[path = "main/maintenance.rs"]
mod maintenance;
use maintenance::{audit_cmd, backup_cmd, user_cmd};

#[derive(Parser)]
#[command(
    name = "headend",
    version,
    about = "tankwatch headend: mTLS gRPC ingest, SQL storage, REST API",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Operator accounts (the first admin is made here; there is no default password).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "sqlite://data/headend.db",
            global = true
        )]
        database_url: String,
    },
    /// Copies the SQLite database to FILE while the headend runs (one
    /// commit's state, checked; PostgreSQL: pg_dump, see
    /// docs/runbooks/restore-from-backup.md).
    Backup {
        /// The backup file to write (must not exist).
        #[arg(long, required_unless_present = "to_dir", conflicts_with = "to_dir")]
        to: Option<PathBuf>,
        /// A directory to write `headend-YYYYMMDDTHHMMSSZ.db` into (UTC;
        /// the packaged timer's hourly backups).
        #[arg(long)]
        to_dir: Option<PathBuf>,
        /// With --to-dir: once the backup is written, delete the oldest
        /// `headend-*Z.db` there beyond this many (never other files).
        #[arg(long, requires = "to_dir", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/headend.db")]
        database_url: String,
    },
    /// Puts a backup in place as the SQLite database (stop every headend
    /// on it first), then migrates it and verifies its audit chain.
    Restore {
        /// The backup file (from `headend backup`).
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing database (it is kept beside, renamed).
        #[arg(long)]
        replace: bool,
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/headend.db")]
        database_url: String,
    },
    /// Brings the database to this release's schema and exits (a
    /// deployment's one-off step before its replicas start: a Kubernetes
    /// Job, the pilot's `migrate` service). Replicas migrate at start too;
    /// concurrent runs wait on the migrator's lock.
    Migrate {
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/headend.db")]
        database_url: String,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "sqlite://data/headend.db",
            global = true
        )]
        database_url: String,
    },
}

#[derive(clap::Subcommand)]
enum UserCmd {
    /// Adds a user; the password is read from --password-file or the first line of stdin.
    Add {
        name: String,
        /// admin, manager, dispatcher or viewer
        #[arg(long)]
        role: String,
        /// Site ids this user may see and act on (comma-separated); default all.
        #[arg(long, value_delimiter = ',')]
        sites: Option<Vec<String>>,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Lists users.
    List,
    /// Disables a user and ends their sessions.
    Disable { name: String },
    /// Enables a disabled user.
    Enable { name: String },
    /// Sets a new password (from --password-file or stdin) and ends the user's sessions.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Lifts the user's login locks (from every network, on every replica).
    Unlock { name: String },
}

#[derive(clap::Subcommand)]
enum AuditCmd {
    /// Walks the hash chain; names the first entry that was changed or removed (exit 1).
    Verify,
}

#[derive(clap::Args)]
struct Serve {
    /// Agent-facing gRPC (mTLS) address.
    #[arg(long, env = "HEADEND_GRPC_LISTEN", default_value = "127.0.0.1:7443")]
    grpc_listen: SocketAddr,
    /// REST API address. Plain HTTP on loopback only; any other address needs --http-tls-cert/--http-tls-key.
    #[arg(long, env = "HEADEND_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Serve the REST API over HTTPS with this certificate chain (PEM; reloaded when it changes).
    #[arg(long, env = "HEADEND_HTTP_TLS_CERT", requires = "http_tls_key")]
    http_tls_cert: Option<PathBuf>,
    /// The private key of --http-tls-cert (PEM).
    #[arg(long, env = "HEADEND_HTTP_TLS_KEY", requires = "http_tls_cert")]
    http_tls_key: Option<PathBuf>,
    /// Database URL: sqlite://PATH (default, created if missing) or postgres://USER@HOST/DB.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/headend.db")]
    database_url: String,
    /// A PostgreSQL read replica (streaming standby) of --database-url
    /// for the REST API's lists and charts; they then lag the primary by
    /// the replica's replay delay (docs/deploy.md).
    #[arg(long, env = "HEADEND_READ_DATABASE_URL")]
    read_database_url: Option<String>,
    /// Directory with ca.pem, headend.pem and headend.key (see `pki`).
    #[arg(long, env = "HEADEND_PKI_DIR", default_value = "pki")]
    pki_dir: PathBuf,
    /// Create a CA and a server certificate in --pki-dir if there is none yet (demo, first run).
    #[arg(long)]
    init_pki: bool,
    /// The issuing (intermediate) CA that signs agent certificates
    /// (default: issuer.pem/issuer.key in --pki-dir when present; without
    /// one the headend neither enrolls nor renews).
    #[arg(long, env = "HEADEND_ISSUER_CERT", requires = "issuer_key")]
    issuer_cert: Option<PathBuf>,
    #[arg(long, env = "HEADEND_ISSUER_KEY", requires = "issuer_cert")]
    issuer_key: Option<PathBuf>,
    /// The enrollment listener (TLS without client certificates; `edge-agent
    /// enroll` connects here), or `off`.
    #[arg(long, env = "HEADEND_ENROLL_LISTEN", default_value = "127.0.0.1:7444")]
    enroll_listen: String,
    /// HOST:PORT printed with each enrollment token, as installers reach
    /// the enrollment listener (default: its address).
    #[arg(long, env = "HEADEND_ENROLL_ADDRESS")]
    enroll_address: Option<String>,
    /// Lifetime of an agent certificate issued here (renewed at two thirds).
    #[arg(long, env = "HEADEND_AGENT_CERT_LIFETIME", default_value = "30d", value_parser = cert_lifetime)]
    agent_cert_lifetime: std::time::Duration,
    /// Concurrent batch transactions across all agents.
    #[arg(long, default_value_t = 8)]
    max_concurrent_writes: usize,
    /// Database connections of each pool (ingest and jobs; on PostgreSQL
    /// the telemetry writes too); the operator API has half as many of its
    /// own, plus one listening connection (docs/deploy.md sizes them).
    #[arg(long, env = "HEADEND_DB_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(2..=1000))]
    db_max_connections: u32,
    /// Another host name the REST API answers to (e.g. behind a reverse
    /// proxy); repeatable. `localhost`, `127.0.0.1` and `::1` always are.
    #[arg(long = "http-host", env = "HEADEND_HTTP_HOSTS", value_delimiter = ',')]
    http_hosts: Vec<String>,
    /// Agent connections at once per certificate identity (a new one evicts the oldest).
    #[arg(long, default_value_t = headend::ingest::tls::DEFAULT_CONNS_PER_SITE)]
    max_conns_per_site: usize,
    /// Agent connections at once in all (also bounded by the open-files limit).
    #[arg(long, default_value_t = headend::ingest::tls::DEFAULT_MAX_CONNS)]
    max_conns: usize,
    /// Do not offer agents compact, gzip-compressed batches: they send v1
    /// batches, uncompressed (a fallback; ADR 0013).
    #[arg(long, env = "HEADEND_NO_COMPACT_BATCHES")]
    no_compact_batches: bool,
    /// How long raw readings are kept (humantime: 90d, 2y).
    #[arg(long, env = "HEADEND_RAW_RETENTION", default_value = "90d", value_parser = retention)]
    raw_retention: std::time::Duration,
    /// How long hourly rollups are kept; at least as long as raw readings.
    #[arg(long, env = "HEADEND_ROLLUP_RETENTION", default_value = "730d", value_parser = retention)]
    rollup_retention: std::time::Duration,
    /// Login attempts per client address a minute (raise it when many operators share one address).
    #[arg(long, env = "HEADEND_LOGINS_PER_MINUTE", default_value_t = headend::services::access::LOGINS_PER_MINUTE,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    logins_per_minute: u32,
    /// How often the inventory job evaluates every tank (humantime).
    #[arg(long, env = "HEADEND_INVENTORY_EVERY", default_value = "60s", value_parser = inventory_every)]
    inventory_every: std::time::Duration,
    /// Hours a forecast runout must come after the next delivery's ETA
    /// before it stops escalating.
    #[arg(long, env = "HEADEND_ESCALATION_MARGIN_H", default_value_t = headend::domain::escalation::DEFAULT_MARGIN_H,
          value_parser = margin_hours)]
    escalation_margin_h: f64,
    /// POST every escalation and alarm change as JSON here (http:// or https://).
    #[arg(long, env = "HEADEND_WEBHOOK_URL", value_parser = webhook_url)]
    webhook_url: Option<String>,
    /// Sign each notification with the secret in this file (at least 16
    /// bytes): X-Tankwatch-Timestamp and X-Tankwatch-Signature headers.
    #[arg(long, env = "HEADEND_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<std::path::PathBuf>,
    /// Mail alarms through this SMTP relay: smtp://host:25 (plain),
    /// smtp://host:587?tls=required (STARTTLS), smtps://host:465 (TLS).
    /// Recipients are set per site (PUT /api/v1/sites/{site}/alarm-recipients).
    #[arg(long, env = "HEADEND_SMTP_URL")]
    smtp_url: Option<String>,
    /// The relay's user (first line) and password (second line).
    #[arg(long, env = "HEADEND_SMTP_CREDENTIALS_FILE")]
    smtp_credentials_file: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) the relay's certificate may chain to,
    /// besides the system's roots (a relay with a private CA).
    #[arg(long, env = "HEADEND_SMTP_CA_FILE")]
    smtp_ca_file: Option<std::path::PathBuf>,
    /// The sender of alarm mails, e.g. "Tankwatch <alarms@example.com>".
    #[arg(long, env = "HEADEND_MAIL_FROM")]
    mail_from: Option<String>,
    /// Attempts before an alarm mail is given up (5 s doubling between them).
    #[arg(long, env = "HEADEND_MAIL_MAX_ATTEMPTS", default_value_t = 8)]
    mail_max_attempts: i64,
    /// A critical alarm is mailed again this often until acknowledged.
    #[arg(long, env = "HEADEND_ALARM_CRITICAL_REPEAT", default_value = "15m", value_parser = alarm_period)]
    alarm_critical_repeat: std::time::Duration,
    /// A major alarm is mailed once when unacknowledged this long.
    #[arg(long, env = "HEADEND_ALARM_MAJOR_AFTER", default_value = "30m", value_parser = alarm_period)]
    alarm_major_after: std::time::Duration,
    /// Mails to one recipient within --mail-window beyond this go out as one digest.
    #[arg(long, env = "HEADEND_MAIL_PER_RECIPIENT", default_value_t = 5)]
    mail_per_recipient: usize,
    /// The per-recipient window, and how often a digest goes out.
    #[arg(long, env = "HEADEND_MAIL_WINDOW", default_value = "10m", value_parser = alarm_period)]
    mail_window: std::time::Duration,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
}

/// The inventory period: humantime, from 1 s to 1 h.
fn inventory_every(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (use e.g. 60s)"))?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{s:?}: the inventory period is from 1s to 1h"));
    }
    Ok(d)
}

/// An escalation margin: 0 to 168 hours.
fn margin_hours(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(h) if (0.0..=168.0).contains(&h) => Ok(h),
        _ => Err(format!(
            "{s:?}: the margin is a number of hours from 0 to 168"
        )),
    }
}

/// An alarm mail period: humantime, from 1 s to 7 days.
fn alarm_period(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (use e.g. 15m)"))?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(7 * 86_400) {
        return Err(format!("{s:?}: use 1s to 7d"));
    }
    Ok(d)
}

fn webhook_url(s: &str) -> Result<String, String> {
    headend::jobs::webhook::Target::parse(s).map(|_| s.to_string())
}

/// An agent certificate lifetime: humantime, from 1 minute to 825 days.
fn cert_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (use e.g. 30d)"))?;
    if d < std::time::Duration::from_secs(60) || d > std::time::Duration::from_secs(825 * 86_400) {
        return Err(format!("{s:?}: a certificate lives from 1m to 825d"));
    }
    Ok(d)
}

/// A retention period: humantime, from one hour to 100 years.
fn retention(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (use e.g. 90d or 2y)"))?;
    if d < std::time::Duration::from_secs(3600)
        || d > std::time::Duration::from_secs(100 * 365 * 86_400)
    {
        return Err(format!("{s:?}: a retention period is from 1h to 100y"));
    }
    Ok(d)
}

/// A password from a file (first line) or stdin (first line).
#[tokio::main]
async fn main() -> Result<std::process::ExitCode> {
    let cli = Cli::parse();
    tankwatch_logging::init(cli.serve.log_json, "info");
    match cli.cmd {
        Some(Cmd::User { cmd, database_url }) => {
            user_cmd(cmd, &database_url).await?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Some(Cmd::Audit { cmd, database_url }) => return audit_cmd(cmd, &database_url).await,
        Some(c @ (Cmd::Backup { .. } | Cmd::Restore { .. })) => return backup_cmd(c).await,
        Some(Cmd::Migrate { database_url }) => {
            let t0 = std::time::Instant::now();
            headend::store::Db::connect(&database_url, 2).await?;
            println!(
                "database at this release's schema ({} ms)",
                t0.elapsed().as_millis()
            );
            return Ok(std::process::ExitCode::SUCCESS);
        }
        None => {}
    }
    let cli = cli.serve;
    if cli.init_pki && !cli.pki_dir.join("ca.key").exists() {
        tankwatch_pki::bootstrap(&cli.pki_dir, &[], 397).context("creating the PKI")?;
        tracing::info!(dir = %cli.pki_dir.display(), "created a new CA and server certificate");
    }
    let mut cfg = headend::Config::with_pki_dir(cli.pki_dir.clone(), cli.database_url);
    cfg.issuer = match (cli.issuer_cert, cli.issuer_key) {
        (Some(cert), Some(key)) => Some(headend::IssuerFiles { cert, key }),
        _ => cfg.issuer.filter(|f| {
            let there = f.key.exists();
            if !there {
                tracing::warn!(dir = %cli.pki_dir.display(), "no issuing CA (issuer.pem/issuer.key; `pki intermediate` makes one): this headend neither enrolls nor renews agent certificates");
            }
            there
        }),
    };
    cfg.enroll_listen = match cli.enroll_listen.as_str() {
        "off" => None,
        a => Some(a.parse().with_context(|| {
            format!("--enroll-listen {a:?}: an address such as 0.0.0.0:7444, or off")
        })?),
    };
    cfg.enroll_address = cli.enroll_address;
    cfg.read_database_url = cli.read_database_url;
    cfg.agent_cert_lifetime = cli.agent_cert_lifetime;
    cfg.grpc_listen = cli.grpc_listen;
    cfg.http_listen = cli.http_listen;
    cfg.http_tls = match (cli.http_tls_cert, cli.http_tls_key) {
        (Some(cert), Some(key)) => Some(headend::listen::rest::HttpsFiles { cert, key }),
        _ => None,
    };
    cfg.max_concurrent_writes = cli.max_concurrent_writes;
    cfg.http_hosts = cli.http_hosts;
    cfg.max_conns_per_site = cli.max_conns_per_site;
    cfg.db_max_connections = cli.db_max_connections;
    cfg.max_conns = cli.max_conns;
    cfg.compact_batches = !cli.no_compact_batches;
    cfg.logins_per_minute = cli.logins_per_minute;
    cfg.inventory_every = cli.inventory_every;
    cfg.escalation_margin_h = cli.escalation_margin_h;
    cfg.webhook_url = cli.webhook_url;
    cfg.webhook_secret_file = cli.webhook_secret_file;
    cfg.smtp_url = cli.smtp_url;
    cfg.smtp_ca_file = cli.smtp_ca_file;
    cfg.smtp_credentials_file = cli.smtp_credentials_file;
    cfg.mail_from = cli.mail_from;
    cfg.mail_max_attempts = cli.mail_max_attempts;
    cfg.alarm_rules = headend::domain::notify::Rules {
        critical_repeat_ms: cli.alarm_critical_repeat.as_millis() as i64,
        major_after_ms: cli.alarm_major_after.as_millis() as i64,
        per_recipient: cli.mail_per_recipient,
        window_ms: cli.mail_window.as_millis() as i64,
    };
    if cli.rollup_retention < cli.raw_retention {
        anyhow::bail!(
            "--rollup-retention {} is shorter than --raw-retention {}: rollups are what is left of old readings; keep them at least as long",
            humantime::format_duration(cli.rollup_retention),
            humantime::format_duration(cli.raw_retention)
        );
    }
    cfg.retention = headend::store::Retention {
        raw: cli.raw_retention,
        rollups: cli.rollup_retention,
    };
    // each agent connection holds a descriptor
    tankwatch_logging::raise_fd_limit();
    let cfg_https = cfg.http_tls.is_some();
    let running = headend::start(cfg).await?;
    println!(
        "headend: gRPC (mTLS) on {}, REST on {}://{}, enrollment on {}",
        running.grpc_addr,
        if cfg_https { "https" } else { "http" },
        running.http_addr,
        running
            .enroll_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into())
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let failed = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        why = running.failed() => Some(why),
    };
    tracing::info!("shutting down");
    running.stop().await;
    match failed {
        // a dead task ends the process non-zero, for its supervisor to restart it
        Some(task) => anyhow::bail!("the headend's {task} stopped"),
        None => Ok(std::process::ExitCode::SUCCESS),
    }
}
