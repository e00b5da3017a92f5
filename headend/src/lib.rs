//! The cloud headend: mTLS gRPC ingest ([`ingest`]), SQL storage
//! ([`store`]), the services ([`services`]), the operator REST API
//! ([`api`]) and the leased jobs ([`jobs`]), in layers `tidy.rs` enforces
//! (docs/ARCHITECTURE.md, "The headend's layers").

// the OpenAPI document's schemas are large json! literals
#![recursion_limit = "256"]
// no non-test function over ~150 code lines (clippy.toml sets the bound)
#![deny(clippy::too_many_lines)]

pub mod api;
pub mod error;
/// The typed model and pure rules: their own crate (`headend/domain`), so
/// nothing in them can reach a pool, a socket or a service.
pub use headend_domain as domain;
pub mod ingest;
pub mod jobs;
pub mod listen;
pub mod metrics;
pub mod services;
pub mod store;
mod supervise;
#[cfg(test)]
mod tidy;
pub mod wallclock;
mod wiring;

pub use error::Error;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::supervise::Supervisor;

/// The issuing (intermediate) CA's files.
#[derive(Debug, Clone)]
pub struct IssuerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything the headend needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Agent-facing gRPC (mTLS) address.
    pub grpc_listen: SocketAddr,
    /// REST API address (loopback by default; any other address only
    /// with `http_tls`).
    pub http_listen: SocketAddr,
    /// The REST API over HTTPS with these certificate files (reloaded on change).
    pub http_tls: Option<listen::rest::HttpsFiles>,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// A PostgreSQL read replica of it for the REST API's list and chart
    /// reads (docs/deploy.md: what they may lag); None: the primary.
    pub read_database_url: Option<String>,
    pub tls: tankwatch_tls::TlsFiles,
    /// The intermediate CA that issues agent certificates (enrollment,
    /// renewal); None: this headend does not issue.
    pub issuer: Option<IssuerFiles>,
    /// The enrollment listener (server-authenticated TLS); None: off.
    pub enroll_listen: Option<SocketAddr>,
    /// `HOST:PORT` printed with each enrollment token (default: the
    /// enrollment listener's address).
    pub enroll_address: Option<String>,
    /// Lifetime of an agent certificate issued here.
    pub agent_cert_lifetime: std::time::Duration,
    /// Concurrent batch transactions across all agents.
    pub max_concurrent_writes: usize,
    pub db_max_connections: u32,
    /// Host names the REST API answers to (DNS-rebinding guard), besides
    /// `localhost`, `127.0.0.1` and `::1`.
    pub http_hosts: Vec<String>,
    /// Agent connections at once per certificate identity (site).
    pub max_conns_per_site: usize,
    /// Offer agents compact batches and gzip (issue 30, ADR 0013); off:
    /// every agent sends v1 batches, uncompressed (a switch to fall back
    /// to the v1 encoding without touching the sites).
    pub compact_batches: bool,
    /// Agent connections at once in all (kept below the fd limit).
    pub max_conns: usize,
    /// TLS handshake deadline of an agent connection.
    pub handshake_timeout: std::time::Duration,
    /// From the handshake to the session's Hello.
    pub session_deadline: std::time::Duration,
    /// How long raw readings and hourly rollups are kept.
    pub retention: store::Retention,
    /// Login attempts per client address a minute.
    pub logins_per_minute: u32,
    /// How often the inventory job evaluates every tank.
    pub inventory_every: std::time::Duration,
    /// Runout must come this many hours after the next ETA, or it escalates.
    pub escalation_margin_h: f64,
    /// Where escalation and alarm changes are POSTed as JSON (None: no webhook).
    pub webhook_url: Option<String>,
    /// A file holding the webhook's shared secret (at least 16 bytes): each
    /// notification is signed with it (`domain::signature`). None: unsigned,
    /// with a warning at start.
    pub webhook_secret_file: Option<PathBuf>,
    /// The SMTP relay for alarm mails (`smtp://`, `smtp://…?tls=required`,
    /// `smtps://`); None: no mails.
    pub smtp_url: Option<String>,
    /// The relay's user (first line) and password (second line).
    pub smtp_credentials_file: Option<PathBuf>,
    /// A CA certificate (PEM) the relay's certificate may chain to,
    /// besides the system's roots.
    pub smtp_ca_file: Option<PathBuf>,
    /// The sender of alarm mails (needed with `smtp_url`).
    pub mail_from: Option<String>,
    /// Attempts before an alarm mail is given up.
    pub mail_max_attempts: i64,
    /// Who is mailed when: per severity, per recipient limit and digest.
    pub alarm_rules: domain::notify::Rules,
}

impl Config {
    /// Defaults for a PKI directory laid out by `tankwatch_pki::bootstrap`.
    pub fn with_pki_dir(dir: PathBuf, database_url: String) -> Config {
        Config {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http_tls: None,
            database_url,
            read_database_url: None,
            tls: tankwatch_tls::TlsFiles {
                cert: dir.join("headend.pem"),
                key: dir.join("headend.key"),
                ca: dir.join("ca.pem"),
            },
            issuer: Some(IssuerFiles {
                cert: dir.join("issuer.pem"),
                key: dir.join("issuer.key"),
            }),
            enroll_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7444))),
            enroll_address: None,
            agent_cert_lifetime: std::time::Duration::from_secs(
                u64::from(services::enrollment::DEFAULT_AGENT_CERT_DAYS) * 86_400,
            ),
            max_concurrent_writes: 8,
            db_max_connections: 16,
            http_hosts: Vec::new(),
            max_conns_per_site: ingest::tls::DEFAULT_CONNS_PER_SITE,
            compact_batches: true,
            max_conns: ingest::tls::DEFAULT_MAX_CONNS,
            handshake_timeout: ingest::tls::HANDSHAKE_TIMEOUT,
            session_deadline: ingest::tls::SESSION_DEADLINE,
            retention: store::Retention::default(),
            logins_per_minute: services::access::LOGINS_PER_MINUTE,
            inventory_every: jobs::INVENTORY_EVERY,
            escalation_margin_h: domain::escalation::DEFAULT_MARGIN_H,
            webhook_url: None,
            webhook_secret_file: None,
            smtp_url: None,
            smtp_ca_file: None,
            smtp_credentials_file: None,
            mail_from: None,
            mail_max_attempts: 8,
            alarm_rules: domain::notify::Rules::default(),
        }
    }
}

/// A running headend.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub enroll_addr: Option<SocketAddr>,
    pub issuing: services::enrollment::SharedIssuing,
    pub db: store::Db,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    fatal: tokio::sync::watch::Receiver<Option<String>>,
    /// Held while it runs on a SQLite database.
    _serve_lock: Option<store::backup::ServeLock>,
}

impl Running {
    /// Resolves with the task's name when a task of the headend died.
    pub async fn failed(&self) -> String {
        let mut f = self.fatal.clone();
        match f.wait_for(|x| x.is_some()).await {
            Ok(v) => v.clone().unwrap_or_default(),
            Err(_) => "supervisor gone".into(),
        }
    }

    /// Stops listening, ends every session (agents are told to reconnect)
    /// and waits up to 1 s for connections to close. A batch commit in
    /// progress finishes first: it runs in its session's own task.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for mut t in self.tasks {
            if tokio::time::timeout(std::time::Duration::from_secs(1), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

/// Agent connections the open-files limit allows: the soft limit less a
/// reserve for the database pool, the REST listener and logs.
pub fn fd_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => (soft.saturating_sub(256) as usize).max(16),
        Err(_) => 768,
    }
}

/// The SMTP relay for alarm mails, checked before anything starts.
fn mailer(cfg: &Config) -> Result<Option<jobs::mail::Mailer>, Error> {
    let Some(url) = &cfg.smtp_url else {
        return Ok(None);
    };
    let Some(from) = &cfg.mail_from else {
        return Err(Error::Config(
            "--smtp-url needs --mail-from (the sender of alarm mails)".into(),
        ));
    };
    if !(1..=100).contains(&cfg.mail_max_attempts) {
        return Err(Error::Config(format!(
            "--mail-max-attempts {}: use 1 to 100",
            cfg.mail_max_attempts
        )));
    }
    jobs::mail::Mailer::new(
        url,
        cfg.smtp_credentials_file.as_deref(),
        cfg.smtp_ca_file.as_deref(),
        from,
    )
    .map(Some)
    .map_err(Error::Config)
}

/// The webhook target with its secret, checked before anything starts.
fn webhook_target(cfg: &Config) -> Result<Option<jobs::webhook::Target>, Error> {
    let Some(url) = &cfg.webhook_url else {
        return Ok(None);
    };
    let target = jobs::webhook::Target::parse(url)
        .map_err(|e| Error::Config(format!("--webhook-url {e}")))?;
    let Some(file) = &cfg.webhook_secret_file else {
        tracing::warn!(%url, "webhook notifications are not signed: give --webhook-secret-file so that the receiver can check they come from this headend");
        return Ok(Some(target));
    };
    let secret = std::fs::read(file)
        .map_err(|e| Error::Config(format!("--webhook-secret-file {}: {e}", file.display())))?;
    let secret = secret.trim_ascii().to_vec();
    if secret.len() < domain::signature::MIN_SECRET {
        return Err(Error::Config(format!(
            "--webhook-secret-file {}: the secret is {} bytes; use at least {} (e.g. `openssl rand -hex 32 > {}`)",
            file.display(),
            secret.len(),
            domain::signature::MIN_SECRET,
            file.display()
        )));
    }
    Ok(Some(target.signed_with(secret)))
}

/// Binds both listeners, connects the database (running migrations) and serves.
/// Plain HTTP only on loopback: tokens and passwords must not cross the
/// network in clear.
fn check_http_listen(cfg: &Config) -> Result<(), Error> {
    if !cfg.http_listen.ip().is_loopback() && cfg.http_tls.is_none() {
        return Err(Error::Config(format!(
            "--http-listen {}: plain HTTP is served on loopback only (127.0.0.1 or ::1), since tokens and passwords would cross the network in clear; give --http-tls-cert and --http-tls-key to serve HTTPS there",
            cfg.http_listen
        )));
    }
    Ok(())
}

pub async fn start(cfg: Config) -> Result<Running, Error> {
    check_http_listen(&cfg)?;
    let https_cfg = cfg.http_tls.as_ref().map(listen::rest::load).transpose()?;
    let webhook = webhook_target(&cfg)?;
    let mailer = mailer(&cfg)?;
    // no restore runs under a headend serving a SQLite database
    let serve_lock = store::backup::serve_lock_of(&cfg.database_url)?;
    let mut db =
        store::Db::connect_with(&cfg.database_url, cfg.db_max_connections, cfg.retention).await?;
    db.notify = webhook.is_some();
    // the revocation list is in force before the first handshake
    let revocations = tankwatch_tls::Revocations::new(db.certs().revocations().await?);
    let tls = tankwatch_tls::reload::Reloading::new(tankwatch_tls::server_config(
        &cfg.tls,
        &revocations,
    )?);
    let enroll = match cfg.enroll_listen {
        Some(addr) => Some(wiring::bind(addr, "enrollment listener").await?),
        None => None,
    };
    let enroll_addr = enroll.as_ref().and_then(|l| l.local_addr().ok());
    let issuing = std::sync::Arc::new(wiring::issuing(&cfg, enroll_addr, revocations.clone())?);
    let grpc = wiring::bind(cfg.grpc_listen, "gRPC listener").await?;
    let http = wiring::bind(cfg.http_listen, "REST listener").await?;
    let grpc_addr = grpc.local_addr().map_err(|e| Error::Grpc(e.to_string()))?;
    let http_addr = http.local_addr().map_err(|e| Error::Grpc(e.to_string()))?;
    let metrics = metrics::Metrics::default();
    let dispatcher = services::Dispatcher::new(&metrics);
    let touched = services::touched::Touched::default();
    let (fatal, fatal_rx) = tokio::sync::watch::channel(None);
    let sup = Supervisor {
        shutdown: tokio::sync::watch::channel(false).0,
        fatal,
    };
    // this replica among replicas: a restart in place takes its leases back
    let replica = jobs::lease::replica_id(grpc_addr);
    let sessions = services::Sessions::of_replica(&replica);
    // the sessions an earlier life of this replica held are gone
    let stale = db.presence().forget(&replica).await?;
    if stale > 0 {
        tracing::info!(stale, %replica, "sessions this replica held before its restart forgotten");
    }
    let mut jobs = wiring::job_tasks(
        &sup,
        &cfg,
        &db,
        &metrics,
        &replica,
        &issuing,
        (webhook, mailer),
    );
    jobs.push(sup.spawn(
        "quick inventory",
        jobs::quick_inventory(
            db.clone(),
            metrics.clone(),
            touched.clone(),
            services::evaluate::Settings {
                margin_h: cfg.escalation_margin_h,
                notify: cfg.webhook_url.is_some(),
            },
            sup.stopping(),
        ),
    ));
    jobs.extend(wiring::replica_tasks(
        &sup,
        &db,
        &dispatcher,
        &issuing,
        &metrics,
        &replica,
    ));
    let ingest = ingest::Ingest::new(
        db.clone(),
        sessions.clone(),
        cfg.max_concurrent_writes,
        sup.stopping(),
        metrics.clone(),
        dispatcher.clone(),
        issuing.clone(),
    )
    .marking(touched.clone())
    .offer_compact(cfg.compact_batches);
    let reload_task = {
        let files = cfg.tls.clone();
        let revocations = revocations.clone();
        sup.spawn(
            "agent TLS reload",
            tls.clone().follow(
                "agent listener",
                vec![files.cert.clone(), files.key.clone(), files.ca.clone()],
                move || tankwatch_tls::server_config(&files, &revocations),
                sup.stopping(),
            ),
        )
    };
    let enroll_tasks = match enroll {
        Some(listener) => wiring::enrollment_tasks(&sup, &cfg, listener, &db, &issuing, &metrics)?,
        None => Vec::new(),
    };
    let limits = ingest::tls::Limits {
        max_conns: cfg.max_conns.min(fd_budget()),
        max_per_site: cfg.max_conns_per_site,
        handshake_timeout: cfg.handshake_timeout,
        session_deadline: cfg.session_deadline,
        metrics: metrics.clone(),
        revocations,
    };
    tracing::info!(
        max_conns = limits.max_conns,
        per_site = cfg.max_conns_per_site,
        "agent connection limits"
    );
    let (grpc_task, accept_task) = wiring::grpc_tasks(&sup, grpc, tls, limits, ingest);
    // the operator API on a pool of its own: it never waits behind sessions
    let api_db = db
        .with_own_pool((cfg.db_max_connections / 2).max(2))
        .await?;
    // lists and charts from a read replica, when one is given
    let reads = match &cfg.read_database_url {
        Some(url) => store::Db::connect_replica(url, (cfg.db_max_connections / 2).max(2)).await?,
        None => api_db.clone(),
    };
    let state = api::ApiState {
        reads,
        db: api_db,
        sessions,
        metrics: metrics.clone(),
        dispatcher,
        guard: services::access::Guard::new(cfg.logins_per_minute),
        issuing: issuing.clone(),
        webhook: cfg.webhook_url.is_some(),
        touched: touched.clone(),
    };
    let http_task = wiring::rest_task(&sup, &cfg, http, https_cfg, state, metrics)?;
    tracing::info!(%grpc_addr, %http_addr, https = cfg.http_tls.is_some(), backend = ?db.backend, "headend started");
    // order matters: the accept loop ends after the gRPC server dropped its receiver
    let mut tasks = vec![grpc_task, http_task, accept_task];
    tasks.extend(jobs);
    tasks.push(reload_task);
    tasks.extend(enroll_tasks);
    Ok(Running {
        grpc_addr,
        http_addr,
        enroll_addr,
        issuing,
        db,
        shutdown: sup.shutdown,
        tasks,
        fatal: fatal_rx,
        _serve_lock: serve_lock,
    })
}

#[cfg(test)]
mod tests {
    use crate::supervise::supervised;

    #[tokio::test]
    async fn a_task_that_ends_while_the_headend_runs_is_fatal_and_one_ending_at_shutdown_is_not() {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let (fatal, mut rx) = tokio::sync::watch::channel(None);
        supervised("REST server", async {}, shutdown.subscribe(), fatal.clone())
            .await
            .unwrap();
        assert_eq!(rx.borrow_and_update().as_deref(), Some("REST server"));
        // the first one is kept
        supervised("gRPC server", async {}, shutdown.subscribe(), fatal.clone())
            .await
            .unwrap();
        assert_eq!(rx.borrow().as_deref(), Some("REST server"));
        let (fatal, rx) = tokio::sync::watch::channel(None);
        shutdown.send_replace(true);
        supervised("gRPC server", async {}, shutdown.subscribe(), fatal)
            .await
            .unwrap();
        assert!(rx.borrow().is_none(), "ending at shutdown is not a failure");
    }
}
