#!/usr/bin/env bash
# Replays a bundled capture through the agent.
# Usage: scripts/replay-demo.sh [OTLP_ENDPOINT] [extra wasmtap replay flags...]
#   no endpoint: summary table on the console
#   endpoint (e.g. http://127.0.0.1:4317): spans and metrics over OTLP as well
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -j2 -q -p wasmtap
capture=tests/pcaps/http/zeek__http-methods.pcap
args=()
if [[ $# -gt 0 && "$1" != -* ]]; then
  args+=(--otlp-endpoint "$1"); shift
fi
exec target/release/wasmtap replay "$capture" "${args[@]}" "$@"
