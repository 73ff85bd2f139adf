#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets (tests/fuzz/corpus/<target>/seed-*)
from the bundled captures, in each target's input format (tests/fuzz/src/lib.rs):

- frames: the first frames of every capture whose link type the target knows,
  as [link selector][ts delta i16 ms][len u16][frame]...;
- a decoder: the first TCP stream with payload of a capture of its protocol,
  as [split seed][op][len u16][bytes]... (op 0: to the server, 1: to the client).

Usage: scripts/fuzz-seeds.py [OUT_DIR=tests/fuzz/corpus]  (needs tshark, editcap)
"""
import glob, os, struct, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests/fuzz/corpus")
LINKS = [1, 101, 113, 276, 0, 108, 239, 12]
PROTOCOLS = {  # target: (capture directory, server ports)
    "amqp": ("amqp", {5672}), "dns": ("dns", {53}), "http1": ("http", {80, 8080}),
    "http2": ("http2", None), "iso8583": ("iso8583", None), "kafka": ("kafka", {9092}),
    "memcached": ("memcached", {11211}), "mongodb": ("mongodb", {27017}),
    "mysql": ("mysql", {3306}), "pgsql": ("pgsql", {5432}), "redis": ("redis", {6379}),
    "tls": ("tls", {443}),
}

def pcap_records(path):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.pcap")
        subprocess.run(["editcap", "-F", "pcap", path, p], check=True, capture_output=True)
        data = open(p, "rb").read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    link = struct.unpack(endian + "I", data[20:24])[0]
    pos, recs = 24, []
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        ts = sec * 1000 + (frac // 1_000_000 if nano else frac // 1000)
        recs.append((ts, data[pos + 16:pos + 16 + incl]))
        pos += 16 + incl
    return link, recs

def write(target, name, blob):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "seed-" + name), "wb").write(blob)

for path in sorted(glob.glob(os.path.join(root, "tests/pcaps/*/*.pcap*"))):
    try:
        link, recs = pcap_records(path)
    except subprocess.CalledProcessError:
        continue
    if link not in LINKS:
        continue
    blob, last = bytes([LINKS.index(link)]), None
    for ts, frame in recs[:64]:
        frame = frame[:2047]
        delta = 0 if last is None else max(-32768, min(32767, ts - last))
        last = ts
        blob += struct.pack(">hH", delta, len(frame)) + frame
        if len(blob) > 8192:
            break
    write("frames", os.path.basename(path), blob)

for target, (directory, ports) in PROTOCOLS.items():
    for path in sorted(glob.glob(os.path.join(root, "tests/pcaps", directory, "*.pcap*")))[:4]:
        r = subprocess.run(["tshark", "-r", path, "-Y", "tcp.len > 0", "-T", "fields",
                            "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.dstport",
                            "-e", "tcp.payload"], capture_output=True, text=True)
        rows = [l.split("\t") for l in r.stdout.splitlines() if l.count("\t") == 3]
        if not rows:
            continue
        stream, first_src, first_dst = rows[0][0], int(rows[0][1]), int(rows[0][2])
        server = first_dst if ports is None or first_dst in ports or first_src not in ports else first_src
        blob = bytes([7])
        for s, src, dst, payload in rows:
            if s != stream or not payload:
                continue
            b = bytes.fromhex(payload.replace(":", ""))[:4095]
            op = 0 if int(dst) == server else 1
            blob += bytes([op]) + struct.pack(">H", len(b)) + b
            if len(blob) > 8192:
                break
        write(target, os.path.basename(path), blob + bytes([3]))
