#!/usr/bin/env bash
# Makes imperfect captures out of real ones, the way mirror ports and busy
# hosts make them, for tests/e2e/imperfect.rs:
#   OUT_DIR/seq.pcap            nginx (Debian) answering five requests curl sends one after
#                               another on one keep-alive connection: / /missing / /fail /
#   OUT_DIR/response-lost.pcap  the same, with the third response's packets deleted (editcap)
#   OUT_DIR/one-sided.pcap      the same, with only the client-to-server direction kept
#   OUT_DIR/request-tail-lost.pcap  Zeek's http-post-large capture with the segment that
#                               ends the first POST's body deleted (editcap)
# Usage: scripts/capture-imperfect.sh OUT_DIR   (prints the nginx port)
set -euo pipefail
out=$1
here="$(cd "$(dirname "$0")" && pwd)"
for t in dumpcap editcap tshark curl nginx; do
  command -v $t >/dev/null || { echo "capture-imperfect: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
mkdir -p "$out"
dir=$(mktemp -d /tmp/wasmtap-imperfect.XXXXXX)
chmod 755 "$dir"  # nginx's workers must reach the files
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  "$here/nginx-serve.sh" stop "$dir/nginx" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
port=$("$here/nginx-serve.sh" start "$dir/nginx")
seq=$out/seq.pcap
rm -f "$seq"
dumpcap -q -i lo -f "tcp port $port" -B 16 -P -w "$seq" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$seq" ]] && break; sleep 0.05; done
sleep 0.3
u=http://127.0.0.1:$port
# One connection, each request sent after the previous answer (curl reuses it).
curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
  "$u/" "$u/missing" "$u/" "$u/fail" "$u/"
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
# The third response: the server's segments that start with a status line, third of them.
third=$(tshark -r "$seq" -Y "tcp.srcport == $port && http.response" -T fields -e frame.number | sed -n 3p)
[[ -n "$third" ]] || { echo "capture-imperfect: no third response in $seq" >&2; exit 1; }
editcap "$seq" "$out/response-lost.pcap" "$third"
tshark -r "$seq" -Y "tcp.dstport == $port" -w "$out/one-sided.pcap"
# Zeek's http-post-large: frame 7 ends the first POST's body (29139 bytes).
editcap "$here/../tests/pcaps/http/zeek__http-http-post-large.pcap" "$out/request-tail-lost.pcap" 7
echo "$port"
