//! The `pki` binary: a root whose key is sealed with a passphrase (and
//! opens with OpenSSL, an independent PKCS#8 implementation), the
//! intermediate made from it, and certificates that carry their chain.

use std::process::Command;

use anyhow::{Result, ensure};

fn pki(dir: &std::path::Path, args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(e2e::bin("pki"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn a_sealed_root_makes_the_intermediate_only_with_its_passphrase_and_openssl_opens_it_too()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let pw = d.join("pass");
    let wrong = d.join("wrong");
    std::fs::write(&pw, "a long enough passphrase\n")?;
    std::fs::write(&wrong, "another long passphrase\n")?;
    let pw_s = pw.to_str().unwrap_or_default();
    let (code, out) = pki(d, &["init-ca", "--passphrase-file", pw_s])?;
    ensure!(code == 0, "{out}");
    let key = std::fs::read_to_string(d.join("ca.key"))?;
    ensure!(
        key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{key}"
    );
    use std::os::unix::fs::PermissionsExt;
    ensure!(std::fs::metadata(d.join("ca.key"))?.permissions().mode() & 0o777 == 0o600);

    // an independent PKCS#8 reader opens it with the passphrase, not without
    let openssl = |pass: &std::path::Path| {
        Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(d.join("ca.key"))
            .arg("-passin")
            .arg(format!("file:{}", pass.display()))
            .status()
    };
    ensure!(openssl(&pw)?.success(), "openssl opens the sealed root key");
    ensure!(
        !openssl(&wrong)?.success(),
        "openssl refuses a wrong passphrase"
    );

    let (code, out) = pki(d, &["intermediate"])?;
    ensure!(code != 0 && out.contains("--passphrase-file"), "{out}");
    let (code, out) = pki(
        d,
        &[
            "intermediate",
            "--passphrase-file",
            wrong.to_str().unwrap_or_default(),
        ],
    )?;
    ensure!(code != 0 && out.contains("does not open"), "{out}");
    ensure!(!d.join("issuer.key").exists());
    let (code, out) = pki(d, &["intermediate", "--passphrase-file", pw_s])?;
    ensure!(code == 0, "{out}");
    let (code, out) = pki(d, &["intermediate", "--passphrase-file", pw_s])?;
    ensure!(code != 0 && out.contains("refusing to overwrite"), "{out}");

    // the server and agent certificates come from the intermediate, with it
    let (code, out) = pki(d, &["server", "--name", "headend.example"])?;
    ensure!(code == 0, "{out}");
    let (code, out) = pki(d, &["agent", "--site", "site-1"])?;
    ensure!(code == 0, "{out}");
    for f in ["headend.pem", "agent-site-1.pem"] {
        let chain = tankwatch_tls::load_certs(&d.join(f))?;
        ensure!(chain.len() == 2, "{f}: leaf and intermediate");
    }
    // OpenSSL verifies the chain to the root
    let ok = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(d.join("ca.pem"))
        .arg("-untrusted")
        .arg(d.join("issuer.pem"))
        .arg(d.join("agent-site-1.pem"))
        .status()?;
    ensure!(ok.success(), "openssl verifies leaf → intermediate → root");
    Ok(())
}
