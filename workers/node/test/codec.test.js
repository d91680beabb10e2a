'use strict';
// The codec beyond the vectors: which blob frames a local codec leaves unsigned, text blobs
// counted in code points, a text blob that is not UTF-8.

const test = require('node:test');
const assert = require('node:assert/strict');
const { decode } = require('@msgpack/msgpack');
const { Codec, BLOB_THRESHOLD } = require('../lib/codec');

const KEY = Buffer.from('codec-test-key');
const big = Buffer.alloc(BLOB_THRESHOLD, 7);

test('a local codec signs the header and body only and lists the blob lengths', () => {
  const local = new Codec(KEY, { local: true });
  const frames = local.encode('task.rep', { result: big, small: Buffer.from('x') });
  assert.equal(frames.length, 5);
  assert.deepEqual(decode(frames[2]).slice(5), [null, [BLOB_THRESHOLD]]);
  assert.deepEqual(local.sign([frames[0], frames[2], frames[3]]), frames[1]);
  assert.throws(() => new Codec(KEY).decode(frames), (err) => err.code === 'auth');
  assert.deepEqual(local.decode(frames).body.result, big);
});

test('a local codec without blobs, and a codec that is not local, send the 1.0 form', () => {
  const plain = new Codec(KEY, { local: true }).encode('ping.req', { small: 1 });
  assert.equal(decode(plain[2]).length, 5);
  const signed = new Codec(KEY).encode('task.rep', { result: big });
  assert.equal(decode(signed[2]).length, 5);
  assert.deepEqual(new Codec(KEY).sign([signed[0], ...signed.slice(2)]), signed[1]);
  assert.deepEqual(new Codec(KEY, { local: true }).decode(signed).body.result, big);
});

test('with signing off the blob lengths are still held to', () => {
  const frames = new Codec('', { local: true }).encode('task.rep', { result: big });
  frames[4] = frames[4].subarray(1);
  assert.throws(() => new Codec('', { local: true }).decode(frames),
    (err) => err.code === 'malformed' && /blob frame 0/.test(err.message));
});

test('a string travels as a text blob from 64 K code points, not UTF-16 units', () => {
  const codec = new Codec(KEY, { local: true });
  const under = '\u{1F600}'.repeat(BLOB_THRESHOLD / 2);       // 64 K units, 32 K code points
  const over = '\u{1F600}'.repeat(BLOB_THRESHOLD);
  const frames = codec.encode('task.rep', { under, over: [over] });
  assert.equal(frames.length, 5);
  assert.equal(frames[4].toString('utf8'), over);
  assert.deepEqual(codec.decode(frames).body, { under, over: [over] });
});

test('a text blob that is not UTF-8 is malformed', () => {
  const codec = new Codec(KEY, { local: true });
  const frames = codec.encode('task.rep', { text: 'a'.repeat(BLOB_THRESHOLD) });
  const bad = Buffer.from(frames[4]);
  bad[0] = 0xff;
  frames[4] = bad;
  assert.throws(() => codec.decode(frames), (err) => err.code === 'malformed');
});
