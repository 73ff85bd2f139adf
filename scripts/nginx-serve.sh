#!/usr/bin/env bash
# Starts Debian's nginx on a free 127.0.0.1 port, serving 200 (/), 404 (/missing),
# 500 (/fail) and 302 (/moved), with its files in DIR.
# Usage: scripts/nginx-serve.sh start DIR   (prints the port; LISTEN=addr:port overrides)
#        scripts/nginx-serve.sh stop DIR
set -euo pipefail
cmd=$1; dir=$2
case "$cmd" in
start)
  mkdir -p "$dir/html"; chmod 755 "$dir"
  echo "hello from nginx" > "$dir/html/index.html"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  listen=${LISTEN:-127.0.0.1:$port}
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
    listen $listen;
    root $dir/html;
    location = /fail { return 500 "boom\n"; }
    location = /moved { return 302 /; }
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
