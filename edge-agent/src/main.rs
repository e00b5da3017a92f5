//! `edge-agent`: the site agent. `edge-agent run --config site.yaml`,
//! `edge-agent check-config site.yaml`, `edge-agent probe PROTOCOL ...`.

// no non-test function over ~150 code lines (clippy.toml sets the bound)
#![deny(clippy::too_many_lines)]
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "tankwatch site agent: reads tank gauges, stores and forwards to the headend"
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; print the first problem with its line and column.
    CheckConfig { file: PathBuf },
    /// Print the site's upcoming and recent deliveries (from the agent's
    /// state store; works whether or not the agent is running), as JSON.
    Deliveries {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Test a device connection before going live. Exit status: 0 the
    /// device answered; 2 bad arguments (nothing sent); 3 unreachable (refused, no route);
    /// 4 timeout; 5 TLS/security trust or credentials; 6 the device answered
    /// with an error (exception, refused command, bad checksum).
    #[command(subcommand)]
    Probe(edge_agent::probe::Probe),
    /// Get the agent's first certificate with a one-time enrollment token:
    /// the key is made here and never leaves this PC; the certificate, its
    /// chain and the CA are written where the configuration's `tls:` says.
    /// Exit status: 0 enrolled; 2 bad arguments; 3 unreachable; 4 timeout;
    /// 5 the CA fingerprint does not match; 6 the headend refused the token.
    Enroll {
        #[arg(long, short)]
        config: PathBuf,
        /// The headend's enrollment address, HOST:PORT (port 7444 by default).
        #[arg(long)]
        headend: String,
        /// The one-time token (`twe_…`) the operator created for this site.
        #[arg(long, env = "ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// The CA's SHA-256 fingerprint printed with the token.
        #[arg(long)]
        ca_fingerprint: String,
        /// The name to check in the headend's certificate (default: HOST).
        #[arg(long)]
        server_name: Option<String>,
    },
    /// Read a password from standard input (one line) and print its argon2
    /// hash for an `opcua_server.users` entry (`password_hash:`).
    OpcuaPassword,
    /// Put readings the site already has (CSV: asset,field,time,value,unit)
    /// into the agent's log with their own times, for the headend to have
    /// history from the first hour. The agent must be stopped. Exit status:
    /// 0 written; 2 a bad configuration or row (named with its line and
    /// column; nothing written); 1 the log could not be written.
    Backfill {
        #[arg(long, short)]
        config: PathBuf,
        /// The CSV file.
        file: PathBuf,
        /// Take a file that was backfilled before (the headend stores it twice).
        #[arg(long)]
        again: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // the OPC UA library logs each failed attempt at error/warn level (and
    // every Bad status it decodes); the adapter logs the same failure once,
    // with the reason and what to check. RUST_LOG overrides this.
    // a probe prints its findings; the libraries' chatter would bury them
    let quiet = matches!(cli.cmd, Cmd::Probe(_));
    tankwatch_logging::init(
        cli.log_json,
        if quiet {
            "error,opcua_types=off,opcua_client=off,opcua_core=off"
        } else {
            "info,opcua_types=off,opcua_client=error,opcua_core=error,opcua_server=warn"
        },
    );
    match cli.cmd {
        Cmd::Probe(p) => probe(p),
        Cmd::Backfill {
            config,
            file,
            again,
        } => backfill(&config, &file, again),
        Cmd::Enroll {
            config,
            headend,
            token,
            ca_fingerprint,
            server_name,
        } => enroll(
            &config,
            &headend,
            &token,
            &ca_fingerprint,
            server_name.as_deref(),
        ),
        Cmd::OpcuaPassword => opcua_password(),
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::Deliveries { config } => deliveries(&config),
        Cmd::Run { config } => run_agent(&config),
    }
}

/// A runtime on this thread, for a one-off command.
fn current_thread() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `edge-agent probe`.
fn probe(p: edge_agent::probe::Probe) -> ExitCode {
    let rt = match current_thread() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(edge_agent::probe::run(p)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.kind.exit_code())
        }
    }
}

/// `edge-agent backfill`.
fn backfill(config: &std::path::Path, file: &std::path::Path, again: bool) -> ExitCode {
    let cfg = match load_without_tls(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match edge_agent::backfill::run(&cfg, file, again) {
        Ok(s) => {
            let t = |ms: i64| {
                jiff::Timestamp::from_millisecond(ms)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| ms.to_string())
            };
            println!(
                "backfilled {} readings from {} to {} into the log (seqs {} to {}); they go to the headend when the agent runs",
                s.readings,
                t(s.first_ms),
                t(s.last_ms),
                s.first_seq,
                s.last_seq
            );
            ExitCode::SUCCESS
        }
        Err(e @ edge_agent::backfill::BackfillError::Log(_)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `edge-agent enroll`.
fn enroll(
    config: &std::path::Path,
    headend: &str,
    token: &str,
    ca_fingerprint: &str,
    server_name: Option<&str>,
) -> ExitCode {
    let cfg = match load_without_tls(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match current_thread() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(edge_agent::enroll::enroll(
        &cfg,
        headend,
        token,
        ca_fingerprint,
        server_name,
    )) {
        Ok(e) => {
            println!(
                "enrolled site {}: certificate {} valid until {} (renewed automatically at two thirds of its life); wrote {}, {} (0600) and {}. Start the agent: edge-agent run --config {}",
                e.site,
                e.serial,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(e.not_after_ms.max(0) as u64)
                ),
                cfg.tls.cert.display(),
                cfg.tls.key.display(),
                cfg.tls.ca.display(),
                config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `edge-agent opcua-password`.
fn opcua_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("error: reading the password from standard input: {e}");
        return ExitCode::from(2);
    }
    let pw = line.trim_end_matches(['\r', '\n']);
    if pw.chars().count() < 8 {
        eprintln!("error: the password must have at least 8 characters");
        return ExitCode::from(2);
    }
    match agent_opcua_server::auth::hash(pw) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `edge-agent check-config`.
fn check_config(file: &std::path::Path) -> ExitCode {
    match edge_agent::config::load(file) {
        Ok(cfg) => {
            println!(
                "{}: ok (site {}, {} assets, {} devices)",
                file.display(),
                cfg.site_id,
                cfg.assets.len(),
                cfg.devices.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `edge-agent deliveries`.
fn deliveries(config: &std::path::Path) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match edge_agent::store::Store::open_read_only(&cfg.log.dir).and_then(|s| s.deliveries()) {
        Ok(d) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&d).unwrap_or_else(|e| e.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: {e} (in {}; has the agent run yet?)",
                cfg.log.dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// `edge-agent run`.
fn run_agent(config: &std::path::Path) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // OPC UA clients, devices and files each hold a descriptor
    tankwatch_logging::raise_fd_limit();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a configuration or says why not (exit code 2).
/// As [`load`], before the `tls:` files exist (enroll, backfill).
fn load_without_tls(path: &std::path::Path) -> Result<edge_agent::AgentConfig, ExitCode> {
    edge_agent::config::load_for_enroll(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn load(path: &std::path::Path) -> Result<edge_agent::AgentConfig, ExitCode> {
    edge_agent::config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

async fn run(cfg: edge_agent::AgentConfig) -> Result<(), edge_agent::Error> {
    let agent = edge_agent::start(cfg)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| edge_agent::Error::Internal(e.to_string()))?;
    let failed = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        why = agent.failed() => Some(why),
    };
    tracing::info!("stopping: draining readings into the log");
    let stopped = agent.stop().await;
    match failed {
        // a dead task ends the process non-zero, for systemd to restart it
        Some(why) => Err(edge_agent::Error::Internal(format!(
            "agent task died: {why}"
        ))),
        None => stopped,
    }
}
