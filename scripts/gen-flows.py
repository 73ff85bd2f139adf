#!/usr/bin/env python3
"""Writes a pcap of N TCP flows that stay open (a SYN each, 100 us apart), for
memory benchmarks: `one-service` (one client address to one server endpoint,
distinct client ports) or `scan` (every flow to a different server address).

Usage: scripts/gen-flows.py N one-service|scan OUT.pcap
Then: /usr/bin/time -f '%M KB' target/release/wasmtap replay OUT.pcap --format none
"""
import struct
import sys


def checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def syn(src, dst, sport, dport, seq) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, bytes(src), bytes(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return b"\x00\x01\x02\x03\x04\x05\x00\x01\x02\x03\x04\x06\x08\x00" + ip + tcp


def main() -> None:
    n, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if mode not in ("one-service", "scan"):
        sys.exit("mode: one-service or scan")
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(n):
            if mode == "one-service":
                p = syn([10, 0, 0, 1], [10, 0, 0, 2], 1024 + i % 64000, 80, i * 1000)
            else:
                p = syn([10, 0, 0, 1], [10, 1, (i >> 8) & 255, i & 255], 40000, 80, i * 1000)
            ts = 1_700_000_000_000_000 + i * 100
            f.write(struct.pack("<IIII", ts // 10**6, ts % 10**6, len(p), len(p)) + p)


if __name__ == "__main__":
    main()
