#!/usr/bin/env bash
# Captures real Kafka protocol traffic on loopback: kafka-python's client
# protocol against a broker stub answering with kafka-python's response
# structs (scripts/kafka_peer.py), on a free port (found by the decoder's
# probe, not by port).
# Usage: scripts/capture-kafka.sh OUT_DIR [ROUNDS=3]
# Writes OUT_DIR/kafka.pcap and the stub's log OUT_DIR/kafka.log.jsonl (one
# JSON line per request received), prints "<port> <requests>".
set -euo pipefail
out=$1; rounds=${2:-3}
peer="$(cd "$(dirname "$0")" && pwd)/kafka_peer.py"
for t in dumpcap python3; do
  command -v $t >/dev/null || { echo "capture-kafka: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
python3 -c 'import kafka' 2>/dev/null || { echo "capture-kafka: python3 kafka-python missing (run scripts/setup.sh --test)" >&2; exit 1; }
mkdir -p "$out"
dir=$(mktemp -d /tmp/wasmtap-kafka.XXXXXX)
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
pcap=$out/kafka.pcap; log=$out/kafka.log.jsonl
rm -f "$pcap" "$log"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$pcap" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$pcap" ]] && break; sleep 0.05; done
sleep 0.3
rc=0
timeout 60 python3 "$peer" "$port" "$log" "$rounds" 2>"$dir/peer.log" || rc=$?
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
if [[ $rc -ne 0 ]]; then
  echo "capture-kafka: peer failed (exit $rc)" >&2; cat "$dir/peer.log" >&2; exit 1
fi
echo "$port $(wc -l < "$log")"
