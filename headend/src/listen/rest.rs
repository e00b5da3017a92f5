//! The REST listener, plain HTTP (loopback only) or HTTPS (rustls, with
//! the certificate files followed while running: when either changes on
//! disk the next handshake uses the new pair; a pair that does not load
//! is refused with an error in the log while the old one keeps serving).
//!
//! Bounded against whoever holds connections open without using them
//! (issue 27: 1,024 held TLS connections took the API down):
//! * at most [`MAX_CONNS`] connections, [`MAX_PER_ADDRESS`] from one
//!   client network; past either, the oldest connection idle for a second
//!   or more is evicted for the new one ([`super::admission`]);
//! * a TLS handshake has [`HANDSHAKE_TIMEOUT`]; the first request must
//!   arrive within [`FIRST_REQUEST_TIMEOUT`] of the connection (so must
//!   each request's headers: trickling is cut off); a kept-alive
//!   connection idle for [`IDLE_TIMEOUT`] is closed.
//!
//! A connection serving a request is never evicted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tankwatch_tls::reload::Reloading;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::admission::Bounds;
use super::{Admission, Ticket};
use crate::Error;
use crate::metrics::Metrics;

/// REST connections at once.
pub const MAX_CONNS: usize = 1024;
/// REST connections at once from one client network (an operator's
/// browser opens about six; a NAT of many operators shares this).
pub const MAX_PER_ADDRESS: usize = 64;
/// A client's TLS handshake deadline.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// From the connection to its first request's complete headers; also
/// the most any request's headers may take.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An idle connection younger than this is never evicted.
pub const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);
/// How often the files are checked for a change.
pub const RELOAD_CHECK: Duration = tankwatch_tls::reload::RELOAD_CHECK;

/// The REST API's certificate files.
#[derive(Debug, Clone)]
pub struct HttpsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A server config from the files (no client certificates: operators
/// authenticate with tokens).
pub fn load(files: &HttpsFiles) -> Result<rustls::ServerConfig, Error> {
    let certs = tankwatch_tls::load_certs(&files.cert)?;
    let key = tankwatch_tls::load_key(&files.key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        Error::Config(format!(
            "--http-tls-cert {} / --http-tls-key {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The REST listener's bounds.
pub fn bounds() -> Bounds {
    Bounds {
        max_total: MAX_CONNS,
        max_per_key: MAX_PER_ADDRESS,
        min_idle_ms: MIN_IDLE_TO_EVICT.as_millis() as i64,
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<(HttpsFiles, rustls::ServerConfig)>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let current = tls.map(|(files, first)| {
        let current = Reloading::new(first);
        tokio::spawn(current.clone().follow(
            "REST API",
            vec![files.cert.clone(), files.key.clone()],
            move || load(&files),
            stop.clone(),
        ));
        current
    });
    let admission = Admission::new("rest", bounds(), metrics);
    if current.is_some() {
        admission.timeout_metric("handshake_timeout_seconds", HANDSHAKE_TIMEOUT);
    }
    admission.timeout_metric("first_request_timeout_seconds", FIRST_REQUEST_TIMEOUT);
    admission.timeout_metric("idle_timeout_seconds", IDLE_TIMEOUT);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // out of descriptors or similar: back off, never spin
                    tracing::warn!(error = %e, "REST accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let ticket = tokio::select! {
            t = admission.admit(peer.ip()) => match t {
                Some(t) => t,
                None => continue, // its network holds its share: dropping closes it
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let _ = tcp.set_nodelay(true);
        let (app, cfg) = (app.clone(), current.as_ref().map(Reloading::current));
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let ticket = Arc::new(ticket);
            let (activity, watch_activity) = watch::channel(0usize);
            let served = async {
                match cfg {
                    None => connection(tcp, peer, app, ticket.clone(), activity).await,
                    Some(cfg) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                connection(tls, peer, app, ticket.clone(), activity).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "REST TLS handshake failed")
                            }
                            Err(_) => {
                                ticket.admission().closed("handshake_timeout");
                                tracing::debug!(%peer, "REST TLS handshake timed out");
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = ticket.evicted() => {
                    tracing::debug!(%peer, "idle REST connection evicted for a new one");
                }
                why = idle(watch_activity) => {
                    ticket.admission().closed(why);
                    tracing::debug!(%peer, why, "REST connection closed");
                }
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Resolves when the connection has been without a request too long:
/// [`FIRST_REQUEST_TIMEOUT`] before its first, [`IDLE_TIMEOUT`] after.
async fn idle(mut in_flight: watch::Receiver<usize>) -> &'static str {
    let mut first = true;
    loop {
        if in_flight.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        let (limit, why) = if first {
            (FIRST_REQUEST_TIMEOUT, "first_request_timeout")
        } else {
            (IDLE_TIMEOUT, "idle_timeout")
        };
        tokio::select! {
            _ = tokio::time::sleep(limit) => return why,
            r = in_flight.changed() => {
                if r.is_err() {
                    return std::future::pending().await;
                }
                first = false;
            }
        }
    }
}

/// One connection's HTTP/1.1 or HTTP/2 serving; each request is counted
/// in flight while its handler runs.
async fn connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    ticket: Arc<Ticket>,
    activity: watch::Sender<usize>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(activity);
    let svc = tower::service_fn(move |mut r: axum::http::Request<hyper::body::Incoming>| {
        r.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        let (app, ticket, activity) = (app.clone(), ticket.clone(), activity.clone());
        async move {
            let _busy = Busy::start(ticket, activity);
            app.oneshot(r).await
        }
    });
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(FIRST_REQUEST_TIMEOUT)
        // far above the API's own bound (`edge::MAX_HEADERS`), which
        // answers in the one error shape
        .max_headers(1000);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64);
    if let Err(e) = b
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
        .await
    {
        tracing::debug!(%peer, error = %e, "REST connection ended with an error");
    }
}

/// A request in flight (the connection is busy while one lives).
struct Busy {
    ticket: Arc<Ticket>,
    activity: Arc<watch::Sender<usize>>,
}

impl Busy {
    fn start(ticket: Arc<Ticket>, activity: Arc<watch::Sender<usize>>) -> Busy {
        ticket.busy();
        activity.send_modify(|n| *n += 1);
        Busy { ticket, activity }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.ticket.done();
        self.activity.send_modify(|n| *n = n.saturating_sub(1));
    }
}
