'use strict';
// The PNS message format (protocols/SPEC.md, "Frames" and "Signing"): frames to messages and
// back, with the receiver's checks in the order the spec gives them.

const crypto = require('node:crypto');
const { Encoder, Decoder, ExtensionCodec } = require('@msgpack/msgpack');

const MAGIC = Buffer.from('PNS');
const PROTOCOL_VERSION = 1;
const BLOB_EXT = 1;
const BLOB_THRESHOLD = 64 * 1024;      // bytes at least this long travel as blob frames
const DEFAULT_MAX_BYTES = 64 * 2 ** 20;
const WINDOW = 60;                     // seconds of the acceptance window (max_clock_skew)

class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

class BlobRef {
  constructor(index) { this.index = index; }
}

// Blob frames: a large byte string leaves the body as extension 1 holding its frame's index
const extensions = new ExtensionCodec();
extensions.register({
  type: BLOB_EXT,
  encode(value, blobs) {
    if (!(value instanceof Uint8Array) || value.byteLength < BLOB_THRESHOLD || !blobs) {
      return null;
    }
    const index = Buffer.alloc(4);
    index.writeUInt32BE(blobs.length);
    blobs.push(value);
    return index;
  },
  decode(data) {
    if (data.byteLength !== 4) throw new ProtocolError('malformed', 'bad blob reference');
    return new BlobRef(Buffer.from(data.buffer, data.byteOffset, 4).readUInt32BE(0));
  },
});

const decoder = new Decoder({ extensionCodec: extensions });
const plainEncoder = new Encoder();

function withBlobs(value, blobs) {
  if (value instanceof BlobRef) {
    if (value.index >= blobs.length) throw new ProtocolError('malformed', 'no such blob frame');
    return blobs[value.index];
  }
  if (Array.isArray(value)) return value.map((item) => withBlobs(item, blobs));
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    const out = {};
    for (const [key, item] of Object.entries(value)) out[key] = withBlobs(item, blobs);
    return out;
  }
  return value;
}

// The header array [v, id, type, re, ts]: ts is always a float64, as the reference sends it
function packHeader(id, type, re, ts) {
  const time = Buffer.alloc(9);
  time[0] = 0xcb;
  time.writeDoubleBE(ts, 1);
  return Buffer.concat([Buffer.from([0x95]), plainEncoder.encode(PROTOCOL_VERSION),
    plainEncoder.encode(id), plainEncoder.encode(type), plainEncoder.encode(re), time]);
}

function readHeader(frame) {
  let header;
  try {
    header = decoder.decode(frame);
  } catch (err) {
    throw new ProtocolError('malformed', `header is not msgpack: ${err.message}`);
  }
  if (!Array.isArray(header) || (header.length !== 5 && header.length !== 6)) {
    throw new ProtocolError('malformed', 'header is not an array of 5 or 6');
  }
  const [v, id, type, re, ts, trace] = header;
  const text = (s) => typeof s === 'string' && s.length > 0 && s.length <= 64;
  if (!Number.isInteger(v) || !text(id) || !text(type) || !(re === null || typeof re === 'string')
      || typeof ts !== 'number' || !Number.isFinite(ts)
      || !(trace === undefined || trace === null || (typeof trace === 'string' && trace.length <= 64))) {
    throw new ProtocolError('malformed', 'header lacks a valid v, id, type, re or ts');
  }
  return { v, id, type, re, ts, trace: trace || null };
}

class Codec {
  // key: a Buffer (empty: signing off); clock: seconds since the epoch
  constructor(key, { maxBytes = DEFAULT_MAX_BYTES, clock = () => Date.now() / 1000 } = {}) {
    this.key = Buffer.from(key);
    this.maxBytes = maxBytes;
    this.clock = clock;
    this.seen = new Map();     // id -> the time it leaves the window (replay memory)
  }

  sign(frames) {
    if (this.key.length === 0) return Buffer.alloc(0);
    const mac = crypto.createHmac('sha256', this.key);
    for (const frame of frames) mac.update(frame);
    return mac.digest();
  }

  // Frames of a message; throws ProtocolError('too_large') past maxBytes (nothing is sent)
  encode(type, body, { re = null, id = newId(), ts = this.clock() } = {}) {
    const blobs = [];
    const header = packHeader(id, type, re, ts);
    const packed = new Encoder({ extensionCodec: extensions, context: blobs }).encode(body);
    const size = MAGIC.length + header.length + packed.length
      + blobs.reduce((sum, blob) => sum + blob.byteLength, 0);
    if (size > this.maxBytes) {
      throw new ProtocolError('too_large', `message of ${size} bytes is over the limit of ${this.maxBytes}`);
    }
    const signature = this.sign([MAGIC, header, packed, ...blobs]);
    return [MAGIC, signature, header, packed, ...blobs];
  }

  // A message {type, id, re, ts, body}, or a ProtocolError with the code of the first check failed
  decode(frames) {
    if (frames.length < 4 || !MAGIC.equals(Buffer.from(frames[0]))) {
      throw new ProtocolError('malformed', 'not a PNS message');
    }
    const size = frames.reduce((sum, frame) => sum + frame.length, 0);
    if (size > this.maxBytes) throw new ProtocolError('too_large', `message of ${size} bytes`);
    if (this.key.length > 0) {
      const expected = this.sign([frames[0], ...frames.slice(2)]);
      const given = Buffer.from(frames[1]);
      if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
        throw new ProtocolError('auth', 'bad message signature');
      }
    }
    const header = readHeader(frames[2]);
    if (header.v !== PROTOCOL_VERSION) {
      throw new ProtocolError('version', `protocol version ${header.v} is not supported`);
    }
    if (this.key.length > 0) this.guard(header);
    let body;
    try {
      body = withBlobs(decoder.decode(frames[3]), frames.slice(4));
    } catch (err) {
      throw new ProtocolError('malformed', `body cannot be decoded: ${err.message}`);
    }
    return { ...header, body };
  }

  guard({ id, ts }) {
    const now = this.clock();
    if (Math.abs(ts - now) > WINDOW) throw new ProtocolError('replay', 'stale timestamp');
    for (const [seenId, until] of this.seen) {   // oldest first: stop at the first still held
      if (until >= now) break;
      this.seen.delete(seenId);
    }
    if (this.seen.has(id)) throw new ProtocolError('replay', 'repeated message id');
    this.seen.set(id, ts + WINDOW);
  }
}

function newId() {
  return crypto.randomBytes(16).toString('hex');
}

module.exports = { Codec, ProtocolError, MAGIC, PROTOCOL_VERSION, DEFAULT_MAX_BYTES, BLOB_THRESHOLD, newId };
