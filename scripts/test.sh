#!/usr/bin/env bash
# The whole test suite: unit tests, end-to-end tests over real sockets, real
# TLS and real SQL (SQLite and PostgreSQL), and independent protocol peers.
# Installs what the tests need by itself (a Python venv with pinned peers
# under target/pyenv) and starts the local services if they are down.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh

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

# cargo-nextest runs the tests: each in a process of its own, several at
# once (.config/nextest.toml says how many and which run one at a time)
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest (once)"
  cargo install --locked cargo-nextest
fi

t0=$(date +%s)
# The process-level tests (SIGKILL, check-config) run the real binaries.
cargo build --workspace --bins
# the test programs, built apart so that the time of each step shows
cargo nextest run --workspace --no-run
t1=$(date +%s)
# every test runs, and every failure is reported, not just the first
cargo nextest run --workspace --no-fail-fast "$@"
t2=$(date +%s)
# nextest does not run doc tests
cargo test --workspace --doc "$@"
t3=$(date +%s)
echo "test: build $((t1 - t0)) s, tests $((t2 - t1)) s, doc tests $((t3 - t2)) s"
