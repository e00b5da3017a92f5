//! The headend's wiring beside `start` (lib.rs): binding the listeners,
//! the issuing side, and spawning each group of tasks under the
//! supervisor (jobs, the notes between replicas, enrollment, gRPC, REST).

use std::net::SocketAddr;

use tankwatch_proto::v1::agent_link_server::AgentLinkServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use crate::supervise::{Supervisor, on_own_runtime};
use crate::{Config, Error, api, ingest, jobs, listen, metrics, services, store};

pub(crate) async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// The issuing side: the intermediate CA if this headend has one, the
/// root an enrolling agent pins, where enrollment is served.
pub(crate) fn issuing(
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
pub(crate) fn replica_tasks(
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
pub(crate) fn job_tasks(
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
pub(crate) fn enrollment_tasks(
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
pub(crate) fn grpc_tasks(
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
pub(crate) fn rest_task(
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

/// The enrollment listener's TLS: the server certificate's chain with the
/// root appended (an enrolling agent pins the root by its fingerprint),
/// no client certificates.
pub(crate) fn enroll_tls(files: &tankwatch_tls::TlsFiles) -> Result<rustls::ServerConfig, Error> {
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
