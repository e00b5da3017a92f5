//! The independent receivers of the headend's notifications, run by the
//! tests and benchmarks: a webhook receiver that checks signatures with
//! Python's own hmac (tests/peers/webhook_receiver.py) and an SMTP server
//! (aiosmtpd: tests/peers/smtp_sink.py). Each keeps what it got as JSON
//! lines, read back here.

use std::path::PathBuf;
use std::time::Duration;

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

/// Postfix's `smtp-sink` (Debian's postfix package, installed by
/// scripts/peers.sh): a second SMTP server, independent of aiosmtpd. It
/// announces PIPELINING, AUTH (any login passes) and DSN, and keeps each
/// mail as a file: the envelope as `X-*-Args` headers, then the message.
/// Its options inject faults (`-f rcpt`: every RCPT refused with a 5xx).
pub struct PostfixSink {
    child: std::process::Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// One mail as smtp-sink kept it.
#[derive(Debug, Clone)]
pub struct KeptMail {
    pub rcpt: Vec<String>,
    pub subject: String,
    pub text: String,
}

impl PostfixSink {
    pub async fn start(opts: &[&str]) -> Result<PostfixSink> {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::path::Path::new("/usr/sbin/smtp-sink");
        anyhow::ensure!(
            exe.exists(),
            "{} is missing: run scripts/peers.sh (it installs Debian's postfix)",
            exe.display()
        );
        let dir = tempfile::tempdir()?;
        // smtp-sink drops to `nobody` after binding; it writes the files as that user
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        let port = free_port();
        let child = std::process::Command::new(exe)
            .args(["-u", "nobody", "-d"])
            .arg(format!("{}/%Y%m%d%H%M%S.", dir.path().display()))
            .args(opts)
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let sink = PostfixSink { child, dir, port };
        crate::eventually("smtp-sink listening", Duration::from_secs(5), || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ()))
        })
        .await?;
        Ok(sink)
    }

    /// Every mail kept so far.
    pub fn mails(&self) -> Result<Vec<KeptMail>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.path())? {
            let text = std::fs::read_to_string(e?.path())?;
            let header = |name: &str| {
                text.lines()
                    .filter_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().trim_matches(['<', '>']).to_string())
                    .collect::<Vec<_>>()
            };
            out.push(KeptMail {
                rcpt: header("X-Rcpt-Args:"),
                subject: header("Subject:").into_iter().next().unwrap_or_default(),
                text: text.clone(),
            });
        }
        Ok(out)
    }
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
