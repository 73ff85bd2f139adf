#!/usr/bin/env python3
"""A gRPC server and client made of grpcio (raw bytes, no generated code).

Methods of service demo.Echo: Unary (a request "fail:<CODE>" is aborted
with that status), ServerStream (answers with as many messages as the
request's number), ClientStream (counts what it got), Bidi (echoes each
message), Late (used only after the capture starts, in mid mode). The
client makes unary, streaming and bidi calls, some failing with chosen
codes, many of them concurrently on one channel, and logs one JSON line per
call: {"method", "code", "requests", "responses"}.

Usage: grpc_peer.py PORT LOG full
       grpc_peer.py PORT LOG mid SYNC_DIR   (warm-up calls, then touches
       SYNC_DIR/ready and waits for SYNC_DIR/go; only calls after it are logged)
"""
import json
import os
import sys
import time
from concurrent import futures

import grpc

SERVICE = "demo.Echo"


def unary(req, ctx):
    if req.startswith(b"fail:"):
        ctx.abort(getattr(grpc.StatusCode, req[5:].decode()), "asked to fail")
    return req


def server_stream(req, ctx):
    for i in range(int(req or b"1")):
        yield b"item-%d" % i


def client_stream(it, ctx):
    return b"%d" % sum(1 for _ in it)


def bidi(it, ctx):
    for m in it:
        yield m


def serve(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Late": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    s.add_insecure_port("127.0.0.1:%d" % port)
    s.start()
    return s


def calls(ch, log, rounds, late=False):
    path = lambda m: "/%s/%s" % (SERVICE, m)
    un = ch.unary_unary(path("Unary"))
    ss = ch.unary_stream(path("ServerStream"))
    cs = ch.stream_unary(path("ClientStream"))
    bd = ch.stream_stream(path("Bidi"))
    lt = ch.unary_unary(path("Late"))

    def record(method, code, requests, responses):
        if log is not None:
            log.append({"method": method, "code": code, "requests": requests, "responses": responses})

    for r in range(rounds):
        # Many unary calls at once on one channel (concurrent streams).
        futs = [(un.future(b"hello-%d" % i), "OK") for i in range(8)]
        for code in ("NOT_FOUND", "INTERNAL", "UNAVAILABLE", "INVALID_ARGUMENT"):
            futs.append((un.future(b"fail:" + code.encode()), code))
        for f, want in futs:
            try:
                f.result()
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            assert code == want, (code, want)
            record("Unary", code, 1, 1 if code == "OK" else 0)
        n = 3 + r
        got = list(ss(b"%d" % n))
        record("ServerStream", "OK", 1, len(got))
        cs(iter([b"a", b"b", b"c", b"d"]))
        record("ClientStream", "OK", 4, 1)
        got = list(bd(iter([b"x", b"y"])))
        record("Bidi", "OK", 2, len(got))
        if late:
            lt(b"late")
            record("Late", "OK", 1, 1)


def main():
    port, path, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    srv = serve(port)
    ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    grpc.channel_ready_future(ch).result(timeout=10)
    log = []
    if mode == "mid":
        sync = sys.argv[4]
        calls(ch, None, 2)  # warm the HPACK tables up, uncaptured
        open(os.path.join(sync, "ready"), "w").close()
        for _ in range(400):
            if os.path.exists(os.path.join(sync, "go")):
                break
            time.sleep(0.05)
        calls(ch, log, 2, late=True)
    else:
        calls(ch, log, 3)
    ch.close()
    srv.stop(0)
    with open(path, "w") as f:
        for e in log:
            f.write(json.dumps(e) + "\n")


if __name__ == "__main__":
    main()
