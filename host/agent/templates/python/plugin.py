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


def looks_like_frame(data):
    """A whole frame whose body starts like a message of this protocol."""
    try:
        frames, _ = wasmtap.length_prefixed(data[: 4 + MAX_FRAME], max_len=MAX_FRAME)
    except DecodeError:
        return False
    return bool(frames) and frames[0][1][:4] in (b"REQ ", b"RES ")


class Flow(Session):
    """Per-flow state (`self.lost`: the stream must be searched for a frame
    start, after a gap)."""

    def feed(self, direction, ts, data, out):
        used = 0
        if self.lost[direction.value]:
            # Resynchronise: the next place where a plausible frame starts.
            for i in range(max(0, len(data) - 8)):
                if looks_like_frame(data[i:]):
                    used = i
                    self.lost[direction.value] = False
                    break
            else:
                # Keep the last bytes: a frame may start in them.
                return max(0, len(data) - (MAX_FRAME + 4))
        try:
            frames, consumed = wasmtap.length_prefixed(data[used:], max_len=MAX_FRAME)
        except DecodeError as e:
            raise DecodeError(e.reason, used + e.offset)
        for offset, body in frames:
            m = message(direction, ts, body, 4 + len(body))
            if m is not None:
                out.append(m)
        return used + consumed


def message(direction, ts, body, size):
    """One frame's body as a message (None for a body this protocol does not know)."""
    words = body.decode("utf-8", "replace").split()
    if len(words) < 2 or not words[1].isdigit():
        return None
    if direction == Direction.TO_SERVER and words[0] == "REQ":
        op = words[2].upper() if len(words) > 2 else "UNKNOWN"
        m = Message.request(ts, ts, size, op).correlate(int(words[1]))
        if len(words) > 3:
            m.attr(KEY, words[3])
        return m
    if direction == Direction.TO_CLIENT and words[0] == "RES":
        status = words[2] if len(words) > 2 else ""
        m = Message.response(ts, ts, size).correlate(int(words[1]))
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
        return 90 if looks_like_frame(data) else 0


wasmtap.export(Plugin)
