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

pub use error::Error;

use std::net::SocketAddr;
use std::path::PathBuf;

use tankwatch_proto::v1::agent_link_server::AgentLinkServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use crate::supervise::{Supervisor, on_own_runtime};

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

/// The enrollment listener's TLS: the server certificate's chain with the
/// root appended (an enrolling agent pins the root by its fingerprint),
/// no client certificates.
fn enroll_tls(files: &tankwatch_tls::TlsFiles) -> Result<rustls::ServerConfig, Error> {
    let mut chain = tankwatch_tls::load_certs(&files.cert)?;
    for root in tankwatch_tls::load_certs(&files.ca)? {
        if !chain.contains(&root) {
            chain.push(root);
        }
    }
    Ok(tankwatch_tls::configs::server_config_no_client_auth(
        chain,
        tankwatch_tls::load_key(&files.key)?,
    )?)
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
pub async fn start(cfg: Config) -> Result<Running, Error> {
    if !cfg.http_listen.ip().is_loopback() && cfg.http_tls.is_none() {
        return Err(Error::Config(format!(
            "--http-listen {}: plain HTTP is served on loopback only (127.0.0.1 or ::1), since tokens and passwords would cross the network in clear; give --http-tls-cert and --http-tls-key to serve HTTPS there",
            cfg.http_listen
        )));
    }
    let https_cfg = cfg.http_tls.as_ref().map(listen::rest::load).transpose()?;
    let webhook = webhook_target(&cfg)?;
    let mailer = mailer(&cfg)?;
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
        Some(addr) => Some(bind(addr, "enrollment listener").await?),
        None => None,
    };
    let enroll_addr = enroll.as_ref().and_then(|l| l.local_addr().ok());
    let issuing = std::sync::Arc::new(issuing(&cfg, enroll_addr, revocations.clone())?);
    let grpc = bind(cfg.grpc_listen, "gRPC listener").await?;
    let http = bind(cfg.http_listen, "REST listener").await?;
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
    let mut jobs = job_tasks(
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
    jobs.extend(replica_tasks(
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
        Some(listener) => enrollment_tasks(&sup, &cfg, listener, &db, &issuing, &metrics)?,
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
    let (grpc_task, accept_task) = grpc_tasks(&sup, grpc, tls, limits, ingest);
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
    let http_task = rest_task(&sup, &cfg, http, https_cfg, state, metrics)?;
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
    })
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// The issuing side: the intermediate CA if this headend has one, the
/// root an enrolling agent pins, where enrollment is served.
fn issuing(
    cfg: &Config,
    enroll_addr: Option<SocketAddr>,
    revocations: tankwatch_tls::Revocations,
) -> Result<services::enrollment::Issuing, Error> {
    let ca = match &cfg.issuer {
        Some(f) => Some(tankwatch_pki::Ca::load(&f.cert, &f.key)?),
        None => None,
    };
    let root = tankwatch_tls::load_certs(&cfg.tls.ca)?;
    let root_pem = std::fs::read_to_string(&cfg.tls.ca).map_err(|source| {
        Error::Tls(tankwatch_tls::Error::Io {
            path: cfg.tls.ca.clone(),
            source,
        })
    })?;
    Ok(services::enrollment::Issuing {
        ca,
        lifetime: tankwatch_pki::Lifetime(cfg.agent_cert_lifetime),
        fingerprint: root
            .first()
            .map(|c| tankwatch_tls::fingerprint(c))
            .unwrap_or_default(),
        root_pem,
        enroll_address: cfg
            .enroll_address
            .clone()
            .or_else(|| enroll_addr.map(|a| a.to_string()))
            .unwrap_or_else(|| "(enrollment is off on this headend)".into()),
        revocations,
        renewal_fault: std::sync::Mutex::new(None),
    })
}

/// What the replicas tell each other (on every replica).
fn replica_tasks(
    sup: &Supervisor,
    db: &store::Db,
    dispatcher: &services::Dispatcher,
    issuing: &services::enrollment::SharedIssuing,
    metrics: &metrics::Metrics,
    replica: &str,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        sup.spawn(
            "notes to other replicas",
            jobs::replicas::announce(
                db.clone(),
                dispatcher.clone(),
                metrics.clone(),
                replica.to_string(),
                sup.stopping(),
            ),
        ),
        sup.spawn(
            "notes from other replicas",
            jobs::replicas::listen(
                db.clone(),
                dispatcher.clone(),
                issuing.clone(),
                metrics.clone(),
                replica.to_string(),
                sup.stopping(),
            ),
        ),
        sup.spawn(
            "replica heartbeat",
            jobs::replicas::heartbeat(db.clone(), replica.to_string(), sup.stopping()),
        ),
        sup.spawn(
            "database watch",
            jobs::database_watch(db.clone(), metrics.clone(), sup.stopping()),
        ),
        sup.spawn(
            "dispatch safety net",
            jobs::replicas::dispatch_safety_net(db.clone(), dispatcher.clone(), sup.stopping()),
        ),
    ]
}

/// The jobs under database leases, and the revocation list's reload.
fn job_tasks(
    sup: &Supervisor,
    cfg: &Config,
    db: &store::Db,
    metrics: &metrics::Metrics,
    replica: &str,
    issuing: &std::sync::Arc<services::enrollment::Issuing>,
    (webhook, mailer): (Option<jobs::webhook::Target>, Option<jobs::mail::Mailer>),
) -> Vec<tokio::task::JoinHandle<()>> {
    let r = || replica.to_string();
    let mut tasks = vec![
        sup.spawn(
            "command sweeper",
            jobs::sweep(db.clone(), r(), sup.stopping()),
        ),
        sup.spawn(
            "retention",
            jobs::retention(db.clone(), metrics.clone(), r(), sup.stopping()),
        ),
        sup.spawn(
            "inventory",
            jobs::inventory(
                db.clone(),
                metrics.clone(),
                cfg.inventory_every,
                services::evaluate::Settings {
                    margin_h: cfg.escalation_margin_h,
                    notify: cfg.webhook_url.is_some(),
                },
                r(),
                sup.stopping(),
            ),
        ),
        sup.spawn(
            "revocation list",
            jobs::revocations(db.clone(), issuing.clone(), sup.stopping()),
        ),
    ];
    if let Some(mailer) = mailer {
        tasks.push(sup.spawn(
            "alarm mail",
            jobs::alarm_mail(
                db.clone(),
                metrics.clone(),
                mailer,
                cfg.alarm_rules,
                cfg.mail_max_attempts,
                r(),
                sup.stopping(),
            ),
        ));
    }
    if let Some(target) = webhook {
        tasks.push(sup.spawn(
            "webhook",
            jobs::webhooks(db.clone(), metrics.clone(), target, r(), sup.stopping()),
        ));
    }
    tasks
}

/// The enrollment listener: its TLS (followed while running), accept
/// loop and gRPC server.
fn enrollment_tasks(
    sup: &Supervisor,
    cfg: &Config,
    listener: TcpListener,
    db: &store::Db,
    issuing: &std::sync::Arc<services::enrollment::Issuing>,
    metrics: &metrics::Metrics,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
    let files = cfg.tls.clone();
    let build = move || enroll_tls(&files);
    let cfg_now = tankwatch_tls::reload::Reloading::new(build()?);
    let mut tasks = vec![sup.spawn(
        "enrollment TLS reload",
        cfg_now.clone().follow(
            "enrollment listener",
            vec![
                cfg.tls.cert.clone(),
                cfg.tls.key.clone(),
                cfg.tls.ca.clone(),
            ],
            build,
            sup.stopping(),
        ),
    )];
    let (conns, accept) =
        ingest::enroll::incoming(listener, cfg_now, metrics.clone(), sup.stopping());
    tasks.push(sup.spawn("enrollment accept loop", accept));
    let svc = tankwatch_proto::v1::enrollment_server::EnrollmentServer::new(
        ingest::enroll::Enrollment::new(db.clone(), issuing.clone(), metrics.clone()),
    )
    .max_decoding_message_size(ingest::enroll::MAX_MESSAGE_BYTES);
    let mut stop = sup.stopping();
    let serve = async move {
        let r = tonic::transport::Server::builder()
            .timeout(std::time::Duration::from_secs(30))
            .add_service(svc)
            .serve_with_incoming_shutdown(ReceiverStream::new(conns), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "enrollment server failed");
        }
    };
    tasks.push(sup.spawn("enrollment server", serve));
    Ok(tasks)
}

/// The agent listener: its accept loop (TLS, identity, limits) and the
/// gRPC server; returns (server, accept loop).
fn grpc_tasks(
    sup: &Supervisor,
    grpc: TcpListener,
    tls: tankwatch_tls::reload::Reloading,
    limits: ingest::tls::Limits,
    ingest: ingest::Ingest,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let svc = AgentLinkServer::new(ingest)
        // the limit holds after decompression too (tonic stops inflating at it)
        .max_decoding_message_size(ingest::MAX_MESSAGE_BYTES)
        // agents from issue 30 on compress their messages (ADR 0013); acks stay plain
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let (incoming, accept_task) = ingest::tls::incoming(grpc, tls, limits);
    let accept_task = sup.spawn("agent accept loop", accept_task);
    let incoming = ReceiverStream::new(incoming);
    let mut stop = sup.stopping();
    let grpc = async move {
        let r = tonic::transport::Server::builder()
            // a silently dead agent (a cut link, a frozen proxy) is found
            // within 20 s: a ping every 10 s, 10 s for its answer
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "gRPC server failed");
        }
    };
    (sup.spawn("gRPC server", grpc), accept_task)
}

/// The operator API: its hosts, router, and server on a runtime of its own.
fn rest_task(
    sup: &Supervisor,
    cfg: &Config,
    http: TcpListener,
    https_cfg: Option<rustls::ServerConfig>,
    state: api::ApiState,
    metrics: metrics::Metrics,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let http_addr = http.local_addr().map_err(|e| Error::Grpc(e.to_string()))?;
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    hosts.push(http_addr.ip().to_string());
    hosts.extend(cfg.http_hosts.iter().map(|h| api::edge::host_of(h)));
    let app = api::router(
        state,
        api::edge::Edge {
            hosts,
            metrics: metrics.clone(),
            https: https_cfg.is_some(),
        },
    );
    let https_files = cfg.http_tls.clone();
    let stop = sup.stopping();
    let http = http.into_std().map_err(|source| Error::Bind {
        what: "REST listener",
        addr: http_addr,
        source,
    })?;
    // REST on its own runtime (two threads): it answers during a storm
    let rest = on_own_runtime("rest", 2, move || async move {
        let http = match TcpListener::from_std(http) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "REST listener could not move to its runtime");
                return;
            }
        };
        let tls = https_files.zip(https_cfg);
        listen::rest::serve(http, app, tls, metrics, stop).await;
    });
    Ok(sup.spawn("REST server", rest))
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
