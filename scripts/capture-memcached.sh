#!/usr/bin/env bash
# Captures real memcached traffic on loopback: Debian's memcached driven by a
# bounded Python client (pymemcache for the text protocol, raw frames for the
# binary protocol).
# Usage: scripts/capture-memcached.sh OUT.pcap [N=200]
# Writes OUT.pcap.expect.json: {"op STATUS": count} for every command the
# client sent ("-" = no response expected: noreply, quit), and the hit count.
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
out=$1; n=${2:-200}
for t in memcached dumpcap python3; do
  command -v $t >/dev/null || { echo "capture-memcached: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
python3 -c 'import pymemcache' 2>/dev/null || { echo "capture-memcached: python3 pymemcache missing (run scripts/setup.sh --test)" >&2; exit 1; }
dir=$(mktemp -d /tmp/wasmtap-memcached.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -n "${mc_pid:-}" ]] && kill "$mc_pid" 2>/dev/null || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
user=nobody; [[ $(id -u) -ne 0 ]] && user=$(id -un)
memcached -l 127.0.0.1 -p "$port" -U 0 -u "$user" -m 64 &
mc_pid=$!
dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$out" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.05; done
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null && break; sleep 0.05; done
sleep 0.3
cat > "$dir/client.py" <<'PY'
import collections, json, socket, struct, sys
from pymemcache.client.base import Client

port, n, expect_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
want = collections.Counter()
hits = 0

# Text protocol, one connection.
c = Client(("127.0.0.1", port), default_noreply=False, connect_timeout=2, timeout=2)
for i in range(n):
    assert c.set(f"k{i}", b"v" * (i % 50 + 1))
    want["set STORED"] += 1
for i in range(n + n // 4):  # hits, then misses
    v = c.get(f"k{i}")
    if v is None:
        want["get END"] += 1
    else:
        want["get VALUE"] += 1
        hits += 1
for j in range(5):  # multi-gets: one command each, some keys missing
    keys = [f"k{j}", f"k{n + j}", f"k{j + 10}"]
    got = c.get_many(keys)
    want["get VALUE" if got else "get END"] += 1
    hits += len(got)
v, _cas = c.gets("k1")
want["gets VALUE"] += 1
hits += 1
for i in range(10):
    c.delete(f"k{i}")
    want["delete DELETED"] += 1
c.delete("nokey")
want["delete NOT_FOUND"] += 1
c.set("nr", b"x", noreply=True)
want["set -"] += 1
c.set("ctr", b"1")
want["set STORED"] += 1
c.incr("ctr", 5)
want["incr -"] += 1  # numeric reply: no status word
c.version()
want["version VERSION"] += 1
c.quit()
want["quit -"] += 1

# A bad command on its own connection, after a known one (a decoder that may
# have missed the start of a flow syncs on a known command): ERROR.
s = socket.create_connection(("127.0.0.1", port), 2)
s.sendall(b"version\r\n")
assert s.recv(100).startswith(b"VERSION")
want["version VERSION"] += 1
s.sendall(b"bogus_command\r\n")
assert s.recv(100).startswith(b"ERROR")
want["_OTHER ERROR"] += 1
s.close()

# Binary protocol on its own connection.
def frame(op, key=b"", extras=b"", value=b"", opaque=0):
    body = extras + key + value
    return struct.pack(">BBHBBHII8s", 0x80, op, len(key), len(extras), 0, 0, len(body), opaque, b"\0" * 8) + body

def read_resp(s):
    h = b""
    while len(h) < 24:
        h += s.recv(24 - len(h))
    body_len, opaque = struct.unpack(">II", h[8:16])
    b = b""
    while len(b) < body_len:
        b += s.recv(body_len - len(b))
    return struct.unpack(">H", h[6:8])[0], opaque

b = socket.create_connection(("127.0.0.1", port), 2)
b.sendall(frame(0x01, b"bk", struct.pack(">II", 0, 0), b"hello", 101))
assert read_resp(b) == (0, 101); want["set NO_ERROR"] += 1
b.sendall(frame(0x00, b"bk", opaque=102))
assert read_resp(b) == (0, 102); want["get NO_ERROR"] += 1; hits += 1
b.sendall(frame(0x00, b"missing", opaque=103))
assert read_resp(b) == (1, 103); want["get KEY_NOT_FOUND"] += 1
# Quiet get of a missing key (no reply), then noop.
b.sendall(frame(0x09, b"missing", opaque=104) + frame(0x0a, opaque=105))
assert read_resp(b) == (0, 105); want["getq KEY_NOT_FOUND"] += 1; want["noop NO_ERROR"] += 1
b.sendall(frame(0x04, b"bk", opaque=106))
assert read_resp(b) == (0, 106); want["delete NO_ERROR"] += 1
b.close()

json.dump({"exchanges": want, "hits": hits}, open(expect_path, "w"), indent=1, sort_keys=True)
print(f"capture-memcached: {sum(want.values())} commands, {hits} hits", file=sys.stderr)
PY
timeout 60 python3 "$dir/client.py" "$port" "$n" "$out.expect.json"
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
