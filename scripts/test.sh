#!/usr/bin/env bash
# Runs every check and test wasmtap has. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export CARGO_TERM_COLOR=never
# A fresh clone gains nothing from incremental artefacts; they double the
# target directory's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | tail -1 | awk '{print "== disk before: " $4 " free"}'
trap 'df -h . | tail -1 | awk "{print \"== disk after: \" \$4 \" free\"}"; du -sh target 2>/dev/null | sed "s/^/== target: /"' EXIT
echo "== fmt"
cargo fmt --all -- --check
echo "== clippy (host)"
cargo clippy -j2 --workspace --all-targets -q -- -D warnings
echo "== clippy (plugins and test plugins, wasm32-wasip2)"
cargo clippy -j2 --target wasm32-wasip2 --target-dir target/wasm-plugins -q \
  $(for d in plugins/*/; do [ -f "$d/Cargo.toml" ] && echo -p "wasmtap-plugin-$(basename "$d")"; done) \
  $(for d in tests/plugins/*/; do [ -f "$d/Cargo.toml" ] && echo -p "wasmtap-test-$(basename "$d")"; done) -- -D warnings
echo "== tests"
cargo test -j2 --workspace
