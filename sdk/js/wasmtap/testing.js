// Run a decoder natively, as the host would, on scripts of events.
//
// Each script is fed three ways: every chunk whole, byte by byte, and cut at
// random points (the unconsumed bytes kept and offered again with the next,
// as the host does). All three must give the same messages: that is how TCP
// hands a decoder its bytes, in pieces it does not choose. Attribute keys
// must be declared in the decoder's `keys`.

import { DecodeError } from './index.js';

/** Bytes of one direction, captured at `tsNs`. */
export const data = (direction, bytes, tsNs = 0n) => ({ type: 'data', direction, bytes: Uint8Array.from(bytes), tsNs: BigInt(tsNs) });
/** `length` bytes of one direction lost in the capture. */
export const gap = (direction, length) => ({ type: 'gap', direction, length: BigInt(length) });
/** The flow ends. */
export const close = (reason = 'fin', tsNs = 0n) => ({ type: 'close', reason, tsNs: BigInt(tsNs) });

function run(Plugin, events, split, maxPending, transport, serverPort) {
  const session = new Plugin.session(transport, serverPort);
  const pending = { 'to-server': new Uint8Array(0), 'to-client': new Uint8Array(0) };
  // Bytes consumed per direction: an error's offset is reported from the
  // stream's start, the same however the bytes were split.
  const consumed = { 'to-server': 0, 'to-client': 0 };
  const out = [];
  try {
    for (const ev of events) {
      if (ev.type === 'data') {
        for (const chunk of split(ev.bytes)) {
          const d = ev.direction;
          const joined = new Uint8Array(pending[d].length + chunk.length);
          joined.set(pending[d]);
          joined.set(chunk, pending[d].length);
          let used;
          try {
            used = session.feed(d, ev.tsNs, joined, out);
          } catch (e) {
            if (e instanceof DecodeError) throw new DecodeError(e.reason, consumed[d] + Number(e.offset));
            throw e;
          }
          if (!Number.isInteger(used) || used < 0 || used > joined.length) {
            throw new Error(`feed returned ${used} for ${joined.length} bytes offered`);
          }
          pending[d] = joined.slice(used);
          consumed[d] += used;
          if (pending[d].length > maxPending) {
            throw new Error(`${pending[d].length} bytes left unconsumed (more than ${maxPending})`);
          }
        }
      } else if (ev.type === 'gap') {
        consumed[ev.direction] += pending[ev.direction].length + Number(ev.length);
        pending[ev.direction] = new Uint8Array(0);
        session.gap(ev.direction, ev.length, out);
      } else if (ev.type === 'close') {
        try {
          session.close(ev.reason, ev.tsNs, out);
        } catch (e) {
          throw new Error(`close threw ${e}: close cannot fail`);
        }
      }
    }
  } catch (e) {
    if (e instanceof DecodeError) {
      out.forEach(valid);
      return { messages: out, error: e.reason, offset: e.offset };
    }
    throw e;
  }
  out.forEach(valid);
  for (const m of out) {
    for (const [key] of m.attributes) {
      if (!Plugin.keys.includes(key)) throw new Error(`attribute key ${key} is not declared in ${Plugin.name}.keys`);
    }
  }
  return { messages: out, error: null, offset: null };
}

const U64_MAX = (1n << 64n) - 1n;

/** What the component boundary will require of a message (WIT types). */
function valid(m) {
  for (const field of ['startNs', 'endNs', 'size']) {
    const v = m[field];
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw new Error(`${field} = ${v}: not an unsigned 64-bit integer`);
  }
  if (m.correlation !== undefined && (typeof m.correlation !== 'bigint' || m.correlation < 0n || m.correlation > U64_MAX)) {
    throw new Error(`correlation ${m.correlation} out of range`);
  }
  if (typeof m.operation !== 'string' || typeof m.statusCode !== 'string') {
    throw new Error('operation and status code must be strings');
  }
}

function comparable(o) {
  return JSON.stringify(
    o.messages.map((m) => ({ ...m, startNs: undefined, endNs: undefined })),
    (_, v) => (typeof v === 'bigint' ? `${v}n` : v),
  ) + `|${o.error}|${o.offset}`;
}

/** Feeds `events` whole, byte by byte and at random split points; throws
 * unless the three give the same messages and error; returns the outcome
 * `{ messages, error }`. */
export function check(Plugin, events, { maxPending = 64 * 1024, transport = 'tcp', serverPort = 0, seed = 1 } = {}) {
  let state = seed >>> 0 || 1;
  const rand = () => {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return state;
  };
  const whole = (b) => (b.length ? [b] : []);
  const bytewise = (b) => Array.from(b, (_, i) => b.subarray(i, i + 1));
  const randomCuts = (b) => {
    const parts = [];
    for (let at = 0; at < b.length;) {
      const n = 1 + (rand() % 64);
      parts.push(b.subarray(at, at + n));
      at += n;
    }
    return parts;
  };
  const first = run(Plugin, events, whole, maxPending, transport, serverPort);
  const ways = [['byte by byte', bytewise]];
  for (let i = 0; i < 50; i++) ways.push([`random splits #${i}`, randomCuts]);
  for (const [name, split] of ways) {
    const o = run(Plugin, events, split, maxPending, transport, serverPort);
    if (comparable(o) !== comparable(first)) {
      throw new Error(`${name}: ${comparable(o)}\nwhole: ${comparable(first)}`);
    }
  }
  return first;
}
