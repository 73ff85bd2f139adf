#!/usr/bin/env python3
"""ISO 8583 acquirer client and issuer server on loopback, built on pyiso8583.

Usage:
  iso8583_peer.py server PORT FRAMING ENCODING
  iso8583_peer.py client PORT FRAMING ENCODING LOG.jsonl CONNECTIONS N [SEED]

FRAMING
  bin2      2-byte big-endian length of the message that follows
  bin2le    2-byte little-endian length of the message that follows
  ascii4    4 ASCII decimal digits: length of the message that follows
  bin2tpdu  2-byte big-endian length, then a 5-byte TPDU (0x60, destination 2
            bytes, source 2 bytes; the server swaps them in its reply), then the
            message; the length counts the TPDU too
ENCODING
  ascii     iso8583.specs.default_ascii: everything ASCII, bitmaps as hex text
  binary    iso8583.specs.default: MTI and data ASCII, bitmaps and field 52/55 raw
  bcd       derived from iso8583.specs.default: MTI, n fields and LL/LLL length
            prefixes packed BCD, bitmaps raw, text fields ASCII (see bcd_spec)
  ebcdic    derived from iso8583.specs.default: MTI, lengths, numbers and text
            in EBCDIC code page 037 (Python's cp037 codec), bitmaps and binary
            fields raw, as IBM hosts send them
  binary93  ISO 8583:1993: iso8583.specs.default with the 1993 definitions of
            the fields used here (spec93); MTIs 1xxx, 3-digit action codes,
            network management by function code (field 24)

The server (issuer) answers every request after a random 0-30 ms delay, so a
pipelining client sees responses out of order. The client (acquirer) opens
CONNECTIONS connections, pipelines its share of N requests on each, matches
responses by (field 11 STAN, field 41 terminal), writes one JSON line per
completed exchange to LOG.jsonl (sorted by STAN) and exits 0 only if every
request was answered.

The address is 127.0.0.1, or $PEER_HOST (the server binds it, the client
connects to it).
"""
import copy
import datetime
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time

import iso8583
import iso8583.specs

FRAMINGS = ("bin2", "bin2le", "ascii4", "bin2tpdu")
HOST = os.environ.get("PEER_HOST", "127.0.0.1")


# ---------------------------------------------------------------- specs

# ISO 8583:1987 numeric (n) fields of iso8583.specs.default: fixed length in digits.
N_FIXED = {3: 6, 4: 12, 5: 12, 6: 12, 7: 10, 8: 8, 9: 8, 10: 8, 11: 6, 12: 6, 13: 4,
           14: 4, 15: 4, 16: 4, 17: 4, 18: 4, 19: 3, 20: 3, 21: 3, 22: 3, 23: 3, 24: 3,
           25: 2, 26: 2, 27: 1, 70: 3, 90: 42}
# Numeric LLVAR fields: maximum digits.
N_LLVAR = {2: 19, 32: 11, 33: 11}


def bcd_spec():
    spec = copy.deepcopy(iso8583.specs.default)
    # Every variable-length prefix becomes packed BCD: LL = 1 byte, LLL = 2 bytes.
    for key, f in spec.items():
        if key in ("h", "t", "p", "1"):
            continue
        if f["len_type"] in (2, 3, 4):
            f["len_enc"] = "bcd"
            f["len_type"] = {2: 1, 3: 2, 4: 2}[f["len_type"]]
    # MTI: 2 bytes packed BCD.
    spec["t"] = {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 2,
                 "desc": "Message Type (BCD)"}
    # n fields: packed BCD, odd digit counts left-padded with a 0 nibble;
    # LLVAR lengths count digits (nibbles), not bytes.
    for num, digits in N_FIXED.items():
        spec[str(num)].update({"data_enc": "b", "len_enc": "bcd", "len_type": 0,
                               "max_len": digits, "len_count": "nibbles", "left_pad": "0"})
    for num, digits in N_LLVAR.items():
        spec[str(num)].update({"data_enc": "b", "len_enc": "bcd", "len_type": 1,
                               "max_len": digits, "len_count": "nibbles", "left_pad": "0"})
    return spec


def ebcdic_spec():
    spec = copy.deepcopy(iso8583.specs.default)
    for f in spec.values():
        if f["data_enc"] == "ascii":
            f["data_enc"] = "cp037"
        if f["len_enc"] == "ascii":
            f["len_enc"] = "cp037"
    return spec


def spec93():
    """The ISO 8583:1993 lengths of the fields this peer sends (as jPOS's
    ISO93APackager defines them) over iso8583.specs.default's encodings."""
    spec = copy.deepcopy(iso8583.specs.default)
    spec["12"].update({"max_len": 12, "desc": "Date and time, local transaction"})
    spec["22"].update({"data_enc": "ascii", "len_type": 0, "max_len": 12,
                       "desc": "Point of service data code"})
    spec["24"].update({"max_len": 3, "desc": "Function code"})
    spec["39"].update({"max_len": 3, "desc": "Action code"})
    spec["56"].update({"len_type": 2, "max_len": 35, "desc": "Original data elements"})
    return spec


def spec_for(encoding):
    if encoding == "ascii":
        return iso8583.specs.default_ascii
    if encoding == "binary":
        return iso8583.specs.default
    if encoding == "bcd":
        return bcd_spec()
    if encoding == "ebcdic":
        return ebcdic_spec()
    if encoding == "binary93":
        return spec93()
    raise SystemExit(f"iso8583_peer: unknown encoding {encoding!r} "
                     "(ascii, binary, bcd, ebcdic, binary93)")


# ---------------------------------------------------------------- framing

def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise ConnectionError(f"connection closed inside a frame ({len(buf)}/{n} bytes)")
            return None
        buf += chunk
    return bytes(buf)


def read_frame(sock, framing):
    """Returns (tpdu or None, message bytes), or None at a clean end of stream."""
    if framing == "ascii4":
        hdr = recv_exact(sock, 4)
        if hdr is None:
            return None
        if not hdr.isdigit():
            raise ValueError(f"bad ascii4 length header {hdr!r}")
        n = int(hdr)
    else:
        hdr = recv_exact(sock, 2)
        if hdr is None:
            return None
        (n,) = struct.unpack("<H" if framing == "bin2le" else ">H", hdr)
    body = recv_exact(sock, n)
    if body is None:
        raise ConnectionError("connection closed after a length header")
    if framing == "bin2tpdu":
        if n < 5 or body[0] != 0x60:
            raise ValueError(f"bad TPDU {body[:5].hex()}")
        return body[:5], body[5:]
    return None, body


def frame(msg, framing, tpdu=None):
    msg = bytes(msg)
    if framing == "bin2":
        return struct.pack(">H", len(msg)) + msg
    if framing == "bin2le":
        return struct.pack("<H", len(msg)) + msg
    if framing == "ascii4":
        if len(msg) > 9999:
            raise ValueError("message too long for ascii4 framing")
        return b"%04d" % len(msg) + msg
    if framing == "bin2tpdu":
        return struct.pack(">H", len(tpdu) + len(msg)) + tpdu + msg
    raise SystemExit(f"iso8583_peer: unknown framing {framing!r} ({', '.join(FRAMINGS)})")


# ---------------------------------------------------------------- issuer

ECHO_FIELDS = ("2", "3", "4", "7", "11", "12", "13", "24", "32", "37", "41", "42", "49",
               "70")
CODES = ("00", "00", "00", "00", "00", "51", "51", "55", "91", "96")
# ISO 8583:1993 action codes: approved, insufficient funds, incorrect PIN,
# system malfunction, issuer unavailable.
CODES93 = ("000", "000", "000", "000", "000", "116", "116", "117", "909", "912")


def response_code(mti, stan):
    if mti == "0800":
        return "00"
    if mti == "1804":
        return "800"
    h = hashlib.sha256(stan.encode()).digest()
    codes = CODES93 if mti.startswith("1") else CODES
    return codes[h[0] % len(codes)]


def serve_conn(conn, framing, spec, rng_seed):
    rng = random.Random(rng_seed)
    lock = threading.Lock()
    timers = []
    try:
        while True:
            got = read_frame(conn, framing)
            if got is None:
                break
            tpdu, msg = got
            req, _ = iso8583.decode(bytearray(msg), spec)
            mti = req["t"]
            rsp = {"t": "%04d" % (int(mti) + 10)}

            for k in ECHO_FIELDS:
                if k in req:
                    rsp[k] = req[k]
            rsp["39"] = response_code(mti, req.get("11", ""))
            out, _ = iso8583.encode(rsp, spec)
            rtpdu = None
            if tpdu is not None:
                rtpdu = tpdu[:1] + tpdu[3:5] + tpdu[1:3]  # swap destination and source
            data = frame(out, framing, rtpdu)

            def send(data=data):
                with lock:
                    try:
                        conn.sendall(data)
                    except OSError:
                        pass

            t = threading.Timer(rng.uniform(0.0, 0.030), send)
            t.start()
            timers.append(t)
    except Exception as e:  # noqa: BLE001 - report and drop the connection
        print(f"iso8583_peer server: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        for t in timers:
            t.join()
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.close()


def server(port, framing, encoding):
    spec = spec_for(encoding)
    frame(b"", framing, b"\x60\0\0\0\0")  # validates FRAMING
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, port))
    ls.listen(64)
    n = 0
    while True:
        conn, _ = ls.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n += 1
        threading.Thread(target=serve_conn, args=(conn, framing, spec, n), daemon=True).start()


# ---------------------------------------------------------------- acquirer

BINS = (("476134", 16), ("476134", 16), ("541333", 16), ("400000", 16),
        ("374245", 15), ("622126", 19))
KINDS = ("auth", "auth", "purchase", "purchase", "purchase", "cash", "cash",
         "reversal", "advice", "echo")
MTI = {"auth": "0100", "purchase": "0200", "cash": "0200", "reversal": "0400",
       "advice": "0420", "echo": "0800"}
MCCS = ("5411", "5812", "5541", "5999", "4111")


def luhn_complete(prefix):
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return prefix + str((10 - total % 10) % 10)


def make_pan(rng):
    bin6, length = rng.choice(BINS)
    body = bin6 + "".join(rng.choice("0123456789") for _ in range(length - 7))
    return luhn_complete(body)


def icc_data(rng, amount, now):
    tlv = [("9F26", rng.randbytes(8)), ("9F27", b"\x80"),
           ("9F10", bytes.fromhex("06010A03A00000")), ("9F37", rng.randbytes(4)),
           ("9F36", rng.randbytes(2)), ("95", bytes(5)),
           ("9A", bytes.fromhex(now.strftime("%y%m%d"))), ("9C", b"\x00"),
           ("9F02", bytes.fromhex(amount)), ("5F2A", bytes.fromhex("0978")),
           ("82", bytes.fromhex("3900")), ("9F1A", bytes.fromhex("0250"))]
    return "".join(tag + "%02X" % len(v) + v.hex().upper() for tag, v in tlv)


def make_request(rng, kind, stan, terminal, merchant, acquirer, now, v93=False):
    mti = MTI[kind]
    if v93:
        mti = "1804" if kind == "echo" else "1" + mti[1:]
    req = {"t": mti, "7": now.strftime("%m%d%H%M%S"), "11": stan, "41": terminal}
    if kind == "echo":
        if v93:
            req["24"] = "831"
        else:
            req["70"] = "301"
        return req
    pan = make_pan(rng)
    amount = "%012d" % (rng.randrange(100, 500000) if kind != "cash" else rng.randrange(1, 40) * 1000)
    chip = kind in ("auth", "purchase", "cash") and rng.random() < 0.5
    req.update({
        "2": pan,
        "3": "010000" if kind == "cash" else "000000",
        "4": amount,
        "12": now.strftime("%y%m%d%H%M%S" if v93 else "%H%M%S"),
        "13": now.strftime("%m%d"),
        "18": "6011" if kind == "cash" else rng.choice(MCCS),
        "22": ("051" if chip else "021") if kind == "cash" else ("051" if chip else "901"),
        **({"22": "51010151134C" if chip else "21010121134C",
            "24": "200" if mti[1] == "2" else "100"} if v93 else {}),
        "32": acquirer,
        "37": now.strftime("%y%j")[1:] + now.strftime("%H") + stan,
        "42": merchant,
        "49": "978",
    })
    if kind in ("auth", "purchase", "cash"):
        disc = "".join(rng.choice("0123456789") for _ in range(rng.randrange(5, 30 - len(pan))))
        req["35"] = pan + "=" + rng.choice(("2512", "2607", "2811")) + "201" + disc
    if kind == "cash":
        req["52"] = rng.randbytes(8).hex().upper()
    if chip:
        req["55"] = icc_data(rng, amount, now)
    if kind in ("reversal", "advice"):
        # Original data elements: MTI, STAN, transmission date/time, acquirer, forwarder.
        orig_stan = "%06d" % ((int(stan) + 500000) % 1000000)
        if v93:
            req["56"] = "1200" + orig_stan + now.strftime("%y%m%d%H%M%S")
            req["24"] = "400"
        else:
            req["90"] = "0200" + orig_stan + req["7"] + acquirer.rjust(11, "0") + "0" * 11
    return req


def masked(pan):
    return pan[:6] + "******" + pan[-4:] if pan else None


def run_connection(idx, port, framing, spec, jobs, seed, results, errors):
    rng = random.Random(seed * 1000 + idx)
    tpdu = bytes([0x60, 0x00, 0x03, 0x00, idx + 1])  # destination NII 003, source = connection
    want_tpdu = bytes([0x60, 0x00, idx + 1, 0x00, 0x03])
    try:
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = {}
        i = 0
        while i < len(jobs):
            window = jobs[i:i + rng.randint(1, 6)]
            i += len(window)
            burst = bytearray()
            for req in window:
                pending[(req["11"], req["41"])] = req
                enc, _ = iso8583.encode(dict(req), spec)
                data = frame(enc, framing, tpdu)
                style = rng.random()
                if style < 0.4:
                    burst += data  # several messages in one write
                    continue
                if burst:
                    sock.sendall(burst)
                    burst = bytearray()
                if style < 0.55:
                    # header and start of the message in one write, the rest in another
                    cut = rng.randint(1, len(data) - 1)
                    sock.sendall(data[:cut])
                    time.sleep(0.002)
                    sock.sendall(data[cut:])
                else:
                    sock.sendall(data)
            if burst:
                sock.sendall(burst)
            while pending:
                got = read_frame(sock, framing)
                if got is None:
                    raise ConnectionError(f"server closed with {len(pending)} requests unanswered")
                rtpdu, msg = got
                if framing == "bin2tpdu" and rtpdu != want_tpdu:
                    raise ValueError(f"TPDU {rtpdu.hex()} not swapped (want {want_tpdu.hex()})")
                rsp, _ = iso8583.decode(bytearray(msg), spec)
                key = (rsp.get("11"), rsp.get("41"))
                req = pending.pop(key, None)
                if req is None:
                    raise ValueError(f"response for unknown STAN/terminal {key}")
                if int(rsp["t"]) != int(req["t"]) + 10:
                    raise ValueError(f"response MTI {rsp['t']} to request {req['t']}")
                results.append({
                    "request_mti": req["t"],
                    "response_mti": rsp["t"],
                    "stan": req["11"],
                    "processing_code": req.get("3"),
                    "amount": req.get("4"),
                    "currency": req.get("49"),
                    "response_code": rsp.get("39"),
                    "pan_masked": masked(req.get("2")),
                    "terminal": req["41"],
                    "acquirer": req.get("32"),
                    "merchant": req.get("42"),
                    "mcc": req.get("18"),
                })
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
        sock.close()
    except Exception as e:  # noqa: BLE001
        errors.append(f"connection {idx}: {type(e).__name__}: {e}")


def client(port, framing, encoding, log_path, connections, n, seed=1):
    spec = spec_for(encoding)
    frame(b"", framing, b"\x60\0\0\0\0")  # validates FRAMING
    rng = random.Random(seed)
    now = datetime.datetime.now()
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    rng.shuffle(kinds)
    first_stan = rng.randrange(1, 900000)
    per_conn = [[] for _ in range(connections)]
    # Each connection is one acquirer link carrying two terminals.
    acquirers = ("123456", "4761340", "10000000001")
    for i, kind in enumerate(kinds):
        c = i % connections
        t = (i // connections) % 2
        terminal = "T%03d%04d" % (c + 1, t + 1)
        merchant = "MERCH%05d%05d" % (c + 1, t + 1)
        stan = "%06d" % (first_stan + i)
        per_conn[c].append(make_request(rng, kind, stan, terminal, merchant,
                                        acquirers[c % len(acquirers)], now,
                                        v93=encoding == "binary93"))
    results, errors = [], []
    threads = [threading.Thread(target=run_connection,
                                args=(c, port, framing, spec, per_conn[c], seed, results, errors))
               for c in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.sort(key=lambda r: r["stan"])
    with open(log_path, "w") as f:
        for r in results:
            f.write(json.dumps(r, sort_keys=False) + "\n")
    for e in errors:
        print(f"iso8583_peer client: {e}", file=sys.stderr)
    if errors or len(results) != n:
        print(f"iso8583_peer client: {len(results)}/{n} exchanges completed", file=sys.stderr)
        return 1
    return 0


def main(argv):
    if len(argv) >= 4 and argv[0] == "server":
        server(int(argv[1]), argv[2], argv[3])
        return 0
    if len(argv) in (7, 8) and argv[0] == "client":
        seed = int(argv[7]) if len(argv) == 8 else 1
        return client(int(argv[1]), argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]), seed)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
