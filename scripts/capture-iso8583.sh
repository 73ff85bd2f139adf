#!/usr/bin/env bash
# Captures real ISO 8583 traffic on loopback: an acquirer client and an issuer
# server (scripts/iso8583_peer.py, built on the pyiso8583 library) exchanging
# pipelined requests and out-of-order responses.
# Usage: scripts/capture-iso8583.sh OUT_DIR [CONNECTIONS=4] [N=60]
# For each scenario FRAMING-ENCODING (bin2-ascii, ascii4-binary, bin2tpdu-bcd,
# bin2-binary, bin2-ebcdic, bin2le-binary93) writes OUT_DIR/FRAMING-ENCODING.pcap and the client's own log
# OUT_DIR/FRAMING-ENCODING.log.jsonl (one JSON line per completed exchange),
# and prints "<name> <port> <exchanges>".
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
out=$1; conns=${2:-4}; n=${3:-60}
peer="$(cd "$(dirname "$0")" && pwd)/iso8583_peer.py"
for t in dumpcap python3; do
  command -v $t >/dev/null || { echo "capture-iso8583: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
python3 -c 'import iso8583' 2>/dev/null || { echo "capture-iso8583: python3 pyiso8583 missing (run scripts/setup.sh --test)" >&2; exit 1; }
mkdir -p "$out"
dir=$(mktemp -d /tmp/wasmtap-iso8583.XXXXXX)
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -n "${srv_pid:-}" ]] && kill "$srv_pid" 2>/dev/null || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT

seed=0
for scenario in "bin2 ascii" "ascii4 binary" "bin2tpdu bcd" "bin2 binary" "bin2 ebcdic" "bin2le binary93"; do
  read -r framing encoding <<<"$scenario"
  seed=$((seed + 1))  # different (but reproducible) cards, amounts and STANs per scenario
  name=$framing-$encoding
  pcap=$out/$name.pcap
  log=$out/$name.log.jsonl
  rm -f "$pcap" "$log"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 "$peer" server "$port" "$framing" "$encoding" 2>"$dir/$name.server.log" &
  srv_pid=$!
  # Wait for the listener before the capture starts, so the probe is not captured.
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null && break
    sleep 0.05
  done
  dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$pcap" 2>"$dir/$name.dumpcap.log" &
  cap_pid=$!
  for _ in $(seq 100); do [[ -s "$pcap" ]] && break; sleep 0.05; done
  sleep 0.3
  rc=0
  timeout 60 python3 "$peer" client "$port" "$framing" "$encoding" "$log" "$conns" "$n" "$seed" || rc=$?
  sleep 0.5
  kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
  kill "$srv_pid" 2>/dev/null || true; wait "$srv_pid" 2>/dev/null || true; srv_pid=
  if [[ $rc -ne 0 ]]; then
    echo "capture-iso8583: $name: client failed (exit $rc)" >&2
    cat "$dir/$name.server.log" >&2
    exit 1
  fi
  echo "$name $port $(wc -l < "$log")"
done
