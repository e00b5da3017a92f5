#!/usr/bin/env bash
# The release packages: tankwatch-headend and tankwatch-agent .deb files
# in target/debian/ (release binaries, stripped). Installs cargo-deb once.
# docs/install-packages.md says how to install them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb 3.8.0" ]; then
  echo "package: installing cargo-deb 3.8.0 (once)"
  cargo install --locked --version 3.8.0 cargo-deb
fi
cargo build --release --locked -p headend -p edge-agent -p tankwatch-pki --bins
for p in headend edge-agent; do
  cargo deb --no-build -p "$p" -o target/debian/
done
ls -l target/debian/*.deb
