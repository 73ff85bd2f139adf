#!/usr/bin/env bash
# Captures real TLS handshakes on loopback: openssl s_server with a
# certificate from a CA made here, and openssl s_client connecting with
# TLS 1.2 and 1.3, with and without SNI and ALPN h2, twice the same client
# (for JA4's stability), and two clients that do not trust the CA (an
# unknown_ca alert, in cleartext for 1.2, encrypted for 1.3).
# Usage: scripts/capture-tls.sh OUT_DIR
# Writes OUT_DIR/tls.pcap and OUT_DIR/tls.log.jsonl (one line per client:
# {"version", "sni", "alpn", "ok"}), prints the port.
set -euo pipefail
out=$1
for t in dumpcap openssl python3; do
  command -v $t >/dev/null || { echo "capture-tls: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
mkdir -p "$out"
dir=$(mktemp -d /tmp/wasmtap-tls.XXXXXX)
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -n "${srv_pid:-}" ]] && kill "$srv_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir"
q() { openssl "$@" >/dev/null 2>&1; }
q req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=wasmtap-test-ca
q req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 -subj /CN=someone-else
q req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=svc.test
printf 'subjectAltName=DNS:svc.test,DNS:api.test\n' > ext.cnf
q x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext.cnf
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
openssl s_server -quiet -accept "127.0.0.1:$port" -cert srv.pem -key srv.key -alpn h2,http/1.1 </dev/null >server.log 2>&1 &
srv_pid=$!
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null && break
  sleep 0.05
done
pcap=$out/tls.pcap; log=$out/tls.log.jsonl
rm -f "$pcap" "$log"
dumpcap -q -i lo -f "tcp port $port" -B 16 -P -w "$pcap" 2>dumpcap.log &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$pcap" ]] && break; sleep 0.05; done
sleep 0.3
client() { # VERSION SNI ALPN CAFILE
  local args=(-connect "127.0.0.1:$port" "-tls1_${1#1.}" -CAfile "$4" -verify_return_error)
  [[ -n "$2" ]] && args+=(-servername "$2") || args+=(-noservername)
  [[ -n "$3" ]] && args+=(-alpn "$3")
  local ok=true
  timeout 10 openssl s_client "${args[@]}" </dev/null >client.log 2>&1 || ok=false
  printf '{"version": "%s", "sni": "%s", "alpn": "%s", "ok": %s}\n' "$1" "$2" "$3" "$ok" >>"$log"
  sleep 0.2
}
client 1.2 svc.test "" ca.pem
client 1.2 api.test h2 ca.pem
client 1.3 svc.test h2 ca.pem
client 1.3 svc.test "" ca.pem
client 1.3 svc.test "" ca.pem
client 1.2 svc.test "" other.pem
client 1.3 api.test h2 other.pem
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
echo "$port"
