// The boundary between a JavaScript decoder and the `wasmtap:decoder` WIT
// world: converts the SDK's plain values to the WIT types and back. Bundled
// into the component by `wasmtap plugin build`; decoders never import it.

import { config as hostConfig, log as hostLog } from 'wasmtap:decoder/host@0.1.0';
import { DecodeError, host } from './index.js';

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error']);
host.config = () => hostConfig();
host.log = (level, message) => hostLog(LEVELS.has(level) ? level : 'info', message);

/** Undeclared keys remembered (each is logged once); beyond, no more logs. */
const MAX_UNDECLARED = 64;
const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

function value(v) {
  if (typeof v === 'boolean') return { tag: 'boolean', val: v };
  if (typeof v === 'bigint') return { tag: 'int', val: v < I64_MIN ? I64_MIN : v > I64_MAX ? I64_MAX : v };
  if (typeof v === 'number') {
    return Number.isInteger(v) && Number.isSafeInteger(v) ? { tag: 'int', val: BigInt(v) } : { tag: 'float', val: v };
  }
  if (v && typeof v === 'object' && 'float' in v) return { tag: 'float', val: Number(v.float) };
  return { tag: 'str', val: String(v) };
}

/** The WIT exports of decoder class `Plugin`. */
export function exportsFor(Plugin) {
  const keyIndex = new Map(Plugin.keys.map((k, i) => [k, i]));
  const undeclared = new Set();
  const message = (m) => {
    const attributes = [];
    for (const [key, v] of m.attributes) {
      const i = keyIndex.get(key);
      if (i === undefined) {
        if (!undeclared.has(key) && undeclared.size < MAX_UNDECLARED) {
          undeclared.add(key);
          host.log('warn', `attribute key ${JSON.stringify(key)} is not declared in the decoder's keys: dropped`);
        }
        continue;
      }
      attributes.push({ key: i, value: value(v) });
    }
    return {
      kind: m.kind,
      correlation: m.correlation,
      startNs: BigInt(m.startNs),
      endNs: BigInt(m.endNs),
      size: BigInt(m.size),
      operation: String(m.operation),
      status: m.status,
      statusCode: String(m.statusCode),
      attributes,
    };
  };
  const fail = (e) => {
    if (e instanceof DecodeError) {
      let offset = BigInt(Math.trunc(Math.max(0, Number(e.offset) || 0)));
      if (offset > U64_MAX) offset = U64_MAX;
      throw { payload: { reason: String(e.reason), offset } };
    }
    throw e;
  };

  class ComponentSession {
    constructor(transport, serverPort) {
      this.inner = new Plugin.session(transport, serverPort);
    }

    feed(dir, timestampNs, data) {
      const out = [];
      let used;
      try {
        used = this.inner.feed(dir, timestampNs, data, out);
      } catch (e) {
        fail(e);
      }
      used = Math.max(0, Math.min(Number(used) || 0, data.length));
      return { consumed: used, messages: out.map(message) };
    }

    gap(dir, length) {
      const out = [];
      try {
        this.inner.gap(dir, length, out);
      } catch (e) {
        fail(e);
      }
      return { consumed: 0, messages: out.map(message) };
    }

    close(reason, timestampNs) {
      const out = [];
      try {
        this.inner.close(reason, timestampNs, out);
      } catch (e) {
        // `close` cannot fail in the contract: what it found is kept.
        if (!(e instanceof DecodeError)) throw e;
        host.log('warn', `close threw DecodeError(${JSON.stringify(e.reason)}): ignored`);
      }
      return out.map(message);
    }
  }

  return {
    describe() {
      return {
        name: Plugin.decoderName,
        version: Plugin.version,
        protocols: Plugin.protocols.length ? [...Plugin.protocols] : [Plugin.decoderName],
        transports: [...Plugin.transports],
        defaultPorts: [...Plugin.ports],
        attributeKeys: [...Plugin.keys],
      };
    },
    probe(transport, dir, data) {
      const c = Number(Plugin.probe(transport, dir, data)) || 0;
      return Math.max(0, Math.min(100, Math.trunc(c)));
    },
    Session: ComponentSession,
  };
}
