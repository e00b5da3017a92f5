//! The SMTP sender (a thin shell over lettre): one connection per round,
//! plain, STARTTLS or TLS as the URL says, credentials from a file, each
//! attempt bounded. What to send and to whom is `services::notify`.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// One attempt's deadline (connect, TLS, the SMTP dialogue).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a mail was not sent, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// The relay refused it for good (a 5xx reply), or it cannot be made.
    pub permanent: bool,
    pub text: String,
}

impl SendError {
    fn permanent(text: String) -> SendError {
        SendError {
            permanent: true,
            text,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// An SMTP relay and the sender's address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `url`: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS); `credentials`: a file with the
    /// user on its first line and the password on its second; `ca`: a CA
    /// certificate (PEM) the relay's certificate may chain to, besides the
    /// system's roots (a relay with a private CA).
    pub fn new(
        url: &str,
        credentials: Option<&std::path::Path>,
        ca: Option<&std::path::Path>,
        from: &str,
    ) -> Result<Mailer, String> {
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("--smtp-url {url:?}: {e}"))?
            .timeout(Some(ATTEMPT_TIMEOUT));
        if let Some(ca) = ca {
            b = b.tls(tls_with_ca(url, ca)?);
        }
        if let Some(file) = credentials {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--smtp-credentials-file {}: {e}", file.display()))?;
            let mut lines = text.lines();
            match (lines.next(), lines.next()) {
                (Some(user), Some(password)) if !user.trim().is_empty() => {
                    b = b.credentials(Credentials::new(user.trim().into(), password.into()));
                }
                _ => {
                    return Err(format!(
                        "--smtp-credentials-file {}: the user on the first line, the password on the second",
                        file.display()
                    ));
                }
            }
        }
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("--mail-from {from:?}: {e}"))?;
        Ok(Mailer {
            transport: b.build(),
            from,
        })
    }

    /// Sends one plain-text mail; Ok when the server accepted it.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::permanent(format!("{to:?}: {e}")))?;
        let m = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| SendError::permanent(e.to_string()))?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.transport.send(m)).await {
            Err(_) => Err(SendError {
                permanent: false,
                text: format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            }),
            Ok(Ok(_)) => Ok(()),
            // a 5xx reply (a recipient refused, a message rejected) will
            // not change on retry; everything else (4xx, the network, TLS
            // while the relay is being fixed) may
            Ok(Err(e)) => Err(SendError {
                permanent: e.is_permanent(),
                text: e.to_string(),
            }),
        }
    }
}

/// The URL's TLS mode with `ca` added to the roots.
fn tls_with_ca(url: &str, ca: &std::path::Path) -> Result<Tls, String> {
    let u = url::Url::parse(url).map_err(|e| format!("--smtp-url {url:?}: {e}"))?;
    let host = u
        .host_str()
        .ok_or_else(|| format!("--smtp-url {url:?}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    // every certificate of the file (a file without one is an error, not
    // an empty addition to the roots)
    let certs = tankwatch_tls::load_certs(ca).map_err(|e| format!("--smtp-ca-file: {e}"))?;
    let mut params = TlsParameters::builder(host.to_string());
    for c in certs {
        let cert = Certificate::from_der(c.to_vec())
            .map_err(|e| format!("--smtp-ca-file {}: {e}", ca.display()))?;
        params = params.add_root_certificate(cert);
    }
    let params = params
        .build_rustls()
        .map_err(|e| format!("--smtp-ca-file {}: {e}", ca.display()))?;
    let mode = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.to_string());
    match (u.scheme(), mode.as_deref()) {
        ("smtps", _) => Ok(Tls::Wrapper(params)),
        ("smtp", Some("required")) => Ok(Tls::Required(params)),
        ("smtp", Some("opportunistic")) => Ok(Tls::Opportunistic(params)),
        _ => Err(format!(
            "--smtp-ca-file is for a relay over TLS: use smtps://host:465 or smtp://host:587?tls=required in --smtp-url (not {url:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_goes_with_a_tls_url_only_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let (pki, _) = tankwatch_pki::Ca::create("t", 1).unwrap();
        std::fs::write(&ca, pki.cert_pem()).unwrap();
        for url in [
            "smtps://relay.example:465",
            "smtp://relay.example:587?tls=required",
            "smtp://127.0.0.1:2525?tls=opportunistic",
        ] {
            assert!(tls_with_ca(url, &ca).is_ok(), "{url}");
        }
        let e = tls_with_ca("smtp://relay.example:25", &ca).unwrap_err();
        assert!(e.contains("tls=required"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = tls_with_ca("smtps://relay.example", &junk).unwrap_err();
        assert!(
            e.contains("--smtp-ca-file") && e.contains("junk.pem"),
            "{e}"
        );
        let e = tls_with_ca("smtps://relay.example", &dir.path().join("missing.pem")).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
