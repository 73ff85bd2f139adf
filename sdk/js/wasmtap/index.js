// The wasmtap decoder SDK for JavaScript.
//
// A decoder is a subclass of `Decoder` (what it is, and `probe`) naming a
// subclass of `Session` (the state of one flow: `feed`, `gap`, `close`); the
// project's `plugin.js` exports it as its default export. Everything here is
// plain JavaScript: the same code runs natively under `wasmtap/testing.js`
// (node --test) and, built by `wasmtap plugin build` (esbuild, then
// componentize-js), as a sandboxed component of the `wasmtap:decoder` WIT
// world.
//
// The host's rules, as for every decoder:
// - `feed` is offered the bytes of one direction that the decoder has not
//   consumed yet, and returns how many it consumed; the host keeps the rest
//   and offers it again with the next bytes. Keep no copy of unconsumed bytes.
// - Report each request and each response as a `Message`; the host pairs
//   them (by `correlate(id)` when the protocol carries an id, else in order).
// - `gap` says bytes were lost in the capture: resynchronise in the next `feed`.
// - Throw `DecodeError` when the stream is not your protocol: the session ends.

/** The WIT package version this SDK implements. */
export const WIT_VERSION = '0.1.0';

/** Which way bytes travel on a flow (the WIT enum's names). */
export const Direction = Object.freeze({ TO_SERVER: 'to-server', TO_CLIENT: 'to-client' });

/** Transport a decoder accepts. */
export const Transport = Object.freeze({ TCP: 'tcp', UDP: 'udp' });

/** Why a session ends. */
export const CloseReason = Object.freeze({
  FIN: 'fin',
  RESET: 'reset',
  IDLE_TIMEOUT: 'idle-timeout',
  END_OF_CAPTURE: 'end-of-capture',
  EVICTED: 'evicted',
});

/** The stream is not the decoder's protocol: the session ends. `offset` is
 * where, within the bytes offered, the problem is. */
export class DecodeError extends Error {
  constructor(reason, offset = 0) {
    super(reason);
    this.reason = String(reason);
    this.offset = Number(offset);
  }
}

/** A request, response or one-way message found in a flow's bytes. Build
 * one with `Message.request`, `Message.response` or `Message.oneWay`, then
 * chain `correlate`, `ok`/`error` and `attr`. Times are nanoseconds (number
 * or BigInt). */
export class Message {
  constructor(kind, startNs, endNs, size, operation = '') {
    this.kind = kind;
    this.correlation = undefined;
    this.startNs = BigInt(startNs);
    this.endNs = BigInt(endNs);
    this.size = BigInt(size);
    this.operation = operation;
    /** 'unset', 'ok' or 'error'. */
    this.status = 'unset';
    this.statusCode = '';
    /** Attributes in the order set: [key, value] pairs. */
    this.attributes = [];
  }

  /** A request; `operation` names it on spans and metrics (keep it low in
   * cardinality: a verb, never an id). */
  static request(startNs, endNs, size, operation) {
    return new Message('request', startNs, endNs, size, operation);
  }

  /** A response (its outcome from `ok` or `error`). */
  static response(startNs, endNs, size) {
    return new Message('response', startNs, endNs, size);
  }

  /** A message that expects no answer. */
  static oneWay(startNs, endNs, size, operation) {
    return new Message('one-way', startNs, endNs, size, operation);
  }

  /** The id that pairs this request with its response (unsigned 64-bit). */
  correlate(key) {
    this.correlation = BigInt.asUintN(64, BigInt(key));
    return this;
  }

  /** The protocol reported success, with its own code. */
  ok(code = '') {
    this.status = 'ok';
    this.statusCode = String(code);
    return this;
  }

  /** The protocol reported a failure, with its own code. */
  error(code = '') {
    this.status = 'error';
    this.statusCode = String(code);
    return this;
  }

  /** An attribute: `key` must be one of the decoder's `keys`; `value` a
   * string, a number (an integer unless `float` is true), a BigInt or a boolean. */
  attr(key, value, float = false) {
    const t = typeof value;
    if (!['string', 'number', 'bigint', 'boolean'].includes(t)) {
      throw new TypeError(`attribute ${key}: ${t} is not a string, number, bigint or boolean`);
    }
    this.attributes.push([key, float ? { float: Number(value) } : value]);
    return this;
  }
}

/** Decoding state for one flow. Override `feed`; `gap` and `close` have
 * defaults (a resynchronise flag, nothing at close). */
export class Session {
  constructor(transport, serverPort) {
    this.transport = transport;
    this.serverPort = serverPort;
    /** Directions whose stream lost bytes: `this.lost[direction]`. */
    this.lost = { 'to-server': false, 'to-client': false };
  }

  /** Parses what it can of `data` (a Uint8Array), pushes messages to `out`,
   * returns how many bytes were consumed. `timestampNs` (BigInt) is the
   * capture time of the last packet that contributed to `data`. */
  feed(direction, timestampNs, data, out) {
    throw new Error('Session.feed is not implemented');
  }

  /** `length` bytes of `direction` were never captured. By default the
   * session ends (as in the Rust SDK); a decoder that can resynchronise
   * overrides this, sets `this.lost[direction]` and searches for the next
   * message start in `feed`. */
  gap(direction, length, out) {
    throw new DecodeError('gap', Number(length));
  }

  /** The flow ended; push messages complete only now. */
  close(reason, timestampNs, out) {}
}

/** What a decoder is. Subclass it and set the static fields. */
export class Decoder {
  /** 0-100: how sure the decoder is that `data`, a flow's first bytes in
   * `direction`, are its protocol. */
  static probe(transport, direction, data) {
    return 0;
  }
}
/** The decoder's name (its config section is `[plugins.config.<name>]`). */
Decoder.decoderName = 'decoder';
/** Its version. */
Decoder.version = '0.1.0';
/** Protocol names it decodes (the first is `network.protocol.name`). */
Decoder.protocols = [];
/** Transports it accepts. */
Decoder.transports = [Transport.TCP];
/** Server ports it claims (a hint: other ports work through `probe`). */
Decoder.ports = [];
/** Every attribute key its messages may carry. */
Decoder.keys = [];
/** The `Session` subclass of one flow. */
Decoder.session = Session;

// The host's services; the component replaces them (see `component.js`).
export const host = {
  config: () => '{}',
  log: (level, message) => {},
};

/** The decoder's configuration section, as an object (`{}` when none). */
export function config() {
  try {
    const v = JSON.parse(host.config() || '{}');
    return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

/** A record in the agent's log (`level`: trace, debug, info, warn, error),
 * tagged with the decoder's name; the host rate-limits them. */
export function log(level, message) {
  host.log(level, String(message));
}

/** Splits whole frames of a length field off the start of `data`: the length
 * is `width` bytes at the frame's start (plus `adjust`: the bytes it does not
 * count, negative if it counts itself). Returns `{ frames, consumed }`, each
 * frame `{ offset, body }`; the bytes after `consumed` are an incomplete
 * frame. Throws `DecodeError` on a length above `maxLen`. */
export function lengthPrefixed(data, { width = 4, bigEndian = true, adjust = 0, maxLen = 64 * 1024 } = {}) {
  const frames = [];
  let at = 0;
  while (data.length - at >= width) {
    let n = 0;
    for (let i = 0; i < width; i++) {
      const b = data[at + (bigEndian ? i : width - 1 - i)];
      n = n * 256 + b;
    }
    n += adjust;
    if (n < 0 || n > maxLen) {
      // A constant reason: the host counts decode errors by it.
      throw new DecodeError('bad frame length', at);
    }
    if (data.length - at - width < n) break;
    frames.push({ offset: at, body: data.subarray(at + width, at + width + n) });
    at += width + n;
  }
  return { frames, consumed: at };
}
