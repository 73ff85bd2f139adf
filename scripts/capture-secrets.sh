#!/usr/bin/env bash
# Captures real traffic carrying planted secrets on loopback: nginx
# (scripts/nginx-serve.sh), redis-server with --requirepass and a throw-away
# PostgreSQL cluster with cleartext password logins, driven by curl,
# redis-cli, psql and a small extended-protocol client.
# Usage: scripts/capture-secrets.sh OUT.pcap
# Prints on stdout, one per line, "secret NAME VALUE" for every planted
# secret (each is sent on the wire, see the end of this script), then
# "ports HTTP REDIS PGSQL".
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
out=$1
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
for t in nginx curl redis-server redis-cli "$bindir/initdb" "$bindir/pg_ctl" psql dumpcap runuser timeout python3; do
  command -v "$t" >/dev/null || { echo "capture-secrets: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done

# The planted secrets: distinctive, so that any copy in an output is found.
bearer=PLANTED-bearer-7f3a91       # Authorization: Bearer
proxy=PLANTED-proxy-c04e2d         # Proxy-Authorization: Basic
cookie=PLANTED-cookie-5b19e8       # Cookie (curl -b)
cookie2=PLANTED-cookie-hdr-a26c07  # Cookie header, second of two cookies
query=PLANTED-query-93d4f1         # query-string value
form=PLANTED-form-4e8b63           # urlencoded POST body
redis_pass=PLANTED-redis-auth-1c7f52      # requirepass, via redis-cli -a and AUTH
redis_wrong=PLANTED-redis-wrong-8a30bd    # a wrong password (AUTH fails)
redis_pass2=PLANTED-redis-config-e61f04   # CONFIG SET requirepass, AUTH user pass, HELLO AUTH
redis_value=PLANTED-redis-value-2d95ca    # a SET value (arguments are masked by default)
pg_login=PLANTED-pg-login-77b0e3          # cleartext PasswordMessage at login
sql_where=PLANTED-sql-where-0f6a2c        # SELECT ... WHERE 'a' = '...'
sql_role=PLANTED-sql-role-b83d19          # CREATE ROLE ... PASSWORD '...'
sql_alter=PLANTED-sql-alter-4c21fe        # ALTER ROLE ... PASSWORD '...'
sql_insert=PLANTED-sql-insert-d5e870      # INSERT literal
sql_comment=PLANTED-sql-after-comment-6a9f13  # literal after a -- comment holding an apostrophe
sql_in_comment=PLANTED-sql-in-comment-e41b07  # inside the comments themselves (comments are removed)
sql_escaped=PLANTED-sql-escaped-39c5ad    # E'..\'..' literal
sql_doubled=PLANTED-sql-doubled-f2087b    # '..''..' literal
sql_dollar=PLANTED-sql-dollar-81e4c6      # $q$..$q$ literal
sql_error=PLANTED-sql-error-5d3b70        # literal the server echoes in its error message
sql_parse=PLANTED-sql-parse-c9a614        # literal in an extended-protocol Parse
sql_bind=PLANTED-sql-bind-0e72d8          # extended-protocol Bind parameter value

dir=$(mktemp -d /tmp/wasmtap-secrets.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg() { runuser -u postgres -- "$@"; }
cleanup() {
  [[ -n "${cap_pid:-}" ]] && kill "$cap_pid" 2>/dev/null || true
  [[ -n "${redis_pid:-}" ]] && kill "$redis_pid" 2>/dev/null || true
  "$(dirname "$0")/nginx-serve.sh" stop "$dir/nginx" || true
  [[ -f $dir/pg/data/postmaster.pid ]] && pg "$bindir/pg_ctl" -D "$dir/pg/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
  sleep 0.2; rm -rf "$dir"
}
trap cleanup EXIT
chmod 755 "$dir"

# nginx: 200 (/), 404 (/missing), 500 (/fail), 405 for a POST to a file.
http_port=$("$(dirname "$0")/nginx-serve.sh" start "$dir/nginx")

# Redis, password required.
redis_port=$(free_port)
mkdir "$dir/redis"
(cd "$dir/redis" && exec redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$dir/redis" --logfile "$dir/redis/redis.log" --daemonize no --requirepass "$redis_pass") &
redis_pid=$!
rcli() { timeout 20 redis-cli --no-auth-warning -h 127.0.0.1 -p "$redis_port" "$@"; }
for _ in $(seq 100); do
  [[ $(rcli -a "$redis_pass" ping 2>/dev/null) == PONG ]] && break; sleep 0.05
done

# PostgreSQL: TCP logins use cleartext passwords (the PasswordMessage carries it).
pg_port=$(free_port)
mkdir "$dir/pg"; chown postgres "$dir/pg"
printf '%s\n' "$pg_login" > "$dir/pg/pw"; chown postgres "$dir/pg/pw"
pg "$bindir/initdb" -D "$dir/pg/data" -U postgres --auth-local=trust --auth-host=password \
  --pwfile="$dir/pg/pw" >"$dir/pg/initdb.log" 2>&1
pg "$bindir/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir/pg -c fsync=off -c synchronous_commit=off" start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$pg_port PGUSER=postgres PGDATABASE=postgres PGCONNECT_TIMEOUT=10 \
  PGPASSWORD=$pg_login PGSSLMODE=disable

for v in bearer proxy cookie cookie2 query form redis_pass redis_wrong redis_pass2 redis_value \
  pg_login sql_where sql_role sql_alter sql_insert sql_comment sql_in_comment sql_escaped sql_doubled sql_dollar \
  sql_error sql_parse sql_bind; do
  echo "secret $v ${!v}"
done
echo "ports $http_port $redis_port $pg_port"

dumpcap -q -i lo -f "tcp port $http_port or tcp port $redis_port or tcp port $pg_port" \
  -B 64 -P -w "$out" 2>"$dir/dumpcap.log" &
cap_pid=$!
for _ in $(seq 100); do [[ -s "$out" ]] && break; sleep 0.05; done
sleep 0.3

fail() { echo "capture-secrets: $*" >&2; exit 1; }

# --- HTTP: three requests on one keep-alive connection, then a POST, then a Cookie header.
base=http://127.0.0.1:$http_port
codes=$(timeout 20 curl -sS --max-time 10 -w '%{http_code}\n' \
  -H "Authorization: Bearer $bearer" -H "Proxy-Authorization: Basic $proxy" -b "session=$cookie" \
  -o /dev/null "$base/?token=$query&user=alice" \
  -o /dev/null "$base/missing?token=$query" \
  -o /dev/null "$base/fail?a=1&token=$query")
[[ $(echo $codes) == "200 404 500" ]] || fail "curl answers: $codes"
code=$(timeout 20 curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
  -H "Authorization: Bearer $bearer" -d "user=alice&password=$form" "$base/")
[[ $code == 405 ]] || fail "curl POST answer: $code"
code=$(timeout 20 curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
  -H "Cookie: theme=dark; session=$cookie2" "$base/?token=$query")
[[ $code == 200 ]] || fail "curl Cookie answer: $code"

# --- Redis: AUTH by redis-cli -a; explicit AUTH (wrong, then right); CONFIG SET
# requirepass; AUTH user pass; HELLO 3 AUTH; a new login with the new password.
r=$(printf 'SET wasmtap:k %s\nGET wasmtap:k\n' "$redis_value" | rcli -a "$redis_pass")
[[ $r == *"$redis_value"* ]] || fail "redis SET/GET: $r"
r=$(printf '%s\n' "AUTH $redis_wrong" "AUTH $redis_pass" "CONFIG SET requirepass $redis_pass2" \
  "AUTH default $redis_pass2" "HELLO 3 AUTH default $redis_pass2" "GET wasmtap:k" | rcli 2>&1)
[[ $r == *WRONGPASS* && $r == *"$redis_value"* ]] || fail "redis AUTH/CONFIG: $r"
r=$(rcli -a "$redis_pass2" GET wasmtap:k)
[[ $r == "$redis_value" ]] || fail "redis login with the new password: $r"

# --- PostgreSQL, simple protocol (psql -c sends each text as is, one Query each).
timeout 30 psql -X -q -v ON_ERROR_STOP=1 \
  -c "CREATE TABLE wasmtap_s (i int, s text)" \
  -c "INSERT INTO wasmtap_s VALUES (1, '$sql_insert')" \
  -c "SELECT 'x' WHERE 'a' = '$sql_where'" \
  -c "CREATE ROLE wasmtap_r LOGIN PASSWORD '$sql_role'" \
  -c "ALTER ROLE wasmtap_r PASSWORD '$sql_alter'" \
  -c "SELECT 1 AS a -- it's a comment with an apostrophe $sql_in_comment
, '$sql_comment' AS b /* $sql_in_comment */" \
  -c "SELECT E'it\\'s $sql_escaped' AS e, 'don''t $sql_doubled' AS d, \$q\$$sql_dollar\$q\$ AS q" \
  -c "SELECT s FROM wasmtap_s" >"$dir/psql.out" || fail "psql: $(cat "$dir/psql.out")"
grep -q "$sql_insert" "$dir/psql.out" || fail "psql output lacks the inserted row"
# The server echoes the literal in its error: invalid input syntax for type integer: "...".
if timeout 30 psql -X -q -c "SELECT '$sql_error'::int" >"$dir/psql-err.out" 2>&1; then
  fail "the failing statement succeeded"
fi
grep -q "$sql_error" "$dir/psql-err.out" || fail "psql error: $(cat "$dir/psql-err.out")"

# --- PostgreSQL, extended protocol: Parse with a literal, Bind with a parameter.
timeout 30 python3 - "$pg_port" "$pg_login" "$sql_parse" "$sql_bind" <<'PY' || fail "extended-protocol client"
import socket, struct, sys
port, password, literal, param = sys.argv[1:5]
s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
def recvn(n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("server closed")
        buf += chunk
    return buf
def recv():
    head = recvn(5)
    return head[:1], recvn(struct.unpack("!I", head[1:])[0] - 4)
def msg(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body
params = b"user\0postgres\0database\0postgres\0\0"
s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
while True:
    kind, body = recv()
    if kind == b"R":
        code = struct.unpack("!I", body[:4])[0]
        if code == 3:
            s.sendall(msg(b"p", password.encode() + b"\0"))
        elif code != 0:
            sys.exit(f"unexpected authentication request {code}")
    elif kind == b"E":
        sys.exit(f"login failed: {body!r}")
    elif kind == b"Z":
        break
sql = f"SELECT $1::text AS p, '{literal}' AS l".encode()
p = param.encode()
s.sendall(msg(b"P", b"\0" + sql + b"\0" + struct.pack("!H", 0))
          + msg(b"B", b"\0\0" + struct.pack("!HHI", 0, 1, len(p)) + p + struct.pack("!H", 0))
          + msg(b"E", b"\0" + struct.pack("!I", 0))
          + msg(b"S", b""))
rows = []
while True:
    kind, body = recv()
    if kind == b"E":
        sys.exit(f"query failed: {body!r}")
    if kind == b"D":
        rows.append(body)
    if kind == b"Z":
        break
s.sendall(msg(b"X", b""))
s.close()
if len(rows) != 1 or p not in rows[0] or literal.encode() not in rows[0]:
    sys.exit(f"unexpected rows {rows!r}")
PY

sleep 0.5
kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; cap_pid=
