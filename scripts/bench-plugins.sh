#!/usr/bin/env bash
# What a decoder costs by the language it is written in: the same decoder
# (`wasmtap plugin new`'s template, a length-prefixed RPC) in Rust, Python
# (componentize-py) and JavaScript (componentize-js), built by `wasmtap
# plugin build`, measured on the
# same capture (the template's sample replayed LOOPS times).
# Usage: scripts/bench-plugins.sh [LOOPS=2000]
# Prints, per language: component size, compile time, instantiation time,
# memory of one instance, time in the decoder per call and per exchange.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
loops=${1:-2000}
scripts/setup.sh --test >/dev/null
cargo build --release -j2 -q -p wasmtap
bin=$root/target/release/wasmtap
work=$(mktemp -d /tmp/wasmtap-bench-plugins.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR=$root/target/plugin-template
mkdir -p "$work/rust" "$work/python" "$work/js"
(cd "$work/rust" && "$bin" plugin new kvrpc >/dev/null && cd kvrpc && "$bin" plugin build >/dev/null)
(cd "$work/python" && "$bin" plugin new kvrpc --lang python >/dev/null && cd kvrpc && "$bin" plugin build >/dev/null)
(cd "$work/js" && "$bin" plugin new kvrpc --lang js >/dev/null && cd kvrpc && "$bin" plugin build >/dev/null 2>&1)
printf '%-8s %10s %10s %12s %10s %12s %14s\n' language size compile instantiate memory "per call" "per exchange"
for lang in rust python js; do
  if [[ $lang == rust ]]; then wasm=$CARGO_TARGET_DIR/wasm32-wasip2/release/kvrpc.wasm
  else wasm=$work/$lang/kvrpc/build/kvrpc.wasm; fi
  inspect=$("$bin" plugin inspect "$wasm")
  size=$(awk '$1=="size"{print $2}' <<<"$inspect")
  compile=$(awk '$1=="compile"{print $2}' <<<"$inspect")
  inst=$(awk '$1=="instantiate"{print $2}' <<<"$inspect")
  mkdir -p "$work/$lang/plugins"
  cp "$wasm" "$work/$lang/plugins/kvrpc.wasm"
  stats=$("$bin" replay "$work/$lang/kvrpc/tests/sample.pcap" --loop "$loops" --format none \
    --plugins "$work/$lang/plugins" --stats 2>&1 >/dev/null)
  get() { awk -v k="$1{plugin=kvrpc}" '$1==k{print $2}' <<<"$stats"; }
  ns=$(get wasmtap.agent.plugin.time_ns); calls=$(get wasmtap.agent.plugin.calls)
  msgs=$(get wasmtap.agent.plugin.messages); mem=$(get wasmtap.agent.plugin.memory_high_water_bytes)
  exchanges=$((msgs / 2))
  printf '%-8s %8s KiB %7s ms %9s ms %6s MiB %9.1f µs %11.1f µs\n' "$lang" "$((size / 1024))" "$compile" "$inst" \
    "$((mem >> 20))" "$(bc -l <<<"$ns / $calls / 1000")" "$(bc -l <<<"$ns / $exchanges / 1000")"
done
echo "($loops passes over the template's sample: $((loops * 6)) exchanges, $((loops * 2)) flows)"
