#!/usr/bin/env bash
# Starts Debian's nginx as a reverse proxy to UPSTREAM (host:port) on a free 127.0.0.1 port,
# with its files in DIR. One connection per request on both sides (no keep-alive), no retries;
# the upstream's status is passed through. DIR/access.log has one line per request:
#   CLIENT_ADDR STATUS UPSTREAM_ADDR UPSTREAM_STATUS "REQUEST LINE"
# Usage: scripts/nginx-proxy.sh start DIR UPSTREAM   (prints the port; LISTEN=addr:port overrides)
#        scripts/nginx-proxy.sh stop DIR
set -euo pipefail
cmd=$1; dir=$2
case "$cmd" in
start)
  upstream=$3
  mkdir -p "$dir"; chmod 755 "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  listen=${LISTEN:-127.0.0.1:$port}
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 256; }
http {
  log_format proxied '\$remote_addr \$status \$upstream_addr \$upstream_status "\$request"';
  access_log $dir/access.log proxied;
  keepalive_timeout 0;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server {
    listen $listen;
    location / {
      proxy_pass http://$upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection close;
      proxy_next_upstream off;
    }
  }
}
CONF
  nginx -c "$dir/nginx.conf" -p "$dir"
  echo "${listen##*:}"
  ;;
stop)
  [[ -f $dir/nginx.pid ]] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  ;;
esac
