#!/usr/bin/env bash
# Builds the previous release's headend and agent (tests/previous-release:
# its version and commit) from the git history into
# target/previous/VERSION/{headend,edge-agent}, for the version-skew tests.
# Its own target directory (the binaries must not replace this build's);
# kept between runs, rebuilt only when the commit changes.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r version commit < <(grep -v '^#' tests/previous-release)
out=target/previous/$version
if [ -x "$out/headend" ] && [ -x "$out/edge-agent" ] && [ "$(cat "$out/commit" 2>/dev/null)" = "$commit" ]; then
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "previous-release: commit $commit ($version) is not in this checkout's history; the version-skew tests need it (a full clone, not a shallow one)" >&2
  exit 1
fi
src=target/previous/src
rm -rf "$src" && mkdir -p "$src" "$out"
git archive "$commit" | tar -x -C "$src"
t0=$(date +%s)
# Seeded with this build's compiled dependencies: the lock file is the
# same, so each registry crate built with the same features is fresh
# there and only the rest (the workspace's own crates, the vendored ones,
# a few with other features) is compiled. Copied, not linked: cargo
# rewrites some of its files in place.
if [ -d target/debug/deps ]; then
  mkdir -p target/previous/build/debug
  cp -a target/debug/deps target/debug/build target/debug/.fingerprint target/previous/build/debug/
  echo "previous-release: seeded with this build's dependencies in $(( $(date +%s) - t0 )) s"
fi
CARGO_TARGET_DIR="$PWD/target/previous/build" cargo build --locked --manifest-path "$src/Cargo.toml" \
  -p headend -p edge-agent --bins
cp target/previous/build/debug/headend target/previous/build/debug/edge-agent "$out/"
echo "$commit" > "$out/commit"
rm -rf "$src" target/previous/build
echo "previous-release: $version built in $(( $(date +%s) - t0 )) s"
