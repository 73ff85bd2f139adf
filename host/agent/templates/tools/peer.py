#!/usr/bin/env python3
"""A server and a client of the template's protocol, to make live traffic.

  python3 tools/peer.py server PORT            answers until killed
  python3 tools/peer.py client PORT [N] [CONNECTIONS]

Frames are a 4-byte big-endian length and a text body: `REQ <id> <op> <key>`
from the client, `RES <id> <status>` from the server. The server answers each
request after a random 0-20 ms, so pipelined requests are answered out of
order: `get` with OK or NOTFOUND, `put` with OK, `del` with DENIED. The client
sends N requests (default 30) over CONNECTIONS connections (default 3), a few
at a time without waiting, and prints one line per exchange: `<id> <op>
<status>`. It exits 0 when every request was answered. Edit both into your
protocol's: they are how you see your decoder work on a live agent.
"""
import random
import socket
import struct
import sys
import threading
import time


def read_frame(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return body.decode()


def frame(text):
    body = text.encode()
    return struct.pack(">I", len(body)) + body


def serve(conn):
    lock = threading.Lock()
    timers = []

    def answer(data):
        with lock:
            try:
                conn.sendall(data)
            except OSError:
                pass

    while True:
        msg = read_frame(conn)
        if msg is None:
            break
        _, rid, op, key = (msg.split() + ["", "", ""])[:4]
        if not rid.isdecimal() or not rid.isascii():
            continue  # not a request of this protocol: no answer
        status = {"get": "OK" if int(rid) % 2 else "NOTFOUND", "put": "OK"}.get(op, "DENIED")
        t = threading.Timer(random.uniform(0, 0.02), answer, [frame(f"RES {rid} {status}")])
        t.start()
        timers = [x for x in timers if x.is_alive()] + [t]
    for t in timers:
        t.join()
    conn.close()


def server(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(16)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def client(port, n, conns):
    ops = ["get", "put", "del"]
    results, errors = [], []

    def run(c):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            ids = list(range(c + 1, n + 1, conns))
            while ids:
                batch, ids = ids[:3], ids[3:]
                sent = {}
                for rid in batch:
                    op = ops[rid % 3]
                    sent[str(rid)] = op
                    sock.sendall(frame(f"REQ {rid} {op} user:{rid}"))
                while sent:
                    msg = read_frame(sock)
                    if msg is None:
                        raise ConnectionError("server closed")
                    _, rid, status = msg.split()
                    results.append((int(rid), sent.pop(rid), status))
            sock.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"connection {c}: {e}")

    threads = [threading.Thread(target=run, args=(c,)) for c in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rid, op, status in sorted(results):
        print(rid, op, status)
    for e in errors:
        print(e, file=sys.stderr)
    return 0 if len(results) == n and not errors else 1


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) >= 2 and a[0] == "server":
        server(int(a[1]))
    elif len(a) >= 2 and a[0] == "client":
        sys.exit(client(int(a[1]), int(a[2]) if len(a) > 2 else 30, int(a[3]) if len(a) > 3 else 3))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
