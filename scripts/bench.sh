#!/usr/bin/env bash
# Replay benchmark: wasmtap against tshark on a real nginx/wrk capture.
# Usage: scripts/bench.sh [SECONDS_OF_TRAFFIC=3] [CONNECTIONS=8]
# Prints packets/s, exchanges/s and the ratio of wall times (best of 3 each).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo build --release -j2 -q -p wasmtap
pcap=${WASMTAP_BENCH_PCAP:-/tmp/wasmtap-bench.pcap}
[[ -f $pcap ]] || scripts/capture-nginx.sh "$pcap" "${1:-3}" "${2:-8}"
packets=$(capinfos -Tc "$pcap" | awk 'NR==2{print $2}')
best() { # best wall time of 3 runs, in seconds
  local b=999999
  for _ in 1 2 3; do
    local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N)
    b=$(echo "if ($e-$s < $b) $e-$s else $b" | bc -l)
  done
  echo "$b"
}
ours=$(best target/release/wasmtap replay "$pcap" --format none)
shards=${WASMTAP_BENCH_SHARDS:-2}
sharded=$(best target/release/wasmtap replay "$pcap" --format none --shards "$shards")
theirs=$(best tshark -r "$pcap" -Y http.response -T fields -e http.response.code)
reading=$(best tcpdump -r "$pcap" -w /dev/null)
exchanges=$(target/release/wasmtap replay "$pcap" --format jsonl | wc -l)
printf 'capture: %s packets, %s exchanges\n' "$packets" "$exchanges"
printf 'wasmtap: %.3f s  %.0f packets/s  %.0f exchanges/s\n' "$ours" "$(echo "$packets/$ours" | bc -l)" "$(echo "$exchanges/$ours" | bc -l)"
printf 'tshark:  %.3f s  %.0f packets/s\n' "$theirs" "$(echo "$packets/$theirs" | bc -l)"
printf 'ratio (tshark time / wasmtap time): %.1fx\n' "$(echo "$theirs/$ours" | bc -l)"
printf 'tcpdump -r: %.3f s (just reading the file): wasmtap is %.1fx that, %.1fx with --shards %s\n' "$reading" "$(echo "$ours/$reading" | bc -l)" "$(echo "$sharded/$reading" | bc -l)" "$shards"
printf 'wasmtap --shards %s: %.3f s  %.2fx one shard, %.1fx tshark\n' "$shards" "$sharded" "$(echo "$ours/$sharded" | bc -l)" "$(echo "$theirs/$sharded" | bc -l)"
