#!/usr/bin/env bash
# Captures real gRPC traffic on loopback (grpcio server and client,
# scripts/grpc_peer.py): OUT_DIR/full.pcap from the connection's start, and
# OUT_DIR/mid.pcap begun after the channel warmed its HPACK tables up; each
# with the client's log (*.log.jsonl: only the calls inside the capture).
# Usage: scripts/capture-grpc.sh OUT_DIR   (prints the two ports)
set -euo pipefail
out=$1
peer="$(cd "$(dirname "$0")" && pwd)/grpc_peer.py"
for t in dumpcap python3; do
  command -v $t >/dev/null || { echo "capture-grpc: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
python3 -c 'import grpc' 2>/dev/null || { echo "capture-grpc: python3 grpcio missing (run scripts/setup.sh --test)" >&2; exit 1; }
mkdir -p "$out"
dir=$(mktemp -d /tmp/wasmtap-grpc.XXXXXX)
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -n "${peer_pid:-}" ]] && kill "$peer_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
# A free port below the ephemeral range, like a service's: a capture begun
# mid-connection has no handshake, and the roles then come from the ports.
free() { python3 -c '
import random, socket
for _ in range(200):
    p = random.randint(20000, 30999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
'; }
capture() { # PORT PCAP
  rm -f "$2"
  dumpcap -q -i lo -f "tcp port $1" -B 16 -P -w "$2" 2>"$dir/dumpcap.log" &
  cap_pid=$!
  for _ in $(seq 100); do [[ -s "$2" ]] && break; sleep 0.05; done
  sleep 0.3
}
stop() { sleep 0.5; kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=; }

p1=$(free)
capture "$p1" "$out/full.pcap"
timeout 60 python3 "$peer" "$p1" "$out/full.log.jsonl" full 2>"$dir/full.err" || { cat "$dir/full.err" >&2; exit 1; }
stop

p2=$(free)
mkdir -p "$dir/sync"
timeout 60 python3 "$peer" "$p2" "$out/mid.log.jsonl" mid "$dir/sync" 2>"$dir/mid.err" &
peer_pid=$!
for _ in $(seq 400); do [[ -e "$dir/sync/ready" ]] && break; sleep 0.05; done
capture "$p2" "$out/mid.pcap"
touch "$dir/sync/go"
wait "$peer_pid" || { cat "$dir/mid.err" >&2; exit 1; }
peer_pid=
stop
echo "$p1 $p2"
