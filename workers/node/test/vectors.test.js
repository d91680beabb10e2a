'use strict';
// The protocol's test vectors (protocols/vectors): good ones decode to their expected message
// and re-encode to the same bytes; bad ones are refused with their code.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Codec, ProtocolError } = require('../lib/codec');

const FILE = path.join(__dirname, '..', '..', '..', 'protocols', 'vectors', 'v1.json');
const { vectors } = JSON.parse(fs.readFileSync(FILE, 'utf8'));

const framesOf = (vector) => vector.frames.map((frame) => Buffer.from(frame, 'base64'));
const codecFor = (vector) => new Codec(Buffer.from(vector.key),
  { clock: () => vector.now, local: vector.receiver === 'ipc' });

// Bytes as the vectors spell them ({base64: ...})
function plain(value) {
  if (value instanceof Uint8Array) return { base64: Buffer.from(value).toString('base64') };
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

function native(value) {
  if (Array.isArray(value)) return value.map(native);
  if (value !== null && typeof value === 'object') {
    if (Object.keys(value).length === 1 && typeof value.base64 === 'string') {
      return Buffer.from(value.base64, 'base64');
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, native(v)]));
  }
  return value;
}

test('the vector file holds good, bad and refusal cases', () => {
  assert.ok(vectors.filter((v) => v.expect).length >= 5);
  assert.ok(vectors.filter((v) => v.error).length >= 7);
});

for (const vector of vectors.filter((v) => v.expect)) {
  test(`good vector decodes: ${vector.name}`, () => {
    const message = codecFor(vector).decode(framesOf(vector));
    const { expect } = vector;
    assert.deepEqual([message.type, message.id, message.re, message.ts],
      [expect.type, expect.id, expect.re, expect.ts]);
    assert.deepEqual(plain(message.body), expect.body);
  });

  test(`good vector re-encodes to the same frames: ${vector.name}`, () => {
    const { expect } = vector;
    const frames = codecFor(vector).encode(expect.type, native(expect.body),
      { id: expect.id, re: expect.re, ts: expect.ts });
    assert.deepEqual(frames.map((f) => Buffer.from(f).toString('base64')), vector.frames);
  });
}

for (const vector of vectors.filter((v) => v.error)) {
  test(`bad vector is refused with ${vector.error}: ${vector.name}`, () => {
    assert.throws(() => codecFor(vector).decode(framesOf(vector)),
      (err) => err instanceof ProtocolError && err.code === vector.error);
  });
}

test('an unsigned refusal is not accepted by a keyed codec', () => {
  const vector = vectors.find((v) => v.refusal);
  assert.throws(() => codecFor(vector).decode(framesOf(vector)),
    (err) => err instanceof ProtocolError && err.code === 'auth');
});

test('a repeated id is refused as a replay, a message past the size limit as too_large', () => {
  const vector = vectors.find((v) => v.name === 'ping request');
  const codec = codecFor(vector);
  codec.decode(framesOf(vector));
  assert.throws(() => codec.decode(framesOf(vector)), (err) => err.code === 'replay');
  const small = new Codec(Buffer.from(vector.key), { clock: () => vector.now, maxBytes: 100 });
  assert.throws(() => small.decode(framesOf(vectors.find((v) => v.name.includes('blob')))),
    (err) => err.code === 'too_large');
  assert.throws(() => small.encode('task.rep', { result: 'x'.repeat(200) }),
    (err) => err.code === 'too_large');
});
