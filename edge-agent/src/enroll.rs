//! `edge-agent enroll`: the agent's first certificate, from a one-time
//! token. The private key is made here and never leaves the site PC; a
//! CSR goes to the headend's enrollment listener over TLS that is trusted
//! only if the headend's chain holds the CA whose fingerprint the
//! installer was given with the token. The answer (the certificate chain
//! and the CA) is checked and written where the configuration's `tls:`
//! section says, the key with mode 0600.
//!
//! Exit status (as `probe`): 0 enrolled; 2 bad arguments or
//! configuration; 3 the headend is unreachable; 4 timeout; 5 the CA
//! fingerprint does not match (or TLS fails); 6 the headend refused (the
//! token is unknown, used, expired or for another site).

use std::time::Duration;

use tankwatch_proto::v1;

use crate::config::AgentConfig;

/// The whole enrollment's deadline.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why an enrollment failed, with its exit status.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Trust(String),
    #[error("the headend refused the enrollment: {0}")]
    Refused(String),
}

impl EnrollError {
    pub fn exit_code(&self) -> u8 {
        match self {
            EnrollError::Usage(_) => 2,
            EnrollError::Unreachable(_) => 3,
            EnrollError::Timeout(_) => 4,
            EnrollError::Trust(_) => 5,
            EnrollError::Refused(_) => 6,
        }
    }
}

/// What was enrolled.
#[derive(Debug)]
pub struct Enrolled {
    pub site: String,
    pub serial: String,
    pub not_after_ms: i64,
}

/// Enrolls the agent of `cfg` at `headend` (`HOST:PORT` of the
/// enrollment listener) with `token`, trusting the CA `fingerprint`.
pub async fn enroll(
    cfg: &AgentConfig,
    headend: &str,
    token: &str,
    fingerprint: &str,
    server_name: Option<&str>,
) -> Result<Enrolled, EnrollError> {
    let pin = tankwatch_tls::parse_fingerprint(fingerprint)
        .map_err(|e| EnrollError::Usage(format!("--ca-fingerprint: {e}")))?;
    if token.trim().is_empty() {
        return Err(EnrollError::Usage("--token: empty".into()));
    }
    let host = headend
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(headend)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = server_name.unwrap_or(host);
    let key = tankwatch_tls::csr::new_key_and_csr(&cfg.site_id)
        .map_err(|e| EnrollError::Usage(format!("site_id: {e}")))?;
    let tls =
        tankwatch_tls::pinned_client_config(pin).map_err(|e| EnrollError::Trust(e.to_string()))?;
    let ask = async {
        let channel = crate::uplink::channel(headend, name, tls, None)
            .await
            .map_err(|e| classify(&e.to_string(), headend))?;
        v1::enrollment_client::EnrollmentClient::new(channel)
            .enroll(v1::EnrollRequest {
                token: token.trim().to_string(),
                site_id: cfg.site_id.clone(),
                csr_der: key.csr_der.clone(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| match s.code() {
                tonic::Code::FailedPrecondition | tonic::Code::ResourceExhausted => {
                    EnrollError::Refused(s.message().to_string())
                }
                _ => classify(&format!("{}: {}", s.code(), s.message()), headend),
            })
    };
    let reply = tokio::time::timeout(TIMEOUT, ask).await.map_err(|_| {
        EnrollError::Timeout(format!(
            "no answer from {headend} within {} s",
            TIMEOUT.as_secs()
        ))
    })??;
    // the CA we store is the one we pinned, and the certificate is ours
    let ca = tankwatch_tls::certs_from_pem(&reply.ca_pem, std::path::Path::new("the headend's CA"))
        .map_err(|e| EnrollError::Trust(e.to_string()))?;
    if !ca
        .iter()
        .any(|c| tankwatch_tls::parse_fingerprint(&tankwatch_tls::fingerprint(c)) == Ok(pin))
    {
        return Err(EnrollError::Trust(
            "the CA the headend sent is not the one of --ca-fingerprint".into(),
        ));
    }
    let info = crate::renew::check_issued(&reply.chain_pem, &key.public_key_der, &cfg.site_id)
        .map_err(EnrollError::Trust)?;
    let write = |r: tankwatch_tls::Result<()>| r.map_err(|e| EnrollError::Usage(e.to_string()));
    for dir in [&cfg.tls.key, &cfg.tls.cert, &cfg.tls.ca]
        .iter()
        .filter_map(|p| p.parent())
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| EnrollError::Usage(format!("{}: {e}", dir.display())))?;
    }
    write(tankwatch_tls::write_key(&cfg.tls.key, &key.key_pem))?;
    write(tankwatch_tls::write_cert(&cfg.tls.cert, &reply.chain_pem))?;
    write(tankwatch_tls::write_cert(&cfg.tls.ca, &reply.ca_pem))?;
    Ok(Enrolled {
        site: info.site,
        serial: info.serial,
        not_after_ms: info.not_after_ms,
    })
}

fn classify(msg: &str, headend: &str) -> EnrollError {
    if msg.contains("fingerprint") || msg.contains("certificate") || msg.contains("TLS") {
        EnrollError::Trust(format!(
            "TLS with {headend} failed: {msg}. Check --ca-fingerprint against the one printed with the token"
        ))
    } else if msg.contains("refused") || msg.contains("No route") || msg.contains("resolve") {
        EnrollError::Unreachable(format!(
            "cannot reach {headend}: {msg}. Check the address (the enrollment port, 7444 by default) and the firewall"
        ))
    } else if msg.contains("timed out") || msg.contains("deadline") {
        EnrollError::Timeout(format!("{headend}: {msg}"))
    } else {
        EnrollError::Unreachable(format!("{headend}: {msg}"))
    }
}
