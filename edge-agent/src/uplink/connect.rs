//! Dialling the headend: TCP (counted), TLS with the agent's certificate
//! files (re-read at every connect, so a renewed certificate is used), the
//! HTTP/2 channel with its keepalive; the trial connection of a renewal;
//! what a TLS refusal means for the installer.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tankwatch_proto::v1::{self, agent_link_client::AgentLinkClient};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::SessionError;
use super::wire::{self, WireBytes};
use crate::config::AgentConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The name verified in the headend's certificate: `headend.server_name`,
/// else the host of the address dialled.
fn server_name(cfg: &AgentConfig, address: &str) -> String {
    cfg.headend.server_name.clone().unwrap_or_else(|| {
        let a = address;
        let host = a.rsplit_once(':').map(|(h, _)| h).unwrap_or(a);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    })
}

/// The agent's certificate files, from its configuration.
pub fn tls_files(cfg: &AgentConfig) -> tankwatch_tls::TlsFiles {
    tankwatch_tls::TlsFiles {
        cert: cfg.tls.cert.clone(),
        key: cfg.tls.key.clone(),
        ca: cfg.tls.ca.clone(),
    }
}

pub(super) async fn connect(
    cfg: &AgentConfig,
    address: &str,
    wire: &Arc<WireBytes>,
) -> Result<Channel, SessionError> {
    // Re-read the certificate files on every connect: a renewed certificate is picked up.
    let tls = tankwatch_tls::client_config(&tls_files(cfg))?;
    channel(address, &server_name(cfg, address), tls, Some(wire.clone())).await
}

async fn connect_with(
    cfg: &AgentConfig,
    address: &str,
    files: &tankwatch_tls::TlsFiles,
) -> Result<Channel, SessionError> {
    let tls = tankwatch_tls::client_config(files)?;
    channel(address, &server_name(cfg, address), tls, None).await
}

/// The trial connection of a renewal: the staged certificate must open a
/// connection the headend accepts and answers `Whoami` for our site.
/// Returns the serial the headend saw.
pub(super) async fn probe(
    cfg: &AgentConfig,
    address: &str,
    files: tankwatch_tls::TlsFiles,
) -> Result<String, String> {
    let channel = connect_with(cfg, address, &files)
        .await
        .map_err(|e| e.to_string())?;
    let who = AgentLinkClient::new(channel)
        .whoami(v1::WhoamiRequest {})
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    if who.site_id != cfg.site_id {
        return Err(format!(
            "the headend sees site {:?}, not {:?}",
            who.site_id, cfg.site_id
        ));
    }
    Ok(who.serial)
}

/// Opens an HTTP/2 channel to `address` over TLS with the given rustls
/// config (built by `tankwatch_pki`), verifying `server_name`; counts its
/// bytes in `wire` when given.
pub async fn channel(
    address: &str,
    server_name: &str,
    tls: rustls::ClientConfig,
    wire: Option<Arc<WireBytes>>,
) -> Result<Channel, SessionError> {
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| SessionError::Connect(format!("headend.server_name: {e}")))?;
    let addr = address.to_string();
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let (tls, name, addr, wire) = (tls.clone(), name.clone(), addr.clone(), wire.clone());
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let tcp = wire::Counted::new(tcp, wire.unwrap_or_default());
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    // The scheme is only a label for tonic: TLS is done by the connector above.
    Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| SessionError::Connect(format!("headend.address: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        // a silently dead headend or link is found within 20 s
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            use std::error::Error as _;
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            SessionError::Connect(msg)
        })
}

/// What a TLS refusal by the headend means for the installer, appended
/// to the error (the alert names alone say little).
pub fn explain(e: &str) -> String {
    let hint = if e.contains("CertificateRevoked") {
        "the headend refused this agent's certificate: it is revoked; re-enroll the agent with a new token (docs/enrollment.md)"
    } else if e.contains("CertificateExpired") || e.contains("certificate expired") {
        "the agent's certificate expired before it was renewed; re-enroll the agent with a new token (docs/enrollment.md)"
    } else if e.contains("UnknownCA") || e.contains("UnknownIssuer") {
        "the headend and the agent do not trust the same CA (tls.ca, or a certificate from another PKI)"
    } else {
        return e.to_string();
    };
    format!("{hint} ({e})")
}
