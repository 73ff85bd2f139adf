"""A wasmtap decoder for `{{name}}`, made by `wasmtap plugin new --lang python`.

The protocol it decodes as shipped (edit it into yours): frames of a 4-byte
big-endian length followed by that many bytes of text, `REQ <id> <operation>
<key>` from the client and `RES <id> <status>` from the server. Responses may
come in any order: the id pairs them (the host does the pairing; the decoder
only says which id a message carries). A status of `OK` or `NOTFOUND` is a
success, anything else an error.

`python3 -m unittest` runs the tests in tests/ natively (whole, byte by byte,
random splits). `wasmtap plugin build` makes the component (componentize-py);
`wasmtap plugin test` runs it on a capture.
"""

import wasmtap
from wasmtap import DecodeError, Direction, Message, Session

#: Largest frame accepted; a bigger length means the stream is not this protocol.
MAX_FRAME = 64 * 1024
#: Attribute keys, declared once (in `keys` below) and used by name.
KEY = "{{name}}.key"
#: The response's status word.
STATUS = "{{name}}.status"


def frame(data):
    """The frame at the start of `data`: `(body, size)` when whole, `None` when
    more bytes are needed; raises `DecodeError` on a length this protocol
    never sends (0, or above `MAX_FRAME`)."""
    if len(data) < 4:
        return None
    n = int.from_bytes(data[:4], "big")
    if n == 0 or n > MAX_FRAME:
        raise DecodeError("bad frame length", 0)
    if len(data) < 4 + n:
        return None
    return bytes(data[4:4 + n]), 4 + n


def plausible(data):
    """A whole frame at the start of `data` whose body starts like a message
    (checked in place: it runs at every offset while resynchronising)."""
    if len(data) < 8:
        return False
    n = int.from_bytes(data[:4], "big")
    return 4 <= n <= MAX_FRAME and len(data) >= 4 + n and data[4:8] in (b"REQ ", b"RES ")


class Flow(Session):
    """Per-flow state (`self.lost`: the stream of a direction must be searched
    for a frame start, after a gap)."""

    def feed(self, direction, ts, data, out):
        view = memoryview(data)
        used = 0
        d = direction.value
        if self.lost[d]:
            # Resynchronise: the next place where a plausible frame starts.
            for i in range(max(0, len(data) - 8)):
                if plausible(view[i:]):
                    used = i
                    self.lost[d] = False
                    break
            else:
                # Keep the last bytes: a frame may start in them.
                return max(0, len(data) - (MAX_FRAME + 4))
        while used < len(data):
            try:
                f = frame(view[used:])
            except DecodeError as e:
                raise DecodeError(e.reason, used)
            if f is None:
                break
            body, size = f
            used += size
            m = message(direction, ts, body, size)
            if m is not None:
                out.append(m)
        return used

    def gap(self, direction, length, out):
        self.lost[direction.value] = True


def ascii_id(word):
    """A request id: ASCII digits (an optional `+`), below 2**64; else None."""
    digits = word[1:] if word.startswith("+") else word
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    v = int(digits)
    return v if v < 1 << 64 else None


def message(direction, ts, body, size):
    """One frame's body as a message (None for a body this protocol does not know)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # ASCII whitespace only, as the Rust template splits.
    words = text.translate({9: 32, 10: 32, 12: 32, 13: 32}).split(" ")
    words = [w for w in words if w]
    if len(words) < 2:
        return None
    rid = ascii_id(words[1])
    if rid is None:
        return None
    if direction == Direction.TO_SERVER and words[0] == "REQ":
        op = words[2] if len(words) > 2 else "UNKNOWN"
        op = "".join(c.upper() if "a" <= c <= "z" else c for c in op)
        m = Message.request(ts, ts, size, op).correlate(rid)
        if len(words) > 3:
            m.attr(KEY, words[3])
        return m
    if direction == Direction.TO_CLIENT and words[0] == "RES":
        status = words[2] if len(words) > 2 else ""
        m = Message.response(ts, ts, size).correlate(rid)
        m.ok(status) if status in ("OK", "NOTFOUND") else m.error(status)
        return m.attr(STATUS, status)
    return None


class Plugin(wasmtap.Decoder):
    """What the decoder is."""

    name = "{{name}}"
    version = "0.1.0"
    protocols = ["{{name}}"]
    ports = [{{port}}]
    keys = [KEY, STATUS]
    session = Flow

    @staticmethod
    def probe(transport, direction, data):
        return 90 if plausible(data) else 0


wasmtap.export(Plugin)
