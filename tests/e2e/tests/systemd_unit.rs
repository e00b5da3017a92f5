//! Issue 27, item 2: the shipped unit took a site dark at day 30 (its
//! dynamic user could not read the configuration its own comments
//! installed, and `ProtectSystem=strict` kept renewals from writing the
//! key next to the configuration). Here the install steps of
//! `docs/install-agent.md` run word for word, as root, in a private copy
//! of `/etc`, `/usr/local/bin` and `/var/lib` (a mount namespace: the
//! machine's own stay untouched); the agent then runs under the sandbox
//! of the unit as installed (its user and group, every mount read-only
//! but its state directory, a private `/tmp`, an empty `/home` and
//! `/root`, no new privileges, no capabilities, its umask and file
//! limit: systemd is not PID 1 here, so `unshare` and `setpriv` stand in
//! for it), enrolls with a one-time token and renews a short-lived
//! certificate twice while streaming. The unit must also pass
//! `systemd-analyze verify` and rate at most 3.0 in `systemd-analyze
//! security`.
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::*;
use serde_json::json;

/// The install block of docs/install-agent.md.
fn install_steps() -> Result<String> {
    let doc = std::fs::read_to_string(repo().join("docs/install-agent.md"))?;
    let from = doc
        .find("<!-- install-steps")
        .context("docs/install-agent.md has no install-steps block")?;
    let rest = &doc[from..];
    let start = rest.find("```sh\n").context("its ```sh fence")? + 6;
    let end = rest[start..].find("```").context("its closing fence")?;
    Ok(rest[start..start + end].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_as_installed_by_the_guide_enrolls_and_renews_its_certificate_twice_in_its_sandbox()
-> Result<()> {
    ensure!(
        std::fs::metadata("/proc/self")?.uid() == 0,
        "this test installs the agent as the guide says: run the suite as root"
    );
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.agent_cert_lifetime = Duration::from_secs(24); // renewed at 16 s
    let he = start_headend(cfg).await?;
    let (http, enroll) = (he.http_addr, he.enroll_addr.context("enrollment")?);
    let sim = fast_sim().await?;
    let site = "site-unit";
    let (st, t) = post_json(
        http,
        &format!("/api/v1/sites/{site}/enrollment-tokens"),
        &json!({}),
    )
    .await?;
    ensure!(st == 201, "{t}");

    // the installer's folder: binary, unit, sysusers file, site.yaml
    let inst = work.path().join("inst");
    std::fs::create_dir_all(&inst)?;
    std::fs::copy(bin("edge-agent"), inst.join("edge-agent"))?;
    for f in ["tankwatch-agent.service", "tankwatch.sysusers"] {
        std::fs::copy(repo().join("configs").join(f), inst.join(f))?;
    }
    let yaml = format!(
        "site_id: {site}\nheadend: {{ address: \"{}\", server_name: localhost }}\ntls:\n  cert: /var/lib/tankwatch/tls/agent.pem\n  key: /var/lib/tankwatch/tls/agent.key\n  ca: /var/lib/tankwatch/tls/ca.pem\nlog:\n  dir: /var/lib/tankwatch/log\n  flush_interval_ms: 50\nuplink: {{ backoff_initial_ms: 100, backoff_max_ms: 1000 }}\nstatus: {{ listen: \"127.0.0.1:0\" }}\n{}",
        he.grpc_addr,
        atg_sim::agent_yaml_fragment(sim.addr, &sim.tanks(), 200)
    );
    std::fs::write(inst.join("site.yaml"), yaml)?;
    // the mount points of the private copies (empty folders on the machine)
    std::fs::create_dir_all("/var/lib/tankwatch")?;
    let driver = format!(
        "set -euo pipefail\n\
         copy={root}\n\
         mkdir -p \"$copy\"; cp -a /etc \"$copy/etc\"\n\
         mount --bind \"$copy/etc\" /etc\n\
         mount -t tmpfs tmpfs /usr/local/bin\n\
         mount -t tmpfs tmpfs /var/lib/tankwatch\n\
         mkdir -p /etc/systemd/system\n\
         cd {inst}\n\
         echo '--- the guide'\n\
         {steps}\n\
         echo '--- the unit'\n\
         {UNIT_SANDBOX}",
        root = work.path().join("root").display(),
        inst = inst.display(),
        steps = install_steps()?,
    );
    let log = work.path().join("driver.log");
    let mut child = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &driver])
        .env("HEADEND", enroll.to_string())
        .env("ENROLL_TOKEN", t["token"].as_str().unwrap_or_default())
        .env(
            "CA_FINGERPRINT",
            t["ca_fingerprint"].as_str().unwrap_or_default(),
        )
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(work.path().join("driver.err"))?)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let output = |work: &Path| {
        format!(
            "{}\n{}",
            std::fs::read_to_string(work.join("driver.log")).unwrap_or_default(),
            std::fs::read_to_string(work.join("driver.err")).unwrap_or_default()
        )
    };
    let certs = |v: &serde_json::Value, via: &str| {
        v.as_array()
            .map(|a| a.iter().filter(|c| c["via"] == via).count())
            .unwrap_or(0)
    };
    // enrolled, then streaming, then two renewals
    let t0 = std::time::Instant::now();
    let renewed = loop {
        if let Some(status) = child.try_wait()? {
            bail!("the agent ended ({status}):\n{}", output(work.path()));
        }
        let v = get_json(http, &format!("/api/v1/sites/{site}/certificates")).await;
        if let Ok(v) = &v
            && certs(v, "renewal") >= 2
        {
            break v.clone();
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("no two renewals in 120 s ({v:?}):\n{}", output(work.path()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(certs(&renewed, "enrollment") == 1, "{renewed}");
    eprintln!(
        "enrolled and renewed twice under the unit's sandbox in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // still streaming on the renewed certificate
    let since = headend::wallclock::now_ms();
    eventually(
        "a reading after the second renewal",
        Duration::from_secs(15),
        || async {
            let v = get_json(http, &format!("/api/v1/sites/{site}/assets")).await?;
            let newest = v
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["fields"].as_object().into_iter().flat_map(|f| f.values()))
                .filter_map(|f| {
                    f["received_ts"]
                        .as_str()
                        .and_then(headend::domain::time::parse)
                })
                .max()
                .unwrap_or(0);
            Ok((newest > since).then_some(()))
        },
    )
    .await
    .with_context(|| output(work.path()))?;
    let out = output(work.path());
    ensure!(
        !out.contains("Read-only file system") && !out.contains("Permission denied"),
        "{out}"
    );
    ensure!(out.contains("sandbox: ready"), "{out}");
    // the journal gets plain lines: no colour codes when stdout is not a terminal
    ensure!(
        out.contains(" INFO ") && !out.contains('\x1b'),
        "the agent's log carries ANSI codes or no log lines:\n{out}"
    );
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id().context("pid")? as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    he.stop().await;
    Ok(())
}
