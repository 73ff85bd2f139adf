#!/usr/bin/env python3
"""A Kafka client and a broker stub, both made of kafka-python's protocol code.

The client drives kafka-python's own client protocol (`KafkaProtocol`: request
headers, correlation ids, framing, response parsing) through ApiVersions (v3,
a flexible version), Metadata, Produce with acks 0, 1 and all, ListOffsets,
Fetch (records built by kafka-python's MemoryRecordsBuilder), and a consumer
group's coordination (FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
OffsetCommit, OffsetFetch, LeaveGroup), pipelining several requests per
round. The stub answers with kafka-python's Response structs, including
error responses, and logs one JSON line per request it received:
{"api", "version", "correlation", "error" (null for success, absent when no
response is sent), "records"}.

Usage: kafka_peer.py PORT LOG [ROUNDS=3]   (127.0.0.1; exits when done)
"""
import importlib
import io
import json
import pkgutil
import socket
import struct
import sys
import threading

import kafka.protocol as kp
from kafka.protocol.api import Request
from kafka.protocol.parser import KafkaProtocol
from kafka.record.memory_records import MemoryRecordsBuilder

REQUESTS = {}
for m in pkgutil.iter_modules(kp.__path__):
    mod = importlib.import_module("kafka.protocol." + m.name)
    for n in dir(mod):
        c = getattr(mod, n)
        if isinstance(c, type) and issubclass(c, Request) and c is not Request:
            try:
                REQUESTS[(c.API_KEY, c.API_VERSION)] = c
            except Exception:
                pass


def req(key, version, *fields):
    return REQUESTS[(key, version)](*fields)


def records(n, seed):
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    for i in range(n):
        b.append(timestamp=1700000000000 + i, key=None, value=b"event-%d-%d" % (seed, i), headers=[])
    b.close()
    return bytes(b.buffer())


UNKNOWN_TOPIC, OFFSET_OUT_OF_RANGE, REBALANCE = 3, 1, 27


def respond(key, version, body, log):
    """The response (a Response struct) to a decoded request, or None."""
    rt = REQUESTS[(key, version)].RESPONSE_TYPE
    entry = {"api": key, "version": version}
    err = None
    if key == 18:  # ApiVersions
        apis = [(k, 0, max(v for (kk, v) in REQUESTS if kk == k), {}) for k in (0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18)]
        r = rt(0, apis, 0, {})
    elif key == 3:  # Metadata: "missing" is unknown
        topics = []
        for t in body.topics or []:
            if t == "missing":
                err = UNKNOWN_TOPIC
                topics.append((UNKNOWN_TOPIC, t, False, []))
            else:
                topics.append((0, t, False, [(0, 0, 1, [1], [1])]))
        r = rt([(1, "127.0.0.1", 9092, None)], 1, topics)
    elif key == 0:  # Produce
        if body.required_acks == 0:
            entry["records"] = sum(count(p[1]) for t in body.topics for p in t[1])
            log.append(entry)
            return None
        out = []
        n = 0
        for topic, parts in body.topics:
            code = UNKNOWN_TOPIC if topic == "missing" else 0
            if code:
                err = code
            out.append((topic, [(p, code, 42, -1) for p, recs in parts]))
            n += sum(count(recs) for _, recs in parts)
        entry["records"] = n
        r = rt(out, 0)
    elif key == 2:  # ListOffsets
        r = rt([(t, [(p, 0, -1, 100) for p, _ in parts]) for t, parts in body.topics])
    elif key == 1:  # Fetch: offset 999 is out of range
        topics = []
        n = 0
        for t, parts in body.topics:
            ps = []
            for p, offset, _ in parts:
                if offset == 999:
                    err = OFFSET_OUT_OF_RANGE
                    ps.append((p, OFFSET_OUT_OF_RANGE, 100, 100, [], b""))
                else:
                    recs = records(5, offset)
                    n += 5
                    ps.append((p, 0, 100, 100, [], recs))
            topics.append((t, ps))
        entry["records"] = n
        r = rt(0, topics)
    elif key == 10:  # FindCoordinator
        r = rt(0, 0, None, 1, "127.0.0.1", 9092)
    elif key == 11:  # JoinGroup: group "busy" is rebalancing
        err = REBALANCE if body.group == "busy" else None
        r = rt(0, err or 0, 1, "range", "m-1", "m-1", [])
    elif key == 14:  # SyncGroup
        r = rt(0, 0, b"")
    elif key == 12:  # Heartbeat: generation 2 is rebalancing
        err = REBALANCE if body.generation_id == 2 else None
        r = rt(0, err or 0)
    elif key == 8:  # OffsetCommit
        r = rt([(t, [(p[0], 0) for p in parts]) for t, parts in body.topics])
    elif key == 9:  # OffsetFetch
        r = rt([(t, [(p, 7, "", 0) for p in parts]) for t, parts in body.topics])
    elif key == 13:  # LeaveGroup
        r = rt(0, 0)
    else:
        raise ValueError("stub does not answer api %d" % key)
    entry["error"] = err
    log.append(entry)
    return r


def count(recs):
    """Records in a v2 record set (batches' record counts)."""
    n, pos = 0, 0
    while pos + 61 <= len(recs):
        (length,) = struct.unpack_from(">i", recs, pos + 8)
        (c,) = struct.unpack_from(">i", recs, pos + 57)
        n += c
        pos += 12 + length
    return n


def serve(sock, log, done):
    conn, _ = sock.accept()
    buf = b""
    with conn:
        while True:
            while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
                data = conn.recv(65536)
                if not data:
                    done.set()
                    return
                buf += data
            (size,) = struct.unpack(">i", buf[:4])
            frame, buf = buf[4:4 + size], buf[4 + size:]
            key, version, corr, clen = struct.unpack(">hhih", frame[:10])
            body = io.BytesIO(frame[10 + max(clen, 0):])
            cls = REQUESTS[(key, version)]
            if cls.FLEXIBLE_VERSION:
                from kafka.protocol.types import TaggedFields
                TaggedFields.decode(body)
            r = respond(key, version, cls.decode(body), log)
            log[-1]["correlation"] = corr
            if r is None:
                continue
            hdr = struct.pack(">i", corr)  # ApiVersions: always header v0 (KIP-511)
            if r.FLEXIBLE_VERSION and key != 18:
                hdr += b"\x00"  # an empty tagged-field section
            msg = hdr + r.encode()
            conn.sendall(struct.pack(">i", len(msg)) + msg)


def client(port, rounds):
    s = socket.create_connection(("127.0.0.1", port))
    proto = KafkaProtocol(client_id="wasmtap-test")
    pending = 0

    def send(*requests):
        nonlocal pending
        for r in requests:
            proto.send_request(r)
            pending += 1 if r.expect_response() else 0
        s.sendall(proto.send_bytes())

    def drain():
        nonlocal pending
        while pending:
            for _corr, _resp in proto.receive_bytes(s.recv(65536)):
                pending -= 1

    send(req(18, 3, "wasmtap-test", "1.0", {}))
    drain()
    for i in range(rounds):
        send(req(3, 1, ["orders", "payments", "missing"]))
        drain()
        # Produce: acks 1, all (-1), 0 (no response), and to an unknown topic.
        send(
            req(0, 3, None, 1, 5000, [("orders", [(0, records(3, i))])]),
            req(0, 3, None, -1, 5000, [("payments", [(0, records(2, i))]), ("orders", [(0, records(1, i))])]),
            req(0, 3, None, 0, 5000, [("orders", [(0, records(4, i))])]),
            req(0, 3, None, 1, 5000, [("missing", [(0, records(1, i))])]),
        )
        drain()
        send(req(2, 1, -1, [("orders", [(0, -1)])]))
        drain()
        send(
            req(1, 4, -1, 100, 1, 1 << 20, 0, [("orders", [(0, 10 * i, 1 << 20)])]),
            req(1, 4, -1, 100, 1, 1 << 20, 0, [("orders", [(0, 999, 1 << 20)])]),
        )
        drain()
        group = "busy" if i == 1 else "billing"
        send(req(10, 1, group, 0))
        drain()
        send(req(11, 2, group, 10000, 30000, "", "consumer", [("range", b"")]))
        drain()
        send(
            req(14, 1, group, 1, "m-1", []),
            req(12, 1, group, 1, "m-1"),
            req(12, 1, group, 2, "m-1"),
            req(8, 2, group, 1, "m-1", -1, [("orders", [(0, 10, "")])]),
            req(9, 1, group, [("orders", [0])]),
        )
        drain()
        send(req(13, 1, group, "m-1"))
        drain()
    s.close()


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    log, done = [], threading.Event()
    t = threading.Thread(target=serve, args=(sock, log, done), daemon=True)
    t.start()
    client(port, rounds)
    done.wait(10)
    with open(path, "w") as f:
        for e in log:
            f.write(json.dumps(e) + "\n")


if __name__ == "__main__":
    main()
