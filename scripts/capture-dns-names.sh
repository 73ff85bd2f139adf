#!/usr/bin/env bash
# Captures clients that find their servers through DNS, on loopback:
# dnsmasq (authoritative for *.wasmtap.test, no upstream, TTL 30 s) answers
# web.wasmtap.test with 127.0.0.3 (through a CNAME, front.wasmtap.test) and
# api.wasmtap.test with 127.0.0.4; nginx listens on 127.0.0.3, 127.0.0.4 and
# 127.0.0.5 (a server no answer names). A Python client resolves each name
# with a real query, then sends N HTTP requests to what it got, and N to
# 127.0.0.5 directly.
# Usage: scripts/capture-dns-names.sh OUT.pcap [N=10]
# Prints "DNS_PORT HTTP_PORT" on stdout once the servers answer (with
# WAIT_FILE set, the client then waits for that file to exist); writes OUT.pcap.expect.json
# ({"address:port": requests}).
set -euo pipefail
out=$1; n=${2:-10}
for t in dnsmasq dumpcap python3 nginx; do
  command -v $t >/dev/null || { echo "capture-dns-names: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/wasmtap-dnsnames.XXXXXX); chmod 755 "$dir"
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free); http=$(free)
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -n "${dns_pid:-}" ]] && kill "$dns_pid" 2>/dev/null || true
  for i in 3 4 5; do "$here/nginx-serve.sh" stop "$dir/nginx$i" >/dev/null 2>&1 || true; done
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
user=nobody; [[ $(id -u) -ne 0 ]] && user=$(id -un)
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
  --listen-address=127.0.0.1 --bind-interfaces --port="$port" --user="$user" --pid-file= \
  --local=/wasmtap.test/ --cname=web.wasmtap.test,front.wasmtap.test \
  --host-record=front.wasmtap.test,127.0.0.3 --address=/api.wasmtap.test/127.0.0.4 \
  --local-ttl=30 --cache-size=0 --log-facility="$dir/dnsmasq.log" &
dns_pid=$!
for i in 3 4 5; do
  LISTEN=127.0.0.$i:$http "$here/nginx-serve.sh" start "$dir/nginx$i" >/dev/null
done
dumpcap -q -i lo -f "port $port or port $http" -B 64 -P -w "$out" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.05; done
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null && break; sleep 0.05; done
sleep 0.3
echo "$port $http"
# WAIT_FILE: the caller starts its capture, then creates the file.
if [[ -n "${WAIT_FILE:-}" ]]; then
  for _ in $(seq 600); do [[ -e "$WAIT_FILE" ]] && break; sleep 0.05; done
fi
cat > "$dir/client.py" <<'PY'
import collections, http.client, json, socket, struct, sys

port, http_port, n, expect_path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def resolve(name, qid):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1), ("127.0.0.1", port))
    r = u.recv(4096)
    an = struct.unpack(">H", r[6:8])[0]
    pos = 12 + len(q) + 4
    addrs = []
    for _ in range(an):
        while r[pos] and r[pos] & 0xC0 != 0xC0:
            pos += r[pos] + 1
        pos += 2 if r[pos] & 0xC0 == 0xC0 else 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", r[pos:pos + 10])
        if rtype == 1:
            addrs.append(socket.inet_ntoa(r[pos + 10:pos + 14]))
        pos += 10 + rdlen
    assert addrs, f"{name}: no address"
    return addrs[0]

got = collections.Counter()
targets = [resolve("web.wasmtap.test", 1), resolve("api.wasmtap.test", 2), "127.0.0.5"]
for ip in targets:
    for _ in range(n):
        c = http.client.HTTPConnection(ip, http_port, timeout=5)
        c.request("GET", "/")
        assert c.getresponse().read() == b"hello from nginx\n"
        c.close()
        got[f"{ip}:{http_port}"] += 1
json.dump(got, open(expect_path, "w"), indent=1, sort_keys=True)
PY
timeout 60 python3 "$dir/client.py" "$port" "$http" "$n" "$out.expect.json"
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
