//! The independent receivers of the headend's notifications, run by the
//! tests and benchmarks: a webhook receiver that checks signatures with
//! Python's own hmac (tests/peers/webhook_receiver.py) and an SMTP server
//! (aiosmtpd: tests/peers/smtp_sink.py). Each keeps what it got as JSON
//! lines, read back here.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::Value;

use crate::{LinePeer, free_port};

fn lines(path: &std::path::Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// The webhook receiver and the notifications it kept.
pub struct WebhookReceiver {
    pub peer: LinePeer,
    out: PathBuf,
    pub url: String,
    pub secret_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl WebhookReceiver {
    pub fn start() -> Result<WebhookReceiver> {
        let dir = tempfile::tempdir()?;
        let secret_file = dir.path().join("webhook.secret");
        std::fs::write(&secret_file, "an e2e webhook secret, 32 bytes.\n")?;
        let out = dir.path().join("got.jsonl");
        let port = free_port();
        let peer = LinePeer::start(
            "webhook_receiver.py",
            &[
                secret_file.display().to_string(),
                out.display().to_string(),
                port.to_string(),
            ],
            &[],
        )?;
        Ok(WebhookReceiver {
            peer,
            out,
            url: format!("http://127.0.0.1:{port}/hooks/tankwatch"),
            secret_file,
            _dir: dir,
        })
    }

    /// What arrived, in order: `{"verified", "why", "at_ms", "body"}`.
    pub fn got(&self) -> Result<Vec<Value>> {
        lines(&self.out)
    }
}

/// The SMTP server and the messages it kept.
pub struct SmtpSink {
    pub peer: LinePeer,
    out: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> Result<SmtpSink> {
        SmtpSink::start_with(&[])
    }

    /// With the sink's options: `--starttls CERT KEY` (STARTTLS required),
    /// `--tls CERT KEY` (smtps), `--auth USER:PASSWORD` (AUTH required).
    pub fn start_with(opts: &[String]) -> Result<SmtpSink> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("mail.jsonl");
        let port = free_port();
        let mut args = vec![port.to_string(), out.display().to_string()];
        args.extend(opts.iter().cloned());
        let peer = LinePeer::start("smtp_sink.py", &args, &[])?;
        Ok(SmtpSink {
            peer,
            out,
            port,
            _dir: dir,
        })
    }

    /// Every message: `{"from", "to", "subject", "body", "at_ms", "tls",
    /// "login"}`.
    pub fn mails(&self) -> Result<Vec<Value>> {
        lines(&self.out)
    }

    /// The messages to `who`.
    pub fn to(&self, who: &str) -> Result<Vec<Value>> {
        Ok(self
            .mails()?
            .into_iter()
            .filter(|m| {
                m["to"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == who))
            })
            .collect())
    }
}
