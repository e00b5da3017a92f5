//! The webhook sender (a thin shell): POSTs each queued escalation or
//! alarm change as JSON, signed (`domain::signature`) when a secret is
//! set, with retries and a dead-letter state. The outbox row is
//! written in the same transaction as the change, so a crash loses
//! nothing; a notification may arrive twice (at least once), and carries
//! the escalation id and its `updated_ms` to tell.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Attempts before a notification becomes a dead letter.
pub const MAX_ATTEMPTS: i64 = 8;
/// One attempt's deadline (connect, TLS, request, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// When the next attempt is due after `attempts` failed ones: 5 s
/// doubling, at most 1 h.
pub fn backoff_ms(attempts: i64) -> i64 {
    (5_000i64 << attempts.clamp(0, 20)).min(3_600_000)
}

/// A webhook target: `http://` or `https://` (system trust roots), and
/// the secret its notifications are signed with.
#[derive(Clone)]
pub struct Target {
    pub url: hyper::Uri,
    tls: Option<tokio_rustls::TlsConnector>,
    secret: Option<Vec<u8>>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
                let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
            }
            _ => {
                return Err(format!(
                    "{url:?}: the webhook URL must be http:// or https://"
                ));
            }
        };
        if uri.host().is_none() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Target {
            url: uri,
            tls,
            secret: None,
        })
    }

    /// Signs every notification with `secret` (`domain::signature`).
    pub fn signed_with(mut self, secret: Vec<u8>) -> Target {
        self.secret = Some(secret);
        self
    }

    /// POSTs `body`; Ok on a 2xx answer, else why not.
    pub async fn post(&self, body: String) -> Result<(), String> {
        tokio::time::timeout(ATTEMPT_TIMEOUT, self.post_inner(body))
            .await
            .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
    }

    async fn post_inner(&self, body: String) -> Result<(), String> {
        let host = self.url.host().unwrap_or_default().to_string();
        let port = self
            .url
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let mut req = Request::post(self.url.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(hyper::header::HOST, &host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "tankwatch-headend");
        if let Some(secret) = &self.secret {
            use crate::domain::signature;
            let ts = crate::wallclock::now_ms().div_euclid(1000);
            req = req
                .header(signature::TIMESTAMP_HEADER, ts.to_string())
                .header(
                    signature::SIGNATURE_HEADER,
                    signature::sign(secret, ts, body.as_bytes()),
                );
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let status = match &self.tls {
            None => send(TokioIo::new(tcp), req).await?,
            Some(c) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host}: {e}"))?;
                let tls = c
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(TokioIo::new(tls), req).await?
            }
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

async fn send<T>(io: TokioIo<T>, req: Request<Full<Bytes>>) -> Result<hyper::StatusCode, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut s, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let res = s
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = res.status();
    // read (and bound) the answer so the connection ends cleanly
    let _ = http_body_util::Limited::new(res.into_body(), 64 * 1024)
        .collect()
        .await;
    conn.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_5_s_doubling_to_an_hour() {
        assert_eq!(backoff_ms(0), 5_000);
        assert_eq!(backoff_ms(1), 10_000);
        assert_eq!(backoff_ms(7), 640_000);
        assert_eq!(backoff_ms(10), 3_600_000);
        assert_eq!(backoff_ms(1_000), 3_600_000);
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_targets() {
        assert!(Target::parse("http://127.0.0.1:9/hook").is_ok());
        assert!(Target::parse("https://hooks.example.com/x").is_ok());
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("/relative").is_err());
    }
}
