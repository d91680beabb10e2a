#!/usr/bin/env node
'use strict';
// A PNS worker for Node.js: started by pnsd as
//   node bin/pns-worker.js -m protocols.worker --connect ENDPOINT|stdio --entry module:function
//       --key-file PATH --id ID [--init m:f] [--config m:f] [--clean m:f]
//       [--heartbeat SECONDS] [--max-bytes N]
// Exit codes before the hello: 2 bad options, 3 an entry (or the key file) cannot be loaded,
// 4 the init hook failed; 6 the daemon refused our protocol versions.

const fs = require('node:fs');
const { Codec, DEFAULT_MAX_BYTES } = require('../lib/codec');
const { loadEntry, EntryError } = require('../lib/entries');
const { WorkerRuntime } = require('../lib/runtime');

const EXIT_BAD_OPTIONS = 2;
const EXIT_BAD_ENTRY = 3;
const EXIT_INIT_FAILED = 4;
const VALUED = ['connect', 'entry', 'init', 'config', 'clean', 'key-file', 'heartbeat', 'id', 'max-bytes'];

function fail(code, line) {
  process.stderr.write(`pns-worker: ${line}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const options = { heartbeat: '1', id: '', 'max-bytes': String(DEFAULT_MAX_BYTES) };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '-m') continue;               // `-m protocols.worker`: the reference's module
    const name = flag.startsWith('--') ? flag.slice(2) : '';
    if (!VALUED.includes(name) || value === undefined) fail(EXIT_BAD_OPTIONS, `bad option ${flag}`);
    options[name] = value;
  }
  for (const name of ['connect', 'entry', 'key-file']) {
    if (!options[name]) fail(EXIT_BAD_OPTIONS, `--${name} is required`);
  }
  options.heartbeat = Number(options.heartbeat);
  options['max-bytes'] = Number(options['max-bytes']);
  if (!(options.heartbeat > 0) || !Number.isInteger(options['max-bytes']) || options['max-bytes'] <= 0) {
    fail(EXIT_BAD_OPTIONS, 'bad --heartbeat or --max-bytes');
  }
  return options;
}

async function loadCalls(options) {
  const calls = {};
  for (const [op, flag] of [['run', 'entry'], ['init', 'init'], ['config', 'config'], ['clean', 'clean']]) {
    if (!options[flag]) continue;
    try {
      calls[op] = await loadEntry(options[flag]);
    } catch (err) {
      if (!(err instanceof EntryError)) throw err;
      fail(EXIT_BAD_ENTRY, `cannot load ${err.message}`);
    }
  }
  return calls;
}

function makeTransport(options) {
  // Required only here: a stdio worker must not redirect stdout before the options are read
  const { ZmqTransport, StdioTransport } = require('../lib/transports');
  if (options.connect === 'stdio') return new StdioTransport(options['max-bytes']);
  return new ZmqTransport(options.connect, options.id);
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  let key;
  try {
    key = fs.readFileSync(options['key-file']).toString('latin1').trim();
  } catch (err) {
    fail(EXIT_BAD_ENTRY, `cannot read the key file ${options['key-file']}: ${err.message}`);
  }
  const calls = await loadCalls(options);
  if (calls.init) {
    try {
      await calls.init(null, { progress() {}, log() {}, cancelled: false });
    } catch (err) {
      process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
      fail(EXIT_INIT_FAILED, `the init hook failed: ${err && err.message}`);
    }
  }
  const transport = makeTransport(options);
  const exit = (code) => {
    transport.close();
    process.exit(code);
  };
  // Blob frames unsigned on ipc:// and the pipes (both private to the service user); signed on tcp://
  const local = options.connect === 'stdio' || options.connect.startsWith('ipc://');
  const runtime = new WorkerRuntime({
    codec: new Codec(Buffer.from(key, 'latin1'), { maxBytes: options['max-bytes'], local }),
    transport, calls, id: options.id, heartbeat: options.heartbeat, entry: options.entry, exit,
  });
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => runtime.signalled());
  runtime.start();
}

main().catch((err) => fail(1, `failed: ${err && err.stack ? err.stack : err}`));
