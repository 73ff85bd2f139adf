#!/usr/bin/env bash
# Captures real Redis traffic on loopback: Debian's redis-server driven by redis-benchmark.
# Usage: scripts/capture-redis.sh OUT.pcap [REQUESTS=2000] [PIPELINE=1] [CLIENTS=4]
# redis-benchmark sends REQUESTS each of SET, GET, INCR and LPUSH (plus its own
# setup commands such as CONFIG GET on another connection).
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
out=$1; n=${2:-2000}; pipe=${3:-1}; clients=${4:-4}
for t in redis-server redis-benchmark dumpcap; do
  command -v $t >/dev/null || { echo "capture-redis: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
dir=$(mktemp -d /tmp/wasmtap-redis.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -n "${srv_pid:-}" ]] && kill "$srv_pid" 2>/dev/null || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
(cd "$dir" && exec redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" --daemonize no) &
srv_pid=$!
for _ in $(seq 100); do
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05
done
dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$out" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.05; done
sleep 0.3
timeout 60 redis-benchmark -h 127.0.0.1 -p "$port" -n "$n" -c "$clients" -P "$pipe" \
  -t set,get,incr,lpush -q > "$dir/bench.out"
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
tr '\r' '\n' < "$dir/bench.out" | grep -E "requests per second" >&2 || true
