#!/usr/bin/env bash
# What the tests need besides Rust, installed once and checked each run:
# systemd's tools, libfaketime, Postfix's smtp-sink, Chromium, HAProxy, PgBouncer and Prometheus from Debian, cargo-deb, the Python peers (a venv
# under target/pyenv, pinned by tests/peers/requirements.txt) and
# node-opcua (target/nodeenv, pinned by its lock). scripts/test.sh runs
# it; .ci/run runs it beside the build as well (it mostly downloads).
set -euo pipefail
cd "$(dirname "$0")/.."

# The service unit's test installs the agent as docs/install-agent.md says
# (systemd-sysusers, systemd-analyze; runuser, setpriv and unshare come
# with util-linux).
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then
  echo "test: installing systemd's tools (systemd-analyze, systemd-sysusers)"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd
fi
# libfaketime: the clock-skew test runs the agent with its clock two hours off
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  echo "test: installing libfaketime (the clock-skew test)"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends faketime
fi
# Postfix's smtp-sink: the second SMTP server of the alarm-mail tests
# ("No configuration": nothing of Postfix runs but the test's smtp-sink)
if [ ! -x /usr/sbin/smtp-sink ]; then
  echo "test: installing postfix (its smtp-sink: the alarm-mail tests' second SMTP server)"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix
fi
# Chromium and its WebDriver: the console's browser test (Selenium, from
# the venv below, drives them)
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "test: installing chromium and chromium-driver (the console's browser test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi

# HAProxy: the reference deployment's load balancer (deploy/haproxy.cfg),
# started by its test as shipped
# and PgBouncer: the replicas through it in session mode
if ! command -v haproxy >/dev/null || ! command -v pgbouncer >/dev/null; then
  echo "test: installing haproxy and pgbouncer (the reference deployment's tests)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy pgbouncer
fi

# Prometheus' promtool: the alert rules' unit tests (scripts/test.sh) and
# the test that scrapes a running headend and agent with Prometheus
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "test: installing prometheus (promtool; the monitoring test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
# cargo-deb: the packages' test builds the .deb files of this build
# (pinned: its options are part of the test)
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb 3.8.0" ]; then
  echo "test: installing cargo-deb 3.8.0 (the packages' test)"
  cargo install --locked --version 3.8.0 cargo-deb
fi

venv=target/pyenv
req=tests/peers/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
  echo "test: creating $venv with $(tr '\n' ' ' < "$req" | sed 's/#[^ ]*//g')"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements"
fi

# node-opcua: the second independent OPC UA stack (tests/peers/package.json, pinned by its lock)
nodeenv=target/nodeenv
if [ ! -d "$nodeenv/node_modules/node-opcua" ] || ! cmp -s tests/peers/package-lock.json "$nodeenv/package-lock.json"; then
  echo "test: installing node-opcua into $nodeenv"
  rm -rf "$nodeenv" && mkdir -p "$nodeenv"
  cp tests/peers/package.json tests/peers/package-lock.json "$nodeenv/"
  (cd "$nodeenv" && npm ci --no-audit --no-fund --silent)
fi
