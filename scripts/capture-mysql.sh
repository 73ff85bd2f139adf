#!/usr/bin/env bash
# Captures real MySQL-protocol traffic on loopback: a throwaway MariaDB server
# driven by PyMySQL (text protocol, raw COM_STMT_* prepared statements, a
# deliberate error) and by the mariadb CLI over the compressed protocol.
# Usage: scripts/capture-mysql.sh OUT.pcap COUNTS.json [INSERTS=200]
# COUNTS.json receives what the clients sent: {"OPERATION": count, ...} plus
# "errors": {"code": count}. Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
out=$1; counts=$2; n=${3:-200}
for t in mariadbd mariadb-install-db mariadb dumpcap python3; do
  command -v $t >/dev/null || { echo "capture-mysql: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
python3 -c 'import pymysql' 2>/dev/null || { echo "capture-mysql: python3 pymysql missing (run scripts/setup.sh --test)" >&2; exit 1; }
dir=$(mktemp -d /tmp/wasmtap-mysql.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  if [[ -n "${db_pid:-}" ]]; then
    kill "$db_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$db_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$db_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
mariadb-install-db --no-defaults --user=root --datadir="$dir/data" \
  --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
  || { cat "$dir/install.log" >&2; exit 1; }
mariadbd --no-defaults --user=root --datadir="$dir/data" --socket="$dir/sock" \
  --pid-file="$dir/pid" --log-error="$dir/error.log" --port="$port" \
  --bind-address=127.0.0.1 --skip-networking=0 --skip-name-resolve --skip-grant-tables \
  --skip-ssl --innodb-buffer-pool-size=16M --innodb-log-file-size=8M &
db_pid=$!
ready=
for _ in $(seq 150); do
  if mariadb --no-defaults --skip-ssl -h127.0.0.1 -P"$port" -uroot -e 'SELECT 1' >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$db_pid" 2>/dev/null || break
  sleep 0.2
done
[[ -n $ready ]] || { echo "capture-mysql: server did not start" >&2; cat "$dir/error.log" >&2; exit 1; }

dumpcap -q -i lo -f "tcp port $port" -B 64 -P -w "$out" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.05; done
sleep 0.3

timeout 120 python3 - "$port" "$n" "$counts" <<'PY'
import collections, json, struct, subprocess, sys
import pymysql
from pymysql.constants import COMMAND

port, n, counts_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ops = collections.Counter()
errors = collections.Counter()

def connect(**kw):
    ops["LOGIN"] += 1
    ops["SET"] += 1  # PyMySQL sends SET NAMES right after the login
    return pymysql.connect(host="127.0.0.1", port=port, user="root", password="",
                           autocommit=None, **kw)

def q(cur, sql, op):
    ops[op] += 1
    try:
        cur.execute(sql)
        cur.fetchall()
    except pymysql.err.MySQLError as e:
        errors[str(e.args[0])] += 1

c = connect()
cur = c.cursor()
q(cur, "CREATE DATABASE wt", "CREATE")
ops["INIT_DB"] += 1
c.select_db("wt")
q(cur, "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(64), note TEXT)", "CREATE")
for i in range(n):
    q(cur, "INSERT INTO t VALUES (%d, 'name-%d', '%s')" % (i, i, "x" * (i % 50)), "INSERT")
for i in range(10):
    q(cur, "SELECT * FROM t WHERE id >= %d" % (i * 10), "SELECT")
q(cur, "SELECT * FROM nope", "SELECT")
q(cur, "UPDATE t SET note = 'y' WHERE id < 5", "UPDATE")

# Server-side prepared statement over the binary protocol (PyMySQL has no
# API for it: raw COM_STMT_PREPARE / EXECUTE / CLOSE).
def read_until_eof(conn):
    while True:
        p = conn._read_packet()
        if p.is_eof_packet():
            return

def prepare(conn, sql):
    ops["PREPARE"] += 1
    conn._execute_command(COMMAND.COM_STMT_PREPARE, sql)
    ok = conn._read_packet()
    stmt_id, cols, params = struct.unpack("<IHH", ok.get_all_data()[1:9])
    for _ in range(params):
        conn._read_packet()
    if params:
        read_until_eof(conn)
    for _ in range(cols):
        conn._read_packet()
    if cols:
        read_until_eof(conn)
    return stmt_id

def execute(conn, stmt_id, op):
    ops[op] += 1
    conn._execute_command(COMMAND.COM_STMT_EXECUTE, struct.pack("<IBI", stmt_id, 0, 1))
    first = conn._read_packet()
    if first.is_ok_packet():
        return
    ncols = first.read_length_encoded_integer()
    for _ in range(ncols):
        conn._read_packet()
    read_until_eof(conn)  # EOF after the columns
    read_until_eof(conn)  # rows, then EOF

def close_stmt(conn, stmt_id):
    ops["STMT_CLOSE"] += 1
    conn._execute_command(COMMAND.COM_STMT_CLOSE, struct.pack("<I", stmt_id))

sid = prepare(c, "SELECT id, name FROM t WHERE id < 20")
for _ in range(3):
    execute(c, sid, "SELECT")
close_stmt(c, sid)
ops["PING"] += 1
c.ping(reconnect=False)
ops["QUIT"] += 1
c.close()

# Compressed protocol: the mariadb CLI with --compress.
sql = "SELECT COUNT(*) FROM t; SELECT * FROM t WHERE id < 100; SELECT * FROM nope2"
r = subprocess.run(["mariadb", "--no-defaults", "--skip-ssl", "--compress", "-h127.0.0.1",
                    "-P%d" % port, "-uroot", "--force", "wt", "-e", sql],
                   capture_output=True, text=True, timeout=60)
ops["LOGIN"] += 1
ops["SELECT"] += 3
errors["1146"] += 1
ops["QUIT"] += 1
json.dump({"ops": ops, "errors": errors}, open(counts_path, "w"), sort_keys=True)
PY
sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
