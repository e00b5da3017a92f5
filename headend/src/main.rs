//! `headend`: the cloud side. See `headend --help`.
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "headend",
    version,
    about = "tankwatch headend: mTLS gRPC ingest, SQL storage, REST API"
)]
struct Cli {
    /// Agent-facing gRPC (mTLS) address.
    #[arg(long, env = "HEADEND_GRPC_LISTEN", default_value = "127.0.0.1:7443")]
    grpc_listen: SocketAddr,
    /// REST API address. Loopback by default: the API has no authentication yet.
    #[arg(long, env = "HEADEND_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Database URL: sqlite://PATH (default, created if missing) or postgres://USER@HOST/DB.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/headend.db")]
    database_url: String,
    /// Directory with ca.pem, headend.pem and headend.key (see `pki`).
    #[arg(long, env = "HEADEND_PKI_DIR", default_value = "pki")]
    pki_dir: PathBuf,
    /// Create a CA and a server certificate in --pki-dir if there is none yet (demo, first run).
    #[arg(long)]
    init_pki: bool,
    /// Concurrent batch transactions across all agents.
    #[arg(long, default_value_t = 8)]
    max_concurrent_writes: usize,
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
    /// How long raw readings are kept (humantime: 90d, 2y).
    #[arg(long, env = "HEADEND_RAW_RETENTION", default_value = "90d", value_parser = retention)]
    raw_retention: std::time::Duration,
    /// How long hourly rollups are kept; at least as long as raw readings.
    #[arg(long, env = "HEADEND_ROLLUP_RETENTION", default_value = "730d", value_parser = retention)]
    rollup_retention: std::time::Duration,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
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

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if cli.init_pki && !cli.pki_dir.join("ca.key").exists() {
        tankwatch_pki::bootstrap(&cli.pki_dir, &[], 397).context("creating the PKI")?;
        tracing::info!(dir = %cli.pki_dir.display(), "created a new CA and server certificate");
    }
    let mut cfg = headend::Config::with_pki_dir(cli.pki_dir, cli.database_url);
    cfg.grpc_listen = cli.grpc_listen;
    cfg.http_listen = cli.http_listen;
    cfg.max_concurrent_writes = cli.max_concurrent_writes;
    cfg.http_hosts = cli.http_hosts;
    cfg.max_conns_per_site = cli.max_conns_per_site;
    cfg.max_conns = cli.max_conns;
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
    headend::raise_fd_limit();
    let running = headend::start(cfg).await?;
    println!(
        "headend: gRPC (mTLS) on {}, REST on http://{}",
        running.grpc_addr, running.http_addr
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
        None => Ok(()),
    }
}
