//! Issue 36: the Debian packages, built by cargo-deb from this build's
//! binaries (two builds: 0.2.0-1, then 0.2.0-2 over it), installed with
//! dpkg on this machine inside a mount namespace whose `/etc`, `/usr`
//! and `/var` are private overlays (the machine's own stay untouched):
//!
//! - the headend's install steps of docs/install-packages.md run word for
//!   word; files, the user, owners and modes are checked; both units pass
//!   `systemd-analyze verify` and rate at most 3.0 in `security`;
//! - the headend runs under its unit as installed (its user, its
//!   environment file, its sandbox) and answers `/ready`; meanwhile the
//!   hourly backup's service runs twice under its own unit, and its newest
//!   backup restores (the timer is enabled and started, the service not);
//! - an upgrade keeps the administrator's settings, the site's
//!   configuration and the database, and restarts both services (a
//!   stand-in `systemctl` records what the maintainer scripts ask);
//! - `remove` keeps configuration and state; `purge` deletes the state
//!   and `site.yaml` but never the PKI or the backups.
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use e2e::*;

/// The checks, run in the namespace after the guide's steps.
const CHECKS: &str = r##"
fail() { echo "FAILED: $*"; exit 1; }
mode() { stat -c '%U:%G %a' "$1"; }
[ "$(mode /etc/tankwatch)" = "root:tankwatch 750" ] || fail "/etc/tankwatch is $(mode /etc/tankwatch)"
[ "$(mode /etc/tankwatch/headend.env)" = "root:tankwatch 640" ] || fail "headend.env is $(mode /etc/tankwatch/headend.env)"
[ "$(mode /etc/tankwatch/pki)" = "root:tankwatch 750" ] || fail "pki is $(mode /etc/tankwatch/pki)"
[ "$(mode /var/lib/tankwatch)" = "tankwatch:tankwatch 750" ] || fail "/var/lib/tankwatch is $(mode /var/lib/tankwatch)"
for b in headend tankwatch-pki edge-agent; do
  [ "$(mode /usr/bin/$b)" = "root:root 755" ] || fail "/usr/bin/$b is $(mode /usr/bin/$b)"
done
IFS=: read -r _ _ uid _ _ home shell <<< "$(getent passwd tankwatch)"
[ "$uid" -lt 1000 ] && [ "$home" = /var/lib/tankwatch ] && [ "$shell" = /usr/sbin/nologin ] \
  || fail "user tankwatch: uid $uid home $home shell $shell"
/usr/bin/headend --version | grep -q " 0.2" || fail "headend --version: $(/usr/bin/headend --version)"
/usr/bin/edge-agent --version | grep -q " 0.2" || fail "edge-agent --version"
for u in tankwatch-headend tankwatch-agent; do
  f=/usr/lib/systemd/system/$u.service
  [ -f "$f" ] || f=/lib/systemd/system/$u.service
  systemd-analyze verify "$f" || fail "systemd-analyze verify $u"
  systemd-analyze security --offline=yes --threshold=30 "$f" > /tmp/sec.txt || { tail -1 /tmp/sec.txt; fail "$u: exposure above 3.0"; }
  echo "$u: $(tail -1 /tmp/sec.txt)"
  [ -L /etc/systemd/system/multi-user.target.wants/$u.service ] || fail "$u is not enabled"
done
# the hourly backups: a timer, enabled and started, and its oneshot service
b=/usr/lib/systemd/system/tankwatch-headend-backup
systemd-analyze verify "$b.service" "$b.timer" || fail "systemd-analyze verify tankwatch-headend-backup"
systemd-analyze security --offline=yes --threshold=30 "$b.service" > /tmp/sec.txt || { tail -1 /tmp/sec.txt; fail "backup: exposure above 3.0"; }
echo "tankwatch-headend-backup: $(tail -1 /tmp/sec.txt)"
[ -L /etc/systemd/system/timers.target.wants/tankwatch-headend-backup.timer ] || fail "the backup timer is not enabled"
grep -q "start tankwatch-headend-backup.timer" /run/systemd/calls || { cat /run/systemd/calls; fail "the backup timer not started"; }
grep "start" /run/systemd/calls | grep -q "backup.service" && fail "the backup service itself started at install"
[ "$(mode /var/backups/tankwatch)" = "tankwatch:tankwatch 750" ] || fail "/var/backups/tankwatch is $(mode /var/backups/tankwatch)"
echo "--- installed: checks passed"

# the headend under its unit, as installed (its agent ports moved off
# the defaults, as an administrator would where they are taken)
sed -i -e "s/^HEADEND_GRPC_LISTEN=.*/HEADEND_GRPC_LISTEN=$GRPC_LISTEN/" \
  -e "s/^HEADEND_ENROLL_LISTEN=.*/HEADEND_ENROLL_LISTEN=$ENROLL_LISTEN/" /etc/tankwatch/headend.env
( UNIT=/lib/systemd/system/tankwatch-headend.service; export UNIT; bash -c "$UNIT_SANDBOX" ) > /tmp/headend.log 2>&1 &
up=
for _ in $(seq 1 150); do
  if curl -sf "http://$HTTP_LISTEN/ready" > /dev/null; then up=1; break; fi
  sleep 0.2
done
[ -n "$up" ] || { cat /tmp/headend.log; fail "the headend under its unit did not answer /ready"; }
grep -q "sandbox: ready" /tmp/headend.log || fail "no sandbox"
# two runs of the backup service under its unit while the headend runs
for n in 1 2; do
  ( UNIT=/lib/systemd/system/tankwatch-headend-backup.service; export UNIT; bash -c "$UNIT_SANDBOX" ) > /tmp/backup.log 2>&1 \
    || { cat /tmp/backup.log; fail "the backup under its unit (run $n)"; }
  grep -q "backup written to /var/backups/tankwatch/headend-" /tmp/backup.log || { cat /tmp/backup.log; fail "backup run $n"; }
  sleep 1.1
done
set -- /var/backups/tankwatch/headend-*Z.db
[ $# = 2 ] || fail "backups: $(ls -la /var/backups/tankwatch)"
[ "$(mode "$1")" = "tankwatch:tankwatch 600" ] || fail "a backup is $(mode "$1")"
newest=$2
kill %1; wait %1 || true
[ "$(mode /var/lib/tankwatch/headend.db)" = "tankwatch:tankwatch 600" ] || fail "headend.db is $(mode /var/lib/tankwatch/headend.db)"
# the newest scheduled backup restores (checked, migrated, audit chain verified)
restored=$(mktemp -d)
headend restore --from "$newest" --database-url "sqlite://$restored/headend.db" > /tmp/restore.log 2>&1 \
  || { cat /tmp/restore.log; fail "restoring $newest"; }
grep -q "audit trail intact" /tmp/restore.log || { cat /tmp/restore.log; fail "restore: no audit check"; }
echo "--- the headend ran under its unit; its hourly backup ran under its own and restores"

# the administrator's settings and the site's files; then the upgrade
echo "# kept across upgrades" >> /etc/tankwatch/headend.env
printf 'site_id: site-pkg\n' > /etc/tankwatch/site.yaml
before=$(sha256sum < /var/lib/tankwatch/headend.db)
: > /run/systemd/calls
dpkg -i "$DEBS"/v2/*.deb
dpkg-query -W -f '${Version}\n' tankwatch-headend | grep -qx 0.2.0-2 || fail "not upgraded"
grep -q "kept across upgrades" /etc/tankwatch/headend.env || fail "headend.env replaced on upgrade"
ls /etc/tankwatch/ | grep -q dpkg && fail "dpkg left $(ls /etc/tankwatch)"
[ -f /etc/tankwatch/site.yaml ] || fail "site.yaml lost on upgrade"
[ "$(sha256sum < /var/lib/tankwatch/headend.db)" = "$before" ] || fail "the database changed on upgrade"
[ -f /etc/tankwatch/pki/ca.key ] || fail "the PKI lost on upgrade"
for u in tankwatch-headend tankwatch-agent; do
  grep -q "restart $u.service" /run/systemd/calls || { cat /run/systemd/calls; fail "$u not restarted on upgrade"; }
done
echo "--- upgraded: settings, site configuration and database kept, services restarted"

dpkg -r tankwatch-agent tankwatch-headend
[ ! -e /usr/bin/headend ] && [ ! -e /usr/bin/edge-agent ] || fail "programs left after remove"
[ -f /etc/tankwatch/headend.env ] && [ -f /etc/tankwatch/site.yaml ] || fail "configuration lost on remove"
[ -f /var/lib/tankwatch/headend.db ] || fail "state lost on remove"
echo "--- removed: configuration and state kept"

dpkg -P tankwatch-agent tankwatch-headend
[ ! -e /var/lib/tankwatch ] || fail "state left after purge: $(ls -la /var/lib/tankwatch)"
[ ! -e /etc/tankwatch/headend.env ] && [ ! -e /etc/tankwatch/site.yaml ] || fail "configuration left after purge"
[ -f /etc/tankwatch/pki/ca.key ] && [ -f /etc/tankwatch/pki/issuer.key ] || fail "purge deleted the PKI"
getent passwd tankwatch > /dev/null || fail "the user went with the purge"
[ -f "$newest" ] || fail "purge deleted the backups"
echo "--- purged: state gone, PKI and backups kept"
echo "packages: all checks passed"
"##;

/// A stand-in `systemctl` for the maintainer scripts (in /usr/sbin, ahead
/// of the real one on every PATH, apt's too): it records each call, hands
/// offline work (`--root=`: enabling by preset) to the real systemctl,
/// says a unit is enabled when its symlink is there, and that it is
/// active.
const SYSTEMCTL: &str = r#"#!/bin/sh
echo "$*" >> /run/systemd/calls
case "$*" in
  *--root=*) exec /usr/bin/systemctl "$@" ;;
  *--version*) echo "systemd 252 (252)" ;;
  *is-enabled*)
    for u; do :; done
    for w in /etc/systemd/system/*.wants/"$u"; do
      if [ -L "$w" ]; then echo enabled; exit 0; fi
    done
    echo disabled; exit 1 ;;
esac
exit 0"#;

/// The headend block of docs/install-packages.md.
fn package_steps() -> Result<String> {
    let doc = std::fs::read_to_string(repo().join("docs/install-packages.md"))?;
    let from = doc
        .find("<!-- package-steps")
        .context("docs/install-packages.md has no package-steps block")?;
    let rest = &doc[from..];
    let start = rest.find("```sh\n").context("its ```sh fence")? + 6;
    let end = rest[start..].find("```").context("its closing fence")?;
    Ok(rest[start..start + end].to_string())
}

/// Builds the two packages of this build as `version` into `out`.
fn build_debs(out: &Path, version: &str) -> Result<()> {
    for p in ["headend", "edge-agent"] {
        let o = Command::new("cargo")
            .args([
                "deb",
                "-p",
                p,
                "--no-build",
                "--profile",
                "dev",
                "--fast",
                "--quiet",
                "--deb-version",
                version,
                "-o",
            ])
            .arg(out)
            .current_dir(repo())
            .output()
            .context("cargo deb (scripts/peers.sh installs cargo-deb)")?;
        ensure!(
            o.status.success(),
            "cargo deb -p {p}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

#[test]
fn the_packages_install_upgrade_keeping_config_and_state_and_purge_as_documented() -> Result<()> {
    ensure!(
        std::fs::metadata("/proc/self")?.uid() == 0,
        "this test installs the packages with dpkg: run the suite as root"
    );
    // the binaries cargo-deb packs must exist (scripts/test.sh builds them)
    for b in ["headend", "edge-agent", "pki"] {
        bin(b);
    }
    let work = tempfile::tempdir_in("/var/tmp")?;
    let debs = work.path().join("debs");
    build_debs(&debs.join("v1"), "0.2.0-1")?;
    build_debs(&debs.join("v2"), "0.2.0-2")?;
    let http = format!("127.0.0.1:{}", free_port());
    let driver = format!(
        "set -euo pipefail\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         # private overlays of /etc, /usr and /var: the machine's stay untouched\n\
         for d in etc usr var; do\n\
           mkdir -p \"$OVL/$d/up\" \"$OVL/$d/work\"\n\
           mount -t overlay overlay -o \"lowerdir=/$d,upperdir=$OVL/$d/up,workdir=$OVL/$d/work\" \"/$d\"\n\
         done\n\
         # 'systemd runs': a stand-in systemctl records what the packages ask of it\n\
         mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system\n\
         printf '%s\\n' \"$SYSTEMCTL\" > /usr/sbin/systemctl && chmod 755 /usr/sbin/systemctl\n\
         # a host's own policy (this machine's image forbids starting services)\n\
         rm -f /usr/sbin/policy-rc.d\n\
         cd \"$DEBS/v1\"\n\
         echo '--- the guide'\n\
         {steps}\n\
         dpkg -i ./tankwatch-agent_*.deb\n\
         {CHECKS}",
        steps = package_steps()?,
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &driver])
        .env("OVL", work.path().join("ovl"))
        .env("DEBS", &debs)
        .env("HEADEND_NAME", "tankwatch.example.com")
        .env("HTTP_LISTEN", &http)
        .env("GRPC_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("ENROLL_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("ADMIN_PASSWORD", "a long enough password 1")
        .env("UNIT_SANDBOX", UNIT_SANDBOX)
        .env("SYSTEMCTL", SYSTEMCTL)
        .output()?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && text.contains("packages: all checks passed"),
        "{text}"
    );
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("---") || l.contains("exposure"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// The package's agent unit is the guide's (configs/) with the package's
/// binary path and its "not configured yet" condition: a hardening added
/// to one and not the other fails here.
#[test]
fn the_packaged_agent_unit_is_the_guides_unit_with_the_packages_paths() -> Result<()> {
    let body = |s: &str| -> String {
        s.lines()
            .skip_while(|l| !l.starts_with("[Unit]"))
            .filter(|l| !l.starts_with('#') && !l.starts_with("ConditionPathExists="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let guide = std::fs::read_to_string(repo().join("configs/tankwatch-agent.service"))?;
    let package = std::fs::read_to_string(repo().join("deploy/debian/tankwatch-agent.service"))?;
    ensure!(
        package.contains("ConditionPathExists=/etc/tankwatch/site.yaml"),
        "the packaged unit starts without a configuration"
    );
    ensure!(
        body(&guide).replace("/usr/local/bin/", "/usr/bin/") == body(&package),
        "deploy/debian/tankwatch-agent.service and configs/tankwatch-agent.service differ"
    );
    Ok(())
}
