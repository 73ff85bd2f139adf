#!/usr/bin/env bash
# Captures real PostgreSQL traffic on loopback: a throw-away cluster driven by
# pgbench (TPC-B-like transactions, simple and extended protocol) and psql.
# Usage: scripts/capture-pgsql.sh OUT.pcap [CLIENTS=2] [TRANSACTIONS=200]
# Prints on stdout, one per line: "simple PROCESSED", "extended PROCESSED"
# (transactions pgbench reports as processed per mode).
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
out=$1; clients=${2:-2}; txs=${3:-200}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
for t in "$bindir/initdb" "$bindir/pg_ctl" pgbench psql dumpcap runuser timeout; do
  command -v "$t" >/dev/null || { echo "capture-pgsql: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
dir=$(mktemp -d /tmp/wasmtap-pgsql.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg() { runuser -u postgres -- "$@"; }
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -f $dir/data/postmaster.pid ]] && pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
chown postgres "$dir"
pg "$bindir/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off" start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres PGCONNECT_TIMEOUT=10
dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$out" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.05; done
sleep 0.3
timeout 120 pgbench -i -s 1 -q >"$dir/init.log" 2>&1
for mode in simple extended; do
  timeout 120 pgbench -n -c "$clients" -t "$txs" -M "$mode" >"$dir/$mode.log" 2>&1
  n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$dir/$mode.log")
  echo "$mode ${n:-0}"
done
timeout 20 psql -q -X -c "CREATE TABLE wasmtap_t (i int, s text)" \
  -c "INSERT INTO wasmtap_t VALUES (1, 'one'), (2, 'two')" -c "SELECT * FROM wasmtap_t" >/dev/null
timeout 20 psql -q -X -c "SELECT * FROM no_such_table" >/dev/null 2>&1 || true
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
