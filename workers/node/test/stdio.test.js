'use strict';
// The stdio transport's vectors (protocols/vectors/stdio.json): streams cut into the records
// and messages they carry, broken streams refused, a partial record left waiting.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Codec } = require('../lib/codec');
const { RecordReader, packRecord } = require('../lib/transports');

const FILE = path.join(__dirname, '..', '..', '..', 'protocols', 'vectors', 'stdio.json');
const file = JSON.parse(fs.readFileSync(FILE, 'utf8'));
const b64 = (frame) => Buffer.from(frame).toString('base64');

test('the stdio vectors include broken streams', () => {
  assert.ok(file.vectors.some((v) => v.verdict === 'broken'));
});

for (const vector of file.vectors) {
  const stream = Buffer.from(vector.stream, 'base64');
  const reader = () => new RecordReader(file.limit - 2 ** 20);

  test(`stdio vector (${vector.verdict}): ${vector.name}`, () => {
    if (vector.verdict === 'broken') {
      assert.throws(() => reader().push(stream));
      return;
    }
    const whole = reader();
    const records = whole.push(stream);
    if (vector.verdict === 'partial') {
      assert.deepEqual(records, []);
      assert.ok(whole.partial());
      return;
    }
    assert.equal(whole.partial(), false);
    assert.deepEqual(records.map((r) => r.map(b64)), vector.messages.map((m) => m.frames));
    const codec = new Codec(Buffer.from(file.key), { clock: () => file.now });
    records.forEach((frames, i) => {
      const { expect } = vector.messages[i];
      const message = codec.decode(frames);
      assert.deepEqual([message.type, message.id, message.re], [expect.type, expect.id, expect.re]);
    });
    assert.equal(Buffer.concat(records.map(packRecord)).toString('base64'), vector.stream);
    const bytewise = reader();                 // the same stream a byte at a time
    const cut = [];
    for (const byte of stream) cut.push(...bytewise.push(Buffer.from([byte])));
    assert.deepEqual(cut.map((r) => r.map(b64)), vector.messages.map((m) => m.frames));
  });
}
