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

import { DecodeError, Decoder, Direction, Message, Session, lengthPrefixed } from './wasmtap/index.js';

/** Largest frame accepted; a bigger length means the stream is not this protocol. */
export const MAX_FRAME = 64 * 1024;
/** Attribute keys, declared once (in `keys` below) and used by name. */
export const KEY = '{{name}}.key';
/** The response's status word. */
export const STATUS = '{{name}}.status';

const text = new TextDecoder();

/** A whole frame whose body starts like a message of this protocol. */
function looksLikeFrame(data) {
  try {
    const { frames } = lengthPrefixed(data.subarray(0, 4 + MAX_FRAME), { maxLen: MAX_FRAME });
    if (!frames.length) return false;
    const head = text.decode(frames[0].body.subarray(0, 4));
    return head === 'REQ ' || head === 'RES ';
  } catch {
    return false;
  }
}

/** One frame's body as a message (null for a body this protocol does not know). */
function message(direction, ts, body, size) {
  const words = text.decode(body).split(/\s+/).filter((w) => w.length);
  if (words.length < 2 || !/^\d+$/.test(words[1])) return null;
  if (direction === Direction.TO_SERVER && words[0] === 'REQ') {
    const op = words.length > 2 ? words[2].toUpperCase() : 'UNKNOWN';
    const m = Message.request(ts, ts, size, op).correlate(BigInt(words[1]));
    if (words.length > 3) m.attr(KEY, words[3]);
    return m;
  }
  if (direction === Direction.TO_CLIENT && words[0] === 'RES') {
    const status = words.length > 2 ? words[2] : '';
    const m = Message.response(ts, ts, size).correlate(BigInt(words[1]));
    if (status === 'OK' || status === 'NOTFOUND') m.ok(status);
    else m.error(status);
    return m.attr(STATUS, status);
  }
  return null;
}

/** Per-flow state (`this.lost`: the stream must be searched for a frame
 * start, after a gap). */
class Flow extends Session {
  feed(direction, ts, data, out) {
    let used = 0;
    if (this.lost[direction]) {
      // Resynchronise: the next place where a plausible frame starts.
      let found = false;
      for (let i = 0; i < data.length - 8; i++) {
        if (looksLikeFrame(data.subarray(i))) {
          used = i;
          this.lost[direction] = false;
          found = true;
          break;
        }
      }
      // Keep the last bytes: a frame may start in them.
      if (!found) return Math.max(0, data.length - (MAX_FRAME + 4));
    }
    let framed;
    try {
      framed = lengthPrefixed(data.subarray(used), { maxLen: MAX_FRAME });
    } catch (e) {
      throw new DecodeError(e.reason, used + e.offset);
    }
    for (const { body } of framed.frames) {
      const m = message(direction, ts, body, 4 + body.length);
      if (m) out.push(m);
    }
    return used + framed.consumed;
  }
}

/** What the decoder is. */
export default class Plugin extends Decoder {
  static probe(transport, direction, data) {
    return looksLikeFrame(data) ? 90 : 0;
  }
}
Plugin.decoderName = '{{name}}';
Plugin.version = '0.1.0';
Plugin.protocols = ['{{name}}'];
Plugin.ports = [{{port}}];
Plugin.keys = [KEY, STATUS];
Plugin.session = Flow;
