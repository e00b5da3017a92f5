//! The SMTP sender (a thin shell over lettre): one connection per round,
//! plain, STARTTLS or TLS as the URL says, credentials from a file, each
//! attempt bounded. What to send and to whom is `services::notify`.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// One attempt's deadline (connect, TLS, the SMTP dialogue).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// An SMTP relay and the sender's address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `url`: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS); `credentials`: a file with the
    /// user on its first line and the password on its second.
    pub fn new(
        url: &str,
        credentials: Option<&std::path::Path>,
        from: &str,
    ) -> Result<Mailer, String> {
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("--smtp-url {url:?}: {e}"))?
            .timeout(Some(ATTEMPT_TIMEOUT));
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
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|e| format!("{to:?}: {e}"))?;
        let m = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(ATTEMPT_TIMEOUT, self.transport.send(m))
            .await
            .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
