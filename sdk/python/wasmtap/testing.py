"""Run a decoder natively, as the host would, on scripts of events.

Each script is fed three ways: every chunk whole, byte by byte, and cut at
random points (the unconsumed bytes kept and offered again with the next,
as the host does). All three must give the same messages: that is how TCP
hands a decoder its bytes, in pieces it does not choose. Attribute keys
must be declared in the decoder's `keys`.
"""

import random

import wasmtap
from wasmtap import CloseReason, DecodeError, Direction


class Data:
    """Bytes of one direction, captured at `ts_ns`."""

    def __init__(self, direction, data, ts_ns=0):
        self.direction, self.data, self.ts_ns = direction, bytes(data), ts_ns


class Gap:
    """`length` bytes of one direction lost in the capture."""

    def __init__(self, direction, length):
        self.direction, self.length = direction, length


class Close:
    """The flow ends."""

    def __init__(self, reason=CloseReason.FIN, ts_ns=0):
        self.reason, self.ts_ns = reason, ts_ns


class Outcome:
    """What a run gave: the messages, and the error that ended it (if any:
    its reason, and `offset`, counted from the start of its direction's
    stream)."""

    def __init__(self, messages, error, offset=None):
        self.messages, self.error, self.offset = messages, error, offset


_U64 = (1 << 64) - 1


def _valid(m):
    """What the component boundary will require of a message (WIT types)."""
    for field in ("start_ns", "end_ns", "size"):
        v = getattr(m, field)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _U64:
            raise AssertionError(f"{field} = {v!r}: not an unsigned 64-bit integer")
    if not isinstance(m.operation, str) or not isinstance(m.status_code, str):
        raise AssertionError(f"operation and status code must be str: {m!r}")
    if m.correlation is not None and not 0 <= m.correlation <= _U64:
        raise AssertionError(f"correlation {m.correlation!r} out of range")


def _run(decoder, events, split, max_pending, transport, server_port):
    session = decoder.session(transport, server_port)
    pending = [b"", b""]
    # Bytes consumed per direction: an error's offset is reported from the
    # stream's start, the same however the bytes were split.
    consumed = [0, 0]
    out = []
    try:
        for ev in events:
            if isinstance(ev, Data):
                for chunk in split(ev.data):
                    i = ev.direction.value
                    pending[i] += chunk
                    try:
                        used = session.feed(ev.direction, ev.ts_ns, pending[i], out)
                    except DecodeError as e:
                        raise DecodeError(e.reason, consumed[i] + e.offset) from e
                    if not isinstance(used, int) or used < 0 or used > len(pending[i]):
                        raise AssertionError(f"feed returned {used!r} for {len(pending[i])} bytes offered")
                    pending[i] = pending[i][used:]
                    consumed[i] += used
                    if len(pending[i]) > max_pending:
                        raise AssertionError(f"{len(pending[i])} bytes left unconsumed (more than {max_pending})")
            elif isinstance(ev, Gap):
                consumed[ev.direction.value] += len(pending[ev.direction.value]) + ev.length
                pending[ev.direction.value] = b""
                session.gap(ev.direction, ev.length, out)
            elif isinstance(ev, Close):
                try:
                    session.close(ev.reason, ev.ts_ns, out)
                except DecodeError as e:
                    raise AssertionError(f"close raised DecodeError({e.reason!r}): close cannot fail") from e
    except DecodeError as e:
        for m in out:
            _valid(m)
        return Outcome(out, e.reason, e.offset)
    for m in out:
        _valid(m)
        for key, _ in m.attributes:
            if key not in decoder.keys:
                raise AssertionError(f"attribute key {key!r} is not declared in {decoder.__name__}.keys")
    return Outcome(out, None, None)


def check(decoder, events, max_pending=64 * 1024, transport=wasmtap.Transport.TCP, server_port=0, seed=1):
    """Feeds `events` whole, byte by byte and at random split points;
    asserts the three give the same messages and error; returns the outcome."""
    rng = random.Random(seed)

    def whole(b):
        return [b] if b else []

    def bytewise(b):
        return [b[i:i + 1] for i in range(len(b))]

    def random_cuts(b):
        parts, at = [], 0
        while at < len(b):
            n = rng.randint(1, 64)
            parts.append(b[at:at + n])
            at += n
        return parts

    first = _run(decoder, events, whole, max_pending, transport, server_port)
    ways = [("byte by byte", bytewise)] + [(f"random splits #{i}", random_cuts) for i in range(50)]
    for name, split in ways:
        o = _run(decoder, events, split, max_pending, transport, server_port)
        got = [m.as_dict() for m in o.messages]
        want = [m.as_dict() for m in first.messages]
        # Times may differ when a message's bytes came in later pieces.
        for d in got + want:
            d.pop("start_ns"), d.pop("end_ns")
        if (got, o.error, o.offset) != (want, first.error, first.offset):
            raise AssertionError(
                f"{name}: {got} / {o.error!r} at {o.offset}\nwhole: {want} / {first.error!r} at {first.offset}"
            )
    return first


__all__ = ["Close", "Data", "Gap", "Outcome", "check", "Direction"]
