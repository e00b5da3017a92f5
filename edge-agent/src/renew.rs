//! Certificate renewal: the agent asks for a new certificate over its
//! live mTLS session at two thirds of its certificate's lifetime, with a
//! new key made here, and switches to it **only after a connection with
//! it succeeded**; otherwise it keeps the old one and retries with
//! backoff. Failures show on `/status` and go to the headend.
//!
//! The rules (when to renew, when to retry, whether an answer is ours)
//! are pure functions; [`Renewer`] holds the state across sessions and
//! does the file work, crash-safe:
//!
//! 1. the new key and certificate are written beside the live ones
//!    (`<key>.next`, `<cert>.next`, the key 0600);
//! 2. a connection with them must answer `Whoami` with our site;
//! 3. then `<key>.next` → `<key>` and `<cert>.next` → `<cert>` (renames).
//!
//! A crash between the two renames leaves a new key with the old
//! certificate: [`recover`] (run at start and before each connection)
//! completes the switch when `<cert>.next` matches the key. Leftovers of
//! an unconfirmed attempt are removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tankwatch_proto::v1;
use tankwatch_tls::TlsFiles;

/// Shortest and longest wait after a failed renewal.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long a renewal request may wait for its answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the trial connection with a new certificate may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The certificate in use, as far as renewal needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub site: String,
    pub serial: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

/// When to renew a certificate: two thirds into its lifetime.
pub fn renew_at(not_before_ms: i64, not_after_ms: i64) -> i64 {
    not_before_ms + (not_after_ms - not_before_ms).max(0) * 2 / 3
}

/// When to retry after `failures` failed attempts (1, 2, …): one minute
/// doubling to an hour, but never later than a quarter of what is left,
/// so that several attempts fit before expiry; at least [`RETRY_MIN`].
pub fn retry_at(now_ms: i64, failures: u32, not_after_ms: i64) -> i64 {
    let backoff = Duration::from_secs(60)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(RETRY_MAX)
        .as_millis() as i64;
    let quarter = (not_after_ms - now_ms).max(0) / 4;
    now_ms + backoff.min(quarter).max(RETRY_MIN.as_millis() as i64)
}

/// Checks an issued chain against what we asked: it parses, its leaf
/// carries our new public key and names our site. (The chain to the CA,
/// validity and revocation are proven by the trial connection.)
pub fn check_issued(
    chain_pem: &str,
    public_key_der: &[u8],
    site: &str,
) -> Result<CertInfo, String> {
    let certs = tankwatch_tls::certs_from_pem(chain_pem, Path::new("the renewed certificate"))
        .map_err(|e| e.to_string())?;
    let leaf = certs.first().ok_or("an empty certificate chain")?;
    let info = tankwatch_tls::agent_cert(leaf).map_err(|e| e.to_string())?;
    if tankwatch_tls::csr::public_key_of(leaf).as_deref() != Some(public_key_der) {
        return Err("the certificate does not carry the key we sent".into());
    }
    if info.site != site {
        return Err(format!(
            "the certificate is for site {:?}, not ours ({site:?})",
            info.site
        ));
    }
    Ok(CertInfo {
        site: info.site,
        serial: info.serial,
        not_before_ms: info.not_before_ms,
        not_after_ms: info.not_after_ms,
    })
}

/// Reads the certificate in use.
pub fn read_cert(path: &Path) -> Result<CertInfo, String> {
    let certs = tankwatch_tls::load_certs(path).map_err(|e| e.to_string())?;
    let leaf = certs.first().ok_or("no certificate")?;
    let c = tankwatch_tls::agent_cert(leaf).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(CertInfo {
        site: c.site,
        serial: c.serial,
        not_before_ms: c.not_before_ms,
        not_after_ms: c.not_after_ms,
    })
}

fn next_of(p: &Path) -> PathBuf {
    let mut n = p.file_name().unwrap_or_default().to_os_string();
    n.push(".next");
    p.with_file_name(n)
}

/// The staged files of a renewal.
pub fn staged(files: &TlsFiles) -> TlsFiles {
    TlsFiles {
        cert: next_of(&files.cert),
        key: next_of(&files.key),
        ca: files.ca.clone(),
    }
}

fn key_matches(cert: &Path, key: &Path) -> bool {
    let pk = std::fs::read_to_string(key)
        .ok()
        .and_then(|k| tankwatch_tls::csr::public_key_of_key_pem(&k));
    let ck = tankwatch_tls::load_certs(cert)
        .ok()
        .and_then(|c| c.first().and_then(|l| tankwatch_tls::csr::public_key_of(l)));
    pk.is_some() && pk == ck
}

/// Finishes or discards an interrupted switch (see the module doc).
/// Returns what it did, for the log.
pub fn recover(files: &TlsFiles) -> Option<&'static str> {
    let next = staged(files);
    if next.key.exists() {
        // never confirmed: the live pair is still the old one
        let _ = std::fs::remove_file(&next.key);
        let _ = std::fs::remove_file(&next.cert);
        return Some("discarded an unconfirmed renewal");
    }
    if next.cert.exists() {
        if !key_matches(&files.cert, &files.key) && key_matches(&next.cert, &files.key) {
            if std::fs::rename(&next.cert, &files.cert).is_ok() {
                return Some("completed a renewal interrupted between its two renames");
            }
        } else {
            let _ = std::fs::remove_file(&next.cert);
            return Some("removed a stale renewed certificate");
        }
    }
    None
}

/// Moves a confirmed renewal into place (key first; see [`recover`]).
pub fn install(files: &TlsFiles) -> std::io::Result<()> {
    let next = staged(files);
    std::fs::rename(&next.key, &files.key)?;
    std::fs::rename(&next.cert, &files.cert)?;
    Ok(())
}

/// The certificate as `/status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CertificateView {
    pub serial: String,
    pub not_after_ms: i64,
    pub renew_at_ms: i64,
    pub failures: u32,
    pub last_error: String,
    pub renewals: u64,
}

/// Renewal state, across sessions.
#[derive(Debug)]
pub struct Renewer {
    pub files: TlsFiles,
    pub site: String,
    pub cert: CertInfo,
    pub failures: u32,
    pub last_error: String,
    pub next_at_ms: i64,
    pending: Option<Pending>,
    next_request: u64,
}

#[derive(Debug)]
struct Pending {
    request_id: u64,
    key: tankwatch_tls::csr::KeyAndCsr,
    asked_ms: i64,
}

/// What a renewal attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Installed: reconnect with the new certificate.
    Renewed {
        serial: String,
    },
    Failed(String),
    /// Not the answer to our request (ignored).
    Stray,
}

impl Renewer {
    pub fn load(files: TlsFiles, site: &str) -> Result<Renewer, String> {
        if let Some(what) = recover(&files) {
            tracing::warn!(cert = %files.cert.display(), what, "certificate files");
        }
        let cert = read_cert(&files.cert)?;
        Ok(Renewer {
            next_at_ms: renew_at(cert.not_before_ms, cert.not_after_ms),
            files,
            site: site.to_string(),
            cert,
            failures: 0,
            last_error: String::new(),
            pending: None,
            next_request: 1,
        })
    }

    /// A new session: an answer to an earlier one's request will not come.
    pub fn new_session(&mut self) {
        self.pending = None;
    }

    pub fn due(&self, now_ms: i64) -> bool {
        self.pending.is_none() && now_ms >= self.next_at_ms
    }

    /// A request whose answer did not come in time counts as a failure.
    pub fn overdue(&mut self, now_ms: i64) -> bool {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| now_ms - p.asked_ms > ANSWER_TIMEOUT.as_millis() as i64)
        {
            self.pending = None;
            self.failed(
                now_ms,
                "no answer to the renewal request within 30 s".into(),
            );
            return true;
        }
        false
    }

    /// Makes a new key and the request carrying its CSR.
    pub fn request(&mut self, now_ms: i64) -> Result<v1::RenewRequest, String> {
        let key = tankwatch_tls::csr::new_key_and_csr(&self.site).map_err(|e| e.to_string())?;
        let request_id = self.next_request;
        self.next_request += 1;
        let req = v1::RenewRequest {
            request_id,
            csr_der: key.csr_der.clone(),
        };
        self.pending = Some(Pending {
            request_id,
            key,
            asked_ms: now_ms,
        });
        Ok(req)
    }

    fn failed(&mut self, now_ms: i64, why: String) -> Outcome {
        self.failures += 1;
        self.next_at_ms = retry_at(now_ms, self.failures, self.cert.not_after_ms);
        tracing::warn!(failures = self.failures, error = %why, retry_in_ms = self.next_at_ms - now_ms, "certificate renewal failed; keeping the current certificate");
        self.last_error = why.clone();
        Outcome::Failed(why)
    }

    /// Handles the headend's answer: checks it, stages the files, tries a
    /// connection with them (`probe`), and installs them only if it worked.
    pub async fn complete<F, Fut>(
        &mut self,
        reply: v1::RenewReply,
        now_ms: i64,
        probe: F,
    ) -> Outcome
    where
        F: FnOnce(TlsFiles) -> Fut,
        Fut: std::future::Future<Output = Result<String, String>>,
    {
        let Some(p) = self.pending.take_if(|p| p.request_id == reply.request_id) else {
            return Outcome::Stray;
        };
        if !reply.error.is_empty() {
            return self.failed(now_ms, format!("the headend refused: {}", reply.error));
        }
        let info = match check_issued(&reply.chain_pem, &p.key.public_key_der, &self.site) {
            Ok(i) => i,
            Err(e) => return self.failed(now_ms, e),
        };
        let next = staged(&self.files);
        if let Err(e) = tankwatch_tls::write_key(&next.key, &p.key.key_pem)
            .and_then(|()| tankwatch_tls::write_cert(&next.cert, &reply.chain_pem))
        {
            return self.failed(now_ms, format!("staging the new certificate: {e}"));
        }
        match tokio::time::timeout(PROBE_TIMEOUT, probe(next.clone())).await {
            Ok(Ok(serial)) if serial == info.serial => {}
            Ok(Ok(serial)) => {
                recover(&self.files);
                return self.failed(
                    now_ms,
                    format!(
                        "a connection with the new certificate was seen as {serial}, not {}",
                        info.serial
                    ),
                );
            }
            Ok(Err(e)) => {
                recover(&self.files);
                return self.failed(
                    now_ms,
                    format!("a connection with the new certificate failed: {e}"),
                );
            }
            Err(_) => {
                recover(&self.files);
                return self.failed(
                    now_ms,
                    "a connection with the new certificate timed out".into(),
                );
            }
        }
        if let Err(e) = install(&self.files) {
            recover(&self.files);
            return self.failed(now_ms, format!("installing the new certificate: {e}"));
        }
        tracing::info!(old = %self.cert.serial, new = %info.serial, not_after_ms = info.not_after_ms, "certificate renewed and installed");
        self.next_at_ms = renew_at(info.not_before_ms, info.not_after_ms);
        self.cert = info;
        self.failures = 0;
        self.last_error.clear();
        Outcome::Renewed {
            serial: self.cert.serial.clone(),
        }
    }

    /// What `/status` shows.
    pub fn view(&self, renewals: u64) -> CertificateView {
        CertificateView {
            serial: self.cert.serial.clone(),
            not_after_ms: self.cert.not_after_ms,
            renew_at_ms: self.next_at_ms,
            failures: self.failures,
            last_error: self.last_error.clone(),
            renewals,
        }
    }

    /// What the headend is told.
    pub fn status(&self) -> v1::CertificateStatus {
        v1::CertificateStatus {
            ts_ms: adapter_api::now_ms(),
            serial: self.cert.serial.clone(),
            not_after_ms: self.cert.not_after_ms,
            renew_at_ms: self.next_at_ms,
            failures: self.failures,
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        assert_eq!(renew_at(0, 30 * 24 * H), 20 * 24 * H);
        assert_eq!(renew_at(1000, 1000 + 30_000), 21_000);
        assert_eq!(renew_at(5, 5), 5, "a zero lifetime: at once");
    }

    #[test]
    fn retries_back_off_from_a_minute_to_an_hour_but_fit_before_expiry() {
        let far = 100 * 24 * H;
        assert_eq!(retry_at(0, 1, far), 60_000);
        assert_eq!(retry_at(0, 2, far), 120_000);
        assert_eq!(retry_at(0, 7, far), H, "capped at an hour");
        assert_eq!(retry_at(0, 40, far), H, "no overflow");
        // 20 s left: a quarter of it
        assert_eq!(retry_at(0, 1, 20_000), 5_000);
        // expired: as soon as allowed
        assert_eq!(retry_at(50_000, 3, 10_000), 51_000);
    }

    fn pki() -> (tempfile::TempDir, TlsFiles, tankwatch_pki::Ca) {
        let dir = tempfile::tempdir().unwrap();
        let ca = tankwatch_pki::bootstrap(dir.path(), &["s1"], 1).unwrap();
        let files = TlsFiles {
            cert: dir.path().join("agent-s1.pem"),
            key: dir.path().join("agent-s1.key"),
            ca: dir.path().join("ca.pem"),
        };
        (dir, files, ca)
    }

    fn reply(
        r: &Renewer,
        req: &v1::RenewRequest,
        ca: &tankwatch_pki::Ca,
        site: &str,
    ) -> v1::RenewReply {
        let _ = r;
        v1::RenewReply {
            request_id: req.request_id,
            chain_pem: ca
                .sign_agent_csr(&req.csr_der, site, tankwatch_pki::Lifetime::days(1))
                .unwrap(),
            error: String::new(),
        }
    }

    #[tokio::test]
    async fn a_renewal_is_installed_only_after_a_connection_with_it_worked() {
        let (_d, files, ca) = pki();
        let old_key = std::fs::read_to_string(&files.key).unwrap();
        let mut r = Renewer::load(files.clone(), "s1").unwrap();
        let old_serial = r.cert.serial.clone();
        assert!(!r.due(0) || r.next_at_ms <= 0);
        let req = r.request(0).unwrap();
        let ans = reply(&r, &req, &ca, "s1");
        // the trial connection fails: the old pair stays, nothing staged remains
        let out = r
            .complete(ans.clone(), 0, |_| async {
                Err("handshake refused".to_string())
            })
            .await;
        assert!(
            matches!(out, Outcome::Failed(ref e) if e.contains("handshake refused")),
            "{out:?}"
        );
        assert_eq!(std::fs::read_to_string(&files.key).unwrap(), old_key);
        assert!(!staged(&files).key.exists() && !staged(&files).cert.exists());
        assert_eq!((r.failures, r.cert.serial.clone()), (1, old_serial.clone()));
        assert!(r.next_at_ms >= 1000, "retried later");
        // the next attempt works: the new pair is in place, 0600
        let req = r.request(0).unwrap();
        let ans = reply(&r, &req, &ca, "s1");
        let want = check_issued(
            &ans.chain_pem,
            &r.pending.as_ref().unwrap().key.public_key_der,
            "s1",
        )
        .unwrap()
        .serial;
        let w = want.clone();
        let out = r
            .complete(ans, 0, |next| async move {
                assert!(next.key.exists(), "the trial uses the staged files");
                Ok(w)
            })
            .await;
        assert_eq!(
            out,
            Outcome::Renewed {
                serial: want.clone()
            }
        );
        assert_eq!(read_cert(&files.cert).unwrap().serial, want);
        assert!(key_matches(&files.cert, &files.key));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(r.failures, 0);
    }

    #[tokio::test]
    async fn an_answer_for_another_site_or_key_or_an_error_is_refused_and_a_stray_one_ignored() {
        let (_d, files, ca) = pki();
        let mut r = Renewer::load(files.clone(), "s1").unwrap();
        let req = r.request(0).unwrap();
        let other = reply(&r, &req, &ca, "s2");
        let out = r.complete(other, 0, |_| async { Ok(String::new()) }).await;
        assert!(
            matches!(out, Outcome::Failed(ref e) if e.contains("not ours")),
            "{out:?}"
        );
        let req = r.request(0).unwrap();
        // a certificate for another key (a CSR we did not make)
        let foreign = tankwatch_tls::csr::new_key_and_csr("s1").unwrap();
        let chain = ca
            .sign_agent_csr(&foreign.csr_der, "s1", tankwatch_pki::Lifetime::days(1))
            .unwrap();
        let stray = v1::RenewReply {
            request_id: req.request_id + 7,
            chain_pem: chain.clone(),
            error: String::new(),
        };
        assert_eq!(
            r.complete(stray, 0, |_| async { Ok(String::new()) }).await,
            Outcome::Stray
        );
        let wrong_key = v1::RenewReply {
            request_id: req.request_id,
            chain_pem: chain,
            error: String::new(),
        };
        let out = r
            .complete(wrong_key, 0, |_| async { Ok(String::new()) })
            .await;
        assert!(
            matches!(out, Outcome::Failed(ref e) if e.contains("key we sent")),
            "{out:?}"
        );
        let req = r.request(0).unwrap();
        let refused = v1::RenewReply {
            request_id: req.request_id,
            chain_pem: String::new(),
            error: "no issuer".into(),
        };
        let out = r
            .complete(refused, 0, |_| async { Ok(String::new()) })
            .await;
        assert!(
            matches!(out, Outcome::Failed(ref e) if e.contains("no issuer")),
            "{out:?}"
        );
        assert_eq!(r.failures, 3);
        assert_eq!(r.status().failures, 3);
    }

    #[test]
    fn a_switch_interrupted_between_its_renames_is_completed_and_an_unconfirmed_one_discarded() {
        let (_d, files, ca) = pki();
        let key = tankwatch_tls::csr::new_key_and_csr("s1").unwrap();
        let chain = ca
            .sign_agent_csr(&key.csr_der, "s1", tankwatch_pki::Lifetime::days(1))
            .unwrap();
        let next = staged(&files);
        // crash after the key's rename: new key, old certificate, new one staged
        tankwatch_tls::write_key(&files.key, &key.key_pem).unwrap();
        tankwatch_tls::write_cert(&next.cert, &chain).unwrap();
        assert!(!key_matches(&files.cert, &files.key));
        assert_eq!(
            recover(&files),
            Some("completed a renewal interrupted between its two renames")
        );
        assert!(key_matches(&files.cert, &files.key) && !next.cert.exists());
        // crash before any rename: both staged, discarded
        tankwatch_tls::write_key(&next.key, &key.key_pem).unwrap();
        tankwatch_tls::write_cert(&next.cert, &chain).unwrap();
        assert_eq!(recover(&files), Some("discarded an unconfirmed renewal"));
        assert!(!next.key.exists() && !next.cert.exists());
        assert!(key_matches(&files.cert, &files.key));
        assert_eq!(recover(&files), None);
    }
}
