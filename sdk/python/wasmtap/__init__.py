"""The wasmtap decoder SDK for Python.

A decoder is a subclass of `Decoder` (what it is, and `probe`) naming a
subclass of `Session` (the state of one flow: `feed`, `gap`, `close`). The
module that defines them calls `export(TheDecoder)`. Everything here is
plain Python: the same code runs natively under `wasmtap.testing` and, built
by `wasmtap plugin build` (componentize-py), as a sandboxed component of the
`wasmtap:decoder` WIT world.

The host's rules, as for every decoder:

- `feed` is offered the bytes of one direction that the decoder has not
  consumed yet, and returns how many it consumed; the host keeps the rest
  and offers it again with the next bytes. Keep no copy of unconsumed bytes.
- Report each request and each response as a `Message`; the host pairs them
  (by `correlate(id)` when the protocol carries an id, else in order).
- `gap` says bytes were lost in the capture: resynchronise in the next `feed`.
- Raise `DecodeError` when the stream is not your protocol: the session ends.
"""

import enum
import json

__all__ = [
    "CloseReason",
    "DecodeError",
    "Decoder",
    "Direction",
    "Message",
    "Session",
    "Transport",
    "config",
    "export",
    "length_prefixed",
    "log",
]

#: The WIT package version this SDK implements.
WIT_VERSION = "0.1.0"


class Direction(enum.Enum):
    """Which way bytes travel on a flow."""

    TO_SERVER = 0
    TO_CLIENT = 1


class Transport(enum.Enum):
    """Transport a decoder accepts."""

    TCP = 0
    UDP = 1


class CloseReason(enum.Enum):
    """Why a session ends."""

    FIN = 0
    RESET = 1
    IDLE_TIMEOUT = 2
    END_OF_CAPTURE = 3
    EVICTED = 4


class DecodeError(Exception):
    """The stream is not the decoder's protocol: the session ends.

    `offset` is where, within the bytes offered, the problem is."""

    def __init__(self, reason, offset=0):
        super().__init__(reason)
        self.reason = str(reason)
        self.offset = int(offset)


class Message:
    """A request, response or one-way message found in a flow's bytes.

    Build one with `Message.request`, `Message.response` or
    `Message.one_way`, then chain `correlate`, `ok`/`error` and `attr`."""

    REQUEST = "request"
    RESPONSE = "response"
    ONE_WAY = "one_way"

    def __init__(self, kind, start_ns, end_ns, size, operation=""):
        self.kind = kind
        self.correlation = None
        self.start_ns = int(start_ns)
        self.end_ns = int(end_ns)
        self.size = int(size)
        self.operation = operation
        #: "unset", "ok" or "error".
        self.status = "unset"
        self.status_code = ""
        #: Attributes in the order set: a list of (key, value).
        self.attributes = []

    @classmethod
    def request(cls, start_ns, end_ns, size, operation):
        """A request; `operation` names it on spans and metrics (keep it low
        in cardinality: a verb, never an id)."""
        return cls(cls.REQUEST, start_ns, end_ns, size, operation)

    @classmethod
    def response(cls, start_ns, end_ns, size):
        """A response (its outcome from `ok` or `error`)."""
        return cls(cls.RESPONSE, start_ns, end_ns, size)

    @classmethod
    def one_way(cls, start_ns, end_ns, size, operation):
        """A message that expects no answer (a publish, a notification)."""
        return cls(cls.ONE_WAY, start_ns, end_ns, size, operation)

    def correlate(self, key):
        """The id that pairs this request with its response (an unsigned
        64-bit number)."""
        self.correlation = int(key) & 0xFFFF_FFFF_FFFF_FFFF
        return self

    def ok(self, code=""):
        """The protocol reported success, with its own code."""
        self.status, self.status_code = "ok", str(code)
        return self

    def error(self, code=""):
        """The protocol reported a failure, with its own code."""
        self.status, self.status_code = "error", str(code)
        return self

    def attr(self, key, value):
        """An attribute: `key` must be one of the decoder's `keys`; `value`
        is a str, int, float or bool."""
        if not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"attribute {key!r}: {type(value).__name__} is not str, int, float or bool")
        self.attributes.append((key, value))
        return self

    def as_dict(self):
        """Everything the message says, for tests and goldens."""
        return {
            "kind": self.kind,
            "correlation": self.correlation,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "size": self.size,
            "operation": self.operation,
            "status": self.status,
            "status_code": self.status_code,
            "attributes": list(self.attributes),
        }

    def __eq__(self, other):
        return isinstance(other, Message) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return f"Message({self.as_dict()!r})"


class Session:
    """Decoding state for one flow. Override `feed`; `gap` and `close` have
    defaults (resynchronise flag, nothing at close)."""

    def __init__(self, transport, server_port):
        self.transport = transport
        self.server_port = server_port
        #: Directions whose stream lost bytes (index by `Direction.value`).
        self.lost = [False, False]

    def feed(self, direction, timestamp_ns, data, out):
        """Parse what you can of `data` (bytes), append messages to `out`,
        return how many bytes were consumed. `timestamp_ns` is the capture
        time of the last packet that contributed to `data`."""
        raise NotImplementedError

    def gap(self, direction, length, out):
        """`length` bytes of `direction` were never captured. By default the
        session ends (as in the Rust SDK); a decoder that can resynchronise
        overrides this, sets `self.lost[direction.value]` and searches for the
        next message start in `feed`."""
        raise DecodeError("gap", length)

    def close(self, reason, timestamp_ns, out):
        """The flow ended; append messages complete only now."""


class Decoder:
    """What a decoder is. Subclass it and set the class attributes."""

    #: The decoder's name (its config section is `[plugins.config.<name>]`).
    name = "decoder"
    #: Its version.
    version = "0.1.0"
    #: Protocol names it decodes (the first is `network.protocol.name`).
    protocols = []
    #: Transports it accepts.
    transports = [Transport.TCP]
    #: Server ports it claims (a hint: other ports work through `probe`).
    ports = []
    #: Every attribute key its messages may carry.
    keys = []
    #: The `Session` subclass of one flow.
    session = Session

    @staticmethod
    def probe(transport, direction, data):
        """0-100: how sure the decoder is that `data`, a flow's first bytes
        in `direction`, are its protocol."""
        return 0


_exported = []


def export(decoder):
    """Makes `decoder` (a `Decoder` subclass) the one this component exports."""
    if not (isinstance(decoder, type) and issubclass(decoder, Decoder)):
        raise TypeError("export() takes a Decoder subclass")
    _exported[:] = [decoder]
    return decoder


def exported():
    """The decoder given to `export`."""
    if not _exported:
        raise RuntimeError("no decoder exported: call wasmtap.export(YourDecoder) in plugin.py")
    return _exported[0]


# The host's services; the component replaces them (see `_component`).
_host = {
    "config": lambda: "{}",
    "log": lambda level, message: None,
}


def config():
    """The decoder's configuration section, as a dict (`{}` when none)."""
    try:
        v = json.loads(_host["config"]() or "{}")
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def log(level, message):
    """A record in the agent's log (`level`: trace, debug, info, warn,
    error), tagged with the decoder's name; the host rate-limits them."""
    _host["log"](level, str(message))


def length_prefixed(data, width=4, big_endian=True, adjust=0, max_len=64 * 1024):
    """Splits whole frames of a length field off the start of `data`: the
    length is `width` bytes at the frame's start (plus `adjust`: the bytes
    it does not count, negative if it counts itself). Returns `(frames,
    consumed)`, each frame `(offset, body)`; the bytes after `consumed` are
    an incomplete frame. Raises `DecodeError` on a length above `max_len`."""
    frames, at = [], 0
    order = "big" if big_endian else "little"
    while len(data) - at >= width:
        n = int.from_bytes(data[at:at + width], order) + adjust
        if n < 0 or n > max_len:
            # A constant reason: the host counts decode errors by it.
            raise DecodeError("bad frame length", at)
        if len(data) - at - width < n:
            break
        frames.append((at, bytes(data[at + width:at + width + n])))
        at += width + n
    return frames, at
