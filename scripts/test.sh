#!/usr/bin/env bash
# The whole test suite: unit tests, end-to-end tests over real sockets, real
# TLS and real SQL (SQLite and PostgreSQL), and independent protocol peers.
# Installs what the tests need by itself (a Python venv with pinned peers
# under target/pyenv) and starts the local services if they are down.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh

scripts/peers.sh

# cargo-nextest runs the tests: each in a process of its own, several at
# once (.config/nextest.toml says how many and which run one at a time)
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest (once)"
  cargo install --locked cargo-nextest
fi

# the alert rules: valid, and their unit tests (each alert fires when it
# should, not before, and resolves)
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)

t0=$(date +%s)
# The process-level tests (SIGKILL, check-config) run the real binaries,
# built here with every target so that the binaries and the tests share
# one build of the dependencies (`--bins` alone resolves their features
# without the dev-dependencies: a second build of much of the tree).
cargo build --workspace --all-targets
# the test programs, built apart so that the time of each step shows
cargo nextest run --workspace --no-run
# the previous release's headend and agent, from the git history (the
# version-skew tests; target/previous/, kept while its commit stays)
scripts/previous-release.sh
t1=$(date +%s)
# every test runs, and every failure is reported, not just the first
cargo nextest run --workspace --no-fail-fast "$@"
t2=$(date +%s)
# nextest does not run doc tests
cargo test --workspace --doc "$@"
t3=$(date +%s)
echo "test: build $((t1 - t0)) s, tests $((t2 - t1)) s, doc tests $((t3 - t2)) s"
