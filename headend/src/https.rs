//! The REST API over HTTPS, served by the headend itself (rustls). The
//! certificate and key are files (PEM); when either changes on disk the
//! next handshake uses the new pair, and a pair that does not load is
//! refused with an error in the log while the old one keeps serving.
//! Connections are bounded ([`MAX_CONNS`]; when full, new ones wait in
//! the kernel's backlog) and a handshake has [`HANDSHAKE_TIMEOUT`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tankwatch_tls::reload::Reloading;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::Error;

/// REST connections at once over HTTPS.
pub const MAX_CONNS: usize = 1024;
/// A client's TLS handshake deadline.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Serves `app` over TLS on `listener` until `stop` says so.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    files: HttpsFiles,
    first: rustls::ServerConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let current = Reloading::new(first);
    tokio::spawn(current.clone().follow(
        "REST API",
        vec![files.cert.clone(), files.key.clone()],
        move || load(&files),
        stop.clone(),
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
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
        let cfg = current.current();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "REST TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "REST TLS handshake timed out");
                    return;
                }
            };
            let svc = app.map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                r
            });
            let r = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc))
                .await;
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "REST connection ended with an error");
            }
        });
    }
}
