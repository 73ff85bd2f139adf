#!/usr/bin/env bash
# Captures real HTTP/2 (cleartext, prior knowledge) on loopback: Debian's
# nginx with `http2` on its listener, logging every request, driven by
# curl --http2-prior-knowledge and by h2load (nghttp2-client) with many
# concurrent streams per connection.
# Usage: scripts/capture-h2.sh OUT_DIR
# Writes OUT_DIR/h2.pcap and nginx's access log OUT_DIR/access.log
# ("<status> <protocol> <uri>" per request), prints the port.
set -euo pipefail
out=$1
for t in dumpcap nginx curl h2load python3; do
  command -v $t >/dev/null || { echo "capture-h2: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
mkdir -p "$out"
dir=$(mktemp -d /tmp/wasmtap-h2.XXXXXX)
chmod 755 "$dir"
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -f "$dir/nginx.pid" ]] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/html"
echo "hello over h2" > "$dir/html/index.html"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 256; }
http {
  log_format s '\$status \$server_protocol \$request_uri';
  access_log $dir/access.log s;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$port http2;
    root $dir/html;
    location = /fail { return 500 "boom\n"; }
  }
}
CONF
nginx -c "$dir/nginx.conf" -p "$dir" 2>"$dir/start.log"
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null && break
  sleep 0.05
done
pcap=$out/h2.pcap
rm -f "$pcap"
dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$pcap" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$pcap" ]] && break; sleep 0.05; done
sleep 0.3
u=http://127.0.0.1:$port
for path in / /missing "/fail?token=x"; do
  curl -s --http2-prior-knowledge -o /dev/null "$u$path"
done
h2load -n 300 -c 3 -m 20 "$u/" >"$dir/h2load1.log" 2>&1
h2load -n 60 -c 2 -m 10 "$u/missing" >"$dir/h2load2.log" 2>&1
h2load -n 40 -c 1 -m 40 "$u/fail" >"$dir/h2load3.log" 2>&1
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null || true
sleep 0.3
cp "$dir/access.log" "$out/access.log"
echo "$port"
