'use strict';
// The two ways a worker reaches its daemon (protocols/SPEC.md, "Worker protocol"): a DEALER
// socket on the daemon's ipc:// endpoint, or records of length-prefixed frames on stdin/stdout.
// Each transport has send(frames) (in order, whole), onFrames(callback), onEnd(callback), close().

const zmq = require('zeromq');

const RECORD_SLACK = 2 ** 20;         // an L over the message limit plus this breaks the stream

class ZmqTransport {
  constructor(endpoint, id) {
    this.socket = new zmq.Dealer({ routingId: id || undefined, linger: 1000 });
    this.socket.connect(endpoint);
    this.queue = Promise.resolve();   // zeromq.js allows one pending send per socket
  }

  // A failed send rejects its own promise only: the ones after it still go
  send(frames) {
    const sent = this.queue.then(() => this.socket.send(frames));
    this.queue = sent.catch(() => {});
    return sent;
  }

  async flush() {
    await this.queue;
  }

  onFrames(callback) {
    (async () => {
      for await (const frames of this.socket) callback(frames);
    })().catch((err) => {
      if (!this.socket.closed) process.stderr.write(`pns-worker: socket failed: ${err.message}\n`);
    });
  }

  onEnd() {}          // a DEALER reconnects: the daemon's death shows as a new parent

  close() {
    this.socket.close();
  }
}

// Cuts a byte stream into records (frames), and says why when the stream is broken
class RecordReader {
  constructor(maxBytes) {
    this.limit = maxBytes + RECORD_SLACK;
    this.chunks = [];
    this.buffered = 0;
  }

  // The records complete so far; throws Error(reason) when the stream is broken
  push(chunk) {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const records = [];
    for (;;) {
      if (this.buffered < 4) return records;
      const head = this.peek(Math.min(this.buffered, 11));
      const length = head.readUInt32BE(0);
      if (length > this.limit) throw new Error(`record of ${length} bytes is over the limit`);
      if ((head.length >= 8 && head.readUInt32BE(4) !== 3)
          || (head.length >= 11 && head.subarray(8, 11).toString() !== 'PNS')) {
        throw new Error('a record does not start with the PNS marker');
      }
      if (this.buffered < 4 + length) return records;
      const record = this.take(4 + length).subarray(4);
      records.push(splitFrames(record));
    }
  }

  partial() {
    return this.buffered > 0;
  }

  peek(n) {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  take(n) {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.buffered -= n;
    return all.subarray(0, n);
  }
}

function splitFrames(record) {
  const frames = [];
  let at = 0;
  while (at < record.length) {
    if (at + 4 > record.length) throw new Error('frame lengths do not add up to the record');
    const n = record.readUInt32BE(at);
    if (at + 4 + n > record.length) throw new Error('frame lengths do not add up to the record');
    frames.push(record.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  if (frames.length < 4) throw new Error(`a record of ${frames.length} frames (at least 4)`);
  return frames;
}

function packRecord(frames) {
  const parts = [Buffer.alloc(4)];
  let length = 0;
  for (const frame of frames) {
    const size = Buffer.alloc(4);
    size.writeUInt32BE(frame.length);
    parts.push(size, frame);
    length += 4 + frame.length;
  }
  parts[0].writeUInt32BE(length);
  return Buffer.concat(parts);
}

class StdioTransport {
  // Records go to the real stdout; whatever PTS code writes to process.stdout lands on stderr
  constructor(maxBytes) {
    this.reader = new RecordReader(maxBytes);
    this.out = process.stdout;
    this.write = process.stdout.write.bind(process.stdout);
    process.stdout.write = process.stderr.write.bind(process.stderr);
    this.ended = () => {};
    this.done = Promise.resolve();
  }

  send(frames) {
    const record = packRecord(frames.map((frame) => Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength)));
    this.done = new Promise((resolve) => this.write(record, () => resolve()));
    return this.done;
  }

  async flush() {
    await this.done;
  }

  onFrames(callback) {
    process.stdin.on('data', (chunk) => {
      let records;
      try {
        records = this.reader.push(chunk);
      } catch (err) {
        process.stdin.destroy();
        this.ended(`broken stdio stream: ${err.message}`);
        return;
      }
      for (const frames of records) callback(frames);
    });
    this.out.on('error', (err) => this.ended(`stdout failed: ${err.message}`));
    process.stdin.on('end', () => this.ended(this.reader.partial()
      ? 'broken stdio stream: end of file inside a record' : ''));
  }

  onEnd(callback) {
    this.ended = callback;
  }

  close() {
    process.stdin.destroy();
  }
}

module.exports = { ZmqTransport, StdioTransport, RecordReader, packRecord };
