#!/usr/bin/env bash
# Reload latency of a running (release) agent: decoder version 2 renamed into
# the plugin directory -> first span decoded by version 2 on stdout.
# Usage: scripts/bench-reload.sh [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo build --release -j2 -q -p wasmtap
dir=$(mktemp -d /tmp/wasmtap-benchreload.XXXXXX)
agent=
trap 'kill $agent 2>/dev/null || true; rm -rf "$dir"' EXIT
build() { # version -> wasm file
  WASMTAP_TEST_PLUGIN_VERSION=$1 cargo rustc -q --release --lib --crate-type cdylib --target wasm32-wasip2 \
    --target-dir target/wasm-plugins -p wasmtap-test-hostile
  cp target/wasm-plugins/wasm32-wasip2/release/wasmtap_test_hostile.wasm "$dir/v$1.wasm"
}
build 1.0.0; build 2.0.0
WRK_ARGS='-H Connection:close' scripts/capture-nginx.sh "$dir/n.pcap" 1 1 2>/dev/null
port=$(sed 's/port //' "$dir/n.pcap.port")
for round in $(seq "${1:-3}"); do
  rm -rf "$dir/p"; mkdir "$dir/p"
  printf 'ports = [%s]\n' "$port" > "$dir/p/hostile.toml"
  cp "$dir/v1.0.0.wasm" "$dir/p/hostile.wasm"
  # No compiled cache: the compile is part of the latency measured.
  printf '[plugins]\ncache_dir = ""\n' > "$dir/nocache.toml"
  target/release/wasmtap replay "$dir/n.pcap" --pace realtime --loop 20 --plugins "$dir/p" \
    --config "$dir/nocache.toml" --format jsonl > "$dir/out" 2>/dev/null &
  agent=$!
  until grep -q '"test.plugin.version":"1.0.0"' "$dir/out" 2>/dev/null; do sleep 0.05; done
  cp "$dir/v2.0.0.wasm" "$dir/p/.hostile.tmp"
  t0=$(date +%s%N); mv "$dir/p/.hostile.tmp" "$dir/p/hostile.wasm"
  until grep -q '"test.plugin.version":"2.0.0"' "$dir/out" 2>/dev/null; do sleep 0.005; done
  t1=$(date +%s%N)
  kill $agent; wait $agent 2>/dev/null || true
  printf 'round %s: reload latency %.0f ms\n' "$round" "$(echo "($t1 - $t0) / 1000000" | bc -l)"
done
