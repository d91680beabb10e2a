'use strict';
// Loading `module:function` entries: the module `a.b` is the file a/b.js (or .cjs, .mjs) in the
// first directory that has it, looked for on PYTHONPATH (where pnsd puts the spec's
// `pythonpath`), then NODE_PATH, then the working directory.

const fs = require('node:fs');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

class EntryError extends Error {}

function searchPath(env = process.env) {
  const dirs = [];
  for (const name of ['PYTHONPATH', 'NODE_PATH']) {
    for (const dir of (env[name] || '').split(path.delimiter)) if (dir) dirs.push(dir);
  }
  dirs.push(process.cwd());
  return dirs;
}

function findModule(module, dirs) {
  const relative = module.split('.').join(path.sep);
  for (const dir of dirs) {
    for (const ext of ['.js', '.cjs', '.mjs']) {
      const file = path.resolve(dir, relative + ext);
      if (fs.existsSync(file)) return file;
    }
  }
  return null;
}

// The function an entry names; throws EntryError saying which module and why
async function loadEntry(entry, dirs = searchPath()) {
  const match = /^([A-Za-z_][\w.]*):([A-Za-z_]\w*)$/.exec(entry);
  if (!match) throw new EntryError(`entry ${entry}: not module:function`);
  const [, module, name] = match;
  const file = findModule(module, dirs);
  if (file === null) {
    throw new EntryError(`entry ${entry}: no module named '${module}' in ${dirs.join(', ')}`);
  }
  let loaded;
  try {
    loaded = await import(pathToFileURL(file).href);
  } catch (err) {
    throw new EntryError(`entry ${entry}: module '${module}' (${file}) failed to load: ${err.stack || err}`);
  }
  const func = typeof loaded[name] === 'function' ? loaded[name]
    : loaded.default && typeof loaded.default[name] === 'function' ? loaded.default[name] : null;
  if (func === null) throw new EntryError(`entry ${entry}: module '${module}' has no function '${name}'`);
  return func;
}

module.exports = { loadEntry, searchPath, EntryError };
