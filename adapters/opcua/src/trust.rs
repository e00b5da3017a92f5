//! Trust and identity of the agent as an OPC UA client: its one
//! ApplicationUri per machine, its certificate naming it, and connection
//! errors explained in an installer's words (split from `session.rs`).

use std::path::Path;

use crate::OpcUaDevice;

/// The agent's ApplicationUri as an OPC UA client: one per machine, the
/// same for every device and for `edge-agent probe` (they share the key
/// pair in `pki_dir`; issue 29, item 10: it was per device, so the second
/// device on a shared `pki_dir` claimed a URI its certificate did not carry
/// and was refused for good).
pub(crate) fn app_uri() -> String {
    let host = opcua::crypto::hostname().unwrap_or_else(|_| "localhost".into());
    format!("urn:tankwatch:edge-agent:{host}")
}

/// Makes sure the agent's certificate in `pki` names `uri`: one made by
/// an older version (or on another machine) is kept as `.old` and a new
/// one is made at the connection, with a warning saying what to trust.
pub(crate) fn own_cert_names(pki: &Path, uri: &str) -> Result<(), String> {
    let cert = pki.join("own/cert.der");
    if !cert.exists() {
        return Ok(());
    }
    let x = opcua::crypto::CertificateStore::read_cert(&cert)
        .map_err(|e| format!("{}: {e}; delete it to have a new one made", cert.display()))?;
    if x.is_application_uri_valid(uri).is_ok() {
        return Ok(());
    }
    for p in [cert.clone(), pki.join("private/private.pem")] {
        if p.exists() {
            let mut old = p.as_os_str().to_owned();
            old.push(".old");
            std::fs::rename(&p, &old)
                .map_err(|e| format!("cannot keep {} as .old: {e}", p.display()))?;
        }
    }
    tracing::warn!(pki_dir = %pki.display(), uri,
        "the agent's OPC UA client certificate named another application URI; a new one is made: servers that trusted the old one must trust {}/own/cert.der",
        pki.display());
    Ok(())
}

/// A connection error with what an installer should check.
pub(crate) fn explain(e: &str, dev: &OpcUaDevice) -> String {
    let hint = if e.contains("BadCertificateUntrusted")
        || e.contains("BadSecurityChecksFailed")
        || e.contains("Untrusted")
    {
        // which side refused: ours files the server's certificate in rejected/
        let ours = std::fs::read_dir(dev.pki_dir.join("rejected"))
            .map(|d| d.flatten().any(|f| f.path().is_file()))
            .unwrap_or(false);
        if ours {
            format!(
                " (the server's certificate is not trusted: move it from {}/rejected/ to {}/trusted/)",
                dev.pki_dir.display(),
                dev.pki_dir.display()
            )
        } else {
            format!(
                " (the server does not trust the agent's certificate: trust {}/own/cert.der in the server, e.g. in its rejected list)",
                dev.pki_dir.display()
            )
        }
    } else if e.contains("BadCertificateHostNameInvalid") {
        format!(
            " (the server's certificate does not name the host in the endpoint {}: dial a host name or address its certificate names)",
            dev.endpoint
        )
    } else if e.contains("BadCertificateUriInvalid") {
        format!(
            " (a certificate's application URI does not match: the server's certificate must name the server's ApplicationUri; the agent's names {})",
            app_uri()
        )
    } else if e.contains("BadIdentityToken") || e.contains("BadUserAccessDenied") {
        " (check auth: user, password or user certificate)".to_string()
    } else if e.contains("BadTcpEndpointUrlInvalid")
        || e.contains("no matching endpoint")
        || e.contains("BadSecurityPolicyRejected")
    {
        format!(
            " (the server offers no endpoint {} with security {:?})",
            dev.endpoint, dev.security
        )
    } else {
        String::new()
    };
    format!("{e}{hint}")
}
