#!/usr/bin/env bash
# Captures real DNS traffic on loopback: dnsmasq (Debian's dnsmasq-base,
# authoritative for *.wasmtap.test, no upstream) queried by a bounded Python
# client over UDP and over TCP (several queries pipelined on one connection).
# Usage: scripts/capture-dns.sh OUT.pcap [N=100]
# Writes OUT.pcap.expect.json: {"port": server port, "exchanges": {"QTYPE RCODE":
# count}} of what the client got.
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
out=$1; n=${2:-100}
for t in dnsmasq dumpcap python3; do
  command -v $t >/dev/null || { echo "capture-dns: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
dir=$(mktemp -d /tmp/wasmtap-dns.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -n "${dns_pid:-}" ]] && kill "$dns_pid" 2>/dev/null || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
user=nobody; [[ $(id -u) -ne 0 ]] && user=$(id -un)
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
  --listen-address=127.0.0.1 --bind-interfaces --port="$port" --user="$user" --pid-file= \
  --local=/wasmtap.test/ --address=/ok.wasmtap.test/10.1.2.3 --cache-size=0 \
  --log-facility="$dir/dnsmasq.log" &
dns_pid=$!
dumpcap -q -i lo -f "port $port" -B 64 -P -w "$out" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.05; done
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null && break; sleep 0.05; done
sleep 0.3
cat > "$dir/client.py" <<'PY'
import collections, json, random, socket, struct, sys

port, n, expect_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
TYPES = {1: "A", 28: "AAAA", 15: "MX", 16: "TXT"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
want = collections.Counter()
rng = random.Random(7)

def query(qid, name, qtype):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", qtype, 1)

def record(resp, qid, qtype):
    rid, flags = struct.unpack(">HH", resp[:4])
    assert rid == qid and flags & 0x8000, (rid, qid, flags)
    want[f"{TYPES[qtype]} {RCODES.get(flags & 15, flags & 15)}"] += 1

def pick(i):
    name = ["ok.wasmtap.test", f"missing{i}.wasmtap.test"][i % 3 == 0]
    return name, [1, 1, 28, 15, 16][i % 5]

# UDP: one socket, one query at a time.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
for i in range(n):
    qid = rng.randrange(65536)
    name, qtype = pick(i)
    u.sendto(query(qid, name, qtype), ("127.0.0.1", port))
    record(u.recv(4096), qid, qtype)

# TCP: batches of 5 queries pipelined on one connection, length-prefixed.
def recv_exact(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        assert c, "connection closed"
        b += c
    return b

for batch in range(max(1, n // 20)):
    t = socket.create_connection(("127.0.0.1", port), 2)
    sent = []
    wire = b""
    for j in range(5):
        qid = rng.randrange(65536)
        name, qtype = pick(batch * 5 + j)
        m = query(qid, name, qtype)
        wire += struct.pack(">H", len(m)) + m
        sent.append((qid, qtype))
    t.sendall(wire)
    for qid, qtype in sent:
        (ln,) = struct.unpack(">H", recv_exact(t, 2))
        record(recv_exact(t, ln), qid, qtype)
    t.close()

json.dump({"port": port, "exchanges": want}, open(expect_path, "w"), indent=1, sort_keys=True)
print(f"capture-dns: {sum(want.values())} queries answered", file=sys.stderr)
PY
timeout 60 python3 "$dir/client.py" "$port" "$n" "$out.expect.json"
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
