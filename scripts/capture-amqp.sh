#!/usr/bin/env bash
# Captures real AMQP 0-9-1 traffic on loopback: a RabbitMQ node of its own
# (Debian's rabbitmq-server: own node name, port, data and log directories)
# and a pika client (scripts/amqp_peer.py).
# Usage: scripts/capture-amqp.sh OUT_DIR [N=20] [M=12]
# Writes OUT_DIR/amqp.pcap, the client's log OUT_DIR/amqp.log.json and the
# broker's log OUT_DIR/rabbit.log; prints the port.
set -euo pipefail
out=$1; n=${2:-20}; m=${3:-12}
peer="$(cd "$(dirname "$0")" && pwd)/amqp_peer.py"
server=/usr/lib/rabbitmq/bin/rabbitmq-server
for t in dumpcap python3 $server; do
  command -v $t >/dev/null || { echo "capture-amqp: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
python3 -c 'import pika' 2>/dev/null || { echo "capture-amqp: python3 pika missing (run scripts/setup.sh --test)" >&2; exit 1; }
mkdir -p "$out"
dir=$(mktemp -d /tmp/wasmtap-amqp.XXXXXX)
node="wasmtap$$@localhost"
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  if [[ -n "${srv_pid:-}" ]]; then
    HOME=$dir RABBITMQ_NODENAME=$node timeout 30 rabbitmqctl -n "$node" stop >/dev/null 2>&1 || kill -- -"$srv_pid" 2>/dev/null || true
    wait "$srv_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free); dist=$(free)
echo "[]." > "$dir/enabled_plugins"
# Its own process group, so cleanup can end the node and its children (epmd stays, shared).
setsid env HOME="$dir" RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" RABBITMQ_MNESIA_BASE="$dir/mnesia" \
  RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
  RABBITMQ_CONFIG_FILE="$dir/rabbitmq" "$server" >"$dir/server.out" 2>&1 &
srv_pid=$!
for _ in $(seq 240); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null && break
  sleep 0.25
done
pcap=$out/amqp.pcap
rm -f "$pcap" "$out/amqp.log.json"
dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$pcap" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$pcap" ]] && break; sleep 0.05; done
sleep 0.3
rc=0
timeout 60 python3 "$peer" "$port" "$out/amqp.log.json" "$n" "$m" 2>"$dir/peer.log" || rc=$?
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
cat "$dir"/log/*.log > "$out/rabbit.log" 2>/dev/null || true
if [[ $rc -ne 0 ]]; then
  echo "capture-amqp: client failed (exit $rc)" >&2; cat "$dir/peer.log" "$dir/server.out" >&2; exit 1
fi
echo "$port"
