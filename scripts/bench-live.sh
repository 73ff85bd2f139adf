#!/usr/bin/env bash
# Live-mode cost: agent CPU per 10k exchanges while nginx on loopback serves
# about RATE requests/s (wrk with a per-request delay), for SECONDS.
# Usage: scripts/bench-live.sh [SECONDS=10] [CONNECTIONS=10]
# WASMTAP_BENCH_ARGS adds agent options, e.g. "--otlp-endpoint http://127.0.0.1:4318";
# WASMTAP_BENCH_FORMAT=jsonl writes every span (to /dev/null) instead of none;
# WASMTAP_BENCH_OTLP=1 starts a local collector (rotel, exporting nowhere)
# and exports every span and the metrics to it over OTLP/HTTP;
# WASMTAP_BENCH_SAMPLING=RATIO samples spans ([telemetry.sampling] ratio).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo build --release -j2 -q -p wasmtap
secs=${1:-10}; conns=${2:-10}
dir=$(mktemp -d /tmp/wasmtap-benchlive.XXXXXX)
port=$(scripts/nginx-serve.sh start "$dir")
collector=
trap 'kill $agent $collector 2>/dev/null || true; scripts/nginx-serve.sh stop "$dir"; rm -rf "$dir"' EXIT
extra=()
if [[ -n "${WASMTAP_BENCH_OTLP:-}" ]]; then
  rotel=$(python3 -c "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))")
  free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  otlp_port=$(free); grpc_port=$(free)
  "$rotel" start --otlp-grpc-endpoint "127.0.0.1:$grpc_port" --otlp-http-endpoint "127.0.0.1:$otlp_port" --exporter blackhole >"$dir/rotel.log" 2>&1 &
  collector=$!
  sleep 1
  extra+=(--otlp-endpoint "http://127.0.0.1:$otlp_port")
fi
if [[ -n "${WASMTAP_BENCH_SAMPLING:-}" ]]; then
  printf '[telemetry.sampling]\nratio = %s\n' "$WASMTAP_BENCH_SAMPLING" > "$dir/agent.toml"
  extra+=(--config "$dir/agent.toml")
fi
target/release/wasmtap run --interface lo --bpf "tcp port $port" --format "${WASMTAP_BENCH_FORMAT:-none}" --stats --admin-listen "" "${extra[@]}" ${WASMTAP_BENCH_ARGS:-} >/dev/null 2>"$dir/stats" &
agent=$!
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
t0=$(ticks)
printf 'function delay()\n  return 1\nend\n' > "$dir/delay.lua"
wrk -t1 -c"$conns" -d"${secs}s" -s "$dir/delay.lua" "http://127.0.0.1:$port/" > "$dir/wrk"
t1=$(ticks)
kill -TERM $agent; wait $agent || true
hz=$(getconf CLK_TCK)
reqs=$(awk '/requests in/{print $1}' "$dir/wrk")
cpu=$(echo "($t1 - $t0) / $hz" | bc -l)
printf 'requests: %s in %ss (%.0f/s)\n' "$reqs" "$secs" "$(echo "$reqs/$secs" | bc -l)"
printf 'agent CPU: %.2f s = %.2f%% of one core\n' "$cpu" "$(echo "100*$cpu/$secs" | bc -l)"
printf 'agent CPU per 10k exchanges: %.3f s\n' "$(echo "$cpu*10000/$reqs" | bc -l)"
grep -E "kernel_dropped|exchanges\{kind=complete\}|spans.sampled_out|spans_exported|wasmtap.agent.spans " "$dir/stats" || true
