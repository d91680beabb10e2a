'use strict';
// The PNS message format (protocols/SPEC.md, "Frames" and "Signing"): frames to messages and
// back, with the receiver's checks in the order the spec gives them. A `local` codec (ipc://
// and a worker's pipes) leaves blob frames out of the signature and puts their lengths in the
// signed header ("Blob frames on ipc://"); a codec that is not local signs every byte and
// refuses unsigned blob frames.

const crypto = require('node:crypto');
const { Encoder, Decoder, ExtensionCodec } = require('@msgpack/msgpack');

const MAGIC = Buffer.from('PNS');
const PROTOCOL_VERSION = 1;
const BLOB_EXT = 1;                    // extension: a reference to blob frame N
const TEXT_EXT = 2;                    // ... to blob frame N holding a string's UTF-8 bytes
const BLOB_THRESHOLD = 64 * 1024;      // bytes at least this long travel as blob frames
const DEFAULT_MAX_BYTES = 64 * 2 ** 20;
const WINDOW = 60;                     // seconds of the acceptance window (max_clock_skew)
const SIGNATURE_BYTES = 32;            // HMAC-SHA256
const utf8 = new TextDecoder('utf-8', { fatal: true });

class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

class BlobRef {
  constructor(index, text) {
    this.index = index;
    this.text = text;       // the frame holds a string's UTF-8 bytes
  }
}

// A large string on its way out, to travel as a text blob frame
class TextOut {
  constructor(text) { this.text = text; }
}

function blobIndex(data) {
  if (data.byteLength !== 4) throw new ProtocolError('malformed', 'bad blob reference');
  return Buffer.from(data.buffer, data.byteOffset, 4).readUInt32BE(0);
}

function pushBlob(blobs, blob) {
  const index = Buffer.alloc(4);
  index.writeUInt32BE(blobs.length);
  blobs.push(blob);
  return index;
}

// Blob frames: a large byte string leaves the body as extension 1 holding its frame's index
const extensions = new ExtensionCodec();
extensions.register({
  type: BLOB_EXT,
  encode(value, blobs) {
    if (!(value instanceof Uint8Array) || value.byteLength < BLOB_THRESHOLD || !blobs) {
      return null;
    }
    return pushBlob(blobs, value);
  },
  decode: (data) => new BlobRef(blobIndex(data), false),
});
extensions.register({
  type: TEXT_EXT,
  encode(value, blobs) {
    if (!(value instanceof TextOut) || !blobs) return null;
    return pushBlob(blobs, Buffer.from(value.text, 'utf8'));
  },
  decode: (data) => new BlobRef(blobIndex(data), true),
});

// At least BLOB_THRESHOLD characters (code points, as the reference counts them)
function isLongText(value) {
  if (typeof value !== 'string' || value.length < BLOB_THRESHOLD) return false;
  if (value.length >= 2 * BLOB_THRESHOLD) return true;
  let points = 0;
  for (let i = 0; i < value.length; i += 1) {
    const unit = value.charCodeAt(i);
    if (unit < 0xdc00 || unit > 0xdfff) points += 1;    // a low surrogate ends a pair
  }
  return points >= BLOB_THRESHOLD;
}

// The body with each large string wrapped to travel as a text blob (copied only where one is)
function withTextOut(value) {
  if (isLongText(value)) return new TextOut(value);
  if (Array.isArray(value)) {
    const items = value.map(withTextOut);
    return items.some((item, i) => item !== value[i]) ? items : value;
  }
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)
      && Object.getPrototypeOf(value) === Object.prototype) {
    let out = null;
    for (const [key, item] of Object.entries(value)) {
      const wrapped = withTextOut(item);
      if (wrapped !== item) out = out || { ...value };
      if (out) out[key] = wrapped;
    }
    return out || value;
  }
  return value;
}

const decoder = new Decoder({ extensionCodec: extensions });
const plainEncoder = new Encoder();

function withBlobs(value, blobs) {
  if (value instanceof BlobRef) {
    if (value.index >= blobs.length) throw new ProtocolError('malformed', 'no such blob frame');
    if (!value.text) return blobs[value.index];
    try {
      return utf8.decode(blobs[value.index]);
    } catch (err) {
      throw new ProtocolError('malformed', `text blob ${value.index} is not UTF-8`);
    }
  }
  if (Array.isArray(value)) return value.map((item) => withBlobs(item, blobs));
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    const out = {};
    for (const [key, item] of Object.entries(value)) out[key] = withBlobs(item, blobs);
    return out;
  }
  return value;
}

// The header array [v, id, type, re, ts], with [trace (nil), blob lengths] after it when
// lengths are given: ts is always a float64, as the reference sends it
function packHeader(id, type, re, ts, lengths) {
  const time = Buffer.alloc(9);
  time[0] = 0xcb;
  time.writeDoubleBE(ts, 1);
  const fields = [Buffer.from([lengths ? 0x97 : 0x95]), plainEncoder.encode(PROTOCOL_VERSION),
    plainEncoder.encode(id), plainEncoder.encode(type), plainEncoder.encode(re), time];
  if (lengths) fields.push(plainEncoder.encode(null), plainEncoder.encode(lengths));
  return Buffer.concat(fields);
}

function readHeader(frame) {
  let header;
  try {
    header = decoder.decode(frame);
  } catch (err) {
    throw new ProtocolError('malformed', `header is not msgpack: ${err.message}`);
  }
  if (!Array.isArray(header) || header.length < 5 || header.length > 7) {
    throw new ProtocolError('malformed', 'header is not an array of 5 to 7 fields');
  }
  const [v, id, type, re, ts, trace, lengths] = header;
  const text = (s) => typeof s === 'string' && s.length > 0 && s.length <= 64;
  if (!Number.isInteger(v) || !text(id) || !text(type) || !(re === null || typeof re === 'string')
      || typeof ts !== 'number' || !Number.isFinite(ts)
      || !(trace === undefined || trace === null || (typeof trace === 'string' && trace.length <= 64))
      || !(lengths === undefined || (Array.isArray(lengths)
        && lengths.every((n) => Number.isInteger(n) && n >= 0)))) {
    throw new ProtocolError('malformed', 'header lacks a valid v, id, type, re or ts');
  }
  return { v, id, type, re, ts, trace: trace || null, lengths: lengths || null };
}

// Blob frames left out of the signature must be exactly those the signed header lists
function checkBlobs(blobs, lengths, signed) {
  if (lengths === null) {
    if (!signed) {
      throw new ProtocolError('malformed', 'unsigned blob frames without their lengths in the header');
    }
    return;
  }
  if (blobs.length !== lengths.length) {
    throw new ProtocolError('malformed',
      `${blobs.length} blob frames; the signed header lists ${lengths.length}`);
  }
  lengths.forEach((length, index) => {
    if (blobs[index].length !== length) {
      throw new ProtocolError('malformed',
        `blob frame ${index} is ${blobs[index].length} bytes; the signed header says ${length}`);
    }
  });
}

class Codec {
  // key: a Buffer (empty: signing off); clock: seconds since the epoch; local: blob frames go
  // (and are taken) unsigned, their lengths in the signed header (ipc:// and stdio only)
  constructor(key, { maxBytes = DEFAULT_MAX_BYTES, clock = () => Date.now() / 1000, local = false } = {}) {
    this.key = Buffer.from(key);
    this.maxBytes = maxBytes;
    this.clock = clock;
    this.local = local;
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
    const packed = new Encoder({ extensionCodec: extensions, context: blobs }).encode(withTextOut(body));
    const unsigned = this.local && blobs.length > 0;
    const header = packHeader(id, type, re, ts, unsigned ? blobs.map((blob) => blob.byteLength) : null);
    const size = MAGIC.length + header.length + packed.length
      + (this.key.length > 0 ? SIGNATURE_BYTES : 0)
      + blobs.reduce((sum, blob) => sum + blob.byteLength, 0);
    if (size > this.maxBytes) {
      throw new ProtocolError('too_large', `message of ${size} bytes is over the limit of ${this.maxBytes}`);
    }
    const signature = this.sign(unsigned ? [MAGIC, header, packed] : [MAGIC, header, packed, ...blobs]);
    return [MAGIC, signature, header, packed, ...blobs];
  }

  // A message {type, id, re, ts, body}, or a ProtocolError with the code of the first check failed
  decode(frames) {
    if (frames.length < 4 || !MAGIC.equals(Buffer.from(frames[0]))) {
      throw new ProtocolError('malformed', 'not a PNS message');
    }
    const size = frames.reduce((sum, frame) => sum + frame.length, 0);
    if (size > this.maxBytes) throw new ProtocolError('too_large', `message of ${size} bytes`);
    const blobsSigned = this.authenticate(frames);
    const { lengths, ...header } = readHeader(frames[2]);
    checkBlobs(frames.slice(4), lengths, blobsSigned);
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

  // The signature: true when it covers the blob frames too, false when it covers frames 0, 2
  // and 3 only (a local codec takes that; others refuse it, auth)
  authenticate(frames) {
    if (this.key.length === 0) return true;
    const given = Buffer.from(frames[1]);
    const matches = (expected) => given.length === expected.length
      && crypto.timingSafeEqual(given, expected);
    if (frames.length > 4 && matches(this.sign([frames[0], frames[2], frames[3]]))) {
      if (!this.local) throw new ProtocolError('auth', 'unsigned blob frames are taken on ipc:// only');
      return false;
    }
    if (!matches(this.sign([frames[0], ...frames.slice(2)]))) {
      throw new ProtocolError('auth', 'bad message signature');
    }
    return true;
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
