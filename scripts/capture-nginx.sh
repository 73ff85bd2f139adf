#!/usr/bin/env bash
# Captures real HTTP traffic on loopback: Debian's nginx driven by wrk.
# Usage: scripts/capture-nginx.sh OUT.pcap [SECONDS=1] [CONNECTIONS=4]
# WRK_ARGS adds wrk options (e.g. WRK_ARGS='-H Connection:close' for one connection per request).
# nginx serves 200 (/), 404 (/missing), 500 (/fail) and 302 (/moved); wrk cycles through them.
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
out=$1; secs=${2:-1}; conns=${3:-4}
for t in nginx wrk dumpcap; do
  command -v $t >/dev/null || { echo "capture-nginx: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
dir=$(mktemp -d /tmp/wasmtap-nginx.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -f $dir/nginx.pid ]] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
chmod 755 "$dir"
mkdir -p "$dir/html"
echo "hello from nginx" > "$dir/html/index.html"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$port;
    root $dir/html;
    location = /fail { return 500 "boom\n"; }
    location = /moved { return 302 /; }
  }
}
CONF
nginx -c "$dir/nginx.conf" -p "$dir"
cat > "$dir/paths.lua" <<'LUA'
local paths = {"/", "/", "/", "/missing", "/fail", "/moved"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
LUA
dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$out" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.05; done
sleep 0.3
# shellcheck disable=SC2086
wrk -t1 -c"$conns" -d"${secs}s" ${WRK_ARGS:-} -s "$dir/paths.lua" "http://127.0.0.1:$port/" > "$dir/wrk.out"
echo "port $port" > "$out.port"
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
grep -E "requests in|Non-2xx" "$dir/wrk.out" >&2 || true
