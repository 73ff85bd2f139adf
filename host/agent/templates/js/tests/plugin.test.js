// Native tests of the decoder, through the SDK's simulated host.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import Plugin, { MAX_FRAME } from '../plugin.js';
import { check, close, data, gap } from '../wasmtap/testing.js';

const framed = (s) => {
  const body = new TextEncoder().encode(s);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
};
const cat = (...parts) => Uint8Array.from(parts.flatMap((p) => [...p]));

test('requests and out-of-order responses', () => {
  const o = check(
    Plugin,
    [
      data('to-server', cat(framed('REQ 1 get user:1'), framed('REQ 2 put user:2'))),
      data('to-client', cat(framed('RES 2 OK'), framed('RES 1 FAIL'))),
      close(),
    ],
    { maxPending: MAX_FRAME + 4 },
  );
  assert.equal(o.error, null);
  assert.equal(o.messages.length, 4);
  assert.equal(o.messages[0].operation, 'GET');
  assert.equal(o.messages[0].correlation, 1n);
  assert.equal(o.messages[3].correlation, 1n);
  assert.equal(o.messages[3].status, 'error');
});

test('a gap is resynchronised', () => {
  const o = check(
    Plugin,
    [gap('to-server', 10), data('to-server', cat(new TextEncoder().encode('tail of a lost frame'), framed('REQ 7 get k')))],
    { maxPending: MAX_FRAME + 4 },
  );
  assert.equal(o.error, null);
  assert.deepEqual(o.messages.map((m) => m.correlation), [7n]);
});

test('probe knows the protocol', () => {
  assert.equal(Plugin.probe('tcp', 'to-server', framed('REQ 1 get k')), 90);
  assert.equal(Plugin.probe('tcp', 'to-server', new TextEncoder().encode('GET / HTTP/1.1\r\n')), 0);
});
