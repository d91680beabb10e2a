'use strict';
// Example PTS functions for the Node.js worker runtime; the integration tests run them.
// A function gets (data, ctx) and returns its result (or a promise of it).

function echo(data) {
  return data;
}

function hello(data, ctx) {
  const name = (data && typeof data === 'object' ? data.theName || data.name : data) || 'stranger';
  ctx.log(`greeting ${name}`);
  return `hello ${name}! From node ${process.version}`;
}

function init() {
  return 'hello initialised';
}

// Reports its pid as progress, then waits `seconds` or until cancelled (a cooperative run)
async function slowPid(seconds, ctx) {
  ctx.progress(1, String(process.pid));
  if (await ctx.waitCancelled(seconds)) throw new Error('cancelled on request');
  ctx.progress(100, 'done');
  return process.pid;
}

// Keeps its event loop free (heartbeats go on) but ignores cancel
async function stubborn(seconds, ctx) {
  ctx.progress(1, String(process.pid));
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  return 'finished';
}

function crash() {
  process.exit(7);
}

// Blocks the event loop for good: no heartbeat leaves, the daemon must find the hang
async function hang(data, ctx) {
  await ctx.progress(1, String(process.pid));
  for (;;) { /* spin */ }
}

function fail(data) {
  throw new TypeError(`bad input ${JSON.stringify(data)}`);
}

function badProgress(data, ctx) {
  ctx.progress(Number.NaN, 'refused by the runtime');
  return data;
}

function unencodable() {
  return { f: () => 1 };
}

function chatty(data, ctx) {
  console.log('a line on stdout goes to the log, not into the stream');
  for (let i = 0; i < data; i += 1) ctx.log(`line ${i}`);
  return data;
}

module.exports = { echo, hello, init, slowPid, stubborn, crash, hang, fail, badProgress, unencodable, chatty };
