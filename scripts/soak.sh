#!/usr/bin/env bash
# Soak: a live agent for MINUTES under steady traffic of three protocols on
# loopback (nginx HTTP, redis, dnsmasq DNS; each about 10 requests a second),
# with a decoder file hot-reloaded and the filters changed every 30 s, and
# the agent's RSS, open file descriptors and threads sampled every 10 s.
# Fails if, after the first fifth of the run (warm-up), RSS grows by more
# than max(16 MiB, 10%), or descriptors or threads grow at all beyond +4; or
# if any answered request is missing from the agent's spans.
# Usage: scripts/soak.sh [MINUTES=30]   (prints one line per sample, then a summary)
# Env: WASMTAP_BIN (default target/debug/wasmtap; build it first).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
bin=${WASMTAP_BIN:-target/debug/wasmtap}
for t in nginx redis-server dnsmasq python3 curl; do
  command -v $t >/dev/null || { echo "soak: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
[[ -x $bin ]] || { echo "soak: $bin missing (cargo build -p wasmtap)" >&2; exit 1; }
wasm=target/wasm-plugins/wasm32-wasip2/release/wasmtap_plugin_http1.wasm
[[ -f $wasm ]] || { echo "soak: $wasm missing (cargo build -p wasmtap builds it)" >&2; exit 1; }
dir=$(mktemp -d /tmp/wasmtap-soak.XXXXXX); chmod 755 "$dir"
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free); dns_port=$(free); admin=$(free)
cleanup() {
  [[ -n "${client_pid:-}" ]] && kill "$client_pid" 2>/dev/null || true
  [[ -n "${agent_pid:-}" ]] && kill "$agent_pid" 2>/dev/null || true
  [[ -n "${redis_pid:-}" ]] && kill "$redis_pid" 2>/dev/null || true
  [[ -n "${dns_pid:-}" ]] && kill "$dns_pid" 2>/dev/null || true
  scripts/nginx-serve.sh stop "$dir/nginx" >/dev/null 2>&1 || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
http_port=$(scripts/nginx-serve.sh start "$dir/nginx")
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >/dev/null &
redis_pid=$!
user=nobody; [[ $(id -u) -ne 0 ]] && user=$(id -un)
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
  --listen-address=127.0.0.1 --bind-interfaces --port="$dns_port" --user="$user" --pid-file= \
  --local=/wasmtap.test/ --address=/ok.wasmtap.test/10.1.2.3 --cache-size=0 &
dns_pid=$!
mkdir -p "$dir/plugins"; chmod 755 "$dir/plugins"
cp "$wasm" "$dir/plugins/http1.wasm"
printf '[plugins.ports]\ndns = [53, %s]\n' "$dns_port" > "$dir/agent.toml"
WASMTAP_LOG=info "$bin" run --interface lo --bpf "port $http_port or port $redis_port or port $dns_port" \
  --plugins "$dir/plugins" --config "$dir/agent.toml" --format jsonl \
  --admin-listen "127.0.0.1:$admin" >"$dir/spans.jsonl" 2>"$dir/agent.log" &
agent_pid=$!
for _ in $(seq 200); do grep -q capturing "$dir/agent.log" 2>/dev/null && break; sleep 0.1; done
cat > "$dir/client.py" <<'PY'
import json, signal, socket, struct, sys, time, http.client
http_port, redis_port, dns_port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sent = {"http": 0, "redis": 0, "dns": 0}
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
r = socket.create_connection(("127.0.0.1", redis_port), 2)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
q = b"".join(bytes([len(l)]) + l.encode() for l in "ok.wasmtap.test".split(".")) + b"\0"
i = 0
while not stop:
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
    c.request("GET", f"/soak{i % 7}"); c.getresponse().read(); c.close(); sent["http"] += 1
    r.sendall(b"*1\r\n$4\r\nPING\r\n"); assert r.recv(64).startswith(b"+PONG"); sent["redis"] += 1
    u.sendto(struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1), ("127.0.0.1", dns_port))
    u.recv(512); sent["dns"] += 1
    i += 1
    time.sleep(0.1)
json.dump(sent, open(out, "w"))
PY
python3 "$dir/client.py" "$http_port" "$redis_port" "$dns_port" "$dir/sent.json" &
client_pid=$!
samples="$dir/samples"
start=$(date +%s); end=$((start + minutes * 60)); next_change=$((start + 30)); n=0
echo "soak: ${minutes} min; t_s rss_kib fds threads spans"
while (( $(date +%s) < end )); do
  sleep 10
  now=$(date +%s)
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$agent_pid/status")
  thr=$(awk '/^Threads:/ {print $2}' "/proc/$agent_pid/status")
  fds=$(ls "/proc/$agent_pid/fd" | wc -l)
  spans=$(wc -l < "$dir/spans.jsonl")
  echo "$((now - start)) $rss $fds $thr $spans" | tee -a "$samples"
  if (( now >= next_change )); then
    next_change=$((now + 30)); n=$((n + 1))
    # Hot reload: the decoder's sidecar changes (a new config), so it reloads.
    printf '[config]\nsoak_generation = %d\n' "$n" > "$dir/plugins/http1.toml"
    # Filters changed at run time (excluding a port no traffic uses, then none).
    body='{}'; ((n % 2)) && body='{"ports_exclude": ["9"]}'
    curl -s -o /dev/null -X PUT -d "$body" "http://127.0.0.1:$admin/filters"
  fi
done
kill -TERM "$client_pid"; wait "$client_pid" || true; client_pid=
sleep 2
kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=
python3 - "$samples" "$dir/sent.json" "$dir/spans.jsonl" "$dir/agent.log" "$n" <<'PY'
import json, sys
samples = [list(map(int, l.split())) for l in open(sys.argv[1])]
sent = json.load(open(sys.argv[2]))
got = {"http": 0, "redis": 0, "dns": 0}
for l in open(sys.argv[3]):
    p = json.loads(l)["attributes"].get("network.protocol.name")
    if p in got:
        got[p] += 1
warm = samples[max(1, len(samples) // 5):] or samples
rss = [s[1] for s in warm]; fds = [s[2] for s in warm]; thr = [s[3] for s in warm]
band = max(16 * 1024, rss[0] // 10)
problems = []
if max(rss) - rss[0] > band: problems.append(f"RSS grew {max(rss) - rss[0]} KiB after warm-up (band {band})")
if max(fds) - fds[0] > 4: problems.append(f"descriptors grew {fds[0]} -> {max(fds)}")
if max(thr) - thr[0] > 4: problems.append(f"threads grew {thr[0]} -> {max(thr)}")
if got != sent: problems.append(f"requests answered {sent}, spans {got}")
reloads = open(sys.argv[4]).read().count("decoder loaded") - 1
changes = int(sys.argv[5])
if reloads < changes: problems.append(f"{changes} decoder changes, {reloads} reloads")
print(f"soak: {samples[-1][0]} s; RSS after warm-up {min(rss)}..{max(rss)} KiB (start {samples[0][1]}); "
      f"fds {min(fds)}..{max(fds)}; threads {min(thr)}..{max(thr)}; requests {sent}; spans {got}; reloads {reloads} of {changes} changes")
if problems:
    print("soak: FAIL: " + "; ".join(problems)); sys.exit(1)
print("soak: ok")
PY
