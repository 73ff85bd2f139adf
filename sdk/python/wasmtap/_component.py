"""The boundary between a Python decoder and the `wasmtap:decoder` WIT world.

Imported only inside the component that `wasmtap plugin build` makes with
componentize-py (which generates the `wit_world` bindings); decoders never
import it themselves. It converts the SDK's plain values to the WIT types
and back."""

import wasmtap
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

_LEVELS = {
    "trace": host.Level.TRACE,
    "debug": host.Level.DEBUG,
    "info": host.Level.INFO,
    "warn": host.Level.WARN,
    "error": host.Level.ERROR,
}
wasmtap._host["config"] = host.config
wasmtap._host["log"] = lambda level, message: host.log(_LEVELS.get(level, host.Level.INFO), message)

_KINDS = {
    wasmtap.Message.REQUEST: types.MessageKind.REQUEST,
    wasmtap.Message.RESPONSE: types.MessageKind.RESPONSE,
    wasmtap.Message.ONE_WAY: types.MessageKind.ONE_WAY,
}
_STATUS = {
    "unset": types.StatusClass.UNSET,
    "ok": types.StatusClass.OK,
    "error": types.StatusClass.ERROR,
}
_key_index = {}
_undeclared = set()
#: Undeclared keys remembered (each is logged once); beyond, no more logs.
_MAX_UNDECLARED = 64
_U64 = (1 << 64) - 1


def _value(v):
    # bool before int: a bool is an int in Python.
    if isinstance(v, bool):
        return types.AttributeValue_Boolean(v)
    if isinstance(v, int):
        return types.AttributeValue_Int(max(-(1 << 63), min(v, (1 << 63) - 1)))
    if isinstance(v, float):
        return types.AttributeValue_Float(v)
    return types.AttributeValue_Str(str(v))


def _message(m):
    # Each instance builds the index once (`describe` runs in another one).
    if not _key_index:
        _key_index.update({k: i for i, k in enumerate(wasmtap.exported().keys)})
    attrs = []
    for key, value in m.attributes:
        i = _key_index.get(key)
        if i is None:
            if key not in _undeclared and len(_undeclared) < _MAX_UNDECLARED:
                _undeclared.add(key)
                wasmtap.log("warn", f"attribute key {key!r} is not declared in the decoder's keys: dropped")
            continue
        attrs.append(types.Attribute(i, _value(value)))
    return types.Message(
        kind=_KINDS[m.kind],
        correlation=m.correlation,
        start_ns=m.start_ns,
        end_ns=m.end_ns,
        size=m.size,
        operation=m.operation,
        status=_STATUS[m.status],
        status_code=m.status_code,
        attributes=attrs,
    )


def _error(e):
    return types.DecodeError(str(e.reason), max(0, min(int(e.offset), _U64)))


def _direction(d):
    return wasmtap.Direction(d.value)


def _transport(t):
    return wasmtap.Transport(t.value)


class Decoder(exports.Decoder):
    """The exported interface's functions."""

    def describe(self):
        d = wasmtap.exported()
        return types.Descriptor(
            name=d.name,
            version=d.version,
            protocols=list(d.protocols or [d.name]),
            transports=[types.Transport(t.value) for t in d.transports],
            default_ports=list(d.ports),
            attribute_keys=list(d.keys),
        )

    def probe(self, transport, dir, data):
        c = wasmtap.exported().probe(_transport(transport), _direction(dir), data)
        return max(0, min(100, int(c or 0)))


class Session:
    """The exported `session` resource: one flow, forwarded to the decoder's session."""

    def __init__(self, transport, server_port):
        self.inner = wasmtap.exported().session(_transport(transport), server_port)

    def feed(self, dir, timestamp_ns, data):
        out = []
        try:
            used = self.inner.feed(_direction(dir), timestamp_ns, data, out)
        except wasmtap.DecodeError as e:
            raise Err(_error(e))
        used = max(0, min(int(used or 0), len(data)))
        return types.FeedResult(consumed=used, messages=[_message(m) for m in out])

    def gap(self, dir, length):
        out = []
        try:
            self.inner.gap(_direction(dir), length, out)
        except wasmtap.DecodeError as e:
            raise Err(_error(e))
        return types.FeedResult(consumed=0, messages=[_message(m) for m in out])

    def close(self, reason, timestamp_ns):
        out = []
        try:
            self.inner.close(wasmtap.CloseReason(reason.value), timestamp_ns, out)
        except wasmtap.DecodeError as e:
            # `close` cannot fail in the contract: what it found is kept.
            wasmtap.log("warn", f"close raised DecodeError({e.reason!r}): ignored")
        return [_message(m) for m in out]
