// A wasmtap decoder for `{{name}}`, made by `wasmtap plugin new --lang js`.
//
// The protocol it decodes as shipped (edit it into yours): frames of a
// 4-byte big-endian length followed by that many bytes of text,
// `REQ <id> <operation> <key>` from the client and `RES <id> <status>` from
// the server. Responses may come in any order: the id pairs them (the host
// does the pairing; the decoder only says which id a message carries). A
// status of `OK` or `NOTFOUND` is a success, anything else an error.
//
// `npm test` runs the tests in tests/ natively (whole, byte by byte, random
// splits). `wasmtap plugin build` makes the component (componentize-js);
// `wasmtap plugin test` runs it on a capture.

import { DecodeError, Decoder, Direction, Message, Session } from './wasmtap/index.js';

/** Largest frame accepted; a bigger length means the stream is not this protocol. */
export const MAX_FRAME = 64 * 1024;
/** Attribute keys, declared once (in `keys` below) and used by name. */
export const KEY = '{{name}}.key';
/** The response's status word. */
export const STATUS = '{{name}}.status';

const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The frame at the start of `data`: `{ body, size }` when whole, `null` when
 * more bytes are needed; throws `DecodeError` on a length this protocol never
 * sends (0, or above `MAX_FRAME`). */
function frame(data) {
  if (data.length < 4) return null;
  const n = ((data[0] << 24) >>> 0) + (data[1] << 16) + (data[2] << 8) + data[3];
  if (n === 0 || n > MAX_FRAME) throw new DecodeError('bad frame length', 0);
  if (data.length < 4 + n) return null;
  return { body: data.subarray(4, 4 + n), size: 4 + n };
}

const REQ = [0x52, 0x45, 0x51, 0x20];
const RES = [0x52, 0x45, 0x53, 0x20];
const startsWith = (b, p) => b.length >= p.length && p.every((x, i) => b[i] === x);

/** A whole frame at the start of `data` whose body starts like a message. */
function plausible(data) {
  if (data.length < 8) return false;
  const n = ((data[0] << 24) >>> 0) + (data[1] << 16) + (data[2] << 8) + data[3];
  if (n < 4 || n > MAX_FRAME || data.length < 4 + n) return false;
  const head = data.subarray(4, 8);
  return startsWith(head, REQ) || startsWith(head, RES);
}

/** A request id: ASCII digits (an optional `+`), below 2**64; else null. */
function asciiId(word) {
  const digits = word.startsWith('+') ? word.slice(1) : word;
  if (!/^[0-9]+$/.test(digits)) return null;
  const v = BigInt(digits);
  return v < 1n << 64n ? v : null;
}

/** One frame's body as a message (null for a body this protocol does not know). */
function message(direction, ts, body, size) {
  let s;
  try {
    s = text.decode(body);
  } catch {
    return null;
  }
  // ASCII whitespace only, as the Rust template splits.
  const words = s.split(/[ \t\n\f\r]+/).filter((w) => w.length);
  if (words.length < 2) return null;
  const id = asciiId(words[1]);
  if (id === null) return null;
  if (direction === Direction.TO_SERVER && words[0] === 'REQ') {
    const op = (words.length > 2 ? words[2] : 'UNKNOWN').replace(/[a-z]/g, (c) => c.toUpperCase());
    const m = Message.request(ts, ts, size, op).correlate(id);
    if (words.length > 3) m.attr(KEY, words[3]);
    return m;
  }
  if (direction === Direction.TO_CLIENT && words[0] === 'RES') {
    const status = words.length > 2 ? words[2] : '';
    const m = Message.response(ts, ts, size).correlate(id);
    if (status === 'OK' || status === 'NOTFOUND') m.ok(status);
    else m.error(status);
    return m.attr(STATUS, status);
  }
  return null;
}

/** Per-flow state (`this.lost`: the stream of a direction must be searched for
 * a frame start, after a gap). */
class Flow extends Session {
  feed(direction, ts, data, out) {
    let used = 0;
    if (this.lost[direction]) {
      // Resynchronise: the next place where a plausible frame starts.
      let found = false;
      for (let i = 0; i < data.length - 8; i++) {
        if (plausible(data.subarray(i))) {
          used = i;
          this.lost[direction] = false;
          found = true;
          break;
        }
      }
      // Keep the last bytes: a frame may start in them.
      if (!found) return Math.max(0, data.length - (MAX_FRAME + 4));
    }
    while (used < data.length) {
      let f;
      try {
        f = frame(data.subarray(used));
      } catch (e) {
        throw new DecodeError(e.reason, used);
      }
      if (f === null) break;
      used += f.size;
      const m = message(direction, ts, f.body, f.size);
      if (m) out.push(m);
    }
    return used;
  }

  gap(direction, length, out) {
    this.lost[direction] = true;
  }
}

/** What the decoder is. */
export default class Plugin extends Decoder {
  static probe(transport, direction, data) {
    return plausible(data) ? 90 : 0;
  }
}
Plugin.decoderName = '{{name}}';
Plugin.version = '0.1.0';
Plugin.protocols = ['{{name}}'];
Plugin.ports = [{{port}}];
Plugin.keys = [KEY, STATUS];
Plugin.session = Flow;
